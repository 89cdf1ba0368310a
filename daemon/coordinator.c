/* coordinator.c - rank 0's job-level services (see coordinator.h). */
#include "daemon/coordinator.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops/core.h"

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
};

coordinator *coord_start(const job_config *cfg, const char *job_dir) {
  coordinator *co = xcalloc(1, sizeof *co);
  snprintf(co->job_dir, sizeof co->job_dir, "%s", job_dir);
  char path[4200], err[1024];
  co->writer = ckpt_writer_start(job_dir, cfg->keep, err, sizeof err);
  if (!co->writer) die("%s", err);
  co->status = status_server_start(job_dir, cfg->status_tcp[0] ? cfg->status_tcp : NULL);
  if (cfg->status_tcp[0])
    log_info("status: %s/status.sock and TCP port %d (token in %s/status.token)", job_dir,
             status_server_tcp_port(co->status), job_dir);
  snprintf(path, sizeof path, "%s/metrics.jsonl", job_dir);
  co->metrics = fopen(path, "a");
  if (!co->metrics) die("cannot append to %s: %s; check the --job folder", path, strerror(errno));
  co->pending_step = co->last_step = -1;
  return co;
}

int coord_poll_requests(coordinator *co) { return status_server_poll_requests(co->status); }

void coord_publish(coordinator *co, const statusp_job *job, const control_timing *t, int world,
                   const char *const *hosts) {
  if (co->n_workers != world) {
    co->workers = xrealloc(co->workers, (size_t)world * sizeof *co->workers);
    co->n_workers = world;
  }
  double now = (double)time(NULL);
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
  int rc = ckpt_writer_submit(co->writer, s);
  if (rc) {
    char msg[1024];
    ckpt_writer_last_error(co->writer, msg, sizeof msg);
    log_warn("checkpoint failed: %s; training goes on, the previous checkpoints are intact", msg);
  }
  settle(co, rc != 0);
  co->pending_step = s->meta.step;
  co->pending_time = (double)time(NULL);
  return rc;
}

int coord_checkpoint_wait(coordinator *co) {
  int rc = ckpt_writer_wait(co->writer);
  if (rc && co->pending_step >= 0) {
    char msg[1024];
    ckpt_writer_last_error(co->writer, msg, sizeof msg);
    log_warn("checkpoint of step %lld failed: %s; the previous checkpoints are intact",
             (long long)co->pending_step, msg);
  }
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
