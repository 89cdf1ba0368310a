/* test_op_conv2d.c - full convolution forward/backward against a naive double reference and
 * double finite differences (method in gradcheck.h): odd sizes, stride 2, K=5, batch 1, and
 * din = NULL (the stem). Both paths: im2col + GEMM (Cin 13, Cout 3/5/13) and the direct
 * kernel (Cin <= 4, Cout a multiple of 8 up to 32), whose interior pixel blocks need images
 * wider than a few pixels. Results must not depend on the thread count (bits compared). */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int N, H, W, Ci, Co, K, s, Ho, Wo;
  double *in, *w, *R, *out;
} ctx_t;

static void ref_forward(ctx_t *c) {
  int pad = (c->K - 1) / 2;
  for (int n = 0; n < c->N; n++)
    for (int oh = 0; oh < c->Ho; oh++)
      for (int ow = 0; ow < c->Wo; ow++)
        for (int co = 0; co < c->Co; co++) {
          double a = 0.0;
          for (int kh = 0; kh < c->K; kh++)
            for (int kw = 0; kw < c->K; kw++) {
              int ih = oh * c->s - pad + kh, iw = ow * c->s - pad + kw;
              if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
              for (int ci = 0; ci < c->Ci; ci++)
                a += c->in[(((size_t)n * c->H + ih) * c->W + iw) * c->Ci + ci] *
                     c->w[(((size_t)co * c->K + kh) * c->K + kw) * c->Ci + ci];
            }
          c->out[(((size_t)n * c->Ho + oh) * c->Wo + ow) * c->Co + co] = a;
        }
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->N * c->Ho * c->Wo * c->Co);
}

static void run(int N, int H, int W, int Ci, int Co, int K, int s) {
  ctx_t c = {N, H, W, Ci, Co, K, s, conv_out_size(H, K, s), conv_out_size(W, K, s), 0, 0, 0, 0};
  size_t nin = (size_t)N * H * W * Ci, nw = (size_t)Co * K * K * Ci;
  size_t nout = (size_t)N * c.Ho * c.Wo * Co;
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *out = GC_NEWF(nout), *R = GC_NEWF(nout);
  float *din = GC_NEWF(nin), *dw = GC_NEWF(nw), *dw0 = GC_NEWF(nw);
  float *scratch = GC_NEWF(conv2d_scratch_floats(H, W, Ci, K, s));
  gc_fill(in, nin, -1, 1);
  gc_fill(w, nw, -1, 1);
  gc_fill(R, nout, -1, 1);
  gc_fill(dw0, nw, -1, 1);
  c.in = gc_to_double(in, nin);
  c.w = gc_to_double(w, nw);
  c.R = gc_to_double(R, nout);
  c.out = GC_NEWD(nout);
  char name[128], what[200];
  snprintf(name, sizeof name, "N%d H%d W%d Cin%d Cout%d K%d s%d", N, H, W, Ci, Co, K, s);

  conv2d_forward(out, in, w, N, H, W, Ci, Co, K, s, scratch);
  ref_forward(&c);
  snprintf(what, sizeof what, "conv2d fwd  %s", name);
  gc_check(what, out, c.out, nout, 1e-5, 1e-6);

  memcpy(dw, dw0, sizeof(float) * nw);
  for (size_t i = 0; i < nin; i++) din[i] = NAN;
  conv2d_backward(din, dw, R, in, w, N, H, W, Ci, Co, K, s, scratch);
  for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
  double *g = GC_NEWD(nin > nw ? nin : nw);
  gc_fd(g, c.in, nin, loss, &c, 1e-3);
  snprintf(what, sizeof what, "conv2d din  %s", name);
  gc_check(what, din, g, nin, 1e-3, 1e-4);
  gc_fd(g, c.w, nw, loss, &c, 1e-3);
  snprintf(what, sizeof what, "conv2d dw   %s", name);
  gc_check(what, dw, g, nw, 1e-3, 1e-4);

  memset(dw0, 0, sizeof(float) * nw);
  conv2d_backward(NULL, dw0, R, in, w, N, H, W, Ci, Co, K, s, scratch);
  snprintf(what, sizeof what, "conv2d dw with din=NULL  %s", name);
  gc_check(what, dw0, g, nw, 1e-3, 1e-4);

  /* 1 versus 2 threads: the same bits (dw is a reduction over fixed chunks). */
  float *out1 = GC_NEWF(nout), *dw1 = GC_NEWF(nw), *dw2 = GC_NEWF(nw), *din1 = GC_NEWF(nin);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  conv2d_forward(out1, in, w, N, H, W, Ci, Co, K, s, scratch);
  conv2d_backward(din1, dw1, R, in, w, N, H, W, Ci, Co, K, s, scratch);
  omp_set_num_threads(2);
  conv2d_forward(out, in, w, N, H, W, Ci, Co, K, s, scratch);
  conv2d_backward(din, dw2, R, in, w, N, H, W, Ci, Co, K, s, scratch);
  omp_set_num_threads(saved);
  snprintf(what, sizeof what, "conv2d 1 thread == 2 threads, same bits  %s", name);
  gc_expect(!memcmp(out, out1, sizeof(float) * nout) && !memcmp(dw1, dw2, sizeof(float) * nw) &&
                !memcmp(din, din1, sizeof(float) * nin),
            what);

  free(in), free(w), free(out), free(R), free(din), free(dw), free(dw0), free(g), free(scratch);
  free(out1), free(dw1), free(dw2), free(din1);
  free(c.in), free(c.w), free(c.R), free(c.out);
}

int main(void) {
  gc_seed(7);
  run(2, 7, 9, 3, 5, 3, 2);
  run(1, 6, 5, 3, 13, 5, 1);
  run(1, 7, 7, 13, 3, 5, 2);
  run(3, 5, 4, 3, 16, 3, 1);
  /* direct path: the stem's shape (smaller), then every Cout block count and Cin 1..4 */
  run(2, 19, 21, 3, 16, 3, 2);
  run(1, 12, 17, 3, 8, 3, 1);
  run(1, 9, 23, 3, 24, 5, 2);
  run(1, 11, 14, 2, 32, 3, 2);
  run(2, 8, 13, 1, 16, 5, 1);
  run(1, 10, 18, 4, 16, 3, 2);
  return gc_finish("test_op_conv2d");
}
