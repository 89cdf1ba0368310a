/* test_cuda_ops.c - every CUDA op (ops/cuda/ops_cuda.h) against its CPU op (ops/ops.h) on the
 * same random inputs, odd shapes included: forward outputs and every backward output
 * (accumulating parameter gradients start non-zero, so += is checked too). Tolerances:
 * |gpu - cpu| <= rtol*(|cpu| + 1e-2*max|cpu|) per element, rtol 1e-4 forward and 1e-3
 * backward (summation orders differ); activations, residual, dropout, stochastic depth's
 * backward and avgpool's backward must match bit for bit (same formulas, no sums). Also: the GEMM precisions, and that a GPU
 * result is identical from run to run. Built only with -DPOLLEN_CUDA=ON; without a GPU it
 * prints "SKIP: no CUDA device: why" and exits 77. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops/cuda/ops_cuda.h"
#include "ops/ops.h"
#include "tests/gradcheck.h"
#include "worker/device.h"

static cuda_ctx *ctx;

static float *dev_copy(const float *h, size_t n) {
  float *d = cuda_malloc(sizeof(float) * (n ? n : 1));
  cuda_upload(ctx, d, h, sizeof(float) * n);
  return d;
}
static float *dev_zero(size_t n) {
  float *d = cuda_malloc(sizeof(float) * (n ? n : 1));
  cuda_memset0(ctx, d, sizeof(float) * (n ? n : 1));
  return d;
}
static float *host_of(const float *d, size_t n) {
  float *h = GC_NEWF(n);
  cuda_download(ctx, h, d, sizeof(float) * n);
  cuda_ctx_sync(ctx);
  return h;
}
static float *rnd(size_t n, double lo, double hi) {
  float *x = GC_NEWF(n);
  gc_fill(x, n, lo, hi);
  return x;
}
static float *dup(const float *x, size_t n) {
  float *y = GC_NEWF(n);
  memcpy(y, x, sizeof(float) * n);
  return y;
}

/* Compares device tensor d with CPU result c; rtol 0 means bit for bit. */
static void cmp(const char *what, const float *d, const float *c, size_t n, double rtol) {
  float *g = host_of(d, n);
  double maxc = 0.0, worst = 0.0;
  size_t at = 0, bad = 0;
  for (size_t i = 0; i < n; i++) maxc = fmax(maxc, fabs(c[i]));
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)g[i] - (double)c[i]);
    double tol = rtol * (fabs(c[i]) + 1e-2 * maxc);
    int fail = rtol > 0 ? !(err <= tol) : memcmp(&g[i], &c[i], sizeof(float)) != 0;
    if (isnan(g[i]) != isnan(c[i])) fail = 1;
    if (fail) bad++;
    double score = tol > 0 ? err / tol : err;
    if (fail && (bad == 1 || score > worst)) worst = score, at = i;
  }
  char msg[256];
  if (bad)
    snprintf(msg, sizeof msg, "%s: %zu of %zu differ (worst at %zu: gpu %.9g cpu %.9g, %s)", what,
             bad, n, at, g[at], c[at], rtol > 0 ? "rtol" : "bit-exact");
  else
    snprintf(msg, sizeof msg, "%s (%zu values, %s %g)", what, n, rtol > 0 ? "rtol" : "bit-exact",
             rtol);
  gc_expect(bad == 0, msg);
  free(g);
}

#define FWD 1e-4
#define BWD 1e-3

