/* dwconv.cu - depthwise convolution, NHWC, HWC weights, same padding, as ops/dwconv.c.
 * Forward: one thread per output element (consecutive threads = consecutive channels, so
 * loads are coalesced). din: one thread per input element gathering its taps (no atomics).
 * dw: a fixed-order column sum over the N*Ho*Wo output pixels, one column per (tap, channel). */
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
  size_t np = cu_colsum2_part_elems(M, kkc);
  float *part = (float *)cuda_ctx_scratch(ctx, 0, sizeof(float) * (np + (size_t)kkc));
  float *sum = part + np;
  cu_colsum2<float>(ctx->stream, sum, (float *)NULL, part, M, kkc,
                    dwconv_dw_f{dout, in, H, W, C, K, stride, Ho, Wo});
  dwconv_acc_k<<<cu_blocks((size_t)kkc), CU_THREADS, 0, ctx->stream>>>(dw, sum, (size_t)kkc);
  CUDA_CHECK_LAUNCH();
}
