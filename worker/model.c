/* model.c - the engine's graph: building layers, torchvision's initialisation, and the
 * forward and backward walks, which call each op through the device's table (model_ops.h:
 * model_cpu.c, model_cuda.c). Architectures are in mobilenet.c. */
#include "worker/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "worker/model_build.h"
#include "worker/model_ops.h"

int model_arch_parse(const char *name) {
  if (!strcmp(name, "mnv3-small")) return MODEL_MNV3_SMALL;
  if (!strcmp(name, "mnv3-large")) return MODEL_MNV3_LARGE;
  if (!strcmp(name, "mnv2")) return MODEL_MNV2;
  return -1;
}

const char *model_arch_name(model_arch arch) {
  switch (arch) {
  case MODEL_MNV3_SMALL: return "mnv3-small";
  case MODEL_MNV3_LARGE: return "mnv3-large";
  case MODEL_MNV2: return "mnv2";
  }
  return "?";
}

/* ---- building ---------------------------------------------------------------------- */

#define GROW(arr, n, cap)                                  \
  do {                                                     \
    if ((n) >= (cap)) {                                    \
      (cap) = (cap) ? 2 * (cap) : 32;                      \
      (arr) = xrealloc((arr), (size_t)(cap) * sizeof *(arr)); \
    }                                                      \
  } while (0)

static int cap_param, cap_bn, cap_layers, cap_tensors; /* only used while building */

static int new_tensor(model *m, int channels) {
  GROW(m->tensors, m->n_tensors, cap_tensors);
  tensor *t = &m->tensors[m->n_tensors];
  memset(t, 0, sizeof *t);
  t->hw_c[2] = channels;
  t->producer = t->last_read = -1;
  return m->n_tensors++;
}

int build_channels(const model *m, int t) { return m->tensors[t].hw_c[2]; }

static size_t add_param(model *m, const char *name, int ndim, const int64_t *shape,
                        param_layout layout, int no_decay) {
  GROW(m->param, m->n_param, cap_param);
  param_info *p = &m->param[m->n_param++];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  p->numel = 1;
  for (int i = 0; i < ndim; i++) p->shape[i] = shape[i], p->numel *= (size_t)shape[i];
  p->offset = m->n_params;
  p->layout = layout;
  p->no_decay = no_decay;
  m->n_params += p->numel;
  return p->offset;
}

static layer *new_layer(model *m, layer_kind kind, int in) {
  GROW(m->layers, m->n_layers, cap_layers);
  layer *l = &m->layers[m->n_layers++];
  memset(l, 0, sizeof *l);
  l->kind = kind;
  l->in = in;
  l->skip = l->pre = -1;
  l->bn = -1;
  return l;
}

int build_conv_bn_act(model *m, const char *conv_name, const char *bn_prefix, int in, int cin,
                      int cout, int k, int stride, conv_kind kind, act_kind act) {
  char name[96];
  layer *l = new_layer(m, LAYER_CONV, in);
  l->conv = kind, l->k = k, l->stride = stride, l->cin = cin, l->cout = cout, l->act = act;
  snprintf(name, sizeof name, "%s.weight", conv_name);
  if (kind == CONV_DEPTHWISE) {
    int64_t s[4] = {cout, 1, k, k};
    l->weight = add_param(m, name, 4, s, PARAM_DW_HWC, 0);
  } else {
    int64_t s[4] = {cout, cin, k, k};
    l->weight = add_param(m, name, 4, s, kind == CONV_FULL ? PARAM_CONV_OHWI : PARAM_PLAIN, 0);
  }
  int64_t c[1] = {cout};
  snprintf(name, sizeof name, "%s.weight", bn_prefix);
  l->gamma = add_param(m, name, 1, c, PARAM_PLAIN, 1);
  snprintf(name, sizeof name, "%s.bias", bn_prefix);
  l->beta = add_param(m, name, 1, c, PARAM_PLAIN, 1);
  GROW(m->bn, m->n_bn, cap_bn);
  bn_info *b = &m->bn[m->n_bn];
  snprintf(b->prefix, sizeof b->prefix, "%s", bn_prefix);
  b->channels = cout;
  b->offset = m->n_stats;
  m->n_stats += 2 * (size_t)cout;
  l->bn = m->n_bn++;
  l->pre = new_tensor(m, cout);
  l->out = new_tensor(m, cout);
  return l->out;
}

