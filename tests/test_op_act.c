/* test_op_act.c - activations against PyTorch's definitions: forward against a double
 * reference, backward against double finite differences away from the break points, and AT
 * the break points (x = -3, 0, 3, 6) against PyTorch's documented gradient values, where
 * finite differences are meaningless. Also in-place use (out == in, din == dout). */
#include "ops/ops.h"
#include "tests/gradcheck.h"
#include "tests/op_ref.h"

typedef struct {
  size_t n;
  act_kind a;
  double *in, *R;
} ctx_t;

static void run(act_kind a, size_t n) {
  float *in = GC_NEWF(n), *out = GC_NEWF(n), *R = GC_NEWF(n), *din = GC_NEWF(n);
  const double kinks[] = {-3, 0, 3, 6};
  for (size_t i = 0; i < n; i++) {
    double x;
    int near;
    do { /* keep FD points 1e-2 away from a break point */
      x = gc_uniform(-8, 8);
      near = 0;
      for (int k = 0; k < 4; k++) near |= fabs(x - kinks[k]) < 1e-2;
    } while (near);
    in[i] = (float)x;
  }
  gc_fill(R, n, -1, 1);
  ctx_t c = {n, a, gc_to_double(in, n), gc_to_double(R, n)};
  double *t = GC_NEWD(n);
  char what[160];

  act_forward(out, in, n, a);
  for (size_t i = 0; i < n; i++) t[i] = ref_act(c.in[i], a);
  snprintf(what, sizeof what, "%-11s fwd  n=%zu", act_name(a), n);
  gc_check(what, out, t, n, 1e-6, 1e-7);

  act_backward(din, R, in, n, a);
  /* elementwise op: the FD of L w.r.t. in[i] only involves element i (O(n), not O(n^2)) */
  for (size_t i = 0; i < n; i++)
    t[i] = (ref_act(c.in[i] + 1e-5, a) - ref_act(c.in[i] - 1e-5, a)) / 2e-5 * c.R[i];
  snprintf(what, sizeof what, "%-11s bwd vs FD", act_name(a));
  gc_check(what, din, t, n, 1e-4, 1e-6);

  /* In place: out == in, din == dout. */
  float *buf = GC_NEWF(n);
  memcpy(buf, in, sizeof(float) * n);
  act_forward(buf, buf, n, a);
  snprintf(what, sizeof what, "%-11s fwd in place", act_name(a));
  gc_expect(memcmp(buf, out, sizeof(float) * n) == 0, what);
  memcpy(buf, R, sizeof(float) * n);
  act_backward(buf, buf, in, n, a);
  snprintf(what, sizeof what, "%-11s bwd in place", act_name(a));
  gc_expect(memcmp(buf, din, sizeof(float) * n) == 0, what);

  /* Break points and their neighbours, exact values. */
  const float pts[] = {-3.0f, 0.0f, 3.0f, 6.0f, -3.0001f, -2.9999f, -0.0001f, 0.0001f,
                       2.9999f, 3.0001f, 5.9999f, 6.0001f, -1e-30f, -0.0f};
  const int np = (int)(sizeof pts / sizeof pts[0]);
  float g[16], y[16], ones[16];
  double want[16], wy[16];
  for (int i = 0; i < np; i++) ones[i] = 1.0f, want[i] = ref_act_grad(pts[i], a), wy[i] = ref_act(pts[i], a);
  act_backward(g, ones, pts, (size_t)np, a);
  act_forward(y, pts, (size_t)np, a);
  snprintf(what, sizeof what, "%-11s grad at -3,0,3,6 and +-1e-4", act_name(a));
  gc_check(what, g, want, np, 1e-6, 1e-7);
  snprintf(what, sizeof what, "%-11s value at -3,0,3,6 and +-1e-4", act_name(a));
  gc_check(what, y, wy, np, 1e-6, 1e-7);

  free(in), free(out), free(R), free(din), free(t), free(buf), free(c.in), free(c.R);
}

int main(void) {
  gc_seed(2);
  for (int a = ACT_NONE; a <= ACT_HARDSIGMOID; a++) {
    run((act_kind)a, 1001);
    run((act_kind)a, 40003); /* threaded path */
  }
  gc_expect(!strcmp(act_name(ACT_HARDSWISH), "hardswish"), "act_name(ACT_HARDSWISH)");
  return gc_finish("test_op_act");
}
