/* batchnorm.c - batch normalisation over M rows of C channels (NHWC: M = N*H*W).
 *
 * Two passes each way, the minimum: forward = statistics, then out = (x-mean)*scale + beta;
 * backward = the two per-channel sums (dy, dy*(x-mean)), then din = a*dy + b*(x-mean) + k.
 * Statistics are summed in double, shifted by the channel's first value so a large mean
 * cannot cancel the variance away, over fixed row chunks (ops_simd.h) so the result does not
 * depend on the thread count. The chunk partials live in a static buffer grown on demand.
 * The batchnorm_act_* variants fuse the activation that follows (conv + BN + act layers):
 * the forward applies it in the output pass, the backward recomputes the BN output on the
 * fly in both passes instead of storing it (see the fused section below). */
#include <math.h>
#include <stddef.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static ops_scratch bn_partials, bn_folded, bn_block_stats;

/* S1, S2 = the chunk partials (s1, s2 per chunk, as bn_sums lays them out) summed in chunk
 * order, so the totals do not depend on which thread did which chunk. */
static void bn_reduce_partials(double *S1, double *S2, const double *part, int nch, int C) {
  for (int c = 0; c < C; c++) S1[c] = S2[c] = 0.0;
  for (int ch = 0; ch < nch; ch++) {
    const double *s1 = part + (size_t)ch * 2 * C, *s2 = s1 + C;
    for (int c = 0; c < C; c++) {
      S1[c] += s1[c];
      S2[c] += s2[c];
    }
  }
}

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
  bn_reduce_partials(S1, S2, part, nch, C);
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

/* BN's per-channel scale gamma * rstd from the SAVED (float) rstd: the forward, its
 * recomputation and the backward all take it from here, so they agree bit for bit. */
static inline float bn_saved_scale(float gamma, float save_rstd) {
  return (float)((double)gamma * (double)save_rstd);
}

/* Mean, rstd and the running statistics from the batch mean and (biased) variance. scale =
 * gamma*rstd is taken from the SAVED (float) rstd, so a backward that recomputes the output
 * from save_mean and save_rstd gets the forward's exact bits (the fused activation's break
 * points need that). */
static void bn_finish_moments(float *save_mean, float *save_rstd, float *scale,
                              float *running_mean, float *running_var, const double *mean,
                              const double *var, const float *gamma, int M, int C, float eps,
                              float momentum) {
  for (int c = 0; c < C; c++) {
    double rstd = 1.0 / sqrt(var[c] + (double)eps);
    save_mean[c] = (float)mean[c];
    save_rstd[c] = (float)rstd;
    scale[c] = bn_saved_scale(gamma[c], save_rstd[c]);
    if (running_mean)
      running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * (float)mean[c];
    if (running_var) {
      double unbiased = M > 1 ? var[c] * M / (M - 1) : var[c];
      running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
    }
  }
}

/* The training forward's statistics: sums shifted by the first row, then the moments. */
static void bn_train_stats(float *save_mean, float *save_rstd, float *scale, float *running_mean,
                           float *running_var, const float *in, const float *gamma, int M, int C,
                           float eps, float momentum) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0); /* also tells GCC the arrays are set */
  double S1[C], S2[C], mean[C], var[C];
  float ref[C];
  for (int c = 0; c < C; c++) ref[c] = in[c]; /* first row: the shift */
  bn_sums(S1, S2, NULL, in, ref, 1, M, C);
  for (int c = 0; c < C; c++) {
    double dm = S1[c] / M;
    var[c] = S2[c] / M - dm * dm;
    if (var[c] < 0.0) var[c] = 0.0;
    mean[c] = (double)ref[c] + dm;
  }
  bn_finish_moments(save_mean, save_rstd, scale, running_mean, running_var, mean, var, gamma, M,
                    C, eps, momentum);
}

/* The blocks' means and squared deviations (ops_block_stats) combined in block order: the
 * batch mean and biased variance over all M rows. Each block moves to a common reference (the
 * first block's mean, close to the batch's, so nothing cancels): S1 = sum n_b (mean_b - ref),
 * S2 = sum m2_b + n_b (mean_b - ref)^2. No division per block, and the loop over channels
 * vectorises. */
