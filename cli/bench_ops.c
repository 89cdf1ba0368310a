/* bench_ops.c - `pollen bench ops`: times every op's forward and backward at the shapes of
 * torchvision's mobilenet_v3_small (224x224, batch 32 by default), next to this machine's
 * peaks (FMA compute from the measured clock, memory bandwidth from a STREAM-like copy), and
 * compares the NHWC depthwise conv with an NCHW one written here only for that comparison.
 * Not for: model-level timing (pollen bench on the model does that). */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"
#include "ops/ops.h"

typedef enum { B_CONV, B_LINEAR, B_DW, B_BN, B_ACT, B_SE, B_RES, B_POOL, B_DROP, B_CE, B_NKIND } bop_kind;
static const char *const bop_names[B_NKIND] = {"conv2d", "linear", "dwconv", "batchnorm", "act",
                                                "se", "residual", "avgpool", "dropout", "xent"};

/* One op instance of the network: its kind and dimensions. */
typedef struct {
  bop_kind kind;
  char label[48];
  int N, H, W, Cin, Cout, K, stride, Cs; /* meaning depends on kind */
  act_kind act;
  double fwd_ms, bwd_ms;
  double fwd_flop, bwd_flop, fwd_bytes, bwd_bytes;
} bop;

#define BENCH_MAXOPS 160
static bop ops_list[BENCH_MAXOPS];
static int n_ops;

static bop *add_op(bop_kind k, const char *label, int N, int H, int W, int Cin, int Cout, int K,
                   int stride) {
  POLLEN_ASSERT(n_ops < BENCH_MAXOPS);
  bop *o = &ops_list[n_ops++];
  memset(o, 0, sizeof *o);
  o->kind = k;
  snprintf(o->label, sizeof o->label, "%s", label);
  o->N = N, o->H = H, o->W = W, o->Cin = Cin, o->Cout = Cout, o->K = K, o->stride = stride;
  return o;
}
static void add_bn_act(const char *where, int N, int H, int W, int C, act_kind act) {
  char l[48];
  snprintf(l, sizeof l, "%s bn", where);
  add_op(B_BN, l, N, H, W, C, C, 0, 1);
  if (act != ACT_NONE) {
    snprintf(l, sizeof l, "%s %s", where, act_name(act));
    add_op(B_ACT, l, N, H, W, C, C, 0, 1)->act = act;
  }
}

static int make_divisible(double v, int d) {
  int n = (int)(v + d / 2.0) / d * d;
  if (n < d) n = d;
  if (n < 0.9 * v) n += d;
  return n;
}

