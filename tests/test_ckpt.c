/* test_ckpt.c - checkpoint format and writer/loader: round trips, every corrupted byte and
 * every truncation detected, fallback to the previous checkpoint with the reason, refusal of
 * another model's checkpoint, keep-K pruning, and that submit copies the caller's buffers.
 *
 *   test_ckpt                 run the tests
 *   test_ckpt --make-job DIR  write a job with 3 checkpoints, the newest corrupt (for
 *                             tests/test_ckpt_cli.sh)
 *   test_ckpt --bench [DIR]   time submit (the training loop's stall) against the whole
 *                             background write of a MobileNetV3-Small-sized snapshot */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "proto/ckpt_format.h"
#include "tests/check.h"


static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static char *make_tmpdir(void) {
  char t[] = "/tmp/pollen-test-ckpt-XXXXXX";
  REQUIRE(mkdtemp(t), "mkdtemp: %s", strerror(errno));
  return xstrdup(t);
}

/* Deterministic bytes that differ per (seed, index). */
static void fill(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = hash_mix(seed, i);
    for (size_t k = 0; k < 8 && i + k < n; k++) p[i + k] = (uint8_t)(v >> (8 * k));
  }
}

static ckptf_meta test_meta(int64_t step, const char *model) {
  ckptf_meta m;
  memset(&m, 0, sizeof m);
  m.step = step;
  m.epoch = step / 7;
  m.sample_in_epoch = step * 32 % 3000;
  m.world_size = 4;
  snprintf(m.model, sizeof m.model, "%s", model);
  snprintf(m.config_hash, sizeof m.config_hash, "%016llx", 0x1234abcdULL);
  return m;
}

static uint8_t *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  REQUIRE(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = xmalloc((size_t)sz);
  REQUIRE(fread(b, 1, (size_t)sz, f) == (size_t)sz, "read %s", path);
  fclose(f);
  *n = (size_t)sz;
  return b;
}

static void write_file(const char *path, const uint8_t *b, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f, "create %s", path);
  REQUIRE(fwrite(b, 1, n, f) == n, "write %s", path);
  fclose(f);
}

/* Writes sections + meta to path with the proto-level writer. */
static void write_ckpt(const char *path, const ckptf_meta *m, const ckptf_section_in *s, int n) {
  char *json = ckptf_meta_to_json(m);
  ckptf_section_in *all = xmalloc(sizeof *all * (size_t)(n + 1));
  all[0] = (ckptf_section_in){CKPTF_META_NAME, CKPTF_KIND_JSON, json, strlen(json)};
  memcpy(all + 1, s, sizeof *s * (size_t)n);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0, "create %s", path);
  char err[512];
  REQUIRE(ckptf_write_fd(fd, path, all, n + 1, err, sizeof err) == 0, "%s", err);
  close(fd);
  free(all);
  free(json);
}

/* ---- round trip ---- */