static void bn_combine_blocks(double *mean, double *var, const double *bmean, const double *bm2,
                              long M, long block_rows, int C) {
  const long nb = ops_stats_blocks(M, block_rows);
  double S1[C], S2[C];
  const double *ref = bmean;
  for (int c = 0; c < C; c++) S1[c] = S2[c] = 0.0;
  for (long b = 0; b < nb; b++) {
    const double n = (double)(M - b * block_rows < block_rows ? M - b * block_rows : block_rows);
    const double *mb = bmean + (size_t)b * C, *qb = bm2 + (size_t)b * C;
    for (int c = 0; c < C; c++) {
      double d = mb[c] - ref[c];
      S1[c] += n * d;
      S2[c] += qb[c] + n * d * d;
    }
  }
  for (int c = 0; c < C; c++) {
    double dm = S1[c] / (double)M;
    mean[c] = ref[c] + dm;
    var[c] = S2[c] / (double)M - dm * dm;
    if (var[c] < 0.0) var[c] = 0.0;
  }
}

/* Evaluation: scale = gamma / sqrt(running_var + eps). */
static void bn_eval_scale(float *scale, const float *gamma, const float *running_var, int C,
                          float eps) {
  for (int c = 0; c < C; c++)
    scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)eps));
}

/* From the backward sums Sdy = sum dy and Sdyx = sum dy*(x - mean): dbeta and dgamma (added),
 * and din = a*dy + b*(x - mean) + k, the closed form
 * din = g*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)), xhat = (x-mean)*rstd. */
static void bn_backward_coefs(float *a, float *b, float *k, float *dgamma, float *dbeta,
                              const double *Sdy, const double *Sdyx, const float *save_rstd,
                              const float *gamma, int M, int C) {
  for (int c = 0; c < C; c++) {
    double rstd = save_rstd[c];
    double sum_dy_xhat = Sdyx[c] * rstd;
    dbeta[c] += (float)Sdy[c];
    dgamma[c] += (float)sum_dy_xhat;
    double ga = (double)gamma[c] * rstd;
    a[c] = (float)ga;
    b[c] = (float)(-ga * rstd * sum_dy_xhat / M);
    k[c] = (float)(-ga * Sdy[c] / M);
  }
}

void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, int M, int C, float eps, float momentum) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  float scale[C];
  bn_train_stats(save_mean, save_rstd, scale, running_mean, running_var, in, gamma, M, C, eps,
                 momentum);
  bn_affine(out, in, save_mean, scale, beta, M, C);
}

void batchnorm_forward_eval(float *out, const float *in, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, int M, int C,
                            float eps) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK);
  float scale[C];
  bn_eval_scale(scale, gamma, running_var, C, eps);
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
  bn_backward_coefs(a, b, k, dgamma, dbeta, Sdy, Sdyx, save_rstd, gamma, M, C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (long m = 0; m < M; m++) {
    const float *dy = dout + (size_t)m * C, *x = in + (size_t)m * C;
    float *dx = din + (size_t)m * C;
    for (int c = 0; c < C; c++) dx[c] = OPS_FMA(a[c], dy[c], OPS_FMA(b[c], x[c] - mu[c], k[c]));
  }
}

/* ---- fused batch norm + activation --------------------------------------------------
 * The BN output y never goes to memory in backward: both backward passes recompute it from
 * x with the forward's exact arithmetic, fmaf(x - mean, scale, beta) with scale from the
 * saved rstd, so the activation's derivative sees the forward's bits.
 * The act kind must be a compile-time constant in each loop body for GCC to vectorise it:
 * the parallel loops run over fixed blocks of rows and switch on act INSIDE each block,
 * calling an always_inline row kernel. (An OpenMP region is outlined before inlining, so a
 * switch outside it leaves act a run-time value in the body: measured scalar, 3x slower.) */
#define BN_INLINE static inline __attribute__((always_inline))

#define BN_ACT_DISPATCH(act, CALL)                      \
  switch (act) {                                        \
    case ACT_NONE: CALL(ACT_NONE); break;               \
    case ACT_RELU: CALL(ACT_RELU); break;               \
    case ACT_RELU6: CALL(ACT_RELU6); break;             \
    case ACT_HARDSWISH: CALL(ACT_HARDSWISH); break;     \
    case ACT_HARDSIGMOID: CALL(ACT_HARDSIGMOID); break; \
  }

