/* test_op_batchnorm_act.c - the fused batch norm + activation (training and eval forward,
 * backward that recomputes the BN output) for every activation kind:
 *   - against a naive double reference and double finite differences (gradcheck.h);
 *   - bit for bit against the unfused composition it replaces (batchnorm_forward_train,
 *     act_forward / act_backward, batchnorm_backward), which the model relied on before;
 *   - din aliasing dout, and 1 versus 2 threads, bit for bit.
 * Inputs are spread so the BN output crosses every activation break point (0, 6, +-3). */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"
#include "tests/op_ref.h"

typedef struct {
  int M, C;
  act_kind act;
  double eps;
  double *in, *gamma, *beta, *R, *y, *out;
} ctx_t;

/* y = the BN output, kept for the activation's gradient. */
static void ref_forward(ctx_t *c) {
  ref_batchnorm(c->y, NULL, NULL, c->in, c->gamma, c->beta, c->M, c->C, c->eps);
  for (size_t i = 0; i < (size_t)c->M * c->C; i++) c->out[i] = ref_act(c->y[i], c->act);
}
static double loss(void *p) {
  ctx_t *c = p;
  ref_forward(c);
  return gc_dot(c->out, c->R, (size_t)c->M * c->C);
}

static int same_bits(const float *a, const float *b, size_t n) {
  return memcmp(a, b, sizeof(float) * n) == 0;
}