static void test_conv2d(int N, int H, int W, int Cin, int Cout, int K, int s) {
  int Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s);
  size_t ni = (size_t)N * H * W * Cin, no = (size_t)N * Ho * Wo * Cout, nw = (size_t)Cout * K * K * Cin;
  float *x = rnd(ni, -1, 1), *w = rnd(nw, -0.5, 0.5), *g = rnd(no, -1, 1), *dw0 = rnd(nw, -0.1, 0.1);
  float *out = GC_NEWF(no), *din = GC_NEWF(ni), *dw = dup(dw0, nw);
  float *scr = GC_NEWF(conv2d_scratch_floats(H, W, Cin, K, s));
  conv2d_forward(out, x, w, N, H, W, Cin, Cout, K, s, scr);
  conv2d_backward(din, dw, g, x, w, N, H, W, Cin, Cout, K, s, scr);
  float *dx = dev_copy(x, ni), *dwt = dev_copy(w, nw), *dg = dev_copy(g, no), *ddw = dev_copy(dw0, nw);
  float *dout = dev_zero(no), *ddin = dev_zero(ni);
  float *dscr = cuda_malloc(sizeof(float) * cuda_conv2d_scratch_floats(N, H, W, Cin, K, s));
  cuda_conv2d_forward(ctx, dout, dx, dwt, N, H, W, Cin, Cout, K, s, dscr);
  cuda_conv2d_backward(ctx, ddin, ddw, dg, dx, dwt, N, H, W, Cin, Cout, K, s, dscr);
  char what[96];
  snprintf(what, sizeof what, "conv2d %dx%dx%dx%d->%d K%d s%d", N, H, W, Cin, Cout, K, s);
  char w1[128], w2[128], w3[128];
  snprintf(w1, sizeof w1, "%s forward", what);
  snprintf(w2, sizeof w2, "%s din", what);
  snprintf(w3, sizeof w3, "%s dw (+=)", what);
  cmp(w1, dout, out, no, FWD);
  cmp(w2, ddin, din, ni, BWD);
  cmp(w3, ddw, dw, nw, BWD);
  /* din NULL: only dw accumulates (again) */
  conv2d_backward(NULL, dw, g, x, w, N, H, W, Cin, Cout, K, s, scr);
  cuda_conv2d_backward(ctx, NULL, ddw, dg, dx, dwt, N, H, W, Cin, Cout, K, s, dscr);
  snprintf(w3, sizeof w3, "%s dw with din NULL", what);
  cmp(w3, ddw, dw, nw, BWD);
  cuda_free(dx), cuda_free(dwt), cuda_free(dg), cuda_free(ddw), cuda_free(dout), cuda_free(ddin);
  cuda_free(dscr);
  free(x), free(w), free(g), free(dw0), free(out), free(din), free(dw), free(scr);
}

static void test_linear(int M, int Cin, int Cout, int with_bias) {
  size_t ni = (size_t)M * Cin, no = (size_t)M * Cout, nw = (size_t)Cout * Cin;
  float *x = rnd(ni, -1, 1), *w = rnd(nw, -0.5, 0.5), *b = rnd(Cout, -1, 1), *g = rnd(no, -1, 1);
  float *dw0 = rnd(nw, -0.1, 0.1), *db0 = rnd(Cout, -0.1, 0.1);
  float *out = GC_NEWF(no), *din = GC_NEWF(ni), *dw = dup(dw0, nw), *db = dup(db0, Cout);
  linear_forward(out, x, w, with_bias ? b : NULL, M, Cin, Cout);
  linear_backward(din, dw, with_bias ? db : NULL, g, x, w, M, Cin, Cout);
  float *dx = dev_copy(x, ni), *dwt = dev_copy(w, nw), *dbias = dev_copy(b, Cout), *dg = dev_copy(g, no);
  float *ddw = dev_copy(dw0, nw), *ddb = dev_copy(db0, Cout), *dout = dev_zero(no), *ddin = dev_zero(ni);
  cuda_linear_forward(ctx, dout, dx, dwt, with_bias ? dbias : NULL, M, Cin, Cout);
  cuda_linear_backward(ctx, ddin, ddw, with_bias ? ddb : NULL, dg, dx, dwt, M, Cin, Cout);
  char w1[96], w2[96], w3[96], w4[96];
  snprintf(w1, sizeof w1, "linear %dx%d->%d%s forward", M, Cin, Cout, with_bias ? " +bias" : "");
  snprintf(w2, sizeof w2, "linear %dx%d->%d din", M, Cin, Cout);
  snprintf(w3, sizeof w3, "linear %dx%d->%d dw (+=)", M, Cin, Cout);
  snprintf(w4, sizeof w4, "linear %dx%d->%d dbias (+=)", M, Cin, Cout);
  cmp(w1, dout, out, no, FWD);
  cmp(w2, ddin, din, ni, BWD);
  cmp(w3, ddw, dw, nw, BWD);
  if (with_bias) cmp(w4, ddb, db, Cout, BWD);
  cuda_free(dx), cuda_free(dwt), cuda_free(dbias), cuda_free(dg), cuda_free(ddw), cuda_free(ddb);
  cuda_free(dout), cuda_free(ddin);
  free(x), free(w), free(b), free(g), free(dw0), free(db0), free(out), free(din), free(dw), free(db);
}

