/* test_replica.c - the file side of checkpoint replication (daemon/replica.h), without MPI:
 * the header checks, install (verified whole, atomic, --keep), a copy damaged in transit or
 * at the source rejected with nothing installed, the newest valid checkpoint of a folder,
 * the shared-folder token, and the sender/receiver steps over an in-memory link. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "daemon/replica.h"
#include "proto/crc32c.h"
#include "tests/check.h"

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}
static void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static char *make_tmpdir(void) {
  char t[] = "/tmp/pollen-test-replica-XXXXXX";
  REQUIRE(mkdtemp(t), "mkdtemp: %s", strerror(errno));
  return xstrdup(t);
}

static int exists(const char *job, const char *name) {
  char p[8192];
  struct stat st;
  snprintf(p, sizeof p, "%s/%s", job, name);
  return stat(p, &st) == 0;
}

static int n_ckpts(const char *job) {
  ckpt_info *v;
  int n;
  char err[256];
  REQUIRE(ckpt_list(job, &v, &n, err, sizeof err) == 0, "%s", err);
  free(v);
  return n;
}

/* Writes checkpoints of these steps into job with the real writer. */
static void write_steps(const char *job, const int64_t *steps, int n, const char *model) {
  char err[1024];
  ckpt_writer *w = ckpt_writer_start(job, 100, err, sizeof err);
  REQUIRE(w, "%s", err);
  float params[300];
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < 300; k++) params[k] = (float)(steps[i] * 1000 + k);
    ckptf_section_in s = {"params", CKPTF_KIND_F32, params, sizeof params};
    ckpt_snapshot snap = {.sections = &s, .n_sections = 1};
    snap.meta.step = steps[i];
    snap.meta.world_size = 3;
    snprintf(snap.meta.model, sizeof snap.meta.model, "%s", model);
    snprintf(snap.meta.config_hash, sizeof snap.meta.config_hash, "abcd");
    REQUIRE(ckpt_writer_submit(w, &snap) == 0);
    REQUIRE(ckpt_writer_wait(w) == 0);
    REQUIRE(ckpt_writer_written(w) == steps[i], "written %lld", (long long)ckpt_writer_written(w));
  }
  ckpt_writer_stop(w);
}

static void test_msg_check(void) {
  char err[256];
  replica_msg ok = {.version = REPLICA_VERSION, .kind = REPLICA_KIND_CKPT, .step = 5, .size = 100, .crc = 7};
  CHECK(replica_msg_check(&ok, err, sizeof err) == 0, "%s", err);
  replica_msg m = ok;
  m.version = 2;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1 && strstr(err, "version 2"), "%s", err);
  m = ok, m.kind = 0;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1);
  m = ok, m.kind = REPLICA_KIND_END + 1;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1);
  m = ok, m.size = 0;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1, "an empty checkpoint");
  m = ok, m.size = REPLICA_MAX_BYTES + 1;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1, "a huge body");
  m = ok, m.step = -1;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1);
  m = ok, m.flags = REPLICA_ABSENT;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1, "absent with a body");
  m = ok, m.flags = 2;
  CHECK(replica_msg_check(&m, err, sizeof err) == -1, "unknown flag");
  m = (replica_msg){.version = REPLICA_VERSION, .kind = REPLICA_KIND_CONFIG, .flags = REPLICA_ABSENT};
  CHECK(replica_msg_check(&m, err, sizeof err) == 0, "%s", err);
  m = (replica_msg){.version = REPLICA_VERSION, .kind = REPLICA_KIND_END, .size = 1};
  CHECK(replica_msg_check(&m, err, sizeof err) == -1, "END with a body");
  m = (replica_msg){.version = REPLICA_VERSION, .kind = REPLICA_KIND_METRICS};
  CHECK(replica_msg_check(&m, err, sizeof err) == 0, "an empty records file is fine: %s", err);
  CHECK(!strcmp(replica_kind_file(REPLICA_KIND_CONFIG), "config.json"));
  CHECK(!strcmp(replica_kind_file(REPLICA_KIND_METRICS), "metrics.jsonl"));
  CHECK(replica_kind_file(REPLICA_KIND_CKPT) == NULL);
}

