/* check.h - the assertions of pollen's C tests (the op tests use gradcheck.h's gc_expect).
 *   CHECK(cond, fmt, ...)    counts a failure and goes on; main returns check_status()
 *   REQUIRE(cond, fmt, ...)  ends the test at once, after check_cleanup when a test sets one
 *                            (unmounting, removing its files)
 * Both print "FAIL file:line: cond: message" on stderr; the message is optional. */
#ifndef POLLEN_TEST_CHECK_H
#define POLLEN_TEST_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int check_failures __attribute__((unused));
static void (*check_cleanup)(void) __attribute__((unused));

__attribute__((format(printf, 4, 5), unused)) static void check_report(const char *file, int line,
                                                                       const char *cond,
                                                                       const char *fmt, ...) {
  /* fmt is "|" followed by the caller's format (if any): never empty for -Wformat */
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL %s:%d: %s", file, line, cond);
  if (fmt[1]) fputs(": ", stderr), vfprintf(stderr, fmt + 1, ap);
  fputc('\n', stderr);
  va_end(ap);
}

#define CHECK(c, ...)                                            \
  do {                                                           \
    if (!(c)) {                                                  \
      check_report(__FILE__, __LINE__, #c, "|" __VA_ARGS__);      \
      check_failures++;                                          \
    }                                                            \
  } while (0)

#define REQUIRE(c, ...)                                          \
  do {                                                           \
    if (!(c)) {                                                  \
      check_report(__FILE__, __LINE__, #c, "|" __VA_ARGS__);      \
      if (check_cleanup) check_cleanup();                        \
      exit(1);                                                   \
    }                                                            \
  } while (0)

static inline int check_status(void) { return check_failures ? 1 : 0; }

#endif
