/* core.h - the base layer: the one way pollen reports errors, allocates, logs, times, runs
 * threads, hashes and draws random numbers.
 *
 * Every other folder (ops/, proto/, worker/, daemon/, cli/) sits on this one, and it includes
 * nothing of theirs. Not for: tensor math (ops/ops.h), file formats (proto/). Every public name
 * is prefixed by what it does, not by a module. */
#ifndef POLLEN_CORE_H
#define POLLEN_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef POLLEN_VERSION
#define POLLEN_VERSION "0.0.0"
#endif

/* Exit statuses a scheduler script can rely on (documented in the README). */
enum {
  EXIT_OK = 0,         /* finished */
  EXIT_FAILED = 1,     /* failed: fix the cause, do not simply retry */
  EXIT_USAGE = 2,      /* bad flags or arguments */
  EXIT_PREEMPTED = 75, /* stopped cleanly on a signal or request: launch again to resume */
};

/* A user-caused error: prints "pollen: <message>" on one line and exits EXIT_FAILED.
 * The message names the thing and says what to do. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Same, with a chosen exit status. */
void die_status(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
/* hook(status, message) runs in die() and die_status() after the message is printed and
 * before exit, once (NULL: none). For recording how a process ended; it must not block. */
void die_set_hook(void (*hook)(int status, const char *message));
/* Formats a one-line error into a caller's buffer (err may be NULL or errlen 0): the way
 * functions that return an error instead of dying report it. */
void err_set(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* An internal invariant broken (a pollen bug, not the user's): names file and line, aborts. */
#define POLLEN_ASSERT(c) \
  do { if (!(c)) pollen_assert_fail(#c, __FILE__, __LINE__); } while (0)
void pollen_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Allocation that never returns NULL: on failure it dies naming the size and the caller. */
#define xmalloc(n) xmalloc_at((n), __FILE__, __LINE__)
#define xcalloc(n, s) xcalloc_at((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_at((p), (n), __FILE__, __LINE__)
void *xmalloc_at(size_t n, const char *file, int line);
void *xcalloc_at(size_t n, size_t size, const char *file, int line);
void *xrealloc_at(void *p, size_t n, const char *file, int line);
/* 64-byte aligned (AVX-512 line); free with free(). */
void *xmalloc_aligned(size_t n);
char *xstrdup(const char *s);
/* fopen that dies with "cannot open PATH for reading: reason" on failure. */
FILE *xfopen(const char *path, const char *mode);

/* Names from disk (file and folder names, class names, names read from a file) are untrusted
 * text: a newline in one could forge a log line, an ESC send terminal escapes, and bytes that
 * are not UTF-8 make JSON invalid. name_escape is the one way pollen prints such a name: it
 * copies s into buf with control bytes, DEL, C1 controls and bytes that are not well-formed
 * UTF-8 written as \xNN, and '"' and '\' as \" and \\ (so the escaped form is unambiguous).
 * Other UTF-8 passes unchanged. Returns buf; a buf of 4 * strlen(s) + 1 bytes always fits,
 * a shorter one gets the name cut at a character and ending in "...". */
const char *name_escape(const char *s, char *buf, size_t cap);
/* 1 when s is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF):
 * what a JSON string must be. */
int text_is_utf8(const char *s);
/* s itself when it is well-formed UTF-8, else name_escape(s): a name made fit for JSON (the
 * JSON writer escapes quotes and control bytes itself). */
const char *name_utf8(const char *s, char *buf, size_t cap);

/* mkdir -p: creates path and its missing parents. Returns 0, or -1 with errno set. */
int make_dirs(const char *path);
/* Writes all n bytes to fd, retrying on EINTR, in syscalls of at most 1 MiB (a kill or a full
 * disk then stops at a chunk boundary). Returns 0, or -1 with errno set (EIO when the kernel
 * accepts nothing and gives no reason). */
int write_all(int fd, const void *buf, size_t n);

/* Logging: one call. Lines go to stderr with a timestamp; log_set_quiet silences info. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_set_quiet(int quiet);
/* Prefix for every log line in this process, e.g. "rank 3"; NULL for none. */
void log_set_prefix(const char *prefix);

/* Monotonic seconds. */
double time_now(void);
/* Unix time in seconds, with the fraction (status replies, heartbeats). */
double time_unix(void);

/* Threads: pollen's own loops use OpenMP and OpenBLAS is the OpenMP build, so one number
 * governs both. 0 means all cores available to this process. */
void threads_set(int n);
int threads_get(void);

/* Counter-based random numbers (Philox4x32-10): the value depends only on (key, counter),
 * never on call order, so results are identical whatever the thread count or timing. */
typedef struct { uint32_t v[4]; } philox_ctr;
philox_ctr philox4x32(philox_ctr counter, uint64_t key);
/* Convenience: 4 uniform floats in [0,1) for (key, a, b, c). */
void philox_uniform4(uint64_t key, uint32_t a, uint32_t b, uint32_t c, float out[4]);
/* 64-bit mix of several words (SplitMix64 finaliser), for deriving keys: key = mix(seed, epoch). */
uint64_t hash_mix(uint64_t a, uint64_t b);

/* FNV-1a 64 over bytes: a cheap, stable fingerprint (weights hash, config hash). */
uint64_t hash_bytes(const void *data, size_t n, uint64_t seed);

#endif
