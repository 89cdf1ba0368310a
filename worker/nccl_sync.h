/* nccl_sync.h - gradient averaging between GPUs with NCCL: the GPU twin of collective.h's
 * grad_sync, same bucket order and the same calls from the worker (worker/worker.c).
 *
 * The communicator is made from an ncclUniqueId that rank 0 draws and broadcasts over MPI
 * (comm_bcast, so a dead rank ends the job instead of hanging it). Gradients are averaged
 * in place (ncclAllReduce with ncclAvg) in buckets of the flat device gradient buffer, on a
 * stream of their own: a bucket starts when backward reports it complete (after the compute
 * stream's work so far, through an event) and runs while backward goes on. The communicator
 * is non-blocking, and every wait polls ncclCommGetAsyncError against a deadline
 * (comm.stall_timeout): an NCCL error or a stall aborts the communicator and ends the whole
 * job with a line naming the rank, never a silent hang.
 *
 * In a build without CUDA every function dies with "built without CUDA". The worker uses it
 * when every rank trains on a GPU and there is more than one rank. */
#ifndef POLLEN_NCCL_SYNC_H
#define POLLEN_NCCL_SYNC_H

#include <stddef.h>

#include "worker/collective.h"

struct model; /* worker/model.h */

typedef struct nccl_sync nccl_sync;

/* Collective (every rank calls it, with the same model and bucket_floats) for a model on
 * the GPU (model_use_cuda first): averages its live gradients, fenced against its compute
 * stream. bucket_floats 0 means one bucket. */
nccl_sync *nccl_sync_new(const comm *c, struct model *m, size_t bucket_floats);
void nccl_sync_free(nccl_sync *s);
/* Once per step before backward. */
void nccl_sync_begin(nccl_sync *s);
/* Every gradient at offset >= lowest is final once the work queued so far on the compute
 * stream has run: starts the buckets that are then complete. Does not wait. */
void nccl_sync_ready(nccl_sync *s, size_t lowest);
/* Starts what is left, waits (with the watchdog) until every bucket is averaged, and makes
 * the compute stream wait for them too. Returns the seconds spent waiting here. */
double nccl_sync_finish(nccl_sync *s);
/* The NCCL version this build runs with, e.g. 22803. */
int nccl_sync_version(void);

#endif
