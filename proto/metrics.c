/* metrics.c - metrics.jsonl's one writer and one reader (see metrics.h). Both walk the same
 * table of fields, so the keys a line is written with are the keys a line is read with. */
#include "proto/metrics.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_INTEGER 9007199254740992.0 /* 2^53: every integer up to here is exact in JSON */

typedef enum { FIELD_VERSION, FIELD_INT64, FIELD_INT, FIELD_NUMBER } field_kind;

/* In the order a line is written. */
static const struct {
  const char *key;
  field_kind kind;
  size_t offset;
  int required; /* a line without it is not a record; the others default to unknown */
} fields[] = {
    {"v", FIELD_VERSION, 0, 0},
    {"step", FIELD_INT64, offsetof(metrics_record, step), 1},
    {"epoch", FIELD_INT, offsetof(metrics_record, epoch), 1},
    {"loss", FIELD_NUMBER, offsetof(metrics_record, loss), 0},
    {"train_acc", FIELD_NUMBER, offsetof(metrics_record, train_acc), 0},
    {"val_acc", FIELD_NUMBER, offsetof(metrics_record, val_acc), 0},
    {"lr", FIELD_NUMBER, offsetof(metrics_record, lr), 0},
    {"images_per_s", FIELD_NUMBER, offsetof(metrics_record, images_per_s), 0},
    {"comm_exposed_s", FIELD_NUMBER, offsetof(metrics_record, comm_exposed_s), 0},
    {"elapsed_s", FIELD_NUMBER, offsetof(metrics_record, elapsed_s), 0},
    {"time", FIELD_INT64, offsetof(metrics_record, time), 0},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])
#define FIELD_IN(r, i, type) ((type *)((char *)(r) + fields[i].offset))
#define FIELD_OF(r, i, type) ((const type *)((const char *)(r) + fields[i].offset))

/* ---------------------------------------------------------------- writing */

int metrics_write(FILE *f, const metrics_record *r) {
  if (r->step < 0 || r->epoch < 1 || r->time < 0) {
    errno = EINVAL;
    return -1;
  }
  char line[METRICS_MAX_LINE];
  size_t n = 0;
  for (size_t i = 0; i < N_FIELDS; i++) {
    const char *sep = i ? "," : "{", *key = fields[i].key;
    char *at = line + n;
    size_t room = sizeof line - n;
    int len = 0;
    switch (fields[i].kind) {
    case FIELD_VERSION: len = snprintf(at, room, "%s\"%s\":%d", sep, key, METRICS_VERSION); break;
    case FIELD_INT64: len = snprintf(at, room, "%s\"%s\":%lld", sep, key, (long long)*FIELD_OF(r, i, int64_t)); break;
    case FIELD_INT: len = snprintf(at, room, "%s\"%s\":%d", sep, key, *FIELD_OF(r, i, int)); break;
    case FIELD_NUMBER: {
      double v = *FIELD_OF(r, i, double);
      if (isfinite(v)) len = snprintf(at, room, "%s\"%s\":%.6g", sep, key, v);
      else len = snprintf(at, room, "%s\"%s\":null", sep, key);
      break;
    }
    }
    n += (size_t)len; /* under 40 bytes a field: far from the buffer's end */
  }
  line[n++] = '}';
  line[n++] = '\n';
  /* One write per line, so a crash cuts at most the last line. */
  if (fwrite(line, 1, n, f) != n || fflush(f) != 0) return -1;
  return 0;
}

/* ---------------------------------------------------------------- reading */

enum { PARSE_OK = 0, PARSE_BAD = -1, PARSE_NEWER = -2 };

static int integer_in(const cJSON *v, double max, double *out) {
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= max) || v->valuedouble != floor(v->valuedouble))
    return 0;
  *out = v->valuedouble;
  return 1;
}

/* A key from the file, safe to quote in a one-line message. */
static const char *printable(const char *s, char *buf, size_t cap) {
  size_t n = 0;
  for (; *s && n + 1 < cap; s++) buf[n++] = isprint((unsigned char)*s) ? *s : '?';
  buf[n] = 0;
  return buf;
}