static void test_dwconv(int N, int H, int W, int C, int K, int s) {
  int Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s);
  size_t ni = (size_t)N * H * W * C, no = (size_t)N * Ho * Wo * C, nw = (size_t)K * K * C;
  float *x = rnd(ni, -1, 1), *w = rnd(nw, -0.5, 0.5), *g = rnd(no, -1, 1), *dw0 = rnd(nw, -0.1, 0.1);
  float *out = GC_NEWF(no), *din = GC_NEWF(ni), *dw = dup(dw0, nw);
  dwconv_forward(out, x, w, N, H, W, C, K, s);
  dwconv_backward(din, dw, g, x, w, N, H, W, C, K, s);
  float *dx = dev_copy(x, ni), *dwt = dev_copy(w, nw), *dg = dev_copy(g, no), *ddw = dev_copy(dw0, nw);
  float *dout = dev_zero(no), *ddin = dev_zero(ni);
  cuda_dwconv_forward(ctx, dout, dx, dwt, N, H, W, C, K, s);
  cuda_dwconv_backward(ctx, ddin, ddw, dg, dx, dwt, N, H, W, C, K, s);
  char w1[96], w2[96], w3[96];
  snprintf(w1, sizeof w1, "dwconv %dx%dx%dx%d K%d s%d forward", N, H, W, C, K, s);
  snprintf(w2, sizeof w2, "dwconv %dx%dx%dx%d K%d s%d din", N, H, W, C, K, s);
  snprintf(w3, sizeof w3, "dwconv %dx%dx%dx%d K%d s%d dw (+=)", N, H, W, C, K, s);
  cmp(w1, dout, out, no, FWD);
  cmp(w2, ddin, din, ni, BWD);
  cmp(w3, ddw, dw, nw, BWD);
  /* run to run: a second backward from the same dw start gives the same bits */
  float *a = host_of(ddw, nw);
  cuda_upload(ctx, ddw, dw0, sizeof(float) * nw);
  cuda_dwconv_backward(ctx, ddin, ddw, dg, dx, dwt, N, H, W, C, K, s);
  float *b = host_of(ddw, nw);
  snprintf(w3, sizeof w3, "dwconv K%d s%d dw identical on a second run", K, s);
  gc_expect(memcmp(a, b, sizeof(float) * nw) == 0, w3);
  free(a), free(b);
  cuda_free(dx), cuda_free(dwt), cuda_free(dg), cuda_free(ddw), cuda_free(dout), cuda_free(ddin);
  free(x), free(w), free(g), free(dw0), free(out), free(din), free(dw);
}

