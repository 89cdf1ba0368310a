/* gemm_compare.c - pollen's own GEMMs against libxsmm and oneDNN at MobileNetV3-Small's 1x1
 * convolution shapes (224x224, batch 32), for BENCHMARKS.md "GEMM libraries". Built only where
 * libxsmm-dev and libdnnl-dev are installed (CMakeLists.txt: target gemm_compare):
 *   build/gemm_compare [--threads T] [--reps R] [--kernels PATH]
 * Each shape, three products, as the engine needs them (row-major, NHWC rows):
 *   fwd  out[M][N] = in[M][K] . w[N][K]^T           (linear_forward)
 *   din  din[M][K] = dout[M][N] . w[N][K]           (linear_backward, din only)
 *   dw   dw[N][K] += dout[M][N]^T . in[M][K]         (linear_backward, dw: a reduction over M)
 * pollen: ops.h's linear_forward / linear_backward (its fwd includes transposing w, as in a
 * step). oneDNN: dnnl_sgemm with the same transposes (its own OpenMP threads). libxsmm: its
 * JIT kernel for 64-row blocks, the blocks spread over OpenMP threads (fwd and din; w^T packed
 * once, untimed); its dw would be a reduction over M with per-thread partials, which libxsmm
 * does not provide, so it has no dw column. Times: median of R runs, the libraries interleaved
 * per repetition; GFLOP/s = 2*M*N*K / time. */
#include <getopt.h>
#include <libxsmm.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "ops/ops.h"

typedef struct {
  const char *layer;
  int M, K, N;
} shape;

static const shape shapes[] = {
    {"b1 project", 100352, 16, 16}, {"b2 expand", 100352, 16, 72}, {"b2 project", 25088, 72, 24},
    {"b3 expand", 25088, 24, 88},   {"b3 project", 25088, 88, 24}, {"b4 expand", 25088, 24, 96},
    {"b4 project", 6272, 96, 40},   {"b5 expand", 6272, 40, 240},  {"b5 project", 6272, 240, 40},
    {"b7 expand", 6272, 40, 120},   {"b7 project", 6272, 120, 48}, {"b8 expand", 6272, 48, 144},
    {"b9 expand", 6272, 48, 288},   {"b9 project", 1568, 288, 96}, {"b10 expand", 1568, 96, 576},
    {"b10 project", 1568, 576, 96}, {"fc1", 32, 576, 1024},
};
#define NSHAPES ((int)(sizeof shapes / sizeof *shapes))
enum { LIB_POLLEN, LIB_DNNL, LIB_XSMM, NLIB };
enum { OP_FWD, OP_DIN, OP_DW, NOP };
static const char *lib_names[NLIB] = {"pollen", "oneDNN", "libxsmm"};

#define XSMM_ROWS 64

/* Row-major C[M][N] = A[M][K] . B[K][N] with libxsmm's column-major kernel: per 64-row block,
 * C^T = B^T . A^T, i.e. m = N, n = rows, k = K. */