/* torchvision mobilenet_v3_small: (in, k, exp, out, se, act, stride). */
static void build_network(int N, int size, int classes) {
  static const struct { int in, k, exp, out, se, hs, s; } cfg[] = {
      {16, 3, 16, 16, 1, 0, 2},  {16, 3, 72, 24, 0, 0, 2},  {24, 3, 88, 24, 0, 0, 1},
      {24, 5, 96, 40, 1, 1, 2},  {40, 5, 240, 40, 1, 1, 1}, {40, 5, 240, 40, 1, 1, 1},
      {40, 5, 120, 48, 1, 1, 1}, {48, 5, 144, 48, 1, 1, 1}, {48, 5, 288, 96, 1, 1, 2},
      {96, 5, 576, 96, 1, 1, 1}, {96, 5, 576, 96, 1, 1, 1}};
  char l[48];
  int H = conv_out_size(size, 3, 2);
  add_op(B_CONV, "stem conv3x3/2", N, size, size, 3, 16, 3, 2);
  add_bn_act("stem", N, H, H, 16, ACT_HARDSWISH);
  for (int b = 0; b < (int)(sizeof cfg / sizeof cfg[0]); b++) {
    act_kind act = cfg[b].hs ? ACT_HARDSWISH : ACT_RELU;
    char where[24];
    if (cfg[b].exp != cfg[b].in) {
      snprintf(l, sizeof l, "b%d expand", b + 1);
      add_op(B_LINEAR, l, N, H, H, cfg[b].in, cfg[b].exp, 1, 1);
      snprintf(where, sizeof where, "b%d exp", b + 1);
      add_bn_act(where, N, H, H, cfg[b].exp, act);
    }
    snprintf(l, sizeof l, "b%d dw%dx%d/%d", b + 1, cfg[b].k, cfg[b].k, cfg[b].s);
    add_op(B_DW, l, N, H, H, cfg[b].exp, cfg[b].exp, cfg[b].k, cfg[b].s);
    H = conv_out_size(H, cfg[b].k, cfg[b].s);
    snprintf(where, sizeof where, "b%d dw", b + 1);
    add_bn_act(where, N, H, H, cfg[b].exp, act);
    if (cfg[b].se) {
      snprintf(l, sizeof l, "b%d se", b + 1);
      add_op(B_SE, l, N, H, H, cfg[b].exp, cfg[b].exp, 0, 1)->Cs = make_divisible(cfg[b].exp / 4.0, 8);
    }
    snprintf(l, sizeof l, "b%d project", b + 1);
    add_op(B_LINEAR, l, N, H, H, cfg[b].exp, cfg[b].out, 1, 1);
    snprintf(where, sizeof where, "b%d proj", b + 1);
    add_bn_act(where, N, H, H, cfg[b].out, ACT_NONE);
    if (cfg[b].s == 1 && cfg[b].in == cfg[b].out) {
      snprintf(l, sizeof l, "b%d residual", b + 1);
      add_op(B_RES, l, N, H, H, cfg[b].out, cfg[b].out, 0, 1);
    }
  }
  add_op(B_LINEAR, "last conv 1x1", N, H, H, 96, 576, 1, 1);
  add_bn_act("last", N, H, H, 576, ACT_HARDSWISH);
  add_op(B_POOL, "avgpool", N, H, H, 576, 576, 0, 1);
  add_op(B_LINEAR, "fc1 576->1024", N, 1, 1, 576, 1024, 1, 1)->Cs = 1; /* Cs=1: has bias */
  add_op(B_ACT, "fc1 hardswish", N, 1, 1, 1024, 1024, 0, 1)->act = ACT_HARDSWISH;
  add_op(B_DROP, "dropout 0.2", N, 1, 1, 1024, 1024, 0, 1);
  add_op(B_LINEAR, "fc2 1024->classes", N, 1, 1, 1024, classes, 1, 1)->Cs = 1;
  add_op(B_CE, "cross-entropy", N, 1, 1, classes, classes, 0, 1);
}

/* ---- the NCHW depthwise conv, for the layout comparison only. w is [C][K][K]. ---- */
static void nchw_range(int W, int Wo, int K, int s, int kw, int *lo, int *hi) {
  int pad = (K - 1) / 2;
  *lo = pad - kw > 0 ? (pad - kw + s - 1) / s : 0;
  *hi = W - 1 + pad - kw < 0 ? -1 : (W - 1 + pad - kw) / s;
  if (*hi > Wo - 1) *hi = Wo - 1;
}
static void nchw_dw_forward(float *out, const float *in, const float *w, int N, int H, int W,
                            int C, int K, int s) {
  const int pad = (K - 1) / 2, Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s);
