/* conv2d.c - full convolution (groups = 1), NHWC, OHWI weights: the 3x3 stride-2 stem.
 * im2col one image at a time into scratch [Ho*Wo][K*K*Cin] (so scratch stays one image
 * big), then one cblas_sgemm per image. The weight layout OHWI matches an im2col row, so the
 * GEMM needs no transposed copies. Backward: dw += dout^T . col; dcol = dout . w, folded back
 * into din by a gather over input rows (each thread owns whole din rows: no races). */
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

size_t conv2d_scratch_floats(int H, int W, int Cin, int K, int stride) {
  size_t Ho = (size_t)conv_out_size(H, K, stride), Wo = (size_t)conv_out_size(W, K, stride);
  return Ho * Wo * (size_t)K * K * Cin;
}

/* col[oh*Wo+ow][kh][kw][ci] = in[oh*s-pad+kh][ow*s-pad+kw][ci], zero outside the image. */
static void conv2d_im2col(float *col, const float *img, int H, int W, int Cin, int K, int s,
                          int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  const size_t kkc = (size_t)K * K * Cin;
#pragma omp parallel for schedule(static) if ((size_t)Ho * Wo * kkc >= OPS_PAR_MIN)
  for (int oh = 0; oh < Ho; oh++)
    for (int ow = 0; ow < Wo; ow++) {
      float *dst = col + ((size_t)oh * Wo + ow) * kkc;
      const int iw0 = ow * s - pad;
      for (int kh = 0; kh < K; kh++) {
        int ih = oh * s - pad + kh;
        float *d = dst + (size_t)kh * K * Cin;
        if (ih >= 0 && ih < H && iw0 >= 0 && iw0 + K <= W) {
          /* interior: the K taps of this row are K*Cin contiguous floats (an inlined loop:
           * the stem has Cin = 3, where memcpy's call overhead dominated) */
          const float *src = img + ((size_t)ih * W + iw0) * Cin;
          for (int i = 0; i < K * Cin; i++) d[i] = src[i];
          continue;
        }
        for (int kw = 0; kw < K; kw++) {
          int iw = iw0 + kw;
          int inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
          const float *src = inside ? img + ((size_t)ih * W + iw) * Cin : NULL;
          for (int c = 0; c < Cin; c++) d[(size_t)kw * Cin + c] = inside ? src[c] : 0.0f;
        }
      }
    }
}

void conv2d_forward(float *out, const float *in, const float *w, int N, int H, int W, int Cin,
                    int Cout, int K, int stride, float *scratch) {
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const int kkc = K * K * Cin, P = Ho * Wo;
  for (int n = 0; n < N; n++) {
    conv2d_im2col(scratch, in + (size_t)n * H * W * Cin, H, W, Cin, K, stride, Ho, Wo);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, Cout, kkc, 1.0f, scratch, kkc, w,
                kkc, 0.0f, out + (size_t)n * P * Cout, Cout);
  }
}

/* din[ih][iw][ci] = sum over (kh,kw) with oh*s-pad+kh = ih, ow*s-pad+kw = iw of
 * dcol[oh*Wo+ow][kh][kw][ci]. Parallel over input rows: each row written by one thread. */
static void conv2d_col2im(float *img, const float *dcol, int H, int W, int Cin, int K, int s,
                          int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  const size_t kkc = (size_t)K * K * Cin;
#pragma omp parallel for schedule(static) if ((size_t)H * W * kkc >= OPS_PAR_MIN)
  for (int ih = 0; ih < H; ih++) {
    float *row = img + (size_t)ih * W * Cin;
    memset(row, 0, sizeof(float) * W * Cin);
    for (int kh = 0; kh < K; kh++) {
      int t = ih + pad - kh;
      if (t < 0 || t % s) continue;
      int oh = t / s;
      if (oh >= Ho) continue;
      for (int ow = 0; ow < Wo; ow++)
        for (int kw = 0; kw < K; kw++) {
          int iw = ow * s - pad + kw;
          if (iw < 0 || iw >= W) continue;
          const float *src = dcol + ((size_t)oh * Wo + ow) * kkc + ((size_t)kh * K + kw) * Cin;
          float *d = row + (size_t)iw * Cin;
          for (int c = 0; c < Cin; c++) d[c] += src[c];
        }
    }
  }
}

void conv2d_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                     int N, int H, int W, int Cin, int Cout, int K, int stride, float *scratch) {
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const int kkc = K * K * Cin, P = Ho * Wo;
  for (int n = 0; n < N; n++) {
    const float *g = dout + (size_t)n * P * Cout;
    conv2d_im2col(scratch, in + (size_t)n * H * W * Cin, H, W, Cin, K, stride, Ho, Wo);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cout, kkc, P, 1.0f, g, Cout, scratch,
                kkc, 1.0f, dw, kkc);
    if (!din) continue;
    /* The columns are no longer needed: reuse the scratch for dcol. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, kkc, Cout, 1.0f, g, Cout, w, kkc,
                0.0f, scratch, kkc);
    conv2d_col2im(din + (size_t)n * H * W * Cin, scratch, H, W, Cin, K, stride, Ho, Wo);
  }
}
