/* test_op_fused.c - the inference kernels (ops.h, "inference kernels"):
 *   - conv2d_act_forward, dwconv_act_forward and linear_act_forward equal the plain kernel,
 *     then + bias, then act_forward, bit for bit, for every activation, on the direct and the
 *     im2col stem paths, the depthwise block and per-pixel paths, and GEMM column tails;
 *   - conv_bn_act_forward_eval (batch norm folded into the weights) agrees with the conv
 *     followed by batchnorm_act_forward_eval to float rounding, for each conv kind;
 *   - conv_bn_act_forward_train (statistics taken by the conv's kernel) agrees with the conv
 *     followed by batchnorm_act_forward_train: outputs, saved mean and rstd, running
 *     statistics; also for a channel whose mean is 10^4 times its spread;
 *   - batchnorm_act_recompute gives that forward's y again, bit for bit;
 *   - 1 and 2 threads give the same bits. */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

static const act_kind acts[] = {ACT_NONE, ACT_RELU, ACT_RELU6, ACT_HARDSWISH, ACT_HARDSIGMOID};

static int same_bits(const float *a, const float *b, size_t n) {
  return memcmp(a, b, sizeof(float) * n) == 0;
}

typedef struct {
  ops_conv_kind kind;
  int N, H, W, Cin, Cout, K, stride;
} shape;

static size_t out_floats(const shape *s) {
  size_t Ho = (size_t)conv_out_size(s->H, s->K, s->stride), Wo = (size_t)conv_out_size(s->W, s->K, s->stride);
  return (size_t)s->N * Ho * Wo * s->Cout;
}

static size_t weight_floats(const shape *s) {
  if (s->kind == OPS_CONV_FULL) return (size_t)s->Cout * s->K * s->K * s->Cin;
  if (s->kind == OPS_CONV_DEPTHWISE) return (size_t)s->K * s->K * s->Cout;
  return (size_t)s->Cout * s->Cin;
}

/* The plain kernel of the shape, with an optional bias (linear takes it; the others get it
 * added afterwards, as the fused kernels promise). */
static void plain(const shape *s, float *out, const float *in, const float *w, const float *bias,
                  float *scratch) {
  int M = s->N * s->H * s->W;
  if (s->kind == OPS_CONV_POINTWISE) {
    linear_forward(out, in, w, bias, M, s->Cin, s->Cout);
    return;
  }
  if (s->kind == OPS_CONV_FULL)
    conv2d_forward(out, in, w, s->N, s->H, s->W, s->Cin, s->Cout, s->K, s->stride, scratch);
  else
    dwconv_forward(out, in, w, s->N, s->H, s->W, s->Cout, s->K, s->stride);
  if (bias)
    for (size_t i = 0; i < out_floats(s); i++) out[i] += bias[i % s->Cout];
}

static void fused(const shape *s, float *out, const float *in, const float *w, const float *bias,
                  act_kind act, float *scratch) {
  if (s->kind == OPS_CONV_POINTWISE)
    linear_act_forward(out, in, w, bias, s->N * s->H * s->W, s->Cin, s->Cout, act);
  else if (s->kind == OPS_CONV_FULL)
    conv2d_act_forward(out, in, w, bias, s->N, s->H, s->W, s->Cin, s->Cout, s->K, s->stride,
                       scratch, act);
  else
    dwconv_act_forward(out, in, w, bias, s->N, s->H, s->W, s->Cout, s->K, s->stride, act);
}

