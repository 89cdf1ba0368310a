/* ckpt_format.c - write and verify pollen checkpoint files (layout in ckpt_format.h).
 *
 * Files are read with read() into one aligned buffer rather than mmap'd, so a file truncated
 * by someone else while we hold it cannot SIGBUS the trainer; 20 MB copies in milliseconds. */
#include "proto/ckpt_format.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/crc32c.h"

static const char HEADER_MAGIC[8] = {'P', 'L', 'N', 'C', 'K', 'P', 'T', '\0'};
static const char FOOTER_MAGIC[8] = {'P', 'L', 'N', 'C', 'K', 'E', 'N', 'D'};

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}
static uint64_t align_up(uint64_t x) { return (x + CKPTF_ALIGN - 1) / CKPTF_ALIGN * CKPTF_ALIGN; }

/* "PATH: message" into err; always returns -1 so callers can `return fail(...)`. */
__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, const char *path,
                                                      const char *fmt, ...) {
  if (!err || !errlen) return -1;
  int k = path ? snprintf(err, errlen, "%s: ", path) : 0;
  if (k < 0) k = 0;
  if ((size_t)k < errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return -1;
}

int ckptf_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n < 1 || n > CKPTF_NAME_MAX) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c < 0x21 || c > 0x7e || c == '/' || c == '"' || c == '\\') return -1;
  }
  return 0;
}

static uint64_t kind_unit(uint32_t kind) {
  return kind == CKPTF_KIND_F32 ? 4 : kind == CKPTF_KIND_U64 ? 8 : 1;
}

int ckptf_check_sections(const ckptf_section_in *s, int n, char *err, size_t errlen) {
  if (n < 0 || (uint32_t)n > CKPTF_MAX_SECTIONS)
    return fail(err, errlen, NULL, "%d sections; a checkpoint holds at most %u", n, CKPTF_MAX_SECTIONS);
  for (int i = 0; i < n; i++) {
    if (ckptf_name_ok(s[i].name))
      return fail(err, errlen, NULL, "section %d: name '%.80s' is not 1..%d printable characters",
                  i, s[i].name ? s[i].name : "(null)", CKPTF_NAME_MAX);
    if (s[i].kind >= CKPTF_N_KINDS)
      return fail(err, errlen, NULL, "section '%s': unknown kind %u", s[i].name, s[i].kind);
    if (s[i].len % kind_unit(s[i].kind))
      return fail(err, errlen, NULL, "section '%s': %llu bytes is not a whole number of elements",
                  s[i].name, (unsigned long long)s[i].len);
    if (s[i].len && !s[i].data)
      return fail(err, errlen, NULL, "section '%s': no data", s[i].name);
    for (int j = 0; j < i; j++)
      if (!strcmp(s[i].name, s[j].name))
        return fail(err, errlen, NULL, "section '%s' appears twice", s[i].name);
  }
  return 0;
}

uint64_t ckptf_layout(const uint64_t *lens, int n, uint64_t *offsets) {
  uint64_t pos = align_up(CKPTF_HEADER_BYTES + (uint64_t)n * CKPTF_ENTRY_BYTES);
  for (int i = 0; i < n; i++) {
    if (offsets) offsets[i] = pos;
    pos = align_up(pos + lens[i]);
  }
  return pos + CKPTF_FOOTER_BYTES;
}

/* ---- meta JSON ---- */

char *ckptf_meta_to_json(const ckptf_meta *m) {
  cJSON *o = cJSON_CreateObject();
  POLLEN_ASSERT(o);
  cJSON_AddNumberToObject(o, "step", (double)m->step);
  cJSON_AddNumberToObject(o, "epoch", (double)m->epoch);
  cJSON_AddNumberToObject(o, "sample_in_epoch", (double)m->sample_in_epoch);
  cJSON_AddNumberToObject(o, "world_size", (double)m->world_size);
  cJSON_AddStringToObject(o, "model", m->model);
  cJSON_AddStringToObject(o, "config_hash", m->config_hash);
  cJSON_AddStringToObject(o, "pollen_version", m->pollen_version);
  cJSON_AddNumberToObject(o, "unix_time", (double)m->unix_time);
  if (m->extra) cJSON_AddItemToObject(o, "extra", cJSON_Duplicate(m->extra, 1));
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  POLLEN_ASSERT(s);
  /* cJSON allocates with malloc by default; copy so the caller's free() is certainly right. */
  char *out = xstrdup(s);
  cJSON_free(s);
  return out;
}

