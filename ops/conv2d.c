/* conv2d.c - full convolution (groups = 1), NHWC, OHWI weights: the 3x3 stride-2 stem.
 *
 * Two paths. Few input channels and a multiple of 8 output channels (the stem: Cin = 3,
 * Cout = 16) go DIRECT: an im2col GEMM with K = 27 wastes most of OpenBLAS's time packing,
 * so each output pixel is a sum over taps of one input value broadcast times an 8-wide
 * vector of weights across Cout, several pixels at a time (weights loaded once per block);
 * dw streams each output row once per tap with the accumulators in registers, summed per
 * fixed chunk of rows (ops_simd.h) so dw does not depend on the thread count.
 * Other shapes: im2col one image at a time into scratch [Ho*Wo][K*K*Cin] (so scratch stays
 * one image big), then OpenBLAS GEMMs per image through ops_blas_rows/ops_blas_dw, whose bits
 * do not depend on the thread count (OpenBLAS's own threads would). The weight layout OHWI
 * matches an im2col row, so the GEMM needs no transposed copies. Backward: dw += dout^T . col; dcol = dout . w,
 * folded back into din by a gather over input rows (each thread owns whole din rows). */
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

/* ---- direct path (AVX2) --------------------------------------------------------------- */
#if OPS_AVX2
#define C2D_MAXCOUT 32
#define C2D_MAXCIN 4
#define C2D_MAXKKC 64 /* K*K*Cin: up to 5x5 (or 7x7 with Cin 1) */

static ops_scratch c2d_partials;

static int c2d_direct_ok(int Cin, int Cout, int K) {
  return Cout % 8 == 0 && Cout <= C2D_MAXCOUT && Cin >= 1 && Cin <= C2D_MAXCIN &&
         K * K * Cin <= C2D_MAXKKC;
}

#define C2D_INLINE static inline __attribute__((always_inline))

/* PX output pixels of one row, starting at ow0, every tap inside the image. wt is the
 * weights as [tap][Cout], tap = (kh*K + kw)*Cin + ci. NB = Cout/8 and PX are constants
 * after inlining, so acc lives in registers. */
C2D_INLINE void c2d_fwd_block(float *o, const float *img, const float *wt, int W, int Cin, int K,
                              int s, int oh, int ow0, int NB, int PX) {
  const int pad = (K - 1) / 2, Cout = NB * 8;
  __m256 acc[4][4];
  for (int p = 0; p < PX; p++)
    for (int b = 0; b < NB; b++) acc[p][b] = _mm256_setzero_ps();
  for (int kh = 0; kh < K; kh++) {
    const float *r = img + ((size_t)(oh * s - pad + kh) * W + (ow0 * s - pad)) * Cin;
    for (int kw = 0; kw < K; kw++)
      for (int ci = 0; ci < Cin; ci++) {
        const float *wv = wt + (size_t)((kh * K + kw) * Cin + ci) * Cout;
        __m256 w[4];
        for (int b = 0; b < NB; b++) w[b] = _mm256_loadu_ps(wv + 8 * b);
        for (int p = 0; p < PX; p++) {
          __m256 x = _mm256_broadcast_ss(r + (size_t)(p * s + kw) * Cin + ci);
          for (int b = 0; b < NB; b++) acc[p][b] = _mm256_fmadd_ps(x, w[b], acc[p][b]);
        }
      }
  }
  for (int p = 0; p < PX; p++)
    for (int b = 0; b < NB; b++) _mm256_storeu_ps(o + (size_t)p * Cout + 8 * b, acc[p][b]);
}

/* One output pixel next to the border: the same sum over the taps inside only. */
C2D_INLINE void c2d_fwd_edge(float *o, const float *img, const float *wt, int H, int W, int Cin,
                             int K, int s, int oh, int ow, int NB) {
  const int pad = (K - 1) / 2, Cout = NB * 8;
  __m256 acc[4];
  for (int b = 0; b < NB; b++) acc[b] = _mm256_setzero_ps();
  for (int kh = 0; kh < K; kh++) {
    int ih = oh * s - pad + kh;
    if (ih < 0 || ih >= H) continue;
    for (int kw = 0; kw < K; kw++) {
      int iw = ow * s - pad + kw;
      if (iw < 0 || iw >= W) continue;
      const float *x = img + ((size_t)ih * W + iw) * Cin;
      for (int ci = 0; ci < Cin; ci++) {
        const float *wv = wt + (size_t)((kh * K + kw) * Cin + ci) * Cout;
        __m256 xb = _mm256_broadcast_ss(x + ci);
        for (int b = 0; b < NB; b++)
          acc[b] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(wv + 8 * b), acc[b]);
      }
    }
  }
  for (int b = 0; b < NB; b++) _mm256_storeu_ps(o + 8 * b, acc[b]);
}

