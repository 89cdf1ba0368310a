/* coordinator.c - rank 0's decisions and services for a training job (see coordinator.h). */
#include "daemon/coordinator.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/ckpt.h"
#include "daemon/signals.h"
#include "daemon/status_server.h"
#include "proto/launch_record.h"
#include "proto/metrics.h"
#include "proto/outcome.h"
#include "proto/status_proto.h"
#include "proto/tb_events.h"

/* The training figures since the last log line. */
typedef struct {
  double loss, correct, samples, time, comm;
  int steps;
} figures_window;

struct coordinator {
  const job_config *cfg;
  char job_dir[4096], weights_path[4200], best_path[4200];
  char config_hash[17];
  job_plan plan;
  train_state_shape shape;
  const char *const *hosts;
  status_server *status;
  ckpt_writer *writer;
  FILE *metrics;
  char metrics_path[4200];
  int metrics_failed;        /* a write failed: reported once, the records stop there */
  tb_events *events;         /* JOB/tensorboard; NULL with --no-tensorboard */
  int events_failed;         /* as metrics_failed */
  /* where the job is */
  job_position pos;
  double lr;                 /* of the last step */
  double best_val, last_val;
  char state[16];            /* last state published */
  char state_after_checkpoint[16];
  /* clocks: the ETA is the remaining steps at this launch's average rate */
  double start_time;         /* unix time the launch started */
  double run_start;          /* monotonic time training began in this launch */
  int64_t first_step;
  double last_ckpt_time;
  figures_window window;
  control_timing *timings;   /* every rank's, from the last step */
  statusp_worker *workers;
  /* the resumed state, kept for the workers until the end */
  ckpt_loaded resumed;
  float *resumed_stats;
  /* checkpoint bookkeeping: the newest written, and the one being written */
  int64_t pending_step, last_step;
  double pending_time, last_time;
  char last_path[4096];
  /* The last training figures, shown while evaluating, checkpointing or stopping. */
  double shown_loss, shown_acc, shown_ips, shown_eta;
  /* Prometheus' counters and step-time histogram (only those fields), copied into each
   * publication: counted here, at each step, so the exposition needs no history. */
  statusp_job counts;
  statusp_launch launch; /* from pollen launch (POLLEN_LAUNCH), when it started this one */
};

/* ---- the job folder and its config ------------------------------------------------- */

/* The config is frozen at the first launch; a relaunch must define the same job. */
static void settle_config(coordinator *co) {
  const job_config *cfg = co->cfg;
  if (make_dirs(co->job_dir) != 0)
    die("cannot create %s: %s; check the path and its permissions", co->job_dir, strerror(errno));
  char path[4200], msg[2400];
  snprintf(path, sizeof path, "%s/config.json", co->job_dir);
  job_config frozen = *cfg;
  int loaded = job_config_load(&frozen, path);
  if (loaded == 0 && job_config_diff(&frozen, cfg, msg, sizeof msg)) {
    if (!cfg->force_config)
      die("%s was started with other settings (%s); relaunch with the original flags, use "
          "another --job folder, or pass --force-config to adopt the new ones", co->job_dir, msg);
    log_warn("--force-config: adopting the new settings (%s)", msg);
    job_config_save(cfg, path);
  } else if (loaded == 1) {
    job_config_save(cfg, path);
  }
  job_config_hash(cfg, co->config_hash);
}

coordinator *coord_open(const job_config *cfg, const char *job_dir) {
  coordinator *co = xcalloc(1, sizeof *co);
  co->cfg = cfg;
  snprintf(co->job_dir, sizeof co->job_dir, "%s", job_dir);
  snprintf(co->weights_path, sizeof co->weights_path, "%s/weights.safetensors", job_dir);
  snprintf(co->best_path, sizeof co->best_path, "%s/" JOB_BEST_WEIGHTS_NAME, job_dir);
  snprintf(co->metrics_path, sizeof co->metrics_path, "%s/metrics.jsonl", job_dir);
  co->best_val = co->last_val = NAN;
  co->start_time = (double)time(NULL);
  co->pending_step = co->last_step = -1;
  co->shown_loss = co->shown_acc = co->shown_eta = NAN;
  settle_config(co);
  return co;
}

