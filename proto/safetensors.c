/* safetensors.c - strict safetensors reader and atomic writer (format in safetensors.h). */
#include "proto/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"

/* The format is little-endian and pollen hands the bytes out as they are. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const char *const dtype_names[ST_N_DTYPES] = {"F32", "F64", "I64", "I32", "U8", "BF16", "F16"};
static const size_t dtype_sizes[ST_N_DTYPES] = {4, 8, 8, 4, 1, 2, 2};

const char *st_dtype_name(st_dtype d) { return (unsigned)d < ST_N_DTYPES ? dtype_names[d] : "?"; }
size_t st_dtype_size(st_dtype d) { return (unsigned)d < ST_N_DTYPES ? dtype_sizes[d] : 0; }

int st_dtype_parse(const char *s) {
  for (int i = 0; i < ST_N_DTYPES; i++)
    if (!strcmp(s, dtype_names[i])) return i;
  return -1;
}

void st_close(st_file *f) {
  if (!f) return;
  for (int i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
  for (int i = 0; i < f->n_meta; i++) {
    free(f->meta_keys[i]);
    free(f->meta_values[i]);
  }
  free(f->tensors);
  free(f->meta_keys);
  free(f->meta_values);
  free(f->buf);
  free(f->path);
  free(f);
}

/* A JSON number that is a whole number in [0, max]; doubles hold integers exactly to 2^53,
 * which bounds every legitimate offset or dimension. */
static int json_uint(const cJSON *j, uint64_t max, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return -1;
  double d = j->valuedouble;
  if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d) || (uint64_t)d > max) return -1;
  *out = (uint64_t)d;
  return 0;
}

