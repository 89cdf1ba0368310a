/* test_precise_bn.c - model_precise_bn against its reference semantics
 * (torch.optim.swa_utils.update_bn): after K batches every BN layer's running mean and
 * variance are the plain average of the K batches' own statistics, computed here directly
 * (one train-mode forward per batch with momentum 1, which leaves exactly that batch's mean
 * and unbiased variance); the weights, the momentum and nothing else change; the result
 * does not depend on the thread count; and stochastic depth does not enter it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "tests/check.h"
#include "worker/model.h"

enum { BATCHES = 3, BATCH = 4, SIZE = 32 };

typedef struct {
  const float *all; /* BATCHES x BATCH images */
  int next;
} feed;

static size_t batch_floats(void) { return (size_t)BATCH * SIZE * SIZE * 3; }

static int next_batch(void *ctx, float *images) {
  feed *f = ctx;
  if (f->next == BATCHES) return 0;
  memcpy(images, f->all + (size_t)f->next++ * batch_floats(), batch_floats() * sizeof(float));
  return BATCH;
}

static model make_model(int threads, float drop_path) {
  model_config cfg = {(model_arch)model_arch_parse("mnv3-small"), 0.35, 5, 0.2f, drop_path};
  model m;
  threads_set(threads);
  model_init(&m, &cfg, 42);
  model_prepare(&m, BATCH, SIZE);
  return m;
}

/* The running statistics after model_precise_bn over the batches, with `threads` threads. */
static float *precise(const float *all, int threads, float drop_path, uint64_t *params_hash, float *momentum) {
  model m = make_model(threads, drop_path);
  /* Statistics from earlier training must not leak in: start from something else. */
  for (size_t i = 0; i < m.n_stats; i++) m.stats[i] = 7.0f;
  uint64_t before = model_hash_params(&m);
  float *images = xmalloc(batch_floats() * sizeof(float));
  feed f = {all, 0};
  model_precise_bn(&m, next_batch, &f, images);
  CHECK(f.next == BATCHES, "every batch used: %d", f.next);
  *params_hash = model_hash_params(&m);
  CHECK(*params_hash == before, "the weights are untouched");
  *momentum = m.bn_momentum;
  float *out = xmalloc(m.n_stats * sizeof(float));
  memcpy(out, m.stats, m.n_stats * sizeof(float));
  free(images);
  model_free(&m);
  return out;
}

int main(void) {
  log_set_quiet(1);
  float *all = xmalloc(BATCHES * batch_floats() * sizeof(float));
  for (size_t i = 0; i < BATCHES * batch_floats(); i += 4) {
    float u[4];
    philox_uniform4(7, (uint32_t)i, 0, 0, u);
    /* Each batch shifted differently, so batch statistics differ and an average is a real one. */
    float shift = 0.3f * (float)(i / batch_floats());
    for (size_t j = 0; j < 4; j++) all[i + j] = 2.0f * u[j] - 1.0f + shift;
  }

  /* Direct average: each batch's own statistics, summed and divided. */
  model m = make_model(1, 0.0f);
  float momentum_trained = m.bn_momentum;
  double *sum = xcalloc(m.n_stats, sizeof *sum);
  for (int b = 0; b < BATCHES; b++) {
    model_reset_bn_stats(&m);
    m.bn_momentum = 1.0f;
    model_forward(&m, all + (size_t)b * batch_floats(), NULL, BATCH, 1, 0.0f);
    for (size_t i = 0; i < m.n_stats; i++) sum[i] += m.stats[i];
  }
  size_t ns = m.n_stats;
  model_free(&m);

  uint64_t h1, h2;
  float mom1, mom2;
  float *got = precise(all, 1, 0.0f, &h1, &mom1);
  float *got2 = precise(all, 2, 0.0f, &h2, &mom2);
  /* The statistics are those of the network evaluation runs: no block dropped. */
  float *dropping = precise(all, 1, 0.6f, &h2, &mom2);
  CHECK(!memcmp(got, dropping, ns * sizeof(float)), "precise BN with stochastic depth = without");
  double worst = 0;
  for (size_t i = 0; i < ns; i++) {
    double want = sum[i] / BATCHES, err = fabs(got[i] - want) / (fabs(want) + 1e-3);
    if (err > worst) worst = err;
  }
  CHECK(worst < 1e-5, "precise BN = the plain average of the batches' statistics (worst relative error %.3g)", worst);
  CHECK(mom1 == momentum_trained && mom2 == momentum_trained, "momentum restored: %g", mom1);
  CHECK(!memcmp(got, got2, ns * sizeof(float)), "identical with 1 and 2 threads");
  printf("ok: precise BN over %d batches = direct average (worst relative error %.2g), weights untouched, "
         "thread-count independent\n", BATCHES, worst);
  free(got), free(got2), free(dropping), free(sum), free(all);
  return check_status();
}
