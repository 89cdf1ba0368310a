/* model_cuda.c - the GPU's model_ops table: ops/cuda/ on device memory, queued on the model's
 * CUDA stream, and the device half of the model (its buffers, the input copies that overlap
 * the previous step, the one read-back per forward). See model_ops.h. In a build without
 * CUDA only model_cuda_open (which dies) and model_cuda_ctx (NULL) remain. */
#include <stdlib.h>

#include "base/core.h"
#include "worker/model_ops.h"

#ifdef POLLEN_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "ops/cuda/ops_cuda.h"

/* The device side of a model. Inputs alternate between two device slots, so a batch's copy
 * (on copy_stream) can overlap the previous step's kernels. */
struct model_device {
  cuda_ctx *ctx;
  cudaStream_t copy_stream;
  cudaEvent_t copied;
  float *images[2];
  int *labels[2];
  int slot;
  float *probs, *loss;
  float *host_logits, host_loss;
};

#define CTX(m) ((m)->dev->ctx)

static float *gpu_act_alloc(const model *m, size_t floats) { return cuda_malloc(floats * sizeof(float)); }
static void gpu_act_free(const model *m, void *p) { cuda_free(p); }
static void *gpu_host_alloc(const model *m, size_t bytes) { return cuda_host_alloc(bytes); }
static void gpu_host_free(const model *m, void *p) { cuda_host_free(p); }

static void gpu_shape_alloc(model *m, int batch, int size) {
  struct model_device *g = m->dev;
  size_t image = (size_t)batch * size * size * 3, logits = (size_t)batch * m->cfg.num_classes;
  for (int i = 0; i < 2; i++) {
    g->images[i] = cuda_malloc(image * sizeof(float));
    g->labels[i] = cuda_malloc((size_t)batch * sizeof(int));
  }
  g->probs = cuda_malloc(logits * sizeof(float));
  g->host_logits = xmalloc(logits * sizeof(float));
}

static void gpu_shape_free(model *m) {
  struct model_device *g = m->dev;
  for (int i = 0; i < 2; i++) {
    cuda_free(g->images[i]), cuda_free(g->labels[i]);
    g->images[i] = NULL, g->labels[i] = NULL;
  }
  cuda_free(g->probs);
  free(g->host_logits);
  g->probs = NULL, g->host_logits = NULL;
}

static void gpu_release(model *m) {
  struct model_device *g = m->dev;
  cuda_ctx_sync(g->ctx);
  cuda_free(m->live_params), cuda_free(m->live_grads), cuda_free(m->live_stats), cuda_free(g->loss);
  CUDA_CHECK(cudaEventDestroy(g->copied));
  CUDA_CHECK(cudaStreamDestroy(g->copy_stream));
  cuda_ctx_free(g->ctx);
  free(g);
  m->dev = NULL;
}

static void gpu_sync_to_host(model *m) {
  cuda_download(CTX(m), m->params, m->live_params, m->n_params * sizeof(float));
  cuda_download(CTX(m), m->grads, m->live_grads, m->n_params * sizeof(float));
  cuda_download(CTX(m), m->stats, m->live_stats, m->n_stats * sizeof(float));
  cuda_ctx_sync(CTX(m));
}

static void gpu_sync_to_device(model *m) {
  cuda_upload(CTX(m), m->live_params, m->params, m->n_params * sizeof(float));
  cuda_upload(CTX(m), m->live_stats, m->stats, m->n_stats * sizeof(float));
  cuda_ctx_sync(CTX(m));
}

static void gpu_wait(model *m) { cuda_ctx_sync(CTX(m)); }
static void gpu_memset0(model *m, void *p, size_t bytes) { cuda_memset0(CTX(m), p, bytes); }
static void gpu_copy(model *m, void *dst, const void *src, size_t bytes) { cuda_copy(CTX(m), dst, src, bytes); }

/* Images and labels go to the next input slot on the copy stream, which the compute stream
 * then waits for, so the copy overlaps the previous step's backward and update still queued.
 * The slot's previous batch is no longer read: its backward ran before the last forward's
 * read-back. */
