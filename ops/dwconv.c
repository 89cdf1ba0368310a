/* dwconv.c - depthwise convolution, NHWC, HWC weights, K in {3,5}, stride in {1,2}, same pad.
 *
 * Every output pixel (forward) and every input pixel (din) is a sum over its valid taps of
 * src[c]*w[c] along the contiguous channels. The forward runs over output rows, din over
 * input rows (a gather: each din row belongs to one thread, so no races and no atomics).
 * Away from the left and right borders every pixel of a row has the same taps, so there
 * blocks of 4 pixels x 16 channels are summed at once (dwc_block: each weight vector loaded
 * once for 4 pixels, 8 independent FMA chains) where that measured faster
 * (dwc_blocks_pay); border pixels and the other shapes take the per-pixel dwc_tapsum().
 * din with stride 2 splits a row's pixels by parity, each class with its own fixed taps.
 * dw is a reduction over all pixels: each fixed chunk of output rows (ops_simd.h) sums into
 * its own partial dw, streaming along a row with the accumulator in registers, and the
 * partials are added in chunk order, so dw is identical for any thread count. Partials live
 * in a static buffer grown on demand. */
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static ops_scratch dwc_partials;

#define DWC_MAXTAPS 25

/* dst[c] = sum_t src[t][c] * wt[t][c] for c in [0, C). */
static inline void dwc_tapsum(float *dst, const float *const *src, const float *const *wt, int nt,
                              int C) {
  int c = 0;
  for (; c + 4 * OPS_VW <= C; c += 4 * OPS_VW) {
    ops_vf a0 = OPS_VZERO(), a1 = OPS_VZERO(), a2 = OPS_VZERO(), a3 = OPS_VZERO();
    for (int t = 0; t < nt; t++) {
      const float *s = src[t] + c, *w = wt[t] + c;
      a0 = OPS_VFMA(OPS_VLOAD(s), OPS_VLOAD(w), a0);
      a1 = OPS_VFMA(OPS_VLOAD(s + OPS_VW), OPS_VLOAD(w + OPS_VW), a1);
      a2 = OPS_VFMA(OPS_VLOAD(s + 2 * OPS_VW), OPS_VLOAD(w + 2 * OPS_VW), a2);
      a3 = OPS_VFMA(OPS_VLOAD(s + 3 * OPS_VW), OPS_VLOAD(w + 3 * OPS_VW), a3);
    }
    OPS_VSTORE(dst + c, a0);
    OPS_VSTORE(dst + c + OPS_VW, a1);
    OPS_VSTORE(dst + c + 2 * OPS_VW, a2);
    OPS_VSTORE(dst + c + 3 * OPS_VW, a3);
  }
  for (; c + OPS_VW <= C; c += OPS_VW) {
    /* two chains (even/odd taps) so the FMA latency is not the bottleneck */
    ops_vf a0 = OPS_VZERO(), a1 = OPS_VZERO();
    int t = 0;
    for (; t + 1 < nt; t += 2) {
      a0 = OPS_VFMA(OPS_VLOAD(src[t] + c), OPS_VLOAD(wt[t] + c), a0);
      a1 = OPS_VFMA(OPS_VLOAD(src[t + 1] + c), OPS_VLOAD(wt[t + 1] + c), a1);
    }
    if (t < nt) a0 = OPS_VFMA(OPS_VLOAD(src[t] + c), OPS_VLOAD(wt[t] + c), a0);
    OPS_VSTORE(dst + c, OPS_VADD(a0, a1));
  }
  for (; c < C; c++) {
    float a = 0.0f;
    for (int t = 0; t < nt; t++) a = OPS_FMA(src[t][c], wt[t][c], a);
    dst[c] = a;
  }
}

#if OPS_AVX2
#define DWC_INLINE static inline __attribute__((always_inline))
#define DWC_PX 4

/* dst[p*dstep + c..c+8*CB) = sum_t src[t][p*sstep + c..] * wt[t][c..] for p < PX: PX pixels
 * sharing one tap pattern (PX, CB constants after inlining: PX*CB chains in registers). */
DWC_INLINE void dwc_block(float *dst, long dstep, const float *const *src, long sstep,
                          const float *const *wt, int nt, int c, int PX, int CB) {
  __m256 acc[DWC_PX][2];
  for (int p = 0; p < PX; p++)
    for (int b = 0; b < CB; b++) acc[p][b] = _mm256_setzero_ps();
  for (int t = 0; t < nt; t++) {
    __m256 w[2];
    for (int b = 0; b < CB; b++) w[b] = _mm256_loadu_ps(wt[t] + c + 8 * b);
    for (int p = 0; p < PX; p++)
      for (int b = 0; b < CB; b++)
        acc[p][b] = _mm256_fmadd_ps(_mm256_loadu_ps(src[t] + p * sstep + c + 8 * b), w[b],
                                    acc[p][b]);
  }
  for (int p = 0; p < PX; p++)
    for (int b = 0; b < CB; b++) _mm256_storeu_ps(dst + p * dstep + c + 8 * b, acc[p][b]);
}