static void run(int M, int C, act_kind act, int fd) {
  const float eps = 1e-3f, mom = 0.01f;
  size_t n = (size_t)M * C;
  float *in = GC_NEWF(n), *out = GC_NEWF(n), *R = GC_NEWF(n), *din = GC_NEWF(n);
  float *ref_out = GC_NEWF(n), *ref_din = GC_NEWF(n), *tmp = GC_NEWF(n);
  float *gamma = GC_NEWF(C), *beta = GC_NEWF(C), *sm = GC_NEWF(C), *sr = GC_NEWF(C);
  float *sm2 = GC_NEWF(C), *sr2 = GC_NEWF(C);
  float *rm = GC_NEWF(C), *rv = GC_NEWF(C), *rm2 = GC_NEWF(C), *rv2 = GC_NEWF(C);
  float *dg = GC_NEWF(C), *db = GC_NEWF(C), *dg2 = GC_NEWF(C), *db2 = GC_NEWF(C);
  float *dg0 = GC_NEWF(C), *db0 = GC_NEWF(C);
  for (int m = 0; m < M; m++)
    for (int ch = 0; ch < C; ch++)
      in[(size_t)m * C + ch] = (float)(3.0 * (ch % 3) + gc_uniform(-1, 1) * (1 + ch % 4));
  gc_fill(gamma, C, 1.0, 3.0); /* BN outputs spread over about [-6, 8]: every break point */
  gc_fill(beta, C, -1, 2);
  gc_fill(R, n, -1, 1);
  gc_fill(rm, C, -1, 1);
  gc_fill(rv, C, 0.5, 2);
  memcpy(rm2, rm, sizeof(float) * C);
  memcpy(rv2, rv, sizeof(float) * C);
  gc_fill(dg, C, -1, 1);
  gc_fill(db, C, -1, 1);
  memcpy(dg2, dg, sizeof(float) * C);
  memcpy(db2, db, sizeof(float) * C);
  memcpy(dg0, dg, sizeof(float) * C);
  memcpy(db0, db, sizeof(float) * C);
  ctx_t c = {M, C, act, eps, gc_to_double(in, n), gc_to_double(gamma, C), gc_to_double(beta, C),
             gc_to_double(R, n), GC_NEWD(n), GC_NEWD(n)};
  char name[96], what[200];
  snprintf(name, sizeof name, "%-11s M%d C%d", act_name(act), M, C);

  /* Forward: the reference, then the unfused composition bit for bit. */
  batchnorm_act_forward_train(out, sm, sr, rm, rv, in, gamma, beta, M, C, eps, mom, act);
  ref_forward(&c);
  snprintf(what, sizeof what, "bnact fwd train vs double  %s", name);
  gc_check(what, out, c.out, n, 1e-4, 1e-5);
  batchnorm_forward_train(ref_out, sm2, sr2, rm2, rv2, in, gamma, beta, M, C, eps, mom);
  act_forward(tmp, ref_out, n, act); /* ref_out keeps the BN output for act_backward */
  snprintf(what, sizeof what, "bnact fwd train == bn;act bits  %s", name);
  gc_expect(same_bits(out, tmp, n) && same_bits(sm, sm2, C) && same_bits(sr, sr2, C) &&
                same_bits(rm, rm2, C) && same_bits(rv, rv2, C),
            what);

  /* Eval forward. */
  batchnorm_act_forward_eval(din, in, gamma, beta, rm, rv, M, C, eps, act);
  batchnorm_forward_eval(tmp, in, gamma, beta, rm, rv, M, C, eps);
  act_forward(tmp, tmp, n, act);
  snprintf(what, sizeof what, "bnact fwd eval == bn;act bits  %s", name);
  gc_expect(same_bits(din, tmp, n), what);
  double *t = GC_NEWD(n);
  for (size_t i = 0; i < n; i++) {
    int ch = (int)(i % C);
    t[i] = ref_act((c.in[i] - rm[ch]) / sqrt((double)rv[ch] + eps) * gamma[ch] + beta[ch], act);
  }
  snprintf(what, sizeof what, "bnact fwd eval vs double  %s", name);
  gc_check(what, din, t, n, 1e-4, 1e-5);

  /* Backward: bits of the unfused composition, then the double closed form and FD. */
  batchnorm_act_backward(din, dg, db, R, in, sm, sr, gamma, beta, M, C, act);
  act_backward(tmp, R, ref_out, n, act);
  batchnorm_backward(ref_din, dg2, db2, tmp, in, sm, sr, gamma, M, C);
  snprintf(what, sizeof what, "bnact bwd == act;bn bits  %s", name);
  gc_expect(same_bits(din, ref_din, n) && same_bits(dg, dg2, C) && same_bits(db, db2, C), what);
  for (int ch = 0; ch < C; ch++) dg0[ch] = dg[ch] - dg0[ch], db0[ch] = db[ch] - db0[ch];
  {
    /* dy = act'(y) * R, then batch norm's closed form. */
    double *dy = GC_NEWD(n);
    ref_forward(&c);
    for (size_t i = 0; i < n; i++) dy[i] = ref_act_grad(c.y[i], act) * c.R[i];
    ref_batchnorm_din(t, dy, c.in, c.gamma, M, C, eps);
    free(dy);
  }
  snprintf(what, sizeof what, "bnact din vs formula  %s", name);
  gc_check(what, din, t, n, 1e-3, 1e-4);
  if (fd) {
    /* A small step: the reference is double, and a kink must not fall inside the step. */
    gc_fd(t, c.in, n, loss, &c, 1e-6);
    snprintf(what, sizeof what, "bnact din vs FD  %s", name);
    gc_check(what, din, t, n, 1e-3, 1e-4);
    gc_fd(t, c.gamma, C, loss, &c, 1e-6);
    snprintf(what, sizeof what, "bnact dgamma vs FD  %s", name);
    gc_check(what, dg0, t, C, 1e-3, 1e-4);
    gc_fd(t, c.beta, C, loss, &c, 1e-6);
    snprintf(what, sizeof what, "bnact dbeta vs FD  %s", name);
    gc_check(what, db0, t, C, 1e-3, 1e-4);
  }

  /* din may alias dout; and 1 versus 2 threads give the same bits. */
  memcpy(tmp, R, sizeof(float) * n);
  memcpy(dg2, dg, sizeof(float) * C);
  memcpy(db2, db, sizeof(float) * C);
  batchnorm_act_backward(tmp, dg2, db2, tmp, in, sm, sr, gamma, beta, M, C, act);
  snprintf(what, sizeof what, "bnact bwd with din == dout, same bits  %s", name);
  gc_expect(same_bits(tmp, din, n), what);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  batchnorm_act_forward_train(tmp, sm2, sr2, NULL, NULL, in, gamma, beta, M, C, eps, mom, act);
  int same1 = same_bits(tmp, out, n) && same_bits(sm2, sm, C) && same_bits(sr2, sr, C);
  memset(dg2, 0, sizeof(float) * C), memset(db2, 0, sizeof(float) * C);
  batchnorm_act_backward(tmp, dg2, db2, R, in, sm, sr, gamma, beta, M, C, act);
  omp_set_num_threads(2);
  memset(dg0, 0, sizeof(float) * C), memset(db0, 0, sizeof(float) * C); /* FD is done with them */
  batchnorm_act_backward(ref_din, dg0, db0, R, in, sm, sr, gamma, beta, M, C, act);
  omp_set_num_threads(saved);
  snprintf(what, sizeof what, "bnact 1 thread == 2 threads, same bits  %s", name);
  gc_expect(same1 && same_bits(tmp, ref_din, n) && same_bits(dg2, dg0, C) && same_bits(db2, db0, C),
            what);

  free(in), free(out), free(R), free(din), free(ref_out), free(ref_din), free(tmp), free(gamma),
      free(beta), free(sm), free(sr), free(sm2), free(sr2), free(rm), free(rv), free(rm2),
      free(rv2), free(dg), free(db), free(dg2), free(db2), free(dg0), free(db0), free(t);
  free(c.in), free(c.gamma), free(c.beta), free(c.R), free(c.y), free(c.out);
}

int main(void) {
  gc_seed(11);
  const act_kind acts[] = {ACT_NONE, ACT_RELU, ACT_RELU6, ACT_HARDSWISH, ACT_HARDSIGMOID};
  for (int a = 0; a < 5; a++) {
    run(2 * 5 * 7, 13, acts[a], 1);
    run(1 * 3 * 5, 16, acts[a], 1);
    run(32 * 7 * 7, 40, acts[a], 0); /* threaded, several fixed chunks */
  }
  return gc_finish("test_op_batchnorm_act");
}
