/* test_ckpt_diskfull.c - a checkpoint that does not fit on the disk (a 2 MiB tmpfs) fails with
 * a clear ENOSPC error, leaves no .tmp behind and keeps the previous checkpoint loadable; the
 * next write that fits succeeds. Needs root to mount the tmpfs; skips (77) otherwise. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "tests/check.h"

static char root[] = "/tmp/pollen-test-full-XXXXXX";
static int mounted;

static void cleanup(void) {
  if (mounted) umount2(root, MNT_DETACH);
  rmdir(root);
}

static int count_tmp(const char *dir) {
  int n = 0;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strstr(e->d_name, ".tmp") != NULL;
  closedir(d);
  return n;
}

static int submit(ckpt_writer *w, int64_t step, const uint8_t *buf, size_t n) {
  ckptf_section_in s[] = {{"weights", CKPTF_KIND_BYTES, buf, n}};
  ckpt_snapshot snap = {{0}, s, 1};
  snap.meta.step = step;
  snap.meta.world_size = 1;
  snprintf(snap.meta.model, sizeof snap.meta.model, "mobilenetv3_small");
  return ckpt_writer_submit(w, &snap);
}

int main(void) {
  log_set_quiet(1);
  check_cleanup = cleanup; /* a failed REQUIRE unmounts the tmpfs first */
  if (!mkdtemp(root)) {
    printf("SKIP: cannot make a temp directory: %s\n", strerror(errno));
    return 77;
  }
  if (geteuid() != 0 || mount("tmpfs", root, "tmpfs", 0, "size=2m")) {
    printf("SKIP: needs root to mount a tmpfs (%s)\n", geteuid() ? "not root" : strerror(errno));
    rmdir(root);
    return 77;
  }
  mounted = 1;
  char job[128], dir[160], err[1024];
  snprintf(job, sizeof job, "%s/job", root);
  snprintf(dir, sizeof dir, "%s/checkpoints", job);
  size_t big = 3u << 20;
  uint8_t *buf = xmalloc(big);
  for (size_t i = 0; i < big; i++) buf[i] = (uint8_t)(i * 31 + 7);

  ckpt_writer *w = ckpt_writer_start(job, 3, err, sizeof err);
  REQUIRE(w, "%s", err);
  REQUIRE(submit(w, 1, buf, 100000) == 0, "first submit");
  REQUIRE(ckpt_writer_wait(w) == 0, "the small checkpoint should fit");
  REQUIRE(submit(w, 2, buf, big) == 0, "the previous write succeeded, submit must say so");
  int e = ckpt_writer_wait(w);
  REQUIRE(e == ENOSPC, "a 3 MiB checkpoint on a 2 MiB disk gave errno %d", e);
  REQUIRE(ckpt_writer_last_error(w, err, sizeof err) == ENOSPC, "last_error lost the failure");
  REQUIRE(strstr(err, "step-000000002.ckpt") && strstr(err, "No space left on device") &&
            strstr(err, "earlier checkpoints are kept") && !strchr(err, '\n'),
        "unclear message: %s", err);
  printf("message: %s\n", err);
  REQUIRE(count_tmp(dir) == 0, "the failed write left its .tmp file");

  ckpt_loaded ld;
  char lerr[1024];
  REQUIRE(ckpt_load_latest(job, "mobilenetv3_small", NULL, &ld, lerr, sizeof lerr) == CKPT_LOADED, "%s", lerr);
  const ckptf_section *s = ckpt_loaded_find(&ld, "weights");
  REQUIRE(ld.file.meta.step == 1 && ld.n_skipped == 0 && s && s->len == 100000 && !memcmp(s->data, buf, 100000),
        "the previous checkpoint is not intact (step %lld)", (long long)ld.file.meta.step);
  ckpt_loaded_free(&ld);

  /* The failure is reported again at the next submit (the training loop's check point), and
   * the space the failed write took is free again. */
  REQUIRE(submit(w, 3, buf, 200000) == ENOSPC, "submit did not report the failed write");
  REQUIRE(ckpt_writer_wait(w) == 0, "a fitting checkpoint after the failure");
  REQUIRE(ckpt_writer_last_error(w, err, sizeof err) == 0 && !err[0], "error not cleared: %s", err);
  REQUIRE(ckpt_writer_stop(w) == 0, "stop");
  REQUIRE(ckpt_load_latest(job, NULL, NULL, &ld, lerr, sizeof lerr) == CKPT_LOADED && ld.file.meta.step == 3,
        "step 3 not loadable: %s", lerr);
  ckpt_loaded_free(&ld);
  free(buf);
  cleanup();
  printf("ok full disk: clear ENOSPC error, previous checkpoint intact, no .tmp left, next write fine\n");
  return 0;
}