int build_se(model *m, const char *prefix, int in, int channels, int squeeze) {
  char name[96];
  layer *l = new_layer(m, LAYER_SE, in);
  l->cin = l->cout = channels, l->squeeze = squeeze;
  int64_t s1[4] = {squeeze, channels, 1, 1}, b1[1] = {squeeze};
  int64_t s2[4] = {channels, squeeze, 1, 1}, b2[1] = {channels};
  snprintf(name, sizeof name, "%s.fc1.weight", prefix);
  l->weight = add_param(m, name, 4, s1, PARAM_PLAIN, 0);
  snprintf(name, sizeof name, "%s.fc1.bias", prefix);
  l->bias = add_param(m, name, 1, b1, PARAM_PLAIN, 1);
  snprintf(name, sizeof name, "%s.fc2.weight", prefix);
  l->weight2 = add_param(m, name, 4, s2, PARAM_PLAIN, 0);
  snprintf(name, sizeof name, "%s.fc2.bias", prefix);
  l->bias2 = add_param(m, name, 1, b2, PARAM_PLAIN, 1);
  l->out = new_tensor(m, channels);
  return l->out;
}

int build_add(model *m, int in, int skip, float drop_path) {
  /* The sum overwrites the projection's output in place when that output feeds nothing else:
   * neither add's nor an activation-free conv+BN's backward reads it (BN's reads the conv
   * output), so storing both would only cost memory. */
  const layer *prev = m->n_layers ? &m->layers[m->n_layers - 1] : NULL;
  int in_place = prev && prev->kind == LAYER_CONV && prev->act == ACT_NONE && prev->out == in;
  layer *l = new_layer(m, LAYER_ADD, in);
  l->skip = skip;
  l->drop_path = drop_path;
  l->cin = l->cout = build_channels(m, in);
  l->out = in_place ? in : new_tensor(m, l->cout);
  return l->out;
}

int build_pool(model *m, int in) {
  layer *l = new_layer(m, LAYER_POOL, in);
  l->cin = l->cout = build_channels(m, in);
  l->out = new_tensor(m, l->cout);
  return l->out;
}

int build_linear(model *m, const char *prefix, int in, int cin, int cout, act_kind act) {
  char name[96];
  layer *l = new_layer(m, LAYER_LINEAR, in);
  l->cin = cin, l->cout = cout, l->act = act;
  int64_t s[2] = {cout, cin}, b[1] = {cout};
  snprintf(name, sizeof name, "%s.weight", prefix);
  l->weight = add_param(m, name, 2, s, PARAM_PLAIN, 0);
  snprintf(name, sizeof name, "%s.bias", prefix);
  l->bias = add_param(m, name, 1, b, PARAM_PLAIN, 1);
  if (act != ACT_NONE) l->pre = new_tensor(m, cout);
  l->out = new_tensor(m, cout);
  return l->out;
}

int build_dropout(model *m, int in) {
  layer *l = new_layer(m, LAYER_DROPOUT, in);
  l->cin = l->cout = build_channels(m, in);
  l->out = new_tensor(m, l->cout);
  return l->out;
}

/* ---- initialisation ---------------------------------------------------------------- */

/* Standard normal from Philox: a pure function of (seed, parameter, element). */
static float normal_at(uint64_t key, uint32_t param, uint32_t i) {
  float u[4];
  philox_uniform4(key, param, i, 0x6e6f726d, u);
  double u1 = (double)u[0] + 1.0 / 33554432.0; /* (0,1]: log is finite */
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * (double)u[1]));
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* torchvision: Conv2d kaiming_normal_(mode="fan_out") (gain sqrt(2)), bias 0; BatchNorm
 * weight 1, bias 0; Linear N(0, 0.01), bias 0. BN running mean 0, var 1. */
static void init_params(model *m, uint64_t seed) {
  uint64_t key = hash_mix(seed, 0x696e6974);
  for (int i = 0; i < m->n_param; i++) {
    const param_info *p = &m->param[i];
    float *w = m->params + p->offset;
    int is_bn = 0;
    for (int j = 0; j < m->n_layers; j++) {
      const layer *l = &m->layers[j];
      if (l->bn >= 0 && (p->offset == l->gamma || p->offset == l->beta)) is_bn = 1;
    }
    if (is_bn) {
      float v = ends_with(p->name, ".weight") ? 1.0f : 0.0f;
      for (size_t e = 0; e < p->numel; e++) w[e] = v;
    } else if (p->ndim == 1) {
      memset(w, 0, p->numel * sizeof *w);
    } else {
      /* Draw in torchvision's element order, store in the engine's layout. */
      float std = 0.01f;
      if (p->ndim == 4) std = sqrtf(2.0f / (float)(p->shape[0] * p->shape[2] * p->shape[3]));
      int64_t o = p->shape[0], ci = p->ndim == 4 ? p->shape[1] : p->shape[1];
      int64_t kk = p->ndim == 4 ? p->shape[2] * p->shape[3] : 1;
      for (int64_t a = 0; a < o; a++)
        for (int64_t c = 0; c < ci; c++)
          for (int64_t s = 0; s < kk; s++) {
            size_t torch_index = (size_t)((a * ci + c) * kk + s);
            size_t dst = torch_index;
            if (p->layout == PARAM_CONV_OHWI) dst = (size_t)((a * kk + s) * ci + c);
            else if (p->layout == PARAM_DW_HWC) dst = (size_t)(s * o + a);
            w[dst] = std * normal_at(key, (uint32_t)i, (uint32_t)torch_index);
          }
    }
  }
  model_reset_bn_stats(m);
}