/* One output row (n, oh). */
C2D_INLINE void c2d_fwd_row(float *orow, const float *img, const float *wt, int H, int W,
                            int Cin, int K, int s, int oh, int Wo, int NB, int PX) {
  const int pad = (K - 1) / 2, Cout = NB * 8;
  /* Interior columns: ow*s - pad >= 0 and ow*s - pad + K - 1 <= W - 1. */
  int lo = (pad + s - 1) / s, hi = (W - K + pad) / s; /* inclusive */
  int rows_inside = oh * s - pad >= 0 && oh * s - pad + K - 1 <= H - 1;
  if (!rows_inside || W - K + pad < 0) lo = 0, hi = -1;
  if (hi > Wo - 1) hi = Wo - 1;
  int ow = 0;
  for (; ow < lo && ow < Wo; ow++)
    c2d_fwd_edge(orow + (size_t)ow * Cout, img, wt, H, W, Cin, K, s, oh, ow, NB);
  for (; ow + PX - 1 <= hi; ow += PX)
    c2d_fwd_block(orow + (size_t)ow * Cout, img, wt, W, Cin, K, s, oh, ow, NB, PX);
  for (; ow < Wo; ow++)
    c2d_fwd_edge(orow + (size_t)ow * Cout, img, wt, H, W, Cin, K, s, oh, ow, NB);
}

static void c2d_direct_forward(float *out, const float *in, const float *w, const float *bias,
                               int N, int H, int W, int Cin, int Cout, int K, int s, act_kind act) {
  const int Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s), kkc = K * K * Cin;
  float wt[C2D_MAXKKC * C2D_MAXCOUT];
  for (int co = 0; co < Cout; co++)
    for (int t = 0; t < kkc; t++) wt[(size_t)t * Cout + co] = w[(size_t)co * kkc + t];
  const long rows = (long)N * Ho;
#pragma omp parallel for schedule(static) if (rows * Wo * Cout * kkc >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const int n = (int)(r / Ho), oh = (int)(r % Ho);
    const float *img = in + (size_t)n * H * W * Cin;
    float *orow = out + (size_t)r * Wo * Cout;
    switch (Cout / 8) {
      case 1: c2d_fwd_row(orow, img, wt, H, W, Cin, K, s, oh, Wo, 1, 4); break;
      case 2: c2d_fwd_row(orow, img, wt, H, W, Cin, K, s, oh, Wo, 2, 4); break;
      case 3: c2d_fwd_row(orow, img, wt, H, W, Cin, K, s, oh, Wo, 3, 2); break;
      default: c2d_fwd_row(orow, img, wt, H, W, Cin, K, s, oh, Wo, 4, 2); break;
    }
    ops_bias_act_block(orow, Wo, Cout, Cout, bias, act);
  }
}

/* part[tap][co] += sum over the row's pixels of dout[ow][co] * x[tap], for output row g
 * (n, oh). For each tap (kh, kw) the valid ow are one contiguous range; CIN*NB
 * accumulators stay in registers over it (CIN, NB constants after inlining). */
C2D_INLINE void c2d_dw_row(float *part, const float *g, const float *img, int H, int W, int K,
                           int s, int oh, int Wo, int CIN, int NB) {
  const int pad = (K - 1) / 2, Cout = NB * 8;
  for (int kh = 0; kh < K; kh++) {
    int ih = oh * s - pad + kh;
    if (ih < 0 || ih >= H) continue;
    const float *xrow = img + (size_t)ih * W * CIN;
    for (int kw = 0; kw < K; kw++) {
      int lo = pad - kw > 0 ? (pad - kw + s - 1) / s : 0;
      int hi = (W - 1 + pad - kw) / s;
      if (hi > Wo - 1) hi = Wo - 1;
      if (W - 1 + pad - kw < 0 || lo > hi) continue;
      __m256 acc[4][4];
      for (int ci = 0; ci < CIN; ci++)
        for (int b = 0; b < NB; b++) acc[ci][b] = _mm256_setzero_ps();
      for (int ow = lo; ow <= hi; ow++) {
        const float *x = xrow + (size_t)(ow * s - pad + kw) * CIN;
        __m256 d[4];
        for (int b = 0; b < NB; b++) d[b] = _mm256_loadu_ps(g + (size_t)ow * Cout + 8 * b);
        for (int ci = 0; ci < CIN; ci++) {
          __m256 xb = _mm256_broadcast_ss(x + ci);
          for (int b = 0; b < NB; b++) acc[ci][b] = _mm256_fmadd_ps(d[b], xb, acc[ci][b]);
        }
      }
      for (int ci = 0; ci < CIN; ci++) {
        float *p = part + (size_t)((kh * K + kw) * CIN + ci) * Cout;
        for (int b = 0; b < NB; b++)
          _mm256_storeu_ps(p + 8 * b, _mm256_add_ps(_mm256_loadu_ps(p + 8 * b), acc[ci][b]));
      }
    }
  }
}