static int cmp_offset(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  const uint8_t *px = x->data, *py = y->data;
  if (px != py) return px < py ? -1 : 1;
  /* Equal starts: zero-size tensors first so the tiling check sees the real one last. */
  return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Parses the header object into f; data/size describe the data section. */
static int parse_header(st_file *f, const cJSON *root, const uint8_t *data, size_t size,
                        char *err, size_t errlen) {
  const char *p = f->path;
  if (!cJSON_IsObject(root)) {
    err_set(err, errlen, "%s: safetensors header is not a JSON object", p);
    return -1;
  }
  int count = cJSON_GetArraySize(root);
  f->tensors = xcalloc((size_t)count + 1, sizeof *f->tensors);
  for (const cJSON *e = root->child; e; e = e->next) {
    const char *name = e->string;
    if (!name || !name[0] || strlen(name) > ST_MAX_NAME) {
      err_set(err, errlen, "%s: tensor name empty or longer than %d bytes", p, ST_MAX_NAME);
      return -1;
    }
    /* cJSON keeps duplicate keys; two tensors with one name would make lookups ambiguous. */
    for (const cJSON *o = root->child; o != e; o = o->next)
      if (!strcmp(o->string, name)) {
        err_set(err, errlen, "%s: name '%.64s' appears twice in the header", p, name);
        return -1;
      }
    if (!strcmp(name, "__metadata__")) {
      if (!cJSON_IsObject(e)) {
        err_set(err, errlen, "%s: __metadata__ is not a JSON object", p);
        return -1;
      }
      int nm = cJSON_GetArraySize(e);
      f->meta_keys = xcalloc((size_t)nm + 1, sizeof(char *));
      f->meta_values = xcalloc((size_t)nm + 1, sizeof(char *));
      for (const cJSON *m = e->child; m; m = m->next) {
        if (!cJSON_IsString(m) || !m->valuestring) {
          err_set(err, errlen, "%s: __metadata__ value '%.64s' is not a string", p, m->string);
          return -1;
        }
        f->meta_keys[f->n_meta] = xstrdup(m->string);
        f->meta_values[f->n_meta] = xstrdup(m->valuestring);
        f->n_meta++;
      }
      continue;
    }
    if (!cJSON_IsObject(e)) {
      err_set(err, errlen, "%s: entry for tensor '%.64s' is not a JSON object", p, name);
      return -1;
    }
    const cJSON *jd = NULL, *js = NULL, *jo = NULL;
    for (const cJSON *k = e->child; k; k = k->next) {
      const cJSON **slot = !strcmp(k->string, "dtype")          ? &jd
                           : !strcmp(k->string, "shape")        ? &js
                           : !strcmp(k->string, "data_offsets") ? &jo
                                                                : NULL;
      if (!slot || *slot) {
        err_set(err, errlen, "%s: tensor '%.64s' has %s key '%.32s'", p, name,
               slot ? "a duplicate" : "an unknown", k->string);
        return -1;
      }
      *slot = k;
    }
    if (!jd || !js || !jo) {
      err_set(err, errlen, "%s: tensor '%.64s' lacks %s", p, name,
             !jd ? "dtype" : !js ? "shape" : "data_offsets");
      return -1;
    }
    st_tensor *t = &f->tensors[f->n_tensors];
    t->name = xstrdup(name);
    f->n_tensors++; /* counted now so st_close frees the name on any later error */
    int dt = cJSON_IsString(jd) ? st_dtype_parse(jd->valuestring) : -1;
    if (dt < 0) {
      err_set(err, errlen, "%s: tensor '%.64s' has unsupported dtype %.16s (pollen reads "
             "F32 F64 I64 I32 U8 BF16 F16)", p, name, cJSON_IsString(jd) ? jd->valuestring : "(not a string)");
      return -1;
    }
    t->dtype = (st_dtype)dt;
    int nd = cJSON_IsArray(js) ? cJSON_GetArraySize(js) : -1;
    if (nd < 0 || nd > ST_MAX_RANK) {
      err_set(err, errlen, "%s: tensor '%.64s' shape is not an array of at most %d dimensions",
             p, name, ST_MAX_RANK);
      return -1;
    }
    t->ndim = nd;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *s = js->child; s; s = s->next, d++) {
      uint64_t v;
      if (json_uint(s, INT64_MAX, &v) || __builtin_mul_overflow(numel, v, &numel)) {
        err_set(err, errlen, "%s: tensor '%.64s' shape has an invalid or overflowing dimension",
               p, name);
        return -1;
      }
      t->shape[d] = (int64_t)v;
    }
    t->numel = numel;
    uint64_t b = 0, en = 0, want;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || json_uint(jo->child, size, &b) ||
        json_uint(jo->child->next, size, &en) || en < b) {
      err_set(err, errlen, "%s: tensor '%.64s' data_offsets are not [begin, end] within the "
             "%zu-byte data section", p, name, size);
      return -1;
    }
    if (__builtin_mul_overflow(numel, (uint64_t)dtype_sizes[dt], &want)) {
      err_set(err, errlen, "%s: tensor '%.64s' shape is too large", p, name);
      return -1;
    }
    if (want != en - b) {
      err_set(err, errlen, "%s: tensor '%.64s' holds %llu bytes but %s x %llu elements needs "
             "%llu", p, name, (unsigned long long)(en - b), dtype_names[dt],
             (unsigned long long)numel, (unsigned long long)want);
      return -1;
    }
    t->nbytes = (size_t)(en - b);
    t->data = data + b;
  }
  /* The tensors must tile the data section exactly: no overlap (two tensors sharing bytes),
   * no gap and no trailing bytes (a sign of a corrupt or truncated write). */
  qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_offset);
  const uint8_t *at = data;
  for (int i = 0; i < f->n_tensors; i++) {
    const st_tensor *t = &f->tensors[i];
    if ((const uint8_t *)t->data != at) {
      err_set(err, errlen, "%s: tensor '%.64s' at offset %zu %s the previous tensor (which ends "
             "at %zu)", p, t->name, (size_t)((const uint8_t *)t->data - data),
             (const uint8_t *)t->data < at ? "overlaps" : "leaves a gap after",
             (size_t)(at - data));
      return -1;
    }
    at += t->nbytes;
  }
  if (at != data + size) {
    err_set(err, errlen, "%s: %zu bytes after the last tensor are not described by the header",
           p, (size_t)(data + size - at));
    return -1;
  }
  return 0;
}

/* Takes ownership of buf (64-byte aligned, the file image placed so that the data section
 * starts at a 64-byte boundary: image at buf + pad). */