static void forward_layers(model *m, const float *images, const int *labels, int N, int train, int stochastic);

void model_precise_bn(model *m, int (*next_batch)(void *ctx, float *images), void *ctx, float *images) {
  model_reset_bn_stats(m);
  model_sync_to_device(m);
  float momentum = m->bn_momentum;
  int n;
  for (int k = 1; (n = next_batch(ctx, images)) > 0; k++) {
    m->bn_momentum = 1.0f / (float)k; /* the k-th batch weighs as much as each before it */
    forward_layers(m, images, NULL, n, 1, 0); /* the statistics of the network evaluation runs */
  }
  m->bn_momentum = momentum;
  model_sync_to_host(m);
}

void model_reset_bn_stats(model *m) {
  for (int b = 0; b < m->n_bn; b++) {
    float *mean = m->stats + m->bn[b].offset, *var = mean + m->bn[b].channels;
    for (int c = 0; c < m->bn[b].channels; c++) mean[c] = 0.0f, var[c] = 1.0f;
    m->bn_tracked[b] = 0;
  }
}

void model_init(model *m, const model_config *cfg, uint64_t seed) {
  memset(m, 0, sizeof *m);
  m->cfg = *cfg;
  if (cfg->num_classes < 2) die("a model needs at least 2 classes (got %d); give the dataset 2 or more class folders", cfg->num_classes);
  if (!(cfg->width > 0.0 && cfg->width <= 4.0))
    die("--width must be in (0, 4] (got %g)", cfg->width);
  cap_param = cap_bn = cap_layers = cap_tensors = 0;
  new_tensor(m, 3); /* tensor 0: input images */
  mobilenet_build(m);
  m->logits_tensor = m->layers[m->n_layers - 1].out;
  m->params = xmalloc_aligned(m->n_params * sizeof(float));
  m->grads = xmalloc_aligned(m->n_params * sizeof(float));
  memset(m->grads, 0, m->n_params * sizeof(float));
  m->stats = xmalloc_aligned(m->n_stats * sizeof(float));
  m->bn_tracked = xcalloc((size_t)m->n_bn, sizeof *m->bn_tracked);
  m->grad_of = xcalloc((size_t)m->n_tensors, sizeof *m->grad_of);
  m->ops = &model_cpu_ops;
  m->live_params = m->params, m->live_grads = m->grads, m->live_stats = m->stats;
  init_params(m, seed);
}

static int recomputed(const model *m, int t) { return m->tensors[t].producer >= 0; }

static void free_activations(model *m) {
  m->tensors[0].data = NULL; /* the caller's images (model_forward) */
  for (int t = 1; t < m->n_tensors; t++) {
    if (!recomputed(m, t)) m->ops->act_free(m, m->tensors[t].data); /* else a pool buffer's */
    m->tensors[t].data = NULL;
  }
  for (int i = 0; i < m->n_grad_pool; i++) m->ops->act_free(m, m->grad_pool[i]);
  free(m->grad_pool);
  m->grad_pool = NULL;
  m->n_grad_pool = m->grad_pool_cap = 0;
  m->ops->act_free(m, m->save), m->ops->act_free(m, m->scratch);
  free(m->probs);
  m->save = m->scratch = m->probs = NULL;
  m->ops->shape_free(m);
  m->batch = m->size = 0;
}

void model_free(model *m) {
  free(m->prof);
  free_activations(m);
  m->ops->release(m);
  free(m->params), free(m->grads), free(m->stats), free(m->bn_tracked);
  free(m->param), free(m->bn), free(m->layers), free(m->tensors), free(m->grad_of);
  memset(m, 0, sizeof *m);
}

/* ---- shapes and memory ------------------------------------------------------------- */

static void set_shape(model *m, int t, int h, int w, int c) {
  tensor *x = &m->tensors[t];
  x->hw_c[0] = h, x->hw_c[1] = w, x->hw_c[2] = c;
  x->per_image = (size_t)h * w * c;
}

/* Which CONV outputs backward recomputes (tensor.producer) and each tensor's last reader in
 * forward: every one but an output that another layer writes too (an in-place residual sum).
 * On MobileNetV3-Small at 224 px that saves 30% of the activation memory for 6% of the step
 * time (a pass over each conv output; BENCHMARKS.md). */
