/* collective.c - MPI (or a world of one) for the workers; see collective.h. */
#include "worker/collective.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"

static char *hosts; /* world x 64 */
static MPI_Comm bulk = MPI_COMM_NULL; /* comm_xfer's, apart from the training traffic */

/* Liveness probe. A collective that makes no progress past the stall deadline means a rank
 * stopped; every live rank is then waiting in a polling loop, where it answers pings
 * (PING_TAG) from any rank at once (PONG_TAG). Rank 0's deadline comes first: it pings every
 * other rank and names the silent ones. A stopped rank 0 cannot do that, so the others, whose
 * deadline comes 5 s later, ping rank 0 and name it when it stays silent. */
#define PING_TAG 7001
#define PONG_TAG 7002
#define ANSWER_WINDOW 3.0 /* seconds a live rank may take to answer a ping */

/* The payloads are constants, so sends in flight may share them and are never waited for: a
 * ping or pong only precedes the end of the job. */
static const int64_t ping_msg = 1, pong_msg = 2;

static void answer_pings(void) {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, PING_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return;
    int64_t ping;
    MPI_Recv(&ping, 1, MPI_INT64_T, st.MPI_SOURCE, PING_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Request r;
    MPI_Isend(&pong_msg, 1, MPI_INT64_T, st.MPI_SOURCE, PONG_TAG, MPI_COMM_WORLD, &r);
    MPI_Request_free(&r);
  }
}

/* Pings ranks lo..hi-1 (not this one) and waits up to ANSWER_WINDOW for their answers, still
 * answering pings itself (rank 0 and another rank may probe each other at the same time).
 * Sets alive[r] for each rank that answered; returns how many did. */
static int ping_ranks(const comm *c, int lo, int hi, char *alive) {
  int want = 0;
  for (int r = lo; r < hi; r++) {
    if (r == c->rank) continue;
    MPI_Request q;
    MPI_Isend(&ping_msg, 1, MPI_INT64_T, r, PING_TAG, MPI_COMM_WORLD, &q);
    MPI_Request_free(&q); /* a ping to a dead or cut-off rank may never complete */
    want++;
  }
  int answered = 0;
  double start = time_now();
  while (answered < want && time_now() - start < ANSWER_WINDOW) {
    answer_pings();
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, PONG_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag) {
      usleep(1000);
      continue;
    }
    int64_t pong;
    MPI_Recv(&pong, 1, MPI_INT64_T, st.MPI_SOURCE, PONG_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    int s = st.MPI_SOURCE;
    if (s >= lo && s < hi && s != c->rank && !alive[s]) alive[s] = 1, answered++;
  }
  return answered;
}

/* Rank 0, at its deadline: names the ranks that do not answer. */
static void name_stalled(const comm *c) {
  int n = c->world;
  char *alive = xcalloc((size_t)n, 1);
  int answered = ping_ranks(c, 1, n, alive);
  for (int r = 1; r < n; r++)
    if (!alive[r]) log_warn("rank %d on %s does not answer: it is dead, hung or cut off", r, hosts + 64 * r);
  if (answered == n - 1)
    log_warn("every rank answers and waits: the collective itself is stuck (network?)");
  free(alive);
}

/* Any other rank, at its deadline: 1 when rank 0 answers a ping. Rank 0 is then alive and
 * names the silent ranks itself; this rank keeps answering pings a little longer, so that
 * rank 0 can finish doing so before this rank's abort takes the job down. */
static int rank0_answers(const comm *c) {
  char alive = 0;
  if (!ping_ranks(c, 0, 1, &alive)) return 0;
  for (double start = time_now(); time_now() - start < ANSWER_WINDOW + 1.0; usleep(1000)) answer_pings();
  return 1;
}

static int launched_by_mpi(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
         getenv("PMI_SIZE");
}