static void test_install(void) {
  char *src = make_tmpdir(), *dst = make_tmpdir(), err[2048];
  int64_t steps[] = {10, 20, 30, 40};
  write_steps(src, steps, 4, "mnv3-small");
  replica_msg m;
  uint8_t *buf;
  REQUIRE(replica_read(src, REPLICA_KIND_CKPT, 40, &m, &buf, err, sizeof err) == 0, "%s", err);
  CHECK(m.kind == REPLICA_KIND_CKPT && m.step == 40 && m.size > 1200 && m.flags == 0);
  CHECK(m.crc == crc32c_update(0, buf, (size_t)m.size));
  CHECK(m.sent_us > 1600000000LL * 1000000, "sent_us is the file's mtime: %lld", (long long)m.sent_us);

  int64_t held = -1;
  CHECK(ckptf_verify_buffer("x", buf, m.size, &held, err, sizeof err) == 0 && held == 40, "%s", err);
  CHECK(ckptf_verify_buffer("x", buf, m.size - 1, &held, err, sizeof err) == -1 && strstr(err, "x: "), "%s", err);

  /* damaged in transit: the body's CRC differs from the header's */
  buf[m.size / 2] ^= 1;
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == -1 && strstr(err, "damaged in transit"), "%s", err);
  CHECK(n_ckpts(dst) == 0 && !exists(dst, "checkpoints/step-000000040.ckpt.tmp"));
  /* damaged at the source (the CRC then matches the damaged bytes): the file check catches it */
  m.crc = crc32c_update(0, buf, (size_t)m.size);
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == -1 && strstr(err, "not installed"), "%s", err);
  CHECK(n_ckpts(dst) == 0 && !exists(dst, "checkpoints/step-000000040.ckpt.tmp"), "nothing left behind");
  buf[m.size / 2] ^= 1;
  m.crc = crc32c_update(0, buf, (size_t)m.size);
  /* a file whose contents say another step than the header */
  replica_msg other = m;
  other.step = 41;
  CHECK(replica_install(dst, 2, &other, buf, err, sizeof err) == -1 && strstr(err, "holds step 40"), "%s", err);
  CHECK(!exists(dst, "checkpoints/step-000000041.ckpt"));
  /* intact: installed byte for byte */
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == 0, "%s", err);
  CHECK(replica_newest(dst, "mnv3-small", "abcd") == 40);
  free(buf);
  uint8_t *again;
  replica_msg back;
  REQUIRE(replica_read(dst, REPLICA_KIND_CKPT, 40, &back, &again, err, sizeof err) == 0, "%s", err);
  CHECK(back.size == m.size && back.crc == m.crc, "the installed copy is the same bytes");
  free(again);

  /* --keep 2: the oldest goes; an older step installed late is never the one pruned */
  for (int i = 0; i < 3; i++) {
    REQUIRE(replica_read(src, REPLICA_KIND_CKPT, steps[i], &m, &buf, err, sizeof err) == 0, "%s", err);
    CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == 0, "%s", err);
    free(buf);
  }
  CHECK(exists(dst, "checkpoints/step-000000040.ckpt") && exists(dst, "checkpoints/step-000000030.ckpt"));
  CHECK(!exists(dst, "checkpoints/step-000000020.ckpt") && !exists(dst, "checkpoints/step-000000010.ckpt"),
        "keep 2: the two newest");
  REQUIRE(replica_read(src, REPLICA_KIND_CKPT, 10, &m, &buf, err, sizeof err) == 0, "%s", err);
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == 0, "%s", err);
  free(buf);
  CHECK(n_ckpts(dst) == 3 && exists(dst, "checkpoints/step-000000010.ckpt"), "the one just installed stays");

  /* the records and the config */
  char p[8192];
  snprintf(p, sizeof p, "%s/metrics.jsonl", src);
  FILE *f = fopen(p, "w");
  fputs("{\"v\":2,\"step\":3,\"epoch\":1}\n{\"v\":2,\"step\":4,\"epoch\":1}\n{\"v\":2,\"st", f); /* a line being written */
  fclose(f);
  REQUIRE(replica_read(src, REPLICA_KIND_METRICS, 40, &m, &buf, err, sizeof err) == 0, "%s", err);
  CHECK(m.size == 54 && buf[m.size - 1] == '\n', "only whole lines go: %llu", (unsigned long long)m.size);
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == 0, "%s", err);
  free(buf);
  CHECK(replica_records_step(dst) == 4, "%lld", (long long)replica_records_step(dst));
  CHECK(replica_records_step(src) == 4);
  CHECK(replica_read(src, REPLICA_KIND_CONFIG, 40, &m, &buf, err, sizeof err) == 1 && m.flags == REPLICA_ABSENT &&
        m.size == 0 && !buf, "no config.json: absent");
  CHECK(replica_install(dst, 2, &m, buf, err, sizeof err) == -1, "an absent file installs nothing");
  CHECK(!exists(dst, "config.json"));
  rm_rf(src), rm_rf(dst);
  free(src), free(dst);
}

