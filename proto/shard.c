/* shard.c - writes and reads pollen shard files (layout in shard.h and proto/README.md). */
#include "proto/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/crc32c.h"

static const char shard_magic[8] = {'P', 'L', 'N', 'S', 'H', 'A', 'R', 'D'};
static const char shard_end_magic[8] = {'P', 'L', 'N', 'S', 'H', 'E', 'N', 'D'};
#define FOOTER_BYTES 32
#define REGEN "regenerate the data with 'pollen prepare --force'"

static void put_u16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* ---------------------------------------------------------------- writer */

struct shard_writer {
  char *path, *tmp;
  FILE *f;
  uint64_t pos;
  uint32_t file_crc;
  int num_classes;
  int64_t count, written;
  uint64_t *offsets;
};

static void w_bytes(shard_writer *w, const void *p, size_t n) {
  if (n && fwrite(p, 1, n, w->f) != n) die("cannot write %s: %s; check free disk space", w->tmp, strerror(errno));
  w->file_crc = crc32c_update(w->file_crc, p, n);
  w->pos += n;
}

shard_writer *shard_create(const char *path, int num_classes, const char *const *class_names, int64_t count) {
  POLLEN_ASSERT(num_classes > 0 && num_classes <= SHARD_MAX_CLASSES && count >= 0 && count < SHARD_MAX_RECORDS);
  shard_writer *w = xcalloc(1, sizeof *w);
  w->path = xstrdup(path);
  size_t n = strlen(path) + 5;
  w->tmp = xmalloc(n);
  snprintf(w->tmp, n, "%s.tmp", path);
  w->f = fopen(w->tmp, "wb");
  if (!w->f) die("cannot create shard %s: %s; check that the --out folder is writable", w->tmp, strerror(errno));
  w->num_classes = num_classes;
  w->count = count;
  w->offsets = xmalloc(sizeof(uint64_t) * (size_t)(count ? count : 1));

  size_t body = 4 + 8;
  for (int k = 0; k < num_classes; k++) {
    size_t len = strlen(class_names[k]);
    POLLEN_ASSERT(len > 0 && len <= SHARD_MAX_CLASS_NAME);
    body += 2 + len;
  }
  unsigned char *h = xmalloc(16 + body + 4), *p = h;
  memcpy(p, shard_magic, 8);
  put_u32(p + 8, SHARD_VERSION);
  put_u32(p + 12, (uint32_t)body);
  p += 16;
  put_u32(p, (uint32_t)num_classes);
  p += 4;
  for (int k = 0; k < num_classes; k++) {
    size_t len = strlen(class_names[k]);
    put_u16(p, (uint16_t)len);
    memcpy(p + 2, class_names[k], len);
    p += 2 + len;
  }
  put_u64(p, (uint64_t)count);
  p += 8;
  put_u32(p, crc32c_update(0, h, (size_t)(p - h)));
  w_bytes(w, h, 16 + body + 4);
  free(h);
  return w;
}

void shard_append(shard_writer *w, int label, const char *name, const void *data, size_t len) {
  POLLEN_ASSERT(w->written < w->count && label >= 0 && label < w->num_classes);
  size_t name_len = strlen(name);
  if (name_len > SHARD_MAX_NAME) name_len = SHARD_MAX_NAME;
  POLLEN_ASSERT(len <= SHARD_MAX_DATA);
  unsigned char head[12], tail[4];
  put_u32(head, (uint32_t)label);
  put_u32(head + 4, (uint32_t)name_len);
  put_u32(head + 8, (uint32_t)len);
  uint32_t crc = crc32c_update(0, head, 12);
  crc = crc32c_update(crc, name, name_len);
  crc = crc32c_update(crc, data, len);
  put_u32(tail, crc);
  w->offsets[w->written++] = w->pos;
  w_bytes(w, head, 12);
  w_bytes(w, name, name_len);
  w_bytes(w, data, len);
  w_bytes(w, tail, 4);
}

