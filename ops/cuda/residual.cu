/* residual.cu - out = a + b; backward accumulates dout into the skip branch (ops/residual.c). */
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
