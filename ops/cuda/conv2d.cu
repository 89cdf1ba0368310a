/* conv2d.cu - full convolution (groups = 1), NHWC, OHWI weights, as ops/conv2d.c: im2col of
 * the whole batch into scratch [N*Ho*Wo][K*K*Cin], then one GEMM over M = N*Ho*Wo rows (one
 * big GEMM keeps the GPU busy where per-image GEMMs of the stem would not). Backward:
 * dw += dout^T.col; dcol = dout.w, folded into din by a gather (one thread per din element:
 * no atomics, a fixed summation order). */
#include "ops/cuda/cuda_common.cuh"

size_t cuda_conv2d_scratch_floats(int N, int H, int W, int Cin, int K, int stride) {
  size_t Ho = (size_t)conv_out_size(H, K, stride), Wo = (size_t)conv_out_size(W, K, stride);
  return (size_t)N * Ho * Wo * (size_t)K * K * Cin;
}

/* col[(n*Ho+oh)*Wo+ow][kh][kw][ci] = in[n][oh*s-pad+kh][ow*s-pad+kw][ci], zero outside.
 * cu_rows layout: a thread keeps one column j = (kh, kw, ci) and strides over output pixels
 * (32-bit pixel indices, checked on the host). */
__global__ void conv2d_im2col_k(float *col, const float *in, int H, int W, int Cin, int K,
                                int s, int Ho, int Wo, unsigned P) {
  const int pad = (K - 1) / 2, kkc = K * K * Cin, j = CU_ROW_CHANNEL();
  if (j >= kkc) return;
  const int ci = j % Cin, kw = (j / Cin) % K, kh = j / (Cin * K);
  CU_ROWS(p, (long)P) {
    const unsigned pu = (unsigned)p, ow = pu % Wo, q = pu / Wo, oh = q % Ho, n = q / Ho;
    const int ih = (int)oh * s - pad + kh, iw = (int)ow * s - pad + kw;
    col[(size_t)p * kkc + j] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                   ? in[(((size_t)n * H + ih) * W + iw) * Cin + ci]
                                   : 0.0f;
  }
}

static void conv2d_im2col(cuda_ctx *ctx, float *col, const float *in, int N, int H, int W,
                          int Cin, int K, int s, int Ho, int Wo) {
  const long P = (long)N * Ho * Wo;
  POLLEN_ASSERT(P < (1l << 31));
  const cu_rows L = cu_rows_launch(P, K * K * Cin);
  conv2d_im2col_k<<<L.grid, L.block, 0, ctx->stream>>>(col, in, H, W, Cin, K, s, Ho, Wo, (unsigned)P);
  CUDA_CHECK_LAUNCH();
}

/* din[n][ih][iw][ci] = sum of dcol[(n,oh,ow)][kh][kw][ci] over oh*s-pad+kh = ih,
 * ow*s-pad+kw = iw, taps in (kh, kw) order as the CPU's col2im. */
__global__ void conv2d_col2im_k(float *din, const float *dcol, int N, int H, int W, int Cin,
                                int K, int s, int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  const size_t kkc = (size_t)K * K * Cin, total = (size_t)N * H * W * Cin;
  CU_FOR(i, total) {
    int ci = (int)(i % Cin), iw = (int)((i / Cin) % W), ih = (int)((i / ((size_t)Cin * W)) % H);
    int n = (int)(i / ((size_t)Cin * W * H));
    float acc = 0.0f;
    for (int kh = 0; kh < K; kh++) {
      int t = ih + pad - kh;
      if (t < 0 || t % s || t / s >= Ho) continue;
      for (int kw = 0; kw < K; kw++) {
        int u = iw + pad - kw;
        if (u < 0 || u % s || u / s >= Wo) continue;
        size_t r = ((size_t)n * Ho + t / s) * Wo + u / s;
        acc += dcol[r * kkc + ((size_t)kh * K + kw) * Cin + ci];
      }
    }
    din[i] = acc;
  }
}

void cuda_conv2d_forward(cuda_ctx *ctx, float *out, const float *in, const float *w, int N, int H,
                         int W, int Cin, int Cout, int K, int stride, float *scratch) {
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const int kkc = K * K * Cin, M = N * Ho * Wo;
  if (M <= 0 || Cout <= 0) return;
  conv2d_im2col(ctx, scratch, in, N, H, W, Cin, K, stride, Ho, Wo);
  cuda_gemm(ctx, 0, 1, M, Cout, kkc, 1.0f, scratch, kkc, w, kkc, 0.0f, out, Cout);
}

void cuda_conv2d_backward(cuda_ctx *ctx, float *din, float *dw, const float *dout,
                          const float *in, const float *w, int N, int H, int W, int Cin, int Cout,
                          int K, int stride, float *scratch) {
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const int kkc = K * K * Cin, M = N * Ho * Wo;
  if (M <= 0 || Cout <= 0) return;
  conv2d_im2col(ctx, scratch, in, N, H, W, Cin, K, stride, Ho, Wo);
  cuda_gemm(ctx, 1, 0, Cout, kkc, M, 1.0f, dout, Cout, scratch, kkc, 1.0f, dw, kkc);
  if (!din) return;
  /* The columns are no longer needed (stream order): reuse the scratch for dcol. */
  cuda_gemm(ctx, 0, 0, M, kkc, Cout, 1.0f, dout, Cout, w, kkc, 0.0f, scratch, kkc);
  conv2d_col2im_k<<<cu_blocks((size_t)N * H * W * Cin), CU_THREADS, 0, ctx->stream>>>(
      din, scratch, N, H, W, Cin, K, stride, Ho, Wo);
  CUDA_CHECK_LAUNCH();
}
