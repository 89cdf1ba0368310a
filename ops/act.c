/* act.c - pointwise activations (relu, relu6, hardswish, hardsigmoid), forward and backward,
 * with PyTorch's formulas and its gradient values at the break points (see ops.h); the
 * divisions by 6 and 3 are multiplications by OPS_SIXTH and OPS_THIRD (within an ulp; a
 * division per element was 2% of an inference step). Branch-free select forms so GCC
 * vectorises every loop; memory bound, one pass each. */
#include <stddef.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

static inline float relu6f(float x) {
  float y = x > 0.0f ? x : 0.0f;
  return y < 6.0f ? y : 6.0f;
}

void act_forward(float *out, const float *in, size_t n, act_kind act) {
  long ln = (long)n;
  switch (act) {
    case ACT_NONE:
      if (out != in) {
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
        for (long i = 0; i < ln; i++) out[i] = in[i];
      }
      break;
    case ACT_RELU:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
      break;
    case ACT_RELU6:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) out[i] = relu6f(in[i]);
      break;
    case ACT_HARDSWISH:
      /* x * min(max(x + 3, 0), 6) / 6, in PyTorch's operation order. */
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) out[i] = in[i] * relu6f(in[i] + 3.0f) * OPS_SIXTH;
      break;
    case ACT_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) out[i] = relu6f(in[i] + 3.0f) * OPS_SIXTH;
      break;
  }
}

void act_backward(float *din, const float *dout, const float *in, size_t n, act_kind act) {
  long ln = (long)n;
  switch (act) {
    case ACT_NONE:
      if (din != dout) {
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
        for (long i = 0; i < ln; i++) din[i] = dout[i];
      }
      break;
    case ACT_RELU:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
      break;
    case ACT_RELU6:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) din[i] = (in[i] > 0.0f && in[i] < 6.0f) ? dout[i] : 0.0f;
      break;
    case ACT_HARDSWISH:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++) {
        float x = in[i], g = dout[i];
        float mid = g * (x * OPS_THIRD + 0.5f);
        din[i] = x < -3.0f ? 0.0f : (x <= 3.0f ? mid : g);
      }
      break;
    case ACT_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (ln >= OPS_PAR_MIN)
      for (long i = 0; i < ln; i++)
        din[i] = (in[i] > -3.0f && in[i] < 3.0f) ? dout[i] * OPS_SIXTH : 0.0f;
      break;
  }
}

const char *act_name(act_kind act) {
  switch (act) {
    case ACT_NONE: return "none";
    case ACT_RELU: return "relu";
    case ACT_RELU6: return "relu6";
    case ACT_HARDSWISH: return "hardswish";
    case ACT_HARDSIGMOID: return "hardsigmoid";
  }
  return "unknown";
}
