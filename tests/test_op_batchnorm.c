/* test_op_batchnorm.c - batch norm (training mode) forward/backward against a naive double
 * reference and double finite differences (method in gradcheck.h); running statistics against
 * PyTorch's update formula (unbiased variance); eval mode against its formula. Inputs carry a
 * per-channel offset so a mean-less variance formula would also be caught. */
#include "ops/ops.h"
#include "tests/gradcheck.h"
#include "tests/op_ref.h"

typedef struct {
  int M, C;
  double eps;
  double *in, *gamma, *beta, *R, *out, *mean, *var;
} ctx_t;

static void ref_forward(ctx_t *c) {
  ref_batchnorm(c->out, c->mean, c->var, c->in, c->gamma, c->beta, c->M, c->C, c->eps);
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->M * c->C);
}

static void run(int M, int C, double offset, int fd) {
  const float eps = 1e-3f, mom = 0.01f; /* MobileNetV3's BN settings */
  size_t n = (size_t)M * C;
  float *in = GC_NEWF(n), *out = GC_NEWF(n), *R = GC_NEWF(n), *din = GC_NEWF(n);
  float *gamma = GC_NEWF(C), *beta = GC_NEWF(C), *sm = GC_NEWF(C), *sr = GC_NEWF(C);
  float *rm = GC_NEWF(C), *rv = GC_NEWF(C), *rm0 = GC_NEWF(C), *rv0 = GC_NEWF(C);
  float *dg = GC_NEWF(C), *db = GC_NEWF(C), *dg0 = GC_NEWF(C), *db0 = GC_NEWF(C);
  for (int m = 0; m < M; m++)
    for (int ch = 0; ch < C; ch++)
      in[(size_t)m * C + ch] = (float)(offset * (ch % 3) + gc_uniform(-1, 1) * (1 + ch % 4));
  gc_fill(gamma, C, 0.5, 1.5);
  gc_fill(beta, C, -1, 1);
  gc_fill(R, n, -1, 1);
  gc_fill(rm0, C, -1, 1);
  gc_fill(rv0, C, 0.5, 2);
  gc_fill(dg0, C, -1, 1);
  gc_fill(db0, C, -1, 1);
  memcpy(rm, rm0, sizeof(float) * C);
  memcpy(rv, rv0, sizeof(float) * C);
  ctx_t c = {M, C, eps, gc_to_double(in, n), gc_to_double(gamma, C), gc_to_double(beta, C),
             gc_to_double(R, n), GC_NEWD(n), GC_NEWD(C), GC_NEWD(C)};
  char name[96], what[200];
  snprintf(name, sizeof name, "M%d C%d offset%g", M, C, offset);

  batchnorm_forward_train(out, sm, sr, rm, rv, in, gamma, beta, M, C, eps, mom);
  ref_forward(&c);
  snprintf(what, sizeof what, "bn fwd train     %s", name);
  gc_check(what, out, c.out, n, 1e-4, 1e-5);
  double *t = GC_NEWD(n > (size_t)C ? n : (size_t)C);
  snprintf(what, sizeof what, "bn save_mean     %s", name);
  gc_check(what, sm, c.mean, C, 1e-5, 1e-6);
  for (int ch = 0; ch < C; ch++) t[ch] = 1.0 / sqrt(c.var[ch] + eps);
  snprintf(what, sizeof what, "bn save_rstd     %s", name);
  gc_check(what, sr, t, C, 1e-4, 1e-6);
  for (int ch = 0; ch < C; ch++) t[ch] = (1 - mom) * rm0[ch] + mom * c.mean[ch];
  snprintf(what, sizeof what, "bn running_mean  %s", name);
  gc_check(what, rm, t, C, 1e-5, 1e-6);
  for (int ch = 0; ch < C; ch++)
    t[ch] = (1 - mom) * rv0[ch] + mom * c.var[ch] * M / (M - 1.0); /* unbiased, as PyTorch */
  snprintf(what, sizeof what, "bn running_var   %s", name);
  gc_check(what, rv, t, C, 1e-5, 1e-6);

  /* NULL running stats: same output, no crash. */
  float *out2 = GC_NEWF(n);
  batchnorm_forward_train(out2, sm, sr, NULL, NULL, in, gamma, beta, M, C, eps, mom);
  snprintf(what, sizeof what, "bn fwd train, NULL running stats  %s", name);
  gc_expect(memcmp(out, out2, sizeof(float) * n) == 0, what);

  /* Eval mode: (x - running_mean)/sqrt(running_var + eps)*gamma + beta. */
  batchnorm_forward_eval(out2, in, gamma, beta, rm0, rv0, M, C, eps);
  for (size_t i = 0; i < n; i++) {
    int ch = (int)(i % C);
    t[i] = (c.in[i] - rm0[ch]) / sqrt((double)rv0[ch] + eps) * gamma[ch] + beta[ch];
  }
  snprintf(what, sizeof what, "bn fwd eval      %s", name);
  gc_check(what, out2, t, n, 1e-4, 1e-5);

  memcpy(dg, dg0, sizeof(float) * C);
  memcpy(db, db0, sizeof(float) * C);
  batchnorm_backward(din, dg, db, R, in, sm, sr, gamma, M, C);
  for (int ch = 0; ch < C; ch++) dg[ch] -= dg0[ch], db[ch] -= db0[ch];
  if (fd) {
    gc_fd(t, c.in, n, loss, &c, 1e-4);
    snprintf(what, sizeof what, "bn din vs FD     %s", name);
    gc_check(what, din, t, n, 1e-3, 1e-4);
  }
  /* The closed form in double (checked against FD above on the small shapes). */
  ref_batchnorm_din(t, c.R, c.in, c.gamma, M, C, eps);
  snprintf(what, sizeof what, "bn din vs formula %s", name);
  gc_check(what, din, t, n, 1e-3, 1e-4);
  gc_fd(t, c.gamma, C, loss, &c, 1e-4);
  snprintf(what, sizeof what, "bn dgamma        %s", name);
  gc_check(what, dg, t, C, 1e-3, 1e-4);
  gc_fd(t, c.beta, C, loss, &c, 1e-4);
  snprintf(what, sizeof what, "bn dbeta         %s", name);
  gc_check(what, db, t, C, 1e-3, 1e-4);

  /* din may alias dout. */
  float *buf = GC_NEWF(n);
  memcpy(buf, R, sizeof(float) * n);
  batchnorm_backward(buf, dg, db, buf, in, sm, sr, gamma, M, C);
  int same = 1;
  for (size_t i = 0; i < n; i++) same &= fabsf(buf[i] - din[i]) <= 1e-6f * (1 + fabsf(din[i]));
  snprintf(what, sizeof what, "bn backward with din == dout  %s", name);
  gc_expect(same, what);

  free(in), free(out), free(R), free(din), free(gamma), free(beta), free(sm), free(sr), free(rm),
      free(rv), free(rm0), free(rv0), free(dg), free(db), free(dg0), free(db0), free(out2),
      free(t), free(buf);
  free(c.in), free(c.gamma), free(c.beta), free(c.R), free(c.out), free(c.mean), free(c.var);
}

int main(void) {
  gc_seed(3);
  run(2 * 7 * 9, 13, 0.0, 1);
  run(5, 3, 10.0, 1);
  run(1 * 3 * 5, 16, 100.0, 1);
  run(32 * 7 * 7, 40, 5.0, 0); /* threaded, chunked sums; FD on params only (cost) */
  return gc_finish("test_op_batchnorm");
}