BN_INLINE float bn_relu6f(float x) {
  float y = x > 0.0f ? x : 0.0f;
  return y < 6.0f ? y : 6.0f;
}

/* act.c's forward formulas, operation for operation. */
BN_INLINE float bn_act_f(float y, act_kind act) {
  switch (act) {
    case ACT_RELU: return y > 0.0f ? y : 0.0f;
    case ACT_RELU6: return bn_relu6f(y);
    case ACT_HARDSWISH: return y * bn_relu6f(y + 3.0f) * OPS_SIXTH;
    case ACT_HARDSIGMOID: return bn_relu6f(y + 3.0f) * OPS_SIXTH;
    case ACT_NONE: break;
  }
  return y;
}

/* act.c's gradients (PyTorch's break-point rules), given the activation's input y. */
BN_INLINE float bn_act_grad(float y, float g, act_kind act) {
  switch (act) {
    case ACT_RELU: return y > 0.0f ? g : 0.0f;
    case ACT_RELU6: return (y > 0.0f && y < 6.0f) ? g : 0.0f;
    case ACT_HARDSWISH: {
      float mid = g * (y * OPS_THIRD + 0.5f);
      return y < -3.0f ? 0.0f : (y <= 3.0f ? mid : g);
    }
    case ACT_HARDSIGMOID: return (y > -3.0f && y < 3.0f) ? g * OPS_SIXTH : 0.0f;
    case ACT_NONE: break;
  }
  return g;
}

#if OPS_AVX2
/* The same formulas on 8 lanes with AVX2, bit for bit: max_ps(a, b) is exactly a > b ? a : b
 * and min_ps(a, b) is a < b ? a : b. Written out because GCC does not if-convert the
 * hardswish gradient (it keeps the arithmetic in a branch: scalar code). */
BN_INLINE __m256 bn_act_fv(__m256 y, act_kind act) {
  const __m256 zero = _mm256_setzero_ps(), three = _mm256_set1_ps(3.0f),
               six = _mm256_set1_ps(6.0f), sixth = _mm256_set1_ps(OPS_SIXTH);
  switch (act) {
    case ACT_RELU: return _mm256_max_ps(y, zero);
    case ACT_RELU6: return _mm256_min_ps(_mm256_max_ps(y, zero), six);
    case ACT_HARDSWISH:
      return _mm256_mul_ps(
          _mm256_mul_ps(y, _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(y, three), zero), six)),
          sixth);
    case ACT_HARDSIGMOID:
      return _mm256_mul_ps(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(y, three), zero), six),
                           sixth);
    case ACT_NONE: break;
  }
  return y;
}

BN_INLINE __m256 bn_act_gradv(__m256 y, __m256 g, act_kind act) {
  const __m256 zero = _mm256_setzero_ps(), three = _mm256_set1_ps(3.0f),
               mthree = _mm256_set1_ps(-3.0f), six = _mm256_set1_ps(6.0f);
  switch (act) {
    case ACT_RELU: return _mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_GT_OQ), g);
    case ACT_RELU6:
      return _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(y, zero, _CMP_GT_OQ),
                                         _mm256_cmp_ps(y, six, _CMP_LT_OQ)),
                           g);
    case ACT_HARDSWISH: {
      __m256 mid = _mm256_mul_ps(
          g, _mm256_add_ps(_mm256_mul_ps(y, _mm256_set1_ps(OPS_THIRD)), _mm256_set1_ps(0.5f)));
      __m256 r = _mm256_blendv_ps(g, mid, _mm256_cmp_ps(y, three, _CMP_LE_OQ));
      return _mm256_and_ps(_mm256_cmp_ps(y, mthree, _CMP_NLT_UQ), r); /* y < -3: 0 */
    }
    case ACT_HARDSIGMOID:
      return _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(y, mthree, _CMP_GT_OQ),
                                         _mm256_cmp_ps(y, three, _CMP_LT_OQ)),
                           _mm256_mul_ps(g, _mm256_set1_ps(OPS_SIXTH)));
    case ACT_NONE: break;
  }
  return g;
}