static int refuse(int rc, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int refuse(int rc, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return rc;
}

static int parse_fields(const cJSON *o, metrics_record *r, char *err, size_t errlen) {
  /* The version first: a newer record may carry keys this pollen does not know. */
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "v");
  double d;
  if (v && (!integer_in(v, INT_MAX, &d) || d < 1)) return refuse(PARSE_BAD, err, errlen, "\"v\" is not a version number");
  if (v && d > METRICS_VERSION)
    return refuse(PARSE_NEWER, err, errlen, "a record has metrics version %.0f but this pollen reads version %d; use a newer pollen",
                  d, METRICS_VERSION);
  double version = v ? d : 1;
  metrics_record out = {0};
  int seen[N_FIELDS] = {0};
  for (size_t i = 0; i < N_FIELDS; i++)
    if (fields[i].kind == FIELD_NUMBER) *FIELD_IN(&out, i, double) = NAN;
  char name[48];
  for (const cJSON *c = o->child; c; c = c->next) {
    size_t i = 0;
    while (i < N_FIELDS && strcmp(fields[i].key, c->string)) i++;
    if (i == N_FIELDS) return refuse(PARSE_BAD, err, errlen, "unknown key \"%s\"", printable(c->string, name, sizeof name));
    const char *key = fields[i].key;
    if (seen[i]++) return refuse(PARSE_BAD, err, errlen, "key \"%s\" repeated", key);
    switch (fields[i].kind) {
    case FIELD_VERSION: break; /* judged above */
    case FIELD_INT64:
      if (!integer_in(c, MAX_INTEGER, &d)) return refuse(PARSE_BAD, err, errlen, "\"%s\" is not an integer 0..2^53", key);
      *FIELD_IN(&out, i, int64_t) = (int64_t)d;
      break;
    case FIELD_INT:
      if (!integer_in(c, INT_MAX, &d)) return refuse(PARSE_BAD, err, errlen, "\"%s\" is not an integer 0..%d", key, INT_MAX);
      *FIELD_IN(&out, i, int) = (int)d;
      break;
    case FIELD_NUMBER:
      if (cJSON_IsNull(c)) break;
      if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble))
        return refuse(PARSE_BAD, err, errlen, "\"%s\" is not a finite number or null", key);
      *FIELD_IN(&out, i, double) = c->valuedouble;
      break;
    }
  }
  for (size_t i = 0; i < N_FIELDS; i++)
    if (fields[i].required && !seen[i]) return refuse(PARSE_BAD, err, errlen, "no \"%s\"", fields[i].key);
  /* Version 1 counted epochs from 0; every reader sees them from 1. */
  if (version < 2) {
    if (out.epoch == INT_MAX) return refuse(PARSE_BAD, err, errlen, "\"epoch\" is out of range");
    out.epoch++;
  } else if (out.epoch < 1) {
    return refuse(PARSE_BAD, err, errlen, "\"epoch\" is 0 (epochs count from 1)");
  }
  *r = out;
  return PARSE_OK;
}

static int parse_line(const char *line, metrics_record *r, char *err, size_t errlen) {
  cJSON *o = cJSON_ParseWithOpts(line, NULL, 1); /* 1: nothing but white space after the value */
  int rc = !o              ? refuse(PARSE_BAD, err, errlen, "not one JSON value (a line cut short by a crash?)")
           : !cJSON_IsObject(o) ? refuse(PARSE_BAD, err, errlen, "not a JSON object")
                                : parse_fields(o, r, err, errlen);
  cJSON_Delete(o);
  return rc;
}

int metrics_parse(const char *line, metrics_record *r, char *err, size_t errlen) {
  if (strlen(line) > METRICS_MAX_LINE) return refuse(-1, err, errlen, "longer than %d bytes", METRICS_MAX_LINE);
  return parse_line(line, r, err, errlen) == PARSE_OK ? 0 : -1;
}