#pragma omp parallel for schedule(static)
  for (long p = 0; p < (long)N * C; p++) {
    const float *x = in + (size_t)p * H * W, *wk = w + (size_t)(p % C) * K * K;
    float *y = out + (size_t)p * Ho * Wo;
    memset(y, 0, sizeof(float) * Ho * Wo);
    for (int oh = 0; oh < Ho; oh++)
      for (int kh = 0; kh < K; kh++) {
        int ih = oh * s - pad + kh;
        if (ih < 0 || ih >= H) continue;
        const float *xr = x + (size_t)ih * W;
        float *yr = y + (size_t)oh * Wo;
        for (int kw = 0; kw < K; kw++) {
          int lo, hi;
          nchw_range(W, Wo, K, s, kw, &lo, &hi);
          float wv = wk[kh * K + kw];
          for (int ow = lo; ow <= hi; ow++) yr[ow] += wv * xr[ow * s - pad + kw];
        }
      }
  }
}
static void nchw_dw_backward(float *din, float *dw, const float *dout, const float *in,
                             const float *w, int N, int H, int W, int C, int K, int s) {
  const int pad = (K - 1) / 2, Ho = conv_out_size(H, K, s), Wo = conv_out_size(W, K, s);
#pragma omp parallel for schedule(static)
  for (long p = 0; p < (long)N * C; p++) { /* din: a scatter inside one plane, no races */
    const float *g = dout + (size_t)p * Ho * Wo, *wk = w + (size_t)(p % C) * K * K;
    float *d = din + (size_t)p * H * W;
    memset(d, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < Ho; oh++)
      for (int kh = 0; kh < K; kh++) {
        int ih = oh * s - pad + kh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < K; kw++) {
          int lo, hi;
          nchw_range(W, Wo, K, s, kw, &lo, &hi);
          float wv = wk[kh * K + kw];
          float *dr = d + (size_t)ih * W;
          const float *gr = g + (size_t)oh * Wo;
          for (int ow = lo; ow <= hi; ow++) dr[ow * s - pad + kw] += wv * gr[ow];
        }
      }
  }
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) /* dw: one channel per task, images in order */
    for (int n = 0; n < N; n++) {
      const float *g = dout + ((size_t)n * C + c) * Ho * Wo, *x = in + ((size_t)n * C + c) * H * W;
      for (int oh = 0; oh < Ho; oh++)
        for (int kh = 0; kh < K; kh++) {
          int ih = oh * s - pad + kh;
          if (ih < 0 || ih >= H) continue;
          for (int kw = 0; kw < K; kw++) {
            int lo, hi;
            nchw_range(W, Wo, K, s, kw, &lo, &hi);
            float a = 0.0f;
            for (int ow = lo; ow <= hi; ow++) a += g[(size_t)oh * Wo + ow] * x[(size_t)ih * W + ow * s - pad + kw];
            dw[((size_t)c * K + kh) * K + kw] += a;
          }
        }
    }
}

/* ---- machine peaks ---- */
static double cpuinfo_mhz(void) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return 0.0;
  char line[256];
  double mhz = 0.0;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "cpu MHz", 7)) {
      const char *c = strchr(line, ':');
      if (c) mhz = atof(c + 1);
      break;
    }
  fclose(f);
  return mhz;
}
/* STREAM-like copy over 2 x 128 MiB, all threads: bytes read + written per second. */
static double measure_bandwidth(void) {
  size_t n = (size_t)32 << 20;
  float *a = xmalloc_aligned(n * sizeof(float)), *b = xmalloc_aligned(n * sizeof(float));
  long ln = (long)n;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < ln; i++) a[i] = (float)i, b[i] = 0.0f;
  double best = 1e30;
  for (int r = 0; r < 5; r++) {
    double t0 = time_now();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < ln; i++) b[i] = a[i];
    double dt = time_now() - t0;
    if (dt < best) best = dt;
  }
  double gbs = 2.0 * n * sizeof(float) / best / 1e9;
  if (b[n - 1] != (float)(n - 1)) gbs = 0.0;
  free(a), free(b);
  return gbs;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Buffers shared by all ops, sized for the largest one. */
typedef struct {
  float *x, *y, *dy, *dx, *p, *dp, *p2, *dp2, *save, *scratch;
  int *labels;
} bench_bufs;

