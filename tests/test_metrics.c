/* test_metrics.c - metrics.jsonl records (proto/metrics.h): the exact line written, write then
 * parse, lines of older pollen, newer versions refused, damaged lines rejected with a reason,
 * and the file reader's skipping, tail and version handling. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/metrics.h"
#include "tests/check.h"

static metrics_record sample(void) {
  return (metrics_record){.step = 120, .epoch = 3, .loss = 1.2345678, .train_acc = 0.625, .val_acc = NAN,
                          .lr = 0.05, .images_per_s = 310.25, .comm_exposed_s = 0.001, .elapsed_s = 42.5,
                          .time = 1700000000};
}

/* The line metrics_write produces for r, NUL-terminated in buf. */
static void written_line(const metrics_record *r, char *buf, size_t cap) {
  FILE *f = tmpfile();
  REQUIRE(f, "tmpfile: %s", strerror(errno));
  REQUIRE(metrics_write(f, r) == 0, "metrics_write: %s", strerror(errno));
  rewind(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = 0;
  fclose(f);
}

static void test_write_and_parse(void) {
  metrics_record r = sample(), back;
  char line[1024], err[256];
  written_line(&r, line, sizeof line);
  CHECK(!strcmp(line, "{\"v\":2,\"step\":120,\"epoch\":3,\"loss\":1.23457,\"train_acc\":0.625,\"val_acc\":null,"
                      "\"lr\":0.05,\"images_per_s\":310.25,\"comm_exposed_s\":0.001,\"elapsed_s\":42.5,"
                      "\"time\":1700000000}\n"),
        "written: %s", line);
  REQUIRE(metrics_parse(line, &back, err, sizeof err) == 0, "%s", err);
  CHECK(back.step == 120 && back.epoch == 3 && back.time == 1700000000, "integers");
  CHECK(back.loss == strtod("1.23457", NULL), "loss keeps 6 digits: %.17g", back.loss);
  CHECK(isnan(back.val_acc), "NaN -> null -> NaN");
  CHECK(back.train_acc == r.train_acc && back.lr == r.lr && back.images_per_s == r.images_per_s &&
            back.comm_exposed_s == r.comm_exposed_s && back.elapsed_s == r.elapsed_s,
        "numbers that fit in 6 digits come back exactly");

  /* Every number unknown, and the largest integers a line can carry. */
  metrics_record u = {.step = (1ll << 53), .epoch = 2147483647, .loss = NAN, .train_acc = INFINITY, .val_acc = NAN,
                      .lr = -INFINITY, .images_per_s = NAN, .comm_exposed_s = NAN, .elapsed_s = NAN, .time = 0};
  written_line(&u, line, sizeof line);
  REQUIRE(metrics_parse(line, &back, err, sizeof err) == 0, "%s: %s", line, err);
  CHECK(back.step == u.step && back.epoch == u.epoch && back.time == 0, "limits: %s", line);
  CHECK(isnan(back.loss) && isnan(back.train_acc) && isnan(back.lr) && isnan(back.elapsed_s), "all null: %s", line);

  metrics_record neg = sample();
  neg.step = -1;
  FILE *f = tmpfile();
  REQUIRE(f);
  errno = 0;
  CHECK(metrics_write(f, &neg) == -1 && errno == EINVAL, "a negative step is not written");
  CHECK(ftell(f) == 0, "nothing written for it");
  neg = sample();
  neg.epoch = 0;
  errno = 0;
  CHECK(metrics_write(f, &neg) == -1 && errno == EINVAL && ftell(f) == 0, "epoch 0 is not written (from 1)");
  fclose(f);
}

static void test_older_lines(void) {
  metrics_record r;
  char err[256];
  /* What pollen wrote before records were versioned. */
  const char *v0 = "{\"step\":7,\"epoch\":0,\"loss\":2.5,\"train_acc\":0.1,\"val_acc\":null,\"lr\":0.001,"
                   "\"images_per_s\":99.5,\"comm_exposed_s\":0,\"elapsed_s\":3.25,\"time\":1699999999}";
  REQUIRE(metrics_parse(v0, &r, err, sizeof err) == 0, "%s", err);
  CHECK(r.step == 7 && r.epoch == 1 && r.loss == 2.5 && isnan(r.val_acc) && r.elapsed_s == 3.25 && r.time == 1699999999,
        "unversioned line read as version 1, its 0-based epoch counted from 1: %d", r.epoch);
  REQUIRE(metrics_parse("{\"v\":1,\"step\":7,\"epoch\":4}", &r, err, sizeof err) == 0, "%s", err);
  CHECK(r.epoch == 5, "version 1 epoch 4 is the fifth: %d", r.epoch);
  REQUIRE(metrics_parse("{\"v\":2,\"step\":7,\"epoch\":4}", &r, err, sizeof err) == 0, "%s", err);
  CHECK(r.epoch == 4, "version 2 epochs are as written: %d", r.epoch);
  /* Hand-written lines (tests/test_status_cli.sh) leave out the timing fields. */
  REQUIRE(metrics_parse("{\"step\":200,\"epoch\":1,\"val_acc\":0.5}\r\n", &r, err, sizeof err) == 0, "%s", err);
  CHECK(r.step == 200 && r.epoch == 2 && r.val_acc == 0.5 && isnan(r.loss) && isnan(r.elapsed_s) && r.time == 0,
        "missing = unknown");
}

static void expect_refused(const char *line, const char *why) {
  metrics_record r = sample();
  char err[256] = "";
  CHECK(metrics_parse(line, &r, err, sizeof err) == -1, "accepted: %s", line);
  CHECK(strstr(err, why) != NULL, "%s: reason '%s', wanted '%s'", line, err, why);
  CHECK(!strchr(err, '\n'), "one line: %s", err);
  CHECK(r.step == 120, "record left alone on failure");
}

static void test_refused(void) {
  expect_refused("{\"v\":3,\"step\":1,\"epoch\":1,\"new_key\":1}", "version 3");
  expect_refused("{\"v\":3,\"step\":1,\"epoch\":1}", "newer pollen");
  expect_refused("{\"v\":2,\"step\":1,\"epoch\":0}", "epochs count from 1");
  expect_refused("{\"v\":1,\"step\":1,\"epoch\":2147483647}", "out of range");
  expect_refused("{\"v\":0,\"step\":1,\"epoch\":0}", "\"v\"");
  expect_refused("{\"v\":\"1\",\"step\":1,\"epoch\":0}", "\"v\"");
  expect_refused("{\"step\":300,\"epo", "not one JSON value");
  expect_refused("", "not one JSON value");
  expect_refused("garbage", "not one JSON value");
  expect_refused("{\"step\":1,\"epoch\":0} {}", "not one JSON value");
  expect_refused("[1,2]", "not a JSON object");
  expect_refused("{\"epoch\":0}", "no \"step\"");
  expect_refused("{\"step\":1}", "no \"epoch\"");
  expect_refused("{\"step\":-1,\"epoch\":0}", "\"step\"");
  expect_refused("{\"step\":1.5,\"epoch\":0}", "\"step\"");
  expect_refused("{\"step\":1,\"epoch\":3000000000}", "\"epoch\"");
  expect_refused("{\"step\":1,\"epoch\":0,\"loss\":\"low\"}", "\"loss\"");
  expect_refused("{\"step\":1,\"epoch\":0,\"loss\":1e999}", "\"loss\"");
  expect_refused("{\"step\":1,\"epoch\":0,\"time\":null}", "\"time\"");
  expect_refused("{\"step\":1,\"epoch\":0,\"step\":2}", "repeated");
  expect_refused("{\"step\":1,\"epoch\":0,\"lr\\n\":1}", "unknown key \"lr?\"");
  char big[METRICS_MAX_LINE + 64];
  memset(big, ' ', sizeof big - 1);
  big[sizeof big - 1] = 0;
  memcpy(big, "{\"step\":1,\"epoch\":0}", 20);
  expect_refused(big, "longer than");
}

typedef struct {
  int64_t steps[16];
  int n;
} visits;

static void note(const metrics_record *r, void *ctx) {
  visits *v = ctx;
  if (v->n < 16) v->steps[v->n] = r->step;
  v->n++;
}

static FILE *file_of(const char *text, size_t len) {
  FILE *f = tmpfile();
  REQUIRE(f);
  REQUIRE(fwrite(text, 1, len, f) == len);
  rewind(f);
  return f;
}

static void test_read(void) {
  char err[256];
  metrics_tally t;
  /* Good lines around a blank one, a line with a NUL byte, one too long, and a torn last one. */
  char text[8 * METRICS_MAX_LINE];
  size_t n = 0;
  n += (size_t)sprintf(text + n, "{\"v\":1,\"step\":1,\"epoch\":0}\n\n{\"step\":2,\"epoch\":0}\n");
  memcpy(text + n, "{\"step\":9,\0\"epoch\":0}\n", 22), n += 22;
  text[n++] = '{';
  memset(text + n, ' ', METRICS_MAX_LINE), n += METRICS_MAX_LINE;
  n += (size_t)sprintf(text + n, "\"step\":8,\"epoch\":0}\n{\"step\":3,\"epoch\":1}\n{\"step\":4,\"ep");
  FILE *f = file_of(text, n);
  visits v = {0};
  CHECK(metrics_read(f, 0, note, &v, &t, err, sizeof err) == 0, "%s", err);
  CHECK(v.n == 3 && v.steps[0] == 1 && v.steps[1] == 2 && v.steps[2] == 3, "%d records", v.n);
  CHECK(t.lines == 7 && t.skipped == 4, "lines %lld skipped %lld", (long long)t.lines, (long long)t.skipped);

  /* The tail: the line the window starts inside is not read. */
  const char *tail = "{\"step\":3,\"epoch\":1}\n{\"step\":4,\"ep";
  visits w = {0};
  CHECK(metrics_read(f, (long)strlen(tail) + 5, note, &w, &t, err, sizeof err) == 0, "%s", err);
  CHECK(w.n == 1 && w.steps[0] == 3, "tail: %d records", w.n);
  CHECK(t.lines == 2 && t.skipped == 1, "tail lines %lld", (long long)t.lines);
  visits all = {0};
  CHECK(metrics_read(f, 1 << 20, note, &all, NULL, err, sizeof err) == 0 && all.n == 3, "tail larger than the file");
  fclose(f);

  /* A record of a newer version stops the reader: the file is not this pollen's to read. */
  const char *newer = "{\"step\":1,\"epoch\":0}\n{\"v\":3,\"step\":2,\"epoch\":1}\n";
  f = file_of(newer, strlen(newer));
  visits x = {0};
  err[0] = 0;
  CHECK(metrics_read(f, 0, note, &x, &t, err, sizeof err) == -1, "a newer record refused");
  CHECK(strstr(err, "version 3") && strstr(err, "newer pollen"), "message: %s", err);
  fclose(f);

  f = file_of("", 0);
  visits none = {0};
  CHECK(metrics_read(f, 0, note, &none, &t, err, sizeof err) == 0 && none.n == 0 && t.lines == 0, "empty file");
  fclose(f);
}

int main(void) {
  test_write_and_parse();
  test_older_lines();
  test_refused();
  test_read();
  return check_status();
}