/* A weights file whose writer was killed is never finished (the writer renames a complete
 * one into place): with the job's checkpoint lock held, no other writer can be running. */
static void remove_stale_weights(const char *job_dir) {
  DIR *d = opendir(job_dir);
  if (!d) return;
  static const char *const prefixes[] = {"weights.safetensors.tmp.", JOB_BEST_WEIGHTS_NAME ".tmp."};
  struct dirent *e;
  char path[8192];
  while ((e = readdir(d)))
    if (!strncmp(e->d_name, prefixes[0], strlen(prefixes[0])) || !strncmp(e->d_name, prefixes[1], strlen(prefixes[1]))) {
      snprintf(path, sizeof path, "%s/%s", job_dir, e->d_name);
      if (unlink(path) == 0) log_info("removed %s, left by a write that was cut short", path);
    }
  closedir(d);
}

/* ---- how the launch ended: JOB/outcome.json ------------------------------------------- */

/* The coordinator a die() records "failed" for: set while a launch runs. */
static coordinator *dying;

static void record_outcome(const coordinator *co, const char *state, int exit_status, const char *message) {
  job_outcome o = {.exit_status = exit_status, .step = co->pos.step,
                   .epoch = plan_epoch_number(co->pos.epoch, co->pos.step_in_epoch), .epochs_done = co->pos.epoch,
                   .val_acc = co->last_val, .best_val_acc = co->best_val, .start_time = co->start_time,
                   .time = time_unix()};
  snprintf(o.state, sizeof o.state, "%s", state);
  snprintf(o.message, sizeof o.message, "%s", message);
  /* Only status reads it: a failed write costs the job nothing. */
  if (outcome_write(co->job_dir, &o) != 0)
    log_warn("cannot write %s/outcome.json: %s; 'pollen status' will not know how this run ended",
             co->job_dir, strerror(errno));
}

static void record_failure(int status, const char *message) {
  coordinator *co = dying;
  dying = NULL;
  if (co) record_outcome(co, status == EXIT_PREEMPTED ? "stopped" : "failed", status, message);
}

/* What the supervisor says about this launch, for the status; a damaged record is only
 * named (training needs none of it). */
static void read_launch(coordinator *co) {
  const char *env = getenv(LAUNCH_RECORD_ENV);
  if (!env || !env[0]) return;
  launch_record r;
  char err[256];
  if (launch_record_parse(env, &r, err, sizeof err) != 0) {
    log_warn("%s ignored: %s", LAUNCH_RECORD_ENV, err);
    return;
  }
  statusp_launch_from_record(&co->launch, &r);
  if (r.restarts > 0)
    log_info("launch %d by pollen launch (%d restart(s))%s%s", r.attempt, r.restarts,
             r.has_last_failure ? "; the last failure: " : "", r.has_last_failure ? r.last_failure.reason : "");
}

void coord_start(coordinator *co, const job_plan *plan, const train_state_shape *shape,
                 const char *const *hosts) {
  co->plan = *plan;
  co->shape = *shape;
  co->hosts = hosts;
  read_launch(co);
  co->timings = xcalloc((size_t)plan->world, sizeof *co->timings);
  co->workers = xcalloc((size_t)plan->world, sizeof *co->workers);
  char err[1024];
  co->writer = ckpt_writer_start(co->job_dir, co->cfg->keep, err, sizeof err);
  if (!co->writer) die("%s", err);
  const char *tcp = co->cfg->status_tcp;
  /* /healthz turns 503 only after twice the ranks' own stall limit: a probe then acts on a
   * hang their detection cannot see (every rank alive, none stepping), never racing it. */
  status_server_opts opts = {.health_stall_s = 2 * co->cfg->stall_timeout,
                             .token_file = co->cfg->status_token_file[0] ? co->cfg->status_token_file : NULL};
  co->status = status_server_start(co->job_dir, tcp[0] ? tcp : NULL, &opts);
  /* The one line that says where to look (with --status-tcp 0 the port is only known here). */
  if (tcp[0])
    log_info("status: 'pollen status %s' (%s/status.sock) and TCP port %d (token in %s/status.token)",
             co->job_dir, co->job_dir, status_server_tcp_port(co->status), co->job_dir);
  else
    log_info("status: 'pollen status %s' (%s/status.sock)", co->job_dir, co->job_dir);
  remove_stale_weights(co->job_dir);
  /* Found with no job answering, "running" means this launch was killed. */
  record_outcome(co, "running", -1, "");
  dying = co;
  die_set_hook(record_failure);
}