/* fmaf(x - mean, scale, beta) on 8 lanes. */
BN_INLINE __m256 bn_yv(const float *x, const float *mean, const float *scale, const float *beta) {
  return _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(mean)),
                         _mm256_loadu_ps(scale), _mm256_loadu_ps(beta));
}
#endif

/* out = act(fmaf(x - mean, scale, beta)) over rows [m0, m1). */
BN_INLINE void bn_affine_act_rows(float *out, const float *in, const float *mean,
                                  const float *scale, const float *beta, long m0, long m1, int C,
                                  act_kind act) {
  for (long m = m0; m < m1; m++) {
    const float *x = in + (size_t)m * C;
    float *y = out + (size_t)m * C;
    int c = 0;
#if OPS_AVX2
    for (; c + 8 <= C; c += 8)
      _mm256_storeu_ps(y + c, bn_act_fv(bn_yv(x + c, mean + c, scale + c, beta + c), act));
#endif
    for (; c < C; c++) y[c] = bn_act_f(OPS_FMA(x[c] - mean[c], scale[c], beta[c]), act);
  }
}

static void bn_affine_act(float *out, const float *in, const float *mean, const float *scale,
                          const float *beta, int M, int C, act_kind act) {
  const int nb = ops_nchunks(M, C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int b = 0; b < nb; b++) {
    long m0 = ops_chunk_lo(M, nb, b), m1 = ops_chunk_lo(M, nb, b + 1);
#define BN_ROWS(A) bn_affine_act_rows(out, in, mean, scale, beta, m0, m1, C, A)
    BN_ACT_DISPATCH(act, BN_ROWS)
#undef BN_ROWS
  }
}

void batchnorm_act_forward_train(float *out, float *save_mean, float *save_rstd,
                                 float *running_mean, float *running_var, const float *in,
                                 const float *gamma, const float *beta, int M, int C, float eps,
                                 float momentum, act_kind act) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  float scale[C];
  bn_train_stats(save_mean, save_rstd, scale, running_mean, running_var, in, gamma, M, C, eps,
                 momentum);
  bn_affine_act(out, in, save_mean, scale, beta, M, C, act);
}

void batchnorm_act_recompute(float *y, const float *x, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta, int M,
                             int C, act_kind act) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  float scale[C];
  for (int c = 0; c < C; c++) scale[c] = bn_saved_scale(gamma[c], save_rstd[c]);
  bn_affine_act(y, x, save_mean, scale, beta, M, C, act);
}

void batchnorm_act_forward_eval(float *out, const float *in, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, int M, int C, float eps,
                                act_kind act) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK);
  float scale[C];
  bn_eval_scale(scale, gamma, running_var, C, eps);
  bn_affine_act(out, in, running_mean, scale, beta, M, C, act);
}

/* Over rows [m0, m1): s1 += dy, s2 += dy*(x - mean), where dy is the gradient after the
 * activation's derivative, in batchnorm_backward's order and precision. */
BN_INLINE void bn_act_sums_rows(double *s1, double *s2, const float *dout, const float *in,
                                const float *mu, const float *scale, const float *beta, long m0,
                                long m1, int C, act_kind act) {
  for (long m = m0; m < m1; m++) {
    const float *x = in + (size_t)m * C, *g = dout + (size_t)m * C;
    int c = 0;
#if OPS_AVX2
    for (; c + 8 <= C; c += 8) {
      __m256 dy = bn_act_gradv(bn_yv(x + c, mu + c, scale + c, beta + c), _mm256_loadu_ps(g + c),
                               act);
      __m256 xv = _mm256_loadu_ps(x + c), mv = _mm256_loadu_ps(mu + c);
      for (int h = 0; h < 2; h++) { /* two halves of 4 doubles; mul then add, as the scalar */
        __m128 dyh = h ? _mm256_extractf128_ps(dy, 1) : _mm256_castps256_ps128(dy);
        __m128 xh = h ? _mm256_extractf128_ps(xv, 1) : _mm256_castps256_ps128(xv);
        __m128 mh = h ? _mm256_extractf128_ps(mv, 1) : _mm256_castps256_ps128(mv);
        __m256d d = _mm256_cvtps_pd(dyh);
        __m256d xm = _mm256_sub_pd(_mm256_cvtps_pd(xh), _mm256_cvtps_pd(mh));
        double *p1 = s1 + c + 4 * h, *p2 = s2 + c + 4 * h;
        _mm256_storeu_pd(p1, _mm256_add_pd(_mm256_loadu_pd(p1), d));
        _mm256_storeu_pd(p2, _mm256_add_pd(_mm256_loadu_pd(p2), _mm256_mul_pd(d, xm)));
      }
    }
#endif
    for (; c < C; c++) {
      float dy = bn_act_grad(OPS_FMA(x[c] - mu[c], scale[c], beta[c]), g[c], act);
      s1[c] += (double)dy;
      s2[c] += (double)dy * ((double)x[c] - (double)mu[c]);
    }
  }
}