void comm_init(comm *c, int *argc, char ***argv) {
  memset(c, 0, sizeof *c);
  c->world = 1;
  c->stall_timeout = 60.0;
  gethostname(c->host, sizeof c->host - 1);
  if (launched_by_mpi()) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (provided < MPI_THREAD_FUNNELED)
      die("this Open MPI does not provide MPI_THREAD_FUNNELED; install Debian's openmpi-bin");
    /* Errors come back to us (and are reported with the rank) instead of aborting blindly. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    c->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->world);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_free(&node);
    MPI_Comm_dup(MPI_COMM_WORLD, &bulk);
    MPI_Comm_set_errhandler(bulk, MPI_ERRORS_RETURN);
  }
  hosts = xcalloc((size_t)c->world, 64);
  memcpy(hosts + 64 * c->rank, c->host, 63);
  if (c->mpi) MPI_Allgather(c->host, 64, MPI_CHAR, hosts, 64, MPI_CHAR, MPI_COMM_WORLD);
}

const char *comm_host_of(const comm *c, int rank) {
  return (rank >= 0 && rank < c->world) ? hosts + 64 * rank : "?";
}

void comm_finalize(comm *c) {
  if (bulk != MPI_COMM_NULL) MPI_Comm_free(&bulk);
  if (c->mpi) MPI_Finalize();
  free(hosts);
  hosts = NULL;
  c->mpi = 0;
}

void comm_abort(const comm *c, int status) {
  fflush(stdout);
  fflush(stderr);
  if (c->mpi) MPI_Abort(MPI_COMM_WORLD, status);
  exit(status);
}

/* Polls a request until done or the stall deadline; on a stall, names the job as stuck. */
static void wait_request(const comm *c, MPI_Request *req, const char *what) {
  double start = time_now();
  int done = 0, spins = 0;
  while (!done) {
    int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      log_warn("rank %d (%s): %s failed: a peer rank died or its link broke", c->rank, c->host, what);
      comm_abort(c, EXIT_FAILED);
    }
    if (done) break;
    if (++spins > 1000) {
      usleep(50);
      if (spins % 256 == 0) answer_pings();
    }
    /* Rank 0 waits a little less than the others, so it is the one that reports. */
    double limit = c->stall_timeout + (c->rank == 0 ? 0.0 : 5.0);
    if (time_now() - start > limit) {
      if (c->rank != 0 && !rank0_answers(c)) {
        log_warn("rank %d (%s): %s made no progress for %.0f s; rank 0 (%s) did not answer for %.0f s: it is "
                 "stopped, hung or cut off; the job ends",
                 c->rank, c->host, what, limit, comm_host_of(c, 0), ANSWER_WINDOW);
        comm_abort(c, EXIT_FAILED);
      }
      log_warn("rank %d (%s): %s made no progress for %.0f s: a rank is dead or hung; ending the job",
               c->rank, c->host, what, limit);
      if (c->rank == 0) name_stalled(c);
      comm_abort(c, EXIT_FAILED);
    }
  }
}

void comm_bcast(const comm *c, void *buf, size_t bytes, int root) {
  if (!c->mpi) return;
  MPI_Request r;
  MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &r);
  wait_request(c, &r, "broadcast");
}

static void allreduce(const comm *c, void *buf, int n, MPI_Datatype t, MPI_Op op, const char *what) {
  if (!c->mpi) return;
  MPI_Request r;
  MPI_Iallreduce(MPI_IN_PLACE, buf, n, t, op, MPI_COMM_WORLD, &r);
  wait_request(c, &r, what);
}

void comm_allreduce_sum_f64(const comm *c, double *buf, int n) {
  allreduce(c, buf, n, MPI_DOUBLE, MPI_SUM, "all-reduce");
}
void comm_allreduce_max_f64(const comm *c, double *buf, int n) {
  allreduce(c, buf, n, MPI_DOUBLE, MPI_MAX, "all-reduce");
}
void comm_allreduce_sum_f32(const comm *c, float *buf, size_t n) {
  allreduce(c, buf, (int)n, MPI_FLOAT, MPI_SUM, "all-reduce");
}

void comm_gather(const comm *c, const void *in, size_t bytes, void *out, int root) {
  if (!c->mpi) {
    memcpy(out, in, bytes);
    return;
  }
  MPI_Request r;
  MPI_Igather(in, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &r);
  wait_request(c, &r, "gather");
}

