/* op_ref.h - naive double-precision references shared by several op tests (the method is in
 * gradcheck.h): activations with PyTorch's gradients, and batch norm in training mode. */
#ifndef POLLEN_OP_REF_H
#define POLLEN_OP_REF_H

#include <math.h>

#include "ops/ops.h"

static inline double ref_act(double x, act_kind a) {
  double r6 = fmin(fmax(x + 3.0, 0.0), 6.0);
  switch (a) {
    case ACT_NONE: return x;
    case ACT_RELU: return fmax(x, 0.0);
    case ACT_RELU6: return fmin(fmax(x, 0.0), 6.0);
    case ACT_HARDSWISH: return x * r6 / 6.0;
    case ACT_HARDSIGMOID: return r6 / 6.0;
  }
  return 0.0;
}

/* PyTorch's gradient at x (the values ops.h promises, break points included). */
static inline double ref_act_grad(double x, act_kind a) {
  switch (a) {
    case ACT_NONE: return 1.0;
    case ACT_RELU: return x > 0 ? 1.0 : 0.0;
    case ACT_RELU6: return (x > 0 && x < 6) ? 1.0 : 0.0;
    case ACT_HARDSWISH: return x < -3 ? 0.0 : (x <= 3 ? x / 3.0 + 0.5 : 1.0);
    case ACT_HARDSIGMOID: return (x > -3 && x < 3) ? 1.0 / 6.0 : 0.0;
  }
  return 0.0;
}

/* Batch statistics of in [M][C] per channel (biased variance), and out = the normalised,
 * scaled and shifted input. mean and var may be NULL. */
static inline void ref_batchnorm(double *out, double *mean, double *var, const double *in,
                                 const double *gamma, const double *beta, int M, int C,
                                 double eps) {
  for (int ch = 0; ch < C; ch++) {
    double s = 0.0, q = 0.0;
    for (int m = 0; m < M; m++) s += in[(size_t)m * C + ch];
    double mu = s / M;
    for (int m = 0; m < M; m++) {
      double d = in[(size_t)m * C + ch] - mu;
      q += d * d;
    }
    if (mean) mean[ch] = mu;
    if (var) var[ch] = q / M;
    for (int m = 0; m < M; m++)
      out[(size_t)m * C + ch] = (in[(size_t)m * C + ch] - mu) / sqrt(q / M + eps) * gamma[ch] + beta[ch];
  }
}

/* The closed form of batch norm's input gradient, from the output gradient dy:
 * din = rstd*gamma*(dy - mean(dy) - xhat*mean(dy*xhat)). */
static inline void ref_batchnorm_din(double *din, const double *dy, const double *in,
                                     const double *gamma, int M, int C, double eps) {
  for (int ch = 0; ch < C; ch++) {
    double s = 0.0, q = 0.0;
    for (int m = 0; m < M; m++) s += in[(size_t)m * C + ch];
    double mu = s / M;
    for (int m = 0; m < M; m++) q += (in[(size_t)m * C + ch] - mu) * (in[(size_t)m * C + ch] - mu);
    double rstd = 1.0 / sqrt(q / M + eps), mdy = 0.0, mdyx = 0.0;
    for (int m = 0; m < M; m++) {
      size_t i = (size_t)m * C + ch;
      mdy += dy[i] / M;
      mdyx += dy[i] * (in[i] - mu) * rstd / M;
    }
    for (int m = 0; m < M; m++) {
      size_t i = (size_t)m * C + ch;
      din[i] = rstd * gamma[ch] * (dy[i] - mdy - (in[i] - mu) * rstd * mdyx);
    }
  }
}

#endif