/* A JSON number that is a whole number in [lo, hi] (hi <= 2^53: exact in a double). */
static int json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
  if (!cJSON_IsNumber(v)) return -1;
  double d = v->valuedouble;
  if (!(d >= (double)lo && d <= (double)hi) || floor(d) != d) return -1;
  *out = (int64_t)d;
  return 0;
}

static int json_text(const cJSON *v, char *out, size_t cap, size_t min_len, int hex_only) {
  if (!cJSON_IsString(v) || !v->valuestring) return -1;
  size_t n = strlen(v->valuestring);
  if (n < min_len || n >= cap) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)v->valuestring[i];
    if (hex_only ? !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) : (c < 0x20 || c > 0x7e))
      return -1;
  }
  memcpy(out, v->valuestring, n + 1);
  return 0;
}

int ckptf_meta_parse(const char *json, size_t n, ckptf_meta *m, char *err, size_t errlen) {
  static const char *const keys[] = {"step",        "epoch",          "sample_in_epoch",
                                     "world_size",  "model",          "config_hash",
                                     "pollen_version", "unix_time",   "extra"};
  enum { N_KEYS = (int)(sizeof keys / sizeof keys[0]) };
  const int64_t max_int = (int64_t)1 << 53;
  memset(m, 0, sizeof *m);
  if (n > CKPTF_META_MAX) return fail(err, errlen, NULL, "meta section too large (%zu bytes)", n);
  const char *end = NULL;
  cJSON *o = cJSON_ParseWithLengthOpts(json, n, &end, 0);
  /* cJSON stops after the first value; anything but whitespace after it is not ours. */
  for (const char *p = end; o && p && p < json + n; p++)
    if (!strchr(" \t\r\n", *p) || !*p) {
      cJSON_Delete(o);
      o = NULL;
    }
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return fail(err, errlen, NULL, "meta section is not a JSON object");
  }
  const cJSON *found[N_KEYS] = {0};
  const char *bad = NULL;
  for (const cJSON *c = o->child; c && !bad; c = c->next) {
    int k = 0;
    while (k < N_KEYS && strcmp(c->string, keys[k])) k++;
    if (k == N_KEYS || found[k]) bad = c->string; /* unknown or duplicate key */
    else found[k] = c;
  }
  if (bad) {
    int rc = fail(err, errlen, NULL, "meta has an unknown or repeated key '%.64s'", bad);
    cJSON_Delete(o);
    return rc;
  }
  int64_t ws = 0;
  const char *field = NULL;
  if (json_int(found[0], 0, max_int, &m->step)) field = "step";
  else if (json_int(found[1], 0, max_int, &m->epoch)) field = "epoch";
  else if (json_int(found[2], 0, max_int, &m->sample_in_epoch)) field = "sample_in_epoch";
  else if (json_int(found[3], 1, 1 << 24, &ws)) field = "world_size";
  else if (json_text(found[4], m->model, sizeof m->model, 1, 0)) field = "model";
  else if (json_text(found[5], m->config_hash, sizeof m->config_hash, 0, 1)) field = "config_hash";
  else if (json_text(found[6], m->pollen_version, sizeof m->pollen_version, 1, 0)) field = "pollen_version";
  else if (json_int(found[7], 0, max_int, &m->unix_time)) field = "unix_time";
  else if (found[8] && !cJSON_IsObject(found[8])) field = "extra";
  if (field) {
    cJSON_Delete(o);
    memset(m, 0, sizeof *m);
    return fail(err, errlen, NULL, "meta field '%s' is missing or invalid", field);
  }
  m->world_size = (int32_t)ws;
  if (found[8]) m->extra = cJSON_DetachItemViaPointer(o, (cJSON *)found[8]);
  cJSON_Delete(o);
  return 0;
}

