/* se.c - squeeze-and-excite as in torchvision's MobileNetV3:
 *   s = avgpool(x); z1 = fc1(s); h = relu(z1); z2 = fc2(h); g = hardsigmoid(z2); out = x*g.
 * The FCs run on N rows through linear_*; the two passes over the big tensor (pool, scale)
 * are the only memory-bound work. save holds s, z1, h, z2, g (N*(3C + 2Cs) floats).
 * Backward needs a few N*C vectors of scratch: a static buffer grown on demand. */
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static ops_scratch se_tmp;

size_t se_save_floats(int N, int C, int Cs) {
  return (size_t)N * (3 * (size_t)C + 2 * (size_t)Cs);
}

/* Pointers into save. */
typedef struct {
  float *s, *z1, *h, *z2, *g;
} se_parts;
static se_parts se_split(float *save, int N, int C, int Cs) {
  se_parts p;
  p.s = save;
  p.z1 = p.s + (size_t)N * C;
  p.h = p.z1 + (size_t)N * Cs;
  p.z2 = p.h + (size_t)N * Cs;
  p.g = p.z2 + (size_t)N * C;
  return p;
}

void se_forward(float *out, float *save, const float *in, const float *w1, const float *b1,
                const float *w2, const float *b2, int N, int HW, int C, int Cs) {
  se_parts p = se_split(save, N, C, Cs);
  avgpool_forward(p.s, in, N, HW, C);
  linear_forward(p.z1, p.s, w1, b1, N, C, Cs);
  act_forward(p.h, p.z1, (size_t)N * Cs, ACT_RELU);
  linear_forward(p.z2, p.h, w2, b2, N, Cs, C);
  act_forward(p.g, p.z2, (size_t)N * C, ACT_HARDSIGMOID);
  long rows = (long)N * HW;
#pragma omp parallel for schedule(static) if (rows * C >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const float *g = p.g + (size_t)(r / HW) * C, *x = in + (size_t)r * C;
    float *y = out + (size_t)r * C;
    for (int c = 0; c < C; c++) y[c] = x[c] * g[c];
  }
}

void se_backward(float *din, float *dw1, float *db1, float *dw2, float *db2, const float *dout,
                 const float *in, const float *save, const float *w1, const float *w2, int N,
                 int HW, int C, int Cs) {
  se_parts p = se_split((float *)save, N, C, Cs); /* read only below */
  size_t nc = (size_t)N * C, ncs = (size_t)N * Cs;
  float *dg = ops_scratch_get(&se_tmp, sizeof(float) * (2 * nc + 2 * ncs));
  float *ds = dg + nc, *dh = ds + nc, *dz1 = dh + ncs;

  /* dg[n][c] = sum_hw dout*x: per image, positions in order (thread-count independent). */
#pragma omp parallel for schedule(static) if ((long)nc * HW >= OPS_PAR_MIN)
  for (int n = 0; n < N; n++) {
    float *acc = dg + (size_t)n * C;
    memset(acc, 0, sizeof(float) * C);
    for (int q = 0; q < HW; q++) {
      const float *g = dout + ((size_t)n * HW + q) * C, *x = in + ((size_t)n * HW + q) * C;
      for (int c = 0; c < C; c++) acc[c] = OPS_FMA(g[c], x[c], acc[c]);
    }
  }
  act_backward(dg, dg, p.z2, nc, ACT_HARDSIGMOID);  /* dg becomes dz2 */
  linear_backward(dh, dw2, db2, dg, p.h, w2, N, Cs, C);
  act_backward(dz1, dh, p.z1, ncs, ACT_RELU);
  linear_backward(ds, dw1, db1, dz1, p.s, w1, N, C, Cs);

  /* din = dout*g + ds/HW (the pool's gradient spread over the positions). */
  const float inv = 1.0f / (float)HW;
  long rows = (long)N * HW;
#pragma omp parallel for schedule(static) if (rows * C >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const float *g = p.g + (size_t)(r / HW) * C, *d = ds + (size_t)(r / HW) * C;
    const float *go = dout + (size_t)r * C;
    float *dx = din + (size_t)r * C;
    for (int c = 0; c < C; c++) dx[c] = OPS_FMA(go[c], g[c], d[c] * inv);
  }
}