void shard_finish(shard_writer *w, uint64_t *bytes, uint32_t *file_crc) {
  POLLEN_ASSERT(w->written == w->count);
  uint64_t index_offset = w->pos;
  uint32_t index_crc = 0;
  for (int64_t i = 0; i < w->count; i++) {
    unsigned char b[8];
    put_u64(b, w->offsets[i]);
    index_crc = crc32c_update(index_crc, b, 8);
    w_bytes(w, b, 8);
  }
  unsigned char foot[FOOTER_BYTES];
  put_u64(foot, index_offset);
  put_u64(foot + 8, (uint64_t)w->count);
  put_u32(foot + 16, index_crc);
  put_u32(foot + 20, crc32c_update(0, foot, 20));
  memcpy(foot + 24, shard_end_magic, 8);
  w_bytes(w, foot, FOOTER_BYTES);
  if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0 || fclose(w->f) != 0)
    die("cannot write %s: %s; check free disk space", w->tmp, strerror(errno));
  if (rename(w->tmp, w->path) != 0) die("cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
  if (bytes) *bytes = w->pos;
  if (file_crc) *file_crc = w->file_crc;
  free(w->offsets);
  free(w->tmp);
  free(w->path);
  free(w);
}

/* ---------------------------------------------------------------- reader */

struct shard_reader {
  char *path;
  int fd;
  uint64_t size, index_offset;
  int num_classes;
  char **classes;
  int64_t count;
  uint64_t *offsets;
};

static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
  unsigned char *p = buf;
  while (n) {
    ssize_t got = pread(fd, p, n, (off_t)off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    p += got;
    n -= (size_t)got;
    off += (uint64_t)got;
  }
  return 0;
}

