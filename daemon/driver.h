/* trainer.h - the training loop every rank runs: loader -> engine -> collectives ->
 * optimizer, with rank 0's coordinator alongside for the job folder, status and checkpoints.
 * A relaunch with the same command resumes from the newest valid checkpoint. */
#ifndef POLLEN_TRAINER_H
#define POLLEN_TRAINER_H

#include "proto/job_config.h"
#include "worker/collective.h"

/* Runs (or resumes) the job in job_dir. Returns EXIT_OK when every epoch is done,
 * EXIT_PREEMPTED after a clean stop with a checkpoint; dies on errors. */
int trainer_run(job_config *cfg, const char *job_dir, comm *c);

#endif