static int xsmm_nn(float *C, const float *A, const float *B, int M, int K, int N) {
  const float alpha = 1.0f, beta = 0.0f;
  const libxsmm_blasint lda = N, ldb = K, ldc = N;
  libxsmm_smmfunction full = libxsmm_smmdispatch(N, XSMM_ROWS, K, &lda, &ldb, &ldc, &alpha, &beta, NULL, NULL);
  int tail = M % XSMM_ROWS;
  libxsmm_smmfunction last = tail ? libxsmm_smmdispatch(N, tail, K, &lda, &ldb, &ldc, &alpha, &beta, NULL, NULL) : full;
  if (!full || !last) return -1;
  const long blocks = (M + XSMM_ROWS - 1) / XSMM_ROWS;
#pragma omp parallel for schedule(static)
  for (long b = 0; b < blocks; b++) {
    libxsmm_smmfunction f = (b + 1) * XSMM_ROWS > M ? last : full;
    f(B, A + (size_t)b * XSMM_ROWS * K, C + (size_t)b * XSMM_ROWS * N);
  }
  return 0;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int threads = 0, reps = 7;
  static const struct option opts[] = {{"threads", required_argument, 0, 't'},
                                       {"reps", required_argument, 0, 'r'},
                                       {"kernels", required_argument, 0, 'k'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 't': threads = atoi(optarg); break;
      case 'r': reps = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
      case 'k': {
        ops_kernels path;
        char err[256];
        if (ops_kernels_parse(optarg, &path, err, sizeof err) != 0) die("--kernels: %s", err);
        ops_kernels_use(path);
        break;
      }
      case 'h':
        printf("usage: gemm_compare [--threads T] [--reps R] [--kernels baseline|avx2|avx512]\n");
        return 0;
      default: return 2;
    }
  }
  threads_set(threads);
  libxsmm_init();
  size_t maxa = 0, maxw = 0;
  for (int s = 0; s < NSHAPES; s++) {
    size_t a = (size_t)shapes[s].M * (shapes[s].K > shapes[s].N ? shapes[s].K : shapes[s].N);
    size_t w = (size_t)shapes[s].K * shapes[s].N;
    if (a > maxa) maxa = a;
    if (w > maxw) maxw = w;
  }
  /* in: the forward's input, then backward's dout; x: backward's saved input */
  float *in = xmalloc_aligned(maxa * 4), *out = xmalloc_aligned(maxa * 4), *w = xmalloc_aligned(maxw * 4);
  float *x = xmalloc_aligned(maxa * 4);
  float *wt = xmalloc_aligned(maxw * 4), *dw = xmalloc_aligned(maxw * 4);
  for (size_t i = 0; i < maxa; i++) {
    in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    x[i] = (float)((i * 40503u) % 997) / 500.0f - 1.0f;
  }
  for (size_t i = 0; i < maxw; i++) w[i] = (float)(i % 13) * 0.01f - 0.06f;
  printf("gemm_compare: MobileNetV3-Small 1x1 shapes at 224, batch 32; %d threads, pollen on its %s "
         "kernels, median of %d\n", threads_get(), ops_kernels_name(ops_kernels_active()), reps);
  printf("%-12s %7s %4s %5s | %-24s | %-24s | %-24s\n", "layer", "M", "K", "N",
         "fwd GFLOP/s pol/dnnl/xsmm", "din GFLOP/s pol/dnnl/xsmm", "dw GFLOP/s pol/dnnl");
  double *t = xmalloc(sizeof(double) * reps * NLIB * NOP);
  double sum_ms[NLIB][NOP] = {{0}};
  for (int s = 0; s < NSHAPES; s++) {
    const int M = shapes[s].M, K = shapes[s].K, N = shapes[s].N;
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) wt[(size_t)k * N + n] = w[(size_t)n * K + k];
    for (int r = -1; r < reps; r++) /* r = -1: warm-up (JIT, first touch, scratch growth) */
      for (int lib = 0; lib < NLIB; lib++)
        for (int op = 0; op < NOP; op++) {
          double t0 = time_now();
          int ok = 0;
          if (lib == LIB_POLLEN) {
            if (op == OP_FWD) linear_forward(out, in, w, NULL, M, K, N);
            if (op == OP_DIN) linear_backward(out, dw, NULL, in, x, w, M, K, N); /* + dw */
            if (op == OP_DW) linear_backward(NULL, dw, NULL, in, x, w, M, K, N);
          } else if (lib == LIB_DNNL) {
            if (op == OP_FWD) ok = dnnl_sgemm('N', 'T', M, N, K, 1.0f, in, K, w, K, 0.0f, out, N);
            if (op == OP_DIN) ok = dnnl_sgemm('N', 'N', M, K, N, 1.0f, in, N, w, K, 0.0f, out, K);
            if (op == OP_DW) ok = dnnl_sgemm('T', 'N', N, K, M, 1.0f, in, N, x, K, 1.0f, dw, K);
          } else {
            if (op == OP_FWD) ok = xsmm_nn(out, in, wt, M, K, N);
            if (op == OP_DIN) ok = xsmm_nn(out, in, w, M, N, K);
          }
          if (ok != 0) die("%s failed at %s (M %d K %d N %d)", lib_names[lib], shapes[s].layer, M, K, N);
          if (r >= 0) t[(lib * NOP + op) * reps + r] = time_now() - t0;
        }
    double ms[NLIB][NOP];
    for (int lib = 0; lib < NLIB; lib++)
      for (int op = 0; op < NOP; op++) {
        double *v = t + (lib * NOP + op) * reps;
        qsort(v, (size_t)reps, sizeof *v, compare_double);
        ms[lib][op] = 1e3 * v[reps / 2];
      }
    /* pollen's din column timed din + dw together (linear_backward has no din-only call):
     * take its dw time off. */
    ms[LIB_POLLEN][OP_DIN] -= ms[LIB_POLLEN][OP_DW];
    double gf = 2.0 * M * N * K / 1e6;
    printf("%-12s %7d %4d %5d | %7.1f %7.1f %7.1f  | %7.1f %7.1f %7.1f  | %7.1f %7.1f\n",
           shapes[s].layer, M, K, N, gf / ms[0][0], gf / ms[1][0], gf / ms[2][0], gf / ms[0][1],
           gf / ms[1][1], gf / ms[2][1], gf / ms[0][2], gf / ms[1][2]);
    for (int lib = 0; lib < NLIB; lib++)
      for (int op = 0; op < NOP; op++) sum_ms[lib][op] += ms[lib][op];
  }
  /* pollen keeps its results independent of the thread count (ops.h); does oneDNN's dw? */
  int dnnl_varies = 0, xsmm_varies = 0;
  size_t maxdw = maxw;
  float *dw1 = xmalloc_aligned(maxdw * 4), *o1 = xmalloc_aligned(maxa * 4);
  for (int s = 0; s < NSHAPES; s++) {
    const int M = shapes[s].M, K = shapes[s].K, N = shapes[s].N;
    for (int n = 0; n < N; n++)
      for (int k = 0; k < K; k++) wt[(size_t)k * N + n] = w[(size_t)n * K + k];
    for (int nt = 1; nt <= 2; nt++) {
      omp_set_num_threads(nt);
      float *d = nt == 1 ? dw1 : dw, *o = nt == 1 ? o1 : out;
      memset(d, 0, (size_t)N * K * 4);
      dnnl_sgemm('T', 'N', N, K, M, 1.0f, in, N, x, K, 1.0f, d, K);
      xsmm_nn(o, in, wt, M, K, N);
    }
    omp_set_num_threads(threads_get());
    if (memcmp(dw1, dw, (size_t)N * K * 4)) dnnl_varies++;
    if (memcmp(o1, out, (size_t)M * N * 4)) xsmm_varies++;
  }
  printf("thread count changes the bits: oneDNN dw at %d of %d shapes, libxsmm fwd at %d\n",
         dnnl_varies, NSHAPES, xsmm_varies);
  printf("all shapes, ms: fwd pollen %.2f oneDNN %.2f libxsmm %.2f | din pollen %.2f oneDNN %.2f "
         "libxsmm %.2f | dw pollen %.2f oneDNN %.2f\n",
         sum_ms[0][0], sum_ms[1][0], sum_ms[2][0], sum_ms[0][1], sum_ms[1][1], sum_ms[2][1],
         sum_ms[0][2], sum_ms[1][2]);
  libxsmm_finalize();
  return 0;
}
