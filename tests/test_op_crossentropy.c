/* test_op_crossentropy.c - softmax cross-entropy (mean over the batch) with and without label
 * smoothing, against a double reference written from PyTorch's definition
 * (target = (1-s)*onehot + s/K) and double finite differences of the loss. */
#include "ops/ops.h"
#include "tests/gradcheck.h"

typedef struct {
  int N, K;
  double s;
  double *x;
  const int *y;
} ctx_t;
static double ref_loss(void *p) {
  ctx_t *c = p;
  double total = 0.0;
  for (int n = 0; n < c->N; n++) {
    const double *x = c->x + (size_t)n * c->K;
    double z = 0.0;
    for (int k = 0; k < c->K; k++) z += exp(x[k]);
    for (int k = 0; k < c->K; k++) {
      double t = c->s / c->K + (k == c->y[n] ? 1.0 - c->s : 0.0);
      total -= t * (x[k] - log(z));
    }
  }
  return total / c->N;
}

static void run(int N, int K, float s, double scale) {
  size_t n = (size_t)N * K;
  float *x = GC_NEWF(n), *p = GC_NEWF(n), *dx = GC_NEWF(n);
  int *y = gc_alloc(sizeof(int) * N);
  gc_fill(x, n, -scale, scale);
  for (int i = 0; i < N; i++) y[i] = (int)(gc_next() % (uint64_t)K);
  ctx_t c = {N, K, s, gc_to_double(x, n), y};
  char what[160];
  float L = crossentropy_forward(p, x, y, N, K, s);
  double want = ref_loss(&c);
  snprintf(what, sizeof what, "crossentropy loss  N%d K%d s%.2f logit scale %g", N, K, s, scale);
  gc_check(what, &L, &want, 1, 1e-5, 1e-7);
  double *t = GC_NEWD(n);
  for (int i = 0; i < N; i++) {
    double z = 0.0;
    for (int k = 0; k < K; k++) z += exp(c.x[(size_t)i * K + k]);
    for (int k = 0; k < K; k++) t[(size_t)i * K + k] = exp(c.x[(size_t)i * K + k]) / z;
  }
  snprintf(what, sizeof what, "crossentropy probs N%d K%d s%.2f", N, K, s);
  gc_check(what, p, t, n, 1e-5, 1e-7);
  crossentropy_backward(dx, p, y, N, K, s);
  gc_fd(t, c.x, n, ref_loss, &c, 1e-5);
  snprintf(what, sizeof what, "crossentropy dlogits N%d K%d s%.2f", N, K, s);
  gc_check(what, dx, t, n, 1e-3, 1e-4);
  free(x), free(p), free(dx), free(y), free(t), free(c.x);
}

int main(void) {
  gc_seed(10);
  run(5, 7, 0.0f, 3);
  run(5, 7, 0.1f, 3);
  run(1, 5, 0.1f, 1);
  run(32, 5, 0.1f, 20); /* large logits: the max subtraction must keep it finite */
  run(4, 1000, 0.0f, 5);
  return gc_finish("test_op_crossentropy");
}
