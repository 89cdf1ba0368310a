/* manifest.c - manifest.json's strict reader and its writer (see manifest.h). */
#include "proto/manifest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/shard.h"

#define MANIFEST_MAX_BYTES (1 << 22)

/* "DIR/NAME", malloc'd. */
static char *path_in(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* ---------------------------------------------------------------- writing */

/* cJSON prints numbers with 15 significant digits when they compare equal within an epsilon,
 * which rounds a 16-digit seed; integers are written as their exact decimal text instead. */
static cJSON *integer(uint64_t v) {
  char text[24];
  snprintf(text, sizeof text, "%llu", (unsigned long long)v);
  return cJSON_CreateRaw(text);
}

static cJSON *split_json(const manifest_split *sp, int num_classes) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "count", integer((uint64_t)sp->count));
  cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
  for (int k = 0; k < num_classes; k++) cJSON_AddItemToArray(pc, integer((uint64_t)sp->per_class[k]));
  cJSON *arr = cJSON_AddArrayToObject(o, "shards");
  for (int j = 0; j < sp->n_shards; j++) {
    cJSON *sh = cJSON_CreateObject();
    char hex[16];
    snprintf(hex, sizeof hex, "%08x", sp->shards[j].crc32c);
    cJSON_AddStringToObject(sh, "file", sp->shards[j].file);
    cJSON_AddItemToObject(sh, "count", integer((uint64_t)sp->shards[j].count));
    cJSON_AddItemToObject(sh, "bytes", integer(sp->shards[j].bytes));
    cJSON_AddStringToObject(sh, "crc32c", hex);
    cJSON_AddItemToArray(arr, sh);
  }
  return o;
}

int manifest_write(const char *dir, const manifest_info *m, char *err, size_t errlen) {
  /* JSON is UTF-8: a name that is not would make the file unreadable to every JSON parser. */
  int utf8 = text_is_utf8(m->source);
  for (int k = 0; k < m->num_classes && utf8; k++) utf8 = text_is_utf8(m->classes[k]);
  if (!utf8) {
    err_set(err, errlen, "cannot write %s/%s: a class name or the source path is not UTF-8 (a pollen bug; please report it)",
            dir, MANIFEST_FILE);
    return -1;
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "format", "pollen-shards");
  cJSON_AddItemToObject(root, "format_version", integer(MANIFEST_FORMAT_VERSION));
  cJSON_AddStringToObject(root, "source", m->source);
  cJSON_AddStringToObject(root, "source_kind", m->source_kind);
  cJSON_AddItemToObject(root, "seed", integer(m->seed));
  cJSON_AddNumberToObject(root, "val_fraction", m->val_fraction);
  if (m->test_fraction > 0) cJSON_AddNumberToObject(root, "test_fraction", m->test_fraction);
  cJSON_AddItemToObject(root, "max_side", integer((uint64_t)m->max_side));
  cJSON_AddItemToObject(root, "shards", integer((uint64_t)m->shards));
  cJSON *cl = cJSON_AddArrayToObject(root, "classes");
  for (int k = 0; k < m->num_classes; k++) cJSON_AddItemToArray(cl, cJSON_CreateString(m->classes[k]));
  cJSON *sk = cJSON_AddObjectToObject(root, "skipped");
  cJSON_AddItemToObject(sk, "not_image", integer((uint64_t)m->skipped_not_image));
  cJSON_AddItemToObject(sk, "corrupt", integer((uint64_t)m->skipped_corrupt));
  cJSON_AddItemToObject(sk, "unreadable", integer((uint64_t)m->skipped_unreadable));
  cJSON *sp = cJSON_AddObjectToObject(root, "splits");
  cJSON_AddItemToObject(sp, "train", split_json(&m->train, m->num_classes));
  cJSON_AddItemToObject(sp, "val", split_json(&m->val, m->num_classes));
  if (m->test_fraction > 0) cJSON_AddItemToObject(sp, "test", split_json(&m->test, m->num_classes));
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  char *tmp = path_in(dir, MANIFEST_FILE ".tmp"), *path = path_in(dir, MANIFEST_FILE);
  int rc = -1;
  FILE *f = NULL;
  if (!text) err_set(err, errlen, "cannot write %s: out of memory", tmp);
  else if (!(f = fopen(tmp, "w"))) err_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
  else if (fputs(text, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0)
    err_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
  else if (rename(tmp, path) != 0) err_set(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  else rc = 0;
  free(text);
  free(tmp);
  free(path);
  return rc;
}

/* ---------------------------------------------------------------- reading */

static int json_int(const cJSON *o, const char *key, double min, double max, double *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= min && v->valuedouble <= max) || v->valuedouble != floor(v->valuedouble))
    return -1;
  *out = v->valuedouble;
  return 0;
}