void comm_barrier(const comm *c) {
  if (!c->mpi) return;
  MPI_Request r;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  wait_request(c, &r, "barrier");
}

#define PIECE ((size_t)1 << 30)

void comm_send(const comm *c, int to, int tag, const void *buf, size_t bytes) {
  const char *p = buf;
  do {
    size_t n = bytes < PIECE ? bytes : PIECE;
    MPI_Request r;
    MPI_Isend(p, (int)n, MPI_BYTE, to, tag, MPI_COMM_WORLD, &r);
    wait_request(c, &r, "send");
    p += n, bytes -= n;
  } while (bytes > 0);
}

void comm_recv(const comm *c, int from, int tag, void *buf, size_t bytes) {
  char *p = buf;
  do {
    size_t n = bytes < PIECE ? bytes : PIECE;
    MPI_Request r;
    MPI_Irecv(p, (int)n, MPI_BYTE, from, tag, MPI_COMM_WORLD, &r);
    wait_request(c, &r, "receive");
    p += n, bytes -= n;
  } while (bytes > 0);
}

size_t comm_recv_any_len(const comm *c, int from, int tag, void *buf, size_t cap) {
  MPI_Request r;
  MPI_Status st;
  MPI_Irecv(buf, (int)(cap < PIECE ? cap : PIECE), MPI_BYTE, from, tag, MPI_COMM_WORLD, &r);
  double start = time_now();
  int done = 0, spins = 0;
  while (!done) {
    if (MPI_Test(&r, &done, &st) != MPI_SUCCESS) {
      log_warn("rank %d (%s): receive from rank %d failed: it died or its link broke", c->rank, c->host, from);
      comm_abort(c, EXIT_FAILED);
    }
    if (done) break;
    usleep(50);
    if (++spins % 256 == 0) answer_pings(); /* or rank 0 would name this waiting rank as hung */
    if (time_now() - start > c->stall_timeout) {
      log_warn("rank %d (%s): no message from rank %d (%s) for %.0f s; ending the job", c->rank, c->host,
               from, comm_host_of(c, from), c->stall_timeout);
      comm_abort(c, EXIT_FAILED);
    }
  }
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  return (size_t)count;
}

/* ---- bulk transfers ---- */

#define XFER_WINDOW 4 /* pieces in flight: enough to keep a link busy, few requests */

struct comm_xfer {
  const comm *c;
  int peer, tag, sending;
  char *buf;
  size_t bytes, chunk, next; /* next: offset of the first piece not yet posted */
  MPI_Request req[XFER_WINDOW];
  int head, count; /* the posted pieces, oldest first, in a ring */
};

static comm_xfer *xfer_start(const comm *c, int peer, int tag, void *buf, size_t bytes, size_t chunk, int sending) {
  POLLEN_ASSERT(c->mpi && chunk > 0 && chunk <= PIECE);
  comm_xfer *x = xcalloc(1, sizeof *x);
  *x = (comm_xfer){.c = c, .peer = peer, .tag = tag, .sending = sending, .buf = buf, .bytes = bytes, .chunk = chunk};
  comm_xfer_test(x);
  return x;
}

comm_xfer *comm_xfer_send(const comm *c, int to, int tag, const void *buf, size_t bytes, size_t chunk) {
  return xfer_start(c, to, tag, (void *)buf, bytes, chunk, 1);
}

comm_xfer *comm_xfer_recv(const comm *c, int from, int tag, void *buf, size_t bytes, size_t chunk) {
  return xfer_start(c, from, tag, buf, bytes, chunk, 0);
}

