/* test_model_threads.c - a training step (forward with batch statistics, backward) and an
 * eval forward give the same bits with 1 and with 2 threads, for every architecture: the
 * trainer's bit-identical resume on a different thread count depends on it. Covers every
 * kernel path the shapes select (direct stem for Cout 8/16/32, pointwise GEMM kernels, fused
 * BN + activation, depthwise interior blocks) with more rows than one reduction chunk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "worker/model.h"

static int failures;

typedef struct {
  float *grads, *stats, *logits, *eval_logits;
  float loss;
} snapshot;

static void step(const model_config *cfg, int threads, int batch, int size, const float *images,
                 const int *labels, snapshot *s) {
  threads_set(threads);
  model m;
  model_init(&m, cfg, 42);
  model_prepare(&m, batch, size);
  m.dropout_seed = 7;
  model_zero_grads(&m);
  s->loss = model_forward(&m, images, labels, batch, 1, 0.1f);
  model_backward(&m, labels, batch, 0.1f);
  size_t nl = (size_t)batch * cfg->num_classes;
  s->grads = malloc(m.n_params * sizeof(float));
  s->stats = malloc(m.n_stats * sizeof(float));
  s->logits = malloc(nl * sizeof(float));
  s->eval_logits = malloc(nl * sizeof(float));
  if (!s->grads || !s->stats || !s->logits || !s->eval_logits) {
    printf("FAIL out of memory\n");
    exit(1);
  }
  memcpy(s->grads, m.grads, m.n_params * sizeof(float));
  memcpy(s->stats, m.stats, m.n_stats * sizeof(float));
  memcpy(s->logits, model_logits(&m), nl * sizeof(float));
  model_forward(&m, images, NULL, batch, 0, 0.0f);
  memcpy(s->eval_logits, model_logits(&m), nl * sizeof(float));
  model_free(&m);
}

static void check_arch(const char *arch, double width, int batch, int size) {
  model_config cfg = {(model_arch)model_arch_parse(arch), width, 5, 0.2f, 0};
  size_t npix = (size_t)batch * size * size * 3;
  float *images = malloc(npix * sizeof(float));
  int labels[64];
  if (!images) exit(1);
  for (size_t i = 0; i < npix; i += 4) {
    float u[4];
    philox_uniform4(99, (uint32_t)i, 0, 0, u);
    for (size_t j = 0; j < 4 && i + j < npix; j++) images[i + j] = 2.0f * u[j] - 1.0f;
  }
  for (int i = 0; i < batch; i++) labels[i] = i % 5;

  snapshot a, b;
  step(&cfg, 1, batch, size, images, labels, &a);
  step(&cfg, 2, batch, size, images, labels, &b);
  model m;
  model_init(&m, &cfg, 42);
  size_t np = m.n_params, ns = m.n_stats, nl = (size_t)batch * 5;
  model_free(&m);
  int same = a.loss == b.loss && !memcmp(a.grads, b.grads, np * sizeof(float)) &&
             !memcmp(a.stats, b.stats, ns * sizeof(float)) &&
             !memcmp(a.logits, b.logits, nl * sizeof(float)) &&
             !memcmp(a.eval_logits, b.eval_logits, nl * sizeof(float));
  printf("%-4s %s width %g, batch %d, %dx%d: loss, logits, gradients, BN statistics and eval "
         "logits identical with 1 and 2 threads\n",
         same ? "ok" : "FAIL", arch, width, batch, size, size);
  if (!same) failures++;
  free(a.grads), free(a.stats), free(a.logits), free(a.eval_logits);
  free(b.grads), free(b.stats), free(b.logits), free(b.eval_logits);
  free(images);
}

int main(void) {
  log_set_quiet(1);
  check_arch("mnv3-small", 1.0, 6, 96);  /* stem Cout 16 */
  check_arch("mnv3-small", 0.25, 4, 64); /* stem Cout 8 */
  check_arch("mnv3-large", 0.5, 4, 64);
  check_arch("mnv2", 1.0, 2, 64); /* stem Cout 32 */
  threads_set(0);
  if (failures) {
    printf("test_model_threads: %d check(s) FAILED\n", failures);
    return 1;
  }
  printf("test_model_threads: all checks passed\n");
  return 0;
}
