/* ckpt.c - the background checkpoint writer, the fall-back loader and the listing.
 *
 * Crash safety rests on POSIX rename being atomic: a final name only ever points at a file
 * that was completely written and fsync'd first, and the directory is fsync'd after the
 * rename so the new name itself survives a power cut. */
#include "daemon/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"

#define CKPT_SUBDIR "checkpoints"

static void copy_str(char *dst, size_t cap, const char *src) {
  if (!cap) return;
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = 0;
}

void ckpt_path(char *out, size_t outlen, const char *job_dir, uint64_t step) {
  snprintf(out, outlen, "%s/" CKPT_SUBDIR "/step-%09llu.ckpt", job_dir, (unsigned long long)step);
}

/* The step of a canonical "step-%09llu.ckpt" name (so each step has exactly one name), or -1. */
static int parse_name(const char *name, uint64_t *step) {
  if (strncmp(name, "step-", 5)) return -1;
  const char *p = name + 5;
  uint64_t v = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (digits >= 19) return -1;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  if (!digits || strcmp(p, ".ckpt")) return -1;
  char canon[64];
  snprintf(canon, sizeof canon, "step-%09llu.ckpt", (unsigned long long)v);
  if (strcmp(canon, name)) return -1;
  *step = v;
  return 0;
}

static int by_step_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Steps of the checkpoints in dir, newest first. 0 (with *n = 0 when dir does not exist), or
 * -1 with errno when it cannot be read. */
static int scan_steps(const char *dir, uint64_t **steps, int *n) {
  *steps = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  int cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    uint64_t s;
    if (parse_name(e->d_name, &s)) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      *steps = xrealloc(*steps, sizeof(uint64_t) * (size_t)cap);
    }
    (*steps)[(*n)++] = s;
  }
  closedir(d);
  if (*n) qsort(*steps, (size_t)*n, sizeof(uint64_t), by_step_desc);
  return 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

/* ---- the writer ---- */

struct ckpt_writer {
  char job[4096];
  char dir[4096 + 16];
  int keep;
  int lock_fd;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int pending; /* a snapshot is staged and not yet written (guards everything below) */
  int stop;
  /* The staged snapshot: sections point into stage; names are copies. */
  uint8_t *stage;
  size_t stage_cap;
  ckptf_section_in *secs;
  char (*names)[64];
  int secs_cap, n_secs;
  char *meta_json;
  uint64_t step;
  /* The outcome of the last finished write, and the newest step written. */
  int64_t written;
  int last_errno;
  char last_msg[1024];
};

/* Removes step-N.ckpt.tmp files left by a writer that was killed mid-write. */
static void remove_leftovers(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (strncmp(e->d_name, "step-", 5) || n < 9 || strcmp(e->d_name + n - 9, ".ckpt.tmp")) continue;
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (!unlink(p)) log_info("removed %s, left by an interrupted checkpoint write", p);
  }
  closedir(d);
}

void ckpt_prune(const char *job_dir, int keep, uint64_t except) {
  char dir[8192];
  snprintf(dir, sizeof dir, "%s/" CKPT_SUBDIR, job_dir);
  uint64_t *steps;
  int n;
  if (scan_steps(dir, &steps, &n)) return;
  int deleted = 0;
  for (int i = keep; i < n; i++) {
    if (steps[i] == except) continue;
    char p[8192];
    ckpt_path(p, sizeof p, job_dir, steps[i]);
    if (unlink(p) && errno != ENOENT) log_warn("cannot delete old checkpoint %s: %s", p, strerror(errno));
    else deleted++;
  }
  free(steps);
  if (deleted) fsync_dir(dir);
}

