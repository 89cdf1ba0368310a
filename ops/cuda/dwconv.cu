/* dwconv.cu - depthwise convolution, NHWC, HWC weights, same padding, as ops/dwconv.c.
 * Forward and din: one thread per (pixel, channel), a fixed channel per thread (below).
 * dw (K = 3 or 5, MobileNet's): each thread owns one channel and a strided share of a chunk
 * of output pixels and keeps all K*K taps in registers, so dout is read once and the input
 * rows come through the cache; per-chunk partial sums are then added in a fixed order (no
 * atomics: run-to-run identical). Other K: a fixed-order column sum per (tap, channel). */
#include "ops/cuda/cuda_common.cuh"

/* Forward: one thread per (output pixel, channel) in the cu_rows layout (a fixed channel per
 * thread, its taps' weights in registers); KT = 3 or 5 unrolls the taps, 0 takes K at run
 * time. Pixel indices fit 32 bits (checked on the host): cheap divisions. */
template <int KT>
__global__ void dwconv_fwd_k(float *out, const float *in, const float *w, int H, int W, int C,
                             int Kr, int s, int Ho, int Wo, unsigned P) {
  const int K = KT ? KT : Kr, pad = (K - 1) / 2, c = CU_ROW_CHANNEL();
  if (c >= C) return;
  float wr[KT ? KT * KT : 1];
  if (KT)
    for (int t = 0; t < K * K; t++) wr[t] = w[(size_t)t * C + c];
  CU_ROWS(p, (long)P) {
    const unsigned pu = (unsigned)p, ow = pu % Wo, q = pu / Wo, oh = q % Ho, n = q / Ho;
    const float *xn = in + (size_t)n * H * W * C + c;
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < K; kh++) {
      const int ih = (int)oh * s - pad + kh;
      if (ih < 0 || ih >= H) continue;
#pragma unroll
      for (int kw = 0; kw < K; kw++) {
        const int iw = (int)ow * s - pad + kw;
        if (iw < 0 || iw >= W) continue;
        const float wv = KT ? wr[kh * K + kw] : w[((size_t)kh * K + kw) * C + c];
        acc = fmaf(xn[((size_t)ih * W + iw) * C], wv, acc);
      }
    }
    out[(size_t)p * C + c] = acc;
  }
}

/* din: one thread per (input pixel, channel), gathering the output taps that read it (no
 * atomics); ST = the stride (1 or 2 unrolled, 0 at run time). */
template <int KT, int ST>
__global__ void dwconv_din_k(float *din, const float *dout, const float *w, int H, int W, int C,
                             int Kr, int Sr, int Ho, int Wo, unsigned P) {
  const int K = KT ? KT : Kr, s = ST ? ST : Sr, pad = (K - 1) / 2, c = CU_ROW_CHANNEL();
  if (c >= C) return;
  float wr[KT ? KT * KT : 1];
  if (KT)
    for (int t = 0; t < K * K; t++) wr[t] = w[(size_t)t * C + c];
  CU_ROWS(p, (long)P) {
    const unsigned pu = (unsigned)p, iw = pu % W, q = pu / W, ih = q % H, n = q / H;
    const float *gn = dout + (size_t)n * Ho * Wo * C + c;
    float acc = 0.0f;
#pragma unroll
    for (int kh = 0; kh < K; kh++) {
      const int t = (int)ih + pad - kh;
      if (t < 0 || t % s || t / s >= Ho) continue;
#pragma unroll
      for (int kw = 0; kw < K; kw++) {
        const int u = (int)iw + pad - kw;
        if (u < 0 || u % s || u / s >= Wo) continue;
        const float wv = KT ? wr[kh * K + kw] : w[((size_t)kh * K + kw) * C + c];
        acc = fmaf(gn[((size_t)(t / s) * Wo + u / s) * C], wv, acc);
      }
    }
    din[(size_t)p * C + c] = acc;
  }
}

