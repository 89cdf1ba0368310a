/* status_server.h - the coordinator's status socket: a libuv loop on its own thread.
 *
 * The training thread never waits on a client: it publishes a snapshot of its state at step
 * boundaries (a copy under a mutex held for microseconds) and polls for checkpoint/stop
 * requests; the loop thread answers clients from the last snapshot. Wire format:
 * proto/status_proto.h. Not here: deciding what to publish or acting on requests (train).
 *
 * Listens on JOB_DIR/status.sock (mode 0600: only the job's owner connects) and, when asked,
 * on TCP (clients must first send the token from JOB_DIR/status.token, 0600). Both files go
 * at stop and at any exit() of the process while the server runs (die() included). */
#ifndef POLLEN_STATUS_SERVER_H
#define POLLEN_STATUS_SERVER_H

#include <stddef.h>

#include "proto/status_proto.h"

/* The published state; field meanings in proto/status_proto.h. */
typedef statusp_job job_status;
typedef statusp_worker worker_status;
typedef statusp_metric metric_point;

/* Bits returned by status_server_poll_requests(). */
enum { STATUS_REQ_CHECKPOINT = 1, STATUS_REQ_STOP = 2 };

typedef struct status_server status_server;

typedef struct {
  int timeout_ms;          /* close a client with no complete line for this long (10000) */
  int max_conns;           /* open clients beyond this get a "busy" error (1024); clients that
                              have already gone are not counted */
  size_t max_write_queue;  /* bytes queued to a client that does not read (1 MiB) */
  double health_stall_s;   /* GET /healthz answers 503 after this long training without a
                              step (0: never; statusp_health) */
  const char *token_file;  /* the TCP token from this file (a mounted secret, the same every
                              launch) instead of a random one; NULL: random */
} status_server_opts;

/* Starts serving JOB_DIR (which must exist); opts NULL: defaults. tcp_spec: NULL, "PORT" (127.0.0.1) or
 * "HOST:PORT" ("[::1]:PORT" for IPv6); port 0 picks a free one. Dies with a clear message
 * on a user error (another live job in JOB_DIR, path unusable, port taken). Raises the
 * process's soft open-file limit to max_conns + 1024 where the hard limit allows, so that
 * the cap, not EMFILE, decides; registers (once) an atexit handler that removes the files. */
status_server *status_server_start(const char *job_dir, const char *tcp_spec, const status_server_opts *opts);
/* The same, but on failure returns NULL and a one-line reason in err. */
status_server *status_server_start_opts(const char *job_dir, const char *tcp_spec,
                                        const status_server_opts *opts, char *err,
                                        size_t err_cap);
/* Training thread, each step: copies *job and n workers (cheap; never blocks on clients). */
void status_server_publish(status_server *srv, const job_status *job, const worker_status *w,
                           int n);
/* Training thread: appends one point to the metrics history (the newest
 * STATUSP_METRICS_MAX are kept). */
void status_server_push_metric(status_server *srv, const metric_point *p);
/* Training thread, at step boundaries: STATUS_REQ_* bits asked for since the last call. */
int status_server_poll_requests(status_server *srv);
/* The bound TCP port (useful with port 0), or -1 without TCP. */
int status_server_tcp_port(const status_server *srv);
/* Closes every connection, joins the thread, removes status.sock and status.token (each
 * only while it is still the file this server made). */
void status_server_stop(status_server *srv);

/* Client side, for `pollen status`: connects to JOB_DIR/status.sock. Returns a blocking
 * socket, or -1 with errno set (ENOENT or ECONNREFUSED: no job is serving there). */
int status_server_connect(const char *job_dir);

#endif
