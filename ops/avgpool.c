/* avgpool.c - global average pool over the HW positions of each image, NHWC: the C channels of
 * a row are contiguous, so each image is a sum of HW vectors. Parallel over (image, channel
 * block); the summation order is fixed (positions in order), whatever the thread count. */
#include "ops/ops.h"
#include "ops/ops_simd.h"

#define AVGPOOL_CB 64 /* channels per task: enough tasks when N is small */

void avgpool_forward(float *out, const float *in, int N, int HW, int C) {
  int nblk = (C + AVGPOOL_CB - 1) / AVGPOOL_CB;
  const float inv = 1.0f / (float)HW;
#pragma omp parallel for collapse(2) schedule(static) if ((long)N * HW * C >= OPS_PAR_MIN)
  for (int n = 0; n < N; n++)
    for (int b = 0; b < nblk; b++) {
      int c0 = b * AVGPOOL_CB, c1 = c0 + AVGPOOL_CB < C ? c0 + AVGPOOL_CB : C;
      float acc[AVGPOOL_CB];
      for (int c = c0; c < c1; c++) acc[c - c0] = 0.0f;
      const float *x = in + (size_t)n * HW * C;
      for (int p = 0; p < HW; p++)
        for (int c = c0; c < c1; c++) acc[c - c0] += x[(size_t)p * C + c];
      for (int c = c0; c < c1; c++) out[(size_t)n * C + c] = acc[c - c0] * inv;
    }
}

void avgpool_backward(float *din, const float *dout, int N, int HW, int C) {
  const float inv = 1.0f / (float)HW;
  long rows = (long)N * HW;
#pragma omp parallel for schedule(static) if (rows * C >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const float *g = dout + (size_t)(r / HW) * C;
    float *d = din + (size_t)r * C;
    for (int c = 0; c < C; c++) d[c] = g[c] * inv;
  }
}