static void run_fwd(const bop *o, bench_bufs *b) {
  int Ho = conv_out_size(o->H, o->K ? o->K : 1, o->stride), M = o->N * o->H * o->W;
  size_t n = (size_t)M * o->Cin;
  switch (o->kind) {
    case B_CONV: conv2d_forward(b->y, b->x, b->p, o->N, o->H, o->W, o->Cin, o->Cout, o->K, o->stride, b->scratch); break;
    case B_LINEAR: linear_forward(b->y, b->x, b->p, o->Cs ? b->p2 : NULL, M, o->Cin, o->Cout); break;
    case B_DW: dwconv_forward(b->y, b->x, b->p, o->N, o->H, o->W, o->Cin, o->K, o->stride); break;
    case B_BN: batchnorm_forward_train(b->y, b->save, b->save + o->Cin, b->p2, b->dp2, b->x, b->p, b->p + o->Cin, M, o->Cin, 1e-3f, 0.01f); break;
    case B_ACT: act_forward(b->y, b->x, n, o->act); break;
    case B_SE: se_forward(b->y, b->save, b->x, b->p, b->p2, b->p + (size_t)o->Cs * o->Cin, b->p2 + o->Cs, o->N, o->H * o->W, o->Cin, o->Cs); break;
    case B_RES: residual_forward(b->y, b->x, b->dx, n); break;
    case B_POOL: avgpool_forward(b->y, b->x, o->N, o->H * o->W, o->Cin); break;
    case B_DROP: dropout_forward(b->y, b->x, n, 0.2f, 42); break;
    case B_CE: crossentropy_forward(b->y, b->x, b->labels, o->N, o->Cin, 0.1f); break;
    default: break;
  }
  (void)Ho;
}
static void run_bwd(const bop *o, bench_bufs *b) {
  int M = o->N * o->H * o->W;
  size_t n = (size_t)M * o->Cin;
  switch (o->kind) {
    case B_CONV: conv2d_backward(NULL, b->dp, b->dy, b->x, b->p, o->N, o->H, o->W, o->Cin, o->Cout, o->K, o->stride, b->scratch); break;
    case B_LINEAR: linear_backward(b->dx, b->dp, o->Cs ? b->dp2 : NULL, b->dy, b->x, b->p, M, o->Cin, o->Cout); break;
    case B_DW: dwconv_backward(b->dx, b->dp, b->dy, b->x, b->p, o->N, o->H, o->W, o->Cin, o->K, o->stride); break;
    case B_BN: batchnorm_backward(b->dx, b->dp, b->dp + o->Cin, b->dy, b->x, b->save, b->save + o->Cin, b->p, M, o->Cin); break;
    case B_ACT: act_backward(b->dx, b->dy, b->x, n, o->act); break;
    case B_SE: se_backward(b->dx, b->dp, b->dp2, b->dp + (size_t)o->Cs * o->Cin, b->dp2 + o->Cs, b->dy, b->x, b->save, b->p, b->p + (size_t)o->Cs * o->Cin, o->N, o->H * o->W, o->Cin, o->Cs); break;
    case B_RES: residual_backward(b->dx, b->dy, n); break;
    case B_POOL: avgpool_backward(b->dx, b->dy, o->N, o->H * o->W, o->Cin); break;
    case B_DROP: dropout_backward(b->dx, b->dy, n, 0.2f, 42); break;
    case B_CE: crossentropy_backward(b->dx, b->y, b->labels, o->N, o->Cin, 0.1f); break;
    default: break;
  }
}