static void plan_recompute(model *m) {
  const int on = m->ops->bn_act_recompute != NULL && !m->keep_activations;
  for (int t = 0; t < m->n_tensors; t++) m->tensors[t].producer = m->tensors[t].last_read = -1;
  for (int i = 0; i < m->n_layers; i++) {
    const layer *l = &m->layers[i];
    m->tensors[l->in].last_read = i;
    if (l->kind == LAYER_ADD) m->tensors[l->skip].last_read = i;
    m->tensors[l->out].producer = on && l->kind == LAYER_CONV ? i : -1;
  }
  for (int t = 0; t < m->n_tensors; t++)
    if (m->tensors[t].last_read < m->tensors[t].producer) m->tensors[t].producer = -1;
}

void model_keep_activations(model *m, int keep) {
  if (m->batch) die("model_keep_activations after model_prepare (internal error)");
  m->keep_activations = !!keep;
}

void model_prepare(model *m, int batch, int size) {
  if (batch == m->batch && size == m->size) return;
  if (batch < 1) die("--batch must be at least 1 (got %d)", batch);
  if (size < 32) die("--size must be at least 32 pixels (got %d)", size);
  free_activations(m);
  m->batch = batch, m->size = size;
  set_shape(m, 0, size, size, 3);
  size_t save = 0, scratch = 0, largest = 0;
  for (int i = 0; i < m->n_layers; i++) {
    layer *l = &m->layers[i];
    const tensor *in = &m->tensors[l->in];
    l->h = in->hw_c[0], l->w = in->hw_c[1];
    l->ho = l->h, l->wo = l->w;
    switch (l->kind) {
    case LAYER_CONV:
      l->ho = conv_out_size(l->h, l->k, l->stride), l->wo = conv_out_size(l->w, l->k, l->stride);
      set_shape(m, l->pre, l->ho, l->wo, l->cout);
      set_shape(m, l->out, l->ho, l->wo, l->cout);
      l->save = save;
      save += 2 * (size_t)l->cout;
      if (l->conv == CONV_FULL) {
        size_t s = m->ops->conv2d_scratch_floats(m, batch, l->h, l->w, l->cin, l->k, l->stride);
        if (s > scratch) scratch = s;
      }
      break;
    case LAYER_SE:
      set_shape(m, l->out, l->h, l->w, l->cout);
      l->save = save;
      save += se_save_floats(batch, l->cin, l->squeeze);
      break;
    case LAYER_ADD:
    case LAYER_DROPOUT:
      set_shape(m, l->out, l->h, l->w, l->cout);
      break;
    case LAYER_POOL:
      l->ho = l->wo = 1;
      set_shape(m, l->out, 1, 1, l->cout);
      break;
    case LAYER_LINEAR:
      l->ho = l->wo = 1;
      if (l->pre >= 0) set_shape(m, l->pre, 1, 1, l->cout);
      set_shape(m, l->out, 1, 1, l->cout);
      break;
    }
  }
  /* Tensor 0 is not allocated: it points at the caller's images, which backward reads. A
   * recomputed tensor borrows from the gradient pool, whose buffers fit any tensor. */
  plan_recompute(m);
  for (int t = 1; t < m->n_tensors; t++) {
    size_t n = m->tensors[t].per_image * (size_t)batch;
    if (n > largest) largest = n;
    if (!recomputed(m, t)) m->tensors[t].data = m->ops->act_alloc(m, n);
  }
  size_t logits = (size_t)batch * m->cfg.num_classes;
  m->n_save = save, m->n_scratch = scratch, m->grad_floats = largest;
  m->save = m->ops->act_alloc(m, save ? save : 1);
  m->scratch = m->ops->act_alloc(m, scratch ? scratch : 1);
  m->probs = xmalloc_aligned(logits * sizeof(float)); /* on the host: read by the caller */
  m->ops->shape_alloc(m, batch, size);
}

/* ---- the device ---------------------------------------------------------------------- */

void model_use_cuda(model *m, int gemm_math) {
  if (model_cuda_ctx(m)) return; /* already there */
  int batch = m->batch, size = m->size;
  free_activations(m);
  model_cuda_open(m, gemm_math);
  model_sync_to_device(m);
  if (batch) model_prepare(m, batch, size);
}

void model_sync_to_host(model *m) { m->ops->sync_to_host(m); }
void model_sync_to_device(model *m) { m->ops->sync_to_device(m); }
void model_wait(model *m) { m->ops->wait(m); }
float *model_live_params(model *m) { return m->live_params; }
float *model_live_grads(model *m) { return m->live_grads; }
void *model_host_alloc(const model *m, size_t bytes) { return m->ops->host_alloc(m, bytes); }
void model_host_free(const model *m, void *p) { m->ops->host_free(m, p); }

