/* crossentropy.c - softmax cross-entropy averaged over the batch, with PyTorch's label
 * smoothing: target = (1-s)*onehot + s/K, so loss_i = (1-s)*(-log p_y) + (s/K)*sum_k(-log p_k).
 * Log-softmax is computed stably (max subtracted) in double: K is small (classes), so the
 * cost is nil and the loss is exact to float rounding. */
#include <math.h>

#include "ops/ops.h"

float crossentropy_forward(float *probs, const float *logits, const int *labels, int N, int K,
                           float smoothing) {
  double total = 0.0;
  for (int n = 0; n < N; n++) {
    const float *x = logits + (size_t)n * K;
    float *p = probs + (size_t)n * K;
    double mx = x[0];
    for (int k = 1; k < K; k++)
      if (x[k] > mx) mx = x[k];
    double se = 0.0;
    for (int k = 0; k < K; k++) se += exp((double)x[k] - mx);
    double lse = mx + log(se); /* log-sum-exp: log p_k = x_k - lse */
    double sum_nlp = 0.0;
    for (int k = 0; k < K; k++) {
      double lp = (double)x[k] - lse;
      p[k] = (float)exp(lp);
      sum_nlp -= lp;
    }
    double nll = lse - (double)x[labels[n]];
    total += (1.0 - smoothing) * nll + (double)smoothing / K * sum_nlp;
  }
  return N > 0 ? (float)(total / N) : 0.0f;
}

void crossentropy_backward(float *dlogits, const float *probs, const int *labels, int N, int K,
                           float smoothing) {
  const float inv_n = 1.0f / (float)N, off = smoothing / (float)K;
  for (int n = 0; n < N; n++) {
    for (int k = 0; k < K; k++) {
      float t = off + (k == labels[n] ? 1.0f - smoothing : 0.0f);
      dlogits[(size_t)n * K + k] = (probs[(size_t)n * K + k] - t) * inv_n;
    }
  }
}