/* All channels (C a multiple of 8) of PX pixels. */
DWC_INLINE void dwc_pixels(float *dst, long dstep, const float *const *src, long sstep,
                           const float *const *wt, int nt, int C, int PX) {
  int c = 0;
  for (; c + 16 <= C; c += 16) dwc_block(dst, dstep, src, sstep, wt, nt, c, PX, 2);
  if (c < C) dwc_block(dst, dstep, src, sstep, wt, nt, c, PX, 1);
}

/* Where the 4-pixel blocks beat the per-pixel sums (measured at MobileNetV3-Small's shapes,
 * one thread): stride 1, and stride 2 with whole 16-channel tiles (72 channels at stride 2
 * ran 25% slower in blocks). */
static int dwc_blocks_pay(int C, int stride) {
  return C % 8 == 0 && (stride == 1 || C % 16 == 0);
}

/* Pixels j0, j0+1, ... j1-1 of a run whose taps are src0[t] + j*sstep (all inside). */
static void dwc_run(float *dst0, long dstep, const float *const *src0, long sstep,
                    const float *const *wt, int nt, int C, int j0, int j1) {
  const float *src[DWC_MAXTAPS];
  int j = j0;
  for (; j + DWC_PX <= j1; j += DWC_PX) {
    for (int t = 0; t < nt; t++) src[t] = src0[t] + (long)j * sstep;
    dwc_pixels(dst0 + (long)j * dstep, dstep, src, sstep, wt, nt, C, DWC_PX);
  }
  for (; j < j1; j++) {
    for (int t = 0; t < nt; t++) src[t] = src0[t] + (long)j * sstep;
    dwc_pixels(dst0 + (long)j * dstep, dstep, src, sstep, wt, nt, C, 1);
  }
}
#endif

/* The taps of output pixel (n, oh, ow) that fall inside the image: src[t] its input pixel,
 * wt[t] its weights. Returns the count. */
static inline int dwc_fwd_taps(const float **src, const float **wt, const float *in,
                               const float *w, int n, int oh, int ow, int H, int W, int C, int K,
                               int stride) {
  const int pad = (K - 1) / 2;
  int nt = 0;
  for (int kh = 0; kh < K; kh++) {
    int ih = oh * stride - pad + kh;
    if (ih < 0 || ih >= H) continue;
    const float *irow = in + ((size_t)n * H + ih) * W * C;
    for (int kw = 0; kw < K; kw++) {
      int iw = ow * stride - pad + kw;
      if (iw < 0 || iw >= W) continue;
      src[nt] = irow + (size_t)iw * C;
      wt[nt] = w + ((size_t)kh * K + kw) * C;
      nt++;
    }
  }
  return nt;
}

void dwconv_forward(float *out, const float *in, const float *w, int N, int H, int W, int C, int K,
                    int stride) {
  dwconv_act_forward(out, in, w, NULL, N, H, W, C, K, stride, ACT_NONE);
}

static void dwc_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int C, int K, int stride, act_kind act, double *stat_mean,
                        double *stat_m2);

void dwconv_act_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int C, int K, int stride, act_kind act) {
  dwc_forward(out, in, w, bias, N, H, W, C, K, stride, act, NULL, NULL);
}

/* Each output row is one statistics block. */
void dwconv_stats_forward(float *out, const float *in, const float *w, int N, int H, int W, int C,
                          int K, int stride, double *mean, double *m2) {
  dwc_forward(out, in, w, NULL, N, H, W, C, K, stride, ACT_NONE, mean, m2);
}