/* A plain name inside the data folder: no path, not hidden, ending in .shard. */
static int valid_shard_file(const char *s) {
  size_t n = strlen(s);
  return n > 6 && n < 200 && !strchr(s, '/') && s[0] != '.' && !strcasecmp(s + n - 6, ".shard");
}

static int parse_split(const cJSON *o, int num_classes, manifest_split *sp) {
  double d;
  if (!cJSON_IsObject(o) || json_int(o, "count", 0, 1e15, &d)) return -1;
  sp->count = (int64_t)d;
  const cJSON *pc = cJSON_GetObjectItemCaseSensitive(o, "per_class");
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "shards");
  if (!cJSON_IsArray(pc) || cJSON_GetArraySize(pc) != num_classes || !cJSON_IsArray(arr)) return -1;
  sp->per_class = xcalloc((size_t)num_classes, sizeof(int64_t));
  int64_t sum = 0;
  for (int k = 0; k < num_classes; k++) {
    const cJSON *v = cJSON_GetArrayItem(pc, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0) return -1;
    sp->per_class[k] = (int64_t)v->valuedouble;
    sum += sp->per_class[k];
  }
  int n = cJSON_GetArraySize(arr);
  if (n > 100000) return -1;
  sp->n_shards = n;
  sp->shards = xcalloc((size_t)(n ? n : 1), sizeof(manifest_shard));
  int64_t total = 0;
  for (int j = 0; j < n; j++) {
    const cJSON *sh = cJSON_GetArrayItem(arr, j);
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(sh, "file");
    const cJSON *crc = cJSON_GetObjectItemCaseSensitive(sh, "crc32c");
    if (!cJSON_IsString(file) || !valid_shard_file(file->valuestring) || !cJSON_IsString(crc)) return -1;
    sp->shards[j].file = xstrdup(file->valuestring);
    char *end;
    errno = 0;
    unsigned long c = strtoul(crc->valuestring, &end, 16);
    if (strlen(crc->valuestring) != 8 || *end || c > 0xFFFFFFFFul) return -1;
    sp->shards[j].crc32c = (uint32_t)c;
    if (json_int(sh, "count", 0, 1e15, &d)) return -1;
    sp->shards[j].count = (int64_t)d;
    total += sp->shards[j].count;
    if (json_int(sh, "bytes", 0, 1e18, &d)) return -1;
    sp->shards[j].bytes = (uint64_t)d;
  }
  return total == sp->count && sum == sp->count ? 0 : -1;
}

