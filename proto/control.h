/* control.h - the message every rank contributes at each step boundary (version 1).
 *
 * It is summed across ranks with one small all-reduce, so every rank ends the step with the
 * same view: the step's loss and accuracy, and whether the job must checkpoint or stop. The
 * coordinator (rank 0) adds the requests it received (status socket, timers); any rank adds
 * the signals it received. Because every rank reads the same sums, all ranks act on the same
 * step without a second message. Timings travel separately (gathered to rank 0). */
#ifndef POLLEN_CONTROL_H
#define POLLEN_CONTROL_H

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

#endif