/* Positions f at the first line that starts within its last tail_bytes. */
static int seek_tail(FILE *f, long tail_bytes) {
  if (fseek(f, 0, SEEK_END) != 0) return -1;
  long size = ftell(f);
  if (size < 0) return -1;
  if (size <= tail_bytes) return fseek(f, 0, SEEK_SET);
  if (fseek(f, size - tail_bytes, SEEK_SET) != 0) return -1;
  int c;
  while ((c = getc(f)) != EOF && c != '\n') continue;
  return 0;
}

int metrics_read(FILE *f, long tail_bytes, void (*visit)(const metrics_record *r, void *ctx), void *ctx,
                 metrics_tally *tally, char *err, size_t errlen) {
  metrics_tally t = {0, 0};
  if (tail_bytes > 0 && seek_tail(f, tail_bytes) != 0) return refuse(-1, err, errlen, "cannot seek: %s", strerror(errno));
  char line[METRICS_MAX_LINE + 1], why[256];
  for (;;) {
    size_t n = 0;
    int c, fits = 1; /* under the length limit and free of NUL bytes */
    while ((c = getc(f)) != EOF && c != '\n') {
      if (c && n < METRICS_MAX_LINE) line[n++] = (char)c;
      else fits = 0;
    }
    if (c == EOF && n == 0 && fits) break;
    line[n] = 0;
    t.lines++;
    metrics_record r;
    int rc = fits ? parse_line(line, &r, why, sizeof why) : PARSE_BAD;
    if (rc == PARSE_NEWER) return refuse(-1, err, errlen, "%s", why);
    if (rc == PARSE_OK) visit(&r, ctx);
    else t.skipped++;
    if (c == EOF) break;
  }
  if (ferror(f)) return refuse(-1, err, errlen, "cannot read: %s", strerror(errno));
  if (tally) *tally = t;
  return 0;
}

typedef struct {
  FILE *out;
  int64_t through_step, kept, dropped;
  int write_errno;
} cut_state;

static void keep_if_done(const metrics_record *r, void *ctx) {
  cut_state *s = ctx;
  if (r->step > s->through_step) {
    s->dropped++;
  } else if (!s->write_errno) {
    if (metrics_write(s->out, r) != 0) s->write_errno = errno;
    s->kept++;
  }
}

int metrics_cut(const char *path, int64_t through_step, int64_t *kept, int64_t *dropped, char *err,
                size_t errlen) {
  *kept = *dropped = 0;
  FILE *in = fopen(path, "r");
  if (!in) return errno == ENOENT ? 0 : refuse(-1, err, errlen, "cannot read %s: %s", path, strerror(errno));
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 8);
  if (!tmp) {
    fclose(in);
    return refuse(-1, err, errlen, "out of memory cutting %s", path);
  }
  snprintf(tmp, pl + 8, "%s.tmp", path);
  cut_state s = {fopen(tmp, "w"), through_step, 0, 0, 0};
  if (!s.out) {
    int e = errno;
    refuse(-1, err, errlen, "cannot write %s: %s", tmp, strerror(e));
    fclose(in), free(tmp);
    return -1;
  }
  metrics_tally tally = {0, 0};
  int rc = metrics_read(in, 0, keep_if_done, &s, &tally, err, errlen);
  fclose(in);
  if (rc == 0 && !s.write_errno && fflush(s.out) != 0) s.write_errno = errno;
  if (rc == 0 && !s.write_errno && fsync(fileno(s.out)) != 0) s.write_errno = errno;
  fclose(s.out);
  *kept = s.kept, *dropped = s.dropped + tally.skipped;
  /* Nothing to drop: the file stays as it is. */
  if (rc == 0 && !s.write_errno && *dropped > 0 && rename(tmp, path) != 0) s.write_errno = errno;
  if (rc != 0 || s.write_errno || *dropped == 0) unlink(tmp);
  free(tmp);
  if (s.write_errno) return refuse(-1, err, errlen, "cannot rewrite %s: %s", path, strerror(s.write_errno));
  return rc;
}
