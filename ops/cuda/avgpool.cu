/* avgpool.cu - global average pool, NHWC, as ops/avgpool.c: per image a fixed-order sum over
 * the HW positions of each channel, times 1/HW. */
#include "ops/cuda/cuda_common.cuh"

struct avgpool_f {
  const float *x;
  int HW, C;
  __device__ float operator()(int n, int q, int c) const {
    return x[((size_t)n * HW + q) * C + c];
  }
};

__global__ void avgpool_bwd_k(float *din, const float *dout, int HW, int C, float inv, size_t n) {
  CU_FOR(i, n) {
    size_t r = i / C;
    int c = (int)(i % C);
    din[i] = dout[(r / HW) * C + c] * inv;
  }
}

void cuda_avgpool_forward(cuda_ctx *ctx, float *out, const float *in, int N, int HW, int C) {
  cu_segsum(ctx->stream, out, N, HW, C, 1.0f / (float)HW, avgpool_f{in, HW, C});
}

void cuda_avgpool_backward(cuda_ctx *ctx, float *din, const float *dout, int N, int HW, int C) {
  size_t n = (size_t)N * HW * C;
  if (!n) return;
  avgpool_bwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(din, dout, HW, C,
                                                                1.0f / (float)HW, n);
  CUDA_CHECK_LAUNCH();
}