static const float *gpu_stage_inputs(model *m, const float *images, const int *labels, int N) {
  struct model_device *g = m->dev;
  g->slot ^= 1;
  size_t bytes = (size_t)N * m->tensors[0].per_image * sizeof(float);
  CUDA_CHECK(cudaMemcpyAsync(g->images[g->slot], images, bytes, cudaMemcpyHostToDevice, g->copy_stream));
  if (labels)
    CUDA_CHECK(cudaMemcpyAsync(g->labels[g->slot], labels, (size_t)N * sizeof(int),
                               cudaMemcpyHostToDevice, g->copy_stream));
  CUDA_CHECK(cudaEventRecord(g->copied, g->copy_stream));
  CUDA_CHECK(cudaStreamWaitEvent(g->ctx->stream, g->copied, 0));
  return g->images[g->slot];
}

/* One read-back per forward: the logits, and the loss and probabilities with labels. */
static float gpu_loss_forward(model *m, const int *labels, int N, float smoothing) {
  struct model_device *g = m->dev;
  int K = m->cfg.num_classes;
  const float *logits = m->tensors[m->logits_tensor].data;
  if (labels) {
    cuda_crossentropy_forward(g->ctx, g->loss, g->probs, logits, g->labels[g->slot], N, K, smoothing);
    cuda_download(g->ctx, &g->host_loss, g->loss, sizeof(float));
    cuda_download(g->ctx, m->probs, g->probs, (size_t)N * K * sizeof(float));
  }
  cuda_download(g->ctx, g->host_logits, logits, (size_t)N * K * sizeof(float));
  cuda_ctx_sync(g->ctx);
  return labels ? g->host_loss : 0.0f;
}

static const float *gpu_logits(const model *m) { return m->dev->host_logits; }

/* The labels are the device copy stage_inputs made. */
static void gpu_loss_backward(model *m, float *dlogits, const int *labels, int N, float smoothing) {
  struct model_device *g = m->dev;
  cuda_crossentropy_backward(g->ctx, dlogits, g->probs, g->labels[g->slot], N, m->cfg.num_classes,
                             smoothing);
}

static size_t gpu_conv2d_scratch_floats(const model *m, int N, int H, int W, int Cin, int K, int stride) {
  return cuda_conv2d_scratch_floats(N, H, W, Cin, K, stride);
}

static void gpu_conv2d_forward(model *m, float *out, const float *in, const float *w, int N, int H,
                               int W, int Cin, int Cout, int K, int stride, float *scratch) {
  cuda_conv2d_forward(CTX(m), out, in, w, N, H, W, Cin, Cout, K, stride, scratch);
}

static void gpu_conv2d_backward(model *m, float *din, float *dw, const float *dout, const float *in,
                                const float *w, int N, int H, int W, int Cin, int Cout, int K,
                                int stride, float *scratch) {
  cuda_conv2d_backward(CTX(m), din, dw, dout, in, w, N, H, W, Cin, Cout, K, stride, scratch);
}

static void gpu_dwconv_forward(model *m, float *out, const float *in, const float *w, int N, int H,
                               int W, int C, int K, int stride) {
  cuda_dwconv_forward(CTX(m), out, in, w, N, H, W, C, K, stride);
}

static void gpu_dwconv_backward(model *m, float *din, float *dw, const float *dout, const float *in,
                                const float *w, int N, int H, int W, int C, int K, int stride) {
  cuda_dwconv_backward(CTX(m), din, dw, dout, in, w, N, H, W, C, K, stride);
}

static void gpu_linear_forward(model *m, float *out, const float *in, const float *w,
                               const float *bias, int M, int Cin, int Cout) {
  cuda_linear_forward(CTX(m), out, in, w, bias, M, Cin, Cout);
}

static void gpu_linear_backward(model *m, float *din, float *dw, float *dbias, const float *dout,
                                const float *in, const float *w, int M, int Cin, int Cout) {
  cuda_linear_backward(CTX(m), din, dw, dbias, dout, in, w, M, Cin, Cout);
}

static void gpu_batchnorm_act_forward_train(model *m, float *out, float *save_mean, float *save_rstd,
                                            float *running_mean, float *running_var, const float *in,
                                            const float *gamma, const float *beta, int M, int C,
                                            float eps, float momentum, act_kind act) {
  cuda_batchnorm_forward_train(CTX(m), out, save_mean, save_rstd, running_mean, running_var, in,
                               gamma, beta, M, C, eps, momentum, act);
}

