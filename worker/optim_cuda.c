/* optim_cuda.c - the optimizer on the model's GPU: the moments live there and an update is one
 * kernel (ops/cuda's cuda_optim_step) queued on the model's stream, with optim.c's formulas.
 * See optim_ops.h. In a build without CUDA only optim_use_cuda remains, and dies. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "worker/optim_ops.h"

#ifdef POLLEN_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"

struct optim_device {
  cuda_ctx *ctx; /* the model's */
  float *m, *v, *decay, *norm;
};

/* The norm stays on the device (NAN): reading it back would end the step's asynchrony. */
static float gpu_step(optimizer *o, float *params, float *grads, float lr) {
  const optim_config *c = &o->cfg;
  struct optim_device *d = o->dev;
  cuda_optim_args a;
  memset(&a, 0, sizeof a);
  switch (c->kind) {
  case OPT_SGD: a.kind = CUDA_OPT_SGD; break;
  case OPT_RMSPROP: a.kind = c->rmsprop == RMSPROP_TF ? CUDA_OPT_RMSPROP_TF : CUDA_OPT_RMSPROP_TORCH; break;
  case OPT_ADAM: a.kind = CUDA_OPT_ADAM; break;
  case OPT_ADAMW: a.kind = CUDA_OPT_ADAMW; break;
  }
  a.lr = lr, a.momentum = c->momentum, a.weight_decay = c->weight_decay, a.alpha = c->alpha;
  a.eps = c->eps, a.beta1 = c->beta1, a.beta2 = c->beta2, a.nesterov = c->nesterov;
  a.clip_norm = c->clip_norm;
  /* Bias corrections exactly as the CPU computes them. */
  float bc1 = 1.0f - powf(c->beta1, (float)o->step), bc2 = 1.0f - powf(c->beta2, (float)o->step);
  a.step_size = lr / bc1, a.bc2_sqrt = sqrtf(bc2);
  cuda_optim_step(d->ctx, &a, params, grads, d->m, d->v, d->decay, o->n, d->norm);
  return NAN;
}

static void gpu_sync_to_host(optimizer *o) {
  struct optim_device *d = o->dev;
  cuda_download(d->ctx, o->m, d->m, o->n * sizeof(float));
  cuda_download(d->ctx, o->v, d->v, o->n * sizeof(float));
  cuda_ctx_sync(d->ctx);
}

static void gpu_sync_to_device(optimizer *o) {
  struct optim_device *d = o->dev;
  cuda_upload(d->ctx, d->m, o->m, o->n * sizeof(float));
  cuda_upload(d->ctx, d->v, o->v, o->n * sizeof(float));
  cuda_ctx_sync(d->ctx);
}

static void gpu_release(optimizer *o) {
  struct optim_device *d = o->dev;
  cuda_ctx_sync(d->ctx);
  cuda_free(d->m), cuda_free(d->v), cuda_free(d->decay), cuda_free(d->norm);
  free(d);
  o->dev = NULL;
}

static const optim_ops optim_cuda_ops = {
    .step = gpu_step, .sync_to_host = gpu_sync_to_host, .sync_to_device = gpu_sync_to_device,
    .release = gpu_release};

void optim_use_cuda(optimizer *o, const model *mdl) {
  if (o->dev) return;
  struct optim_device *d = xcalloc(1, sizeof *d);
  d->ctx = model_cuda_ctx(mdl);
  POLLEN_ASSERT(d->ctx != NULL);
  d->m = cuda_malloc(o->n * sizeof(float));
  d->v = cuda_malloc(o->n * sizeof(float));
  d->decay = cuda_malloc(o->n * sizeof(float));
  d->norm = cuda_malloc(2 * sizeof(float));
  o->dev = d, o->ops = &optim_cuda_ops;
  cuda_upload(d->ctx, d->decay, o->decay, o->n * sizeof(float));
  optim_sync_to_device(o);
}

#else /* no CUDA in this build */

void optim_use_cuda(optimizer *o, const model *mdl) {
  die("this pollen was built without CUDA; rebuild with cmake -DPOLLEN_CUDA=ON or use --device cpu");
}

#endif