static void test_round_trip(const char *dir) {
  const size_t sizes[] = {0, 1, 13, 10u << 20, 4096 + 3};
  const uint32_t kinds[] = {CKPTF_KIND_BYTES, CKPTF_KIND_BYTES, CKPTF_KIND_BYTES, CKPTF_KIND_F32,
                            CKPTF_KIND_BYTES};
  const char *names[] = {"empty", "one", "odd", "weights", "rng.state"};
  enum { N = 5 };
  uint8_t *bufs[N];
  ckptf_section_in s[N];
  for (int i = 0; i < N; i++) {
    bufs[i] = xmalloc(sizes[i] + 1);
    fill(bufs[i], sizes[i], 100 + (uint64_t)i);
    s[i] = (ckptf_section_in){names[i], kinds[i], bufs[i], sizes[i]};
  }
  ckptf_meta m = test_meta(1234567, "mobilenetv3_small");
  m.unix_time = 1700000000;
  snprintf(m.pollen_version, sizeof m.pollen_version, "9.8.7");
  m.extra = cJSON_CreateObject();
  cJSON_AddNumberToObject(m.extra, "lr", 0.0125);
  cJSON_AddStringToObject(m.extra, "schedule", "cosine");

  char path[512];
  snprintf(path, sizeof path, "%s/rt.ckpt", dir);
  write_ckpt(path, &m, s, N);
  cJSON_Delete(m.extra);

  ckptf_file f;
  char err[512];
  REQUIRE(ckptf_open(path, &f, err, sizeof err) == 0, "%s", err);
  REQUIRE(f.n_sections == N + 1, "%u sections", f.n_sections);
  for (int i = 0; i < N; i++) {
    const ckptf_section *c = ckptf_find(&f, names[i]);
    REQUIRE(c, "section %s missing", names[i]);
    REQUIRE(c->len == sizes[i] && c->kind == kinds[i], "section %s: len %llu kind %u", names[i],
          (unsigned long long)c->len, c->kind);
    REQUIRE(((uintptr_t)c->data & 63) == 0, "section %s not 64-byte aligned", names[i]);
    REQUIRE(sizes[i] == 0 || !memcmp(c->data, bufs[i], sizes[i]), "section %s bytes differ", names[i]);
  }
  REQUIRE(!ckptf_find(&f, "nope"), "found a section that does not exist");
  REQUIRE(f.meta.step == 1234567 && f.meta.epoch == 1234567 / 7 &&
            f.meta.sample_in_epoch == 1234567LL * 32 % 3000 && f.meta.world_size == 4,
        "meta numbers differ");
  REQUIRE(!strcmp(f.meta.model, "mobilenetv3_small") && !strcmp(f.meta.config_hash, "000000001234abcd") &&
            !strcmp(f.meta.pollen_version, "9.8.7") && f.meta.unix_time == 1700000000,
        "meta strings differ");
  const cJSON *lr = cJSON_GetObjectItemCaseSensitive(f.meta.extra, "lr");
  const cJSON *sc = cJSON_GetObjectItemCaseSensitive(f.meta.extra, "schedule");
  REQUIRE(cJSON_IsNumber(lr) && lr->valuedouble == 0.0125 && cJSON_IsString(sc) &&
            !strcmp(sc->valuestring, "cosine"),
        "extra key/values lost");
  uint64_t lens[N + 1];
  lens[0] = f.sections[0].len;
  for (int i = 0; i < N; i++) lens[i + 1] = sizes[i];
  REQUIRE(ckptf_layout(lens, N + 1, NULL) == f.size, "file size %llu is not the layout's",
        (unsigned long long)f.size);
  ckptf_close(&f);
  for (int i = 0; i < N; i++) free(bufs[i]);
  printf("ok round trip (sections of 0, 1, 13, 10 MiB, 4099 bytes; meta and extra)\n");
}

/* ---- corruption and truncation ---- */

static void expect_reject(const char *path, const char *want, const char *what) {
  ckptf_file f;
  char err[512] = "";
  int rc = ckptf_open(path, &f, err, sizeof err);
  if (rc == 0) ckptf_close(&f);
  REQUIRE(rc != 0, "%s was not detected", what);
  REQUIRE(!strncmp(err, path, strlen(path)), "error does not name the file: %s", err);
  REQUIRE(!strchr(err, '\n'), "error is not one line: %s", err);
  if (want) REQUIRE(strstr(err, want), "%s: error '%s' lacks '%s'", what, err, want);
}