static void test_batchnorm(int M, int C, act_kind act) {
  size_t n = (size_t)M * C;
  /* a large mean (3) over a small spread: the shifted sums must keep the variance */
  float *x = rnd(n, 2, 4), *gamma = rnd(C, 0.5, 1.5), *beta = rnd(C, -0.5, 0.5), *g = rnd(n, -1, 1);
  float *rm0 = rnd(C, -0.2, 0.2), *rv0 = rnd(C, 0.5, 1.5), *dg0 = rnd(C, -0.1, 0.1), *db0 = rnd(C, -0.1, 0.1);
  float *out = GC_NEWF(n), *mean = GC_NEWF(C), *rstd = GC_NEWF(C), *rm = dup(rm0, C), *rv = dup(rv0, C);
  float *ev = GC_NEWF(n), *din = GC_NEWF(n), *dgm = dup(dg0, C), *dbt = dup(db0, C);
  const float eps = 1e-3f, mom = 0.01f;
  if (act == ACT_NONE) {
    batchnorm_forward_train(out, mean, rstd, rm, rv, x, gamma, beta, M, C, eps, mom);
    batchnorm_forward_eval(ev, x, gamma, beta, rm, rv, M, C, eps);
    batchnorm_backward(din, dgm, dbt, g, x, mean, rstd, gamma, M, C);
  } else {
    batchnorm_act_forward_train(out, mean, rstd, rm, rv, x, gamma, beta, M, C, eps, mom, act);
    batchnorm_act_forward_eval(ev, x, gamma, beta, rm, rv, M, C, eps, act);
    batchnorm_act_backward(din, dgm, dbt, g, x, mean, rstd, gamma, beta, M, C, act);
  }
  float *dx = dev_copy(x, n), *dgam = dev_copy(gamma, C), *dbet = dev_copy(beta, C), *dgr = dev_copy(g, n);
  float *drm = dev_copy(rm0, C), *drv = dev_copy(rv0, C), *ddg = dev_copy(dg0, C), *ddb = dev_copy(db0, C);
  float *dout = dev_zero(n), *dmean = dev_zero(C), *drstd = dev_zero(C), *dev_ = dev_zero(n), *ddin = dev_zero(n);
  cuda_batchnorm_forward_train(ctx, dout, dmean, drstd, drm, drv, dx, dgam, dbet, M, C, eps, mom, act);
  cuda_batchnorm_forward_eval(ctx, dev_, dx, dgam, dbet, drm, drv, M, C, eps, act);
  char pre[64], w[128];
  snprintf(pre, sizeof pre, "batchnorm+%s M%d C%d", act_name(act), M, C);
#define BN_CMP(label, d, c, nn, tol) \
  (snprintf(w, sizeof w, "%s %s", pre, label), cmp(w, d, c, nn, tol))
  BN_CMP("train forward", dout, out, n, FWD);
  BN_CMP("save_mean", dmean, mean, C, FWD);
  BN_CMP("save_rstd", drstd, rstd, C, FWD);
  BN_CMP("running_mean", drm, rm, C, FWD);
  BN_CMP("running_var", drv, rv, C, FWD);
  BN_CMP("eval forward", dev_, ev, n, FWD);
  /* Backward from the CPU's saved statistics: the activation's break points then see the
   * same BN output on both sides (a 1-ulp mean difference could flip one gradient). */
  cuda_upload(ctx, dmean, mean, sizeof(float) * C);
  cuda_upload(ctx, drstd, rstd, sizeof(float) * C);
  cuda_batchnorm_backward(ctx, ddin, ddg, ddb, dgr, dx, dmean, drstd, dgam, dbet, M, C, act);
  BN_CMP("din", ddin, din, n, BWD);
  BN_CMP("dgamma (+=)", ddg, dgm, C, BWD);
  BN_CMP("dbeta (+=)", ddb, dbt, C, BWD);
  /* din may alias dout */
  cuda_upload(ctx, ddg, dg0, sizeof(float) * C);
  cuda_upload(ctx, ddb, db0, sizeof(float) * C);
  cuda_batchnorm_backward(ctx, dgr, ddg, ddb, dgr, dx, dmean, drstd, dgam, dbet, M, C, act);
  BN_CMP("din in place", dgr, din, n, BWD);
#undef BN_CMP
  float *bufs[] = {dx, dgam, dbet, dgr, drm, drv, ddg, ddb, dout, dmean, drstd, dev_, ddin};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cuda_free(bufs[i]);
  float *hb[] = {x, gamma, beta, g, rm0, rv0, dg0, db0, out, mean, rstd, rm, rv, ev, din, dgm, dbt};
  for (size_t i = 0; i < sizeof hb / sizeof *hb; i++) free(hb[i]);
}