static st_file *parse_owned(uint8_t *buf, size_t pad, size_t size, const char *name, char *err,
                            size_t errlen) {
  st_file *f = xcalloc(1, sizeof *f);
  f->path = xstrdup(name);
  f->buf = buf;
  const uint8_t *img = buf + pad;
  char *hdr = NULL;
  cJSON *root = NULL;
  uint64_t n = 0;
  if (size < 8) {
    err_set(err, errlen, "%s: only %zu bytes, too short for a safetensors file", name, size);
    goto fail;
  }
  for (int i = 7; i >= 0; i--) n = n << 8 | img[i];
  if (n < 2 || n > ST_MAX_HEADER || n > size - 8) {
    err_set(err, errlen, "%s: header length %llu is impossible for a %zu-byte file (truncated "
           "or not a safetensors file)", name, (unsigned long long)n, size);
    goto fail;
  }
  /* cJSON wants a terminated string; an embedded NUL would silently cut the header. */
  if (memchr(img + 8, 0, (size_t)n)) {
    err_set(err, errlen, "%s: header contains a NUL byte", name);
    goto fail;
  }
  hdr = xmalloc((size_t)n + 1);
  memcpy(hdr, img + 8, (size_t)n);
  hdr[n] = 0;
  if (strstr(hdr, "\\u0000")) {
    err_set(err, errlen, "%s: header contains an escaped NUL character", name);
    goto fail;
  }
  const char *end = NULL;
  root = cJSON_ParseWithOpts(hdr, &end, 0);
  if (!root) {
    size_t at = end ? (size_t)(end - hdr) : 0;
    err_set(err, errlen, "%s: header is not valid JSON (error near byte %zu)", name, at);
    goto fail;
  }
  /* The official writer pads the header with spaces; anything else after the JSON is junk. */
  for (; *end; end++)
    if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
      err_set(err, errlen, "%s: junk after the JSON header at byte %zu", name, (size_t)(end - hdr));
      goto fail;
    }
  if (parse_header(f, root, img + 8 + n, size - 8 - (size_t)n, err, errlen)) goto fail;
  cJSON_Delete(root);
  free(hdr);
  return f;
fail:
  cJSON_Delete(root);
  free(hdr);
  st_close(f);
  return NULL;
}

/* Padding before the image so that the data section (at 8 + header length) is 64-aligned. */
static size_t image_pad(uint64_t hlen) { return (size_t)((64 - (8 + hlen % 64) % 64) % 64); }

st_file *st_parse(const void *bytes, size_t size, const char *name, char *err, size_t errlen) {
  uint64_t n = 0;
  if (size >= 8)
    for (int i = 7; i >= 0; i--) n = n << 8 | ((const uint8_t *)bytes)[i];
  size_t pad = image_pad(n);
  uint8_t *buf = xmalloc_aligned(size + pad + 1);
  if (size) memcpy(buf + pad, bytes, size);
  return parse_owned(buf, pad, size, name, err, errlen);
}

st_file *st_open(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
    err_set(err, errlen, "%s: not a regular file", path);
    close(fd);
    return NULL;
  }
  size_t size = (size_t)sb.st_size;
  uint8_t head[8] = {0};
  uint64_t n = 0;
  if (size >= 8 && pread(fd, head, 8, 0) == 8)
    for (int i = 7; i >= 0; i--) n = n << 8 | head[i];
  size_t pad = image_pad(n);
  uint8_t *buf = xmalloc_aligned(size + pad + 1);
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, buf + pad + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      err_set(err, errlen, "%s: read failed after %zu of %zu bytes: %s", path, got, size,
             r < 0 ? strerror(errno) : "file shrank while reading");
      close(fd);
      free(buf);
      return NULL;
    }
    got += (size_t)r;
  }
  close(fd);
  return parse_owned(buf, pad, size, path, err, errlen);
}

st_file *st_open_or_die(const char *path) {
  char err[512], shown[4 * sizeof err + 1];
  st_file *f = st_open(path, err, sizeof err);
  /* The reason may quote names from the file's header: untrusted text. */
  if (!f) die("%s; regenerate or re-export the file", name_escape(err, shown, sizeof shown));
  return f;
}

