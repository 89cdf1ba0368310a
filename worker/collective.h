/* collective.h - how ranks talk: Open MPI when launched by mpirun/srun, a world of one
 * otherwise (no MPI initialised, so `pollen train` runs without mpirun).
 *
 * Gradients are averaged with MPI_Iallreduce on buckets of the flat gradient buffer. The
 * engine's backward reports, layer by layer, the lowest parameter offset whose gradient is
 * final (parameters are laid out in forward order, so backward finishes them from the end
 * of the buffer towards the start); each bucket is started as soon as it is complete, and
 * its communication overlaps the rest of backward. Only the main thread calls MPI
 * (MPI_THREAD_FUNNELED). Waiting is a polling loop with a stall deadline, so a rank that
 * dies or hangs ends the job with a message naming it instead of a silent hang: at the
 * deadline rank 0 pings the others, and the others ping rank 0. */
#ifndef POLLEN_COLLECTIVE_H
#define POLLEN_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  int rank, world;
  int local_rank;       /* rank among the processes on this node */
  int mpi;              /* 1 when MPI is initialised */
  char host[64];
  double stall_timeout; /* seconds a collective may wait before the job is declared stuck */
} comm;

/* Initialises MPI when the environment shows an MPI launcher, else a world of one. */
void comm_init(comm *c, int *argc, char ***argv);
void comm_finalize(comm *c);
/* Ends every rank of the job with status (MPI_Abort when distributed, exit otherwise). */
void comm_abort(const comm *c, int status) __attribute__((noreturn));

/* Blocking helpers over the whole world; no-ops (or copies) in a world of one. All use the
 * stall deadline. */
void comm_bcast(const comm *c, void *buf, size_t bytes, int root);
void comm_allreduce_sum_f64(const comm *c, double *buf, int n);
void comm_allreduce_sum_f32(const comm *c, float *buf, size_t n);
void comm_allreduce_max_f64(const comm *c, double *buf, int n);
/* Gathers `bytes` from every rank into out (rank-major) on root; out may be NULL elsewhere. */
void comm_gather(const comm *c, const void *in, size_t bytes, void *out, int root);
void comm_barrier(const comm *c);
/* Point to point (tag: proto/stage_msg.h), bytes may exceed INT_MAX: sent in pieces. */
void comm_send(const comm *c, int to, int tag, const void *buf, size_t bytes);
void comm_recv(const comm *c, int from, int tag, void *buf, size_t bytes);
/* Receives a message of unknown length (at most cap bytes) and returns its length. */
size_t comm_recv_any_len(const comm *c, int from, int tag, void *buf, size_t cap);
/* Hostnames of every rank (world x 64 bytes), for messages naming a rank. */
const char *comm_host_of(const comm *c, int rank);

/* ---- bulk transfers (checkpoint replication) ----
 * On a communicator duplicated from MPI_COMM_WORLD at comm_init, so they never match or
 * delay a gradient or control message. Non-blocking: a transfer is `bytes` sent as pieces of
 * `chunk` bytes (a few in flight at a time), moved along by every MPI call of the rank (the
 * gradient all-reduces included) and by comm_xfer_test. MPI must be initialised. */
typedef struct comm_xfer comm_xfer;
/* buf must stay valid and unchanged until the transfer is done. */
comm_xfer *comm_xfer_send(const comm *c, int to, int tag, const void *buf, size_t bytes, size_t chunk);
comm_xfer *comm_xfer_recv(const comm *c, int from, int tag, void *buf, size_t bytes, size_t chunk);
/* Never blocks: posts the next pieces as earlier ones finish; 1 when all are done. */
int comm_xfer_test(comm_xfer *x);
/* Blocks until done, under the stall deadline (a dead peer ends the job, never a hang). */
void comm_xfer_wait(comm_xfer *x);
void comm_xfer_free(comm_xfer *x);
/* 1 when a bulk message with this tag from rank `from` waits to be received. */
int comm_bulk_probe(const comm *c, int from, int tag);

/* ---- gradient averaging in buckets ---- */
typedef struct grad_sync grad_sync;
/* grads: the flat buffer of n floats. bucket_floats: bucket size. overlap 0 waits until
 * backward is over and then reduces (for comparison). */
grad_sync *grad_sync_new(const comm *c, float *grads, size_t n, size_t bucket_floats, int overlap);
void grad_sync_free(grad_sync *g);
/* Called once per step before backward. */
void grad_sync_begin(grad_sync *g);
/* Every gradient at offset >= lowest is final: start the buckets that are now complete. */
void grad_sync_ready(grad_sync *g, size_t lowest);
/* Starts what is left, waits for all buckets and divides by the world size. Returns the
 * seconds spent waiting here (communication not hidden behind backward). */
double grad_sync_finish(grad_sync *g);

#endif
