/* test_op_linear.c - linear / 1x1 conv forward and backward against a double reference and
 * double finite differences (method in gradcheck.h), with and without bias, din = NULL, and a
 * tall M that takes the chunked, threaded dbias path. */
#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int M, Ci, Co, has_bias;
  double *in, *w, *b, *R, *out;
} ctx_t;

static void ref_forward(ctx_t *c) {
  for (int m = 0; m < c->M; m++)
    for (int o = 0; o < c->Co; o++) {
      double a = c->has_bias ? c->b[o] : 0.0;
      for (int i = 0; i < c->Ci; i++) a += c->in[(size_t)m * c->Ci + i] * c->w[(size_t)o * c->Ci + i];
      c->out[(size_t)m * c->Co + o] = a;
    }
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->M * c->Co);
}

static void run(int M, int Ci, int Co, int has_bias, int fd) {
  size_t nin = (size_t)M * Ci, nw = (size_t)Co * Ci, nout = (size_t)M * Co;
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *b = GC_NEWF(Co), *out = GC_NEWF(nout);
  float *R = GC_NEWF(nout), *din = GC_NEWF(nin), *dw = GC_NEWF(nw), *db = GC_NEWF(Co);
  float *dw0 = GC_NEWF(nw), *db0 = GC_NEWF(Co);
  gc_fill(in, nin, -1, 1);
  gc_fill(w, nw, -1, 1);
  gc_fill(b, Co, -1, 1);
  gc_fill(R, nout, -1, 1);
  gc_fill(dw0, nw, -1, 1);
  gc_fill(db0, Co, -1, 1);
  ctx_t c = {M, Ci, Co, has_bias, gc_to_double(in, nin), gc_to_double(w, nw),
             gc_to_double(b, Co), gc_to_double(R, nout), GC_NEWD(nout)};
  char name[96], what[200];
  snprintf(name, sizeof name, "M%d Cin%d Cout%d %s", M, Ci, Co, has_bias ? "bias" : "nobias");

  linear_forward(out, in, w, has_bias ? b : NULL, M, Ci, Co);
  ref_forward(&c);
  snprintf(what, sizeof what, "linear fwd   %s", name);
  gc_check(what, out, c.out, nout, 1e-5, 1e-6);

  memcpy(dw, dw0, sizeof(float) * nw);
  memcpy(db, db0, sizeof(float) * Co);
  for (size_t i = 0; i < nin; i++) din[i] = NAN;
  linear_backward(din, dw, has_bias ? db : NULL, R, in, w, M, Ci, Co);
  for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
  for (int i = 0; i < Co; i++) db[i] -= db0[i];
  size_t big = nin > nw ? nin : nw;
  double *g = GC_NEWD(big > (size_t)Co ? big : (size_t)Co);
  if (fd) {
    gc_fd(g, c.in, nin, loss, &c, 1e-3);
    snprintf(what, sizeof what, "linear din   %s", name);
    gc_check(what, din, g, nin, 1e-3, 1e-4);
    gc_fd(g, c.w, nw, loss, &c, 1e-3);
    snprintf(what, sizeof what, "linear dw    %s", name);
    gc_check(what, dw, g, nw, 1e-3, 1e-4);
  }
  if (has_bias) {
    if (fd) {
      gc_fd(g, c.b, Co, loss, &c, 1e-3);
    } else { /* L is linear in b: dL/db = column sums of R, exactly */
      for (int o = 0; o < Co; o++) g[o] = 0.0;
      for (int m = 0; m < M; m++)
        for (int o = 0; o < Co; o++) g[o] += c.R[(size_t)m * Co + o];
    }
    snprintf(what, sizeof what, "linear dbias %s", name);
    gc_check(what, db, g, Co, 1e-3, 1e-4);
  }
  /* din = NULL: parameter gradients only. */
  memset(dw0, 0, sizeof(float) * nw);
  linear_backward(NULL, dw0, NULL, R, in, w, M, Ci, Co);
  int same = 1;
  for (size_t i = 0; i < nw; i++) same &= fabsf(dw0[i] - dw[i]) <= 1e-4f * (1 + fabsf(dw[i]));
  snprintf(what, sizeof what, "linear din=NULL, dbias=NULL gives the same dw  %s", name);
  gc_expect(same, what);

  free(in), free(w), free(b), free(out), free(R), free(din), free(dw), free(db), free(dw0),
      free(db0), free(g);
  free(c.in), free(c.w), free(c.b), free(c.R), free(c.out);
}

int main(void) {
  gc_seed(5);
  run(7, 13, 5, 1, 1);
  run(1, 3, 8, 0, 1);
  run(32, 24, 13, 1, 1);
  run(50021, 3, 17, 1, 0); /* tall: chunked dbias across threads */
  return gc_finish("test_op_linear");
}
