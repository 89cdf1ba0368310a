/* gradcheck.h - header-only helpers for the op tests (tests/test_op_*.c).
 *
 * The method: each test writes its own naive double-precision reference forward, checks the
 * float kernel's forward against it, takes L = sum(out * R) for a random R, computes dL/dx for
 * every input and parameter by central finite differences in double through the reference,
 * and checks the float backward (called with dout = R) against that. Tolerances are stated at
 * each call: |got - ref| <= atol + rtol*|ref| per element; the worst element is reported. */
#ifndef POLLEN_GRADCHECK_H
#define POLLEN_GRADCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t gc_rng = 0x9E3779B97F4A7C15ull;
static int gc_failures = 0;

static inline void gc_seed(uint64_t s) { gc_rng = s * 0x9E3779B97F4A7C15ull + 1; }

/* SplitMix64: tiny, seeded, good enough for test data. */
static inline uint64_t gc_next(void) {
  uint64_t z = (gc_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static inline double gc_uniform(double lo, double hi) {
  return lo + (hi - lo) * (double)(gc_next() >> 11) * (1.0 / 9007199254740992.0);
}
static inline void gc_fill(float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)gc_uniform(lo, hi);
}

static inline void *gc_alloc(size_t bytes) {
  void *p = calloc(bytes ? bytes : 1, 1);
  if (!p) {
    fprintf(stderr, "gradcheck: out of memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}
#define GC_NEWF(n) ((float *)gc_alloc(sizeof(float) * (size_t)(n)))
#define GC_NEWD(n) ((double *)gc_alloc(sizeof(double) * (size_t)(n)))

/* A float tensor's values as doubles (freshly allocated). */
static inline double *gc_to_double(const float *x, size_t n) {
  double *d = GC_NEWD(n);
  for (size_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

static inline double gc_dot(const double *a, const double *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h, in double; x is restored. */
typedef double (*gc_loss_fn)(void *ctx);
static inline void gc_fd(double *grad, double *x, size_t n, gc_loss_fn f, void *ctx, double h) {
  for (size_t i = 0; i < n; i++) {
    double x0 = x[i];
    x[i] = x0 + h;
    double lp = f(ctx);
    x[i] = x0 - h;
    double lm = f(ctx);
    x[i] = x0;
    grad[i] = (lp - lm) / (2.0 * h);
  }
}

/* Compares got (float) with ref (double); atol is scaled by max|ref| so one tolerance fits
 * tensors of any magnitude. Prints one line; counts a failure. Returns 1 when it passed. */
static inline int gc_check(const char *what, const float *got, const double *ref, size_t n,
                           double rtol, double atol_rel) {
  double maxref = 0.0;
  for (size_t i = 0; i < n; i++)
    if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
  double atol = atol_rel * (maxref > 1e-30 ? maxref : 1.0);
  double worst = -1.0, worst_err = 0.0;
  size_t wi = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)got[i] - ref[i]);
    double ratio = err / (atol + rtol * fabs(ref[i]));
    if (!(ratio <= 1.0)) bad = 1; /* also catches NaN */
    if (!(ratio <= worst)) {
      worst = ratio;
      worst_err = err;
      wi = i;
    }
  }
  if (n == 0) worst = 0.0;
  printf("%-4s %-44s n=%-6zu max|ref|=%-10.3g worst err=%.3g at [%zu] (got %.7g want %.7g) = %.3g of tol\n",
         bad ? "FAIL" : "ok", what, n, maxref, worst_err, wi, n ? (double)got[wi] : 0.0,
         n ? ref[wi] : 0.0, worst);
  if (bad) gc_failures++;
  return !bad;
}

/* A plain condition, printed the same way. */
static inline int gc_expect(int cond, const char *what) {
  printf("%-4s %s\n", cond ? "ok" : "FAIL", what);
  if (!cond) gc_failures++;
  return cond;
}

static inline int gc_finish(const char *test) {
  if (gc_failures) {
    printf("%s: %d check(s) FAILED\n", test, gc_failures);
    return 1;
  }
  printf("%s: all checks passed\n", test);
  return 0;
}

#endif
