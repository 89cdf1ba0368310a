/* residual.cu - out = a + b; backward accumulates dout into the skip branch (ops/residual.c);
 * stochastic depth with ops/residual.c's per-sample mask. */
#include "ops/cuda/cuda_common.cuh"

__global__ void residual_fwd_k(float *out, const float *a, const float *b, size_t n) {
  CU_FOR(i, n) out[i] = a[i] + b[i];
}

__global__ void residual_bwd_k(float *da, const float *dout, size_t n) {
  CU_FOR(i, n) da[i] += dout[i];
}

void cuda_residual_forward(cuda_ctx *ctx, float *out, const float *a, const float *b, size_t n) {
  if (!n) return;
  residual_fwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void cuda_residual_backward(cuda_ctx *ctx, float *da, const float *dout, size_t n) {
  if (!n) return;
  residual_bwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(da, dout, n);
  CUDA_CHECK_LAUNCH();
}

/* drop_path_scale (ops/residual.c) on the device. */
__device__ __forceinline__ float drop_path_scale_d(size_t n, float p, float keep_scale, uint64_t seed) {
  uint32_t v[4] = {(uint32_t)n, 0u, 0u, 0u};
  cu_philox4x32(v, seed);
  float u = (float)(v[0] >> 8) * (1.0f / 16777216.0f);
  return u >= p ? keep_scale : 0.0f;
}

__global__ void drop_path_fwd_k(float *out, const float *branch, const float *skip, size_t n,
                                size_t per_image, float p, float keep_scale, uint64_t seed) {
  CU_FOR(i, n) {
    float s = drop_path_scale_d(i / per_image, p, keep_scale, seed);
    out[i] = __fadd_rn(__fmul_rn(branch[i], s), skip[i]);
  }
}

__global__ void drop_path_bwd_k(float *dbranch, const float *dout, size_t n, size_t per_image,
                                float p, float keep_scale, uint64_t seed) {
  CU_FOR(i, n) dbranch[i] = __fmul_rn(dout[i], drop_path_scale_d(i / per_image, p, keep_scale, seed));
}

/* p is in (0, 1): the model calls the plain sum at 0, and --drop-path stops below 1. */
void cuda_drop_path_forward(cuda_ctx *ctx, float *out, const float *branch, const float *skip,
                            int N, size_t per_image, float p, uint64_t seed) {
  size_t n = (size_t)N * per_image;
  if (!n) return;
  drop_path_fwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, branch, skip, n, per_image, p,
                                                                  1.0f / (1.0f - p), seed);
  CUDA_CHECK_LAUNCH();
}

void cuda_drop_path_backward(cuda_ctx *ctx, float *dbranch, const float *dout, int N,
                             size_t per_image, float p, uint64_t seed) {
  size_t n = (size_t)N * per_image;
  if (!n) return;
  drop_path_bwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(dbranch, dout, n, per_image, p,
                                                                  1.0f / (1.0f - p), seed);
  CUDA_CHECK_LAUNCH();
}
