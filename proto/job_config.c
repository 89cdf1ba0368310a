/* job_config.c - the frozen job definition as JSON (cJSON). */
#include "proto/job_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"

void job_config_defaults(job_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->model, sizeof c->model, "mnv3-small");
  c->width = 1.0;
  c->size = 224;
  c->batch = 32;
  c->epochs = 10;
  snprintf(c->opt, sizeof c->opt, "rmsprop");
  snprintf(c->rmsprop, sizeof c->rmsprop, "tf");
  c->lr = 1e-3;
  c->alpha = 0.9, c->eps = 1e-7, c->beta1 = 0.9, c->beta2 = 0.999;
  snprintf(c->schedule, sizeof c->schedule, "cosine");
  c->step_gamma = 0.1, c->step_epochs = 30;
  c->dropout = 0.2;
  c->augment = 1;
  c->seed = 1;
  c->log_every = 10;
  c->decoded_cache_mib = 1024;
  snprintf(c->device, sizeof c->device, "auto");
  snprintf(c->precision, sizeof c->precision, "fp32");
  c->keep = 3;
  c->replicas = 1;
  c->overlap = 1;
  c->tensorboard = 1;
  c->precise_bn = -1;
  c->ema_every = 32;
  c->bucket_kib = 1024;
  c->stall_timeout = 30.0;
}

/* One table drives JSON writing, reading and diffing of the definition. */
typedef enum { F_STR, F_DOUBLE, F_INT, F_U64 } field_type;
typedef struct {
  const char *name;
  field_type type;
  int optional; /* absent from the JSON (and the hash) at its zero value; zero when missing */
  size_t offset, size;
} field;

#define S(f) {#f, F_STR, 0, offsetof(job_config, f), sizeof(((job_config *)0)->f)}
#define OPT_S(f) {#f, F_STR, 1, offsetof(job_config, f), sizeof(((job_config *)0)->f)}
#define OPT_D(f) {#f, F_DOUBLE, 1, offsetof(job_config, f), 0}
#define D(f) {#f, F_DOUBLE, 0, offsetof(job_config, f), 0}
#define I(f) {#f, F_INT, 0, offsetof(job_config, f), 0}
#define U(f) {#f, F_U64, 0, offsetof(job_config, f), 0}
static const field fields[] = {
    S(data_dir), S(model),  D(width),  I(size),      I(batch),         I(epochs),
    S(opt),      D(lr),     D(momentum), D(weight_decay), D(eps),      D(alpha),
    D(beta1),    D(beta2),  D(clip_norm), I(nesterov), I(decay_all),   S(rmsprop),
    S(schedule), D(warmup_epochs), D(step_gamma), D(min_lr), I(step_epochs),
    D(label_smoothing), D(dropout), I(augment), U(seed), S(init_weights),
    OPT_S(auto_augment), OPT_D(random_erase), OPT_D(mixup_alpha), OPT_D(cutmix_alpha),
    OPT_D(crop_scale), OPT_D(drop_path),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static int is_zero(const field *f, const void *p) {
  switch (f->type) {
  case F_STR: return !*(const char *)p;
  case F_DOUBLE: return *(const double *)p == 0;
  case F_INT: return *(const int *)p == 0;
  default: return *(const uint64_t *)p == 0;
  }
}

static cJSON *to_json(const job_config *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "version", JOB_CONFIG_VERSION);
  for (size_t i = 0; i < N_FIELDS; i++) {
    const void *p = (const char *)c + fields[i].offset;
    char text[32];
    if (fields[i].optional && is_zero(&fields[i], p)) continue;
    switch (fields[i].type) {
    case F_STR: cJSON_AddStringToObject(o, fields[i].name, (const char *)p); break;
    case F_DOUBLE: cJSON_AddNumberToObject(o, fields[i].name, *(const double *)p); break;
    case F_INT: cJSON_AddNumberToObject(o, fields[i].name, *(const int *)p); break;
    case F_U64:
      /* 64-bit seeds do not fit a JSON number exactly: store as a decimal string. */
      snprintf(text, sizeof text, "%llu", (unsigned long long)*(const uint64_t *)p);
      cJSON_AddStringToObject(o, fields[i].name, text);
      break;
    }
  }
  return o;
}