size_t model_activation_bytes(const model *m) {
  size_t floats = m->n_save + m->n_scratch + (size_t)m->n_grad_pool * m->grad_floats;
  for (int t = 1; t < m->n_tensors; t++)
    if (!recomputed(m, t)) floats += m->tensors[t].per_image * (size_t)m->batch;
  return floats * sizeof(float);
}

double model_macs(const model *m, int size) {
  /* Walk spatial sizes without touching the prepared state. */
  int *h = xcalloc((size_t)m->n_tensors, sizeof *h);
  h[0] = size;
  double macs = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const layer *l = &m->layers[i];
    int hi = h[l->in], ho = hi;
    switch (l->kind) {
    case LAYER_CONV:
      ho = conv_out_size(hi, l->k, l->stride);
      if (l->conv == CONV_FULL) macs += (double)ho * ho * l->cout * l->k * l->k * l->cin;
      else if (l->conv == CONV_DEPTHWISE) macs += (double)ho * ho * l->cout * l->k * l->k;
      else macs += (double)ho * ho * l->cin * l->cout;
      h[l->pre] = ho;
      break;
    case LAYER_SE: macs += 2.0 * l->cin * l->squeeze + (double)hi * hi * l->cin; break;
    case LAYER_POOL: ho = 1; break;
    case LAYER_LINEAR:
      ho = 1;
      macs += (double)l->cin * l->cout;
      if (l->pre >= 0) h[l->pre] = 1;
      break;
    default: break;
    }
    h[l->out] = ho;
  }
  free(h);
  return macs;
}

const param_info *model_find_param(const model *m, const char *name) {
  for (int i = 0; i < m->n_param; i++)
    if (!strcmp(m->param[i].name, name)) return &m->param[i];
  return NULL;
}

uint64_t model_hash(const model *m) {
  uint64_t h = hash_bytes(m->params, m->n_params * sizeof(float), 0);
  h = hash_bytes(m->stats, m->n_stats * sizeof(float), h);
  return hash_bytes(m->bn_tracked, (size_t)m->n_bn * sizeof(int64_t), h);
}

uint64_t model_hash_params(const model *m) {
  return hash_bytes(m->params, m->n_params * sizeof(float), 0);
}

const float *model_logits(const model *m) { return m->ops->logits(m); }

void model_zero_grads(model *m) { m->ops->memset0(m, m->live_grads, m->n_params * sizeof(float)); }

/* ---- profiling ---------------------------------------------------------------------- */

void model_profile(model *m, int on) {
  if (on && !m->prof) {
    m->prof = xcalloc(2 * (size_t)m->n_layers, sizeof *m->prof);
    m->prof_steps = 0;
  } else if (!on) {
    free(m->prof);
    m->prof = NULL;
  }
}

/* The time after everything queued so far has run. */
static double layer_clock(model *m) {
  model_wait(m);
  return time_now();
}

static const char *layer_label(const layer *l) {
  switch (l->kind) {
  case LAYER_CONV: return l->conv == CONV_FULL ? "conv" : l->conv == CONV_DEPTHWISE ? "dwconv" : "pwconv";
  case LAYER_SE: return "se";
  case LAYER_ADD: return "add";
  case LAYER_POOL: return "pool";
  case LAYER_LINEAR: return "linear";
  case LAYER_DROPOUT: return "dropout";
  }
  return "?";
}

void model_profile_print(const model *m, FILE *to, int top) {
  if (!m->prof || m->prof_steps == 0) return;
  double per = 1e3 / m->prof_steps, total = 0;
  int *order = xmalloc((size_t)m->n_layers * sizeof *order);
  for (int i = 0; i < m->n_layers; i++) total += m->prof[2 * i] + m->prof[2 * i + 1], order[i] = i;
  for (int i = 1; i < m->n_layers; i++) /* insertion sort, slowest first */
    for (int j = i; j > 0; j--) {
      int a = order[j - 1], b = order[j];
      if (m->prof[2 * a] + m->prof[2 * a + 1] >= m->prof[2 * b] + m->prof[2 * b + 1]) break;
      order[j - 1] = b, order[j] = a;
    }
  fprintf(to, "per-layer time over %d steps (ms per step; each layer waited for):\n", m->prof_steps);
  fprintf(to, "  %-5s %-8s %-16s %-6s %9s %9s %6s\n", "layer", "kind", "input HxWxC", "out C", "forward", "backward", "share");
  for (int r = 0; r < m->n_layers && r < top; r++) {
    const layer *l = &m->layers[order[r]];
    char shape[32];
    snprintf(shape, sizeof shape, "%dx%dx%d", l->h, l->w, l->cin);
    double f = m->prof[2 * order[r]], b = m->prof[2 * order[r] + 1];
    fprintf(to, "  %-5d %-8s %-16s %-6d %9.3f %9.3f %5.1f%%\n", order[r], layer_label(l), shape, l->cout,
            f * per, b * per, 100 * (f + b) / total);
  }
  static const char *kinds[] = {"conv", "dwconv", "pwconv", "se", "add", "pool", "linear", "dropout"};
  fprintf(to, "  by kind:");
  for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
    double f = 0, b = 0;
    for (int i = 0; i < m->n_layers; i++)
      if (!strcmp(layer_label(&m->layers[i]), kinds[k])) f += m->prof[2 * i], b += m->prof[2 * i + 1];
    if (f + b > 0) fprintf(to, "  %s %.2f+%.2f", kinds[k], f * per, b * per);
  }
  fprintf(to, "  (forward+backward ms); all layers %.2f ms\n", total * per);
  free(order);
}

