/* residual.c - the skip connection of an inverted-residual block: out = a + b; the backward
 * accumulates dout into the skip branch's gradient (the other branch reuses dout as is). */
#include <stddef.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

void residual_forward(float *out, const float *a, const float *b, size_t n) {
  long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
  for (long i = 0; i < ln; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, const float *dout, size_t n) {
  long ln = (long)n;
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
  for (long i = 0; i < ln; i++) da[i] += dout[i];
}
