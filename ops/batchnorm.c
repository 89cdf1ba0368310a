/* batchnorm.c - batch normalisation over M rows of C channels (NHWC: M = N*H*W).
 *
 * Two passes each way, the minimum: forward = statistics, then out = (x-mean)*scale + beta;
 * backward = the two per-channel sums (dy, dy*(x-mean)), then din = a*dy + b*(x-mean) + k.
 * Statistics are summed in double, shifted by the channel's first value so a large mean
 * cannot cancel the variance away, over fixed row chunks (ops_simd.h) so the result does not
 * depend on the thread count. The chunk partials live in a static buffer grown on demand. */
#include <math.h>
#include <stddef.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static ops_scratch bn_partials;

/* Per chunk: s1[c] = sum a, s2[c] = sum a*b, over the chunk's rows, where a and b come from
 * the caller's two arrays (forward: a = b = x - shift; backward: a = dy, b = x - mean). */
static void bn_sums(double *S1, double *S2, const float *A, const float *B, const float *shiftB,
                    int square, int M, int C) {
  int nch = ops_nchunks(M, C);
  double *part = ops_scratch_get(&bn_partials, sizeof(double) * 2 * (size_t)nch * C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    double *s1 = part + (size_t)ch * 2 * C, *s2 = s1 + C;
    for (int c = 0; c < C; c++) s1[c] = s2[c] = 0.0;
    for (long m = ops_chunk_lo(M, nch, ch); m < ops_chunk_lo(M, nch, ch + 1); m++) {
      const float *b = B + (size_t)m * C;
      if (square) {
        for (int c = 0; c < C; c++) {
          double d = (double)b[c] - (double)shiftB[c];
          s1[c] += d;
          s2[c] += d * d;
        }
      } else {
        const float *a = A + (size_t)m * C;
        for (int c = 0; c < C; c++) {
          s1[c] += (double)a[c];
          s2[c] += (double)a[c] * ((double)b[c] - (double)shiftB[c]);
        }
      }
    }
  }
  for (int c = 0; c < C; c++) S1[c] = S2[c] = 0.0;
  for (int ch = 0; ch < nch; ch++) {
    const double *s1 = part + (size_t)ch * 2 * C, *s2 = s1 + C;
    for (int c = 0; c < C; c++) {
      S1[c] += s1[c];
      S2[c] += s2[c];
    }
  }
}

/* out = (x - mean[c])*scale[c] + beta[c] over M rows; subtracting the mean first keeps
 * precision when |mean| >> std. */
static void bn_affine(float *out, const float *in, const float *mean, const float *scale,
                      const float *beta, int M, int C) {
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (long m = 0; m < M; m++) {
    const float *x = in + (size_t)m * C;
    float *y = out + (size_t)m * C;
    for (int c = 0; c < C; c++) y[c] = OPS_FMA(x[c] - mean[c], scale[c], beta[c]);
  }
}

/* Small per-call arrays: C floats or doubles each; C is at most a few thousand channels. */
#define BN_MAXC_STACK 4096

void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, int M, int C, float eps, float momentum) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  double S1[C], S2[C];
  float ref[C], scale[C];
  for (int c = 0; c < C; c++) ref[c] = in[c]; /* first row: the shift */
  bn_sums(S1, S2, NULL, in, ref, 1, M, C);
  for (int c = 0; c < C; c++) {
    double dm = S1[c] / M;
    double var = S2[c] / M - dm * dm;
    if (var < 0.0) var = 0.0;
    double mean = (double)ref[c] + dm;
    double rstd = 1.0 / sqrt(var + (double)eps);
    save_mean[c] = (float)mean;
    save_rstd[c] = (float)rstd;
    scale[c] = (float)((double)gamma[c] * rstd);
    if (running_mean)
      running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * (float)mean;
    if (running_var) {
      double unbiased = M > 1 ? var * M / (M - 1) : var;
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
    }
  }
  bn_affine(out, in, save_mean, scale, beta, M, C);
}

void batchnorm_forward_eval(float *out, const float *in, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, int M, int C,
                            float eps) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK);
  float scale[C];
  for (int c = 0; c < C; c++)
    scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)eps));
  bn_affine(out, in, running_mean, scale, beta, M, C);
}

void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *save_mean, const float *save_rstd,
                        const float *gamma, int M, int C) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  double Sdy[C], Sdyx[C];
  float a[C], b[C], k[C];
  const float *mu = save_mean;
  bn_sums(Sdy, Sdyx, dout, in, save_mean, 0, M, C);
  for (int c = 0; c < C; c++) {
    double rstd = save_rstd[c];
    double sum_dy_xhat = Sdyx[c] * rstd;
    dbeta[c] += (float)Sdy[c];
    dgamma[c] += (float)sum_dy_xhat;
    /* din = g*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)), xhat = (x-mean)*rstd */
    double ga = (double)gamma[c] * rstd;
    double bb = -ga * rstd * sum_dy_xhat / M;
    a[c] = (float)ga;
    b[c] = (float)bb;
    k[c] = (float)(-ga * Sdy[c] / M);
  }
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (long m = 0; m < M; m++) {
    const float *dy = dout + (size_t)m * C, *x = in + (size_t)m * C;
    float *dx = din + (size_t)m * C;
    for (int c = 0; c < C; c++) dx[c] = OPS_FMA(a[c], dy[c], OPS_FMA(b[c], x[c] - mu[c], k[c]));
  }
}