void ckptf_meta_free(ckptf_meta *m) {
  if (m->extra) cJSON_Delete(m->extra);
  m->extra = NULL;
}

/* ---- writing ---- */

int ckptf_write_fd(int fd, const char *path, const ckptf_section_in *s, int n, char *err,
                   size_t errlen) {
  char why[256];
  if (ckptf_check_sections(s, n, why, sizeof why)) {
    errno = EINVAL;
    return fail(err, errlen, path, "%s", why);
  }
  int has_meta = 0;
  for (int i = 0; i < n; i++)
    if (!strcmp(s[i].name, CKPTF_META_NAME)) has_meta = s[i].kind == CKPTF_KIND_JSON;
  if (!has_meta) {
    errno = EINVAL;
    return fail(err, errlen, path, "no JSON section named '" CKPTF_META_NAME "'");
  }
  uint64_t *lens = xmalloc(sizeof(uint64_t) * (size_t)(n + 1));
  uint64_t *offs = xmalloc(sizeof(uint64_t) * (size_t)(n + 1));
  for (int i = 0; i < n; i++) lens[i] = s[i].len;
  uint64_t total = ckptf_layout(lens, n, offs);

  size_t head_n = CKPTF_HEADER_BYTES + (size_t)n * CKPTF_ENTRY_BYTES;
  uint8_t *head = xcalloc(1, head_n);
  memcpy(head, HEADER_MAGIC, 8);
  put_u32(head + 8, CKPTF_VERSION);
  put_u32(head + 12, (uint32_t)n);
  put_u64(head + 16, CKPTF_HEADER_BYTES);
  put_u32(head + 60, crc32c_update(0, head, 60));
  for (int i = 0; i < n; i++) {
    uint8_t *e = head + CKPTF_HEADER_BYTES + (size_t)i * CKPTF_ENTRY_BYTES;
    memcpy(e, s[i].name, strlen(s[i].name));
    put_u32(e + 64, s[i].kind);
    put_u32(e + 68, crc32c_update(0, s[i].data, (size_t)s[i].len));
    put_u64(e + 72, offs[i]);
    put_u64(e + 80, s[i].len);
  }
  uint8_t foot[CKPTF_FOOTER_BYTES] = {0};
  memcpy(foot, FOOTER_MAGIC, 8);
  put_u64(foot + 8, total);
  put_u32(foot + 16, (uint32_t)n);
  put_u32(foot + 20, crc32c_update(0, head + CKPTF_HEADER_BYTES, head_n - CKPTF_HEADER_BYTES));
  put_u32(foot + 28, crc32c_update(0, foot, 28));

  static const uint8_t zeros[CKPTF_ALIGN];
  int rc = write_all(fd, head, head_n);
  uint64_t pos = head_n;
  for (int i = 0; i < n && !rc; i++) {
    rc = write_all(fd, zeros, offs[i] - pos);
    if (!rc) rc = write_all(fd, s[i].data, s[i].len);
    pos = offs[i] + s[i].len;
  }
  if (!rc) rc = write_all(fd, zeros, total - CKPTF_FOOTER_BYTES - pos);
  if (!rc) rc = write_all(fd, foot, sizeof foot);
  int saved = errno;
  free(head);
  free(lens);
  free(offs);
  if (rc) {
    errno = saved;
    return fail(err, errlen, path, "write failed: %s", strerror(saved));
  }
  return 0;
}

/* ---- reading ---- */