/* ---- the buffer pool ------------------------------------------------------------- */

/* Gradient buffers come from a small pool of largest-tensor-sized buffers: a tensor's
 * gradient lives only from the layer that produces it to the layer that consumes it. So do
 * the recomputed activations, in forward and in backward. The pool grows during the first
 * step and is reused afterwards. */
static float *pool_acquire(model *m) {
  for (int i = 0; i < m->n_grad_pool; i++) {
    float *b = m->grad_pool[i];
    if (b) {
      m->grad_pool[i] = NULL;
      return b;
    }
  }
  return m->ops->act_alloc(m, m->grad_floats);
}

static void pool_release(model *m, float *b) {
  for (int i = 0; i < m->n_grad_pool; i++)
    if (!m->grad_pool[i]) {
      m->grad_pool[i] = b;
      return;
    }
  if (m->n_grad_pool == m->grad_pool_cap) {
    m->grad_pool_cap = m->grad_pool_cap ? 2 * m->grad_pool_cap : 8;
    m->grad_pool = xrealloc(m->grad_pool, (size_t)m->grad_pool_cap * sizeof *m->grad_pool);
  }
  m->grad_pool[m->n_grad_pool++] = b;
}

/* ---- forward ----------------------------------------------------------------------- */

/* After layer i: a recomputed tensor that layer i read last goes back to the pool. */
static void release_after(model *m, int i, int t) {
  tensor *x = &m->tensors[t];
  if (recomputed(m, t) && x->last_read == i && x->data) {
    pool_release(m, x->data);
    x->data = NULL;
  }
}

/* The stochastic-depth mask of ADD layer i this step: its own stream of the step's seed. */
static uint64_t drop_path_seed(const model *m, int i) { return hash_mix(m->dropout_seed, (uint64_t)i); }

/* train: BN normalises with the batch's statistics and updates its running averages;
 * stochastic: dropout and stochastic depth drop (training, but not precise BN's passes). */
static void forward_layers(model *m, const float *images, const int *labels, int N, int train, int stochastic) {
  POLLEN_ASSERT(m->batch > 0 && N >= 1 && N <= m->batch);
  const model_ops *ops = m->ops;
  /* read-only: the stem reads it again in backward */
  m->tensors[0].data = (float *)ops->stage_inputs(m, images, labels, N);
  const float *P = m->live_params;
  float *S = m->live_stats;
  if (m->prof && train) m->prof_steps++;
  for (int i = 0; i < m->n_layers; i++) {
    const layer *l = &m->layers[i];
    if (recomputed(m, l->out)) m->tensors[l->out].data = pool_acquire(m);
    const float *in = m->tensors[l->in].data;
    float *out = m->tensors[l->out].data;
    double t0 = m->prof ? layer_clock(m) : 0;
    switch (l->kind) {
    case LAYER_CONV: {
      float *x = m->tensors[l->pre].data;
      float *stats = S + m->bn[l->bn].offset;
      if (!train) {
        ops->conv_bn_act_forward_eval(m, out, x, in, P + l->weight, l->conv, P + l->gamma,
                                      P + l->beta, stats, stats + l->cout, m->bn_eps, N, l->h,
                                      l->w, l->cin, l->cout, l->k, l->stride, l->act, m->scratch);
        break;
      }
      float *mean = m->save + l->save;
      ops->conv_bn_act_forward_train(m, out, x, mean, mean + l->cout, stats, stats + l->cout, in,
                                     P + l->weight, l->conv, P + l->gamma, P + l->beta,
                                     m->bn_eps, m->bn_momentum, N, l->h, l->w, l->cin, l->cout,
                                     l->k, l->stride, l->act, m->scratch);
      m->bn_tracked[l->bn]++;
      break;
    }
    case LAYER_SE:
      ops->se_forward(m, out, m->save + l->save, in, P + l->weight, P + l->bias, P + l->weight2,
                      P + l->bias2, N, l->h * l->w, l->cin, l->squeeze);
      break;
    case LAYER_ADD:
      if (stochastic && l->drop_path > 0.0f)
        ops->drop_path_forward(m, out, in, m->tensors[l->skip].data, N,
                               m->tensors[l->out].per_image, l->drop_path, drop_path_seed(m, i));
      else
        ops->residual_forward(m, out, in, m->tensors[l->skip].data,
                              (size_t)N * m->tensors[l->out].per_image);
      break;
    case LAYER_POOL:
      ops->avgpool_forward(m, out, in, N, l->h * l->w, l->cin);
      break;
    case LAYER_LINEAR:
      if (l->pre >= 0) {
        float *x = m->tensors[l->pre].data;
        ops->linear_forward(m, x, in, P + l->weight, P + l->bias, N, l->cin, l->cout);
        ops->act_forward(m, out, x, (size_t)N * l->cout, l->act);
      } else {
        ops->linear_forward(m, out, in, P + l->weight, P + l->bias, N, l->cin, l->cout);
      }
      break;
    case LAYER_DROPOUT: {
      size_t n = (size_t)N * l->cout;
      if (stochastic && m->cfg.dropout > 0.0f)
        ops->dropout_forward(m, out, in, n, m->cfg.dropout, m->dropout_seed);
      else
        ops->copy(m, out, in, n * sizeof(float));
      break;
    }
    }
    release_after(m, i, l->in);
    if (l->kind == LAYER_ADD) release_after(m, i, l->skip);
    if (m->prof) m->prof[2 * i] += layer_clock(m) - t0;
  }
}

