/* optim.h - optimizers and learning-rate schedules over the model's flat parameter buffer.
 *
 * Semantics follow PyTorch's torch.optim unless named otherwise; RMSprop also has the
 * Keras/TensorFlow form the original flowers tutorial trained with. Weight decay skips
 * parameters marked no_decay (BN weights/biases and biases) unless decay_all is set. */
#ifndef POLLEN_OPTIM_H
#define POLLEN_OPTIM_H

#include <stddef.h>

#include "worker/model.h"

typedef enum { OPT_SGD, OPT_RMSPROP, OPT_ADAM, OPT_ADAMW } opt_kind;
typedef enum { RMSPROP_TF, RMSPROP_TORCH } rmsprop_variant;

typedef struct {
  opt_kind kind;
  float momentum;      /* SGD, RMSprop */
  int nesterov;        /* SGD */
  float weight_decay;  /* L2 added to the gradient; decoupled for AdamW */
  int decay_all;       /* 1: decay BN and biases too */
  float alpha;         /* RMSprop smoothing (Keras calls it rho) */
  float eps;
  rmsprop_variant rmsprop;
  float beta1, beta2;  /* Adam/AdamW */
  float clip_norm;     /* clip the global gradient L2 norm to this; 0 = off */
} optim_config;

/* Defaults per kind: SGD momentum 0.9; RMSprop (TF) alpha 0.9 eps 1e-7, (torch) alpha 0.99
 * eps 1e-8; Adam/AdamW beta 0.9/0.999 eps 1e-8; AdamW weight decay 0.01. */
optim_config optim_defaults(opt_kind kind);
int optim_kind_parse(const char *name); /* "sgd" "rmsprop" "adam" "adamw"; -1 if unknown */
const char *optim_kind_name(opt_kind kind);

struct optim_ops;    /* optim_ops.h */
struct optim_device; /* optim_cuda.c */

typedef struct {
  optim_config cfg;
  size_t n;
  float *m, *v;        /* moments: SGD/RMSprop momentum in m, square averages in v */
  float *decay;        /* per-element weight-decay factor (0 or 1): one pass, no branches */
  long step;           /* updates taken */
  /* The device the update runs on, chosen once: optim_init the CPU, optim_use_cuda the
   * model's GPU. dev is the device's own state (NULL on the CPU); on a GPU it holds the live
   * moments, and m and v above are host copies. */
  const struct optim_ops *ops;
  struct optim_device *dev;
} optimizer;

void optim_init(optimizer *o, const optim_config *cfg, const model *mdl);
void optim_free(optimizer *o);
/* Moves the state to the GPU of a model on CUDA (model_use_cuda first), uploading m and v;
 * updates then run as one kernel on the model's stream. Dies in a build without CUDA. */
void optim_use_cuda(optimizer *o, const model *mdl);
/* Device -> host copies of the moments (a checkpoint); host -> device after a restore.
 * No-ops on the CPU. */
void optim_sync_to_host(optimizer *o);
void optim_sync_to_device(optimizer *o);
/* One update of params from grads at learning rate lr (device memory after
 * optim_use_cuda: model_live_params/grads). Returns the gradient's global L2 norm before
 * clipping (for logging); on a GPU it is not read back, to keep the step asynchronous: NAN. */
float optim_step(optimizer *o, float *params, float *grads, float lr);
/* Bytes of optimizer state (m, v) for checkpoints: state_floats() floats at o->m then o->v. */
size_t optim_state_floats(const optimizer *o);

typedef enum { LR_CONSTANT, LR_STEP, LR_COSINE } lr_kind;
typedef struct {
  lr_kind kind;
  float base;
  long warmup_steps;   /* linear warm-up from base/warmup to base (cosine and others) */
  long step_every;     /* LR_STEP: multiply by gamma every step_every steps */
  float gamma;
  float min_lr;        /* LR_COSINE floor */
} lr_schedule;

int lr_kind_parse(const char *name); /* "constant" "step" "cosine"; -1 if unknown */
/* Learning rate at update `step` (0-based) of `total` updates. */
float lr_at(const lr_schedule *s, long step, long total);

#endif