static int read_whole(const char *path, uint8_t **out, uint64_t *size, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(err, errlen, path, "cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail(err, errlen, path, "not a regular file");
  }
  uint64_t n = (uint64_t)st.st_size;
  void *buf = NULL;
  if (n > (uint64_t)SIZE_MAX / 2 || posix_memalign(&buf, CKPTF_ALIGN, (size_t)(n ? n : 1))) {
    close(fd);
    return fail(err, errlen, path, "cannot allocate %llu bytes to read it", (unsigned long long)n);
  }
  uint64_t got = 0;
  while (got < n) {
    ssize_t k = read(fd, (uint8_t *)buf + got, (size_t)(n - got > (1u << 30) ? (1u << 30) : n - got));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int e = k < 0 ? errno : 0;
      close(fd);
      free(buf);
      return e ? fail(err, errlen, path, "read error: %s", strerror(e))
               : fail(err, errlen, path, "file shrank while being read (truncated)");
    }
    got += (uint64_t)k;
  }
  close(fd);
  *out = buf;
  *size = n;
  return 0;
}

/* Checks everything but the payload CRCs and the meta; fills f->sections. */
static int verify_structure(const char *path, ckptf_file *f, char *err, size_t errlen) {
  const uint8_t *b = f->buf;
  uint64_t size = f->size;
  const uint64_t min = CKPTF_HEADER_BYTES + CKPTF_FOOTER_BYTES;
  if (size < min)
    return fail(err, errlen, path, "truncated (%llu bytes; a checkpoint has at least %llu)",
                (unsigned long long)size, (unsigned long long)min);
  if (memcmp(b, HEADER_MAGIC, 8)) return fail(err, errlen, path, "not a pollen checkpoint (bad magic)");
  if (get_u32(b + 60) != crc32c_update(0, b, 60))
    return fail(err, errlen, path, "header CRC mismatch (file corrupt)");
  uint32_t version = get_u32(b + 8);
  if (version != CKPTF_VERSION)
    return fail(err, errlen, path,
                "checkpoint format version %u, but this pollen reads version %u; use the pollen "
                "that wrote it", version, CKPTF_VERSION);
  uint32_t n = get_u32(b + 12);
  if (n > CKPTF_MAX_SECTIONS || get_u64(b + 16) != CKPTF_HEADER_BYTES || !all_zero(b + 24, 36))
    return fail(err, errlen, path, "invalid header (file corrupt)");

  const uint8_t *foot = b + size - CKPTF_FOOTER_BYTES;
  if (memcmp(foot, FOOTER_MAGIC, 8))
    return fail(err, errlen, path, "no footer at the end (file truncated or not completely written)");
  if (get_u32(foot + 28) != crc32c_update(0, foot, 28))
    return fail(err, errlen, path, "footer CRC mismatch (file corrupt)");
  if (get_u64(foot + 8) != size)
    return fail(err, errlen, path, "file is %llu bytes but its footer says %llu (truncated or extended)",
                (unsigned long long)size, (unsigned long long)get_u64(foot + 8));
  if (get_u32(foot + 16) != n || get_u32(foot + 24))
    return fail(err, errlen, path, "footer does not match the header (file corrupt)");
  uint64_t table_end = CKPTF_HEADER_BYTES + (uint64_t)n * CKPTF_ENTRY_BYTES;
  if (align_up(table_end) > size - CKPTF_FOOTER_BYTES)
    return fail(err, errlen, path, "section table runs past the end (file corrupt)");
  if (get_u32(foot + 20) != crc32c_update(0, b + CKPTF_HEADER_BYTES, (size_t)(table_end - CKPTF_HEADER_BYTES)))
    return fail(err, errlen, path, "section table CRC mismatch (file corrupt)");

  f->sections = xcalloc(n ? n : 1, sizeof *f->sections);
  f->n_sections = n;
  /* Offsets must be exactly the canonical layout: no gaps to hide data, no overlaps. */
  uint64_t pos = align_up(table_end);
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *e = b + CKPTF_HEADER_BYTES + (uint64_t)i * CKPTF_ENTRY_BYTES;
    ckptf_section *s = &f->sections[i];
    if (!memchr(e, 0, 64) || !all_zero(e + strlen((const char *)e), 64 - strlen((const char *)e)))
      return fail(err, errlen, path, "section %u has an unterminated name (file corrupt)", i);
    memcpy(s->name, e, 64);
    if (ckptf_name_ok(s->name)) return fail(err, errlen, path, "section %u has an invalid name (file corrupt)", i);
    s->kind = get_u32(e + 64);
    s->crc = get_u32(e + 68);
    s->offset = get_u64(e + 72);
    s->len = get_u64(e + 80);
    if (s->kind >= CKPTF_N_KINDS || get_u64(e + 88) || s->len % kind_unit(s->kind))
      return fail(err, errlen, path, "section '%s' has an invalid kind or length (file corrupt)", s->name);
    if (s->offset != pos || s->len > size || align_up(pos + s->len) > size - CKPTF_FOOTER_BYTES)
      return fail(err, errlen, path, "section '%s' lies outside the file (truncated or corrupt)", s->name);
    for (uint32_t j = 0; j < i; j++)
      if (!strcmp(s->name, f->sections[j].name))
        return fail(err, errlen, path, "section '%s' appears twice (file corrupt)", s->name);
    s->data = b + s->offset;
    if (!all_zero(b + s->offset + s->len, align_up(pos + s->len) - (pos + s->len)))
      return fail(err, errlen, path, "nonzero padding after section '%s' (file corrupt)", s->name);
    pos = align_up(pos + s->len);
  }
  if (!all_zero(b + table_end, align_up(table_end) - table_end))
    return fail(err, errlen, path, "nonzero padding after the section table (file corrupt)");
  if (pos + CKPTF_FOOTER_BYTES != size)
    return fail(err, errlen, path, "sections do not fill the file (file corrupt)");
  return 0;
}