const st_tensor *st_find(const st_file *f, const char *name) {
  for (int i = 0; i < f->n_tensors; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
  return NULL;
}

static void shape_str(char *s, size_t n, int ndim, const int64_t *shape) {
  size_t at = (size_t)snprintf(s, n, "[");
  for (int i = 0; i < ndim && at < n; i++)
    at += (size_t)snprintf(s + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (at < n) snprintf(s + at, n - at, "]");
}

const st_tensor *st_expect(const st_file *f, const char *name, st_dtype dtype, int ndim,
                           const int64_t *shape) {
  const st_tensor *t = st_find(f, name);
  if (!t) die("%s: has no tensor '%s'; is it the right file for this model?", f->path, name);
  int ok = t->dtype == dtype && (ndim < 0 || t->ndim == ndim);
  for (int i = 0; ok && shape && i < ndim; i++) ok = t->shape[i] == shape[i];
  if (!ok) {
    char got[160], want[160];
    shape_str(got, sizeof got, t->ndim, t->shape);
    if (shape) shape_str(want, sizeof want, ndim, shape);
    else snprintf(want, sizeof want, "rank %d", ndim);
    die("%s: tensor '%s' is %s %s, expected %s %s; is it the right file for this model?",
        f->path, name, st_dtype_name(t->dtype), got, st_dtype_name(dtype), want);
  }
  return t;
}

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023u, bits;
  if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
  else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (!man) bits = sign;
  else { /* subnormal: value is man * 2^-24 */
    float v = ldexpf((float)man, -24);
    return sign ? -v : v;
  }
  float v;
  memcpy(&v, &bits, 4);
  return v;
}

int st_copy_f32(const st_tensor *t, float *dst, size_t n) {
  POLLEN_ASSERT(n == t->numel);
  const uint8_t *s = t->data;
  for (size_t i = 0; i < n; i++) {
    switch (t->dtype) {
    case ST_F32: memcpy(&dst[i], s + 4 * i, 4); break;
    case ST_F64: { double v; memcpy(&v, s + 8 * i, 8); dst[i] = (float)v; break; }
    case ST_F16: { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = half_to_float(h); break; }
    case ST_BF16: {
      uint16_t h;
      memcpy(&h, s + 2 * i, 2);
      uint32_t bits = (uint32_t)h << 16;
      memcpy(&dst[i], &bits, 4);
      break;
    }
    default: return -1;
    }
  }
  return 0;
}

int st_copy_i64(const st_tensor *t, int64_t *dst, size_t n) {
  POLLEN_ASSERT(n == t->numel);
  const uint8_t *s = t->data;
  for (size_t i = 0; i < n; i++) {
    switch (t->dtype) {
    case ST_I64: memcpy(&dst[i], s + 8 * i, 8); break;
    case ST_I32: { int32_t v; memcpy(&v, s + 4 * i, 4); dst[i] = v; break; }
    case ST_U8: dst[i] = s[i]; break;
    default: return -1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
  char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_RANK];
  size_t nbytes;
  void *data;
} st_entry;

struct st_writer {
  st_entry *e;
  int n, cap;
  char **mk, **mv;
  int nm;
};

st_writer *st_writer_new(void) { return xcalloc(1, sizeof(st_writer)); }

void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
  POLLEN_ASSERT((unsigned)dtype < ST_N_DTYPES && ndim >= 0 && ndim <= ST_MAX_RANK);
  POLLEN_ASSERT(name[0] && strcmp(name, "__metadata__") && strlen(name) <= ST_MAX_NAME);
  for (int i = 0; i < w->n; i++) POLLEN_ASSERT(strcmp(w->e[i].name, name) != 0);
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 64;
    w->e = xrealloc(w->e, (size_t)w->cap * sizeof *w->e);
  }
  st_entry *e = &w->e[w->n++];
  memset(e, 0, sizeof *e);
  e->name = xstrdup(name);
  e->dtype = dtype;
  e->ndim = ndim;
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    POLLEN_ASSERT(shape[i] >= 0);
    e->shape[i] = shape[i];
    POLLEN_ASSERT(!__builtin_mul_overflow(numel, (size_t)shape[i], &numel));
  }
  POLLEN_ASSERT(!__builtin_mul_overflow(numel, dtype_sizes[dtype], &e->nbytes));
  e->data = xmalloc(e->nbytes);
  if (e->nbytes) memcpy(e->data, data, e->nbytes);
}

void st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape,
                       const float *data) {
  st_writer_add(w, name, ST_F32, ndim, shape, data);
}

void st_writer_add_i64(st_writer *w, const char *name, int ndim, const int64_t *shape,
                       const int64_t *data) {
  st_writer_add(w, name, ST_I64, ndim, shape, data);
}