/* Column j = (kh*K + kw)*C + c of row m (output pixel n,oh,ow): dout[m][c]*in[ih][iw][c]. */
struct dwconv_dw_f {
  const float *g, *x;
  int H, W, C, K, s, Ho, Wo;
  __device__ cu_pair<float> operator()(long m, int j) const {
    const int pad = (K - 1) / 2, c = j % C, t = j / C, kh = t / K, kw = t % K;
    const int ow = (int)(m % Wo), oh = (int)((m / Wo) % Ho), n = (int)(m / ((long)Wo * Ho));
    const int ih = oh * s - pad + kh, iw = ow * s - pad + kw;
    float v = 0.0f;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
      v = g[(size_t)m * C + c] * x[(((size_t)n * H + ih) * W + iw) * C + c];
    return cu_pair<float>{v, 0.0f};
  }
};

/* part[chunk][tap][c]: the sums of chunk blockIdx.y's output pixels for channels
 * blockIdx.x*blockDim.x + threadIdx.x; threadIdx.y strides over the chunk's pixels. */
template <int K>
__global__ void dwconv_dw_part_k(float *part, const float *g, const float *x, long M, int H,
                                 int W, int C, int s, int Ho, int Wo, int nchunks) {
  extern __shared__ float sh[]; /* [blockDim.y][K*K][blockDim.x] */
  const int pad = (K - 1) / 2, c = blockIdx.x * blockDim.x + threadIdx.x;
  const long lo = M * blockIdx.y / nchunks, hi = M * (blockIdx.y + 1) / nchunks;
  float acc[K * K];
#pragma unroll
  for (int t = 0; t < K * K; t++) acc[t] = 0.0f;
  if (c < C)
    for (long m = lo + threadIdx.y; m < hi; m += blockDim.y) {
      const int ow = (int)(m % Wo), oh = (int)((m / Wo) % Ho), n = (int)(m / ((long)Wo * Ho));
      const float gv = g[(size_t)m * C + c];
      const float *xn = x + (size_t)n * H * W * C + c;
#pragma unroll
      for (int kh = 0; kh < K; kh++) {
        const int ih = oh * s - pad + kh;
        if (ih < 0 || ih >= H) continue;
#pragma unroll
        for (int kw = 0; kw < K; kw++) {
          const int iw = ow * s - pad + kw;
          if (iw >= 0 && iw < W) acc[kh * K + kw] = fmaf(gv, xn[((size_t)ih * W + iw) * C], acc[kh * K + kw]);
        }
      }
    }
  const int lanes = blockDim.y, cw = blockDim.x;
#pragma unroll
  for (int t = 0; t < K * K; t++) sh[((size_t)threadIdx.y * K * K + t) * cw + threadIdx.x] = acc[t];
  __syncthreads();
  /* lane 0 adds the lanes in order: one value per (tap, channel) for this chunk */
  if (threadIdx.y == 0 && c < C)
    for (int t = 0; t < K * K; t++) {
      float v = 0.0f;
      for (int l = 0; l < lanes; l++) v += sh[((size_t)l * K * K + t) * cw + threadIdx.x];
      part[((size_t)blockIdx.y * K * K + t) * C + c] = v;
    }
}

/* dw[j] += sum over chunks of part[chunk][j], chunks in order. */
__global__ void dwconv_dw_final_k(float *dw, const float *part, int kkc, int nchunks) {
  CU_FOR(j, (size_t)kkc) {
    float v = 0.0f;
    for (int ch = 0; ch < nchunks; ch++) v += part[(size_t)ch * kkc + j];
    dw[j] += v;
  }
}

