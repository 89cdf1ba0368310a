/* optim.c - SGD, RMSprop (TF and PyTorch forms), Adam, AdamW, clipping, LR schedules. */
#include "worker/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "worker/optim_ops.h"

optim_config optim_defaults(opt_kind kind) {
  optim_config c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.beta1 = 0.9f, c.beta2 = 0.999f, c.eps = 1e-8f;
  switch (kind) {
  case OPT_SGD: c.momentum = 0.9f; break;
  case OPT_RMSPROP: c.alpha = 0.9f, c.eps = 1e-7f, c.rmsprop = RMSPROP_TF; break;
  case OPT_ADAM: break;
  case OPT_ADAMW: c.weight_decay = 0.01f; break;
  }
  return c;
}

int optim_kind_parse(const char *name) {
  if (!strcmp(name, "sgd")) return OPT_SGD;
  if (!strcmp(name, "rmsprop")) return OPT_RMSPROP;
  if (!strcmp(name, "adam")) return OPT_ADAM;
  if (!strcmp(name, "adamw")) return OPT_ADAMW;
  return -1;
}

const char *optim_kind_name(opt_kind kind) {
  static const char *names[] = {"sgd", "rmsprop", "adam", "adamw"};
  return names[kind];
}

static const optim_ops optim_cpu_ops;

void optim_init(optimizer *o, const optim_config *cfg, const model *mdl) {
  memset(o, 0, sizeof *o);
  o->cfg = *cfg;
  o->ops = &optim_cpu_ops;
  o->n = mdl->n_params;
  o->m = xmalloc_aligned(o->n * sizeof(float));
  o->v = xmalloc_aligned(o->n * sizeof(float));
  o->decay = xmalloc_aligned(o->n * sizeof(float));
  memset(o->m, 0, o->n * sizeof(float));
  memset(o->v, 0, o->n * sizeof(float));
  for (int i = 0; i < mdl->n_param; i++) {
    const param_info *p = &mdl->param[i];
    float d = (p->no_decay && !cfg->decay_all) ? 0.0f : 1.0f;
    for (size_t e = 0; e < p->numel; e++) o->decay[p->offset + e] = d;
  }
}

void optim_free(optimizer *o) {
  o->ops->release(o);
  free(o->m), free(o->v), free(o->decay);
  memset(o, 0, sizeof *o);
}

void optim_sync_to_host(optimizer *o) { o->ops->sync_to_host(o); }
void optim_sync_to_device(optimizer *o) { o->ops->sync_to_device(o); }

size_t optim_state_floats(const optimizer *o) { return o->n; }

static float global_norm(const float *g, size_t n) {
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
  for (size_t i = 0; i < n; i++) sum += (double)g[i] * g[i];
  return (float)sqrt(sum);
}

float optim_step(optimizer *o, float *params, float *grads, float lr) {
  o->step++;
  return o->ops->step(o, params, grads, lr);
}

static float cpu_step(optimizer *o, float *params, float *grads, float lr) {
  const optim_config *c = &o->cfg;
  size_t n = o->n;
  float norm = global_norm(grads, n);
  if (c->clip_norm > 0.0f && norm > c->clip_norm) {
    /* torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6). */
    float scale = c->clip_norm / (norm + 1e-6f);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) grads[i] *= scale;
  }
  float *m = o->m, *v = o->v;
  const float *decay = o->decay;
  float wd = c->weight_decay, mom = c->momentum;
  switch (c->kind) {
  case OPT_SGD:
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float g = grads[i] + wd * decay[i] * params[i];
      if (mom != 0.0f) {
        /* PyTorch starts the buffer at g: mom*0 + g is the same. */
        m[i] = mom * m[i] + g;
        g = c->nesterov ? g + mom * m[i] : m[i];
      }
      params[i] -= lr * g;
    }
    break;
  case OPT_RMSPROP: {
    float a = c->alpha, eps = c->eps;
    int tf = c->rmsprop == RMSPROP_TF;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float g = grads[i] + wd * decay[i] * params[i];
      v[i] = a * v[i] + (1.0f - a) * g * g;
      if (tf) {
        /* Keras/TF ApplyRMSProp: epsilon inside the square root; momentum holds lr*step. */
        float step = lr * g / sqrtf(v[i] + eps);
        if (mom != 0.0f) step = m[i] = mom * m[i] + step;
        params[i] -= step;
      } else {
        float step = g / (sqrtf(v[i]) + eps);
        if (mom != 0.0f) step = m[i] = mom * m[i] + step;
        params[i] -= lr * step;
      }
    }
    break;
  }
  case OPT_ADAM:
  case OPT_ADAMW: {
    float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    float bc1 = 1.0f - powf(b1, (float)o->step), bc2 = 1.0f - powf(b2, (float)o->step);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
    int decoupled = c->kind == OPT_ADAMW;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
      float g = grads[i];
      if (decoupled) params[i] *= 1.0f - lr * wd * decay[i];
      else g += wd * decay[i] * params[i];
      m[i] = b1 * m[i] + (1.0f - b1) * g;
      v[i] = b2 * v[i] + (1.0f - b2) * g * g;
      params[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
    break;
  }
  }
  return norm;
}

/* The moments are the host's own: nothing to copy or release. */
static void cpu_nothing(optimizer *o) {}

static const optim_ops optim_cpu_ops = {
    .step = cpu_step, .sync_to_host = cpu_nothing, .sync_to_device = cpu_nothing, .release = cpu_nothing};

int lr_kind_parse(const char *name) {
  if (!strcmp(name, "constant")) return LR_CONSTANT;
  if (!strcmp(name, "step")) return LR_STEP;
  if (!strcmp(name, "cosine")) return LR_COSINE;
  return -1;
}

float lr_at(const lr_schedule *s, long step, long total) {
  if (s->warmup_steps > 0 && step < s->warmup_steps)
    return s->base * (float)(step + 1) / (float)s->warmup_steps;
  switch (s->kind) {
  case LR_CONSTANT: return s->base;
  case LR_STEP: {
    long k = s->step_every > 0 ? (step - s->warmup_steps) / s->step_every : 0;
    return s->base * powf(s->gamma, (float)k);
  }
  case LR_COSINE: {
    long span = total - s->warmup_steps;
    if (span <= 0) return s->base;
    double t = (double)(step - s->warmup_steps) / (double)span;
    if (t > 1.0) t = 1.0;
    return s->min_lr + (s->base - s->min_lr) * 0.5f * (float)(1.0 + cos(M_PI * t));
  }
  }
  return s->base;
}