void st_writer_meta(st_writer *w, const char *key, const char *value) {
  for (int i = 0; i < w->nm; i++)
    if (!strcmp(w->mk[i], key)) {
      free(w->mv[i]);
      w->mv[i] = xstrdup(value);
      return;
    }
  w->mk = xrealloc(w->mk, (size_t)(w->nm + 1) * sizeof(char *));
  w->mv = xrealloc(w->mv, (size_t)(w->nm + 1) * sizeof(char *));
  w->mk[w->nm] = xstrdup(key);
  w->mv[w->nm] = xstrdup(value);
  w->nm++;
}

void st_writer_free(st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) {
    free(w->e[i].name);
    free(w->e[i].data);
  }
  for (int i = 0; i < w->nm; i++) {
    free(w->mk[i]);
    free(w->mv[i]);
  }
  free(w->e);
  free(w->mk);
  free(w->mv);
  free(w);
}

/* What a failed create, write, fsync or rename means for the user, from its errno: the cause
 * and what to do, not a guess. */
static const char *save_cause(int e, char *buf, size_t cap) {
  switch (e) {
  case ENOSPC: return "no space left on the device; free some space (or write elsewhere) and run again";
  case EDQUOT: return "the disk quota is exhausted; free some space (or write elsewhere) and run again";
  case EACCES:
  case EPERM: return "permission denied; make the directory writable or write elsewhere";
  case EROFS: return "the file system is read-only; write elsewhere";
  case ENOENT: return "the directory does not exist; create it or write elsewhere";
  case ENOTDIR: return "a part of the path is not a directory; fix the path";
  case EIO: return "an I/O error on the device; check the disk";
  default: snprintf(buf, cap, "%s; check the directory and its disk", strerror(e)); return buf;
  }
}

int st_writer_save(st_writer *w, const char *path, char *err, size_t errlen) {
  cJSON *root = cJSON_CreateObject();
  if (w->nm) {
    cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
    for (int i = 0; i < w->nm; i++) cJSON_AddStringToObject(m, w->mk[i], w->mv[i]);
  }
  uint64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    const st_entry *e = &w->e[i];
    cJSON *t = cJSON_AddObjectToObject(root, e->name);
    cJSON_AddStringToObject(t, "dtype", dtype_names[e->dtype]);
    cJSON *s = cJSON_AddArrayToObject(t, "shape");
    for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(s, cJSON_CreateNumber((double)e->shape[d]));
    cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + e->nbytes)));
    off += e->nbytes;
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  if (!json) die("out of memory building the safetensors header for %s", path);
  /* Pad with spaces (as the official writer does) so the data section starts 8-aligned. */
  size_t jl = strlen(json), hl = (8 + jl + 7) / 8 * 8 - 8;
  char *hdr = xmalloc(8 + hl);
  for (int i = 0; i < 8; i++) hdr[i] = (char)((uint64_t)hl >> (8 * i));
  memcpy(hdr + 8, json, jl);
  memset(hdr + 8 + jl, ' ', hl - jl);
  free(json);

  size_t pl = strlen(path);
  char *tmp = xmalloc(pl + 32);
  snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
  int rc = -1;
  char cause[160];
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    err_set(err, errlen, "cannot write %s: %s", path, save_cause(errno, cause, sizeof cause));
    goto done;
  }
  int bad = write_all(fd, hdr, 8 + hl);
  for (int i = 0; i < w->n && !bad; i++) bad = write_all(fd, w->e[i].data, w->e[i].nbytes);
  if (!bad) bad = fsync(fd);
  int saved = errno;
  if (close(fd) && !bad) {
    bad = 1;
    saved = errno;
  }
  /* A failed save leaves nothing behind: the temporary file goes, an older file at path stays. */
  if (bad) {
    err_set(err, errlen, "cannot write %s: %s", path, save_cause(saved, cause, sizeof cause));
    unlink(tmp);
    goto done;
  }
  if (rename(tmp, path)) {
    int e = errno;
    err_set(err, errlen, "cannot move %s into place as %s: %s", tmp, path, save_cause(e, cause, sizeof cause));
    unlink(tmp);
    goto done;
  }
  /* The rename itself must reach the disk for the file to survive a crash. */
  char *dcopy = xstrdup(path);
  int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  free(dcopy);
  rc = 0;
done:
  free(tmp);
  free(hdr);
  return rc;
}

void st_writer_save_or_die(st_writer *w, const char *path) {
  char err[512];
  if (st_writer_save(w, path, err, sizeof err)) die("%s", err);
}
