/* plan.h - the job's sample order, a contract every rank computes alike: which samples each
 * global step takes, and which of them each rank reads.
 *
 * Epoch e is plan_shuffle(seed, e) of the training split; step s of the epoch takes
 * order[s*B .. (s+1)*B) where B is the global batch, and rank r of W takes the r-th contiguous
 * B/W of it. A checkpoint's position (epoch, sample in the epoch) means something only through
 * this order, and it does not depend on the world size: that is what lets a job resume on more
 * or fewer ranks. Pure functions, so no rank needs to be told its samples.
 * Not for: reading data (worker/loader.h). */
#ifndef POLLEN_PLAN_H
#define POLLEN_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "proto/job_config.h"

/* The job's size, derived once from the data and the config, the same on every rank. */
typedef struct {
  int n_train, n_val, classes, image_size;
  int world, global_batch, local_batch;
  int epochs, steps_per_epoch;
  int64_t total_steps;    /* where this launch stops: all epochs, or --max-steps */
  int64_t schedule_steps; /* the LR schedule's length: all epochs (--max-steps is a knob) */
} job_plan;

/* Fills p for a training split of n_train samples. Returns 0, or -1 with a one-line reason in
 * err (fewer samples than one global batch). */
int plan_job(job_plan *p, const job_config *cfg, int world, int n_train, int n_val, int classes,
             char *err, size_t errlen);

/* order[0..n) = a permutation of 0..n-1 from Fisher-Yates driven by Philox keyed by
 * (seed, epoch): identical on every machine and thread count. */
void plan_shuffle(uint64_t seed, int epoch, int64_t n, int64_t *order);

/* This rank's samples for steps first_step .. steps_per_epoch-1 of an epoch whose order is
 * `order`, step after step, into mine; returns how many (the steps times local_batch, where
 * local_batch = global_batch / world). */
int64_t plan_rank_samples(const int64_t *order, int first_step, int steps_per_epoch,
                          int global_batch, int rank, int local_batch, int64_t *mine);

/* The epoch as users read it everywhere (logs, metrics.jsonl, status, Prometheus, `pollen
 * checkpoints`): counted from 1, the epoch the last step done belongs to (1 before any step).
 * epoch_index is a position's 0-based epoch, done_in_epoch the steps or samples of it done:
 * a position at the start of epoch index 3 reads as epoch 3, the one just finished. */
int plan_epoch_number(int64_t epoch_index, int64_t done_in_epoch);

#endif
