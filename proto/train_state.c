/* train_state.c - the checkpoint's training-state schema (see train_state.h). */
#include "proto/train_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"

void train_state_bn_stats_name(int rank, char out[TRAIN_STATE_NAME_MAX]) {
  snprintf(out, TRAIN_STATE_NAME_MAX, TRAIN_STATE_BN_STATS_PREFIX "%d", rank);
}

int train_state_sections(const train_state_view *v, const train_state_shape *shape,
                         ckptf_section_in *sec, char (*names)[TRAIN_STATE_NAME_MAX]) {
  sec[0] = (ckptf_section_in){TRAIN_STATE_PARAMS, CKPTF_KIND_F32, v->params, shape->n_params * sizeof(float)};
  sec[1] = (ckptf_section_in){TRAIN_STATE_OPT_M, CKPTF_KIND_F32, v->opt_m, shape->n_opt * sizeof(float)};
  sec[2] = (ckptf_section_in){TRAIN_STATE_OPT_V, CKPTF_KIND_F32, v->opt_v, shape->n_opt * sizeof(float)};
  sec[3] = (ckptf_section_in){TRAIN_STATE_BN_TRACKED, CKPTF_KIND_U64, v->bn_tracked, (size_t)shape->n_bn * sizeof(int64_t)};
  for (int r = 0; r < v->stats_ranks; r++) {
    train_state_bn_stats_name(r, names[r]);
    sec[4 + r] = (ckptf_section_in){names[r], CKPTF_KIND_F32, v->bn_stats + (size_t)r * shape->n_stats,
                                    shape->n_stats * sizeof(float)};
  }
  int n = 4 + v->stats_ranks;
  if (v->ema_params)
    sec[n++] = (ckptf_section_in){TRAIN_STATE_EMA, CKPTF_KIND_F32, v->ema_params, shape->n_params * sizeof(float)};
  if (v->eval_bn_stats)
    sec[n++] = (ckptf_section_in){TRAIN_STATE_BN_EVAL, CKPTF_KIND_F32, v->eval_bn_stats, shape->n_stats * sizeof(float)};
  return n;
}

static const void *section_of(const ckptf_file *f, const char *path, const char *name, size_t bytes,
                              char *err, size_t errlen) {
  const ckptf_section *s = ckptf_find(f, name);
  if (s && s->len == bytes) return s->data;
  err_set(err, errlen,
          "%s: section '%s' is missing or has %llu bytes instead of %zu; the checkpoint is from "
          "another pollen version or model", path, name, s ? (unsigned long long)s->len : 0ull, bytes);
  return NULL;
}

int train_state_weights_from_file(const ckptf_file *f, const char *path, const train_state_shape *shape,
                                  train_state_view *v, float **bn_stats, char *err, size_t errlen) {
  memset(v, 0, sizeof *v);
  *bn_stats = NULL;
  if (!(v->params = section_of(f, path, TRAIN_STATE_PARAMS, shape->n_params * sizeof(float), err, errlen)) ||
      !(v->bn_tracked = section_of(f, path, TRAIN_STATE_BN_TRACKED, (size_t)shape->n_bn * sizeof(int64_t), err, errlen)))
    return -1;
  int ranks = f->meta.world_size;
  size_t bytes = shape->n_stats * sizeof(float);
  float *all = xmalloc((size_t)ranks * bytes + 1);
  for (int r = 0; r < ranks; r++) {
    char name[TRAIN_STATE_NAME_MAX];
    train_state_bn_stats_name(r, name);
    const void *s = section_of(f, path, name, bytes, err, errlen);
    if (!s) {
      free(all);
      return -1;
    }
    memcpy(all + (size_t)r * shape->n_stats, s, bytes);
  }
  v->bn_stats = *bn_stats = all;
  v->stats_ranks = ranks;
  if ((ckptf_find(f, TRAIN_STATE_BN_EVAL) &&
       !(v->eval_bn_stats = section_of(f, path, TRAIN_STATE_BN_EVAL, bytes, err, errlen))) ||
      (ckptf_find(f, TRAIN_STATE_EMA) &&
       !(v->ema_params = section_of(f, path, TRAIN_STATE_EMA, shape->n_params * sizeof(float), err, errlen)))) {
    free(all);
    *bn_stats = NULL;
    return -1;
  }
  return 0;
}

int train_state_from_file(const ckptf_file *f, const char *path, const train_state_shape *shape,
                          train_state_view *v, float **bn_stats, char *err, size_t errlen) {
  if (train_state_weights_from_file(f, path, shape, v, bn_stats, err, errlen) != 0) return -1;
  if ((v->opt_m = section_of(f, path, TRAIN_STATE_OPT_M, shape->n_opt * sizeof(float), err, errlen)) &&
      (v->opt_v = section_of(f, path, TRAIN_STATE_OPT_V, shape->n_opt * sizeof(float), err, errlen)))
    return 0;
  free(*bn_stats);
  *bn_stats = NULL;
  return -1;
}

cJSON *train_state_extra_json(const train_state_extra *x) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "optimizer_steps", (double)x->optimizer_steps);
  cJSON_AddNumberToObject(o, "lr", x->lr);
  cJSON_AddNumberToObject(o, "global_batch", x->global_batch);
  cJSON_AddNumberToObject(o, "best_val_acc", x->best_val_acc);
  cJSON_AddNumberToObject(o, "last_val_acc", x->last_val_acc);
  cJSON_AddNumberToObject(o, "num_classes", x->num_classes);
  cJSON_AddNumberToObject(o, "image_size", x->image_size);
  cJSON_AddStringToObject(o, "rng", "counter-based Philox: augmentation keyed by (seed, epoch, sample), dropout by (seed, step, rank); no state");
  cJSON_AddStringToObject(o, "reason", x->reason);
  if (x->ema_updates > 0) cJSON_AddNumberToObject(o, "ema_updates", (double)x->ema_updates);
  return o;
}

static double number_or(const cJSON *extra, const char *key, double fallback) {
  const cJSON *v = extra ? cJSON_GetObjectItemCaseSensitive(extra, key) : NULL;
  return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

void train_state_extra_read(const cJSON *extra, int64_t meta_step, train_state_extra *x) {
  memset(x, 0, sizeof *x);
  x->optimizer_steps = (int64_t)number_or(extra, "optimizer_steps", (double)meta_step);
  x->lr = number_or(extra, "lr", NAN);
  x->global_batch = (int)number_or(extra, "global_batch", 0);
  x->best_val_acc = number_or(extra, "best_val_acc", NAN);
  x->last_val_acc = number_or(extra, "last_val_acc", NAN);
  x->num_classes = (int)number_or(extra, "num_classes", 0);
  x->image_size = (int)number_or(extra, "image_size", 0);
  const cJSON *why = extra ? cJSON_GetObjectItemCaseSensitive(extra, "reason") : NULL;
  if (cJSON_IsString(why)) snprintf(x->reason, sizeof x->reason, "%s", why->valuestring);
  x->ema_updates = (int64_t)number_or(extra, "ema_updates", 0);
}

void bn_stats_mean(const float *per_rank, int ranks, size_t n, float *out) {
  for (size_t i = 0; i < n; i++) {
    double sum = 0;
    for (int r = 0; r < ranks; r++) sum += per_rank[(size_t)r * n + i];
    out[i] = (float)(sum / ranks);
  }
}