static void gpu_batchnorm_act_forward_eval(model *m, float *out, const float *in, const float *gamma,
                                           const float *beta, const float *running_mean,
                                           const float *running_var, int M, int C, float eps,
                                           act_kind act) {
  cuda_batchnorm_forward_eval(CTX(m), out, in, gamma, beta, running_mean, running_var, M, C, eps, act);
}

/* x = the layer's convolution of in; returns its output rows, N * Ho * Wo. */
static int gpu_conv_forward(model *m, float *x, const float *in, const float *w, conv_kind kind,
                            int N, int H, int W, int Cin, int Cout, int K, int stride,
                            float *scratch) {
  int M = N * conv_out_size(H, K, stride) * conv_out_size(W, K, stride);
  if (kind == CONV_FULL)
    gpu_conv2d_forward(m, x, in, w, N, H, W, Cin, Cout, K, stride, scratch);
  else if (kind == CONV_DEPTHWISE)
    gpu_dwconv_forward(m, x, in, w, N, H, W, Cin, K, stride);
  else
    gpu_linear_forward(m, x, in, w, NULL, M, Cin, Cout);
  return M;
}

/* The conv, then batch norm (its statistics) and the activation over its output. */
static void gpu_conv_bn_act_forward_train(model *m, float *y, float *x, float *save_mean,
                                          float *save_rstd, float *running_mean,
                                          float *running_var, const float *in, const float *w,
                                          conv_kind kind, const float *gamma, const float *beta,
                                          float eps, float momentum, int N, int H, int W, int Cin,
                                          int Cout, int K, int stride, act_kind act,
                                          float *scratch) {
  int M = gpu_conv_forward(m, x, in, w, kind, N, H, W, Cin, Cout, K, stride, scratch);
  gpu_batchnorm_act_forward_train(m, y, save_mean, save_rstd, running_mean, running_var, x, gamma,
                                  beta, M, Cout, eps, momentum, act);
}

/* The conv, then batch norm and the activation over its output, with the running statistics. */
static void gpu_conv_bn_act_forward_eval(model *m, float *out, float *x, const float *in,
                                         const float *w, conv_kind kind, const float *gamma,
                                         const float *beta, const float *running_mean,
                                         const float *running_var, float eps, int N, int H, int W,
                                         int Cin, int Cout, int K, int stride, act_kind act,
                                         float *scratch) {
  int M = gpu_conv_forward(m, x, in, w, kind, N, H, W, Cin, Cout, K, stride, scratch);
  gpu_batchnorm_act_forward_eval(m, out, x, gamma, beta, running_mean, running_var, M, Cout, eps,
                                 act);
}

static void gpu_batchnorm_act_backward(model *m, float *din, float *dgamma, float *dbeta,
                                       const float *dout, const float *in, const float *save_mean,
                                       const float *save_rstd, const float *gamma, const float *beta,
                                       int M, int C, act_kind act) {
  cuda_batchnorm_backward(CTX(m), din, dgamma, dbeta, dout, in, save_mean, save_rstd, gamma, beta,
                          M, C, act);
}

static void gpu_act_forward(model *m, float *out, const float *in, size_t n, act_kind act) {
  cuda_act_forward(CTX(m), out, in, n, act);
}

static void gpu_act_backward(model *m, float *din, const float *dout, const float *in, size_t n,
                             act_kind act) {
  cuda_act_backward(CTX(m), din, dout, in, n, act);
}

static void gpu_avgpool_forward(model *m, float *out, const float *in, int N, int HW, int C) {
  cuda_avgpool_forward(CTX(m), out, in, N, HW, C);
}

static void gpu_avgpool_backward(model *m, float *din, const float *dout, int N, int HW, int C) {
  cuda_avgpool_backward(CTX(m), din, dout, N, HW, C);
}

static void gpu_se_forward(model *m, float *out, float *save, const float *in, const float *w1,
                           const float *b1, const float *w2, const float *b2, int N, int HW, int C,
                           int Cs) {
  cuda_se_forward(CTX(m), out, save, in, w1, b1, w2, b2, N, HW, C, Cs);
}

static void gpu_se_backward(model *m, float *din, float *dw1, float *db1, float *dw2, float *db2,
                            const float *dout, const float *in, const float *save, const float *w1,
                            const float *w2, int N, int HW, int C, int Cs) {
  cuda_se_backward(CTX(m), din, dw1, db1, dw2, db2, dout, in, save, w1, w2, N, HW, C, Cs);
}

