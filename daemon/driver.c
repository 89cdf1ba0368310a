/* driver.c - a training job as a loop of named phases (see driver.h). Every rank runs every
 * phase; `co` is the coordinator on rank 0 and NULL elsewhere. */
#include "daemon/driver.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "daemon/coordinator.h"
#include "daemon/replica.h"
#include "daemon/signals.h"
#include "worker/worker.h"

/* The replica link's peer: daemon/replica.c moves files, worker/collective.c the bytes. */
typedef struct {
  const comm *c;
  int peer;
} replica_peer;

typedef struct {
  worker *w;
  coordinator *co;   /* rank 0 only */
  const job_plan *plan;
  control_timing *timings; /* rank 0: every rank's, for the coordinator */
  const char **hosts;
  comm *c;
  int fault_rank;      /* POLLEN_FAULT_AT_STEP's rank and step; fault_step -1: none */
  int64_t fault_step;
  replica *rep;        /* rank 0 and the replica rank, when checkpoints are copied */
  replica_peer rep_peer;
} job;

/* ---- checkpoint replicas: replica.h's link over the bulk transfers ---------------------- */

static void *link_send(void *ctx, int tag, const void *buf, size_t bytes) {
  replica_peer *p = ctx;
  return comm_xfer_send(p->c, p->peer, tag, buf, bytes, REPLICA_CHUNK_BYTES);
}
static void *link_recv(void *ctx, int tag, void *buf, size_t bytes) {
  replica_peer *p = ctx;
  return comm_xfer_recv(p->c, p->peer, tag, buf, bytes, REPLICA_CHUNK_BYTES);
}
static int link_test(void *ctx, void *t) {
  if (!comm_xfer_test(t)) return 0;
  comm_xfer_free(t);
  return 1;
}
static void link_wait(void *ctx, void *t) {
  comm_xfer_wait(t);
  comm_xfer_free(t);
}
static int link_probe(void *ctx, int tag) {
  replica_peer *p = ctx;
  return comm_bulk_probe(p->c, p->peer, tag);
}

static replica_link link_to(replica_peer *p) {
  return (replica_link){p, link_send, link_recv, link_test, link_wait, link_probe};
}

/* The first rank, in rank order, on another host than rank 0's; -1 when there is none. */
static int other_host_rank(const comm *c) {
  for (int r = 1; r < c->world; r++)
    if (strcmp(comm_host_of(c, r), comm_host_of(c, 0))) return r;
  return -1;
}

/* 1 when no lower rank is on this rank's host: one rank per host reads its folder. */
static int first_on_host(const comm *c) {
  for (int r = 0; r < c->rank; r++)
    if (!strcmp(comm_host_of(c, r), c->host)) return 0;
  return 1;
}

/* Collective, before the coordinator opens the folder: every host's newest valid checkpoint,
 * and the newest of all installed on rank 0 when it lacks it (its disk was lost, rank 0 moved
 * to another host). */
static void phase_find_newest(const job_config *cfg, const char *job_dir, comm *c) {
  if (!c->mpi || c->world < 2) return;
  char hash[17];
  job_config_hash(cfg, hash);
  int64_t mine = c->rank == 0 || first_on_host(c) ? replica_newest(job_dir, cfg->model, cfg->force_config ? NULL : hash) : -1;
  double v[2] = {(double)mine, c->rank == 0 ? (double)mine : -1.0};
  comm_allreduce_max_f64(c, v, 2);
  int64_t newest = (int64_t)v[0], at_root = (int64_t)v[1];
  if (newest < 0 || at_root >= newest) return;
  double lowest = mine == newest ? (double)(c->world - c->rank) : 0.0;
  comm_allreduce_max_f64(c, &lowest, 1);
  int holder = c->world - (int)lowest;
  replica_peer p = {c, c->rank == 0 ? holder : 0};
  replica_link l = link_to(&p);
  if (c->rank == holder) replica_send_newest(job_dir, newest, &l);
  if (c->rank != 0) return;
  char peer[128];
  snprintf(peer, sizeof peer, "rank %d (%s)", holder, comm_host_of(c, holder));
  replica_take_newest(job_dir, cfg->keep, newest, &l, peer);
  log_info("resuming from a replica: step %lld from rank %d (%s)", (long long)newest, holder, comm_host_of(c, holder));
}