shard_reader *shard_open(const char *path, char *err, size_t errlen) {
  shard_reader *r = xcalloc(1, sizeof *r);
  r->path = xstrdup(path);
  r->fd = open(path, O_RDONLY | O_CLOEXEC);
  unsigned char *hdr = NULL, *index = NULL;
  if (r->fd < 0) {
    err_set(err, errlen, "cannot open shard %s: %s; check the data folder or %s", path, strerror(errno), REGEN);
    goto fail;
  }
  struct stat st;
  if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    err_set(err, errlen, "shard %s is not a regular file; %s", path, REGEN);
    goto fail;
  }
  r->size = (uint64_t)st.st_size;
  unsigned char fixed[16];
  if (r->size < 16 || pread_all(r->fd, fixed, 16, 0) != 0) {
    err_set(err, errlen, "shard %s is truncated (%llu bytes, shorter than its header); %s", path,
           (unsigned long long)r->size, REGEN);
    goto fail;
  }
  if (memcmp(fixed, shard_magic, 8) != 0) {
    err_set(err, errlen, "%s is not a pollen shard file (wrong magic); %s", path, REGEN);
    goto fail;
  }
  uint32_t version = get_u32(fixed + 8);
  if (version != SHARD_VERSION) {
    err_set(err, errlen, "shard %s has format version %u but this pollen reads version %d; %s", path,
           version, SHARD_VERSION, REGEN);
    goto fail;
  }
  uint32_t body = get_u32(fixed + 12);
  if (body < 12 || body > 4 + SHARD_MAX_CLASSES * (2 + SHARD_MAX_CLASS_NAME) + 8) {
    err_set(err, errlen, "shard %s has a corrupt header (body length %u); %s", path, body, REGEN);
    goto fail;
  }
  if (r->size < 16 + (uint64_t)body + 4 + FOOTER_BYTES) {
    err_set(err, errlen, "shard %s is truncated (%llu bytes); %s", path, (unsigned long long)r->size, REGEN);
    goto fail;
  }
  hdr = xmalloc(16 + body + 4);
  if (pread_all(r->fd, hdr, 16 + body + 4, 0) != 0) {
    err_set(err, errlen, "cannot read shard %s: %s; %s", path, strerror(errno), REGEN);
    goto fail;
  }
  if (crc32c_update(0, hdr, 16 + body) != get_u32(hdr + 16 + body)) {
    err_set(err, errlen, "shard %s has a corrupt header (checksum mismatch); %s", path, REGEN);
    goto fail;
  }
  const unsigned char *p = hdr + 16, *end = hdr + 16 + body;
  uint32_t nc = get_u32(p);
  p += 4;
  if (nc < 1 || nc > SHARD_MAX_CLASSES) {
    err_set(err, errlen, "shard %s has a corrupt header (%u classes); %s", path, nc, REGEN);
    goto fail;
  }
  r->classes = xcalloc(nc, sizeof(char *));
  r->num_classes = (int)nc;
  for (uint32_t k = 0; k < nc; k++) {
    if (end - p < 2) goto bad_header;
    uint16_t len = get_u16(p);
    if (len < 1 || len > SHARD_MAX_CLASS_NAME || end - p - 2 < len) goto bad_header;
    r->classes[k] = xmalloc(len + 1u);
    memcpy(r->classes[k], p + 2, len);
    r->classes[k][len] = 0;
    p += 2 + len;
  }
  if (end - p != 8) goto bad_header;
  uint64_t count = get_u64(p);
  uint64_t data_start = 16 + (uint64_t)body + 4;

  unsigned char foot[FOOTER_BYTES];
  if (pread_all(r->fd, foot, FOOTER_BYTES, r->size - FOOTER_BYTES) != 0 ||
      memcmp(foot + 24, shard_end_magic, 8) != 0) {
    err_set(err, errlen, "shard %s is truncated or was not finished (no end marker, %llu bytes); %s", path,
           (unsigned long long)r->size, REGEN);
    goto fail;
  }
  if (crc32c_update(0, foot, 20) != get_u32(foot + 20)) {
    err_set(err, errlen, "shard %s has a corrupt footer (checksum mismatch); %s", path, REGEN);
    goto fail;
  }
  r->index_offset = get_u64(foot);
  if (get_u64(foot + 8) != count || count >= (uint64_t)SHARD_MAX_RECORDS || r->index_offset < data_start ||
      r->index_offset > r->size - FOOTER_BYTES || (r->size - FOOTER_BYTES - r->index_offset) != 8 * count) {
    err_set(err, errlen, "shard %s is truncated or corrupt (footer does not match header: %llu records, %llu bytes); %s",
           path, (unsigned long long)count, (unsigned long long)r->size, REGEN);
    goto fail;
  }
  r->count = (int64_t)count;
  index = xmalloc(8 * (size_t)(count ? count : 1));
  if (pread_all(r->fd, index, 8 * (size_t)count, r->index_offset) != 0) {
    err_set(err, errlen, "cannot read the index of shard %s; %s", path, REGEN);
    goto fail;
  }
  if (crc32c_update(0, index, 8 * (size_t)count) != get_u32(foot + 16)) {
    err_set(err, errlen, "shard %s has a corrupt index (checksum mismatch); %s", path, REGEN);
    goto fail;
  }
  r->offsets = xmalloc(sizeof(uint64_t) * (size_t)(count + 1));
  for (uint64_t i = 0; i < count; i++) r->offsets[i] = get_u64(index + 8 * i);
  r->offsets[count] = r->index_offset;
  /* Records are contiguous, each at least its fixed 16 bytes: a record's extent is then
   * [offsets[i], offsets[i+1]), bounded by the file. */
  uint64_t prev = data_start;
  for (uint64_t i = 0; i < count; i++) {
    if (r->offsets[i] != prev || r->offsets[i + 1] < r->offsets[i] + 16 ||
        r->offsets[i + 1] - r->offsets[i] > 16ull + SHARD_MAX_NAME + SHARD_MAX_DATA)
      goto bad_index;
    prev = r->offsets[i + 1];
  }
  if (count == 0 && r->index_offset != data_start) goto bad_index;
  free(hdr);
  free(index);
  return r;

bad_index:
  err_set(err, errlen, "shard %s has a corrupt index (record offsets out of order or out of bounds); %s", path, REGEN);
  goto fail;
bad_header:
  err_set(err, errlen, "shard %s has a corrupt header (class table); %s", path, REGEN);