static void test_act(act_kind act) {
  const size_t n = 1037;
  float *x = rnd(n, -8, 8), *g = rnd(n, -1, 1);
  const float pts[] = {-3.0f, 3.0f, 0.0f, 6.0f, -0.0f, -6.0f, 2.9999998f, -3.0000002f};
  for (size_t i = 0; i < sizeof pts / sizeof *pts; i++) x[i * 7] = pts[i]; /* the break points */
  float *out = GC_NEWF(n), *din = GC_NEWF(n);
  act_forward(out, x, n, act);
  act_backward(din, g, x, n, act);
  float *dx = dev_copy(x, n), *dg = dev_copy(g, n), *dout = dev_zero(n), *ddin = dev_zero(n);
  cuda_act_forward(ctx, dout, dx, n, act);
  cuda_act_backward(ctx, ddin, dg, dx, n, act);
  char w[96];
  snprintf(w, sizeof w, "act %s forward (break points included)", act_name(act));
  cmp(w, dout, out, n, 0);
  snprintf(w, sizeof w, "act %s backward", act_name(act));
  cmp(w, ddin, din, n, 0);
  cuda_act_backward(ctx, dg, dg, dx, n, act); /* din aliases dout */
  cuda_act_forward(ctx, dx, dx, n, act);      /* out aliases in */
  snprintf(w, sizeof w, "act %s in place", act_name(act));
  cmp(w, dx, out, n, 0);
  cmp(w, dg, din, n, 0);
  cuda_free(dx), cuda_free(dg), cuda_free(dout), cuda_free(ddin);
  free(x), free(g), free(out), free(din);
}

static void test_avgpool(int N, int HW, int C) {
  size_t ni = (size_t)N * HW * C, no = (size_t)N * C;
  float *x = rnd(ni, -1, 1), *g = rnd(no, -1, 1), *out = GC_NEWF(no), *din = GC_NEWF(ni);
  avgpool_forward(out, x, N, HW, C);
  avgpool_backward(din, g, N, HW, C);
  float *dx = dev_copy(x, ni), *dg = dev_copy(g, no), *dout = dev_zero(no), *ddin = dev_zero(ni);
  cuda_avgpool_forward(ctx, dout, dx, N, HW, C);
  cuda_avgpool_backward(ctx, ddin, dg, N, HW, C);
  char w[96];
  snprintf(w, sizeof w, "avgpool %dx%dx%d forward", N, HW, C);
  cmp(w, dout, out, no, FWD);
  snprintf(w, sizeof w, "avgpool %dx%dx%d backward", N, HW, C);
  cmp(w, ddin, din, ni, 0);
  cuda_free(dx), cuda_free(dg), cuda_free(dout), cuda_free(ddin);
  free(x), free(g), free(out), free(din);
}

static void test_se(int N, int HW, int C, int Cs) {
  size_t ni = (size_t)N * HW * C, ns = se_save_floats(N, C, Cs);
  float *x = rnd(ni, -1, 1), *g = rnd(ni, -1, 1);
  float *w1 = rnd((size_t)Cs * C, -0.5, 0.5), *b1 = rnd(Cs, -0.2, 0.2);
  float *w2 = rnd((size_t)C * Cs, -0.5, 0.5), *b2 = rnd(C, -0.2, 0.2);
  float *d0[4] = {rnd((size_t)Cs * C, -.1, .1), rnd(Cs, -.1, .1), rnd((size_t)C * Cs, -.1, .1), rnd(C, -.1, .1)};
  size_t dn[4] = {(size_t)Cs * C, (size_t)Cs, (size_t)C * Cs, (size_t)C};
  float *cd[4], *gd[4];
  for (int i = 0; i < 4; i++) cd[i] = dup(d0[i], dn[i]), gd[i] = dev_copy(d0[i], dn[i]);
  float *out = GC_NEWF(ni), *save = GC_NEWF(ns), *din = GC_NEWF(ni);
  se_forward(out, save, x, w1, b1, w2, b2, N, HW, C, Cs);
  se_backward(din, cd[0], cd[1], cd[2], cd[3], g, x, save, w1, w2, N, HW, C, Cs);
  float *dx = dev_copy(x, ni), *dg = dev_copy(g, ni), *dw1 = dev_copy(w1, (size_t)Cs * C);
  float *db1 = dev_copy(b1, Cs), *dw2 = dev_copy(w2, (size_t)C * Cs), *db2 = dev_copy(b2, C);
  float *dout = dev_zero(ni), *dsave = dev_zero(ns), *ddin = dev_zero(ni);
  cuda_se_forward(ctx, dout, dsave, dx, dw1, db1, dw2, db2, N, HW, C, Cs);
  char pre[64], w[128];
  snprintf(pre, sizeof pre, "se N%d HW%d C%d Cs%d", N, HW, C, Cs);
  snprintf(w, sizeof w, "%s forward", pre);
  cmp(w, dout, out, ni, FWD);
  snprintf(w, sizeof w, "%s saved s,z1,h,z2,g", pre);
  cmp(w, dsave, save, ns, FWD);
  cuda_upload(ctx, dsave, save, sizeof(float) * ns); /* same break points in backward */
  cuda_se_backward(ctx, ddin, gd[0], gd[1], gd[2], gd[3], dg, dx, dsave, dw1, dw2, N, HW, C, Cs);
  snprintf(w, sizeof w, "%s din", pre);
  cmp(w, ddin, din, ni, BWD);
  const char *names[4] = {"dw1", "db1", "dw2", "db2"};
  for (int i = 0; i < 4; i++) {
    snprintf(w, sizeof w, "%s %s (+=)", pre, names[i]);
    cmp(w, gd[i], cd[i], dn[i], BWD);
    cuda_free(gd[i]), free(cd[i]), free(d0[i]);
  }
  cuda_free(dx), cuda_free(dg), cuda_free(dw1), cuda_free(db1), cuda_free(dw2), cuda_free(db2);
  cuda_free(dout), cuda_free(dsave), cuda_free(ddin);
  free(x), free(g), free(w1), free(b1), free(w2), free(b2), free(out), free(save), free(din);
}