float model_forward(model *m, const float *images, const int *labels, int N, int train, float smoothing) {
  forward_layers(m, images, labels, N, train, train);
  return m->ops->loss_forward(m, labels, N, smoothing);
}

/* The loss is linear in the target: lam L(labels) + (1 - lam) L(labels2), and so is its
 * gradient (backward). */
float model_forward_mixed(model *m, const float *images, const int *labels, const int *labels2, float lam, int N,
                          float smoothing) {
  POLLEN_ASSERT(!m->dev); /* the GPU's loss reads its own copy of the labels */
  forward_layers(m, images, labels, N, 1, 1);
  float second = m->ops->loss_forward(m, labels2, N, smoothing);
  float first = m->ops->loss_forward(m, labels, N, smoothing); /* m->probs are the same either way */
  return lam * first + (1.0f - lam) * second;
}

/* ---- backward ---------------------------------------------------------------------- */

/* Where a layer writes the gradient of its input t: t's own buffer the first time; a
 * temporary to be accumulated (grad_finish) when another consumer already gave t one. */
static float *grad_target(model *m, int t, int *accumulate) {
  *accumulate = m->grad_of[t] != NULL;
  float *b = pool_acquire(m);
  if (!*accumulate) m->grad_of[t] = b;
  return b;
}

static void grad_finish(model *m, int t, float *b, int accumulate, int N) {
  if (!accumulate) return;
  m->ops->residual_backward(m, m->grad_of[t], b, (size_t)N * m->tensors[t].per_image);
  pool_release(m, b);
}

/* The forward input of layer l, for its backward: kept, or recomputed from its producer's
 * conv output into a pool buffer (*borrowed, for the caller to release). */
static const float *backward_input(model *m, const layer *l, int N, float **borrowed) {
  const tensor *t = &m->tensors[l->in];
  *borrowed = NULL;
  if (!recomputed(m, l->in)) return t->data;
  const layer *p = &m->layers[t->producer];
  const float *mean = m->save + p->save, *P = m->live_params;
  float *y = pool_acquire(m);
  m->ops->bn_act_recompute(m, y, m->tensors[p->pre].data, mean, mean + p->cout, P + p->gamma,
                           P + p->beta, N * p->ho * p->wo, p->cout, p->act);
  return *borrowed = y;
}

void model_backward(model *m, const int *labels, int N, float smoothing) {
  model_backward_mixed(m, labels, NULL, 1.0f, N, smoothing);
}

