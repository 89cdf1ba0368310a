/* dwconv.cu - depthwise convolution, NHWC, HWC weights, same padding, as ops/dwconv.c.
 * Forward: one thread per output element (consecutive threads = consecutive channels, so
 * loads are coalesced). din: one thread per input element gathering its taps (no atomics).
 * dw (K = 3 or 5, MobileNet's): each thread owns one channel and a strided share of a chunk
 * of output pixels and keeps all K*K taps in registers, so dout is read once and the input
 * rows come through the cache; per-chunk partial sums are then added in a fixed order (no
 * atomics: run-to-run identical). Other K: a fixed-order column sum per (tap, channel). */
#include "ops/cuda/cuda_common.cuh"

__global__ void dwconv_fwd_k(float *out, const float *in, const float *w, int N, int H, int W,
                             int C, int K, int s, int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  CU_FOR(i, (size_t)N * Ho * Wo * C) {
    int c = (int)(i % C), ow = (int)((i / C) % Wo), oh = (int)((i / ((size_t)C * Wo)) % Ho);
    int n = (int)(i / ((size_t)C * Wo * Ho));
    float acc = 0.0f;
    for (int kh = 0; kh < K; kh++) {
      int ih = oh * s - pad + kh;
      if (ih < 0 || ih >= H) continue;
      for (int kw = 0; kw < K; kw++) {
        int iw = ow * s - pad + kw;
        if (iw < 0 || iw >= W) continue;
        acc = fmaf(in[(((size_t)n * H + ih) * W + iw) * C + c], w[((size_t)kh * K + kw) * C + c],
                   acc);
      }
    }
    out[i] = acc;
  }
}

__global__ void dwconv_din_k(float *din, const float *dout, const float *w, int N, int H, int W,
                             int C, int K, int s, int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  CU_FOR(i, (size_t)N * H * W * C) {
    int c = (int)(i % C), iw = (int)((i / C) % W), ih = (int)((i / ((size_t)C * W)) % H);
    int n = (int)(i / ((size_t)C * W * H));
    float acc = 0.0f;
    for (int kh = 0; kh < K; kh++) {
      int t = ih + pad - kh;
      if (t < 0 || t % s || t / s >= Ho) continue;
      for (int kw = 0; kw < K; kw++) {
        int u = iw + pad - kw;
        if (u < 0 || u % s || u / s >= Wo) continue;
        acc = fmaf(dout[(((size_t)n * Ho + t / s) * Wo + u / s) * C + c],
                   w[((size_t)kh * K + kw) * C + c], acc);
      }
    }
    din[i] = acc;
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

__global__ void dwconv_acc_k(float *dst, const float *src, size_t n) {
  CU_FOR(i, n) dst[i] += src[i];
}

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
  size_t n = (size_t)N * Ho * Wo * C;
  if (!n) return;
  dwconv_fwd_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(out, in, w, N, H, W, C, K, stride,
                                                               Ho, Wo);
  CUDA_CHECK_LAUNCH();
}

void cuda_dwconv_backward(cuda_ctx *ctx, float *din, float *dw, const float *dout,
                          const float *in, const float *w, int N, int H, int W, int C, int K,
                          int stride) {
  POLLEN_ASSERT(K >= 1 && stride >= 1);
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  if (din && (size_t)N * H * W * C > 0) {
    dwconv_din_k<<<cu_blocks((size_t)N * H * W * C), CU_THREADS, 0, ctx->stream>>>(
        din, dout, w, N, H, W, C, K, stride, Ho, Wo);
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
  dwconv_acc_k<<<cu_blocks((size_t)kkc), CU_THREADS, 0, ctx->stream>>>(dw, sum, (size_t)kkc);
  CUDA_CHECK_LAUNCH();
}
