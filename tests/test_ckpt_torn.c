/* test_ckpt_torn.c - a process killed (SIGKILL) at random moments while it writes checkpoints
 * must always leave a job folder that resumes: the newest complete checkpoint loads and holds
 * exactly the bytes written for its step, never a torn file; "no checkpoint" only before the
 * first rename; leftover .tmp files are ignored, then removed by the next writer.
 *
 * A child process writes checkpoints of 2-4 MB in a loop, resuming from the latest like a
 * relaunched trainer; the parent kills it 60 times: every other kill after a seeded random
 * delay (any phase), the others 0-1.5 ms after a .tmp file appears (to land inside the write,
 * which is short next to the fsync). It reports how many kills cut a write short (a .tmp
 * that does not verify): typically 3-15 of the 60.
 * POLLEN_TEST_SEED=N changes the seed. (SIGKILL keeps the page cache, so this tests the
 * temp-file/rename protocol; the fsyncs guard against power loss, which it cannot simulate.) */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "tests/check.h"


#define MODEL "mobilenetv3_small"
#define HASH "00c0ffee"
enum { KILLS = 60 };

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p);
}

/* The bytes of step s: the size varies with the step so a torn mix would show. */
static size_t step_bytes(uint64_t s) { return (2u << 20) + (size_t)(hash_mix(s, 7) % (2u << 20)); }
static void step_fill(uint8_t *p, size_t n, uint64_t s) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = hash_mix(s, i);
    size_t k = n - i < 8 ? n - i : 8;
    memcpy(p + i, &v, k);
  }
}

/* Counts the files; *torn: .tmp files that do not verify (a write cut short). */
static void count_files(const char *dir, int *ckpts, int *tmps, int *torn) {
  *ckpts = *tmps = *torn = 0;
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n > 9 && !strcmp(e->d_name + n - 9, ".ckpt.tmp")) {
      (*tmps)++;
      char p[1024], err[1024];
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      ckptf_file f;
      if (ckptf_open(p, &f, err, sizeof err)) (*torn)++;
      else ckptf_close(&f);
    } else if (n > 5 && !strcmp(e->d_name + n - 5, ".ckpt")) {
      (*ckpts)++;
    }
  }
  closedir(d);
}

static int has_tmp(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int t = 0;
  struct dirent *e;
  while (!t && (e = readdir(d))) t = strstr(e->d_name, ".tmp") != NULL;
  closedir(d);
  return t;
}

/* The trainer stand-in: resume, then write checkpoints back to back until killed. */
static void child(const char *job) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  alarm(120); /* never outlive a broken parent */
  log_set_quiet(1);
  char err[1024];
  ckpt_loaded ld;
  uint64_t step = 1;
  ckpt_status st = ckpt_load_latest(job, MODEL, HASH, &ld, err, sizeof err);
  if (st == CKPT_LOADED) step = (uint64_t)ld.file.meta.step + 1;
  else if (st != CKPT_NONE) _exit(3);
  ckpt_loaded_free(&ld);
  ckpt_writer *w = ckpt_writer_start(job, 3, err, sizeof err);
  if (!w) _exit(4);
  uint8_t *buf = xmalloc(4u << 20);
  for (;; step++) {
    size_t n = step_bytes(step);
    step_fill(buf, n, step);
    ckptf_section_in s[] = {{"weights", CKPTF_KIND_BYTES, buf, n}, {"rng", CKPTF_KIND_U64, &step, 8}};
    ckpt_snapshot snap = {{0}, s, 2};
    snap.meta.step = (int64_t)step;
    snap.meta.world_size = 1;
    snprintf(snap.meta.model, sizeof snap.meta.model, MODEL);
    snprintf(snap.meta.config_hash, sizeof snap.meta.config_hash, HASH);
    if (ckpt_writer_submit(w, &snap)) _exit(5);
  }
}