/* ---- the records --------------------------------------------------------------------- */

typedef struct {
  int64_t last_step;
  int validations;
} records_summary;

static void summarise(const metrics_record *r, void *ctx) {
  records_summary *s = ctx;
  if (r->step > s->last_step) s->last_step = r->step;
  if (isfinite(r->val_acc)) s->validations++;
}

/* A fresh start where the records show at least two finished epochs: by then a checkpoint was
 * written (the writer keeps the newest), so they were deleted or lost, or every write failed.
 * Training again from step 0 would silently throw the work away: it takes --start-over. */
static void refuse_lost_checkpoints(const coordinator *co) {
  FILE *f = fopen(co->metrics_path, "r");
  if (!f) return;
  records_summary s = {0, 0};
  char err[512];
  int rc = metrics_read(f, 0, summarise, &s, NULL, err, sizeof err);
  fclose(f);
  if (rc != 0 || s.validations < 2 || co->cfg->start_over) return;
  die("%s records %d finished epochs (up to step %lld) but %s/checkpoints holds no checkpoint: "
      "they were deleted or lost, or never saved (see the earlier logs); restore them, or pass "
      "--start-over to train again from step 0", co->metrics_path, s.validations,
      (long long)s.last_step, co->job_dir);
}

/* The records are cut back to where the job resumes: every step appears once and in order,
 * and a line torn by a crash or a full disk goes. Then they are appended to. */
static void open_records(coordinator *co, int64_t resumed_step) {
  int64_t kept, dropped;
  char err[1024];
  if (metrics_cut(co->metrics_path, resumed_step, &kept, &dropped, err, sizeof err) != 0)
    die("%s; check the --job folder and the free space", err);
  if (dropped)
    log_info("%s: %lld lines after step %lld (or torn) dropped; the records go on from there",
             co->metrics_path, (long long)dropped, (long long)resumed_step);
  co->metrics = fopen(co->metrics_path, "a");
  if (!co->metrics) die("cannot append to %s: %s; check the --job folder", co->metrics_path, strerror(errno));
  /* TensorBoard reads every events file of the folder: all are cut, even with the writer off. */
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/tensorboard", co->job_dir);
  if (tb_events_cut(dir, resumed_step, &kept, &dropped, err, sizeof err) != 0)
    die("%s; check the --job folder and the free space", err);
  if (dropped)
    log_info("%s: %lld events after step %lld (or torn) dropped", dir, (long long)dropped, (long long)resumed_step);
  if (co->cfg->tensorboard && !(co->events = tb_events_open(dir, err, sizeof err)))
    die("%s; check the --job folder, or pass --no-tensorboard", err);
}

/* ---- where to resume ------------------------------------------------------------------- */

/* Each rank of this world gets the statistics it had when the world size is the one that
 * saved them; otherwise every rank starts from their mean. */
static float *bn_stats_for_world(const train_state_view *saved, size_t n_stats, int world) {
  float *out = xmalloc((size_t)world * n_stats * sizeof(float) + 1);
  if (saved->stats_ranks == world) {
    memcpy(out, saved->bn_stats, (size_t)world * n_stats * sizeof(float));
  } else {
    bn_stats_mean(saved->bn_stats, saved->stats_ranks, n_stats, out);
    for (int r = 1; r < world; r++) memcpy(out + (size_t)r * n_stats, out, n_stats * sizeof(float));
  }
  return out;
}