char *job_config_definition_json(const job_config *c) {
  cJSON *o = to_json(c);
  char *s = cJSON_Print(o);
  cJSON_Delete(o);
  if (!s) die("out of memory writing the job config");
  return s;
}

void job_config_hash(const job_config *c, char out[17]) {
  char *s = job_config_definition_json(c);
  snprintf(out, 17, "%016llx", (unsigned long long)hash_bytes(s, strlen(s), 0x706f6c6c656e));
  free(s);
}

void job_config_save(const job_config *c, const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  char *s = job_config_definition_json(c);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("cannot write %s: %s; check the --job folder", tmp, strerror(errno));
  size_t n = strlen(s);
  if (write(fd, s, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd) != 0)
    die("cannot write %s: %s", tmp, strerror(errno));
  close(fd);
  free(s);
  if (rename(tmp, path) != 0) die("cannot rename %s to %s: %s", tmp, path, strerror(errno));
}

int job_config_load(job_config *c, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return 1;
    die("cannot read %s: %s", path, strerror(errno));
  }
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  cJSON *o = cJSON_ParseWithLength(buf, n);
  if (!o || !cJSON_IsObject(o))
    die("%s is not valid JSON; restore it or delete the job folder to start over", path);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
  if (!cJSON_IsNumber(v) || v->valueint != JOB_CONFIG_VERSION)
    die("%s has config version %d, this pollen reads %d; start a new job folder", path,
        cJSON_IsNumber(v) ? v->valueint : -1, JOB_CONFIG_VERSION);
  for (size_t i = 0; i < N_FIELDS; i++) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, fields[i].name);
    void *p = (char *)c + fields[i].offset;
    int ok = 0;
    if (!x && fields[i].optional) {
      memset(p, 0, fields[i].type == F_STR ? fields[i].size : fields[i].type == F_DOUBLE ? sizeof(double)
                                                            : fields[i].type == F_INT  ? sizeof(int)
                                                                                       : sizeof(uint64_t));
      continue;
    }
    switch (fields[i].type) {
    case F_STR:
      if ((ok = cJSON_IsString(x) && strlen(x->valuestring) < fields[i].size))
        snprintf((char *)p, fields[i].size, "%s", x->valuestring);
      break;
    case F_DOUBLE:
      if ((ok = cJSON_IsNumber(x))) *(double *)p = x->valuedouble;
      break;
    case F_INT:
      if ((ok = cJSON_IsNumber(x))) *(int *)p = (int)x->valuedouble;
      break;
    case F_U64:
      if ((ok = cJSON_IsString(x))) *(uint64_t *)p = strtoull(x->valuestring, NULL, 10);
      break;
    }
    if (!ok) die("%s: field '%s' is missing or malformed; restore the file", path, fields[i].name);
  }
  cJSON_Delete(o);
  return 0;
}

int job_config_diff(const job_config *a, const job_config *b, char *msg, size_t cap) {
  for (size_t i = 0; i < N_FIELDS; i++) {
    const char *pa = (const char *)a + fields[i].offset, *pb = (const char *)b + fields[i].offset;
    switch (fields[i].type) {
    case F_STR:
      if (strcmp(pa, pb)) {
        snprintf(msg, cap, "%s: frozen '%s', now '%s'", fields[i].name, pa, pb);
        return 1;
      }
      break;
    case F_DOUBLE:
      if (*(const double *)pa != *(const double *)pb) {
        snprintf(msg, cap, "%s: frozen %.17g, now %.17g", fields[i].name, *(const double *)pa, *(const double *)pb);
        return 1;
      }
      break;
    case F_INT:
      if (*(const int *)pa != *(const int *)pb) {
        snprintf(msg, cap, "%s: frozen %d, now %d", fields[i].name, *(const int *)pa, *(const int *)pb);
        return 1;
      }
      break;
    case F_U64:
      if (*(const uint64_t *)pa != *(const uint64_t *)pb) {
        snprintf(msg, cap, "%s: frozen %llu, now %llu", fields[i].name,
                 (unsigned long long)*(const uint64_t *)pa, (unsigned long long)*(const uint64_t *)pb);
        return 1;
      }
      break;
    }
  }
  return 0;
}