/* Collective, after the coordinator opened the folder: who copies checkpoints to whom. */
static void phase_replicas_start(job *j, const job_config *cfg, const char *job_dir, comm *c) {
  int target = c->mpi ? other_host_rank(c) : -1;
  if (target < 0) {
    if (j->co && c->world > 1 && cfg->replicas)
      log_info("checkpoints: every rank runs on %s, so none is copied to another host", c->host);
    return;
  }
  struct {
    int32_t replicas;
    char token[33];
  } msg = {cfg->replicas, ""};
  char err[1024];
  if (j->co && msg.replicas && replica_token_write(job_dir, msg.token, err, sizeof err)) {
    log_warn("%s; checkpoints are not copied to another host", err);
    msg.replicas = 0;
  }
  comm_bcast(c, &msg, sizeof msg, 0); /* rank 0's choice holds: both sides must agree */
  if (!msg.replicas) {
    if (j->co) log_info("checkpoints are not copied to another host (--replicas 0)");
    return;
  }
  msg.token[32] = 0;
  double shared = c->rank == target ? replica_token_same(job_dir, msg.token) : 0;
  comm_bcast(c, &shared, sizeof shared, target);
  const char *thost = comm_host_of(c, target);
  if (shared) {
    if (j->co) log_info("checkpoints: %s is one folder shared with rank %d (%s), so none is copied", job_dir, target, thost);
    return;
  }
  char peer[128];
  if (j->co) {
    log_info("checkpoints are copied to rank %d (%s), whose %s is a folder of its own", target, thost, job_dir);
    j->rep_peer = (replica_peer){c, target};
    snprintf(peer, sizeof peer, "rank %d (%s)", target, thost);
  } else if (c->rank == target) {
    j->rep_peer = (replica_peer){c, 0};
    snprintf(peer, sizeof peer, "rank 0 (%s)", comm_host_of(c, 0));
  } else {
    return;
  }
  replica_link l = link_to(&j->rep_peer);
  j->rep = replica_new(job_dir, cfg->keep, j->co != NULL, peer, &l);
}

/* At a step boundary: the newest written checkpoint goes on its way, never waited for. */
static void phase_replicate(job *j) {
  if (!j->rep) return;
  if (j->co) replica_offer(j->rep, coord_checkpoint_written(j->co));
  replica_progress(j->rep);
}

/* The end of a launch: the last checkpoint is on the other host before any rank leaves. */
static void phase_replicate_last(job *j) {
  if (!j->rep) return;
  if (j->co) replica_offer(j->rep, coord_checkpoint_written(j->co));
  replica_drain(j->rep);
  replica_free(j->rep);
  j->rep = NULL;
}

/* The coordinator sees where the workers are after anything that moves them. */
static void tell_position(job *j) {
  if (!j->co) return;
  job_position pos = worker_position(j->w);
  coord_at(j->co, &pos, worker_lr_at(j->w, pos.step > 0 ? pos.step - 1 : 0));
}

/* POLLEN_FAULT_AT_STEP=RANK:STEP, for tests of what survives a crash: that rank dies by
 * SIGKILL (as by the OOM killer) when it has done that step, at every launch that gets there.
 * Read once, at set-up. */
static void read_fault(job *j) {
  const char *spec = getenv("POLLEN_FAULT_AT_STEP");
  long long step;
  j->fault_step = -1;
  if (spec && sscanf(spec, "%d:%lld", &j->fault_rank, &step) == 2) j->fault_step = step;
}

/* Device, the ranks' agreement on the job, frozen config, data, engine, the coordinator's
 * services: nothing is written before the device is known (a missing GPU changes nothing) and
 * every rank was shown to run the same job (a flag error leaves no config.json behind). */
static void phase_set_up(job *j, job_config *cfg, const char *job_dir, comm *c) {
  j->c = c;
  read_fault(j);
  j->w = worker_new(cfg, c);
  worker_check_config(j->w);
  phase_find_newest(cfg, job_dir, c);
  if (c->rank == 0) j->co = coord_open(cfg, job_dir);
  j->plan = worker_load(j->w);
  j->hosts = xcalloc((size_t)c->world, sizeof *j->hosts);
  for (int r = 0; r < c->world; r++) j->hosts[r] = comm_host_of(c, r);
  if (j->co) {
    train_state_shape shape = worker_state_shape(j->w);
    coord_start(j->co, j->plan, &shape, j->hosts);
    j->timings = xcalloc((size_t)c->world, sizeof *j->timings);
  }
  phase_replicas_start(j, cfg, job_dir, c);
}

/* Rank 0 chooses the checkpoint; every rank takes its state from the resume message. */
static void phase_resume(job *j) {
  resume_msg msg;
  train_state_view state;
  if (j->co) coord_choose_resume(j->co, &msg, &state);
  worker_restore(j->w, j->co ? &msg : NULL, j->co ? &state : NULL);
  worker_check_same_weights(j->w, "at start-up");
  tell_position(j);
  if (j->co) {
    job_position pos = worker_position(j->w);
    coord_begin(j->co, &pos);
  }
}

static void phase_checkpoint(job *j, const char *why) {
  train_state_view state;
  if (j->co) coord_checkpoint_begin(j->co);
  if (worker_snapshot(j->w, &state)) {
    job_position pos = worker_position(j->w);
    coord_checkpoint(j->co, &state, why, worker_lr_at(j->w, pos.step));
  }
}

/* Every rank (the variable goes to all) meets first, so rank 0 has logged the step. */
static void inject_fault(const job *j) {
  if (j->fault_step < 0 || worker_position(j->w).step != j->fault_step) return;
  comm_barrier(j->c);
  if (j->fault_rank != j->c->rank) return;
  log_warn("POLLEN_FAULT_AT_STEP: rank %d kills itself after step %lld", j->fault_rank, (long long)j->fault_step);
  raise(SIGKILL);
}

