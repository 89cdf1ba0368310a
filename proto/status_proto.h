/* status_proto.h - the status socket's wire format: newline-delimited JSON, version 1.
 *
 * One request per line (at most STATUSP_MAX_LINE bytes before the '\n'), one JSON object
 * per reply line. Everything a client sends is untrusted: the parser is strict (known fields
 * only, typed, bounded) and answers anything else with an error code from statusp_err.
 * Also here: the Prometheus text the TCP port serves on GET /metrics and the small HTTP
 * request-head parser in front of it. Not here: sockets and threads (daemon/status_server).
 * proto/README.md "Status protocol" documents every request, reply and error code.
 * Depends only on libc and cJSON, so the fuzz target builds it alone. */
#ifndef POLLEN_STATUS_PROTO_H
#define POLLEN_STATUS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "proto/launch_record.h"

/* Version 2 counts epochs from 1 ("epoch" in status and metrics replies, pollen_epoch); its
 * requests are version 1's, so a request saying "v":1 is answered too (with "v":2). */
#define STATUSP_VERSION 2
#define STATUSP_OLDEST_VERSION 1
#define STATUSP_MAX_LINE 65536     /* bytes in one request line, '\n' not counted */
#define STATUSP_MAX_TOKEN 128      /* bytes in an auth token */
#define STATUSP_METRICS_MAX 1000   /* points of history kept and served */
#define STATUSP_HTTP_MAX_HEAD 8192 /* bytes of an HTTP request head (GET /metrics) */

typedef enum {
  STATUSP_CMD_NONE = 0,
  STATUSP_CMD_STATUS,
  STATUSP_CMD_WORKERS,
  STATUSP_CMD_METRICS,
  STATUSP_CMD_CHECKPOINT,
  STATUSP_CMD_STOP,
  STATUSP_CMD_SUBSCRIBE,
  STATUSP_CMD_UNSUBSCRIBE,
  STATUSP_CMD_AUTH,
} statusp_cmd;

/* Error codes; on the wire as the string statusp_err_code() gives. */
typedef enum {
  STATUSP_OK = 0,
  STATUSP_E_LINE_TOO_LONG, /* "line_too_long": over STATUSP_MAX_LINE bytes; connection closed */
  STATUSP_E_BAD_JSON,      /* "bad_json": not one valid JSON value on the line */
  STATUSP_E_BAD_REQUEST,   /* "bad_request": valid JSON but not an object with a "cmd" string */
  STATUSP_E_UNKNOWN_CMD,   /* "unknown_cmd": "cmd" names no command */
  STATUSP_E_BAD_ARG,       /* "bad_arg": unknown field, wrong type or value out of range */
  STATUSP_E_VERSION,       /* "unsupported_version": "v" outside STATUSP_OLDEST_VERSION..STATUSP_VERSION */
  STATUSP_E_AUTH_REQUIRED, /* "auth_required": TCP client sent something before auth; closed */
  STATUSP_E_AUTH_FAILED,   /* "auth_failed": wrong token; connection closed */
  STATUSP_E_BUSY,          /* "busy": too many connections; connection closed */
  STATUSP_E_TIMEOUT,       /* "timeout": no complete line in time; connection closed */
  STATUSP_E_INTERNAL,      /* "internal": out of memory building a reply */
  STATUSP_E_COUNT_,
} statusp_err;

const char *statusp_err_code(statusp_err e);
const char *statusp_cmd_name(statusp_cmd c);

typedef struct {
  statusp_cmd cmd;
  double interval_s;            /* subscribe: seconds between pushes, [0.1, 3600], default 1 */
  int last;                     /* metrics: newest points wanted, [1, STATUSP_METRICS_MAX] */
  char token[STATUSP_MAX_TOKEN + 1]; /* auth */
  size_t token_len;
} statusp_request;

/* Parses one request line (without its '\n'; a trailing '\r' is allowed). Returns STATUSP_OK
 * and fills *req, or an error code with a one-line reason in msg (always NUL-terminated). */
statusp_err statusp_parse_request(const char *line, size_t len, statusp_request *req, char *msg,
                                  size_t msg_cap);

/* Upper bounds (seconds) of pollen_step_seconds' buckets; +Inf is step_count. */
#define STATUSP_STEP_BUCKETS 12

/* What the supervisor (`pollen launch`) told this launch (proto/launch_record.h). */
typedef struct {
  int present;        /* 0: not launched by pollen launch */
  int attempt, restarts, world;
  char hosts[512], excluded[512]; /* comma-separated */
  int has_failure;
  launch_failure failure; /* the previous launch's, when it failed */
} statusp_launch;
/* From a launch record (the POLLEN_LAUNCH variable's). */
void statusp_launch_from_record(statusp_launch *l, const launch_record *r);