void model_backward_mixed(model *m, const int *labels, const int *labels2, float lam, int N, float smoothing) {
  const model_ops *ops = m->ops;
  const float *P = m->live_params;
  float *G = m->live_grads;
  float *dlogits = pool_acquire(m);
  ops->loss_backward(m, dlogits, labels, N, smoothing);
  if (labels2) {
    POLLEN_ASSERT(!m->dev);
    float *second = pool_acquire(m);
    ops->loss_backward(m, second, labels2, N, smoothing);
    size_t n = (size_t)N * m->cfg.num_classes;
    for (size_t i = 0; i < n; i++) dlogits[i] = lam * dlogits[i] + (1.0f - lam) * second[i];
    pool_release(m, second);
  }
  m->grad_of[m->logits_tensor] = dlogits;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const layer *l = &m->layers[i];
    float *g = m->grad_of[l->out];
    POLLEN_ASSERT(g != NULL);
    m->grad_of[l->out] = NULL;
    /* Only these read their forward input in backward. */
    float *borrowed = NULL;
    const float *in = l->kind == LAYER_CONV || l->kind == LAYER_SE || l->kind == LAYER_LINEAR
                          ? backward_input(m, l, N, &borrowed)
                          : NULL;
    int acc = 0;
    float *d = NULL;
    double t0 = m->prof ? layer_clock(m) : 0;
    switch (l->kind) {
    case LAYER_CONV: {
      const float *x = m->tensors[l->pre].data;
      int M = N * l->ho * l->wo;
      const float *mean = m->save + l->save, *rstd = mean + l->cout;
      ops->batchnorm_act_backward(m, g, G + l->gamma, G + l->beta, g, x, mean, rstd, P + l->gamma,
                                  P + l->beta, M, l->cout, l->act);
      if (l->in != 0) d = grad_target(m, l->in, &acc);
      if (l->conv == CONV_FULL)
        ops->conv2d_backward(m, d, G + l->weight, g, in, P + l->weight, N, l->h, l->w, l->cin,
                             l->cout, l->k, l->stride, m->scratch);
      else if (l->conv == CONV_DEPTHWISE)
        ops->dwconv_backward(m, d, G + l->weight, g, in, P + l->weight, N, l->h, l->w, l->cin,
                             l->k, l->stride);
      else
        ops->linear_backward(m, d, G + l->weight, NULL, g, in, P + l->weight, M, l->cin, l->cout);
      if (d) grad_finish(m, l->in, d, acc, N);
      pool_release(m, g);
      break;
    }
    case LAYER_SE:
      d = grad_target(m, l->in, &acc);
      ops->se_backward(m, d, G + l->weight, G + l->bias, G + l->weight2, G + l->bias2, g, in,
                       m->save + l->save, P + l->weight, P + l->weight2, N, l->h * l->w, l->cin,
                       l->squeeze);
      grad_finish(m, l->in, d, acc, N);
      pool_release(m, g);
      break;
    case LAYER_ADD: {
      size_t per_image = m->tensors[l->out].per_image, n = (size_t)N * per_image;
      /* The skip branch gets its own copy; the main branch takes over g (scaled by its
       * stochastic-depth mask, after the copy). */
      if (m->grad_of[l->skip]) {
        ops->residual_backward(m, m->grad_of[l->skip], g, n);
      } else {
        float *s = pool_acquire(m);
        ops->copy(m, s, g, n * sizeof(float));
        m->grad_of[l->skip] = s;
      }
      if (l->drop_path > 0.0f)
        ops->drop_path_backward(m, g, g, N, per_image, l->drop_path, drop_path_seed(m, i));
      if (m->grad_of[l->in]) {
        ops->residual_backward(m, m->grad_of[l->in], g, n);
        pool_release(m, g);
      } else {
        m->grad_of[l->in] = g;
      }
      break;
    }
    case LAYER_POOL:
      d = grad_target(m, l->in, &acc);
      ops->avgpool_backward(m, d, g, N, l->h * l->w, l->cin);
      grad_finish(m, l->in, d, acc, N);
      pool_release(m, g);
      break;
    case LAYER_LINEAR:
      if (l->pre >= 0)
        ops->act_backward(m, g, g, m->tensors[l->pre].data, (size_t)N * l->cout, l->act);
      d = grad_target(m, l->in, &acc);
      ops->linear_backward(m, d, G + l->weight, G + l->bias, g, in, P + l->weight, N, l->cin,
                           l->cout);
      grad_finish(m, l->in, d, acc, N);
      pool_release(m, g);
      break;
    case LAYER_DROPOUT:
      if (m->cfg.dropout > 0.0f)
        ops->dropout_backward(m, g, g, (size_t)N * l->cout, m->cfg.dropout, m->dropout_seed);
      POLLEN_ASSERT(m->grad_of[l->in] == NULL);
      m->grad_of[l->in] = g;
      break;
    }
    if (borrowed) pool_release(m, borrowed);
    if (m->prof) m->prof[2 * i + 1] += layer_clock(m) - t0;
    if (m->grads_ready && (l->kind == LAYER_CONV || l->kind == LAYER_SE || l->kind == LAYER_LINEAR))
      m->grads_ready(m->grads_ready_ctx, l->weight);
  }
}
