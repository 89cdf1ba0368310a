/* test_op_avgpool.c - global average pool forward/backward against a double reference and
 * double finite differences (method in gradcheck.h); C = 70 crosses the 64-channel block. */
#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int N, HW, C;
  double *in, *R, *out;
} ctx_t;
static void ref_forward(ctx_t *c) {
  for (int n = 0; n < c->N; n++)
    for (int ch = 0; ch < c->C; ch++) {
      double s = 0.0;
      for (int p = 0; p < c->HW; p++) s += c->in[((size_t)n * c->HW + p) * c->C + ch];
      c->out[(size_t)n * c->C + ch] = s / c->HW;
    }
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->N * c->C);
}

static void run(int N, int HW, int C, int fd) {
  size_t nin = (size_t)N * HW * C, nout = (size_t)N * C;
  float *in = GC_NEWF(nin), *out = GC_NEWF(nout), *R = GC_NEWF(nout), *din = GC_NEWF(nin);
  gc_fill(in, nin, -1, 1);
  gc_fill(R, nout, -1, 1);
  ctx_t c = {N, HW, C, gc_to_double(in, nin), gc_to_double(R, nout), GC_NEWD(nout)};
  char what[160];
  avgpool_forward(out, in, N, HW, C);
  ref_forward(&c);
  snprintf(what, sizeof what, "avgpool fwd  N%d HW%d C%d", N, HW, C);
  gc_check(what, out, c.out, nout, 1e-5, 1e-6);
  avgpool_backward(din, R, N, HW, C);
  double *g = GC_NEWD(nin);
  if (fd) {
    gc_fd(g, c.in, nin, loss, &c, 1e-3);
  } else { /* L is linear in x: dL/dx = R/HW exactly (FD would cost O(n^2)) */
    for (size_t i = 0; i < nin; i++) g[i] = c.R[(i / ((size_t)HW * C)) * C + i % C] / HW;
  }
  snprintf(what, sizeof what, "avgpool din  N%d HW%d C%d %s", N, HW, C, fd ? "vs FD" : "vs R/HW");
  gc_check(what, din, g, nin, 1e-4, 1e-6);
  free(in), free(out), free(R), free(din), free(g), free(c.in), free(c.R), free(c.out);
}

int main(void) {
  gc_seed(4);
  run(3, 7 * 9, 13, 1);
  run(1, 5, 70, 1);
  run(2, 1, 3, 1);
  run(32, 49, 96, 0); /* threaded */
  return gc_finish("test_op_avgpool");
}
