/* coordinator.c - rank 0's job-level services (see coordinator.h). */
#include "daemon/coordinator.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"

struct coordinator {
  char job_dir[4096];
  status_server *status;
  ckpt_writer *writer;
  FILE *metrics;
  statusp_worker *workers;
  int n_workers;
  int64_t pending_step, last_step;
  double pending_time, last_time;
  char last_path[4096];
  /* The last training figures, shown while evaluating, checkpointing or stopping. */
  double shown_loss, shown_acc, shown_ips, shown_eta;
};

/* The writer says nothing until the next submit or wait, which at epoch-end checkpoints is a
 * whole epoch later: status would name the previous file as the last checkpoint. The final
 * name appears only after the data is complete and synced (ckpt.c renames last), so its
 * presence, newer than the submit, means the pending write is done. */
static void notice_written(coordinator *co) {
  if (co->pending_step < 0 || co->pending_step == co->last_step) return;
  char path[4096];
  struct stat st;
  ckpt_path(path, sizeof path, co->job_dir, (uint64_t)co->pending_step);
  if (stat(path, &st) != 0 || (double)st.st_mtime < co->pending_time - 1) return;
  co->last_step = co->pending_step;
  co->last_time = co->pending_time;
  memcpy(co->last_path, path, sizeof path);
}

coordinator *coord_start(const job_config *cfg, const char *job_dir) {
  coordinator *co = xcalloc(1, sizeof *co);
  snprintf(co->job_dir, sizeof co->job_dir, "%s", job_dir);
  char path[4200], err[1024];
  co->writer = ckpt_writer_start(job_dir, cfg->keep, err, sizeof err);
  if (!co->writer) die("%s", err);
  co->status = status_server_start(job_dir, cfg->status_tcp[0] ? cfg->status_tcp : NULL);
  /* The one line that says where to look (with --status-tcp 0 the port is only known here). */
  if (cfg->status_tcp[0])
    log_info("status: 'pollen status %s' (%s/status.sock) and TCP port %d (token in %s/status.token)",
             job_dir, job_dir, status_server_tcp_port(co->status), job_dir);
  else
    log_info("status: 'pollen status %s' (%s/status.sock)", job_dir, job_dir);
  snprintf(path, sizeof path, "%s/metrics.jsonl", job_dir);
  co->metrics = fopen(path, "a");
  if (!co->metrics) die("cannot append to %s: %s; check the --job folder", path, strerror(errno));
  co->pending_step = co->last_step = -1;
  co->shown_loss = co->shown_acc = co->shown_eta = NAN;
  return co;
}

int coord_poll_requests(coordinator *co) { return status_server_poll_requests(co->status); }

void coord_publish(coordinator *co, const statusp_job *job, const control_timing *t, int world,
                   const char *const *hosts) {
  if (co->n_workers != world) {
    co->workers = xrealloc(co->workers, (size_t)world * sizeof *co->workers);
    co->n_workers = world;
  }
  double now = time_unix(); /* whole seconds would age every heartbeat by up to 1 s */
  for (int r = 0; r < world; r++) {
    statusp_worker *w = &co->workers[r];
    memset(w, 0, sizeof *w);
    w->rank = r;
    snprintf(w->host, sizeof w->host, "%s", hosts[r]);
    w->pid = t[r].pid;
    w->step_time_s = t[r].step_time_s;
    w->images_per_s = t[r].step_time_s > 0 ? t[r].images / t[r].step_time_s : 0;
    w->last_heartbeat = now;
    w->comm_exposed_s = t[r].comm_exposed_s;
  }
  statusp_job j = *job;
  /* Outside training steps the caller has no fresh window (NaN, 0): keep showing the last
   * one, so a scrape during evaluation does not read as loss unknown and 0 images/s. */
  if (isfinite(j.loss)) co->shown_loss = j.loss, co->shown_acc = j.train_acc;
  else j.loss = co->shown_loss, j.train_acc = co->shown_acc;
  if (j.images_per_s > 0) co->shown_ips = j.images_per_s, co->shown_eta = j.eta_s;
  else j.images_per_s = co->shown_ips, j.eta_s = co->shown_eta;
  if (j.total_steps > 0 && j.step >= j.total_steps) j.eta_s = 0;
  notice_written(co);
  int64_t step;
  double when;
  const char *p = coord_last_checkpoint(co, &step, &when);
  j.last_ckpt_step = step;
  /* Long paths keep their tail: the file name is the useful part. */
  size_t n = strlen(p), cap = sizeof j.last_ckpt_path;
  memcpy(j.last_ckpt_path, n < cap ? p : p + n - (cap - 1), n < cap ? n + 1 : cap);
  j.last_ckpt_time = when;
  status_server_publish(co->status, &j, co->workers, world);
}

static void json_number(FILE *f, const char *key, double v) {
  if (isfinite(v)) fprintf(f, ",\"%s\":%.6g", key, v);
  else fprintf(f, ",\"%s\":null", key);
}

void coord_metric(coordinator *co, const statusp_metric *p, double elapsed_s, double comm_exposed_s) {
  fprintf(co->metrics, "{\"step\":%lld,\"epoch\":%d", (long long)p->step, p->epoch);
  json_number(co->metrics, "loss", p->loss);
  json_number(co->metrics, "train_acc", p->train_acc);
  json_number(co->metrics, "val_acc", p->val_acc);
  json_number(co->metrics, "lr", p->lr);
  json_number(co->metrics, "images_per_s", p->images_per_s);
  json_number(co->metrics, "comm_exposed_s", comm_exposed_s);
  json_number(co->metrics, "elapsed_s", elapsed_s);
  fprintf(co->metrics, ",\"time\":%lld}\n", (long long)time(NULL));
  fflush(co->metrics);
  status_server_push_metric(co->status, p);
}

/* The submitted write becomes "last" once the writer reports it finished. */
static void settle(coordinator *co, int failed) {
  if (co->pending_step < 0) return;
  if (!failed) {
    co->last_step = co->pending_step;
    co->last_time = co->pending_time;
    ckpt_path(co->last_path, sizeof co->last_path, co->job_dir, (uint64_t)co->last_step);
  }
  co->pending_step = -1;
}

int coord_checkpoint(coordinator *co, const ckpt_snapshot *s) {
  /* The writer thread logged the failed write's reason ("checkpoint not saved: ..."); this
   * says what it means for the run. */
  int rc = ckpt_writer_submit(co->writer, s);
  if (rc) log_warn("training goes on; the earlier checkpoints are intact");
  settle(co, rc != 0);
  co->pending_step = s->meta.step;
  co->pending_time = (double)time(NULL);
  return rc;
}

int coord_checkpoint_wait(coordinator *co) {
  int rc = ckpt_writer_wait(co->writer); /* a failure is logged by the writer thread */
  settle(co, rc != 0);
  return rc;
}

const char *coord_last_checkpoint(const coordinator *co, int64_t *step, double *unix_time) {
  *step = co->last_step;
  *unix_time = co->last_time;
  return co->last_step >= 0 ? co->last_path : "";
}

void coord_stop(coordinator *co) {
  if (!co) return;
  ckpt_writer_stop(co->writer);
  status_server_stop(co->status);
  if (co->metrics) fclose(co->metrics);
  free(co->workers);
  free(co);
}
