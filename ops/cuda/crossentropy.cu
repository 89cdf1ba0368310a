/* crossentropy.cu - softmax cross-entropy with label smoothing, as ops/crossentropy.c (in
 * double, max subtracted). One thread per sample; the batch mean is summed in sample order by
 * one thread and left in device memory, so a training step needs no host sync for the loss. */
#include "ops/cuda/cuda_common.cuh"

__global__ void ce_fwd_k(double *nll, float *probs, const float *logits, const int *labels,
                         int N, int K, float smoothing) {
  CU_FOR(n, (size_t)N) {
    const float *x = logits + n * K;
    float *p = probs + n * K;
    double mx = x[0];
    for (int k = 1; k < K; k++)
      if (x[k] > mx) mx = x[k];
    double se = 0.0;
    for (int k = 0; k < K; k++) se += exp((double)x[k] - mx);
    double lse = mx + log(se);
    double sum_nlp = 0.0;
    for (int k = 0; k < K; k++) {
      double lp = (double)x[k] - lse;
      p[k] = (float)exp(lp);
      sum_nlp -= lp;
    }
    double l = lse - (double)x[labels[n]];
    nll[n] = (1.0 - smoothing) * l + (double)smoothing / K * sum_nlp;
  }
}

__global__ void ce_mean_k(float *loss, const double *nll, int N) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    double total = 0.0;
    for (int n = 0; n < N; n++) total += nll[n];
    *loss = N > 0 ? (float)(total / N) : 0.0f;
  }
}

__global__ void ce_bwd_k(float *dlogits, const float *probs, const int *labels, int N, int K,
                         float smoothing) {
  const float inv_n = 1.0f / (float)N, off = smoothing / (float)K;
  CU_FOR(i, (size_t)N * K) {
    int n = (int)(i / K), k = (int)(i % K);
    float t = off + (k == labels[n] ? 1.0f - smoothing : 0.0f);
    dlogits[i] = __fmul_rn(probs[i] - t, inv_n);
  }
}

void cuda_crossentropy_forward(cuda_ctx *ctx, float *loss, float *probs, const float *logits,
                               const int *labels, int N, int K, float smoothing) {
  double *nll = (double *)cuda_ctx_scratch(ctx, 0, sizeof(double) * (size_t)(N > 0 ? N : 1));
  if (N > 0) {
    ce_fwd_k<<<cu_blocks((size_t)N), CU_THREADS, 0, ctx->stream>>>(nll, probs, logits, labels, N,
                                                                    K, smoothing);
    CUDA_CHECK_LAUNCH();
  }
  ce_mean_k<<<1, 1, 0, ctx->stream>>>(loss, nll, N);
  CUDA_CHECK_LAUNCH();
}

void cuda_crossentropy_backward(cuda_ctx *ctx, float *dlogits, const float *probs,
                                const int *labels, int N, int K, float smoothing) {
  if (N <= 0 || K <= 0) return;
  ce_bwd_k<<<cu_blocks((size_t)N * K), CU_THREADS, 0, ctx->stream>>>(dlogits, probs, labels, N,
                                                                      K, smoothing);
  CUDA_CHECK_LAUNCH();
}