static void gpu_residual_forward(model *m, float *out, const float *a, const float *b, size_t n) {
  cuda_residual_forward(CTX(m), out, a, b, n);
}

static void gpu_residual_backward(model *m, float *da, const float *dout, size_t n) {
  cuda_residual_backward(CTX(m), da, dout, n);
}

static void gpu_drop_path_forward(model *m, float *out, const float *branch, const float *skip,
                                  int N, size_t per_image, float p, uint64_t seed) {
  cuda_drop_path_forward(CTX(m), out, branch, skip, N, per_image, p, seed);
}

static void gpu_drop_path_backward(model *m, float *dbranch, const float *dout, int N,
                                   size_t per_image, float p, uint64_t seed) {
  cuda_drop_path_backward(CTX(m), dbranch, dout, N, per_image, p, seed);
}

static void gpu_dropout_forward(model *m, float *out, const float *in, size_t n, float p,
                                uint64_t seed) {
  cuda_dropout_forward(CTX(m), out, in, n, p, seed);
}

static void gpu_dropout_backward(model *m, float *din, const float *dout, size_t n, float p,
                                 uint64_t seed) {
  cuda_dropout_backward(CTX(m), din, dout, n, p, seed);
}

static const model_ops model_cuda_ops = {
    .act_alloc = gpu_act_alloc,
    .act_free = gpu_act_free,
    .host_alloc = gpu_host_alloc,
    .host_free = gpu_host_free,
    .shape_alloc = gpu_shape_alloc,
    .shape_free = gpu_shape_free,
    .release = gpu_release,
    .sync_to_host = gpu_sync_to_host,
    .sync_to_device = gpu_sync_to_device,
    .wait = gpu_wait,
    .memset0 = gpu_memset0,
    .copy = gpu_copy,
    .stage_inputs = gpu_stage_inputs,
    .loss_forward = gpu_loss_forward,
    .logits = gpu_logits,
    .loss_backward = gpu_loss_backward,
    .conv2d_scratch_floats = gpu_conv2d_scratch_floats,
    .conv2d_backward = gpu_conv2d_backward,
    .dwconv_backward = gpu_dwconv_backward,
    .linear_forward = gpu_linear_forward,
    .linear_backward = gpu_linear_backward,
    .conv_bn_act_forward_train = gpu_conv_bn_act_forward_train,
    .conv_bn_act_forward_eval = gpu_conv_bn_act_forward_eval,
    .batchnorm_act_backward = gpu_batchnorm_act_backward,
    .act_forward = gpu_act_forward,
    .act_backward = gpu_act_backward,
    .avgpool_forward = gpu_avgpool_forward,
    .avgpool_backward = gpu_avgpool_backward,
    .se_forward = gpu_se_forward,
    .se_backward = gpu_se_backward,
    .residual_forward = gpu_residual_forward,
    .residual_backward = gpu_residual_backward,
    .drop_path_forward = gpu_drop_path_forward,
    .drop_path_backward = gpu_drop_path_backward,
    .dropout_forward = gpu_dropout_forward,
    .dropout_backward = gpu_dropout_backward,
};

void model_cuda_open(model *m, int gemm_math) {
  struct model_device *g = xcalloc(1, sizeof *g);
  g->ctx = cuda_ctx_new();
  cuda_ctx_set_math(g->ctx, (cuda_math)gemm_math);
  CUDA_CHECK(cudaStreamCreateWithFlags(&g->copy_stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&g->copied, cudaEventDisableTiming));
  m->live_params = cuda_malloc(m->n_params * sizeof(float));
  m->live_grads = cuda_malloc(m->n_params * sizeof(float));
  m->live_stats = cuda_malloc((m->n_stats ? m->n_stats : 1) * sizeof(float));
  g->loss = cuda_malloc(sizeof(float));
  m->dev = g;
  m->ops = &model_cuda_ops;
  cuda_memset0(g->ctx, m->live_grads, m->n_params * sizeof(float));
}

struct cuda_ctx *model_cuda_ctx(const model *m) {
  return m->ops == &model_cuda_ops ? m->dev->ctx : NULL;
}

#else /* no CUDA in this build */

void model_cuda_open(model *m, int gemm_math) {
  die("this pollen was built without CUDA; rebuild with cmake -DPOLLEN_CUDA=ON or use --device cpu");
}

struct cuda_ctx *model_cuda_ctx(const model *m) { return NULL; }

#endif
