/* act.cu - pointwise activations, forward and backward, as ops/act.c (formulas and break
 * points in cuda_common.cuh). out may alias in; din may alias dout. */
#include "ops/cuda/cuda_common.cuh"

template <int ACT>
__global__ void act_fwd_k(float *out, const float *in, size_t n) {
  CU_FOR(i, n) out[i] = cu_act_f<ACT>(in[i]);
}

template <int ACT>
__global__ void act_bwd_k(float *din, const float *dout, const float *in, size_t n) {
  CU_FOR(i, n) din[i] = cu_act_grad<ACT>(in[i], dout[i]);
}

void cuda_act_forward(cuda_ctx *ctx, float *out, const float *in, size_t n, act_kind act) {
  if (!n || (act == ACT_NONE && out == in)) return;
#define ACT_F(A) act_fwd_k<A><<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, in, n)
  CU_ACT_DISPATCH(act, ACT_F)
#undef ACT_F
  CUDA_CHECK_LAUNCH();
}

void cuda_act_backward(cuda_ctx *ctx, float *din, const float *dout, const float *in, size_t n,
                       act_kind act) {
  if (!n || (act == ACT_NONE && din == dout)) return;
#define ACT_B(A) act_bwd_k<A><<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(din, dout, in, n)
  CU_ACT_DISPATCH(act, ACT_B)
#undef ACT_B
  CUDA_CHECK_LAUNCH();
}