/* Every check of f->buf (size f->size): the structure, each payload's CRC, the meta. */
static int verify_all(const char *path, ckptf_file *f, char *err, size_t errlen) {
  if (verify_structure(path, f, err, errlen)) return -1;
  for (uint32_t i = 0; i < f->n_sections; i++) {
    const ckptf_section *s = &f->sections[i];
    if (crc32c_update(0, s->data, (size_t)s->len) != s->crc)
      return fail(err, errlen, path, "section '%s' CRC mismatch (file corrupt)", s->name);
  }
  const ckptf_section *m = ckptf_find(f, CKPTF_META_NAME);
  if (!m || m->kind != CKPTF_KIND_JSON) return fail(err, errlen, path, "no '" CKPTF_META_NAME "' section");
  char why[256];
  if (ckptf_meta_parse((const char *)m->data, (size_t)m->len, &f->meta, why, sizeof why))
    return fail(err, errlen, path, "%s", why);
  return 0;
}

int ckptf_open(const char *path, ckptf_file *f, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  if (read_whole(path, &f->buf, &f->size, err, errlen)) return -1;
  if (verify_all(path, f, err, errlen)) {
    ckptf_close(f);
    return -1;
  }
  return 0;
}

int ckptf_verify_buffer(const char *name, const void *buf, uint64_t size, int64_t *step, char *err,
                        size_t errlen) {
  ckptf_file f;
  memset(&f, 0, sizeof f);
  f.buf = (uint8_t *)buf, f.size = size; /* only read, and not ours to free */
  int rc = verify_all(name, &f, err, errlen);
  if (!rc) *step = f.meta.step;
  f.buf = NULL;
  ckptf_close(&f);
  return rc;
}

const ckptf_section *ckptf_find(const ckptf_file *f, const char *name) {
  for (uint32_t i = 0; i < f->n_sections; i++)
    if (!strcmp(f->sections[i].name, name)) return &f->sections[i];
  return NULL;
}

void ckptf_close(ckptf_file *f) {
  ckptf_meta_free(&f->meta);
  free(f->sections);
  free(f->buf);
  memset(f, 0, sizeof *f);
}
