/* nccl_sync.c - bucketed NCCL all-reduce of gradients with an error and stall watchdog; see
 * nccl_sync.h. */
#include "worker/nccl_sync.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "worker/model.h"

#ifdef POLLEN_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "ops/cuda/ops_cuda.h"

struct nccl_sync {
  const comm *c;
  ncclComm_t nc;
  cudaStream_t stream, compute; /* compute: the model's, which backward runs on */
  cudaEvent_t ready, done;
  float *grads;
  size_t n, bucket;
  int n_buckets, next; /* next: the highest bucket not yet started (-1: all started) */
};

/* Ends the whole job: this rank's communicator is aborted (so no kernel of ours waits on a
 * peer forever) and MPI takes the other ranks down. */
static void ns_fail(nccl_sync *s, const char *what, const char *why) {
  log_warn("rank %d (%s): NCCL %s: %s; ending the job", s->c->rank, s->c->host, what, why);
  if (s->nc) ncclCommAbort(s->nc);
  s->nc = NULL;
  comm_abort(s->c, EXIT_FAILED);
}

static double ns_limit(const nccl_sync *s) {
  /* Rank 0 gives up a little earlier than the others, so it is the one that reports. */
  return s->c->stall_timeout + (s->c->rank == 0 ? 0.0 : 5.0);
}

/* The communicator's state after a non-blocking call: wait while it is in progress. */
static void ns_settle(nccl_sync *s, ncclResult_t r, const char *what) {
  double start = time_now();
  while (r == ncclInProgress) {
    if (time_now() - start > ns_limit(s)) ns_fail(s, what, "no progress before the deadline: a rank is dead or hung");
    usleep(100);
    ncclResult_t ar = ncclSuccess;
    ncclResult_t q = ncclCommGetAsyncError(s->nc, &ar);
    r = q != ncclSuccess ? q : ar;
  }
  if (r != ncclSuccess) ns_fail(s, what, ncclGetErrorString(r));
}

static void ns_cuda(nccl_sync *s, cudaError_t e, const char *what) {
  if (e != cudaSuccess) ns_fail(s, what, cudaGetErrorString(e));
}

int nccl_sync_version(void) {
  int v = 0;
  ncclGetVersion(&v);
  return v;
}

nccl_sync *nccl_sync_new(const comm *c, struct model *m, size_t bucket_floats) {
  cuda_ctx *ctx = model_cuda_ctx(m);
  POLLEN_ASSERT(ctx != NULL); /* model_use_cuda first */
  nccl_sync *s = xcalloc(1, sizeof *s);
  size_t n = m->n_params;
  s->c = c, s->grads = model_live_grads(m), s->n = n, s->compute = ctx->stream;
  s->bucket = bucket_floats ? bucket_floats : (n ? n : 1);
  s->n_buckets = (int)((n + s->bucket - 1) / s->bucket);
  s->next = -1;
  ns_cuda(s, cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "stream");
  ns_cuda(s, cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming), "event");
  ns_cuda(s, cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming), "event");

  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (c->rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) ns_fail(s, "ncclGetUniqueId", ncclGetErrorString(r));
  }
  comm_bcast(c, &id, sizeof id, 0);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0; /* every wait is ours, with a deadline */
  ncclResult_t r = ncclCommInitRankConfig(&s->nc, c->world, id, c->rank, &cfg);
  if (r != ncclSuccess && r != ncclInProgress) {
    log_warn("rank %d (%s): NCCL communicator: %s (two ranks on one GPU? NCCL needs one GPU "
             "per rank)", c->rank, c->host, ncclGetErrorString(r));
    ns_fail(s, "ncclCommInitRankConfig", ncclGetErrorString(r));
  }
  ns_settle(s, r, "communicator setup");
  return s;
}

void nccl_sync_free(nccl_sync *s) {
  if (!s) return;
  if (s->nc) {
    /* Finalize flushes our queued work; then destroy. Both waited with the watchdog. */
    ns_settle(s, ncclCommFinalize(s->nc), "finalize");
    ncclCommDestroy(s->nc);
  }
  cudaEventDestroy(s->ready);
  cudaEventDestroy(s->done);
  cudaStreamDestroy(s->stream);
  free(s);
}

void nccl_sync_begin(nccl_sync *s) { s->next = s->n_buckets - 1; }

static void ns_start(nccl_sync *s, int b) {
  size_t lo = (size_t)b * s->bucket, hi = lo + s->bucket < s->n ? lo + s->bucket : s->n;
  ncclResult_t r = ncclAllReduce(s->grads + lo, s->grads + lo, hi - lo, ncclFloat32, ncclAvg,
                                 s->nc, s->stream);
  ns_settle(s, r, "all-reduce");
}

/* The buckets about to start see every gradient the compute stream has written so far. */
static void ns_fence(nccl_sync *s) {
  ns_cuda(s, cudaEventRecord(s->ready, s->compute), "event record");
  ns_cuda(s, cudaStreamWaitEvent(s->stream, s->ready, 0), "stream wait");
}

void nccl_sync_ready(nccl_sync *s, size_t lowest) {
  if (s->next < 0 || (size_t)s->next * s->bucket < lowest) return;
  ns_fence(s);
  while (s->next >= 0 && (size_t)s->next * s->bucket >= lowest) ns_start(s, s->next--);
}

double nccl_sync_finish(nccl_sync *s) {
  double t0 = time_now();
  if (s->next >= 0) {
    ns_fence(s);
    while (s->next >= 0) ns_start(s, s->next--);
  }
  ns_cuda(s, cudaEventRecord(s->done, s->stream), "event record");
  /* The watchdog: the buckets are done, or NCCL reports an error, or the deadline passes. */
  for (int spins = 0;; spins++) {
    cudaError_t e = cudaEventQuery(s->done);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) ns_fail(s, "all-reduce", cudaGetErrorString(e));
    ncclResult_t ar = ncclSuccess, q = ncclCommGetAsyncError(s->nc, &ar);
    if (q != ncclSuccess) ns_fail(s, "all-reduce", ncclGetErrorString(q));
    if (ar != ncclSuccess && ar != ncclInProgress) ns_fail(s, "all-reduce", ncclGetErrorString(ar));
    if (time_now() - t0 > ns_limit(s))
      ns_fail(s, "gradient all-reduce",
              "no progress before the deadline: a rank is dead or hung (see the other ranks' logs)");
    if (spins > 1000) usleep(50);
  }
  ns_cuda(s, cudaStreamWaitEvent(s->compute, s->done, 0), "stream wait");
  return time_now() - t0;
}

#else /* no CUDA in this build */

#define NS_NO_CUDA() die("NCCL gradient sync: this pollen was built without CUDA (cmake -DPOLLEN_CUDA=ON)")

nccl_sync *nccl_sync_new(const comm *c, struct model *m, size_t bucket_floats) { NS_NO_CUDA(); }
void nccl_sync_free(nccl_sync *s) { (void)s; }
void nccl_sync_begin(nccl_sync *s) { NS_NO_CUDA(); }
void nccl_sync_ready(nccl_sync *s, size_t lowest) { NS_NO_CUDA(); }
double nccl_sync_finish(nccl_sync *s) { NS_NO_CUDA(); }
int nccl_sync_version(void) { return 0; }

#endif
