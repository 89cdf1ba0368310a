/* weights.c - safetensors import/export with torchvision names (see weights.h). */
#include "worker/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/core.h"

/* Index maps between torchvision's order (o, c, s) and the engine's. */
static size_t engine_index(const param_info *p, int64_t o, int64_t c, int64_t s, int64_t ci,
                           int64_t kk) {
  if (p->layout == PARAM_CONV_OHWI) return (size_t)((o * kk + s) * ci + c);
  if (p->layout == PARAM_DW_HWC) return (size_t)(s * p->shape[0] + o);
  return (size_t)((o * ci + c) * kk + s);
}

static void convert(const param_info *p, const float *src, float *dst, int to_torch) {
  if (p->layout == PARAM_PLAIN) {
    memcpy(dst, src, p->numel * sizeof(float));
    return;
  }
  int64_t o = p->shape[0], ci = p->shape[1], kk = p->shape[2] * p->shape[3];
  for (int64_t a = 0; a < o; a++)
    for (int64_t c = 0; c < ci; c++)
      for (int64_t s = 0; s < kk; s++) {
        size_t t = (size_t)((a * ci + c) * kk + s), e = engine_index(p, a, c, s, ci, kk);
        if (to_torch) dst[t] = src[e];
        else dst[e] = src[t];
      }
}

void weights_to_torch(const param_info *p, const float *engine, float *torch) {
  convert(p, engine, torch, 1);
}

void weights_from_torch(const param_info *p, const float *torch, float *engine) {
  convert(p, torch, engine, 0);
}

void weights_images_from_torch(const float *nchw, float *nhwc, int n, int hw) {
  for (int b = 0; b < n; b++)
    for (int c = 0; c < 3; c++)
      for (int p = 0; p < hw; p++) nhwc[((size_t)b * hw + p) * 3 + c] = nchw[((size_t)b * 3 + c) * hw + p];
}

void weights_add_state_dict(const model *m, st_writer *w) {
  char name[192], text[64];
  float *tmp = xmalloc(m->n_params * sizeof(float));
  for (int i = 0; i < m->n_param; i++) {
    const param_info *p = &m->param[i];
    weights_to_torch(p, m->params + p->offset, tmp);
    st_writer_add_f32(w, p->name, p->ndim, p->shape, tmp);
  }
  free(tmp);
  for (int b = 0; b < m->n_bn; b++) {
    const bn_info *bn = &m->bn[b];
    int64_t c[1] = {bn->channels};
    snprintf(name, sizeof name, "%s.running_mean", bn->prefix);
    st_writer_add_f32(w, name, 1, c, m->stats + bn->offset);
    snprintf(name, sizeof name, "%s.running_var", bn->prefix);
    st_writer_add_f32(w, name, 1, c, m->stats + bn->offset + bn->channels);
    snprintf(name, sizeof name, "%s.num_batches_tracked", bn->prefix);
    st_writer_add_i64(w, name, 0, NULL, &m->bn_tracked[b]);
  }
  st_writer_meta(w, "format", "pollen-weights");
  st_writer_meta(w, "model", model_arch_name(m->cfg.arch));
  snprintf(text, sizeof text, "%.17g", m->cfg.width);
  st_writer_meta(w, "width", text);
  snprintf(text, sizeof text, "%d", m->cfg.num_classes);
  st_writer_meta(w, "classes", text);
  st_writer_meta(w, "pollen_version", POLLEN_VERSION);
}

int weights_export(const model *m, const char *path, const char *const *class_names, int image_size, char *err,
                   size_t errlen) {
  st_writer *w = st_writer_new();
  weights_add_state_dict(m, w);
  char text[32];
  if (image_size > 0) {
    snprintf(text, sizeof text, "%d", image_size);
    st_writer_meta(w, "image_size", text);
  }
  /* The loader's (worker/loader.c): another framework must feed the same inputs. */
  st_writer_meta(w, "normalization", WEIGHTS_NORMALIZATION);
  if (class_names) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < m->cfg.num_classes; k++) cJSON_AddItemToArray(a, cJSON_CreateString(class_names[k]));
    char *text = cJSON_PrintUnformatted(a);
    st_writer_meta(w, "class_names", text);
    free(text);
    cJSON_Delete(a);
  }
  int rc = st_writer_save(w, path, err, errlen);
  st_writer_free(w);
  return rc;
}

static int is_last_linear(const model *m, const param_info *p) {
  const layer *last = &m->layers[m->n_layers - 1];
  return p->offset == last->weight || p->offset == last->bias;
}

static int shape_equal(const st_tensor *t, const param_info *p) {
  int tnd = t->ndim;
  if (tnd != p->ndim) return 0;
  for (int i = 0; i < tnd; i++)
    if (t->shape[i] != p->shape[i]) return 0;
  return 1;
}