int main(void) {
  const char *env = getenv("POLLEN_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 10) : 20241126;
  char root[] = "/tmp/pollen-test-torn-XXXXXX";
  REQUIRE(mkdtemp(root), "mkdtemp: %s", strerror(errno));
  char job[256], dir[300];
  snprintf(job, sizeof job, "%s/job", root);
  snprintf(dir, sizeof dir, "%s/checkpoints", job);
  log_set_quiet(1);
  uint8_t *want = xmalloc(4u << 20);
  int64_t last_step = -1;
  int mid_write = 0, torn_writes = 0, loaded = 0;
  double t0 = time_now();
  for (int k = 0; k < KILLS; k++) {
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) child(job);
    uint64_t rnd = hash_mix(seed, (uint64_t)k);
    long us;
    if (k % 2 == 0) {
      /* 1..150 ms: lands in every phase (start, copy, write, fsync, rename, prune). */
      us = 1000 + (long)(rnd % 149000);
    } else {
      /* Wait for a write to start (up to 2 s), then 0..1.5 ms into it. */
      for (int i = 0; i < 20000 && !has_tmp(dir); i++) usleep(100);
      us = (long)(rnd % 1500);
    }
    usleep((useconds_t)us);
    kill(pid, SIGKILL);
    int status;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    REQUIRE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
          "writer child exited by itself (status %d) instead of being killed", status);
    int ckpts, tmps, torn;
    count_files(dir, &ckpts, &tmps, &torn);
    mid_write += tmps > 0;
    torn_writes += torn > 0;

    ckpt_loaded ld;
    char err[1024];
    ckpt_status st = ckpt_load_latest(job, MODEL, HASH, &ld, err, sizeof err);
    if (!ckpts) {
      REQUIRE(st == CKPT_NONE && last_step < 0, "kill %d: status %d with no checkpoint file: %s", k, st, err);
      continue;
    }
    REQUIRE(st == CKPT_LOADED, "kill %d after %ld us: the job does not resume: %s", k, us, err);
    REQUIRE(ld.n_skipped == 0, "kill %d: a torn checkpoint under a final name: %s", k, ld.skipped);
    uint64_t s = (uint64_t)ld.file.meta.step;
    REQUIRE((int64_t)s >= last_step, "kill %d: went back from step %lld to %llu", k, (long long)last_step,
          (unsigned long long)s);
    const ckptf_section *w = ckpt_loaded_find(&ld, "weights"), *r = ckpt_loaded_find(&ld, "rng");
    size_t n = step_bytes(s);
    step_fill(want, n, s);
    REQUIRE(w && w->len == n && !memcmp(w->data, want, n), "kill %d: step %llu holds other bytes", k,
          (unsigned long long)s);
    REQUIRE(r && r->len == 8 && !memcmp(r->data, &s, 8), "kill %d: rng section wrong", k);
    last_step = (int64_t)s;
    loaded++;
    ckpt_loaded_free(&ld);
  }
  REQUIRE(last_step > 0, "no checkpoint was ever completed in %d runs", KILLS);
  REQUIRE(mid_write > 0, "no kill landed during a write; the test proved nothing");
  char err[1024];
  ckpt_writer *w = ckpt_writer_start(job, 3, err, sizeof err);
  REQUIRE(w, "%s", err);
  int ckpts, tmps, torn;
  count_files(dir, &ckpts, &tmps, &torn);
  /* More than keep (3) checkpoints may remain: a kill between rename and pruning leaves one
   * extra, and pruning happens after the next successful write. */
  REQUIRE(tmps == 0 && ckpts >= 1, "after writer start: %d .tmp, %d .ckpt", tmps, ckpts);
  ckpt_writer_stop(w);
  printf("ok %d kills (seed %llu): %d left a .tmp, %d of them torn (cut mid-write); %d resumes verified, "
         "reached step %lld, %.1f s\n",
         KILLS, (unsigned long long)seed, mid_write, torn_writes, loaded, (long long)last_step, time_now() - t0);
  nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(want);
  return 0;
}