fail:
  free(hdr);
  free(index);
  shard_close(r);
  return NULL;
}

void shard_close(shard_reader *r) {
  if (!r) return;
  if (r->fd >= 0) close(r->fd);
  for (int k = 0; k < r->num_classes && r->classes; k++) free(r->classes[k]);
  free(r->classes);
  free(r->offsets);
  free(r->path);
  free(r);
}

int64_t shard_count(const shard_reader *r) { return r->count; }
int shard_num_classes(const shard_reader *r) { return r->num_classes; }
const char *shard_class_name(const shard_reader *r, int k) {
  return k >= 0 && k < r->num_classes ? r->classes[k] : NULL;
}
const char *shard_path(const shard_reader *r) { return r->path; }

/* A name from a damaged record must not garble the error line. */
static void printable(char *dst, size_t cap, const char *src, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 1 < cap; i++) dst[j++] = (src[i] >= 32 && src[i] < 127) ? src[i] : '?';
  dst[j] = 0;
}

int shard_read(shard_reader *r, int64_t i, shard_buf *buf, shard_record *rec, char *err, size_t errlen) {
  if (i < 0 || i >= r->count) {
    err_set(err, errlen, "shard %s: record %lld out of range (it holds %lld)", r->path, (long long)i, (long long)r->count);
    return -1;
  }
  uint64_t off = r->offsets[i], n = r->offsets[i + 1] - off; /* bounded in shard_open */
  if (buf->cap < n + 1) {
    buf->p = xrealloc(buf->p, (size_t)n + 1);
    buf->cap = (size_t)n + 1;
  }
  if (pread_all(r->fd, buf->p, (size_t)n, off) != 0) {
    err_set(err, errlen, "cannot read record %lld of shard %s (truncated?); %s", (long long)i, r->path, REGEN);
    return -1;
  }
  const unsigned char *p = buf->p;
  uint32_t label = get_u32(p), name_len = get_u32(p + 4), data_len = get_u32(p + 8);
  char shown[96] = "";
  if (name_len <= SHARD_MAX_NAME && 12ull + name_len <= n) printable(shown, sizeof shown, (const char *)p + 12, name_len);
  if (name_len > SHARD_MAX_NAME || data_len > SHARD_MAX_DATA || 16ull + name_len + data_len != n) {
    err_set(err, errlen, "shard %s: record %lld (%s) is corrupt (lengths do not match its extent); %s", r->path,
           (long long)i, shown, REGEN);
    return -1;
  }
  if (crc32c_update(0, p, n - 4) != get_u32(p + n - 4)) {
    err_set(err, errlen, "shard %s: record %lld (%s) is corrupt (checksum mismatch); %s", r->path, (long long)i,
           shown, REGEN);
    return -1;
  }
  if ((int64_t)label >= r->num_classes) {
    err_set(err, errlen, "shard %s: record %lld (%s) has label %u but the shard has %d classes; %s", r->path,
           (long long)i, shown, label, r->num_classes, REGEN);
    return -1;
  }
  /* Move the name one byte down to NUL-terminate it without copying the image. */
  memmove(buf->p, p + 12, name_len);
  buf->p[name_len] = 0;
  rec->label = (int)label;
  rec->name = (const char *)buf->p;
  rec->data = buf->p + 12 + name_len;
  rec->len = data_len;
  return 0;
}

int shard_file_checksum(const char *path, uint64_t *bytes, uint32_t *crc, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err_set(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  size_t cap = 1 << 20;
  unsigned char *b = xmalloc(cap);
  uint64_t total = 0;
  uint32_t c = 0;
  for (;;) {
    ssize_t got = read(fd, b, cap);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      err_set(err, errlen, "cannot read %s: %s", path, strerror(errno));
      free(b);
      close(fd);
      return -1;
    }
    if (got == 0) break;
    c = crc32c_update(c, b, (size_t)got);
    total += (uint64_t)got;
  }
  free(b);
  close(fd);
  *bytes = total;
  *crc = c;
  return 0;
}
