/* test_op_dropout.c - dropout: same seed same mask, another seed another mask, kept fraction
 * ~ 1-p, kept values scaled by 1/(1-p), backward applies the very mask of the forward,
 * identical results with 1 and 2 threads, p = 0 is the identity, in-place use. */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

int main(void) {
  gc_seed(8);
  const size_t n = 100003; /* odd: the last Philox group is partial */
  const float p = 0.2f;
  float *x = GC_NEWF(n), *a = GC_NEWF(n), *b = GC_NEWF(n), *c = GC_NEWF(n), *g = GC_NEWF(n);
  float *dx = GC_NEWF(n);
  gc_fill(x, n, 0.5, 1.5); /* never zero: a zero output means dropped */
  gc_fill(g, n, 0.5, 1.5);
  char what[160];

  dropout_forward(a, x, n, p, 1234);
  dropout_forward(b, x, n, p, 1234);
  gc_expect(memcmp(a, b, sizeof(float) * n) == 0, "dropout same seed -> same output");
  dropout_forward(c, x, n, p, 1235);
  size_t differ = 0, kept = 0, badscale = 0;
  for (size_t i = 0; i < n; i++) {
    differ += (a[i] == 0) != (c[i] == 0);
    if (a[i] != 0) {
      kept++;
      badscale += fabs((double)a[i] - (double)x[i] / (1.0 - p)) > 1e-6 * fabs(a[i]);
    }
  }
  double frac = (double)kept / n, sd = sqrt(p * (1 - p) / n);
  snprintf(what, sizeof what, "dropout other seed -> other mask (%zu of %zu differ)", differ, n);
  gc_expect(differ > n / 10, what);
  snprintf(what, sizeof what, "dropout kept fraction %.4f ~ 1-p = %.2f (5 sigma = %.4f)", frac,
           1 - p, 5 * sd);
  gc_expect(fabs(frac - (1 - p)) < 5 * sd, what);
  snprintf(what, sizeof what, "dropout kept values scaled by 1/(1-p) (%zu wrong)", badscale);
  gc_expect(badscale == 0, what);

  dropout_backward(dx, g, n, p, 1234);
  size_t mism = 0;
  for (size_t i = 0; i < n; i++) {
    double want = a[i] != 0 ? (double)g[i] / (1.0 - p) : 0.0;
    mism += fabs(dx[i] - want) > 1e-6 * fabs(want);
  }
  snprintf(what, sizeof what, "dropout backward uses the forward's mask (%zu mismatches)", mism);
  gc_expect(mism == 0, what);

  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  dropout_forward(b, x, n, p, 1234);
  omp_set_num_threads(2);
  dropout_forward(c, x, n, p, 1234);
  omp_set_num_threads(saved);
  gc_expect(!memcmp(a, b, sizeof(float) * n) && !memcmp(a, c, sizeof(float) * n),
            "dropout 1 thread == 2 threads == default");

  /* Mask bit of element i depends on (seed, i) only: a prefix of the tensor agrees. */
  dropout_forward(b, x, 4097, p, 1234);
  gc_expect(!memcmp(a, b, sizeof(float) * 4097), "dropout mask is a function of (seed, index)");

  dropout_forward(b, x, n, 0.0f, 99);
  gc_expect(!memcmp(b, x, sizeof(float) * n), "dropout p=0 is the identity");
  memcpy(b, x, sizeof(float) * n);
  dropout_forward(b, b, n, p, 1234);
  gc_expect(!memcmp(a, b, sizeof(float) * n), "dropout in place (out == in)");
  memcpy(b, g, sizeof(float) * n);
  dropout_backward(b, b, n, p, 1234);
  gc_expect(!memcmp(dx, b, sizeof(float) * n), "dropout backward in place (din == dout)");

  free(x), free(a), free(b), free(c), free(g), free(dx);
  return gc_finish("test_op_dropout");
}
