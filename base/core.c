/* core.c - errors, allocation, logging, time, threads and counter-based RNG. */
#include "base/core.h"

#include <errno.h>
#include <unistd.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void openblas_set_num_threads(int num_threads);

static void vreport(const char *fmt, va_list ap) {
  fflush(stdout);
  fputs("pollen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fflush(stderr);
}

static void (*die_hook)(int status, const char *message);

void die_set_hook(void (*hook)(int status, const char *message)) { die_hook = hook; }

/* The hook runs once: a die() inside it must not call it again. */
static __attribute__((noreturn)) void vdie(int status, const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  vreport(fmt, ap);
  void (*hook)(int, const char *) = die_hook;
  die_hook = NULL;
  if (hook) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, copy);
    hook(status, msg);
  }
  va_end(copy);
  exit(status);
}

void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdie(EXIT_FAILED, fmt, ap);
}

void die_status(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdie(status, fmt, ap);
}

void err_set(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

void pollen_assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "pollen: internal error: assertion '%s' failed at %s:%d; please report it\n",
          expr, file, line);
  abort();
}

void *xmalloc_at(size_t n, const char *file, int line) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory allocating %zu bytes (%s:%d); use a smaller batch or model", n, file, line);
  return p;
}

void *xcalloc_at(size_t n, size_t size, const char *file, int line) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) die("out of memory allocating %zu x %zu bytes (%s:%d); use a smaller batch or model", n, size, file, line);
  return p;
}

void *xrealloc_at(void *p, size_t n, const char *file, int line) {
  void *q = realloc(p, n ? n : 1);
  if (!q) die("out of memory allocating %zu bytes (%s:%d); use a smaller batch or model", n, file, line);
  return q;
}

void *xmalloc_aligned(size_t n) {
  void *p = NULL;
  size_t rounded = (n + 63) / 64 * 64;
  if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0)
    die("out of memory allocating %zu bytes; use a smaller batch or model", n);
  return p;
}

char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = xmalloc(n);
  memcpy(d, s, n);
  return d;
}

FILE *xfopen(const char *path, const char *mode) {
  FILE *f = fopen(path, mode);
  if (!f)
    die("cannot open %s for %s: %s", path, mode[0] == 'r' ? "reading" : "writing", strerror(errno));
  return f;
}

/* Length (1..4) of the well-formed UTF-8 character at s, with its code point; 0 when s does
 * not start one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF). */
static int utf8_char(const unsigned char *s, uint32_t *cp) {
  unsigned c = s[0];
  int n;
  uint32_t v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) n = 2, v = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) n = 3, v = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, v = c & 0x07, min = 0x10000;
  else return 0;
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at the terminating NUL */
    v = v << 6 | (s[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

int text_is_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  uint32_t cp;
  for (int n; *p; p += n)
    if (!(n = utf8_char(p, &cp))) return 0;
  return 1;
}

/* Writes the escaped form of s into buf while it fits in limit bytes (NUL not counted) and
 * returns the whole form's length, stopping only between characters. */
static size_t escape_into(const unsigned char *p, char *buf, size_t limit, size_t *written) {
  static const char hex[] = "0123456789abcdef";
  size_t total = 0, j = 0;
  int full = 0;
  while (*p) {
    char piece[16];
    size_t k = 0;
    uint32_t cp = 0;
    int n = utf8_char(p, &cp);
    if (n == 1 && (cp == '"' || cp == '\\')) {
      piece[k++] = '\\';
      piece[k++] = (char)cp;
    } else if (n && cp >= 0x20 && !(cp >= 0x7F && cp < 0xA0)) {
      memcpy(piece, p, (size_t)n);
      k = (size_t)n;
    } else { /* a control character (C0, DEL, C1) or a byte that is not UTF-8: each byte as \xNN */
      if (!n) n = 1;
      for (int i = 0; i < n; i++) {
        piece[k++] = '\\', piece[k++] = 'x';
        piece[k++] = hex[p[i] >> 4], piece[k++] = hex[p[i] & 15];
      }
    }
    if (!full && j + k <= limit) {
      memcpy(buf + j, piece, k);
      j += k;
    } else {
      full = 1;
    }
    total += k;
    p += n;
  }
  *written = j;
  return total;
}

const char *name_escape(const char *s, char *buf, size_t cap) {
  if (!buf || !cap) return "";
  const unsigned char *p = (const unsigned char *)(s ? s : "(null)");
  size_t j;
  if (escape_into(p, buf, cap - 1, &j) <= cap - 1) {
    buf[j] = 0;
    return buf;
  }
  /* Too long: as much as fits with "..." after it (or only what fits, in a tiny buffer). */
  int dots = cap >= 4;
  escape_into(p, buf, cap - 1 - (dots ? 3 : 0), &j);
  if (dots) memcpy(buf + j, "...", 3), j += 3;
  buf[j] = 0;
  return buf;
}

const char *name_utf8(const char *s, char *buf, size_t cap) {
  return s && text_is_utf8(s) ? s : name_escape(s, buf, cap);
}

int write_all(int fd, const void *buf, size_t n) {
  const unsigned char *p = buf;
  while (n > 0) {
    size_t chunk = n > (1u << 20) ? (1u << 20) : n;
    ssize_t k = write(fd, p, chunk);
    if (k < 0 && errno == EINTR) continue;
    if (k == 0) errno = EIO;
    if (k <= 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

int make_dirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, path, n + 1);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
  return 0;
}

static int log_quiet;
static char log_prefix[64];

void log_set_quiet(int quiet) { log_quiet = quiet; }
void log_set_prefix(const char *prefix) {
  snprintf(log_prefix, sizeof log_prefix, "%s", prefix ? prefix : "");
}

static void vlog(const char *level, const char *fmt, va_list ap) {
  char stamp[32];
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  fprintf(stderr, "[%s]%s%s%s %s", stamp, log_prefix[0] ? " " : "", log_prefix, level, "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

void log_info(const char *fmt, ...) {
  if (log_quiet) return;
  va_list ap;
  va_start(ap, fmt);
  vlog("", fmt, ap);
  va_end(ap);
}

void log_warn(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(" warning:", fmt, ap);
  va_end(ap);
}

static double clock_seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double time_now(void) { return clock_seconds(CLOCK_MONOTONIC); }
double time_unix(void) { return clock_seconds(CLOCK_REALTIME); }

static int threads_current;

void threads_set(int n) {
  if (n <= 0) n = omp_get_num_procs();
  threads_current = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int threads_get(void) { return threads_current ? threads_current : omp_get_max_threads(); }

/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11). */
philox_ctr philox4x32(philox_ctr c, uint64_t key) {
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c.v[0];
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c.v[2];
    philox_ctr n;
    n.v[0] = (uint32_t)(p1 >> 32) ^ c.v[1] ^ k0;
    n.v[1] = (uint32_t)p1;
    n.v[2] = (uint32_t)(p0 >> 32) ^ c.v[3] ^ k1;
    n.v[3] = (uint32_t)p0;
    c = n;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

void philox_uniform4(uint64_t key, uint32_t a, uint32_t b, uint32_t c, float out[4]) {
  philox_ctr ctr = {{a, b, c, 0}};
  philox_ctr r = philox4x32(ctr, key);
  /* 24 high bits -> exactly representable floats in [0,1). */
  for (int i = 0; i < 4; i++) out[i] = (float)(r.v[i] >> 8) * (1.0f / 16777216.0f);
}

uint64_t hash_mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t hash_bytes(const void *data, size_t n, uint64_t seed) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