static void test_residual(void) {
  const size_t n = 4099;
  float *a = rnd(n, -1, 1), *b = rnd(n, -1, 1), *g = rnd(n, -1, 1), *da0 = rnd(n, -1, 1);
  float *out = GC_NEWF(n), *da = dup(da0, n);
  residual_forward(out, a, b, n);
  residual_backward(da, g, n);
  float *d_a = dev_copy(a, n), *d_b = dev_copy(b, n), *d_g = dev_copy(g, n), *d_da = dev_copy(da0, n);
  float *d_out = dev_zero(n);
  cuda_residual_forward(ctx, d_out, d_a, d_b, n);
  cuda_residual_backward(ctx, d_da, d_g, n);
  cmp("residual forward", d_out, out, n, 0);
  cmp("residual backward (+=)", d_da, da, n, 0);
  cuda_free(d_a), cuda_free(d_b), cuda_free(d_g), cuda_free(d_da), cuda_free(d_out);
  free(a), free(b), free(g), free(da0), free(out), free(da);
}

static void test_dropout(size_t n, float p, uint64_t seed) {
  float *x = rnd(n, 0.5, 1.5), *g = rnd(n, -1, 1), *out = GC_NEWF(n), *din = GC_NEWF(n);
  dropout_forward(out, x, n, p, seed);
  dropout_backward(din, g, n, p, seed);
  float *dx = dev_copy(x, n), *dg = dev_copy(g, n), *dout = dev_zero(n), *ddin = dev_zero(n);
  cuda_dropout_forward(ctx, dout, dx, n, p, seed);
  cuda_dropout_backward(ctx, ddin, dg, n, p, seed);
  char w[96];
  snprintf(w, sizeof w, "dropout n%zu p%.2f: the CPU's Philox mask and values", n, p);
  cmp(w, dout, out, n, 0);
  snprintf(w, sizeof w, "dropout n%zu p%.2f backward", n, p);
  cmp(w, ddin, din, n, 0);
  cuda_dropout_forward(ctx, dx, dx, n, p, seed);
  snprintf(w, sizeof w, "dropout n%zu p%.2f in place", n, p);
  cmp(w, dx, out, n, 0);
  cuda_free(dx), cuda_free(dg), cuda_free(dout), cuda_free(ddin);
  free(x), free(g), free(out), free(din);
}

/* Stochastic depth: the CPU's per-sample masks; forward within FWD (the CPU may fuse the
 * multiply-add), backward (a product) bit for bit. */