void weights_load_state_dict(model *m, const st_file *f, const char *prefix, int skip_classifier,
                             int strict) {
  char name[320];
  float *tmp = xmalloc(m->n_params * sizeof(float));
  int used = 0;
  for (int i = 0; i < m->n_param; i++) {
    const param_info *p = &m->param[i];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const st_tensor *t = st_find(f, name);
    if (!t)
      die("%s: tensor '%s' is missing; the file is not a %s state dict (check --model, --width "
          "and the dataset's class count)", f->path, name, model_arch_name(m->cfg.arch));
    used++;
    if (!shape_equal(t, p)) {
      if (skip_classifier && is_last_linear(m, p)) {
        log_info("%s: keeping the freshly initialised %s (class count differs)", f->path, name);
        continue;
      }
      die("%s: tensor '%s' has shape %s than the model's; check --model, --width and the dataset's class count",
          f->path, name, t->ndim != p->ndim ? "another rank" : "other dimensions");
    }
    if (st_copy_f32(t, tmp, p->numel) != 0)
      die("%s: tensor '%s' is %s, expected a float type", f->path, name, st_dtype_name(t->dtype));
    weights_from_torch(p, tmp, m->params + p->offset);
  }
  for (int b = 0; b < m->n_bn; b++) {
    const bn_info *bn = &m->bn[b];
    const char *suffix[2] = {"running_mean", "running_var"};
    for (int s = 0; s < 2; s++) {
      snprintf(name, sizeof name, "%s%s.%s", prefix, bn->prefix, suffix[s]);
      const st_tensor *t = st_find(f, name);
      if (!t || t->numel != (uint64_t)bn->channels || st_copy_f32(t, tmp, t->numel) != 0)
        die("%s: tensor '%s' is missing or malformed; the file is not a %s state dict", f->path,
            name, model_arch_name(m->cfg.arch));
      memcpy(m->stats + bn->offset + (size_t)s * bn->channels, tmp, bn->channels * sizeof(float));
      used++;
    }
    snprintf(name, sizeof name, "%s%s.num_batches_tracked", prefix, bn->prefix);
    const st_tensor *t = st_find(f, name);
    if (t) {
      int64_t v = 0;
      if (t->numel != 1 || st_copy_i64(t, &v, 1) != 0)
        die("%s: tensor '%s' must be one integer", f->path, name);
      m->bn_tracked[b] = v;
      used++;
    }
  }
  free(tmp);
  if (strict && used != f->n_tensors) {
    for (int i = 0; i < f->n_tensors; i++) {
      const char *n = f->tensors[i].name;
      int known = model_find_param(m, n) != NULL;
      for (int b = 0; b < m->n_bn && !known; b++)
        known = !strncmp(n, m->bn[b].prefix, strlen(m->bn[b].prefix)) &&
                n[strlen(m->bn[b].prefix)] == '.';
      char shown[4 * ST_MAX_NAME + 1]; /* a name from the file: untrusted text */
      if (!known)
        die("%s: unexpected tensor '%s' for a %s model; check --model and --width", f->path,
            name_escape(n, shown, sizeof shown), model_arch_name(m->cfg.arch));
    }
  }
}

char **weights_class_names(const st_file *f, int num_classes) {
  const char *text = st_meta(f, "class_names");
  if (!text) return NULL;
  cJSON *a = cJSON_Parse(text);
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != num_classes) {
    cJSON_Delete(a);
    return NULL;
  }
  char **names = xcalloc((size_t)num_classes, sizeof *names);
  for (int k = 0; k < num_classes; k++) {
    const cJSON *x = cJSON_GetArrayItem(a, k);
    names[k] = xstrdup(cJSON_IsString(x) ? x->valuestring : "?");
  }
  cJSON_Delete(a);
  return names;
}

int weights_image_size(const st_file *f) {
  const char *t = st_meta(f, "image_size");
  char *end;
  long v = t ? strtol(t, &end, 10) : 0;
  return t && *t && !*end && v >= 32 && v <= 1024 ? (int)v : 0;
}

int weights_read_config(const st_file *f, model_config *cfg) {
  const char *model_name = st_meta(f, "model"), *width = st_meta(f, "width");
  const char *classes = st_meta(f, "classes");
  if (!model_name || !width || !classes) return -1;
  int arch = model_arch_parse(model_name);
  char shown[4 * 64 + 1];
  if (arch < 0) die("%s: unknown model '%s' in its metadata", f->path, name_escape(model_name, shown, sizeof shown));
  cfg->arch = (model_arch)arch;
  cfg->width = strtod(width, NULL);
  cfg->num_classes = atoi(classes);
  return 0;
}

void weights_import(model *m, const char *path, int skip_classifier) {
  st_file *f = st_open_or_die(path);
  model_config cfg;
  if (weights_read_config(f, &cfg) == 0 &&
      (cfg.arch != m->cfg.arch || cfg.width != m->cfg.width ||
       (cfg.num_classes != m->cfg.num_classes && !skip_classifier)))
    die("%s: holds a %s width %g with %d classes, not the requested %s width %g with %d classes",
        path, model_arch_name(cfg.arch), (double)cfg.width, cfg.num_classes,
        model_arch_name(m->cfg.arch), (double)m->cfg.width, m->cfg.num_classes);
  weights_load_state_dict(m, f, "", skip_classifier, 1);
  st_close(f);
}