#define C2D_DW_CASE(CIN, NB) \
  case (CIN) * 8 + (NB): c2d_dw_row(p, g, img, H, W, K, s, oh, Wo, CIN, NB); break;

static void c2d_direct_dw(float *dw, const float *dout, const float *in, int N, int H, int W,
                          int Cin, int Cout, int K, int s) {
  const int Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s);
  const size_t kkco = (size_t)K * K * Cin * Cout;
  const long rows = (long)N * Ho;
  const int nch = ops_nchunks(rows, (long)Wo * kkco / 8);
  float *part = ops_scratch_get(&c2d_partials, sizeof(float) * kkco * nch);
#pragma omp parallel for schedule(static) if (rows * Wo * (long)kkco >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    float *p = part + kkco * ch;
    memset(p, 0, sizeof(float) * kkco);
    for (long r = ops_chunk_lo(rows, nch, ch); r < ops_chunk_lo(rows, nch, ch + 1); r++) {
      const int n = (int)(r / Ho), oh = (int)(r % Ho);
      const float *img = in + (size_t)n * H * W * Cin, *g = dout + (size_t)r * Wo * Cout;
      switch (Cin * 8 + Cout / 8) {
        C2D_DW_CASE(1, 1) C2D_DW_CASE(1, 2) C2D_DW_CASE(1, 3) C2D_DW_CASE(1, 4)
        C2D_DW_CASE(2, 1) C2D_DW_CASE(2, 2) C2D_DW_CASE(2, 3) C2D_DW_CASE(2, 4)
        C2D_DW_CASE(3, 1) C2D_DW_CASE(3, 2) C2D_DW_CASE(3, 3) C2D_DW_CASE(3, 4)
        C2D_DW_CASE(4, 1) C2D_DW_CASE(4, 2) C2D_DW_CASE(4, 3) C2D_DW_CASE(4, 4)
        default: POLLEN_ASSERT(0);
      }
    }
  }
  /* Chunk partials in chunk order, back to the OHWI layout. */
  const int kkc = K * K * Cin;
  for (int co = 0; co < Cout; co++)
    for (int t = 0; t < kkc; t++) {
      float a = 0.0f;
      for (int ch = 0; ch < nch; ch++) a += part[kkco * ch + (size_t)t * Cout + co];
      dw[(size_t)co * kkc + t] += a;
    }
}
#endif

/* ---- im2col path ------------------------------------------------------------------------ */

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
  conv2d_act_forward(out, in, w, NULL, N, H, W, Cin, Cout, K, stride, scratch, ACT_NONE);
}

void conv2d_act_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int Cin, int Cout, int K, int stride, float *scratch,
                        act_kind act) {
#if OPS_AVX2
  if (c2d_direct_ok(Cin, Cout, K)) {
    c2d_direct_forward(out, in, w, bias, N, H, W, Cin, Cout, K, stride, act);
    return;
  }
#endif
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const int kkc = K * K * Cin, P = Ho * Wo;
  for (int n = 0; n < N; n++) {
    float *o = out + (size_t)n * P * Cout;
    conv2d_im2col(scratch, in + (size_t)n * H * W * Cin, H, W, Cin, K, stride, Ho, Wo);
    ops_blas_rows(o, scratch, w, 1, 0.0f, P, kkc, Cout);
    if (bias || act != ACT_NONE) {
      /* one image's output: still in cache when the im2col GEMM is done with it */
#pragma omp parallel for schedule(static) if ((long)P * Cout >= OPS_PAR_MIN)
      for (int r = 0; r < P; r += 64)
        ops_bias_act_block(o + (size_t)r * Cout, P - r < 64 ? P - r : 64, Cout, Cout, bias, act);
    }
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
  int direct = 0; /* dw straight from the input, without columns */
#if OPS_AVX2
  direct = c2d_direct_ok(Cin, Cout, K);
  if (direct) c2d_direct_dw(dw, dout, in, N, H, W, Cin, Cout, K, stride);
#endif
  if (direct && !din) return;
  for (int n = 0; n < N; n++) {
    const float *g = dout + (size_t)n * P * Cout;
    if (!direct) {
      conv2d_im2col(scratch, in + (size_t)n * H * W * Cin, H, W, Cin, K, stride, Ho, Wo);
      ops_blas_dw(dw, g, scratch, P, kkc, Cout);
    }
    if (!din) continue;
    /* The columns are no longer needed: reuse the scratch for dcol. */
    ops_blas_rows(scratch, g, w, 0, 0.0f, P, Cout, kkc);
    conv2d_col2im(din + (size_t)n * H * W * Cin, scratch, H, W, Cin, K, stride, Ho, Wo);
  }
}