static void xfer_post(comm_xfer *x) {
  while (x->count < XFER_WINDOW && x->next < x->bytes) {
    size_t n = x->bytes - x->next < x->chunk ? x->bytes - x->next : x->chunk;
    MPI_Request *r = &x->req[(x->head + x->count) % XFER_WINDOW];
    int rc = x->sending ? MPI_Isend(x->buf + x->next, (int)n, MPI_BYTE, x->peer, x->tag, bulk, r)
                        : MPI_Irecv(x->buf + x->next, (int)n, MPI_BYTE, x->peer, x->tag, bulk, r);
    if (rc != MPI_SUCCESS) {
      log_warn("rank %d (%s): checkpoint copy to/from rank %d failed to start", x->c->rank, x->c->host, x->peer);
      comm_abort(x->c, EXIT_FAILED);
    }
    x->next += n, x->count++;
  }
}

int comm_xfer_test(comm_xfer *x) {
  for (;;) {
    xfer_post(x);
    if (!x->count) return 1;
    int done = 0;
    if (MPI_Test(&x->req[x->head], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
      log_warn("rank %d (%s): checkpoint copy to/from rank %d failed: it died or its link broke", x->c->rank,
               x->c->host, x->peer);
      comm_abort(x->c, EXIT_FAILED);
    }
    if (!done) return 0;
    x->head = (x->head + 1) % XFER_WINDOW, x->count--;
  }
}

void comm_xfer_wait(comm_xfer *x) {
  while (!comm_xfer_test(x)) wait_request(x->c, &x->req[x->head], "checkpoint copy");
}

void comm_xfer_free(comm_xfer *x) {
  if (!x) return;
  /* Only finished transfers are freed (comm_xfer_wait first): a buffer in flight stays put. */
  POLLEN_ASSERT(x->count == 0);
  free(x);
}

int comm_bulk_probe(const comm *c, int from, int tag) {
  int flag = 0;
  if (MPI_Iprobe(from, tag, bulk, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
    log_warn("rank %d (%s): probing rank %d failed: it died or its link broke", c->rank, c->host, from);
    comm_abort(c, EXIT_FAILED);
  }
  return flag;
}

/* ---- buckets ---- */

struct grad_sync {
  const comm *c;
  float *grads;
  size_t n, bucket;
  int n_buckets, next; /* buckets are started from the last (highest offsets) down */
  int overlap;
  MPI_Request *req;
};

grad_sync *grad_sync_new(const comm *c, float *grads, size_t n, size_t bucket_floats, int overlap) {
  grad_sync *g = xcalloc(1, sizeof *g);
  g->c = c, g->grads = grads, g->n = n, g->overlap = overlap;
  g->bucket = bucket_floats ? bucket_floats : n;
  g->n_buckets = (int)((n + g->bucket - 1) / g->bucket);
  g->req = xcalloc((size_t)g->n_buckets, sizeof *g->req);
  return g;
}

void grad_sync_free(grad_sync *g) {
  if (!g) return;
  free(g->req);
  free(g);
}

void grad_sync_begin(grad_sync *g) { g->next = g->n_buckets - 1; }

static void start_bucket(grad_sync *g, int b) {
  size_t lo = (size_t)b * g->bucket, hi = lo + g->bucket < g->n ? lo + g->bucket : g->n;
  MPI_Iallreduce(MPI_IN_PLACE, g->grads + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                 &g->req[b]);
}

void grad_sync_ready(grad_sync *g, size_t lowest) {
  if (!g->c->mpi || !g->overlap) return;
  while (g->next >= 0 && (size_t)g->next * g->bucket >= lowest) start_bucket(g, g->next--);
  /* Open MPI progresses non-blocking collectives only inside MPI calls: nudge it. */
  if (g->next < g->n_buckets - 1) {
    int flag;
    MPI_Testall(g->n_buckets - 1 - g->next, g->req + g->next + 1, &flag, MPI_STATUSES_IGNORE);
  }
}

double grad_sync_finish(grad_sync *g) {
  if (!g->c->mpi) return 0.0;
  double t0 = time_now();
  while (g->next >= 0) start_bucket(g, g->next--);
  for (int b = g->n_buckets - 1; b >= 0; b--) wait_request(g->c, &g->req[b], "gradient all-reduce");
  float scale = 1.0f / (float)g->c->world;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < g->n; i++) g->grads[i] *= scale;
  return time_now() - t0;
}
