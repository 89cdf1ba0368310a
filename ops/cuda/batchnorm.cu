/* batchnorm.cu - batch norm over M rows of C channels, optionally fused with the activation
 * that follows it, as ops/batchnorm.c: statistics summed in double, shifted by the channel's
 * first value; running stats updated as PyTorch does; y = act(fmaf(x-mean, scale, beta)) with
 * scale from the SAVED float rstd, and the fused backward recomputes y from x with the same
 * arithmetic so the activation's break points see the forward's bits. The sums are fixed-order
 * column sums (cuda_common.cuh); the per-channel arithmetic is the CPU's, in double. */
#include "ops/cuda/cuda_common.cuh"

/* forward sums: a = x - ref, b = (x - ref)^2, ref = the first row */
struct bn_stat_f {
  const float *x;
  int C;
  __device__ cu_pair<double> operator()(long m, int c) const {
    double d = (double)x[(size_t)m * C + c] - (double)x[c];
    return cu_pair<double>{d, d * d};
  }
};

/* Per channel: mean, rstd (saved as float), scale = gamma*saved rstd, running stats. */
__global__ void bn_finish_k(float *save_mean, float *save_rstd, float *scale, float *running_mean,
                            float *running_var, const double *S1, const double *S2,
                            const float *ref, const float *gamma, int M, int C, float eps,
                            float momentum) {
  CU_FOR(c, (size_t)C) {
    double dm = S1[c] / M;
    double var = S2[c] / M - dm * dm;
    if (var < 0.0) var = 0.0;
    double mean = (double)ref[c] + dm;
    double rstd = 1.0 / sqrt(var + (double)eps);
    save_mean[c] = (float)mean;
    save_rstd[c] = (float)rstd;
    scale[c] = (float)((double)gamma[c] * (double)save_rstd[c]);
    if (running_mean)
      running_mean[c] = __fadd_rn(__fmul_rn(1.0f - momentum, running_mean[c]),
                                  __fmul_rn(momentum, (float)mean));
    if (running_var) {
      double unbiased = M > 1 ? var * M / (M - 1) : var;
      running_var[c] = __fadd_rn(__fmul_rn(1.0f - momentum, running_var[c]),
                                 __fmul_rn(momentum, (float)unbiased));
    }
  }
}

__global__ void bn_eval_scale_k(float *scale, const float *gamma, const float *running_var, int C,
                                float eps) {
  CU_FOR(c, (size_t)C) scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)eps));
}

template <int ACT>
__global__ void bn_affine_act_k(float *out, const float *in, const float *mean,
                                const float *scale, const float *beta, long M, int C) {
  const int c = CU_ROW_CHANNEL();
  if (c >= C) return;
  const float mu = mean[c], sc = scale[c], be = beta[c];
  CU_ROWS(m, M) {
    const size_t i = (size_t)m * C + c;
    out[i] = cu_act_f<ACT>(fmaf(in[i] - mu, sc, be));
  }
}

static void bn_affine_act(cuda_ctx *ctx, float *out, const float *in, const float *mean,
                          const float *scale, const float *beta, int M, int C, act_kind act) {
  const cu_rows L = cu_rows_launch(M, C);
#define BN_AFF(A) \
  bn_affine_act_k<A><<<L.grid, L.block, 0, ctx->stream>>>(out, in, mean, scale, beta, (long)M, C)
  CU_ACT_DISPATCH(act, BN_AFF)
#undef BN_AFF
  CUDA_CHECK_LAUNCH();
}

void cuda_batchnorm_forward_train(cuda_ctx *ctx, float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var, const float *in,
                                  const float *gamma, const float *beta, int M, int C, float eps,
                                  float momentum, act_kind act) {
  POLLEN_ASSERT(C > 0 && M > 0);
  size_t np = cu_colsum2_part_elems(M, C);
  double *part = (double *)cuda_ctx_scratch(
      ctx, 0, sizeof(double) * (np + 2 * (size_t)C) + sizeof(float) * (size_t)C);
  double *S1 = part + np, *S2 = S1 + C;
  float *scale = (float *)(S2 + C);
  cu_colsum2<double>(ctx->stream, S1, S2, part, M, C, bn_stat_f{in, C});
  bn_finish_k<<<cu_blocks((size_t)C), CU_THREADS, 0, ctx->stream>>>(
      save_mean, save_rstd, scale, running_mean, running_var, S1, S2, in, gamma, M, C, eps,
      momentum);
  CUDA_CHECK_LAUNCH();
  bn_affine_act(ctx, out, in, save_mean, scale, beta, M, C, act);
}