static void test_corruption(const char *dir) {
  uint8_t a[100], b[33];
  fill(a, sizeof a, 1);
  fill(b, sizeof b, 2);
  ckptf_section_in s[] = {{"opt.m", CKPTF_KIND_F32, a, sizeof a}, {"tiny", CKPTF_KIND_BYTES, b, sizeof b},
                          {"none", CKPTF_KIND_BYTES, NULL, 0}};
  ckptf_meta m = test_meta(5, "mobilenetv3_small");
  m.unix_time = 1;
  snprintf(m.pollen_version, sizeof m.pollen_version, "1");
  char good[512], bad[512];
  snprintf(good, sizeof good, "%s/good.ckpt", dir);
  snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
  write_ckpt(good, &m, s, 3);
  size_t n;
  uint8_t *img = read_file(good, &n);
  ckptf_file f;
  char err[512];
  REQUIRE(ckptf_open(good, &f, err, sizeof err) == 0, "%s", err);
  const ckptf_section *opt = ckptf_find(&f, "opt.m");
  size_t opt_off = (size_t)opt->offset;
  ckptf_close(&f);

  /* One named region each, with the message it must give. */
  struct {
    size_t off;
    const char *want, *what;
  } region[] = {
      {9, "header CRC mismatch", "header byte"},
      {64 + 1, "section table CRC mismatch", "section table byte (meta name)"},
      {64 + 96 + 80, "section table CRC mismatch", "section table byte (opt.m length)"},
      {opt_off + 50, "section 'opt.m' CRC mismatch (file corrupt)", "payload byte"},
      {n - 20, "footer", "footer byte"},
  };
  for (size_t r = 0; r < sizeof region / sizeof region[0]; r++) {
    img[region[r].off] ^= 0x40;
    write_file(bad, img, n);
    img[region[r].off] ^= 0x40;
    expect_reject(bad, region[r].want, region[r].what);
  }
  /* Every byte of the file, two different flips each: all must be caught. */
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < 2; k++) {
      uint8_t x = k ? 0x80 : 0x01;
      img[i] ^= x;
      write_file(bad, img, n);
      img[i] ^= x;
      char what[128];
      snprintf(what, sizeof what, "flip 0x%02x at byte %zu of %zu", x, i, n);
      expect_reject(bad, NULL, what);
    }
  /* Every truncation, and bytes appended. */
  for (size_t k = 0; k < n; k++) {
    write_file(bad, img, k);
    char what[128];
    snprintf(what, sizeof what, "truncation to %zu of %zu bytes", k, n);
    expect_reject(bad, k < 96 ? "truncated" : NULL, what);
  }
  uint8_t *longer = xcalloc(1, n + 64);
  memcpy(longer, img, n);
  write_file(bad, longer, n + 64);
  expect_reject(bad, NULL, "64 zero bytes appended");
  free(longer);
  expect_reject("/nonexistent/x.ckpt", "cannot open", "a missing file");
  REQUIRE(ckptf_open(good, &f, err, sizeof err) == 0, "the good copy must still verify: %s", err);
  ckptf_close(&f);
  free(img);
  printf("ok corruption: every one of %zu bytes flipped (2 ways) and every truncation detected\n", n);
}

static void test_truncate_big(const char *dir) {
  size_t big = 3u << 20;
  uint8_t *w = xmalloc(big);
  fill(w, big, 9);
  ckptf_section_in s[] = {{"weights", CKPTF_KIND_F32, w, big}, {"bn", CKPTF_KIND_F32, w, 4096}};
  ckptf_meta m = test_meta(77, "mobilenetv3_small");
  m.unix_time = 1;
  snprintf(m.pollen_version, sizeof m.pollen_version, "1");
  char good[512], bad[512];
  snprintf(good, sizeof good, "%s/big.ckpt", dir);
  snprintf(bad, sizeof bad, "%s/bigbad.ckpt", dir);
  write_ckpt(good, &m, s, 2);
  size_t n;
  uint8_t *img = read_file(good, &n);
  uint64_t r = 12345;
  for (int t = 0; t < 60; t++) {
    r = hash_mix(r, (uint64_t)t);
    size_t k = t < 4 ? n - 1 - (size_t)t : (size_t)(r % n);
    int fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0 && write(fd, img, k) == (ssize_t)k, "write %s", bad);
    close(fd);
    char what[128];
    snprintf(what, sizeof what, "truncation to %zu of %zu bytes", k, n);
    expect_reject(bad, NULL, what);
  }
  free(img);
  free(w);
  printf("ok 60 truncations of a 3 MiB checkpoint detected\n");
}

