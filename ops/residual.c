/* residual.c - the skip connection of an inverted-residual block: out = a + b; the backward
 * accumulates dout into the skip branch's gradient (the other branch reuses dout as is).
 * Stochastic depth scales the residual branch per sample before the sum. */
#include <stddef.h>
#include <stdint.h>

#include "base/core.h"

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

/* Sample n's branch is kept iff u >= p, u = lane 0 of philox4x32(counter = {n, 0, 0, 0},
 * key = seed) from its 24 high bits (ops/cuda/residual.cu draws the same); a kept branch is
 * scaled by 1/(1-p) so the expected sum is the plain one (torchvision's StochasticDepth). */
float drop_path_scale(int n, float p, uint64_t seed) {
  if (p <= 0.0f) return 1.0f;
  if (p >= 1.0f) return 0.0f;
  float u[4];
  philox_uniform4(seed, (uint32_t)n, 0, 0, u);
  return u[0] >= p ? 1.0f / (1.0f - p) : 0.0f;
}

void drop_path_forward(float *out, const float *branch, const float *skip, int N, size_t per_image,
                       float p, uint64_t seed) {
  long total = (long)N * (long)per_image;
#pragma omp parallel for schedule(static) if (total >= OPS_PAR_MIN)
  for (int n = 0; n < N; n++) {
    const float s = drop_path_scale(n, p, seed);
    const size_t at = (size_t)n * per_image;
    for (size_t i = at; i < at + per_image; i++) out[i] = branch[i] * s + skip[i];
  }
}

void drop_path_backward(float *dbranch, const float *dout, int N, size_t per_image, float p,
                        uint64_t seed) {
  long total = (long)N * (long)per_image;
#pragma omp parallel for schedule(static) if (total >= OPS_PAR_MIN)
  for (int n = 0; n < N; n++) {
    const float s = drop_path_scale(n, p, seed);
    const size_t at = (size_t)n * per_image;
    for (size_t i = at; i < at + per_image; i++) dbranch[i] = dout[i] * s;
  }
}