void cuda_batchnorm_forward_eval(cuda_ctx *ctx, float *out, const float *in, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, int M, int C, float eps,
                                 act_kind act) {
  POLLEN_ASSERT(C > 0);
  if (M <= 0) return;
  float *scale = (float *)cuda_ctx_scratch(ctx, 0, sizeof(float) * (size_t)C);
  bn_eval_scale_k<<<cu_blocks((size_t)C), CU_THREADS, 0, ctx->stream>>>(scale, gamma,
                                                                         running_var, C, eps);
  CUDA_CHECK_LAUNCH();
  bn_affine_act(ctx, out, in, running_mean, scale, beta, M, C, act);
}

/* backward sums: a = dy, b = dy*(x - mean), dy = the activation's gradient at the recomputed
 * BN output (or dout itself without an activation) */
template <int ACT>
struct bn_grad_f {
  const float *g, *x, *mu, *scale, *beta;
  int C;
  __device__ cu_pair<double> operator()(long m, int c) const {
    size_t i = (size_t)m * C + c;
    float xm = x[i] - mu[c];
    float dy = ACT == ACT_NONE ? g[i] : cu_act_grad<ACT>(fmaf(xm, scale[c], beta[c]), g[i]);
    return cu_pair<double>{(double)dy, (double)dy * ((double)x[i] - (double)mu[c])};
  }
};

__global__ void bn_bwd_scale_k(float *scale, const float *gamma, const float *save_rstd, int C) {
  CU_FOR(c, (size_t)C) scale[c] = (float)((double)gamma[c] * (double)save_rstd[c]);
}

/* dgamma += sum dy*xhat, dbeta += sum dy, and din's coefficients a, b, k per channel. */
__global__ void bn_bwd_finish_k(float *dgamma, float *dbeta, float *a, float *b, float *k,
                                const double *Sdy, const double *Sdyx, const float *save_rstd,
                                const float *gamma, int M, int C) {
  CU_FOR(c, (size_t)C) {
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

/* din = a*dy + b*(x - mean) + k; din may alias dout (each element read, then written, by one
 * thread). */
template <int ACT>
__global__ void bn_din_k(float *din, const float *dout, const float *x, const float *mu,
                         const float *scale, const float *beta, const float *a, const float *b,
                         const float *k, long M, int C) {
  const int c = CU_ROW_CHANNEL();
  if (c >= C) return;
  const float mc = mu[c], sc = scale[c], be = beta[c], ac = a[c], bc = b[c], kc = k[c];
  CU_ROWS(m, M) {
    const size_t i = (size_t)m * C + c;
    float xm = x[i] - mc;
    float dy = ACT == ACT_NONE ? dout[i] : cu_act_grad<ACT>(fmaf(xm, sc, be), dout[i]);
    din[i] = fmaf(ac, dy, fmaf(bc, xm, kc));
  }
}

void cuda_batchnorm_backward(cuda_ctx *ctx, float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta, int M,
                             int C, act_kind act) {
  POLLEN_ASSERT(C > 0 && M > 0);
  POLLEN_ASSERT(act == ACT_NONE || beta);
  size_t np = cu_colsum2_part_elems(M, C);
  double *part = (double *)cuda_ctx_scratch(
      ctx, 0, sizeof(double) * (np + 2 * (size_t)C) + sizeof(float) * 4 * (size_t)C);
  double *Sdy = part + np, *Sdyx = Sdy + C;
  float *scale = (float *)(Sdyx + C), *a = scale + C, *b = a + C, *k = b + C;
  bn_bwd_scale_k<<<cu_blocks((size_t)C), CU_THREADS, 0, ctx->stream>>>(scale, gamma, save_rstd,
                                                                        C);
  CUDA_CHECK_LAUNCH();
#define BN_SUMS(A) \
  cu_colsum2<double>(ctx->stream, Sdy, Sdyx, part, M, C, \
                     bn_grad_f<A>{dout, in, save_mean, scale, beta, C})
  CU_ACT_DISPATCH(act, BN_SUMS)
#undef BN_SUMS
  bn_bwd_finish_k<<<cu_blocks((size_t)C), CU_THREADS, 0, ctx->stream>>>(
      dgamma, dbeta, a, b, k, Sdy, Sdyx, save_rstd, gamma, M, C);
  CUDA_CHECK_LAUNCH();
  const cu_rows L = cu_rows_launch(M, C);
#define BN_DIN(A)                                                                               \
  bn_din_k<A><<<L.grid, L.block, 0, ctx->stream>>>(din, dout, in, save_mean, scale, beta, a, \
                                                      b, k, (long)M, C)
  CU_ACT_DISPATCH(act, BN_DIN)
#undef BN_DIN
  CUDA_CHECK_LAUNCH();
}