static void test_newest(void) {
  char *job = make_tmpdir();
  CHECK(replica_newest(job, NULL, NULL) == -1, "an empty folder");
  int64_t steps[] = {5, 9};
  write_steps(job, steps, 2, "mnv3-small");
  CHECK(replica_newest(job, "mnv3-small", "abcd") == 9);
  CHECK(replica_newest(job, "mnv3-large", NULL) == -1, "another model's is not this job's");
  CHECK(replica_newest(job, NULL, "ffff") == -1, "another config's is not this job's");
  char p[8192];
  ckpt_path(p, sizeof p, job, 9);
  FILE *f = fopen(p, "r+b");
  REQUIRE(f);
  fseek(f, 700, SEEK_SET);
  int c = fgetc(f);
  fseek(f, 700, SEEK_SET);
  fputc(c ^ 0x5a, f);
  fclose(f);
  CHECK(replica_newest(job, "mnv3-small", "abcd") == 5, "a damaged newest one is skipped");
  rm_rf(job);
  free(job);
}

static void test_token(void) {
  char *a = make_tmpdir(), *b = make_tmpdir(), t1[33], t2[33], err[512];
  REQUIRE(replica_token_write(a, t1, err, sizeof err) == 0, "%s", err);
  CHECK(strlen(t1) == 32 && strspn(t1, "0123456789abcdef") == 32, "%s", t1);
  CHECK(replica_token_same(a, t1) == 1, "the same folder");
  CHECK(replica_token_same(b, t1) == 0, "another folder has no token");
  REQUIRE(replica_token_write(b, t2, err, sizeof err) == 0, "%s", err);
  CHECK(strcmp(t1, t2), "every token is new");
  CHECK(replica_token_same(b, t1) == 0, "another folder's token differs");
  CHECK(replica_token_same(a, "") == 0);
  REQUIRE(replica_token_write(a, t2, err, sizeof err) == 0, "%s", err);
  CHECK(replica_token_same(a, t1) == 0, "a stale token from an earlier launch is not this one");
  CHECK(replica_token_write("/nonexistent/x", t1, err, sizeof err) == -1 && strstr(err, "cannot write"), "%s", err);
  rm_rf(a), rm_rf(b);
  free(a), free(b);
}

/* ---- an in-memory link: a send completes at once into a queue, a receive completes once
 * a message of its tag is queued (in order, as MPI's non-overtaking rule). ---- */
