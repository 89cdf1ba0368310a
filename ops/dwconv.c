/* dwconv.c - depthwise convolution, NHWC, HWC weights, K in {3,5}, stride in {1,2}, same pad.
 *
 * Every output pixel (forward) and every input pixel (din) is a sum over its valid taps of
 * src[c]*w[c] along the contiguous channels: dwc_tapsum() vectorises that along C with
 * several accumulators. The forward runs over output rows, din over input rows (a gather:
 * each din row belongs to one thread, so no races and no atomics). dw is a reduction over all
 * pixels: each fixed chunk of output rows (ops_simd.h) sums into its own partial dw, streaming
 * along a row with the accumulator in registers, and the partials are added in chunk order, so
 * dw is identical for any thread count. Partials live in a static buffer grown on demand. */
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

void dwconv_forward(float *out, const float *in, const float *w, int N, int H, int W, int C, int K,
                    int stride) {
  POLLEN_ASSERT(K >= 1 && K * K <= DWC_MAXTAPS && stride >= 1);
  const int pad = (K - 1) / 2, Ho = conv_out_size(H, K, stride), Wo = conv_out_size(W, K, stride);
  const long rows = (long)N * Ho;
#pragma omp parallel for schedule(static) if (rows * Wo * C * K >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const int n = (int)(r / Ho), oh = (int)(r % Ho);
    const float *src[DWC_MAXTAPS], *wt[DWC_MAXTAPS];
    float *orow = out + (size_t)r * Wo * C;
    for (int ow = 0; ow < Wo; ow++) {
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
      dwc_tapsum(orow + (size_t)ow * C, src, wt, nt, C);
    }
  }
}

/* din[n][ih][iw][c] = sum of dout[n][oh][ow][c]*w[kh][kw][c] over oh*s-pad+kh = ih and
 * ow*s-pad+kw = iw. */
static void dwc_din(float *din, const float *dout, const float *w, int N, int H, int W, int C,
                    int K, int s, int Ho, int Wo) {
  const int pad = (K - 1) / 2;
  const long rows = (long)N * H;
#pragma omp parallel for schedule(static) if (rows * W * C * K >= OPS_PAR_MIN)
  for (long r = 0; r < rows; r++) {
    const int n = (int)(r / H), ih = (int)(r % H);
    const float *src[DWC_MAXTAPS], *wt[DWC_MAXTAPS];
    float *drow = din + (size_t)r * W * C;
    for (int iw = 0; iw < W; iw++) {
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