/* Writes the staged snapshot; returns 0 or an errno with the message in msg. */
static int write_staged(ckpt_writer *w, char *msg, size_t msglen) {
  char path[8192], tmp[8200];
  ckpt_path(path, sizeof path, w->job, w->step);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  char why[1024] = "";
  int e = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    e = errno;
    err_set(why, sizeof why, "%s: cannot create: %s", tmp, strerror(e));
  } else if (ckptf_write_fd(fd, path, w->secs, w->n_secs, why, sizeof why)) {
    e = errno ? errno : EIO;
  } else if (fsync(fd)) {
    e = errno;
    err_set(why, sizeof why, "%s: fsync failed: %s", path, strerror(e));
  }
  if (fd >= 0 && close(fd) && !e) {
    e = errno;
    err_set(why, sizeof why, "%s: close failed: %s", path, strerror(e));
  }
  if (!e && rename(tmp, path)) {
    e = errno;
    err_set(why, sizeof why, "%s: rename from .tmp failed: %s", path, strerror(e));
  }
  if (e) {
    unlink(tmp);
    err_set(msg, msglen, "%s; earlier checkpoints are kept%s", why,
            e == ENOSPC || e == EDQUOT ? " (disk full: free space or lower --keep)" : "");
    return e;
  }
  if (fsync_dir(w->dir)) {
    e = errno;
    err_set(msg, msglen, "%s: written, but fsync of %s failed: %s (it may not survive a power cut)",
            path, w->dir, strerror(e));
    return e;
  }
  ckpt_prune(w->job, w->keep, w->step);
  return 0;
}

static void *writer_main(void *arg) {
  ckpt_writer *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->pending && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
    if (!w->pending) break;
    pthread_mutex_unlock(&w->mu);
    char msg[1024] = "";
    double t0 = time_now();
    int e = write_staged(w, msg, sizeof msg);
    if (e) log_warn("checkpoint not saved: %s", msg);
    else log_info("checkpoint step %llu saved (%.1f s)", (unsigned long long)w->step, time_now() - t0);
    pthread_mutex_lock(&w->mu);
    w->last_errno = e;
    if (!e) w->written = (int64_t)w->step;
    copy_str(w->last_msg, sizeof w->last_msg, msg);
    w->pending = 0;
    pthread_cond_broadcast(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

ckpt_writer *ckpt_writer_start(const char *job_dir, int keep, char *err, size_t errlen) {
  if (keep < 1) {
    err_set(err, errlen, "--keep %d: keep at least 1 checkpoint", keep);
    return NULL;
  }
  if (strlen(job_dir) >= 4096 - 64) {
    err_set(err, errlen, "job directory path is too long");
    return NULL;
  }
  ckpt_writer *w = xcalloc(1, sizeof *w);
  copy_str(w->job, sizeof w->job, job_dir);
  snprintf(w->dir, sizeof w->dir, "%s/" CKPT_SUBDIR, job_dir);
  w->keep = keep;
  w->lock_fd = -1;
  w->written = -1;
  if ((mkdir(w->job, 0755) && errno != EEXIST) || (mkdir(w->dir, 0755) && errno != EEXIST)) {
    err_set(err, errlen, "cannot create %s: %s; pick a writable --job directory", w->dir, strerror(errno));
    goto fail;
  }
  char lock[8192];
  snprintf(lock, sizeof lock, "%s/.lock", w->dir);
  w->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (w->lock_fd < 0) {
    err_set(err, errlen, "cannot create %s: %s; pick a writable --job directory", lock, strerror(errno));
    goto fail;
  }
  if (flock(w->lock_fd, LOCK_EX | LOCK_NB)) {
    err_set(err, errlen, "%s is in use by another pollen process (it holds %s); stop it or use another --job directory",
            w->job, lock);
    goto fail;
  }
  remove_leftovers(w->dir);
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->thread, NULL, writer_main, w)) {
    err_set(err, errlen, "cannot start the checkpoint writer thread");
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    goto fail;
  }
  return w;
fail:
  if (w->lock_fd >= 0) close(w->lock_fd);
  free(w);
  return NULL;
}

static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