static void test_drop_path(int N, size_t per_image, float p, uint64_t seed) {
  size_t n = (size_t)N * per_image;
  float *x = rnd(n, 0.5, 1.5), *skip = rnd(n, -1, 1), *g = rnd(n, -1, 1);
  float *out = GC_NEWF(n), *dbranch = GC_NEWF(n);
  drop_path_forward(out, x, skip, N, per_image, p, seed);
  drop_path_backward(dbranch, g, N, per_image, p, seed);
  float *dx = dev_copy(x, n), *dskip = dev_copy(skip, n), *dg = dev_copy(g, n);
  float *dout = dev_zero(n), *ddb = dev_zero(n);
  cuda_drop_path_forward(ctx, dout, dx, dskip, N, per_image, p, seed);
  cuda_drop_path_backward(ctx, ddb, dg, N, per_image, p, seed);
  char w[96];
  snprintf(w, sizeof w, "drop path N%d x %zu p%.2f: the CPU's masks", N, per_image, p);
  cmp(w, dout, out, n, FWD);
  snprintf(w, sizeof w, "drop path N%d x %zu p%.2f backward", N, per_image, p);
  cmp(w, ddb, dbranch, n, 0);
  cuda_free(dx), cuda_free(dskip), cuda_free(dg), cuda_free(dout), cuda_free(ddb);
  free(x), free(skip), free(g), free(out), free(dbranch);
}

static void test_crossentropy(int N, int K, float smoothing) {
  size_t n = (size_t)N * K;
  float *logits = rnd(n, -4, 4), *probs = GC_NEWF(n), *dl = GC_NEWF(n);
  int *labels = gc_alloc(sizeof(int) * N);
  for (int i = 0; i < N; i++) labels[i] = (int)(gc_next() % (uint64_t)K);
  float loss = crossentropy_forward(probs, logits, labels, N, K, smoothing);
  crossentropy_backward(dl, probs, labels, N, K, smoothing);
  float *dlog = dev_copy(logits, n), *dprobs = dev_zero(n), *ddl = dev_zero(n), *dloss = dev_zero(1);
  int *dlab = cuda_malloc(sizeof(int) * N);
  cuda_upload(ctx, dlab, labels, sizeof(int) * N);
  cuda_crossentropy_forward(ctx, dloss, dprobs, dlog, dlab, N, K, smoothing);
  cuda_crossentropy_backward(ctx, ddl, dprobs, dlab, N, K, smoothing);
  char w[96];
  snprintf(w, sizeof w, "crossentropy N%d K%d s%.2f loss", N, K, smoothing);
  cmp(w, dloss, &loss, 1, 1e-5);
  snprintf(w, sizeof w, "crossentropy N%d K%d s%.2f probs", N, K, smoothing);
  cmp(w, dprobs, probs, n, 1e-5);
  snprintf(w, sizeof w, "crossentropy N%d K%d s%.2f dlogits", N, K, smoothing);
  cmp(w, ddl, dl, n, 1e-5);
  cuda_free(dlog), cuda_free(dprobs), cuda_free(ddl), cuda_free(dloss), cuda_free(dlab);
  free(logits), free(probs), free(dl), free(labels);
}