static void test_meta_strict(void) {
  const char *bad[] = {
      "[]",
      "{\"step\":1}",
      "{\"step\":-1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1.5,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":0,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"XYZ\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1,\"step\":2,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0,\"color\":1}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0,\"extra\":3}",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":0} x",
      "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"\",\"pollen_version\":\"1\",\"unix_time\":1e400}",
  };
  const char *ok = "{\"step\":1,\"epoch\":0,\"sample_in_epoch\":0,\"world_size\":1,\"model\":\"m\",\"config_hash\":\"ab\",\"pollen_version\":\"1\",\"unix_time\":0}";
  ckptf_meta m;
  char err[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    REQUIRE(ckptf_meta_parse(bad[i], strlen(bad[i]), &m, err, sizeof err) != 0, "accepted meta %s", bad[i]);
  REQUIRE(ckptf_meta_parse(ok, strlen(ok), &m, err, sizeof err) == 0, "%s", err);
  ckptf_meta_free(&m);
  /* Trailing whitespace is fine; a trailing NUL inside the section is not. */
  char padded[512];
  snprintf(padded, sizeof padded, "%s \n", ok);
  REQUIRE(ckptf_meta_parse(padded, strlen(padded), &m, err, sizeof err) == 0, "%s", err);
  ckptf_meta_free(&m);
  REQUIRE(ckptf_meta_parse(padded, strlen(padded) + 1, &m, err, sizeof err) != 0, "NUL accepted");
  printf("ok meta parsing is strict (%zu bad metas refused)\n", sizeof bad / sizeof bad[0]);
}

/* ---- the writer and the loader ---- */

static void submit_step(ckpt_writer *w, int64_t step, const char *model, size_t nbytes) {
  uint8_t *p = xmalloc(nbytes + 1);
  fill(p, nbytes, (uint64_t)step);
  ckptf_section_in s[] = {{"weights", CKPTF_KIND_BYTES, p, nbytes}};
  ckpt_snapshot snap = {test_meta(step, model), s, 1};
  REQUIRE(ckpt_writer_submit(w, &snap) == 0, "previous write failed");
  free(p);
  char err[512];
  REQUIRE(ckpt_writer_wait(w) == 0, "write of step %lld failed", (long long)step);
  REQUIRE(ckpt_writer_last_error(w, err, sizeof err) == 0 && !err[0], "last error set: %s", err);
}

static int count_files(const char *dir, const char *suffix) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "ls %s/checkpoints 2>/dev/null | grep -c '%s$'", dir, suffix);
  FILE *p = popen(cmd, "r");
  int n = 0;
  REQUIRE(p && fscanf(p, "%d", &n) == 1, "cannot count files");
  pclose(p);
  return n;
}

static void flip_byte(const char *path, long off) {
  int fd = open(path, O_RDWR);
  REQUIRE(fd >= 0, "open %s", path);
  struct stat st;
  fstat(fd, &st);
  if (off < 0) off += st.st_size;
  uint8_t c;
  REQUIRE(pread(fd, &c, 1, off) == 1, "pread");
  c ^= 0x10;
  REQUIRE(pwrite(fd, &c, 1, off) == 1, "pwrite");
  close(fd);
}