int ckpt_writer_submit(ckpt_writer *w, const ckpt_snapshot *s) {
  char why[256];
  POLLEN_ASSERT(s->n_sections >= 0 && (s->n_sections == 0 || s->sections));
  if (ckptf_check_sections(s->sections, s->n_sections, why, sizeof why)) {
    fprintf(stderr, "pollen: bad checkpoint snapshot: %s\n", why);
    POLLEN_ASSERT(!"valid snapshot sections");
  }
  for (int i = 0; i < s->n_sections; i++) POLLEN_ASSERT(strcmp(s->sections[i].name, CKPTF_META_NAME));

  ckptf_meta m = s->meta;
  if (!m.pollen_version[0]) copy_str(m.pollen_version, sizeof m.pollen_version, POLLEN_VERSION);
  if (!m.unix_time) m.unix_time = (int64_t)time(NULL);
  if (m.world_size < 1) m.world_size = 1;
  char *json = ckptf_meta_to_json(&m); /* serialised now: the caller may change extra later */
  /* Reading it back here catches a meta the loader would reject (a bug) before it costs a
   * checkpoint. */
  ckptf_meta back;
  if (ckptf_meta_parse(json, strlen(json), &back, why, sizeof why)) {
    fprintf(stderr, "pollen: bad checkpoint meta: %s\n", why);
    POLLEN_ASSERT(!"valid snapshot meta");
  }
  ckptf_meta_free(&back);

  pthread_mutex_lock(&w->mu);
  while (w->pending) pthread_cond_wait(&w->cv, &w->mu);
  int prev = w->last_errno;
  free(w->meta_json);
  w->meta_json = json;
  int n = s->n_sections + 1;
  if (n > w->secs_cap) {
    w->secs = xrealloc(w->secs, sizeof *w->secs * (size_t)n);
    w->names = xrealloc(w->names, sizeof *w->names * (size_t)n);
    w->secs_cap = n;
  }
  size_t need = 0;
  for (int i = 0; i < s->n_sections; i++) need += align64((size_t)s->sections[i].len);
  if (need > w->stage_cap) {
    free(w->stage);
    w->stage = xmalloc_aligned(need);
    w->stage_cap = need;
  }
  w->secs[0] = (ckptf_section_in){CKPTF_META_NAME, CKPTF_KIND_JSON, json, strlen(json)};
  size_t off = 0;
  for (int i = 0; i < s->n_sections; i++) {
    const ckptf_section_in *src = &s->sections[i];
    copy_str(w->names[i + 1], sizeof w->names[i + 1], src->name);
    if (src->len) memcpy(w->stage + off, src->data, (size_t)src->len);
    w->secs[i + 1] = (ckptf_section_in){w->names[i + 1], src->kind, w->stage + off, src->len};
    off += align64((size_t)src->len);
  }
  w->n_secs = n;
  w->step = (uint64_t)m.step;
  w->pending = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return prev;
}

int ckpt_writer_wait(ckpt_writer *w) {
  pthread_mutex_lock(&w->mu);
  while (w->pending) pthread_cond_wait(&w->cv, &w->mu);
  int e = w->last_errno;
  pthread_mutex_unlock(&w->mu);
  return e;
}

int64_t ckpt_writer_written(ckpt_writer *w) {
  pthread_mutex_lock(&w->mu);
  int64_t s = w->written;
  pthread_mutex_unlock(&w->mu);
  return s;
}

int ckpt_writer_last_error(ckpt_writer *w, char *msg, size_t msglen) {
  pthread_mutex_lock(&w->mu);
  int e = w->last_errno;
  if (msg && msglen) copy_str(msg, msglen, e ? w->last_msg : "");
  pthread_mutex_unlock(&w->mu);
  return e;
}

int ckpt_writer_stop(ckpt_writer *w) {
  if (!w) return 0;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL); /* the thread finishes a pending write before it exits */
  int e = w->last_errno;
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  close(w->lock_fd); /* releases the flock */
  free(w->stage);
  free(w->secs);
  free(w->names);
  free(w->meta_json);
  free(w);
  return e;
}

/* ---- loading and listing ---- */

/* Opens and verifies one checkpoint, including that its name and contents agree on the step. */
static int open_checked(const char *path, uint64_t step, ckptf_file *f, char *err, size_t errlen) {
  if (ckptf_open(path, f, err, errlen)) return -1;
  if ((uint64_t)f->meta.step != step) {
    err_set(err, errlen, "%s: its name says step %llu but it holds step %lld (renamed by hand?)", path,
            (unsigned long long)step, (long long)f->meta.step);
    ckptf_close(f);
    return -1;
  }
  return 0;
}

ckpt_match ckpt_meta_match(const ckptf_meta *m, const char *expect_model, const char *expect_config_hash) {
  if (expect_model && strcmp(expect_model, m->model)) return CKPT_OTHER_MODEL;
  if (expect_config_hash && strcmp(expect_config_hash, m->config_hash)) return CKPT_OTHER_CONFIG;
  return CKPT_SAME_JOB;
}

