/* replica.c - checkpoint copies on another host (see replica.h).
 *
 * A file is installed the way ckpt.c writes one, so a crash of the replica rank at any
 * instant leaves its earlier copies or the new one, never a torn file under a final name;
 * the loader ignores the .tmp files and the next checkpoint writer in the folder removes
 * them. */
#include "daemon/replica.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "proto/crc32c.h"
#include "proto/metrics.h"

static const uint32_t set_order[] = {REPLICA_KIND_CKPT, REPLICA_KIND_CONFIG, REPLICA_KIND_METRICS};
#define SET_N 3

/* A received file waiting for the install thread. */
typedef struct install_item {
  replica_msg head;
  uint8_t *buf;
  struct install_item *next;
} install_item;

struct replica {
  char job[4096];
  int keep, sending;
  char peer[128];
  replica_link link;
  /* the file in flight: its header, body and transfers */
  replica_msg head;
  uint8_t *buf;
  void *t_head, *t_body;
  /* rank 0: the newest written checkpoint, the one whose set is going, the newest gone */
  int64_t offered, going, sent;
  int next; /* index into set_order of the next file of the set going; SET_N: none */
  double set_start;
  /* the replica rank: files are verified, written and synced by a thread of their own, so
   * the step loop pays only for the copy (an install takes longer than a step) */
  int ended;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  install_item *queue, *queue_end; /* guarded by mu, like everything below */
  int busy, stop;
  int64_t installed;
};