#define QMAX 64
typedef struct {
  int tag;
  uint8_t *data;
  size_t n;
} qmsg;
typedef struct {
  qmsg q[QMAX];
  int head, tail;
  int sends, recvs;
} fake_link;
typedef struct {
  fake_link *l;
  int tag;
  void *buf;
  size_t n;
} fake_recv;

static void *f_send(void *ctx, int tag, const void *buf, size_t n) {
  fake_link *l = ctx;
  REQUIRE(l->tail < QMAX);
  l->q[l->tail++] = (qmsg){tag, memcpy(xmalloc(n + 1), buf, n), n};
  l->sends++;
  return NULL; /* done at once */
}
static void *f_recv(void *ctx, int tag, void *buf, size_t n) {
  fake_recv *r = xmalloc(sizeof *r);
  *r = (fake_recv){ctx, tag, buf, n};
  return r;
}
static int f_test(void *ctx, void *t) {
  if (!t) return 1;
  fake_recv *r = t;
  fake_link *l = r->l;
  int i = l->head;
  while (i < l->tail && l->q[i].tag != r->tag) i++;
  if (i == l->tail) return 0;
  REQUIRE(l->q[i].n == r->n, "a message of %zu bytes for a receive of %zu", l->q[i].n, r->n);
  memcpy(r->buf, l->q[i].data, r->n);
  free(l->q[i].data);
  memmove(&l->q[i], &l->q[i + 1], sizeof l->q[0] * (size_t)(l->tail - i - 1));
  l->tail--;
  l->recvs++;
  free(r);
  return 1;
}
static void f_wait(void *ctx, void *t) { REQUIRE(f_test(ctx, t), "a wait that would hang"); }
static int f_probe(void *ctx, int tag) {
  fake_link *l = ctx;
  for (int i = l->head; i < l->tail; i++)
    if (l->q[i].tag == tag) return 1;
  return 0;
}

/* Installs run on the replica's own thread. */
static int64_t installed_soon(replica *r, int64_t want) {
  for (int i = 0; i < 500 && replica_installed(r) < want; i++) usleep(10000);
  return replica_installed(r);
}

static void test_flow(void) {
  char *src = make_tmpdir(), *dst = make_tmpdir(), p[8192];
  int64_t steps[] = {2, 4, 6};
  write_steps(src, steps, 3, "mnv3-small");
  snprintf(p, sizeof p, "%s/config.json", src);
  FILE *f = fopen(p, "w");
  fputs("{\"model\":\"mnv3-small\"}\n", f);
  fclose(f);
  fake_link l = {0};
  replica_link link = {&l, f_send, f_recv, f_test, f_wait, f_probe};
  replica *tx = replica_new(src, 2, 1, "rank 1 (test)", &link);
  replica *rx = replica_new(dst, 2, 0, "rank 0 (test)", &link);
  replica_progress(tx);
  CHECK(l.sends == 0, "nothing offered, nothing sent");
  replica_progress(rx);
  CHECK(replica_installed(rx) == -1);
  replica_offer(tx, 2);
  replica_progress(tx);
  /* checkpoint (head + body), config (head + body), metrics (head only: absent) */
  CHECK(l.sends == 5, "%d sends", l.sends);
  replica_progress(rx);
  CHECK(installed_soon(rx, 2) == 2 && exists(dst, "checkpoints/step-000000002.ckpt"));
  for (int i = 0; i < 500 && !exists(dst, "config.json"); i++) usleep(10000); /* it follows the checkpoint */
  CHECK(exists(dst, "config.json"));
  CHECK(!exists(dst, "metrics.jsonl"), "an absent file stays absent");
  replica_progress(tx);
  CHECK(l.sends == 5, "a checkpoint goes once");
  /* two written before the next boundary: only the newest goes */
  replica_offer(tx, 4);
  replica_offer(tx, 6);
  replica_offer(tx, 4); /* an older offer changes nothing */
  replica_drain(tx);
  CHECK(l.sends == 11, "step 6's set and END: %d", l.sends);
  replica_drain(rx);
  CHECK(replica_installed(rx) == 6 && !exists(dst, "checkpoints/step-000000004.ckpt"));
  CHECK(l.tail == 0, "the receiver took everything, END included");
  CHECK(n_ckpts(dst) == 2);
  replica_free(tx), replica_free(rx);
  rm_rf(src), rm_rf(dst);
  free(src), free(dst);
}

