/* coordinator.h - what rank 0 does beside its own worker: owns the job folder (frozen config,
 * metrics log), serves the status socket, writes checkpoints in the background, and turns
 * signals and socket requests into stop/checkpoint decisions that reach the workers through
 * the per-step control message (proto/control.h). It never touches the model directly: the
 * training loop hands it snapshots and state at step boundaries. */
#ifndef POLLEN_COORDINATOR_H
#define POLLEN_COORDINATOR_H

#include "daemon/ckpt.h"
#include "daemon/status_server.h"
#include "proto/control.h"
#include "proto/job_config.h"

typedef struct coordinator coordinator;

/* Opens JOB_DIR for this run: the frozen config must already be settled (train_freeze_config).
 * Starts the status server and the checkpoint writer. Dies with a clear message on errors
 * (another live job in the folder, unwritable folder). */
coordinator *coord_start(const job_config *cfg, const char *job_dir);
/* Requests from the status socket since the last call (STATUS_REQ_* bits). */
int coord_poll_requests(coordinator *co);
/* State for `pollen status`: the job and one timing record per rank. */
void coord_publish(coordinator *co, const statusp_job *job, const control_timing *t, int world,
                   const char *const *hosts);
/* One metrics point: appended to JOB_DIR/metrics.jsonl and the status history. */
void coord_metric(coordinator *co, const statusp_metric *p, double elapsed_s, double comm_exposed_s);
/* Hands a snapshot to the background writer; returns at once (after the copy). Logs and
 * returns non-zero if the PREVIOUS write failed (training goes on; the old checkpoints stay). */
int coord_checkpoint(coordinator *co, const ckpt_snapshot *s);
/* Waits for the last checkpoint write; 0 when it succeeded. */
int coord_checkpoint_wait(coordinator *co);
/* Path of the newest checkpoint written in this run ("" if none) and its step. */
const char *coord_last_checkpoint(const coordinator *co, int64_t *step, double *unix_time);
void coord_stop(coordinator *co);

#endif
