/* test_op_residual.c - residual add: forward against a double sum, backward against double
 * finite differences of L = sum((a+b)*R) w.r.t. a (accumulated into da) and b. */
#include "ops/ops.h"
#include "tests/gradcheck.h"

int main(void) {
  gc_seed(6);
  const size_t sizes[] = {1, 13, 7 * 9 * 3, 70001};
  for (int k = 0; k < 4; k++) {
    size_t n = sizes[k];
    float *a = GC_NEWF(n), *b = GC_NEWF(n), *out = GC_NEWF(n), *R = GC_NEWF(n), *da = GC_NEWF(n);
    float *da0 = GC_NEWF(n);
    double *t = GC_NEWD(n);
    gc_fill(a, n, -1, 1);
    gc_fill(b, n, -1, 1);
    gc_fill(R, n, -1, 1);
    gc_fill(da0, n, -1, 1);
    char what[120];
    residual_forward(out, a, b, n);
    for (size_t i = 0; i < n; i++) t[i] = (double)a[i] + (double)b[i];
    snprintf(what, sizeof what, "residual fwd n=%zu", n);
    gc_check(what, out, t, n, 1e-6, 1e-7);
    /* dL/da_i by central differences of (a_i + b_i)*R_i, in double */
    for (size_t i = 0; i < n; i++) {
      double h = 1e-3, x = a[i];
      t[i] = (((x + h) + b[i]) * R[i] - ((x - h) + b[i]) * R[i]) / (2 * h) + da0[i];
    }
    memcpy(da, da0, sizeof(float) * n);
    residual_backward(da, R, n);
    snprintf(what, sizeof what, "residual da (accumulated) n=%zu", n);
    gc_check(what, da, t, n, 1e-5, 1e-6);
    /* in place: out == a */
    memcpy(da, a, sizeof(float) * n);
    residual_forward(da, da, b, n);
    snprintf(what, sizeof what, "residual fwd in place n=%zu", n);
    gc_expect(memcmp(da, out, sizeof(float) * n) == 0, what);
    free(a), free(b), free(out), free(R), free(da), free(da0), free(t);
  }
  return gc_finish("test_op_residual");
}
