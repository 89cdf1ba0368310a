/* test_op_dwconv.c - depthwise conv forward/backward against a naive double reference and
 * double finite differences (method in gradcheck.h). Shapes cover K=3/5, stride 1/2, odd
 * H and W, batch 1, and channel counts that exercise every vector path (3, 13, 16, 40),
 * including rows wide enough for the 4-pixel interior blocks (both din parities at stride
 * 2). Results must not depend on the thread count (bits compared). */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int N, H, W, C, K, s, Ho, Wo;
  double *in, *w, *R, *out;
} ctx_t;

static void ref_forward(ctx_t *c) {
  int pad = (c->K - 1) / 2;
  for (int n = 0; n < c->N; n++)
    for (int oh = 0; oh < c->Ho; oh++)
      for (int ow = 0; ow < c->Wo; ow++)
        for (int ch = 0; ch < c->C; ch++) {
          double a = 0.0;
          for (int kh = 0; kh < c->K; kh++)
            for (int kw = 0; kw < c->K; kw++) {
              int ih = oh * c->s - pad + kh, iw = ow * c->s - pad + kw;
              if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
              a += c->in[(((size_t)n * c->H + ih) * c->W + iw) * c->C + ch] *
                   c->w[((size_t)kh * c->K + kw) * c->C + ch];
            }
          c->out[(((size_t)n * c->Ho + oh) * c->Wo + ow) * c->C + ch] = a;
        }
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->N * c->Ho * c->Wo * c->C);
}

static void run(int N, int H, int W, int C, int K, int s) {
  ctx_t c = {N, H, W, C, K, s, conv_out_size(H, K, s), conv_out_size(W, K, s), 0, 0, 0, 0};
  size_t nin = (size_t)N * H * W * C, nw = (size_t)K * K * C, nout = (size_t)N * c.Ho * c.Wo * C;
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *out = GC_NEWF(nout), *R = GC_NEWF(nout);
  float *din = GC_NEWF(nin), *dw = GC_NEWF(nw), *dw0 = GC_NEWF(nw);
  gc_fill(in, nin, -1, 1);
  gc_fill(w, nw, -1, 1);
  gc_fill(R, nout, -1, 1);
  gc_fill(dw0, nw, -1, 1);
  c.in = gc_to_double(in, nin);
  c.w = gc_to_double(w, nw);
  c.R = gc_to_double(R, nout);
  c.out = GC_NEWD(nout);
  char name[128];
  snprintf(name, sizeof name, "N%d H%d W%d C%d K%d s%d", N, H, W, C, K, s);

  dwconv_forward(out, in, w, N, H, W, C, K, s);
  ref_forward(&c);
  char what[200];
  snprintf(what, sizeof what, "dwconv fwd   %s", name);
  gc_check(what, out, c.out, nout, 1e-5, 1e-6);

  memcpy(dw, dw0, sizeof(float) * nw); /* backward accumulates into dw */
  for (size_t i = 0; i < nin; i++) din[i] = NAN; /* must be overwritten */
  dwconv_backward(din, dw, R, in, w, N, H, W, C, K, s);
  for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
  double *g = GC_NEWD(nin > nw ? nin : nw);
  gc_fd(g, c.in, nin, loss, &c, 1e-3);
  snprintf(what, sizeof what, "dwconv din   %s", name);
  gc_check(what, din, g, nin, 1e-3, 1e-4);
  gc_fd(g, c.w, nw, loss, &c, 1e-3);
  snprintf(what, sizeof what, "dwconv dw    %s", name);
  gc_check(what, dw, g, nw, 1e-3, 1e-4);

  /* din = NULL skips the input gradient but still accumulates dw. */
  memset(dw0, 0, sizeof(float) * nw);
  dwconv_backward(NULL, dw0, R, in, w, N, H, W, C, K, s);
  int same = 1;
  for (size_t i = 0; i < nw; i++) same &= fabsf(dw0[i] - dw[i]) <= 1e-5f * (1 + fabsf(dw[i]));
  snprintf(what, sizeof what, "dwconv din=NULL gives the same dw  %s", name);
  gc_expect(same, what);

  /* 1 versus 2 threads: the same bits. */
  float *out1 = GC_NEWF(nout), *din1 = GC_NEWF(nin), *dw1 = GC_NEWF(nw), *dw2 = GC_NEWF(nw);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  dwconv_forward(out1, in, w, N, H, W, C, K, s);
  dwconv_backward(din1, dw1, R, in, w, N, H, W, C, K, s);
  omp_set_num_threads(2);
  dwconv_forward(out, in, w, N, H, W, C, K, s);
  dwconv_backward(din, dw2, R, in, w, N, H, W, C, K, s);
  omp_set_num_threads(saved);
  snprintf(what, sizeof what, "dwconv 1 thread == 2 threads, same bits  %s", name);
  gc_expect(!memcmp(out, out1, sizeof(float) * nout) && !memcmp(din, din1, sizeof(float) * nin) &&
                !memcmp(dw1, dw2, sizeof(float) * nw),
            what);

  free(in), free(w), free(out), free(R), free(din), free(dw), free(dw0), free(g);
  free(out1), free(din1), free(dw1), free(dw2);
  free(c.in), free(c.w), free(c.R), free(c.out);
}

int main(void) {
  gc_seed(11);
  run(2, 7, 9, 13, 3, 2);
  run(1, 8, 6, 3, 5, 1);
  run(1, 7, 9, 13, 5, 2);
  run(2, 6, 5, 16, 3, 1);
  run(1, 5, 6, 40, 5, 1);
  run(1, 5, 5, 17, 3, 2);
  run(1, 1, 1, 5, 3, 1);
  /* interior blocks: 16-channel and 8-channel tiles, pixel tails, stride 2 parities */
  run(1, 12, 19, 16, 3, 2);
  run(1, 9, 14, 24, 3, 1);
  run(1, 9, 13, 48, 5, 2);
  run(1, 7, 13, 32, 5, 1);
  run(1, 6, 22, 8, 5, 2);
  return gc_finish("test_op_dwconv");
}
