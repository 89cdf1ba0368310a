/* coordinator.h - rank 0's decisions for a training job, and the services that carry them out.
 *
 * The coordinator owns the job folder: it freezes config.json at the first launch and checks
 * it on every relaunch, chooses the checkpoint to resume from, decides when to checkpoint
 * (the --ckpt-every/--ckpt-seconds cadence, requests from the status socket) and writes the
 * checkpoints in the background, keeps metrics.jsonl, and publishes the job's state on the
 * status socket and in the log. It never touches the model: the driver (daemon/driver.h)
 * hands it the workers' figures and state at step boundaries, and what it decides reaches the
 * workers as proto/ messages (its part of the control message, the resume message).
 * Not for: the training itself (worker/), the byte formats (proto/). */
#ifndef POLLEN_COORDINATOR_H
#define POLLEN_COORDINATOR_H

#include "proto/control.h"
#include "proto/job_config.h"
#include "proto/plan.h"
#include "proto/train_msg.h"
#include "proto/train_state.h"

typedef struct coordinator coordinator;

/* Creates JOB_DIR if needed, freezes the config there at the first launch and checks it on a
 * relaunch (a different definition is refused unless --force-config adopts it). Dies with a
 * clear message. Starts no service yet. */
coordinator *coord_open(const job_config *cfg, const char *job_dir);
/* Starts the checkpoint writer, the status server and the metrics record for a job of this
 * plan and state shape on these hosts (plan->world names). Dies on errors (another live job in the folder,
 * an unwritable folder). */
void coord_start(coordinator *co, const job_plan *plan, const train_state_shape *shape,
                 const char *const *hosts);
/* Chooses where the job resumes: the newest checkpoint of this model and config that
 * verifies (newer damaged ones are skipped and named). Fills msg (found 0: a fresh start)
 * and, when found, state, valid until coord_close, with one set of BN statistics per rank of
 * this world: each rank's own when the world size is the one that wrote it, else their mean.
 * Dies when checkpoints exist but none can be used. */
void coord_choose_resume(coordinator *co, resume_msg *msg, train_state_view *state);
/* Logs what the job is and starts its clocks; says so when it is already finished. */
void coord_begin(coordinator *co, const job_position *pos);

/* Where the job is, and the learning rate of its last step: what status and records show. */
void coord_at(coordinator *co, const job_position *pos, double lr);
/* Rank 0's part of the control message of the step that just ended: checkpoint and stop
 * requests from the status socket, and the checkpoint cadence. */
void coord_add_decisions(coordinator *co, double ctl[CONTROL_N]);
/* After every step, with the summed control message, every rank's timings and what the ranks
 * do next: the training figures' window, the log line, metrics.jsonl and the status. */
void coord_step_done(coordinator *co, const double ctl[CONTROL_N], const control_timing *timings,
                     control_action action);
/* The job's state for `pollen status`: "training", "evaluating", "stopping", ... */
void coord_set_state(coordinator *co, const char *state);
/* An epoch's validation accuracy (NaN: no validation split): logged and recorded. */
/* Records a validation; 1 when it is the best so far (strictly: a tie keeps the earlier
 * weights), when the driver writes coord_best_weights_path. */
int coord_validation(coordinator *co, double accuracy);

/* A checkpoint is being taken: the status says so until coord_checkpoint. */
void coord_checkpoint_begin(coordinator *co);
/* Hands a snapshot of the state to the background writer, with the reason ("periodic",
 * "epoch end", "stop", "max steps") and the learning rate of the next step; returns once it
 * is copied, with the status back to what it was. A failed earlier write is logged and
 * training goes on. */
void coord_checkpoint(coordinator *co, const train_state_view *state, const char *why, double next_lr);
/* Never blocks: the step of the newest checkpoint written in this launch (-1: none yet). */
int64_t coord_checkpoint_written(coordinator *co);
/* Waits for the last checkpoint write; 0 when it succeeded. */
int coord_checkpoint_wait(coordinator *co);
/* Where the final weights go: JOB_DIR/weights.safetensors. */
const char *coord_weights_path(const coordinator *co);
/* JOB/weights-best.safetensors: the weights of the best validation so far. */
const char *coord_best_weights_path(const coordinator *co);
/* The end of a launch: finished (with whether the final checkpoint failed), or stopped (with
 * a checkpoint, or before the first step, when there was nothing to save). */
void coord_finished(coordinator *co, int final_checkpoint_failed);
void coord_stopped(coordinator *co, int checkpointed);
/* Stops the services (waiting for a pending write) and frees co. NULL is accepted. */
void coord_close(coordinator *co);

#endif