/* One step and what the ranks agree to do after it. */
static control_action phase_step(job *j) {
  double ctl[CONTROL_N] = {0};
  control_timing mine;
  worker_step(j->w, ctl, &mine);
  mine.signal = signals_stop_requested();
  if (mine.signal) ctl[CONTROL_STOP] += 1;
  tell_position(j);
  if (j->co) coord_add_decisions(j->co, ctl);
  worker_exchange_control(j->w, ctl, &mine, j->timings);
  job_position pos = worker_position(j->w);
  control_action action = control_decide(ctl, &pos, j->plan->total_steps, j->plan->steps_per_epoch);
  if (j->co) coord_step_done(j->co, ctl, j->timings, action);
  inject_fault(j);
  return action;
}

/* Validate, record, check the replicas, checkpoint. */
static void phase_epoch_end(job *j) {
  if (j->co) coord_set_state(j->co, "evaluating");
  double accuracy = worker_evaluate(j->w);
  worker_end_epoch(j->w);
  tell_position(j);
  int best = j->co && coord_validation(j->co, accuracy);
  /* Beside the final weights, the best validated ones, as validated (EMA, precise BN): a
   * copy a full disk may cost, never the run. */
  char err[512];
  if (worker_any(j->w, best) && worker_export_weights(j->w, j->co ? coord_best_weights_path(j->co) : NULL, err, sizeof err))
    log_warn("best weights not saved: %s; training goes on (the final weights are written at the end)", err);
  worker_check_same_weights(j->w, "at an epoch end");
  phase_checkpoint(j, "epoch end");
  if (j->co && worker_position(j->w).step < j->plan->total_steps) coord_set_state(j->co, "training");
}

/* JOB/weights.safetensors, written by rank 0 with the ranks' BN statistics averaged. */
static void export_weights(job *j) {
  char err[512];
  if (worker_export_weights(j->w, j->co ? coord_weights_path(j->co) : NULL, err, sizeof err)) die("%s", err);
}

/* Checkpoint, then the weights as they are: the job exits 75 and resumes when relaunched. */
static int phase_stop(job *j) {
  if (j->co) coord_set_state(j->co, "stopping");
  phase_checkpoint(j, "stop");
  if (j->co && coord_checkpoint_wait(j->co) != 0)
    die("the final checkpoint could not be written (see above); the previous one is intact");
  export_weights(j);
  worker_check_same_weights(j->w, "at the end");
  if (j->co) coord_stopped(j->co, 1);
  return EXIT_PREEMPTED;
}

static int phase_finish(job *j) {
  worker_check_same_weights(j->w, "at the end");
  if (worker_position(j->w).step_in_epoch != 0) phase_checkpoint(j, "max steps");
  /* The final checkpoint is finished first: written alongside, on a nearly full disk its
   * temporary file could take the room the weights need (a failed one is removed). */
  int failed = j->co && coord_checkpoint_wait(j->co) != 0;
  export_weights(j);
  if (j->co) coord_finished(j->co, failed);
  return EXIT_OK;
}

static int phase_train(job *j) {
  if (j->co) coord_set_state(j->co, "training");
  for (;;) {
    job_position pos = worker_position(j->w);
    if (pos.step >= j->plan->total_steps) return phase_finish(j);
    worker_begin_epoch(j->w);
    while (pos.step_in_epoch < j->plan->steps_per_epoch && pos.step < j->plan->total_steps) {
      phase_replicate(j);
      control_action action = phase_step(j);
      if (action == CONTROL_STOP_NOW) return phase_stop(j);
      if (action == CONTROL_TAKE_CHECKPOINT) phase_checkpoint(j, "periodic");
      pos = worker_position(j->w);
    }
    if (pos.step_in_epoch == j->plan->steps_per_epoch) phase_epoch_end(j);
  }
}

/* The final weights are part of a finished job: a relaunch writes them again from the final
 * checkpoint, in case they were lost (a kill right after that checkpoint, a deleted file). */
static int phase_rewrite_weights(job *j) {
  export_weights(j);
  return EXIT_OK;
}

/* A stop asked during start-up: nothing is lost by leaving before the first step. */
static int phase_stop_before_work(job *j) {
  if (j->co) coord_stopped(j->co, 0);
  return EXIT_PREEMPTED;
}

int driver_train(job_config *cfg, const char *job_dir, comm *c) {
  job j = {0};
  phase_set_up(&j, cfg, job_dir, c);
  phase_resume(&j);
  int status;
  if (worker_position(j.w).step >= j.plan->total_steps) status = phase_rewrite_weights(&j);
  else if (worker_any(j.w, signals_stop_requested() != 0)) status = phase_stop_before_work(&j);
  else status = phase_train(&j);
  phase_replicate_last(&j);
  coord_close(j.co);
  /* No rank leaves before rank 0 has written everything: launchers (mpirun, srun) kill the
   * remaining ranks soon after one exits. */
  comm_barrier(c);
  worker_free(j.w);
  free(j.timings);
  free(j.hosts);
  return status;
}
