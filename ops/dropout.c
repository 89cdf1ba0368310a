/* dropout.c - inverted dropout whose mask is regenerated, not stored: element i is kept iff
 * u_i >= p, where u_i is lane i%4 of philox4x32(counter = i/4, key = seed) turned into a
 * float in [0,1) from its 24 high bits. A pure function of (seed, i): backward rebuilds the
 * same mask and the thread count cannot change it. */
#include <stddef.h>
#include <stdint.h>

#include "base/core.h"
#include "ops/ops.h"
#include "ops/ops_simd.h"

/* out = in * mask / (1-p); used by forward and backward alike. */
static void dropout_apply(float *out, const float *in, size_t n, float p, uint64_t seed) {
  if (p <= 0.0f) {
    if (out != in)
      for (size_t i = 0; i < n; i++) out[i] = in[i];
    return;
  }
  if (p >= 1.0f) { /* everything dropped; 1/(1-p) would be infinite */
    for (size_t i = 0; i < n; i++) out[i] = 0.0f;
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  long groups = (long)((n + 3) / 4);
#pragma omp parallel for schedule(static) if (groups >= OPS_PAR_MIN / 4)
  for (long g = 0; g < groups; g++) {
    uint64_t ctr64 = (uint64_t)g;
    philox_ctr c = {{(uint32_t)ctr64, (uint32_t)(ctr64 >> 32), 0u, 0u}};
    philox_ctr r = philox4x32(c, seed);
    size_t base = (size_t)g * 4;
    for (int l = 0; l < 4 && base + (size_t)l < n; l++) {
      float u = (float)(r.v[l] >> 8) * (1.0f / 16777216.0f);
      out[base + l] = u >= p ? in[base + l] * scale : 0.0f;
    }
  }
}

void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed) {
  dropout_apply(out, in, n, p, seed);
}

void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t seed) {
  dropout_apply(din, dout, n, p, seed);
}