/* din = a*dy + b*(x - mean) + k over rows [m0, m1), dy recomputed as in the sums. din may
 * alias dout: each element is read before it is written, in the same iteration. */
BN_INLINE void bn_act_din_rows(float *din, const float *dout, const float *in, const float *mu,
                               const float *scale, const float *beta, const float *a,
                               const float *b, const float *k, long m0, long m1, int C,
                               act_kind act) {
  for (long m = m0; m < m1; m++) {
    const float *x = in + (size_t)m * C, *g = dout + (size_t)m * C;
    float *dx = din + (size_t)m * C;
    int c = 0;
#if OPS_AVX2
    for (; c + 8 <= C; c += 8) {
      __m256 dy = bn_act_gradv(bn_yv(x + c, mu + c, scale + c, beta + c), _mm256_loadu_ps(g + c),
                               act);
      __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(mu + c));
      _mm256_storeu_ps(dx + c, _mm256_fmadd_ps(_mm256_loadu_ps(a + c), dy,
                                               _mm256_fmadd_ps(_mm256_loadu_ps(b + c), xm,
                                                               _mm256_loadu_ps(k + c))));
    }
#endif
    for (; c < C; c++) {
      float dy = bn_act_grad(OPS_FMA(x[c] - mu[c], scale[c], beta[c]), g[c], act);
      dx[c] = OPS_FMA(a[c], dy, OPS_FMA(b[c], x[c] - mu[c], k[c]));
    }
  }
}

void batchnorm_act_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *save_mean, const float *save_rstd,
                            const float *gamma, const float *beta, int M, int C, act_kind act) {
  POLLEN_ASSERT(C > 0 && C <= BN_MAXC_STACK && M > 0);
  double Sdy[C], Sdyx[C];
  float a[C], b[C], k[C], scale[C];
  const float *mu = save_mean;
  for (int c = 0; c < C; c++) scale[c] = bn_saved_scale(gamma[c], save_rstd[c]);
  const int nch = ops_nchunks(M, C);
  double *part = ops_scratch_get(&bn_partials, sizeof(double) * 2 * (size_t)nch * C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    double *s1 = part + (size_t)ch * 2 * C, *s2 = s1 + C;
    long m0 = ops_chunk_lo(M, nch, ch), m1 = ops_chunk_lo(M, nch, ch + 1);
    for (int c = 0; c < C; c++) s1[c] = s2[c] = 0.0;
#define BN_SUMS(A) bn_act_sums_rows(s1, s2, dout, in, mu, scale, beta, m0, m1, C, A)
    BN_ACT_DISPATCH(act, BN_SUMS)
#undef BN_SUMS
  }
  bn_reduce_partials(Sdy, Sdyx, part, nch, C);
  bn_backward_coefs(a, b, k, dgamma, dbeta, Sdy, Sdyx, save_rstd, gamma, M, C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    long m0 = ops_chunk_lo(M, nch, ch), m1 = ops_chunk_lo(M, nch, ch + 1);
#define BN_DIN(A) bn_act_din_rows(din, dout, in, mu, scale, beta, a, b, k, m0, m1, C, A)
    BN_ACT_DISPATCH(act, BN_DIN)
#undef BN_DIN
  }
}

/* ---- batch norm folded into the convolution before it (inference) ------------------------ */