/* What the training thread publishes; the replies are built from copies of these. */
typedef struct {
  char state[16]; /* starting training evaluating checkpointing stopping finished failed */
  char model[64];
  int epoch, epochs;               /* epoch: of the last step done, 1 .. epochs (plan_epoch_number) */
  int64_t step, total_steps;
  double loss, train_acc, val_acc; /* val_acc NaN when no evaluation yet */
  double lr, images_per_s, eta_s;  /* eta_s < 0 or NaN: unknown */
  int64_t last_ckpt_step;          /* < 0: no checkpoint yet */
  char last_ckpt_path[256];
  double last_ckpt_time;           /* unix seconds */
  int world_size;
  double start_time;               /* unix seconds */
  /* Prometheus counters and the step-time histogram, counted by the coordinator */
  int64_t images_total;            /* images trained in this launch, all ranks */
  double last_step_time;           /* unix seconds of the last step; 0: none yet */
  int64_t step_le[STATUSP_STEP_BUCKETS]; /* steps whose rank-0 time <= statusp_step_bounds[i] */
  int64_t step_count;
  double step_sum;                 /* seconds, over step_count steps */
  statusp_launch launch;
} statusp_job;

extern const double statusp_step_bounds[STATUSP_STEP_BUCKETS];
/* Counts one step of t seconds into j's histogram. */
void statusp_step_observe(statusp_job *j, double t);

typedef struct {
  int rank;
  char host[64];
  int pid;
  double step_time_s, images_per_s;
  double last_heartbeat; /* unix seconds */
  double comm_exposed_s; /* communication time not hidden behind compute, per step */
} statusp_worker;

typedef struct {
  int64_t step;
  int epoch;
  double loss, train_acc, val_acc, lr, images_per_s;
} statusp_metric;

/* Reply builders: a malloc'd line ending in '\n' (free() it), NULL when out of memory.
 * now: unix seconds, for uptime and heartbeat ages. Non-finite numbers become null. */
char *statusp_reply_error(statusp_err e, const char *msg);
char *statusp_reply_status(const statusp_job *job, double now, int push);
char *statusp_reply_workers(const statusp_worker *w, int n, double now);
char *statusp_reply_metrics(const statusp_metric *m, int n);
/* checkpoint / stop: accepted says whether the job will act on it. */
char *statusp_reply_accepted(statusp_cmd cmd, int accepted, const char *state);
/* auth, unsubscribe; subscribe with its interval. */
char *statusp_reply_ok(statusp_cmd cmd, double interval_s);

/* Prometheus text exposition format 0.0.4 (HELP and TYPE for every metric). */
char *statusp_prometheus(const statusp_job *job, const statusp_worker *w, int n, double now);

/* An HTTP request head (through the blank line). GET /metrics and GET /healthz are served. */
typedef struct {
  int is_metrics;                    /* GET /metrics */
  int is_health;                     /* GET /healthz: no token needed, reveals nothing */
  int has_token;                     /* an "Authorization: Bearer X" header was present */
  char token[STATUSP_MAX_TOKEN + 1];
  size_t token_len;
} statusp_http_request;
/* Returns 0 when the head is a well-formed GET /metrics or /healthz, else the HTTP status to answer
 * (400 malformed, 404 other path, 405 other method, 431 head too large). */
int statusp_http_parse(const char *head, size_t len, statusp_http_request *req);

/* GET /healthz's answer for job j at unix time now: 200, or 503 with a one-line reason in why
 * when it is training and has made no progress (a step, or a change of state) since
 * progress_time for more than stall_s seconds (0: never 503). Outside "training" (starting,
 * evaluating, checkpointing, ...) the clock does not run: those phases have no steps. */
int statusp_health(const statusp_job *j, double progress_time, double now, double stall_s, char *why,
                   size_t cap);

/* A token pollen accepts from a user (--status-token-file): 16..STATUSP_MAX_TOKEN characters
 * of A-Z a-z 0-9 - . _ ~ + / = (RFC 6750's Bearer token syntax). 1 if so, else 0. */
int statusp_token_valid(const char *s, size_t n);

/* Token comparison whose time depends only on the expected token's length. */
int statusp_token_equal(const char *given, size_t given_len, const char *expected,
                        size_t expected_len);

/* --status-tcp's [HOST:]PORT ("9100", "0.0.0.0:9100", "[::1]:9100"; HOST a numeric IPv4 or
 * IPv6 address, 127.0.0.1 when absent; PORT 0..65535, 0 meaning any free one) into host and
 * port. 0, or -1 with a one-line reason in err. */
int statusp_parse_address(const char *spec, char *host, size_t host_cap, int *port, char *err,
                          size_t errlen);

#endif