static void test_fallback(const char *root) {
  char job[512], err[1024], p[8192];
  snprintf(job, sizeof job, "%s/job-fallback", root);
  ckpt_loaded ld;
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_NONE, "missing job is not 'none'");
  ckpt_loaded_free(&ld);
  ckpt_writer *w = ckpt_writer_start(job, 3, err, sizeof err);
  REQUIRE(w, "%s", err);
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_NONE && strstr(err, "no checkpoint"),
        "empty job is not 'none': %s", err);
  ckpt_loaded_free(&ld);
  for (int s = 10; s <= 30; s += 10) submit_step(w, s, "mobilenetv3_small", 50000);
  ckpt_writer_stop(w);
  /* A .tmp with a higher step is an interrupted write: never loaded. */
  snprintf(p, sizeof p, "%s/checkpoints/step-000000040.ckpt.tmp", job);
  write_file(p, (const uint8_t *)"junk", 4);

  REQUIRE(ckpt_load_latest(job, "mobilenetv3_small", "000000001234abcd", &ld, err, sizeof err) == CKPT_LOADED,
        "%s", err);
  REQUIRE(ld.file.meta.step == 30 && ld.n_skipped == 0, "loaded step %lld, skipped %d",
        (long long)ld.file.meta.step, ld.n_skipped);
  const ckptf_section *ws = ckpt_loaded_find(&ld, "weights");
  uint8_t *want = xmalloc(50000);
  fill(want, 50000, 30);
  REQUIRE(ws && ws->len == 50000 && !memcmp(ws->data, want, 50000), "weights of step 30 differ");
  ckpt_loaded_free(&ld);

  ckpt_path(p, sizeof p, job, 30);
  flip_byte(p, 20000);
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_LOADED, "%s", err);
  REQUIRE(ld.file.meta.step == 20 && ld.n_skipped == 1, "after corrupting 30: step %lld skipped %d",
        (long long)ld.file.meta.step, ld.n_skipped);
  REQUIRE(strstr(ld.skipped, "step-000000030.ckpt: section 'weights' CRC mismatch (file corrupt); falling back to the previous checkpoint"),
        "reason: %s", ld.skipped);
  ckpt_loaded_free(&ld);

  ckpt_path(p, sizeof p, job, 20);
  REQUIRE(truncate(p, 30000) == 0, "truncate");
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_LOADED, "%s", err);
  REQUIRE(ld.file.meta.step == 10 && ld.n_skipped == 2, "after truncating 20: step %lld skipped %d",
        (long long)ld.file.meta.step, ld.n_skipped);
  ckpt_loaded_free(&ld);

  ckpt_path(p, sizeof p, job, 10);
  flip_byte(p, -3);
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_ALL_CORRUPT, "all corrupt not reported");
  REQUIRE(strstr(err, "none of the 3 checkpoints") && strstr(err, "step-000000030.ckpt"), "message: %s", err);
  ckpt_loaded_free(&ld);

  w = ckpt_writer_start(job, 3, err, sizeof err);
  REQUIRE(w, "%s", err);
  snprintf(p, sizeof p, "%s/checkpoints/step-000000040.ckpt.tmp", job);
  REQUIRE(access(p, F_OK) != 0, "writer start left the .tmp file");
  submit_step(w, 60, "mobilenetv3_small", 100);
  ckpt_writer_stop(w);
  /* A checkpoint copied to another step's name is not trusted. */
  char q[8192];
  size_t qn;
  ckpt_path(p, sizeof p, job, 60);
  uint8_t *img = read_file(p, &qn);
  ckpt_path(q, sizeof q, job, 50);
  write_file(q, img, qn);
  free(img);
  ckpt_info *list;
  int n;
  REQUIRE(ckpt_list(job, &list, &n, err, sizeof err) == 0, "%s", err);
  REQUIRE(n == 4 && list[0].step == 60 && list[0].valid && list[1].step == 50 && !list[1].valid &&
            list[2].step == 30 && !list[2].valid && list[3].step == 20 && !list[3].valid,
        "listing: n=%d", n);
  REQUIRE(strstr(list[1].reason, "name says step 50 but it holds step 60"), "reason: %s", list[1].reason);
  REQUIRE(strstr(list[2].reason, "CRC mismatch") && !strstr(list[2].reason, "checkpoints/"),
        "reason should be bare: %s", list[2].reason);
  REQUIRE(list[0].size > 100 && list[0].meta.world_size == 4, "listing details");
  free(list);
  printf("ok fallback: corrupt and truncated newest skipped with the reason; all-corrupt is an error; pruned to 3\n");
  free(want);
}

static void test_mismatch(const char *root) {
  char job[512], err[1024];
  snprintf(job, sizeof job, "%s/job-mismatch", root);
  ckpt_writer *w = ckpt_writer_start(job, 5, err, sizeof err);
  REQUIRE(w, "%s", err);
  submit_step(w, 1, "mobilenetv3_small", 10);
  submit_step(w, 2, "mobilenetv3_large", 10);
  ckpt_writer_stop(w);
  ckpt_loaded ld;
  /* The newest is another model: a refusal, not a fallback to step 1. */
  REQUIRE(ckpt_load_latest(job, "mobilenetv3_small", NULL, &ld, err, sizeof err) == CKPT_MISMATCH,
        "other model accepted");
  REQUIRE(strstr(err, "'mobilenetv3_large'") && strstr(err, "'mobilenetv3_small'") && strstr(err, "step-000000002"),
        "message: %s", err);
  REQUIRE(ckpt_load_latest(job, "mobilenetv3_large", "ffff", &ld, err, sizeof err) == CKPT_MISMATCH,
        "other config accepted");
  REQUIRE(strstr(err, "'000000001234abcd'") && strstr(err, "'ffff'"), "message: %s", err);
  REQUIRE(ckpt_load_latest(job, "mobilenetv3_large", "000000001234abcd", &ld, err, sizeof err) == CKPT_LOADED,
        "%s", err);
  ckpt_loaded_free(&ld);
  printf("ok another model or config is refused, naming both\n");
}