void conv_bn_act_forward_eval(float *out, const float *in, const float *w, ops_conv_kind kind,
                              const float *gamma, const float *beta, const float *running_mean,
                              const float *running_var, float eps, int N, int H, int W, int Cin,
                              int Cout, int K, int stride, act_kind act, float *scratch) {
  POLLEN_ASSERT(Cout > 0 && Cout <= BN_MAXC_STACK);
  float scale[Cout];
  bn_eval_scale(scale, gamma, running_var, Cout, eps);
  /* Weights per output channel in the OHWI and [Cout][Cin] layouts; depthwise HWC has the
   * channel fastest instead. */
  const size_t per = kind == OPS_CONV_FULL ? (size_t)K * K * Cin : (size_t)Cin;
  const size_t nw = kind == OPS_CONV_DEPTHWISE ? (size_t)K * K * Cout : per * Cout;
  const size_t nw_padded = (nw + 15) & ~(size_t)15; /* the bias starts 64-byte aligned */
  float *wf = ops_scratch_get(&bn_folded, sizeof(float) * (nw_padded + Cout)), *bias = wf + nw_padded;
  for (int c = 0; c < Cout; c++)
    bias[c] = (float)((double)beta[c] - (double)running_mean[c] * (double)scale[c]);
  if (kind == OPS_CONV_DEPTHWISE)
    for (size_t t = 0; t < (size_t)K * K; t++)
      for (int c = 0; c < Cout; c++) wf[t * Cout + c] = w[t * Cout + c] * scale[c];
  else
    for (int co = 0; co < Cout; co++)
      for (size_t i = 0; i < per; i++) wf[co * per + i] = w[co * per + i] * scale[co];
  switch (kind) {
    case OPS_CONV_FULL:
      conv2d_act_forward(out, in, wf, bias, N, H, W, Cin, Cout, K, stride, scratch, act);
      break;
    case OPS_CONV_DEPTHWISE:
      dwconv_act_forward(out, in, wf, bias, N, H, W, Cout, K, stride, act);
      break;
    case OPS_CONV_POINTWISE:
      linear_act_forward(out, in, wf, bias, N * H * W, Cin, Cout, act);
      break;
  }
}

/* ---- batch norm whose statistics the convolution took (training) ------------------------- */

void conv_bn_act_forward_train(float *y, float *x, float *save_mean, float *save_rstd,
                               float *running_mean, float *running_var, const float *in,
                               const float *w, ops_conv_kind kind, const float *gamma,
                               const float *beta, float eps, float momentum, int N, int H, int W,
                               int Cin, int Cout, int K, int stride, act_kind act, float *scratch) {
  const long M = (long)N * conv_out_size(H, K, stride) * conv_out_size(W, K, stride);
  POLLEN_ASSERT(Cout > 0 && Cout <= BN_MAXC_STACK && M > 0);
  if (kind == OPS_CONV_FULL) {
    conv2d_forward(x, in, w, N, H, W, Cin, Cout, K, stride, scratch);
    batchnorm_act_forward_train(y, save_mean, save_rstd, running_mean, running_var, x, gamma,
                                beta, (int)M, Cout, eps, momentum, act);
    return;
  }
  /* Blocks: 64 rows of the GEMM, or one output row of the depthwise conv (its width). */
  const long block_rows = kind == OPS_CONV_POINTWISE ? OPS_STATS_ROWS_LINEAR
                                                     : conv_out_size(W, K, stride);
  const size_t n = (size_t)ops_stats_blocks(M, block_rows) * Cout;
  double *bmean = ops_scratch_get(&bn_block_stats, sizeof(double) * 2 * n), *bm2 = bmean + n;
  if (kind == OPS_CONV_POINTWISE)
    linear_stats_forward(x, in, w, (int)M, Cin, Cout, bmean, bm2);
  else
    dwconv_stats_forward(x, in, w, N, H, W, Cout, K, stride, bmean, bm2);
  double mean[Cout], var[Cout];
  float scale[Cout];
  bn_combine_blocks(mean, var, bmean, bm2, M, block_rows, Cout);
  bn_finish_moments(save_mean, save_rstd, scale, running_mean, running_var, mean, var, gamma,
                    (int)M, Cout, eps, momentum);
  bn_affine_act(y, x, save_mean, scale, beta, (int)M, Cout, act);
}
