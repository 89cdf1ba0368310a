/* outcome.h - JOB_DIR/outcome.json, how the job's latest launch ended (version 2,
 * proto/README.md "Launch outcome"): written by the coordinator, read by `pollen status`
 * when no job answers, so a finished job reads apart from a stopped, failed or killed one.
 *
 * {"v":2,"state":"running|finished|stopped|failed","exit_status":..,"step":..,"epoch":..,
 *  "epochs_done":..,"val_acc":..,"best_val_acc":..,"message":"..","start_time":..,"time":..}
 * "epoch" counts from 1 as everywhere (proto/plan.h plan_epoch_number); version 1 had only
 * the count of epochs done, under "epoch", and reads with epoch unknown (-1).
 * "running" is written when a launch starts: found with no job answering, the launch was
 * killed (SIGKILL, out of memory, a lost node). Not for: live figures (the status socket). */
#ifndef POLLEN_OUTCOME_H
#define POLLEN_OUTCOME_H

#include <stddef.h>
#include <stdint.h>

#define OUTCOME_VERSION 2
#define OUTCOME_MAX_BYTES 8192 /* a record is under 1 KiB; a bigger file is not one */

typedef struct {
  char state[16];            /* running, finished, stopped or failed */
  int exit_status;           /* what the launch exits with (0, 75, 1...); -1 while running */
  int64_t step;              /* optimizer steps done */
  int64_t epoch;             /* the epoch of the last step, from 1; -1: unknown (version 1) */
  int64_t epochs_done;
  double val_acc, best_val_acc; /* NaN: none yet (written as null) */
  char message[512];         /* failed: the one-line error; else empty */
  double start_time, time;   /* unix seconds: the launch's start, and this record's */
} job_outcome;

/* Writes JOB_DIR/outcome.json through a temporary file and a rename (a reader sees the old
 * record or the new one). Uses no allocation and never dies: it runs on the exit path of
 * die(). 0, or -1 with errno set. */
int outcome_write(const char *job_dir, const job_outcome *o);

/* Reads JOB_DIR/outcome.json strictly: 0, 1 when there is none, or -1 with a one-line reason
 * in err (not JSON, wrong types, an unknown state or a newer version). */
int outcome_read(const char *job_dir, job_outcome *o, char *err, size_t errlen);

#endif
