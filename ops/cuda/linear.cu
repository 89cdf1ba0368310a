/* linear.cu - fully connected layer and NHWC 1x1 convolution, as ops/linear.c:
 * out[M][Cout] = in.w^T + bias through cuBLAS; dbias is a fixed-order column sum. */
#include "ops/cuda/cuda_common.cuh"

__global__ void linear_bias_k(float *out, const float *bias, size_t M, int Cout) {
  CU_FOR(i, M * Cout) out[i] = bias[i % Cout];
}

struct linear_col_f {
  const float *g;
  int C;
  __device__ cu_pair<float> operator()(long m, int c) const {
    return cu_pair<float>{g[(size_t)m * C + c], 0.0f};
  }
};

void cuda_linear_forward(cuda_ctx *ctx, float *out, const float *in, const float *w,
                         const float *bias, int M, int Cin, int Cout) {
  if (M <= 0 || Cout <= 0) return;
  float beta = 0.0f;
  if (bias) {
    /* Seed out with the bias so the GEMM adds onto it, as the CPU op does. */
    linear_bias_k<<<cu_blocks((size_t)M * Cout), CU_THREADS, 0, ctx->stream>>>(out, bias,
                                                                                 (size_t)M, Cout);
    CUDA_CHECK_LAUNCH();
    beta = 1.0f;
  }
  if (Cin <= 0) {
    if (!bias) cuda_memset0(ctx, out, sizeof(float) * (size_t)M * Cout);
    return;
  }
  cuda_gemm(ctx, 0, 1, M, Cout, Cin, 1.0f, in, Cin, w, Cin, beta, out, Cout);
}

void cuda_linear_backward(cuda_ctx *ctx, float *din, float *dw, float *dbias, const float *dout,
                          const float *in, const float *w, int M, int Cin, int Cout) {
  if (M <= 0) return;
  if (din) {
    if (Cout > 0)
      cuda_gemm(ctx, 0, 0, M, Cin, Cout, 1.0f, dout, Cout, w, Cin, 0.0f, din, Cin);
    else
      cuda_memset0(ctx, din, sizeof(float) * (size_t)M * Cin);
  }
  if (Cout > 0 && Cin > 0)
    cuda_gemm(ctx, 1, 0, Cout, Cin, M, 1.0f, dout, Cout, in, Cin, 1.0f, dw, Cin);
  if (dbias && Cout > 0) {
    size_t np = cu_colsum2_part_elems(M, Cout);
    float *part = (float *)cuda_ctx_scratch(ctx, 0, sizeof(float) * (np + (size_t)Cout));
    float *sum = part + np;
    cu_colsum2<float>(ctx->stream, sum, (float *)NULL, part, M, Cout, linear_col_f{dout, Cout});
    cuda_residual_backward(ctx, dbias, sum, (size_t)Cout); /* dbias += sum */
  }
}