static void path_of(char *out, size_t cap, const char *job, uint32_t kind, int64_t step) {
  if (kind == REPLICA_KIND_CKPT) ckpt_path(out, cap, job, (uint64_t)step);
  else snprintf(out, cap, "%s/%s", job, replica_kind_file(kind));
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int replica_install(const char *job_dir, int keep, const replica_msg *m, const void *buf, char *err, size_t errlen) {
  char why[256];
  if (replica_msg_check(m, why, sizeof why) || m->kind == REPLICA_KIND_END || m->flags) {
    err_set(err, errlen, "%s", m->kind == REPLICA_KIND_END || m->flags ? "no file in this message" : why);
    return -1;
  }
  char path[8192], tmp[8200], dir[8192];
  path_of(path, sizeof path, job_dir, m->kind, m->step);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  snprintf(dir, sizeof dir, m->kind == REPLICA_KIND_CKPT ? "%s/checkpoints" : "%s", job_dir);
  uint32_t crc = crc32c_update(0, buf, (size_t)m->size);
  if (crc != m->crc) {
    err_set(err, errlen, "%s: CRC32C %08x, the sender's is %08x: damaged in transit; not installed", path, crc, m->crc);
    return -1;
  }
  int64_t held = 0;
  if (m->kind == REPLICA_KIND_CKPT) {
    /* The whole file, as the loader will see it: every CRC, bound and the step it holds. */
    if (ckptf_verify_buffer(tmp, buf, m->size, &held, why, sizeof why)) {
      err_set(err, errlen, "%s; not installed", why);
      return -1;
    }
    if (held != m->step) {
      err_set(err, errlen, "%s holds step %lld, not %lld; not installed", tmp, (long long)held, (long long)m->step);
      return -1;
    }
  }
  if (make_dirs(dir)) {
    err_set(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return -1;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    err_set(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    return -1;
  }
  /* The bytes verified are the bytes written and synced before they get the final name. */
  int e = write_all(fd, buf, (size_t)m->size) || fsync(fd) ? errno : 0;
  if (close(fd) && !e) e = errno;
  if (e) {
    unlink(tmp);
    err_set(err, errlen, "%s: cannot write: %s%s", tmp, strerror(e),
            e == ENOSPC || e == EDQUOT ? " (disk full: free space or lower --keep)" : "");
    return -1;
  }
  if (rename(tmp, path)) {
    e = errno;
    unlink(tmp);
    err_set(err, errlen, "%s: rename from .tmp failed: %s", path, strerror(e));
    return -1;
  }
  if (fsync_dir(dir)) log_warn("%s: installed, but fsync of %s failed: %s (it may not survive a power cut)", path, dir,
                               strerror(errno));
  if (m->kind == REPLICA_KIND_CKPT) ckpt_prune(job_dir, keep, (uint64_t)m->step);
  return 0;
}

int replica_read(const char *job_dir, uint32_t kind, int64_t step, replica_msg *m, uint8_t **buf, char *err,
                 size_t errlen) {
  char path[8192];
  path_of(path, sizeof path, job_dir, kind, step);
  *m = (replica_msg){.version = REPLICA_VERSION, .kind = kind, .step = step};
  *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno != ENOENT) {
      err_set(err, errlen, "cannot read %s: %s", path, strerror(errno));
      return -1;
    }
    m->flags = REPLICA_ABSENT;
    return 1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) || st.st_size < 0 || (uint64_t)st.st_size > REPLICA_MAX_BYTES) {
    err_set(err, errlen, "cannot read %s: %s", path, strerror(errno ? errno : EFBIG));
    fclose(f);
    return -1;
  }
  size_t n = (size_t)st.st_size;
  *buf = xmalloc(n + 1);
  if (fread(*buf, 1, n, f) != n || fgetc(f) != EOF) {
    /* A record appended while reading: the next checkpoint's copy carries it. */
    if (kind != REPLICA_KIND_METRICS || ferror(f)) {
      err_set(err, errlen, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "it changed while being read");
      fclose(f);
      free(*buf);
      *buf = NULL;
      return -1;
    }
  }
  fclose(f);
  if (kind == REPLICA_KIND_METRICS) /* only whole lines: a record being appended stays behind */
    while (n > 0 && (*buf)[n - 1] != '\n') n--;
  m->size = n;
  m->crc = crc32c_update(0, *buf, n);
  m->sent_us = (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
  return 0;
}

int64_t replica_newest(const char *job_dir, const char *model, const char *config_hash) {
  ckpt_info *v;
  int n;
  char err[1024];
  if (ckpt_list(job_dir, &v, &n, err, sizeof err)) {
    log_warn("%s; its checkpoints are not considered", err);
    return -1;
  }
  int64_t step = -1;
  for (int i = 0; i < n && step < 0; i++) {
    if (!v[i].valid)
      log_warn("%s does not verify (%s): skipped for an older checkpoint", v[i].path, v[i].reason);
    else if (ckpt_meta_match(&v[i].meta, model, config_hash) != CKPT_SAME_JOB)
      log_warn("%s is of another model or config (%s, %s): not this job's", v[i].path, v[i].meta.model,
               v[i].meta.config_hash);
    else
      step = (int64_t)v[i].step;
  }
  free(v);
  return step;
}

static void newest_record(const metrics_record *rec, void *ctx) {
  int64_t *s = ctx;
  if (rec->step > *s) *s = rec->step;
}

int64_t replica_records_step(const char *job_dir) {
  char path[8192], err[256];
  snprintf(path, sizeof path, "%s/metrics.jsonl", job_dir);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int64_t s = -1;
  if (metrics_read(f, 0, newest_record, &s, NULL, err, sizeof err)) s = -1;
  fclose(f);
  return s;
}

int replica_token_write(const char *job_dir, char token[33], char *err, size_t errlen) {
  uint8_t raw[16];
  FILE *u = fopen("/dev/urandom", "rb");
  size_t got = u ? fread(raw, 1, sizeof raw, u) : 0;
  if (u) fclose(u);
  if (got != sizeof raw) { /* no urandom (a bare container): still unique per launch and host */
    uint64_t a = hash_mix((uint64_t)getpid(), (uint64_t)(time_unix() * 1e6));
    uint64_t b = hash_mix(a, (uint64_t)clock());
    memcpy(raw, &a, 8), memcpy(raw + 8, &b, 8);
  }
  for (int i = 0; i < 16; i++) snprintf(token + 2 * i, 3, "%02x", raw[i]);
  char path[8192], tmp[8200];
  snprintf(path, sizeof path, "%s/replica.token", job_dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  int bad = !f;
  if (f) bad = fprintf(f, "%s\n", token) < 0, bad = fclose(f) || bad;
  if (bad || rename(tmp, path)) {
    err_set(err, errlen, "cannot write %s: %s", path, strerror(errno));
    if (f) unlink(tmp);
    return -1;
  }
  return 0;
}

int replica_token_same(const char *job_dir, const char *token) {
  char path[8192], line[64] = "";
  snprintf(path, sizeof path, "%s/replica.token", job_dir);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int ok = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  line[strcspn(line, "\n")] = 0;
  return ok && token[0] && !strcmp(line, token);
}

/* ---- at start-up: the newest checkpoint to rank 0 ---- */

void replica_send_newest(const char *job_dir, int64_t step, const replica_link *link) {
  for (int i = 0; i < SET_N; i++) {
    replica_msg m;
    uint8_t *buf;
    char err[1024];
    int rc = replica_read(job_dir, set_order[i], step, &m, &buf, err, sizeof err);
    if (set_order[i] == REPLICA_KIND_CKPT && rc != 0)
      die("%s; rank 0 needs it to resume", rc < 0 ? err : "the newest checkpoint vanished");
    if (rc < 0) {
      log_warn("%s; rank 0 resumes without it", err);
      m = (replica_msg){.version = REPLICA_VERSION, .kind = set_order[i], .step = step, .flags = REPLICA_ABSENT};
    }
    link->wait(link->ctx, link->send(link->ctx, REPLICA_TAG_HEAD, &m, sizeof m));
    if (m.size) link->wait(link->ctx, link->send(link->ctx, REPLICA_TAG_BODY, buf, (size_t)m.size));
    free(buf);
  }
}

void replica_take_newest(const char *job_dir, int keep, int64_t step, const replica_link *link, const char *peer) {
  int64_t own_records = replica_records_step(job_dir);
  char path[8192];
  struct stat st;
  snprintf(path, sizeof path, "%s/config.json", job_dir);
  int own_config = stat(path, &st) == 0;
  for (int i = 0; i < SET_N; i++) {
    replica_msg m;
    char err[2048] = "";
    link->wait(link->ctx, link->recv(link->ctx, REPLICA_TAG_HEAD, &m, sizeof m));
    if (replica_msg_check(&m, err, sizeof err) || m.kind != set_order[i] || m.step != step)
      die("%s sent a bad checkpoint copy: %s", peer, *err ? err : "not the file expected");
    if (m.flags == REPLICA_ABSENT) continue;
    uint8_t *buf = xmalloc((size_t)m.size + 1);
    link->wait(link->ctx, link->recv(link->ctx, REPLICA_TAG_BODY, buf, (size_t)m.size));
    int wanted = m.kind == REPLICA_KIND_CKPT || (m.kind == REPLICA_KIND_CONFIG && !own_config) ||
                 (m.kind == REPLICA_KIND_METRICS && own_records < step);
    if (wanted && replica_install(job_dir, keep, &m, buf, err, sizeof err))
      die("the copy of checkpoint step %lld from %s cannot be installed: %s", (long long)step, peer, err);
    free(buf);
  }
}

/* ---- the copy, step by step ---- */

static void *install_main(void *arg);

replica *replica_new(const char *job_dir, int keep, int sending, const char *peer, const replica_link *link) {
  replica *r = xcalloc(1, sizeof *r);
  snprintf(r->job, sizeof r->job, "%s", job_dir);
  snprintf(r->peer, sizeof r->peer, "%s", peer);
  r->keep = keep, r->sending = sending, r->link = *link;
  r->offered = r->going = r->sent = r->installed = -1;
  r->next = SET_N;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if (!sending && pthread_create(&r->thread, NULL, install_main, r)) die("cannot start the replica install thread");
  return r;
}

void replica_offer(replica *r, int64_t step) {
  if (step > r->offered) r->offered = step;
}

int64_t replica_installed(replica *r) {
  pthread_mutex_lock(&r->mu);
  int64_t s = r->installed;
  pthread_mutex_unlock(&r->mu);
  return s;
}

/* Rank 0: starts the next file of the set going, or the next set. 0 when nothing is left. */
static int start_next(replica *r) {
  for (;;) {
    if (r->next == SET_N) {
      if (r->offered <= r->sent) return 0;
      r->going = r->offered, r->next = 0, r->set_start = time_now();
    }
    uint32_t kind = set_order[r->next++];
    char err[1024];
    int rc = replica_read(r->job, kind, r->going, &r->head, &r->buf, err, sizeof err);
    if (rc < 0) {
      log_warn("%s; it is not copied to %s", err, r->peer);
      if (kind == REPLICA_KIND_CKPT) r->next = SET_N, r->sent = r->going; /* the others go with the next one */
      continue;
    }
    if (rc == 1 && kind == REPLICA_KIND_CKPT) { /* pruned already: a newer one follows */
      r->next = SET_N, r->sent = r->going;
      continue;
    }
    r->t_head = r->link.send(r->link.ctx, REPLICA_TAG_HEAD, &r->head, sizeof r->head);
    r->t_body = r->head.size ? r->link.send(r->link.ctx, REPLICA_TAG_BODY, r->buf, (size_t)r->head.size) : NULL;
    return 1;
  }
}

/* The file in flight is done (or was never started): releases it. 1 when done. */
static int in_flight_done(replica *r, int block) {
  if (r->t_head) {
    if (block) r->link.wait(r->link.ctx, r->t_head);
    else if (!r->link.test(r->link.ctx, r->t_head)) return 0;
    r->t_head = NULL;
  }
  if (r->t_body) {
    if (block) r->link.wait(r->link.ctx, r->t_body);
    else if (!r->link.test(r->link.ctx, r->t_body)) return 0;
    r->t_body = NULL;
  }
  return 1;
}

static void send_progress(replica *r, int block) {
  for (;;) {
    if (!in_flight_done(r, block)) return;
    if (r->buf || r->head.version) { /* the file in flight just went */
      free(r->buf);
      r->buf = NULL;
      memset(&r->head, 0, sizeof r->head);
      if (r->next == SET_N && r->going > r->sent) {
        r->sent = r->going;
        log_info("checkpoint step %lld sent to %s (%.2f s)", (long long)r->going, r->peer, time_now() - r->set_start);
      }
    }
    if (!start_next(r)) return;
  }
}

/* The replica rank: the header just received (in r->head) starts its body. */
static void take_head(replica *r) {
  char err[512];
  if (replica_msg_check(&r->head, err, sizeof err))
    die("rank 0 sent a bad checkpoint copy: %s", err);
  if (r->head.kind == REPLICA_KIND_END) {
    r->ended = 1;
    return;
  }
  if (r->head.flags == REPLICA_ABSENT) return;
  r->buf = xmalloc((size_t)r->head.size);
  r->t_body = r->link.recv(r->link.ctx, REPLICA_TAG_BODY, r->buf, (size_t)r->head.size);
}

static void install_one(replica *r, const replica_msg *m, const uint8_t *buf) {
  char err[2048];
  double t0 = time_now();
  if (replica_install(r->job, r->keep, m, buf, err, sizeof err)) {
    log_warn("checkpoint copy from %s rejected: %s", r->peer, err);
    return;
  }
  if (m->kind != REPLICA_KIND_CKPT) return;
  double lag = time_unix() - (double)m->sent_us / 1e6;
  log_info("replica of checkpoint step %lld installed in %s/checkpoints (%.1f MB, %.2f s after %s wrote it; "
           "verified and written in %.3f s)", (long long)m->step, r->job, (double)m->size / 1e6, lag, r->peer,
           time_now() - t0);
  pthread_mutex_lock(&r->mu);
  if (m->step > r->installed) r->installed = m->step;
  pthread_mutex_unlock(&r->mu);
}

static void *install_main(void *arg) {
  replica *r = arg;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    while (!r->queue && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
    install_item *it = r->queue;
    if (!it) break; /* stopping, and nothing left */
    r->queue = it->next;
    if (!r->queue) r->queue_end = NULL;
    r->busy = 1;
    pthread_mutex_unlock(&r->mu);
    install_one(r, &it->head, it->buf);
    free(it->buf);
    free(it);
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    pthread_cond_broadcast(&r->cv);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* The body just received goes to the install thread with its header. */
static void install_body(replica *r) {
  install_item *it = xcalloc(1, sizeof *it);
  it->head = r->head, it->buf = r->buf;
  r->buf = NULL;
  pthread_mutex_lock(&r->mu);
  if (r->queue_end) r->queue_end->next = it;
  else r->queue = it;
  r->queue_end = it;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void recv_progress(replica *r, int block) {
  while (!r->ended) {
    if (r->t_body) {
      if (block) r->link.wait(r->link.ctx, r->t_body);
      else if (!r->link.test(r->link.ctx, r->t_body)) return;
      r->t_body = NULL;
      install_body(r);
      continue;
    }
    if (!block && !r->link.probe(r->link.ctx, REPLICA_TAG_HEAD)) return;
    void *t = r->link.recv(r->link.ctx, REPLICA_TAG_HEAD, &r->head, sizeof r->head);
    r->link.wait(r->link.ctx, t); /* arrived already, or (draining) on its way */
    take_head(r);
  }
}

void replica_progress(replica *r) {
  if (!r) return;
  if (r->sending) send_progress(r, 0);
  else recv_progress(r, 0);
}

void replica_drain(replica *r) {
  if (!r) return;
  if (!r->sending) {
    recv_progress(r, 1);
    pthread_mutex_lock(&r->mu); /* and installed (or rejected) */
    while (r->queue || r->busy) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return;
  }
  send_progress(r, 1);
  static const replica_msg end = {.version = REPLICA_VERSION, .kind = REPLICA_KIND_END};
  r->link.wait(r->link.ctx, r->link.send(r->link.ctx, REPLICA_TAG_HEAD, &end, sizeof end));
}

void replica_free(replica *r) {
  if (!r) return;
  if (!r->sending) { /* the thread installs what is queued, then ends */
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
  }
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r->buf);
  free(r);
}