static void run(shape s) {
  if (s.kind == OPS_CONV_DEPTHWISE) s.Cin = s.Cout;
  if (s.kind == OPS_CONV_POINTWISE) s.K = 1, s.stride = 1;
  const size_t nin = (size_t)s.N * s.H * s.W * s.Cin, nout = out_floats(&s), nw = weight_floats(&s);
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *bias = GC_NEWF(s.Cout);
  float *want = GC_NEWF(nout), *got = GC_NEWF(nout), *got1 = GC_NEWF(nout);
  float *gamma = GC_NEWF(s.Cout), *beta = GC_NEWF(s.Cout), *mean = GC_NEWF(s.Cout), *var = GC_NEWF(s.Cout);
  float *scratch = GC_NEWF(s.kind == OPS_CONV_FULL ? conv2d_scratch_floats(s.H, s.W, s.Cin, s.K, s.stride) : 1);
  gc_fill(in, nin, -2, 2);
  gc_fill(w, nw, -0.5, 0.5);
  gc_fill(bias, s.Cout, -2, 2);
  gc_fill(gamma, s.Cout, 0.5, 2);
  gc_fill(beta, s.Cout, -1, 1);
  gc_fill(mean, s.Cout, -0.5, 0.5);
  gc_fill(var, s.Cout, 0.2, 3);
  static const char *kinds[] = {"conv2d", "dwconv", "linear"};
  char what[200];
  for (size_t a = 0; a < sizeof acts / sizeof *acts; a++) {
    act_kind act = acts[a];
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      const float *b = with_bias ? bias : NULL;
      plain(&s, want, in, w, b, scratch);
      act_forward(want, want, nout, act);
      fused(&s, got, in, w, b, act, scratch);
      snprintf(what, sizeof what, "%s_act_forward == %s%s;%s bits  N%d %dx%d %d->%d k%d s%d",
               kinds[s.kind], kinds[s.kind], with_bias ? ";+bias" : "", act_name(act), s.N, s.H,
               s.W, s.Cin, s.Cout, s.K, s.stride);
      gc_expect(same_bits(got, want, nout), what);
    }
    /* Folded batch norm against conv, then batch norm and activation. */
    float *x = want;
    plain(&s, x, in, w, NULL, scratch);
    float *ref = GC_NEWF(nout);
    batchnorm_act_forward_eval(ref, x, gamma, beta, mean, var, (int)(nout / s.Cout), s.Cout, 1e-3f, act);
    conv_bn_act_forward_eval(got, in, w, s.kind, gamma, beta, mean, var, 1e-3f, s.N, s.H, s.W,
                             s.Cin, s.Cout, s.K, s.stride, act, scratch);
    double *refd = gc_to_double(ref, nout);
    snprintf(what, sizeof what, "conv_bn_act_forward_eval vs %s;bn;%s  N%d %dx%d %d->%d k%d s%d",
             kinds[s.kind], act_name(act), s.N, s.H, s.W, s.Cin, s.Cout, s.K, s.stride);
    gc_check(what, got, refd, nout, 1e-5, 1e-5);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    conv_bn_act_forward_eval(got1, in, w, s.kind, gamma, beta, mean, var, 1e-3f, s.N, s.H, s.W,
                             s.Cin, s.Cout, s.K, s.stride, act, scratch);
    omp_set_num_threads(saved);
    snprintf(what, sizeof what, "conv_bn_act_forward_eval 1 thread == 2 threads  %s %s",
             kinds[s.kind], act_name(act));
    gc_expect(same_bits(got1, got, nout), what);
    free(ref), free(refd);

    /* Training: statistics from the conv's blocks against batch norm's own pass. */
    const int C = s.Cout;
    float *sm = GC_NEWF(C), *sr = GC_NEWF(C), *rm = GC_NEWF(C), *rv = GC_NEWF(C);
    float *sm2 = GC_NEWF(C), *sr2 = GC_NEWF(C), *rm2 = GC_NEWF(C), *rv2 = GC_NEWF(C);
    float *y = GC_NEWF(nout), *y2 = GC_NEWF(nout), *x2 = GC_NEWF(nout);
    gc_fill(rm, C, -1, 1), gc_fill(rv, C, 0.5, 2);
    memcpy(rm2, rm, sizeof(float) * C), memcpy(rv2, rv, sizeof(float) * C);
    plain(&s, x, in, w, NULL, scratch);
    batchnorm_act_forward_train(y2, sm2, sr2, rm2, rv2, x, gamma, beta, (int)(nout / C), C, 1e-3f,
                                0.1f, act);
    conv_bn_act_forward_train(y, got, sm, sr, rm, rv, in, w, s.kind, gamma, beta, 1e-3f, 0.1f, s.N,
                              s.H, s.W, s.Cin, C, s.K, s.stride, act, scratch);
    snprintf(what, sizeof what, "conv_bn_act_forward_train: x == plain conv bits  %s %s",
             kinds[s.kind], act_name(act));
    gc_expect(same_bits(got, x, nout), what);
    struct { const char *name; const float *a, *b; size_t n; } pairs[] = {
        {"y", y, y2, nout}, {"save_mean", sm, sm2, C}, {"save_rstd", sr, sr2, C},
        {"running_mean", rm, rm2, C}, {"running_var", rv, rv2, C}};
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
      double *bd = gc_to_double(pairs[k].b, pairs[k].n);
      snprintf(what, sizeof what, "conv_bn_act_forward_train %s vs conv;bn  %s %s N%d %dx%d %d->%d",
               pairs[k].name, kinds[s.kind], act_name(act), s.N, s.H, s.W, s.Cin, C);
      gc_check(what, pairs[k].a, bd, pairs[k].n, 2e-5, 1e-5);
      free(bd);
    }
    omp_set_num_threads(1);
    conv_bn_act_forward_train(y2, x2, sm2, sr2, NULL, NULL, in, w, s.kind, gamma, beta, 1e-3f, 0.1f,
                              s.N, s.H, s.W, s.Cin, C, s.K, s.stride, act, scratch);
    omp_set_num_threads(saved);
    snprintf(what, sizeof what, "conv_bn_act_forward_train 1 thread == 2 threads  %s %s",
             kinds[s.kind], act_name(act));
    gc_expect(same_bits(y2, y, nout) && same_bits(sm2, sm, C) && same_bits(sr2, sr, C), what);
    /* What backward recomputes instead of keeping y: the same bits. */
    for (size_t i = 0; i < nout; i++) y2[i] = NAN;
    batchnorm_act_recompute(y2, got, sm, sr, gamma, beta, (int)(nout / C), C, act);
    snprintf(what, sizeof what, "batchnorm_act_recompute == the forward's y bits  %s %s",
             kinds[s.kind], act_name(act));
    gc_expect(same_bits(y2, y, nout), what);
    free(sm), free(sr), free(rm), free(rv), free(sm2), free(sr2), free(rm2), free(rv2);
    free(y), free(y2), free(x2);
  }
  free(in), free(w), free(bias), free(want), free(got), free(got1);
  free(gamma), free(beta), free(mean), free(var), free(scratch);
}