/* Work and memory traffic per op (the minimum each pass must move, float32). */
static void op_costs(bop *o) {
  double M = (double)o->N * o->H * o->W, in = M * o->Cin, K2 = (double)o->K * o->K;
  int Ho = conv_out_size(o->H, o->K ? o->K : 1, o->stride);
  double Mo = (double)o->N * Ho * Ho, out = Mo * o->Cout;
  switch (o->kind) {
    case B_CONV:
      o->fwd_flop = 2 * out * K2 * o->Cin;
      o->bwd_flop = o->fwd_flop; /* stem: dw only */
      o->fwd_bytes = 4 * (in + out + K2 * o->Cin * o->Cout);
      o->bwd_bytes = 4 * (in + out + K2 * o->Cin * o->Cout);
      break;
    case B_LINEAR:
      o->fwd_flop = 2 * M * o->Cin * o->Cout;
      o->bwd_flop = 2 * o->fwd_flop;
      o->fwd_bytes = 4 * (in + M * o->Cout + (double)o->Cin * o->Cout);
      o->bwd_bytes = 4 * (2 * in + M * o->Cout + 2.0 * o->Cin * o->Cout);
      break;
    case B_DW:
      o->fwd_flop = 2 * out * K2;
      o->bwd_flop = 2 * o->fwd_flop;
      o->fwd_bytes = 4 * (in + out);
      o->bwd_bytes = 4 * (2 * in + 2 * out); /* din pass: dy -> dx; dw pass: dy, x */
      break;
    case B_BN:
      o->fwd_flop = 6 * in;
      o->bwd_flop = 8 * in;
      o->fwd_bytes = 4 * 3 * in; /* stats read, normalise read + write */
      o->bwd_bytes = 4 * 5 * in; /* sums read x, dy; din read x, dy, write */
      break;
    case B_ACT: o->fwd_flop = 4 * in, o->bwd_flop = 4 * in, o->fwd_bytes = 8 * in, o->bwd_bytes = 12 * in; break;
    case B_SE: o->fwd_flop = 2 * in, o->bwd_flop = 4 * in, o->fwd_bytes = 12 * in, o->bwd_bytes = 16 * in; break;
    case B_RES: o->fwd_flop = in, o->bwd_flop = in, o->fwd_bytes = 12 * in, o->bwd_bytes = 12 * in; break;
    case B_POOL: o->fwd_flop = in, o->bwd_flop = in, o->fwd_bytes = 4 * in, o->bwd_bytes = 4 * in; break;
    case B_DROP: o->fwd_flop = in, o->bwd_flop = in, o->fwd_bytes = 8 * in, o->bwd_bytes = 8 * in; break;
    case B_CE: o->fwd_flop = 5 * in, o->bwd_flop = 2 * in, o->fwd_bytes = 8 * in, o->bwd_bytes = 8 * in; break;
    default: break;
  }
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen bench ops [--batch N] [--size PX] [--threads T] [--reps R] [--precision P] [--json]\n\n"
          "Times each op's forward and backward at MobileNetV3-Small's layer shapes and prints\n"
          "ms (median of R), GFLOP/s and GB/s beside the machine's peaks, then the NHWC versus\n"
          "NCHW depthwise conv comparison.\n\n"
          "  --batch N     images per batch (default 32)\n"
          "  --size PX     input height = width (default 224)\n"
          "  --threads T   threads (default 0 = all cores)\n"
          "  --reps R      timed repetitions per op (default 5)\n"
          "  --classes K   classifier outputs (default 5, tf_flowers)\n"
          "  --kernels K   CPU kernels: baseline, avx2 or avx512 (default: the best this CPU\n"
          "                runs; also POLLEN_KERNELS)\n"
          "  --precision P the GEMMs' inputs: fp32 (default) or bf16 (needs AVX512_BF16)\n"
          "  --json        one JSON object on stdout\n"
          "  --help        this text\n");
}