ckpt_status ckpt_load_latest(const char *job_dir, const char *expect_model,
                             const char *expect_config_hash, ckpt_loaded *out, char *err,
                             size_t errlen) {
  memset(out, 0, sizeof *out);
  char dir[8192];
  snprintf(dir, sizeof dir, "%s/" CKPT_SUBDIR, job_dir);
  uint64_t *steps;
  int n;
  if (scan_steps(dir, &steps, &n)) {
    err_set(err, errlen, "cannot read %s: %s", dir, strerror(errno));
    return CKPT_IO_ERROR;
  }
  if (n == 0) {
    err_set(err, errlen, "no checkpoint in %s", dir);
    return CKPT_NONE;
  }
  for (int i = 0; i < n; i++) {
    char path[8192], why[1024];
    ckpt_path(path, sizeof path, job_dir, steps[i]);
    if (open_checked(path, steps[i], &out->file, why, sizeof why)) {
      char note[1100];
      err_set(note, sizeof note, "%s; %s", why,
               i + 1 < n ? "falling back to the previous checkpoint" : "no older checkpoint left");
      log_warn("%s", note);
      if (!out->n_skipped) copy_str(out->skipped, sizeof out->skipped, note);
      out->n_skipped++;
      continue;
    }
    const ckptf_meta *m = &out->file.meta;
    ckpt_match match = ckpt_meta_match(m, expect_model, expect_config_hash);
    if (match != CKPT_SAME_JOB) {
      /* Name only what differs: export, which asks for no config hash, compares the model. */
      if (match == CKPT_OTHER_MODEL)
        err_set(err, errlen, "%s was saved by model '%s', but this job is model '%s'; resume with "
                "the original model, or use a new --job directory", path, m->model, expect_model);
      else
        err_set(err, errlen, "%s was saved with config hash '%s', but this run's is '%s'; resume "
                "with the original settings, or use a new --job directory", path, m->config_hash,
                expect_config_hash);
      ckptf_close(&out->file);
      free(steps);
      return CKPT_MISMATCH;
    }
    copy_str(out->path, sizeof out->path, path);
    if (out->n_skipped)
      log_warn("resuming from %s (step %lld) after skipping %d newer checkpoint(s)", path,
               (long long)m->step, out->n_skipped);
    free(steps);
    return CKPT_LOADED;
  }
  err_set(err, errlen, "none of the %d checkpoints in %s verifies (newest: %s); restore one from a backup, or delete them to start over",
          n, dir, out->skipped);
  free(steps);
  return CKPT_ALL_CORRUPT;
}

const ckptf_section *ckpt_loaded_find(const ckpt_loaded *l, const char *name) {
  return ckptf_find(&l->file, name);
}

void ckpt_loaded_free(ckpt_loaded *l) {
  ckptf_close(&l->file);
  memset(l, 0, sizeof *l);
}

int ckpt_list(const char *job_dir, ckpt_info **out, int *n, char *err, size_t errlen) {
  char dir[8192];
  snprintf(dir, sizeof dir, "%s/" CKPT_SUBDIR, job_dir);
  uint64_t *steps;
  *out = NULL;
  *n = 0;
  int count;
  if (scan_steps(dir, &steps, &count)) {
    err_set(err, errlen, "cannot read %s: %s", dir, strerror(errno));
    return -1;
  }
  ckpt_info *v = xcalloc(count ? (size_t)count : 1, sizeof *v);
  for (int i = 0; i < count; i++) {
    ckpt_info *c = &v[i];
    c->step = steps[i];
    ckpt_path(c->path, sizeof c->path, job_dir, steps[i]);
    struct stat st;
    if (!stat(c->path, &st)) {
      c->size = (uint64_t)st.st_size;
      c->meta.unix_time = (int64_t)st.st_mtime; /* replaced by the saved time when valid */
    }
    ckptf_file f;
    char why[1024];
    if (open_checked(c->path, steps[i], &f, why, sizeof why)) {
      /* The listing names the file in its own column: keep only the reason. */
      size_t pl = strlen(c->path);
      const char *r = !strncmp(why, c->path, pl) && !strncmp(why + pl, ": ", 2) ? why + pl + 2 : why;
      copy_str(c->reason, sizeof c->reason, r);
      continue;
    }
    c->valid = 1;
    c->meta = f.meta;
    c->meta.extra = NULL;
    ckptf_close(&f);
  }
  free(steps);
  *out = v;
  *n = count;
  return 0;
}