static void test_keep_and_lock(const char *root) {
  char job[512], err[1024], p[8192];
  snprintf(job, sizeof job, "%s/job-keep", root);
  ckpt_writer *w = ckpt_writer_start(job, 2, err, sizeof err);
  REQUIRE(w, "%s", err);
  ckpt_writer *w2 = ckpt_writer_start(job, 2, err, sizeof err);
  REQUIRE(!w2 && strstr(err, "in use by another pollen process"), "second writer allowed: %s", err);
  for (int s = 1; s <= 5; s++) submit_step(w, s, "m", 1000);
  REQUIRE(count_files(job, ".ckpt") == 2 && count_files(job, ".tmp") == 0, "not pruned to 2");
  for (int s = 1; s <= 5; s++) {
    ckpt_path(p, sizeof p, job, (uint64_t)s);
    REQUIRE((access(p, F_OK) == 0) == (s >= 4), "step %d presence wrong", s);
  }
  /* After a fallback a stale newer file exists; the fresh write must survive pruning. */
  ckpt_writer_stop(w);
  w = ckpt_writer_start(job, 1, err, sizeof err);
  REQUIRE(w, "%s", err);
  submit_step(w, 3, "m", 1000);
  ckpt_path(p, sizeof p, job, 3);
  REQUIRE(access(p, F_OK) == 0, "the checkpoint just written was pruned");
  ckpt_writer_stop(w);

  char file[600];
  snprintf(file, sizeof file, "%s/plainfile", root);
  write_file(file, (const uint8_t *)"x", 1);
  REQUIRE(!ckpt_writer_start(file, 2, err, sizeof err) && strstr(err, "cannot create"),
        "writer in a file path: %s", err);
  REQUIRE(!ckpt_writer_start(job, 0, err, sizeof err), "keep 0 accepted");
  printf("ok keep-K pruning, one writer per job, unwritable job refused\n");
}

static void test_copies(const char *root) {
  char job[512], err[1024];
  snprintf(job, sizeof job, "%s/job-copy", root);
  ckpt_writer *w = ckpt_writer_start(job, 2, err, sizeof err);
  REQUIRE(w, "%s", err);
  size_t n = 8u << 20;
  uint8_t *src = xmalloc(n), *orig = xmalloc(n);
  fill(src, n, 42);
  memcpy(orig, src, n);
  ckptf_section_in s[] = {{"weights", CKPTF_KIND_BYTES, src, n}};
  ckptf_meta m = test_meta(7, "m");
  m.extra = cJSON_CreateObject();
  cJSON_AddNumberToObject(m.extra, "lr", 0.5);
  ckpt_snapshot snap = {m, s, 1};
  ckpt_writer_submit(w, &snap);
  /* Training goes on: the caller's buffers and extra change at once. */
  memset(src, 0xEE, n);
  cJSON_ReplaceItemInObject(m.extra, "lr", cJSON_CreateNumber(9));
  REQUIRE(ckpt_writer_wait(w) == 0, "write failed");
  ckpt_writer_stop(w);
  cJSON_Delete(m.extra);
  ckpt_loaded ld;
  REQUIRE(ckpt_load_latest(job, "m", NULL, &ld, err, sizeof err) == CKPT_LOADED, "%s", err);
  const ckptf_section *c = ckpt_loaded_find(&ld, "weights");
  REQUIRE(c && c->len == n && !memcmp(c->data, orig, n), "the file holds the mutated buffer");
  REQUIRE(cJSON_GetObjectItem(ld.file.meta.extra, "lr")->valuedouble == 0.5, "extra not copied at submit");
  REQUIRE(!strcmp(ld.file.meta.pollen_version, POLLEN_VERSION) && ld.file.meta.unix_time > 1600000000,
        "version/time not filled in");
  ckpt_loaded_free(&ld);
  free(src);
  free(orig);
  printf("ok submit copies: changing the buffers right after submit does not change the file\n");
}

/* ---- modes for the shell test and the benchmark ---- */