/* The register-tiled dw for K = 3 or 5; returns 0 for other K. */
static int dwconv_dw_tiled(cuda_ctx *ctx, float *dw, const float *dout, const float *in, int N,
                           int H, int W, int C, int K, int s, int Ho, int Wo) {
  if (K != 3 && K != 5) return 0;
  const long M = (long)N * Ho * Wo;
  const int cw = C < 32 ? C : 32, lanes = 256 / cw;
  const int cgroups = (C + cw - 1) / cw;
  /* About 4 waves of blocks over the GPU, each chunk at least 64 pixels: a function of the
   * shape only, so the summation order never changes between runs. */
  long nchunks = 2048 / cgroups;
  if (nchunks > M / 64) nchunks = M / 64;
  if (nchunks < 1) nchunks = 1;
  const int kkc = K * K * C;
  float *part = (float *)cuda_ctx_scratch(ctx, 0, sizeof(float) * (size_t)nchunks * kkc);
  dim3 grid((unsigned)cgroups, (unsigned)nchunks), block((unsigned)cw, (unsigned)lanes);
  size_t shmem = sizeof(float) * (size_t)lanes * K * K * cw;
  if (K == 3)
    dwconv_dw_part_k<3><<<grid, block, shmem, ctx->stream>>>(part, dout, in, M, H, W, C, s, Ho, Wo, (int)nchunks);
  else
    dwconv_dw_part_k<5><<<grid, block, shmem, ctx->stream>>>(part, dout, in, M, H, W, C, s, Ho, Wo, (int)nchunks);
  CUDA_CHECK_LAUNCH();
  dwconv_dw_final_k<<<cu_blocks((size_t)kkc), CU_THREADS, 0, ctx->stream>>>(dw, part, kkc, (int)nchunks);
  CUDA_CHECK_LAUNCH();
  return 1;
}

void cuda_dwconv_forward(cuda_ctx *ctx, float *out, const float *in, const float *w, int N, int H,
                         int W, int C, int K, int stride) {
  POLLEN_ASSERT(K >= 1 && stride >= 1);
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const long P = (long)N * Ho * Wo;
  if (P <= 0 || C <= 0) return;
  POLLEN_ASSERT((long)N * H * W < (1l << 31)); /* 32-bit pixel indices */
  const cu_rows L = cu_rows_launch(P, C);
  if (K == 3)
    dwconv_fwd_k<3><<<L.grid, L.block, 0, ctx->stream>>>(out, in, w, H, W, C, K, stride, Ho, Wo, (unsigned)P);
  else if (K == 5)
    dwconv_fwd_k<5><<<L.grid, L.block, 0, ctx->stream>>>(out, in, w, H, W, C, K, stride, Ho, Wo, (unsigned)P);
  else
    dwconv_fwd_k<0><<<L.grid, L.block, 0, ctx->stream>>>(out, in, w, H, W, C, K, stride, Ho, Wo, (unsigned)P);
  CUDA_CHECK_LAUNCH();
}

void cuda_dwconv_backward(cuda_ctx *ctx, float *din, float *dw, const float *dout,
                          const float *in, const float *w, int N, int H, int W, int C, int K,
                          int stride) {
  POLLEN_ASSERT(K >= 1 && stride >= 1);
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  if (din && (long)N * H * W * C > 0) {
    POLLEN_ASSERT((long)N * H * W < (1l << 31)); /* 32-bit pixel indices */
    const long P = (long)N * H * W;
    const cu_rows L = cu_rows_launch(P, C);
#define DW_DIN(KT, ST)                                                                   \
  dwconv_din_k<KT, ST><<<L.grid, L.block, 0, ctx->stream>>>(din, dout, w, H, W, C, K, stride, \
                                                             Ho, Wo, (unsigned)P)
    if (K == 3 && stride == 1) DW_DIN(3, 1);
    else if (K == 3 && stride == 2) DW_DIN(3, 2);
    else if (K == 5 && stride == 1) DW_DIN(5, 1);
    else if (K == 5 && stride == 2) DW_DIN(5, 2);
    else DW_DIN(0, 0);
#undef DW_DIN
    CUDA_CHECK_LAUNCH();
  }
  const long M = (long)N * Ho * Wo;
  const int kkc = K * K * C;
  if (M <= 0 || kkc <= 0) return;
  if (dwconv_dw_tiled(ctx, dw, dout, in, N, H, W, C, K, stride, Ho, Wo)) return;
  size_t np = cu_colsum2_part_elems(M, kkc);
  float *part = (float *)cuda_ctx_scratch(ctx, 0, sizeof(float) * (np + (size_t)kkc));
  float *sum = part + np;
  cu_colsum2<float>(ctx->stream, sum, (float *)NULL, part, M, kkc,
                    dwconv_dw_f{dout, in, H, W, C, K, stride, Ho, Wo});
  cuda_residual_backward(ctx, dw, sum, (size_t)kkc); /* dw += sum */
}
