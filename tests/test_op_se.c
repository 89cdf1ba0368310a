/* test_op_se.c - squeeze-and-excite forward/backward against a naive double reference and
 * double finite differences w.r.t. the input and all four parameters (method in gradcheck.h).
 * Inputs and biases are chosen so hardsigmoid's and relu's break points are not straddled. */
#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int N, HW, C, Cs;
  double *in, *w1, *b1, *w2, *b2, *R, *out;
} ctx_t;

static void ref_forward(ctx_t *c) {
  double s[512], h[512];
  for (int n = 0; n < c->N; n++) {
    for (int ch = 0; ch < c->C; ch++) {
      double a = 0.0;
      for (int p = 0; p < c->HW; p++) a += c->in[((size_t)n * c->HW + p) * c->C + ch];
      s[ch] = a / c->HW;
    }
    for (int j = 0; j < c->Cs; j++) {
      double z = c->b1[j];
      for (int ch = 0; ch < c->C; ch++) z += c->w1[(size_t)j * c->C + ch] * s[ch];
      h[j] = z > 0 ? z : 0;
    }
    for (int ch = 0; ch < c->C; ch++) {
      double z = c->b2[ch];
      for (int j = 0; j < c->Cs; j++) z += c->w2[(size_t)ch * c->Cs + j] * h[j];
      double g = fmin(fmax(z + 3, 0), 6) / 6;
      for (int p = 0; p < c->HW; p++) {
        size_t i = ((size_t)n * c->HW + p) * c->C + ch;
        c->out[i] = c->in[i] * g;
      }
    }
  }
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->N * c->HW * c->C);
}

static void run(int N, int HW, int C, int Cs) {
  size_t nx = (size_t)N * HW * C, n1 = (size_t)Cs * C;
  float *in = GC_NEWF(nx), *out = GC_NEWF(nx), *R = GC_NEWF(nx), *din = GC_NEWF(nx);
  float *w1 = GC_NEWF(n1), *b1 = GC_NEWF(Cs), *w2 = GC_NEWF(n1), *b2 = GC_NEWF(C);
  float *dw1 = GC_NEWF(n1), *db1 = GC_NEWF(Cs), *dw2 = GC_NEWF(n1), *db2 = GC_NEWF(C);
  float *save = GC_NEWF(se_save_floats(N, C, Cs));
  gc_fill(in, nx, 0, 2); /* positive mean: relu units mostly active, gates mid-range */
  gc_fill(w1, n1, -1, 1);
  gc_fill(b1, Cs, 0.2, 1);
  gc_fill(w2, n1, -0.5, 0.5);
  gc_fill(b2, C, -1, 1);
  gc_fill(R, nx, -1, 1);
  ctx_t c = {N, HW, C, Cs, gc_to_double(in, nx), gc_to_double(w1, n1), gc_to_double(b1, Cs),
             gc_to_double(w2, n1), gc_to_double(b2, C), gc_to_double(R, nx), GC_NEWD(nx)};
  char name[80], what[200];
  snprintf(name, sizeof name, "N%d HW%d C%d Cs%d", N, HW, C, Cs);

  se_forward(out, save, in, w1, b1, w2, b2, N, HW, C, Cs);
  ref_forward(&c);
  snprintf(what, sizeof what, "se fwd   %s", name);
  gc_check(what, out, c.out, nx, 1e-5, 1e-6);

  se_backward(din, dw1, db1, dw2, db2, R, in, save, w1, w2, N, HW, C, Cs);
  double *g = GC_NEWD(nx > n1 ? nx : n1);
  const double h = 1e-5;
  struct { const char *nm; double *x; float *got; size_t n; } t[] = {
      {"din", c.in, din, nx}, {"dw1", c.w1, dw1, n1}, {"db1", c.b1, db1, (size_t)Cs},
      {"dw2", c.w2, dw2, n1}, {"db2", c.b2, db2, (size_t)C}};
  for (int k = 0; k < 5; k++) {
    gc_fd(g, t[k].x, t[k].n, loss, &c, h);
    snprintf(what, sizeof what, "se %-4s  %s", t[k].nm, name);
    gc_check(what, t[k].got, g, t[k].n, 1e-3, 1e-4);
  }
  free(in), free(out), free(R), free(din), free(w1), free(b1), free(w2), free(b2), free(dw1),
      free(db1), free(dw2), free(db2), free(save), free(g);
  free(c.in), free(c.w1), free(c.b1), free(c.w2), free(c.b2), free(c.R), free(c.out);
}

int main(void) {
  gc_seed(9);
  run(2, 5 * 3, 13, 8);
  run(1, 9, 72, 24);
  run(3, 1, 16, 8);
  return gc_finish("test_op_se");
}
