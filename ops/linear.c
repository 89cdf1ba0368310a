/* linear.c - fully connected layer and NHWC 1x1 convolution: out[M][Cout] = in . w^T + bias.
 * The GEMMs go to OpenBLAS (OpenMP build: it shares pollen's threads). dbias is a column sum
 * over M rows done here with fixed row chunks (ops_simd.h), so it is the same for any thread
 * count. The chunk partials live in a static buffer grown on demand (no steady-state
 * allocation). */
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static ops_scratch linear_partials;

void linear_forward(float *out, const float *in, const float *w, const float *bias, int M,
                    int Cin, int Cout) {
  if (M <= 0 || Cout <= 0) return;
  float beta = 0.0f;
  if (bias) {
    /* Seed out with the bias so the GEMM adds onto it: no separate pass afterwards. */
#pragma omp parallel for schedule(static) if ((long)M * Cout >= OPS_PAR_MIN)
    for (long m = 0; m < M; m++) memcpy(out + (size_t)m * Cout, bias, sizeof(float) * Cout);
    beta = 1.0f;
  }
  if (Cin <= 0) {
    if (!bias) memset(out, 0, sizeof(float) * (size_t)M * Cout);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Cout, Cin, 1.0f, in, Cin, w, Cin, beta,
              out, Cout);
}

/* dbias[c] += sum_m dout[m][c], in a thread-count-independent order. */
static void linear_colsum(float *dbias, const float *dout, int M, int C) {
  int nch = ops_nchunks(M, C);
  float *part = ops_scratch_get(&linear_partials, sizeof(float) * (size_t)nch * C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    float *acc = part + (size_t)ch * C;
    for (int c = 0; c < C; c++) acc[c] = 0.0f;
    for (long m = ops_chunk_lo(M, nch, ch); m < ops_chunk_lo(M, nch, ch + 1); m++) {
      const float *g = dout + (size_t)m * C;
      for (int c = 0; c < C; c++) acc[c] += g[c];
    }
  }
  for (int ch = 0; ch < nch; ch++)
    for (int c = 0; c < C; c++) dbias[c] += part[(size_t)ch * C + c];
}

void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int M, int Cin, int Cout) {
  if (M <= 0) {
    return;
  }
  if (din) {
    if (Cout > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, Cin, Cout, 1.0f, dout, Cout, w,
                  Cin, 0.0f, din, Cin);
    else
      memset(din, 0, sizeof(float) * (size_t)M * Cin);
  }
  if (Cout > 0 && Cin > 0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, Cin, M, 1.0f, dout, Cout, in, Cin,
                1.0f, dw, Cin);
  if (dbias && Cout > 0) linear_colsum(dbias, dout, M, Cout);
}