/* The forward: optional bias and activation, or (stat_mean) the rows' BN statistics. */
static void dwc_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int C, int K, int stride, act_kind act, double *stat_mean,
                        double *stat_m2) {
  POLLEN_ASSERT(K >= 1 && K * K <= DWC_MAXTAPS && stride >= 1);
  const int Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const long rows = (long)N * Ho;
#pragma omp parallel for schedule(static) if (rows * Wo * C * K >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const int n = (int)(r / Ho), oh = (int)(r % Ho);
    const float *src[DWC_MAXTAPS], *wt[DWC_MAXTAPS];
    float *orow = out + (size_t)r * Wo * C;
    /* Interior columns [lo, hi): every kw tap inside the row. */
    int lo = 0, hi = 0;
#if OPS_AVX2
    if (dwc_blocks_pay(C, stride)) {
      const int pad = (K - 1) / 2;
      lo = (pad + stride - 1) / stride;
      hi = W - K + pad >= 0 ? (W - K + pad) / stride + 1 : 0;
      if (hi > Wo) hi = Wo;
      if (lo > hi) lo = hi = 0;
      if (hi > lo) { /* the taps of pixel lo; pixel lo + j reads them j*stride pixels on */
        int nt = dwc_fwd_taps(src, wt, in, w, n, oh, lo, H, W, C, K, stride);
        dwc_run(orow + (size_t)lo * C, C, src, (long)stride * C, wt, nt, C, 0, hi - lo);
      }
    }
#endif
    for (int ow = 0; ow < Wo; ow++) {
      if (ow == lo && hi > lo) {
        ow = hi - 1;
        continue;
      }
      int nt = dwc_fwd_taps(src, wt, in, w, n, oh, ow, H, W, C, K, stride);
      dwc_tapsum(orow + (size_t)ow * C, src, wt, nt, C);
    }
    /* The row is still in cache: bias and activation cost no pass of their own. */
    ops_bias_act_block(orow, Wo, C, C, bias, act);
    if (stat_mean)
      ops_block_stats(orow, Wo, C, C, stat_mean + (size_t)r * C, stat_m2 + (size_t)r * C);
  }
}

/* The output pixels that input pixel (n, ih, iw) feeds: src[t] the output gradient there,
 * wt[t] the tap's weights. Returns the count. */
static inline int dwc_din_taps(const float **src, const float **wt, const float *dout,
                               const float *w, int n, int ih, int iw, int Ho, int Wo, int C, int K,
                               int s) {
  const int pad = (K - 1) / 2;
  int nt = 0;
  for (int kh = 0; kh < K; kh++) {
    int t = ih + pad - kh;
    if (t < 0 || t % s || t / s >= Ho) continue;
    const float *grow = dout + ((size_t)n * Ho + t / s) * Wo * C;
    for (int kw = 0; kw < K; kw++) {
      int u = iw + pad - kw;
      if (u < 0 || u % s || u / s >= Wo) continue;
      src[nt] = grow + (size_t)(u / s) * C;
      wt[nt] = w + ((size_t)kh * K + kw) * C;
      nt++;
    }
  }
  return nt;
}

/* din[n][ih][iw][c] = sum of dout[n][oh][ow][c]*w[kh][kw][c] over oh*s-pad+kh = ih and
 * ow*s-pad+kw = iw. */
static void dwc_din(float *din, const float *dout, const float *w, int N, int H, int W, int C,
                    int K, int s, int Ho, int Wo) {
  const long rows = (long)N * H;
#pragma omp parallel for schedule(static) if (rows * W * C * K >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const int n = (int)(r / H), ih = (int)(r % H);
    const float *src[DWC_MAXTAPS], *wt[DWC_MAXTAPS];
    float *drow = din + (size_t)r * W * C;
    /* Interior columns [lo, hi): every tap's output column u/s inside [0, Wo). Within it,
     * the pixels of one parity class (iw = q, q+s, q+2s, ...) share their taps, and
     * consecutive pixels of a class read consecutive output pixels. */
    int lo = 0, hi = 0;
#if OPS_AVX2
    if (dwc_blocks_pay(C, s)) {
      const int pad = (K - 1) / 2;
      lo = K - 1 - pad;          /* iw + pad - kw >= 0 for every kw */
      hi = (Wo - 1) * s - pad + 1; /* (iw + pad - kw)/s <= Wo - 1 for every valid kw */
      if (hi > W) hi = W;
      if (lo > hi) lo = hi = 0;
      for (int q = lo; q < lo + s && q < hi; q++) {
        int nt = dwc_din_taps(src, wt, dout, w, n, ih, q, Ho, Wo, C, K, s); /* at pixel q */
        int cnt = (hi - q + s - 1) / s; /* pixels q, q+s, ... < hi */
        dwc_run(drow + (size_t)q * C, (long)s * C, src, C, wt, nt, C, 0, cnt);
      }
    }
#endif
    for (int iw = 0; iw < W; iw++) {
      if (iw == lo && hi > lo) {
        iw = hi - 1;
        continue;
      }
      int nt = dwc_din_taps(src, wt, dout, w, n, ih, iw, Ho, Wo, C, K, s);
      dwc_tapsum(drow + (size_t)iw * C, src, wt, nt, C);
    }
  }
}

/* part[kh][kw][c] += sum over ow of g[ow][c] * x[ow*s-pad+kw][c], for one output row g and
 * the input row x that tap row kh reads. */