static int make_job(const char *job) {
  char err[1024], p[8192];
  ckpt_writer *w = ckpt_writer_start(job, 5, err, sizeof err);
  REQUIRE(w, "%s", err);
  for (int s = 100; s <= 300; s += 100) submit_step(w, s, "mobilenetv3_small", 20000);
  ckpt_writer_stop(w);
  ckpt_path(p, sizeof p, job, 300);
  flip_byte(p, 10000);
  return 0;
}

static int bench(const char *dir) {
  /* MobileNetV3-Small: ~1.53M params = 6.1 MB of float32 weights, plus Adam's m and v. */
  size_t n = 1530000 * sizeof(float);
  uint8_t *wts = xmalloc(n), *m1 = xmalloc(n), *m2 = xmalloc(n);
  fill(wts, n, 1);
  fill(m1, n, 2);
  fill(m2, n, 3);
  ckptf_section_in s[] = {{"weights", CKPTF_KIND_F32, wts, n},
                          {"opt.m", CKPTF_KIND_F32, m1, n},
                          {"opt.v", CKPTF_KIND_F32, m2, n}};
  char job[512], err[1024];
  snprintf(job, sizeof job, "%s/pollen-bench-ckpt-%d", dir, (int)getpid());
  ckpt_writer *w = ckpt_writer_start(job, 2, err, sizeof err);
  REQUIRE(w, "%s", err);
  enum { REPS = 7 };
  double sub[REPS], tot[REPS];
  for (int r = 0; r < REPS; r++) {
    ckpt_snapshot snap = {test_meta(r + 1, "mobilenetv3_small"), s, 3};
    double t0 = time_now();
    ckpt_writer_submit(w, &snap);
    double t1 = time_now();
    REQUIRE(ckpt_writer_wait(w) == 0, "write failed");
    double t2 = time_now();
    sub[r] = t1 - t0;
    tot[r] = t2 - t0;
  }
  ckpt_writer_stop(w);
  char p[8192];
  ckpt_path(p, sizeof p, job, REPS);
  struct stat st;
  stat(p, &st);
  ckpt_loaded ld;
  double t0 = time_now();
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, err, sizeof err) == CKPT_LOADED, "%s", err);
  double tload = time_now() - t0;
  ckpt_loaded_free(&ld);
  /* Medians: the first submit also allocates the staging buffer. */
  for (int i = 0; i < REPS; i++)
    for (int j = i + 1; j < REPS; j++) {
      if (sub[j] < sub[i]) { double t = sub[i]; sub[i] = sub[j]; sub[j] = t; }
      if (tot[j] < tot[i]) { double t = tot[i]; tot[i] = tot[j]; tot[j] = t; }
    }
  printf("snapshot %.1f MB in 3 sections, file %lld bytes, %d reps in %s\n", 3.0 * n / 1e6,
         (long long)st.st_size, REPS, dir);
  printf("submit (training stall): median %.1f ms (min %.1f, max %.1f)\n", sub[REPS / 2] * 1e3,
         sub[0] * 1e3, sub[REPS - 1] * 1e3);
  printf("submit + background write + fsync + rename: median %.1f ms (min %.1f, max %.1f)\n",
         tot[REPS / 2] * 1e3, tot[0] * 1e3, tot[REPS - 1] * 1e3);
  printf("load + verify newest: %.1f ms\n", tload * 1e3);
  rm_rf(job);
  free(wts);
  free(m1);
  free(m2);
  return 0;
}

int main(int argc, char **argv) {
  log_set_quiet(1);
  if (argc == 3 && !strcmp(argv[1], "--make-job")) return make_job(argv[2]);
  if (argc >= 2 && !strcmp(argv[1], "--bench")) return bench(argc >= 3 ? argv[2] : "/tmp");
  char *dir = make_tmpdir();
  double t0 = time_now();
  test_meta_strict();
  test_round_trip(dir);
  test_corruption(dir);
  test_truncate_big(dir);
  test_fallback(dir);
  test_mismatch(dir);
  test_keep_and_lock(dir);
  test_copies(dir);
  rm_rf(dir);
  free(dir);
  printf("all checkpoint tests passed in %.1f s\n", time_now() - t0);
  return 0;
}
