/* worker.h - what every rank of a training job runs: its device, its data, the engine, the
 * optimizer and the averaging of gradients, as the units the driver (daemon/driver.h) calls at
 * step boundaries:
 *
 *   worker_new -> worker_check_config -> worker_load -> worker_restore ->
 *   { worker_begin_epoch, worker_step, worker_exchange_control, worker_snapshot,
 *     worker_evaluate } ... -> worker_export_weights -> worker_free
 *
 * A worker knows the job only through proto/ (the config, the plan, the control message, the
 * resume and BN-statistics messages, the training-state schema) and never sees the
 * coordinator: what rank 0 decides reaches it as those messages. Calls marked collective must
 * be made by every rank in the same order. Not for: the job folder, checkpoint files or the
 * status socket (daemon/). */
#ifndef POLLEN_WORKER_H
#define POLLEN_WORKER_H

#include "proto/control.h"
#include "proto/job_config.h"
#include "proto/plan.h"
#include "proto/train_msg.h"
#include "proto/train_state.h"
#include "worker/collective.h"

typedef struct worker worker;

/* Collective. Checks the world (the global batch splits evenly), sets the thread count and
 * chooses this rank's device, all before anything is written: a missing GPU changes nothing.
 * Dies with a clear message on a bad setting. */
worker *worker_new(job_config *cfg, comm *c);
/* Collective. Every rank parsed its own flags: they must define the same job as rank 0's,
 * whose definition arrives as a config message. Dies naming the rank that differs. */
void worker_check_config(worker *w);
/* Collective. Stages the data (ranks that cannot read it receive it from rank 0), opens the
 * loaders, builds the model and the optimizer and sets up gradient averaging. Returns the
 * job's plan, the same on every rank. */
const job_plan *worker_load(worker *w);
/* The sizes of this worker's training state. */
train_state_shape worker_state_shape(const worker *w);
/* Where the job is (after worker_restore: where it resumes). */
job_position worker_position(const worker *w);
/* The learning rate of a step (0-based). */
double worker_lr_at(const worker *w, int64_t step);
/* Log lines that say one thing for the whole job come from rank 0 only. */
void worker_log(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Collective. Rank 0 passes the resume message and, when it found a checkpoint, the state
 * (bn_stats: one set per rank of this world); other ranks pass NULLs and receive both. */
void worker_restore(worker *w, const resume_msg *msg, const train_state_view *state);
/* Collective. Whether `mine` is true on any rank. */
int worker_any(worker *w, int mine);
/* Collective. Ends the job when the replicas' parameters differ (`when`: "at start-up", ...). */
void worker_check_same_weights(worker *w, const char *when);

/* Plans this rank's samples for the rest of the current epoch. */
void worker_begin_epoch(worker *w);
/* One training step: load, forward, backward, gradient averaging, update. Adds this rank's
 * loss, accuracy and sample count to ctl and fills its timings. */
void worker_step(worker *w, double ctl[CONTROL_N], control_timing *mine);
/* Collective. Sums the control message over the ranks (every rank ends with the same sums)
 * and gathers the timings into `timings` on rank 0 (world entries; NULL elsewhere). Dies
 * when the ranks run different pollen versions. */
void worker_exchange_control(worker *w, double ctl[CONTROL_N], const control_timing *mine,
                             control_timing *timings);
/* Moves the position past an epoch that is done. */
void worker_end_epoch(worker *w);

/* Collective. The state to checkpoint: the device state copied back, each rank's BN
 * statistics gathered to rank 0 as bn_stats messages. On rank 0 returns 1 and fills v (valid
 * until the next call); elsewhere returns 0. */
int worker_snapshot(worker *w, train_state_view *v);
/* Collective. Accuracy on the validation split (NaN without one), the same on every rank,
 * with the ranks' BN statistics averaged for it (bn_stats_mean) and then restored. */
double worker_evaluate(worker *w);
/* Collective. Writes the weights with the averaged BN statistics to path on rank 0 (path is
 * ignored elsewhere) and logs their hash. Returns rank 0's weights_export result (0 elsewhere). */
int worker_export_weights(worker *w, const char *path, char *err, size_t errlen);

void worker_free(worker *w);

#endif