void coord_choose_resume(coordinator *co, resume_msg *msg, train_state_view *state) {
  const job_config *cfg = co->cfg;
  const train_state_shape *shape = &co->shape;
  int world = co->plan.world;
  *msg = (resume_msg){.version = TRAIN_MSG_VERSION, .world = world};
  memset(state, 0, sizeof *state);
  char err[2048];
  ckpt_loaded *l = &co->resumed;
  /* --force-config adopts new settings: the checkpoints of the old ones still resume. */
  ckpt_status st = ckpt_load_latest(co->job_dir, cfg->model, cfg->force_config ? NULL : co->config_hash,
                                    l, err, sizeof err);
  if (st == CKPT_MISMATCH || st == CKPT_ALL_CORRUPT || st == CKPT_IO_ERROR) die("%s", err);
  if (st != CKPT_LOADED) {
    refuse_lost_checkpoints(co);
    open_records(co, 0);
    return;
  }
  const ckptf_meta *meta = &l->file.meta;
  if (meta->sample_in_epoch % cfg->batch)
    die("%s: its sample position %lld is not a multiple of the global batch %d", l->path,
        (long long)meta->sample_in_epoch, cfg->batch);
  train_state_view saved;
  float *saved_stats;
  if (train_state_from_file(&l->file, l->path, shape, &saved, &saved_stats, err, sizeof err) != 0) die("%s", err);
  train_state_extra extra;
  train_state_extra_read(meta->extra, meta->step, &extra);
  co->best_val = extra.best_val_acc, co->last_val = extra.last_val_acc;
  co->resumed_stats = bn_stats_for_world(&saved, shape->n_stats, world);
  free(saved_stats);
  *state = saved;
  state->bn_stats = co->resumed_stats, state->stats_ranks = world;
  state->optimizer_steps = extra.optimizer_steps;
  state->ema_updates = extra.ema_updates;
  *msg = (resume_msg){TRAIN_MSG_VERSION, 1, meta->step, meta->epoch, meta->sample_in_epoch / cfg->batch,
                      extra.optimizer_steps, meta->world_size, world};
  open_records(co, meta->step);
  log_info("resuming from %s: step %lld, epoch %lld, sample %lld of the epoch%s", l->path,
           (long long)meta->step, (long long)meta->epoch + 1, (long long)meta->sample_in_epoch,
           l->n_skipped ? " (newer checkpoints were damaged and skipped)" : "");
  if (meta->world_size != world)
    log_warn("the checkpoint was written by %d ranks and this run has %d: the global batch "
             "of %d is now split %d ways; BN running statistics start from the mean of the "
             "saved ranks'", meta->world_size, world, cfg->batch, world);
}

/* ---- publication ------------------------------------------------------------------------ */

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

/* Seconds left at this launch's average rate so far; NaN before the first step. */
static double eta_seconds(const coordinator *co) {
  double rate = (double)(co->pos.step - co->first_step) / (time_now() - co->run_start);
  return rate > 0 ? (double)(co->plan.total_steps - co->pos.step) / rate : NAN;
}

