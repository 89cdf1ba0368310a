/* dropout.cu - inverted dropout with ops/dropout.c's exact mask: element i is kept iff
 * u >= p, u = lane i%4 of philox4x32(counter = {i/4 low, i/4 high, 0, 0}, key = seed) as a
 * float from its 24 high bits. cu_philox4x32 is base/core.c's Philox, word for word, so a
 * CPU run and a GPU run drop the same elements. One thread per group of 4 elements. */
#include "ops/cuda/cuda_common.cuh"

__global__ void dropout_k(float *out, const float *in, size_t n, float p, float scale,
                          uint64_t seed) {
  CU_FOR(g, (n + 3) / 4) {
    uint64_t ctr = (uint64_t)g;
    uint32_t v[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), 0u, 0u};
    cu_philox4x32(v, seed);
    size_t base = g * 4;
    for (int l = 0; l < 4 && base + (size_t)l < n; l++) {
      float u = (float)(v[l] >> 8) * (1.0f / 16777216.0f);
      out[base + l] = u >= p ? __fmul_rn(in[base + l], scale) : 0.0f;
    }
  }
}

__global__ void dropout_fill_k(float *out, const float *in, size_t n, int zero) {
  CU_FOR(i, n) out[i] = zero ? 0.0f : in[i];
}

static void dropout_apply(cuda_ctx *ctx, float *out, const float *in, size_t n, float p,
                          uint64_t seed) {
  if (!n) return;
  if (p <= 0.0f || p >= 1.0f) { /* identity, or everything dropped (1/(1-p) infinite) */
    if (p <= 0.0f && out == in) return;
    dropout_fill_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, in, n, p >= 1.0f);
  } else {
    dropout_k<<<cu_blocks((n + 3) / 4), CU_THREADS, 0, ctx->stream>>>(out, in, n, p,
                                                                        1.0f / (1.0f - p), seed);
  }
  CUDA_CHECK_LAUNCH();
}

void cuda_dropout_forward(cuda_ctx *ctx, float *out, const float *in, size_t n, float p,
                          uint64_t seed) {
  dropout_apply(ctx, out, in, n, p, seed);
}

void cuda_dropout_backward(cuda_ctx *ctx, float *din, const float *dout, size_t n, float p,
                           uint64_t seed) {
  dropout_apply(ctx, din, dout, n, p, seed);
}