static void dwc_dw_row(float *part, const float *g, const float *x, int W, int C, int K, int s,
                       int Wo, int kh) {
  const int pad = (K - 1) / 2;
  for (int kw = 0; kw < K; kw++) {
    /* ow range whose input column ow*s-pad+kw lies inside [0, W) */
    int lo = pad - kw > 0 ? (pad - kw + s - 1) / s : 0;
    int hi = (W - 1 + pad - kw) / s; /* inclusive */
    if (hi > Wo - 1) hi = Wo - 1;
    if (W - 1 + pad - kw < 0 || lo > hi) continue;
    float *p = part + ((size_t)kh * K + kw) * C;
    const float *xb = x + ((long)lo * s - pad + kw) * (long)C;
    const float *gb = g + (size_t)lo * C;
    const long xstep = (long)s * C;
    const int len = hi - lo + 1;
    int c = 0;
    for (; c + 4 * OPS_VW <= C; c += 4 * OPS_VW) {
      ops_vf a0 = OPS_VZERO(), a1 = OPS_VZERO(), a2 = OPS_VZERO(), a3 = OPS_VZERO();
      for (int i = 0; i < len; i++) {
        const float *gi = gb + (size_t)i * C + c, *xi = xb + i * xstep + c;
        a0 = OPS_VFMA(OPS_VLOAD(gi), OPS_VLOAD(xi), a0);
        a1 = OPS_VFMA(OPS_VLOAD(gi + OPS_VW), OPS_VLOAD(xi + OPS_VW), a1);
        a2 = OPS_VFMA(OPS_VLOAD(gi + 2 * OPS_VW), OPS_VLOAD(xi + 2 * OPS_VW), a2);
        a3 = OPS_VFMA(OPS_VLOAD(gi + 3 * OPS_VW), OPS_VLOAD(xi + 3 * OPS_VW), a3);
      }
      OPS_VSTORE(p + c, OPS_VADD(OPS_VLOAD(p + c), a0));
      OPS_VSTORE(p + c + OPS_VW, OPS_VADD(OPS_VLOAD(p + c + OPS_VW), a1));
      OPS_VSTORE(p + c + 2 * OPS_VW, OPS_VADD(OPS_VLOAD(p + c + 2 * OPS_VW), a2));
      OPS_VSTORE(p + c + 3 * OPS_VW, OPS_VADD(OPS_VLOAD(p + c + 3 * OPS_VW), a3));
    }
    for (; c + OPS_VW <= C; c += OPS_VW) {
      ops_vf a0 = OPS_VZERO(), a1 = OPS_VZERO();
      int i = 0;
      for (; i + 1 < len; i += 2) {
        a0 = OPS_VFMA(OPS_VLOAD(gb + (size_t)i * C + c), OPS_VLOAD(xb + i * xstep + c), a0);
        a1 = OPS_VFMA(OPS_VLOAD(gb + (size_t)(i + 1) * C + c),
                      OPS_VLOAD(xb + (i + 1) * xstep + c), a1);
      }
      if (i < len) a0 = OPS_VFMA(OPS_VLOAD(gb + (size_t)i * C + c), OPS_VLOAD(xb + i * xstep + c), a0);
      OPS_VSTORE(p + c, OPS_VADD(OPS_VLOAD(p + c), OPS_VADD(a0, a1)));
    }
    for (; c < C; c++) {
      float a = 0.0f;
      for (int i = 0; i < len; i++) a = OPS_FMA(gb[(size_t)i * C + c], xb[i * xstep + c], a);
      p[c] += a;
    }
  }
}

void dwconv_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                     int N, int H, int W, int C, int K, int stride) {
  POLLEN_ASSERT(K >= 1 && K * K <= DWC_MAXTAPS && stride >= 1);
  const int pad = (K - 1) / 2, Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  if (din) dwc_din(din, dout, w, N, H, W, C, K, stride, Ho, Wo);

  const long rows = (long)N * Ho;
  const size_t kkc = (size_t)K * K * C;
  const int nch = ops_nchunks(rows, (long)Wo * C * K);
  float *part = ops_scratch_get(&dwc_partials, sizeof(float) * kkc * nch);
#pragma omp parallel for schedule(static) if (rows * Wo * C * K >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    float *p = part + kkc * ch;
    memset(p, 0, sizeof(float) * kkc);
    for (long r = ops_chunk_lo(rows, nch, ch); r < ops_chunk_lo(rows, nch, ch + 1); r++) {
      const int n = (int)(r / Ho), oh = (int)(r % Ho);
      const float *g = dout + (size_t)r * Wo * C;
      for (int kh = 0; kh < K; kh++) {
        int ih = oh * stride - pad + kh;
        if (ih < 0 || ih >= H) continue;
        dwc_dw_row(p, g, in + ((size_t)n * H + ih) * W * C, W, C, K, stride, Wo, kh);
      }
    }
  }
#pragma omp parallel for schedule(static) if (kkc * nch >= OPS_PAR_MIN)
  for (size_t i = 0; i < kkc; i++) {
    float a = 0.0f;
    for (int ch = 0; ch < nch; ch++) a += part[kkc * ch + i];
    dw[i] += a;
  }
}