/* Reduced-precision GEMMs: close to float32, and FP32 mode really is float32. */
static void test_gemm_math(void) {
  const int M = 257, Cin = 96, Cout = 72;
  size_t ni = (size_t)M * Cin, no = (size_t)M * Cout, nw = (size_t)Cout * Cin;
  float *x = rnd(ni, -1, 1), *w = rnd(nw, -0.5, 0.5), *out = GC_NEWF(no);
  linear_forward(out, x, w, NULL, M, Cin, Cout);
  float *dx = dev_copy(x, ni), *dw = dev_copy(w, nw), *dout = dev_zero(no);
  const double tol[4] = {1e-5, 1e-2, 3e-2, 1e-2};
  for (int m = CUDA_MATH_FP32; m <= CUDA_MATH_FP16; m++) {
    cuda_ctx_set_math(ctx, (cuda_math)m);
    cuda_linear_forward(ctx, dout, dx, dw, NULL, M, Cin, Cout);
    float *g = host_of(dout, no);
    double maxc = 0, worst = 0;
    for (size_t i = 0; i < no; i++) maxc = fmax(maxc, fabs(out[i]));
    for (size_t i = 0; i < no; i++) worst = fmax(worst, fabs(g[i] - out[i]) / maxc);
    char wm[128];
    snprintf(wm, sizeof wm, "GEMM in %s: max error %.2e of max|out| (limit %.0e)",
             cuda_math_name((cuda_math)m), worst, tol[m]);
    gc_expect(worst <= tol[m], wm);
    free(g);
  }
  cuda_ctx_set_math(ctx, CUDA_MATH_FP32);
  gc_expect(device_precision_parse("bf16") == CUDA_MATH_BF16 && device_precision_parse("fp64") == -1 &&
                !strcmp(cuda_math_name((cuda_math)device_precision_parse("tf32")), "tf32"),
            "--precision names match the GEMM precisions");
  cuda_free(dx), cuda_free(dw), cuda_free(dout);
  free(x), free(w), free(out);
}

int main(void) {
  char why[200];
  if (device_cuda_count(why, sizeof why) == 0) {
    printf("SKIP: no CUDA device: %s\n", why);
    return 77;
  }
  int gpu = -1;
  device_select(DEVICE_CUDA, 0, &gpu);
  char desc[160];
  device_describe(DEVICE_CUDA, gpu, desc, sizeof desc);
  printf("on %s\n", desc);
  ctx = cuda_ctx_new();
  gc_seed(2024);

  test_conv2d(3, 13, 11, 3, 7, 3, 2);   /* the stem's shape, odd sizes */
  test_conv2d(2, 9, 10, 5, 6, 5, 1);
  test_conv2d(2, 64, 64, 3, 16, 3, 2);
  test_linear(37, 19, 23, 1);
  test_linear(37, 19, 23, 0);
  test_linear(6001, 40, 24, 1);         /* several row chunks for dbias */
  test_linear(5, 576, 1024, 1);         /* the classifier */
  test_dwconv(2, 15, 9, 37, 3, 1);
  test_dwconv(2, 15, 9, 37, 5, 2);
  test_dwconv(3, 28, 28, 72, 3, 2);
  test_dwconv(4, 14, 14, 96, 5, 1);
  test_dwconv(2, 10, 11, 7, 3, 3);    /* stride taken at run time */
  test_dwconv(2, 9, 11, 5, 1, 2);     /* K and stride taken at run time */
  test_dwconv(1, 5, 6, 1100, 3, 1);   /* more than 1024 channels: two channel groups */
  test_dwconv(8, 56, 56, 16, 3, 2);   /* MobileNetV3's first block: many pixel chunks */
  for (int a = ACT_NONE; a <= ACT_HARDSIGMOID; a++) test_batchnorm(5003, 19, (act_kind)a);
  test_batchnorm(7, 3, ACT_NONE);
  test_batchnorm(3136, 64, ACT_HARDSWISH);
  test_batchnorm(400000, 16, ACT_RELU6); /* hundreds of row chunks */
  test_batchnorm(9, 1500, ACT_RELU);     /* more than 1024 channels */
  for (int a = ACT_NONE; a <= ACT_HARDSIGMOID; a++) test_act((act_kind)a);
  test_avgpool(3, 49, 37);
  test_avgpool(2, 1, 5);
  test_se(3, 25, 24, 8);
  test_se(2, 49, 96, 24);
  test_residual();
  test_dropout(100003, 0.2f, 1234);
  test_dropout(7, 0.5f, 99);
  test_dropout(1000, 0.0f, 5);
  test_dropout(1000, 1.0f, 5);
  test_drop_path(37, 5 * 3 * 8, 0.3f, 4242);
  test_drop_path(3, 1001, 0.5f, 7);
  test_crossentropy(7, 5, 0.1f);
  test_crossentropy(128, 1000, 0.0f);
  test_gemm_math();

  cuda_ctx_free(ctx);
  return gc_finish("test_cuda_ops");
}