static void format_eta(double s, char *out, size_t cap) {
  if (!isfinite(s) || s < 0) snprintf(out, cap, "?");
  else if (s >= 3600) snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
  else snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* Every publication is a heartbeat of the ranks' last step times. */
static void note_workers(coordinator *co) {
  const control_timing *t = co->timings;
  double now = time_unix(); /* whole seconds would age every heartbeat by up to 1 s */
  for (int r = 0; r < co->plan.world; r++) {
    statusp_worker *w = &co->workers[r];
    memset(w, 0, sizeof *w);
    w->rank = r;
    snprintf(w->host, sizeof w->host, "%s", co->hosts[r]);
    w->pid = t[r].pid;
    w->step_time_s = t[r].step_time_s;
    w->images_per_s = t[r].step_time_s > 0 ? t[r].images / t[r].step_time_s : 0;
    w->last_heartbeat = now;
    w->comm_exposed_s = t[r].comm_exposed_s;
  }
}

/* Outside training steps there is no fresh window (loss NaN, ips 0): the last one stays
 * shown, so a scrape during evaluation does not read as loss unknown and 0 images/s. */
static void publish(coordinator *co, const char *state, double loss, double acc, double ips) {
  snprintf(co->state, sizeof co->state, "%s", state);
  statusp_job j;
  memset(&j, 0, sizeof j);
  snprintf(j.state, sizeof j.state, "%s", state);
  snprintf(j.model, sizeof j.model, "%s", co->cfg->model);
  j.epoch = plan_epoch_number(co->pos.epoch, co->pos.step_in_epoch), j.epochs = co->plan.epochs;
  j.step = co->pos.step, j.total_steps = co->plan.total_steps;
  j.val_acc = co->last_val;
  j.lr = co->lr;
  j.world_size = co->plan.world;
  j.start_time = co->start_time;
  j.images_total = co->counts.images_total, j.last_step_time = co->counts.last_step_time;
  memcpy(j.step_le, co->counts.step_le, sizeof j.step_le);
  j.step_count = co->counts.step_count, j.step_sum = co->counts.step_sum;
  if (isfinite(loss)) co->shown_loss = loss, co->shown_acc = acc;
  if (ips > 0) co->shown_ips = ips, co->shown_eta = eta_seconds(co);
  j.loss = co->shown_loss, j.train_acc = co->shown_acc;
  j.images_per_s = co->shown_ips, j.eta_s = co->shown_eta;
  if (j.total_steps > 0 && j.step >= j.total_steps) j.eta_s = 0;
  note_workers(co);
  notice_written(co);
  j.last_ckpt_step = co->last_step;
  const char *p = co->last_step >= 0 ? co->last_path : "";
  /* Long paths keep their tail: the file name is the useful part. */
  size_t n = strlen(p), cap = sizeof j.last_ckpt_path;
  memcpy(j.last_ckpt_path, n < cap ? p : p + n - (cap - 1), n < cap ? n + 1 : cap);
  j.last_ckpt_time = co->last_time;
  j.launch = co->launch;
  status_server_publish(co->status, &j, co->workers, co->plan.world);
}

/* The same line for TensorBoard. Training lines always carry an accuracy (correct / samples),
 * validation lines never do. */
static void record_events(coordinator *co, const statusp_metric *p, double comm_exposed_s) {
  tb_events *e = co->events;
  if (!e || co->events_failed) return;
  int64_t s = p->step;
  int rc = 0;
  if (!isnan(p->train_acc))
    rc = tb_events_scalar(e, "train/loss", s, (float)p->loss) ||
         tb_events_scalar(e, "train/accuracy", s, (float)p->train_acc) ||
         tb_events_scalar(e, "train/lr", s, (float)p->lr) ||
         tb_events_scalar(e, "train/images_per_s", s, (float)p->images_per_s) ||
         tb_events_scalar(e, "train/comm_exposed_ms", s, (float)(1e3 * comm_exposed_s));
  else if (!isnan(p->val_acc))
    rc = tb_events_scalar(e, "val/accuracy", s, (float)p->val_acc);
  if (rc) {
    co->events_failed = 1;
    log_warn("cannot write %s: %s; no more TensorBoard events this run (training goes on)", tb_events_path(e),
             strerror(errno));
  }
}

static void record_metric(coordinator *co, const statusp_metric *p, double comm_exposed_s) {
  metrics_record r = {p->step, p->epoch, p->loss, p->train_acc, p->val_acc, p->lr, p->images_per_s,
                      comm_exposed_s, time_now() - co->run_start, (int64_t)time(NULL)};
  if (!co->metrics_failed && metrics_write(co->metrics, &r) != 0) {
    /* Later lines would be glued to a torn one: the records stop here (the next launch cuts
     * the torn line), the status socket goes on showing the figures. */
    co->metrics_failed = 1;
    log_warn("cannot write %s: %s; no more records this run (training goes on)", co->metrics_path, strerror(errno));
  }
  record_events(co, p, comm_exposed_s);
  status_server_push_metric(co->status, p);
}

void coord_begin(coordinator *co, const job_position *pos) {
  const job_config *cfg = co->cfg;
  const job_plan *p = &co->plan;
  co->pos = *pos;
  log_info("%s width %g: %zu parameters, %d classes; %d training and %d validation images; "
           "%d ranks x batch %d; %d steps per epoch, %d epochs",
           cfg->model, cfg->width, co->shape.n_params, p->classes, p->n_train, p->n_val, p->world,
           p->local_batch, p->steps_per_epoch, cfg->epochs);
  if (pos->step >= p->total_steps) {
    log_info("the job in %s is already finished (step %lld of %lld)", co->job_dir,
             (long long)pos->step, (long long)p->total_steps);
    record_outcome(co, "finished", EXIT_OK, "");
    return;
  }
  co->last_ckpt_time = co->run_start = time_now();
  co->first_step = pos->step;
}

void coord_at(coordinator *co, const job_position *pos, double lr) {
  co->pos = *pos;
  co->lr = lr;
}

void coord_add_decisions(coordinator *co, double ctl[CONTROL_N]) {
  const job_config *cfg = co->cfg;
  int req = status_server_poll_requests(co->status);
  if (req & STATUS_REQ_STOP) ctl[CONTROL_STOP] += 1;
  if (req & STATUS_REQ_CHECKPOINT) ctl[CONTROL_CHECKPOINT] += 1;
  if (cfg->ckpt_every > 0 && co->pos.step % cfg->ckpt_every == 0) ctl[CONTROL_CHECKPOINT] += 1;
  if (cfg->ckpt_seconds > 0 && time_now() - co->last_ckpt_time >= cfg->ckpt_seconds) ctl[CONTROL_CHECKPOINT] += 1;
}

void coord_step_done(coordinator *co, const double ctl[CONTROL_N], const control_timing *timings,
                     control_action action) {
  const job_config *cfg = co->cfg;
  figures_window *w = &co->window;
  memcpy(co->timings, timings, (size_t)co->plan.world * sizeof *timings);
  w->loss += ctl[CONTROL_LOSS_SUM], w->correct += ctl[CONTROL_CORRECT];
  w->samples += ctl[CONTROL_SAMPLES], w->time += timings[0].step_time_s, w->comm += timings[0].comm_exposed_s;
  w->steps++;
  co->counts.images_total += (int64_t)ctl[CONTROL_SAMPLES];
  co->counts.last_step_time = time_unix();
  statusp_step_observe(&co->counts, timings[0].step_time_s);
  double ips = w->time > 0 ? w->samples / w->time : 0;
  double loss = w->loss / w->samples, acc = w->correct / w->samples;
  int at_epoch_end = co->pos.step_in_epoch == co->plan.steps_per_epoch;
  if (co->pos.step % cfg->log_every == 0 || at_epoch_end || ctl[CONTROL_STOP] > 0) {
    char eta[32];
    format_eta(eta_seconds(co), eta, sizeof eta);
    log_info("epoch %d/%d  step %d/%d  loss %.4f  acc %.3f  lr %.3g  %.1f img/s  comm %.1f ms  ETA %s",
             co->pos.epoch + 1, cfg->epochs, co->pos.step_in_epoch, co->plan.steps_per_epoch, loss, acc,
             co->lr, ips, 1e3 * w->comm / w->steps, eta);
    statusp_metric p = {co->pos.step, plan_epoch_number(co->pos.epoch, co->pos.step_in_epoch), loss, acc, NAN,
                        co->lr, ips};
    record_metric(co, &p, w->comm / w->steps);
    publish(co, "training", loss, acc, ips);
    memset(w, 0, sizeof *w);
  } else {
    publish(co, "training", loss, acc, ips);
  }
  if (action == CONTROL_STOP_NOW) {
    int sig = 0;
    for (int r = 0; r < co->plan.world && !sig; r++) sig = timings[r].signal;
    log_info("stop requested (%s): checkpointing step %lld", sig ? signals_name(sig) : "status socket",
             (long long)co->pos.step);
  }
}

void coord_set_state(coordinator *co, const char *state) { publish(co, state, NAN, NAN, 0); }

int coord_validation(coordinator *co, double accuracy) {
  co->last_val = accuracy;
  int best = isfinite(accuracy) && !(accuracy <= co->best_val);
  if (best) co->best_val = accuracy;
  /* Logged once the epoch is counted done: pos.epoch is the number of epochs finished. */
  log_info("epoch %d/%d done: validation accuracy %.4f (best %.4f)", co->pos.epoch, co->cfg->epochs,
           accuracy, co->best_val);
  statusp_metric p = {co->pos.step, plan_epoch_number(co->pos.epoch, co->pos.step_in_epoch), NAN, NAN, accuracy,
                      co->lr, 0};
  record_metric(co, &p, 0);
  return best;
}

/* ---- checkpoints ---------------------------------------------------------------------- */

/* The submitted write becomes "last" once the writer reports it finished. */
static void settle_write(coordinator *co, int failed) {
  if (co->pending_step < 0) return;
  if (!failed) {
    co->last_step = co->pending_step;
    co->last_time = co->pending_time;
    ckpt_path(co->last_path, sizeof co->last_path, co->job_dir, (uint64_t)co->last_step);
  }
  co->pending_step = -1;
}

void coord_checkpoint_begin(coordinator *co) {
  memcpy(co->state_after_checkpoint, co->state, sizeof co->state);
  publish(co, "checkpointing", NAN, NAN, 0);
}

void coord_checkpoint(coordinator *co, const train_state_view *state, const char *why, double next_lr) {
  const job_config *cfg = co->cfg;
  ckptf_section_in *sec = xcalloc((size_t)(6 + state->stats_ranks), sizeof *sec);
  char (*names)[TRAIN_STATE_NAME_MAX] = xcalloc((size_t)state->stats_ranks, sizeof *names);
  ckpt_snapshot s;
  memset(&s, 0, sizeof s);
  s.meta.step = co->pos.step;
  s.meta.epoch = co->pos.epoch;
  s.meta.sample_in_epoch = (int64_t)co->pos.step_in_epoch * cfg->batch;
  s.meta.world_size = state->stats_ranks;
  snprintf(s.meta.model, sizeof s.meta.model, "%s", cfg->model);
  snprintf(s.meta.config_hash, sizeof s.meta.config_hash, "%s", co->config_hash);
  train_state_extra x = {state->optimizer_steps, next_lr, cfg->batch, co->best_val, co->last_val,
                         co->plan.classes, co->plan.image_size, "", state->ema_updates};
  snprintf(x.reason, sizeof x.reason, "%s", why);
  s.meta.extra = train_state_extra_json(&x);
  s.sections = sec;
  s.n_sections = train_state_sections(state, &co->shape, sec, names);
  /* The writer thread logged the failed write's reason ("checkpoint not saved: ..."); this
   * says what it means for the run. */
  int rc = ckpt_writer_submit(co->writer, &s);
  if (rc) log_warn("training goes on; the earlier checkpoints are intact");
  settle_write(co, rc != 0);
  co->pending_step = s.meta.step;
  co->pending_time = (double)time(NULL);
  co->last_ckpt_time = time_now();
  cJSON_Delete(s.meta.extra);
  free(sec);
  free(names);
  /* The write goes on in the background: the job is back to what it was doing. */
  publish(co, co->state_after_checkpoint, NAN, NAN, 0);
}

int64_t coord_checkpoint_written(coordinator *co) { return ckpt_writer_written(co->writer); }

int coord_checkpoint_wait(coordinator *co) {
  int rc = ckpt_writer_wait(co->writer); /* a failure is logged by the writer thread */
  settle_write(co, rc != 0);
  return rc;
}

const char *coord_weights_path(const coordinator *co) { return co->weights_path; }
const char *coord_best_weights_path(const coordinator *co) { return co->best_path; }

/* ---- the end ----------------------------------------------------------------------------- */

void coord_finished(coordinator *co, int final_checkpoint_failed) {
  /* A relaunch would go back to the last checkpoint that did get saved and train again. */
  if (final_checkpoint_failed)
    log_warn("the final checkpoint could not be saved (see above): %s/weights.safetensors holds "
             "the finished weights, but running this command again would resume from an older "
             "checkpoint and overwrite them", co->job_dir);
  publish(co, "finished", NAN, NAN, 0);
  record_outcome(co, "finished", EXIT_OK, "");
  log_info("finished: %lld steps, validation accuracy %.4f (best %.4f)", (long long)co->pos.step,
           co->last_val, co->best_val);
}

void coord_stopped(coordinator *co, int checkpointed) {
  record_outcome(co, "stopped", EXIT_PREEMPTED, "");
  if (checkpointed)
    log_info("stopped at step %lld with a checkpoint; run the same command again to resume (exit %d)",
             (long long)co->pos.step, EXIT_PREEMPTED);
  else
    log_info("stop requested before the first step: nothing to save; run the same command again "
             "to resume from step %lld (exit %d)", (long long)co->pos.step, EXIT_PREEMPTED);
}

void coord_close(coordinator *co) {
  if (!co) return;
  if (dying == co) dying = NULL, die_set_hook(NULL);
  ckpt_writer_stop(co->writer);
  status_server_stop(co->status);
  if (co->metrics) fclose(co->metrics);
  tb_events_close(co->events);
  ckpt_loaded_free(&co->resumed);
  free(co->resumed_stats);
  free(co->timings);
  free(co->workers);
  free(co);
}