manifest_info *manifest_read(const char *dir, char *err, size_t errlen) {
  char *path = path_in(dir, MANIFEST_FILE);
  manifest_info *m = NULL;
  cJSON *root = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    err_set(err, errlen, "cannot open %s: %s; prepare the data first with 'pollen prepare --src PHOTOS --out %s'",
            path, strerror(errno), dir);
    goto done;
  }
  char *text = xmalloc(MANIFEST_MAX_BYTES);
  size_t n = fread(text, 1, MANIFEST_MAX_BYTES - 1, f);
  int too_big = !feof(f);
  fclose(f);
  text[n] = 0;
  if (too_big) {
    free(text);
    err_set(err, errlen, "%s is larger than 4 MiB; regenerate it with 'pollen prepare --force'", path);
    goto done;
  }
  root = cJSON_Parse(text);
  free(text);
  double d = -1;
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
  if (!cJSON_IsObject(root) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "pollen-shards")) {
    err_set(err, errlen, "%s is not a pollen data manifest; regenerate it with 'pollen prepare --force'", path);
    goto done;
  }
  if (json_int(root, "format_version", 0, 1e9, &d) || d != MANIFEST_FORMAT_VERSION) {
    err_set(err, errlen, "%s has data format version %g but this pollen reads version %d; regenerate with 'pollen prepare --force'",
            path, d, MANIFEST_FORMAT_VERSION);
    goto done;
  }
  m = xcalloc(1, sizeof *m);
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(root, "source");
  const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "source_kind");
  const cJSON *vf = cJSON_GetObjectItemCaseSensitive(root, "val_fraction");
  const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "classes");
  const cJSON *sk = cJSON_GetObjectItemCaseSensitive(root, "skipped");
  const cJSON *sp = cJSON_GetObjectItemCaseSensitive(root, "splits");
  if (!cJSON_IsString(src) || !cJSON_IsString(kind) || !cJSON_IsNumber(vf) || !cJSON_IsArray(cl) || !cJSON_IsObject(sk) ||
      !cJSON_IsObject(sp))
    goto bad;
  m->source = xstrdup(src->valuestring);
  m->source_kind = xstrdup(kind->valuestring);
  m->val_fraction = vf->valuedouble;
  if (json_int(root, "seed", 0, (double)MANIFEST_MAX_SEED, &d)) goto bad;
  m->seed = (uint64_t)d;
  if (json_int(root, "max_side", 0, 1e6, &d)) goto bad;
  m->max_side = (int)d;
  if (json_int(root, "shards", 1, 1e5, &d)) goto bad;
  m->shards = (int)d;
  int nc = cJSON_GetArraySize(cl);
  if (nc < 1 || nc > SHARD_MAX_CLASSES) goto bad;
  m->classes = xcalloc((size_t)nc, sizeof(char *));
  m->num_classes = nc;
  for (int k = 0; k < nc; k++) {
    const cJSON *c = cJSON_GetArrayItem(cl, k);
    /* Class names are text (prepare refuses folder names that are not UTF-8): anything else is
     * a hand-edited or foreign file. */
    if (!cJSON_IsString(c) || !c->valuestring[0] || strlen(c->valuestring) > SHARD_MAX_CLASS_NAME ||
        !text_is_utf8(c->valuestring))
      goto bad;
    m->classes[k] = xstrdup(c->valuestring);
  }
  if (json_int(sk, "not_image", 0, 1e15, &d)) goto bad;
  m->skipped_not_image = (int64_t)d;
  if (json_int(sk, "corrupt", 0, 1e15, &d)) goto bad;
  m->skipped_corrupt = (int64_t)d;
  if (json_int(sk, "unreadable", 0, 1e15, &d)) goto bad;
  m->skipped_unreadable = (int64_t)d;
  if (parse_split(cJSON_GetObjectItemCaseSensitive(sp, "train"), nc, &m->train) ||
      parse_split(cJSON_GetObjectItemCaseSensitive(sp, "val"), nc, &m->val))
    goto bad;
  /* Optional (older manifests have none): a test split and its share go together. */
  const cJSON *tf = cJSON_GetObjectItemCaseSensitive(root, "test_fraction");
  const cJSON *test = cJSON_GetObjectItemCaseSensitive(sp, "test");
  if (!tf != !test || (tf && (!cJSON_IsNumber(tf) || !(tf->valuedouble > 0 && tf->valuedouble < 1))) ||
      (test && parse_split(test, nc, &m->test)))
    goto bad;
  m->test_fraction = tf ? tf->valuedouble : 0;
  goto done;
bad:
  err_set(err, errlen, "%s is damaged (a field is missing or out of range); regenerate it with 'pollen prepare --force'", path);
  manifest_free(m);
  m = NULL;
done:
  cJSON_Delete(root);
  free(path);
  return m;
}

void manifest_split_free(manifest_split *sp) {
  for (int j = 0; j < sp->n_shards && sp->shards; j++) free(sp->shards[j].file);
  free(sp->shards);
  free(sp->per_class);
}

void manifest_free(manifest_info *m) {
  if (!m) return;
  for (int k = 0; k < m->num_classes && m->classes; k++) free(m->classes[k]);
  free(m->classes);
  free(m->source);
  free(m->source_kind);
  manifest_split_free(&m->train);
  manifest_split_free(&m->val);
  manifest_split_free(&m->test);
  free(m);
}

const manifest_split *manifest_find_split(const manifest_info *m, const char *name) {
  if (!strcmp(name, "train")) return &m->train;
  if (!strcmp(name, "val")) return &m->val;
  if (!strcmp(name, "test") && m->test_fraction > 0) return &m->test;
  return NULL;
}