/* A 1x1 conv whose output channels sit at about 10^4 with a spread of about 1: the batch
 * statistics from the blocks must not lose the variance to the mean. */
static void run_large_mean(void) {
  const int M = 4099, Cin = 8, Cout = 16;
  float *in = GC_NEWF((size_t)M * Cin), *w = GC_NEWF((size_t)Cout * Cin), *x = GC_NEWF((size_t)M * Cout);
  float *y = GC_NEWF((size_t)M * Cout), *g = GC_NEWF(Cout), *b = GC_NEWF(Cout);
  float *sm = GC_NEWF(Cout), *sr = GC_NEWF(Cout);
  for (int m = 0; m < M; m++) {
    in[(size_t)m * Cin] = 10000.0f; /* channel 0: a large constant ... */
    for (int k = 1; k < Cin; k++) in[(size_t)m * Cin + k] = (float)gc_uniform(-1, 1); /* ... + noise */
  }
  for (int co = 0; co < Cout; co++)
    for (int k = 0; k < Cin; k++) w[(size_t)co * Cin + k] = k == 0 ? 1.0f : (float)gc_uniform(0.5, 1);
  for (int c = 0; c < Cout; c++) g[c] = 1.0f, b[c] = 0.0f;
  conv_bn_act_forward_train(y, x, sm, sr, NULL, NULL, in, w, OPS_CONV_POINTWISE, g, b, 1e-5f, 0.1f,
                            1, M, 1, Cin, Cout, 1, 1, ACT_NONE, NULL);
  /* The reference: the same x's variance in double, two passes. */
  double *rstd = GC_NEWD(Cout);
  for (int c = 0; c < Cout; c++) {
    double mu = 0, v = 0;
    for (int m = 0; m < M; m++) mu += x[(size_t)m * Cout + c];
    mu /= M;
    for (int m = 0; m < M; m++) v += (x[(size_t)m * Cout + c] - mu) * (x[(size_t)m * Cout + c] - mu);
    rstd[c] = 1.0 / sqrt(v / M + 1e-5);
  }
  gc_check("conv_bn_act_forward_train rstd, mean 10^4 x the spread", sr, rstd, Cout, 1e-4, 0);
  batchnorm_forward_train(y, sm, sr, NULL, NULL, x, g, b, M, Cout, 1e-5f, 0.1f);
  gc_check("batchnorm_forward_train rstd, the same x (for comparison)", sr, rstd, Cout, 1e-4, 0);
  free(in), free(w), free(x), free(y), free(g), free(b), free(sm), free(sr), free(rstd);
}

int main(void) {
  gc_seed(23);
  omp_set_num_threads(2);
  run((shape){OPS_CONV_FULL, 2, 29, 31, 3, 16, 3, 2});   /* the stem: the direct path */
  run((shape){OPS_CONV_FULL, 1, 17, 15, 3, 24, 3, 1});
  run((shape){OPS_CONV_FULL, 2, 11, 9, 5, 12, 3, 2});    /* im2col + GEMM */
  run((shape){OPS_CONV_DEPTHWISE, 2, 15, 17, 0, 16, 3, 2}); /* 16-channel blocks */
  run((shape){OPS_CONV_DEPTHWISE, 1, 13, 14, 0, 24, 5, 1}); /* 8-channel tail blocks */
  run((shape){OPS_CONV_DEPTHWISE, 1, 9, 7, 0, 13, 3, 1});  /* per-pixel sums, scalar tail */
  run((shape){OPS_CONV_POINTWISE, 3, 19, 23, 24, 88, 1, 1}); /* 88 = 48 + 40 columns */
  run((shape){OPS_CONV_POINTWISE, 1, 7, 1, 13, 5, 1, 1});    /* columns fewer than 8 */
  run((shape){OPS_CONV_POINTWISE, 1, 40, 41, 96, 576, 1, 1}); /* several column blocks */
  run_large_mean();
  return gc_finish("test_op_fused");
}