int bench_ops(int argc, char **argv) {
  int batch = 32, size = 224, threads = 0, reps = 5, json = 0, classes = 5;
  const char *precision = "fp32";
  static const struct option opts[] = {{"batch", required_argument, 0, 'b'},
                                       {"size", required_argument, 0, 's'},
                                       {"threads", required_argument, 0, 't'},
                                       {"reps", required_argument, 0, 'r'},
                                       {"classes", required_argument, 0, 'k'},
                                       {"json", no_argument, 0, 'j'},
                                       {"kernels", required_argument, 0, 'K'},
                                       {"precision", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'b': batch = (int)cli_parse_long("--batch", optarg, 1, 4096); break;
      case 's': size = (int)cli_parse_long("--size", optarg, 32, 1024); break;
      case 't': threads = (int)cli_parse_long("--threads", optarg, 0, 1024); break;
      case 'r': reps = (int)cli_parse_long("--reps", optarg, 1, 1000); break;
      case 'k': classes = (int)cli_parse_long("--classes", optarg, 2, 100000); break;
      case 'j': json = 1; break;
      case 'K': cli_use_kernels(optarg); break;
      case 'p': precision = optarg; break;
      case 'h': usage(stdout); return EXIT_OK;
      default: return cli_usage_error("bench ops");
    }
  }
  if (optind < argc) return cli_usage_error("bench ops");
  cli_use_cpu_precision(precision);
  threads_set(threads);
  n_ops = 0;
  build_network(batch, size, classes);

  /* Size the shared buffers for the largest op. */
  size_t maxact = 0, maxpar = 0, maxsave = 0, maxscr = 0;
  for (int i = 0; i < n_ops; i++) {
    bop *o = &ops_list[i];
    op_costs(o);
    size_t in = (size_t)o->N * o->H * o->W * o->Cin;
    size_t out = (size_t)o->N * o->H * o->W * o->Cout; /* >= the strided output */
    size_t par = (size_t)(o->K ? o->K * o->K : 1) * o->Cin * o->Cout + 2 * (size_t)o->Cout + 2 * (size_t)o->Cin;
    if (o->kind == B_SE) par = 2 * (size_t)o->Cs * o->Cin + o->Cs + o->Cin;
    if (o->kind == B_DW) par = (size_t)o->K * o->K * o->Cin;
    if (in > maxact) maxact = in;
    if (out > maxact) maxact = out;
    if (par > maxpar) maxpar = par;
    size_t sv = o->kind == B_SE ? se_save_floats(o->N, o->Cin, o->Cs) : 2 * (size_t)o->Cin;
    if (sv > maxsave) maxsave = sv;
    if (o->kind == B_CONV) maxscr = conv2d_scratch_floats(o->H, o->W, o->Cin, o->K, o->stride);
  }
  bench_bufs b;
  float **all[] = {&b.x, &b.y, &b.dy, &b.dx};
  for (int i = 0; i < 4; i++) {
    *all[i] = xmalloc_aligned(maxact * sizeof(float));
    long n = (long)maxact;
    float *p = *all[i];
#pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) p[j] = (float)((j * 2654435761u) % 1000) / 500.0f - 1.0f;
  }
  float **par[] = {&b.p, &b.dp, &b.p2, &b.dp2};
  for (int i = 0; i < 4; i++) {
    *par[i] = xmalloc_aligned(maxpar * sizeof(float));
    for (size_t j = 0; j < maxpar; j++) (*par[i])[j] = 0.5f + (float)(j % 7) * 0.1f;
  }
  b.save = xcalloc(maxsave, sizeof(float));
  b.scratch = xmalloc_aligned((maxscr ? maxscr : 1) * sizeof(float));
  b.labels = xcalloc((size_t)batch, sizeof(int));
  for (int i = 0; i < batch; i++) b.labels[i] = i % classes;

  /* The peak is measured, not computed from a clock: FMA chains on this kernel path's
   * vectors, on every thread (ops_fma_peak_gflops). */
  double mhz = cpuinfo_mhz(), bw = measure_bandwidth(), peak_gflops = ops_fma_peak_gflops();
  int nthreads = threads_get();
  const char *kernels = ops_kernels_name(ops_kernels_active());

  double *tf = xmalloc(sizeof(double) * reps), *tb = xmalloc(sizeof(double) * reps);
  for (int i = 0; i < n_ops; i++) {
    bop *o = &ops_list[i];
    run_fwd(o, &b); /* warm-up: first-touch pages, grow the ops' scratch */
    run_bwd(o, &b);
    for (int r = 0; r < reps; r++) {
      double t0 = time_now();
      run_fwd(o, &b);
      double t1 = time_now();
      run_bwd(o, &b);
      double t2 = time_now();
      tf[r] = (t1 - t0) * 1e3, tb[r] = (t2 - t1) * 1e3;
    }
    o->fwd_ms = median(tf, reps);
    o->bwd_ms = median(tb, reps);
  }

  /* Layout comparison: every depthwise layer, NHWC (the engine) versus NCHW. */
  int ndw = 0;
  double dw_nhwc[16], dw_nchw[16];
  int dw_idx[16];
  for (int i = 0; i < n_ops && ndw < 16; i++) {
    bop *o = &ops_list[i];
    if (o->kind != B_DW) continue;
    double tn[64], tc[64];
    int rr = reps < 64 ? reps : 64;
    nchw_dw_forward(b.y, b.x, b.p, o->N, o->H, o->W, o->Cin, o->K, o->stride);
    nchw_dw_backward(b.dx, b.dp, b.dy, b.x, b.p, o->N, o->H, o->W, o->Cin, o->K, o->stride);
    for (int r = 0; r < rr; r++) {
      double t0 = time_now();
      run_fwd(o, &b);
      run_bwd(o, &b);
      double t1 = time_now();
      nchw_dw_forward(b.y, b.x, b.p, o->N, o->H, o->W, o->Cin, o->K, o->stride);
      nchw_dw_backward(b.dx, b.dp, b.dy, b.x, b.p, o->N, o->H, o->W, o->Cin, o->K, o->stride);
      double t2 = time_now();
      tn[r] = (t1 - t0) * 1e3, tc[r] = (t2 - t1) * 1e3;
    }
    dw_nhwc[ndw] = median(tn, rr), dw_nchw[ndw] = median(tc, rr), dw_idx[ndw] = i;
    ndw++;
  }

  /* Totals per op kind. */
  double kf[B_NKIND] = {0}, kb[B_NKIND] = {0}, tot = 0.0;
  for (int i = 0; i < n_ops; i++) {
    kf[ops_list[i].kind] += ops_list[i].fwd_ms;
    kb[ops_list[i].kind] += ops_list[i].bwd_ms;
    tot += ops_list[i].fwd_ms + ops_list[i].bwd_ms;
  }
  double sn = 0, sc = 0;
  for (int i = 0; i < ndw; i++) sn += dw_nhwc[i], sc += dw_nchw[i];

  if (json) {
    printf("{\"batch\":%d,\"size\":%d,\"threads\":%d,\"reps\":%d,\"kernels\":\"%s\",\"precision\":\"%s\","
           "\"cpuinfo_mhz\":%.0f,\"peak_gflops\":%.1f,\"stream_copy_gbs\":%.2f,\"ops\":[",
           batch, size, nthreads, reps, kernels, precision, mhz, peak_gflops, bw);
    for (int i = 0; i < n_ops; i++) {
      bop *o = &ops_list[i];
      printf("%s{\"op\":\"%s\",\"layer\":\"%s\",\"n\":%d,\"h\":%d,\"w\":%d,\"cin\":%d,\"cout\":%d,"
             "\"k\":%d,\"stride\":%d,\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"fwd_gflops\":%.3f,"
             "\"bwd_gflops\":%.3f,\"fwd_gbs\":%.3f,\"bwd_gbs\":%.3f}",
             i ? "," : "", bop_names[o->kind], o->label, o->N, o->H, o->W, o->Cin, o->Cout, o->K,
             o->stride, o->fwd_ms, o->bwd_ms, o->fwd_flop / o->fwd_ms / 1e6,
             o->bwd_flop / o->bwd_ms / 1e6, o->fwd_bytes / o->fwd_ms / 1e6,
             o->bwd_bytes / o->bwd_ms / 1e6);
    }
    printf("],\"totals\":{");
    for (int k = 0; k < B_NKIND; k++)
      printf("%s\"%s\":{\"fwd_ms\":%.4f,\"bwd_ms\":%.4f}", k ? "," : "", bop_names[k], kf[k], kb[k]);
    printf("},\"total_ms\":%.3f,\"layout\":[", tot);
    for (int i = 0; i < ndw; i++)
      printf("%s{\"layer\":\"%s\",\"nhwc_ms\":%.4f,\"nchw_ms\":%.4f}", i ? "," : "",
             ops_list[dw_idx[i]].label, dw_nhwc[i], dw_nchw[i]);
    printf("],\"layout_total\":{\"nhwc_ms\":%.3f,\"nchw_ms\":%.3f}}\n", sn, sc);
  } else {
    printf("pollen bench ops: MobileNetV3-Small shapes, batch %d, %dx%d, %d threads, %s kernels, "
           "%s GEMMs, median of %d\n", batch, size, size, nthreads, kernels, precision, reps);
    printf("machine peak: %.1f GFLOP/s (FMA chains on the %s path's vectors, %d threads; cpuinfo "
           "%.0f MHz), %.1f GB/s STREAM-like copy\n\n", peak_gflops, kernels, nthreads, mhz, bw);
    printf("%-22s %-24s %9s %9s %8s %8s %8s %8s\n", "layer", "shape (NHWC in)", "fwd ms",
           "bwd ms", "fwdGF/s", "bwdGF/s", "fwdGB/s", "bwdGB/s");
    for (int i = 0; i < n_ops; i++) {
      bop *o = &ops_list[i];
      char shape[48];
      if (o->kind == B_CONV || o->kind == B_DW)
        snprintf(shape, sizeof shape, "%dx%dx%d k%d s%d->%d", o->H, o->W, o->Cin, o->K, o->stride, o->Cout);
      else if (o->kind == B_LINEAR)
        snprintf(shape, sizeof shape, "M%d %d->%d", o->N * o->H * o->W, o->Cin, o->Cout);
      else if (o->kind == B_SE)
        snprintf(shape, sizeof shape, "%dx%dx%d sq%d", o->H, o->W, o->Cin, o->Cs);
      else
        snprintf(shape, sizeof shape, "%dx%dx%d", o->H, o->W, o->Cin);
      printf("%-22s %-24s %9.3f %9.3f %8.1f %8.1f %8.1f %8.1f\n", o->label, shape, o->fwd_ms,
             o->bwd_ms, o->fwd_flop / o->fwd_ms / 1e6, o->bwd_flop / o->bwd_ms / 1e6,
             o->fwd_bytes / o->fwd_ms / 1e6, o->bwd_bytes / o->bwd_ms / 1e6);
    }
    printf("\n%-12s %10s %10s %7s\n", "op", "fwd ms", "bwd ms", "share");
    for (int k = 0; k < B_NKIND; k++)
      printf("%-12s %10.2f %10.2f %6.1f%%\n", bop_names[k], kf[k], kb[k], 100.0 * (kf[k] + kb[k]) / tot);
    printf("%-12s %21.2f\n\n", "all ops", tot);
    printf("layout, depthwise conv fwd+bwd: %-10s %10s %10s %8s\n", "layer", "NHWC ms", "NCHW ms", "NCHW/NHWC");
    for (int i = 0; i < ndw; i++)
      printf("%32s %-10s %10.3f %10.3f %8.2fx\n", "", ops_list[dw_idx[i]].label, dw_nhwc[i], dw_nchw[i], dw_nchw[i] / dw_nhwc[i]);
    printf("%32s %-10s %10.3f %10.3f %8.2fx\n", "", "total", sn, sc, sc / sn);
  }
  free(tf), free(tb);
  free(b.x), free(b.y), free(b.dy), free(b.dx), free(b.p), free(b.dp), free(b.p2), free(b.dp2);
  free(b.save), free(b.scratch), free(b.labels);
  return EXIT_OK;
}