static void put(const char *dir, const char *name, const char *text) {
  char p[8192];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  REQUIRE(f, "%s", p);
  fputs(text, f);
  fclose(f);
}

static int same_text(const char *dir, const char *name, const char *text) {
  char p[8192], got[4096] = "";
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "r");
  if (!f) return 0;
  size_t n = fread(got, 1, sizeof got - 1, f);
  fclose(f);
  got[n] = 0;
  return !strcmp(got, text);
}

/* Start-up: the holder's newest checkpoint, config and records reach rank 0's folder; rank
 * 0's own config, and records that reach the step, stay. */
static void test_newest_to_rank0(void) {
  char *src = make_tmpdir(), *dst = make_tmpdir(), *dst2 = make_tmpdir();
  int64_t steps[] = {5, 9};
  write_steps(src, steps, 2, "mnv3-small");
  const char *recs9 = "{\"v\":2,\"step\":9,\"epoch\":1}\n", *recs3 = "{\"v\":2,\"step\":3,\"epoch\":1}\n",
             *recs12 = "{\"v\":2,\"step\":12,\"epoch\":1}\n";
  put(src, "config.json", "{\"held\":1}\n");
  put(src, "metrics.jsonl", recs9);
  put(dst, "metrics.jsonl", recs3);
  fake_link l = {0};
  replica_link link = {&l, f_send, f_recv, f_test, f_wait, f_probe};
  replica_send_newest(src, 9, &link);
  CHECK(l.sends == 6, "three headers and three bodies: %d", l.sends);
  replica_take_newest(dst, 2, 9, &link, "rank 1 (test)");
  CHECK(l.tail == 0, "everything taken");
  CHECK(replica_newest(dst, "mnv3-small", "abcd") == 9 && n_ckpts(dst) == 1, "only the newest travels");
  CHECK(same_text(dst, "config.json", "{\"held\":1}\n"), "rank 0 had no config: the holder's");
  CHECK(same_text(dst, "metrics.jsonl", recs9), "rank 0's records ended before step 9: the holder's");

  put(dst2, "config.json", "{\"own\":1}\n");
  put(dst2, "metrics.jsonl", recs12);
  replica_send_newest(src, 9, &link);
  replica_take_newest(dst2, 2, 9, &link, "rank 1 (test)");
  CHECK(replica_newest(dst2, NULL, NULL) == 9);
  CHECK(same_text(dst2, "config.json", "{\"own\":1}\n"), "rank 0's own config stays");
  CHECK(same_text(dst2, "metrics.jsonl", recs12), "rank 0's records that reach the step stay");

  char p[8192];
  snprintf(p, sizeof p, "%s/metrics.jsonl", src);
  unlink(p);
  l.sends = 0;
  replica_send_newest(src, 9, &link);
  CHECK(l.sends == 5, "no records: an absent header, no body: %d", l.sends);
  replica_take_newest(dst2, 2, 9, &link, "rank 1 (test)");
  CHECK(same_text(dst2, "metrics.jsonl", recs12));
  rm_rf(src), rm_rf(dst), rm_rf(dst2);
  free(src), free(dst), free(dst2);
}

int main(void) {
  log_set_quiet(1);
  test_msg_check();
  test_install();
  test_newest();
  test_token();
  test_flow();
  test_newest_to_rank0();
  return check_status();
}
