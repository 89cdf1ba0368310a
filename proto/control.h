/* control.h - the message every rank contributes at each step boundary (version 1), and the
 * rule every rank applies to the sum.
 *
 * It is summed across ranks with one small all-reduce, so every rank ends the step with the
 * same view: the step's loss and accuracy, and whether the job must checkpoint or stop. The
 * coordinator (rank 0) adds its decisions (requests from the status socket, the checkpoint
 * cadence); any rank adds the stop signal it received. Because every rank reads the same sums
 * and applies control_decide to them, all ranks act on the same step without a second
 * message. Timings travel separately (gathered to rank 0). */
#ifndef POLLEN_CONTROL_H
#define POLLEN_CONTROL_H

#include <stdint.h>

#define CONTROL_VERSION 1

/* Indices into the summed double array. */
enum {
  CONTROL_LOSS_SUM,   /* sum over samples of the loss */
  CONTROL_CORRECT,    /* samples predicted right */
  CONTROL_SAMPLES,
  CONTROL_STOP,       /* > 0: stop after this step (checkpoint, exit 75) */
  CONTROL_CHECKPOINT, /* > 0: checkpoint after this step */
  CONTROL_VERSION_SUM,/* world * CONTROL_VERSION when every rank speaks this version */
  CONTROL_N
};

/* Per-rank timings, gathered to rank 0 each step for metrics and the status socket. */
typedef struct {
  double step_time_s, compute_s, comm_exposed_s, data_wait_s;
  double images;
  int pid;
  int signal;   /* the stop signal this rank received, or 0 */
} control_timing;

/* Where a job is: optimizer steps done, and the epoch and step within it that come next. */
typedef struct {
  int64_t step;
  int epoch, step_in_epoch;
} job_position;

typedef enum {
  CONTROL_GO_ON,            /* the next step */
  CONTROL_TAKE_CHECKPOINT,  /* a checkpoint of this step, then the next step */
  CONTROL_STOP_NOW,         /* a checkpoint of this step, then exit 75 */
} control_action;

/* What every rank does after a step whose summed message is ctl, at position pos (after the
 * step) in a job of total_steps and steps_per_epoch. A stop asked at the job's very last step
 * lets it finish instead (exit 0 with the final validation), so a scheduler does not relaunch
 * a finished job; a checkpoint asked at an epoch's last step is left to the epoch-end
 * checkpoint of the same step: one write, not two. */
control_action control_decide(const double ctl[CONTROL_N], const job_position *pos,
                              int64_t total_steps, int steps_per_epoch);

#endif
