/* status_server.c - the status socket's event loop (libuv, own thread) and the snapshot
 * the training thread publishes into. See status_server.h.
 *
 * Threads: the training thread only touches `mu`-guarded fields (job, workers, metrics ring)
 * and the atomic request bits; everything else belongs to the loop thread. Handlers never
 * block: they copy the snapshot under the mutex and build the reply outside it.
 * Defences: bounded lines, an idle timer per client (no complete line within timeout_ms:
 * error and close), a cap on connections, a cap on bytes queued to a client that does not
 * read, and TCP clients must authenticate first.
 * Files: status.sock and status.token are removed at stop and by an atexit handler on every
 * exit() of the process (die() included), each only while it is still the file we made. */
#include "daemon/status_server.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/core.h"

#define SOCK_NAME "status.sock"
#define TOKEN_NAME "status.token"
#define TOKEN_HEX 32

typedef struct conn conn;

struct status_server {
  /* Shared with the training thread. */
  pthread_mutex_t mu;
  job_status job;
  worker_status *workers;
  int n_workers, cap_workers;
  metric_point *ring; /* STATUSP_METRICS_MAX slots */
  int ring_head, ring_n;
  atomic_int req_flags;

  /* Set before the thread starts, read-only afterwards. */
  char *job_dir;
  int dirfd;
  status_server_opts opts;
  char token[STATUSP_MAX_TOKEN + 1];
  size_t token_len;
  double progress_time;      /* unix seconds of the last step or change of state (under mu) */
  int has_tcp, tcp_port;
  dev_t sock_dev, token_dev;
  ino_t sock_ino, token_ino;
  pid_t pid;                 /* the process that made the files (a forked child must not remove them) */
  status_server *live_next;  /* in `live`, guarded by live_mu */
  pthread_t thread;

  /* Loop thread only. */
  uv_loop_t loop;
  uv_pipe_t unix_srv;
  uv_tcp_t tcp_srv;
  uv_async_t wake;
  conn *conns;
  int n_conns;
  int accepted_since_reap;
  worker_status *lw;
  int cap_lw;
  metric_point *lm;
  char readbuf[65536];
};

struct conn {
  union {
    uv_handle_t h;
    uv_stream_t s;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } io;
  uv_timer_t idle, sub;
  status_server *srv;
  conn *prev, *next;
  char *buf;
  size_t len, cap;
  int is_tcp, authed, http, http_head, subscribed;
  int finishing; /* reply queued, shutting down; no more requests read */
  int shut_done, peer_done; /* our FIN sent; the client's EOF (or error) seen */
  int closing;   /* handles being closed; freed when all three are */
  int open_handles;
};

typedef struct {
  uv_write_t req;
  char *data;
} write_req;

/* sun_path holds 108 bytes. A longer JOB_DIR is reached through /proc/self/fd/DIRFD, which
 * names the same directory in a few bytes; dirfd must stay open across bind/connect. */
static int unix_addr(const char *dir, int dirfd, const char *name, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  int n = snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", dir, name);
  if (n > 0 && (size_t)n < sizeof a->sun_path) return 0;
  n = snprintf(a->sun_path, sizeof a->sun_path, "/proc/self/fd/%d/%s", dirfd, name);
  return (n > 0 && (size_t)n < sizeof a->sun_path) ? 0 : -1;
}

int status_server_connect(const char *job_dir) {
  int dirfd = open(job_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return -1;
  struct sockaddr_un a;
  int fd = -1, err = ENAMETOOLONG;
  if (unix_addr(job_dir, dirfd, SOCK_NAME, &a) == 0) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    err = errno;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  close(dirfd);
  if (fd < 0) errno = err;
  return fd;
}

/* ---- snapshot, training side ---- */

void status_server_publish(status_server *srv, const job_status *job, const worker_status *w,
                           int n) {
  if (n < 0) n = 0;
  pthread_mutex_lock(&srv->mu);
  if (strcmp(srv->job.state, job->state) || srv->job.last_step_time != job->last_step_time)
    srv->progress_time = time_unix();
  srv->job = *job;
  if (n > srv->cap_workers) {
    srv->workers = xrealloc(srv->workers, (size_t)n * sizeof *w);
    srv->cap_workers = n;
  }
  if (n) memcpy(srv->workers, w, (size_t)n * sizeof *w);
  srv->n_workers = n;
  pthread_mutex_unlock(&srv->mu);
}

void status_server_push_metric(status_server *srv, const metric_point *p) {
  pthread_mutex_lock(&srv->mu);
  srv->ring[srv->ring_head] = *p;
  srv->ring_head = (srv->ring_head + 1) % STATUSP_METRICS_MAX;
  if (srv->ring_n < STATUSP_METRICS_MAX) srv->ring_n++;
  pthread_mutex_unlock(&srv->mu);
}

int status_server_poll_requests(status_server *srv) {
  if (atomic_load_explicit(&srv->req_flags, memory_order_relaxed) == 0) return 0;
  return atomic_exchange(&srv->req_flags, 0);
}

int status_server_tcp_port(const status_server *srv) { return srv->has_tcp ? srv->tcp_port : -1; }

/* ---- snapshot, loop side ---- */

static void snap_job(status_server *srv, job_status *out) {
  pthread_mutex_lock(&srv->mu);
  *out = srv->job;
  pthread_mutex_unlock(&srv->mu);
}

static int snap_workers(status_server *srv, job_status *job) {
  pthread_mutex_lock(&srv->mu);
  int n = srv->n_workers;
  if (n > srv->cap_lw) {
    srv->lw = xrealloc(srv->lw, (size_t)n * sizeof *srv->lw);
    srv->cap_lw = n;
  }
  if (n) memcpy(srv->lw, srv->workers, (size_t)n * sizeof *srv->lw);
  if (job) *job = srv->job;
  pthread_mutex_unlock(&srv->mu);
  return n;
}

static int snap_metrics(status_server *srv, int last) {
  pthread_mutex_lock(&srv->mu);
  int n = srv->ring_n < last ? srv->ring_n : last;
  int start = (srv->ring_head - n + STATUSP_METRICS_MAX) % STATUSP_METRICS_MAX;
  for (int i = 0; i < n; i++) srv->lm[i] = srv->ring[(start + i) % STATUSP_METRICS_MAX];
  pthread_mutex_unlock(&srv->mu);
  return n;
}

/* ---- connections ---- */

static void on_conn_handle_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (--c->open_handles > 0) return;
  free(c->buf);
  free(c);
}

static void conn_close(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  status_server *srv = c->srv;
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  srv->n_conns--;
  c->open_handles = 3;
  uv_close(&c->io.h, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->idle, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->sub, on_conn_handle_closed);
}

static void on_write(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  conn *c = req->handle->data; /* still alive: write callbacks run before close callbacks */
  free(w->data);
  free(w);
  if (status < 0) conn_close(c);
}

/* Queues `data` (malloc'd, taken over) to the client. A client that lets replies pile up
 * (a subscriber that never reads) is dropped rather than buffered without bound. */
static void conn_send(conn *c, char *data, size_t n) {
  if (c->closing || !data) {
    free(data);
    if (!data) conn_close(c);
    return;
  }
  if (uv_stream_get_write_queue_size(&c->io.s) > c->srv->opts.max_write_queue) {
    free(data);
    conn_close(c);
    return;
  }
  write_req *w = malloc(sizeof *w);
  if (!w) {
    free(data);
    conn_close(c);
    return;
  }
  w->data = data;
  uv_buf_t b = uv_buf_init(data, (unsigned)n);
  if (uv_write(&w->req, &c->io.s, &b, 1, on_write) != 0) {
    free(data);
    free(w);
    conn_close(c);
  }
}

static void conn_send_line(conn *c, char *line) { conn_send(c, line, line ? strlen(line) : 0); }

static void restart_idle(conn *c);

/* An HTTP client is closed only once it has closed too (or the idle timer fires): closing
 * with its unread request body still arriving would reset the connection and could destroy
 * the answer before the client reads it. */
static void on_shutdown(uv_shutdown_t *req, int status) {
  conn *c = req->handle->data;
  free(req);
  c->shut_done = 1;
  if (!c->http || c->peer_done || status < 0) conn_close(c);
}

/* After the queued replies go out, close. The idle timer still bounds how long that takes. */
static void conn_finish(conn *c) {
  if (c->closing || c->finishing) return;
  c->finishing = 1;
  if (!c->http) uv_read_stop(&c->io.s); /* HTTP: read on, and drop, what the client still sends */
  uv_timer_stop(&c->sub);
  restart_idle(c); /* bounds the shutdown of a client that does not read */
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req || uv_shutdown(req, &c->io.s, on_shutdown) != 0) {
    free(req);
    conn_close(c);
  }
}

static void conn_error(conn *c, statusp_err e, const char *msg, int close_after) {
  conn_send_line(c, statusp_reply_error(e, msg));
  if (close_after) conn_finish(c);
}

static void on_idle(uv_timer_t *t);

static void restart_idle(conn *c) {
  uv_timer_start(&c->idle, on_idle, (uint64_t)c->srv->opts.timeout_ms, 0);
}

static void on_idle(uv_timer_t *t) {
  conn *c = t->data;
  if (c->finishing || c->http) {
    conn_close(c);
    return;
  }
  char msg[96];
  snprintf(msg, sizeof msg, "no complete request line within %d ms", c->srv->opts.timeout_ms);
  conn_error(c, STATUSP_E_TIMEOUT, msg, 1);
}

static void on_sub_tick(uv_timer_t *t) {
  conn *c = t->data;
  job_status j;
  snap_job(c->srv, &j);
  conn_send_line(c, statusp_reply_status(&j, time_unix(), 1));
}

static int state_is(const char *state, const char *const *names) {
  for (; *names; names++)
    if (!strncmp(state, *names, 16)) return 1;
  return 0;
}

static void handle_request(conn *c, const statusp_request *r) {
  status_server *srv = c->srv;
  job_status j;
  switch (r->cmd) {
    case STATUSP_CMD_STATUS:
      snap_job(srv, &j);
      conn_send_line(c, statusp_reply_status(&j, time_unix(), 0));
      break;
    case STATUSP_CMD_WORKERS: {
      int n = snap_workers(srv, NULL);
      conn_send_line(c, statusp_reply_workers(srv->lw, n, time_unix()));
      break;
    }
    case STATUSP_CMD_METRICS: {
      int n = snap_metrics(srv, r->last);
      conn_send_line(c, statusp_reply_metrics(srv->lm, n));
      break;
    }
    case STATUSP_CMD_CHECKPOINT:
    case STATUSP_CMD_STOP: {
      static const char *const ended[] = {"finished", "failed", NULL};
      static const char *const no_ckpt[] = {"finished", "failed", "stopping", NULL};
      snap_job(srv, &j);
      int stop = r->cmd == STATUSP_CMD_STOP;
      int accepted = !state_is(j.state, stop ? ended : no_ckpt);
      if (accepted) atomic_fetch_or(&srv->req_flags, stop ? STATUS_REQ_STOP : STATUS_REQ_CHECKPOINT);
      conn_send_line(c, statusp_reply_accepted(r->cmd, accepted, j.state));
      break;
    }
    case STATUSP_CMD_SUBSCRIBE:
      c->subscribed = 1;
      uv_timer_stop(&c->idle); /* a subscriber only listens */
      conn_send_line(c, statusp_reply_ok(r->cmd, r->interval_s));
      on_sub_tick(&c->sub);
      uv_timer_start(&c->sub, on_sub_tick, (uint64_t)(r->interval_s * 1000),
                     (uint64_t)(r->interval_s * 1000));
      break;
    case STATUSP_CMD_UNSUBSCRIBE:
      c->subscribed = 0;
      uv_timer_stop(&c->sub);
      restart_idle(c);
      conn_send_line(c, statusp_reply_ok(r->cmd, 0));
      break;
    case STATUSP_CMD_AUTH: /* the Unix socket is already owner-only; TCP handled before */
      conn_send_line(c, statusp_reply_ok(r->cmd, 0));
      break;
    default:
      conn_error(c, STATUSP_E_INTERNAL, "unhandled command", 0);
  }
}

/* True when a line the parser refused is still an object with "cmd":"auth" (the parser
 * forgets the command on a field error, e.g. an empty "token"): that is a failed auth, not a
 * missing one. */
static int is_auth_attempt(const char *line, size_t n) {
  cJSON *root = cJSON_ParseWithLength(line, n);
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
  int yes = cJSON_IsObject(root) && cJSON_IsString(cmd) && !strcmp(cmd->valuestring, "auth");
  cJSON_Delete(root);
  return yes;
}

static void handle_line(conn *c, char *line, size_t n) {
  if (n && line[n - 1] == '\r') n--;
  if (n == 0) return; /* blank lines are ignored */
  if (!c->subscribed) restart_idle(c);
  statusp_request req;
  char msg[160];
  statusp_err e = statusp_parse_request(line, n, &req, msg, sizeof msg);
  if (c->is_tcp && !c->authed) {
    /* Before auth a TCP client learns nothing but "authenticate"; an auth that does not carry
     * the right token (wrong, empty or malformed) has failed. */
    if (e != STATUSP_OK ? !is_auth_attempt(line, n) : req.cmd != STATUSP_CMD_AUTH) {
      conn_error(c, STATUSP_E_AUTH_REQUIRED,
                 "send {\"cmd\":\"auth\",\"token\":\"...\"} first (token: the job folder's "
                 "status.token)", 1);
      return;
    }
    if (e != STATUSP_OK ||
        !statusp_token_equal(req.token, req.token_len, c->srv->token, c->srv->token_len)) {
      conn_error(c, STATUSP_E_AUTH_FAILED,
                 "wrong token (send the one in the job folder's status.token)", 1);
      return;
    }
    c->authed = 1;
  }
  if (e != STATUSP_OK) {
    conn_error(c, e, msg, e == STATUSP_E_LINE_TOO_LONG);
    return;
  }
  handle_request(c, &req);
}

static void handle_http(conn *c, size_t head_len) {
  statusp_http_request hr;
  int code = statusp_http_parse(c->buf, head_len, &hr);
  char *body = NULL;
  if (code == 0 && hr.is_health) {
    /* No token: it reveals only whether training moves. */
    char why[160];
    pthread_mutex_lock(&c->srv->mu);
    code = statusp_health(&c->srv->job, c->srv->progress_time, time_unix(), c->srv->opts.health_stall_s, why,
                          sizeof why);
    pthread_mutex_unlock(&c->srv->mu);
    if (code != 200) strcat(why, "\n");
    body = strdup(code == 200 ? "ok\n" : why);
    if (!body) code = 500;
  } else if (code == 0) {
    if (hr.has_token && statusp_token_equal(hr.token, hr.token_len, c->srv->token, c->srv->token_len)) {
      job_status j;
      int n = snap_workers(c->srv, &j);
      body = statusp_prometheus(&j, c->srv->lw, n, time_unix());
      code = body ? 200 : 500;
    } else {
      code = 401;
    }
  }
  const char *reason = code == 200   ? "OK"
                       : code == 401 ? "Unauthorized"
                       : code == 404 ? "Not Found"
                       : code == 405 ? "Method Not Allowed"
                       : code == 431 ? "Request Header Fields Too Large"
                       : code == 500 ? "Internal Server Error"
                       : code == 503 ? "Service Unavailable"
                                     : "Bad Request";
  if (!body) {
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%d %s%s\n", code, reason,
             code == 401   ? ": send Authorization: Bearer <JOB_DIR/status.token>"
             : code == 405 ? ": only GET /metrics and GET /healthz are served"
                           : "");
    body = strdup(tmp);
  }
  size_t bn = body ? strlen(body) : 0;
  size_t cap = bn + 320;
  char *resp = malloc(cap);
  if (resp) {
    int h = snprintf(resp, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     code, reason, bn,
                     code == 401   ? "WWW-Authenticate: Bearer\r\n"
                     : code == 405 ? "Allow: GET\r\n"
                                   : "");
    if (!c->http_head) memcpy(resp + h, body, bn); /* a HEAD answer is the head alone */
    conn_send(c, resp, (size_t)h + (c->http_head ? 0 : bn));
  }
  free(body);
  conn_finish(c);
}

/* Length of the HTTP method that starts b ("METHOD "), 0 while b may still become one, -1
 * when it is not one. A JSON request starts with '{', never with a capital letter. */
static int http_method_len(const char *b, size_t n) {
  size_t i = 0;
  while (i < n && i < 16 && b[i] >= 'A' && b[i] <= 'Z') i++;
  if (i == n && n < 16) return 0;
  return i > 0 && i < n && b[i] == ' ' ? (int)i : -1;
}

static void process(conn *c) {
  if (c->is_tcp && !c->authed && !c->http) {
    size_t skip = 0; /* blank lines before a request line are ignored either way */
    while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n')) skip++;
    if (skip) memmove(c->buf, c->buf + skip, c->len - skip);
    c->len -= skip;
    if (c->len == 0) return;
    int m = http_method_len(c->buf, c->len);
    if (m == 0) return; /* may yet be HTTP */
    if (m > 0) {
      c->http = 1;
      c->http_head = m == 4 && !memcmp(c->buf, "HEAD", 4);
    }
  }
  if (c->http) {
    for (size_t i = 0; i < c->len; i++) {
      if (c->buf[i] != '\n') continue;
      if ((i >= 1 && c->buf[i - 1] == '\n') || (i >= 2 && c->buf[i - 1] == '\r' && c->buf[i - 2] == '\n')) {
        handle_http(c, i + 1);
        return;
      }
    }
    if (c->len > STATUSP_HTTP_MAX_HEAD) handle_http(c, c->len);
    return;
  }
  size_t off = 0;
  while (!c->closing && !c->finishing) {
    char *nl = memchr(c->buf + off, '\n', c->len - off);
    if (!nl) break;
    size_t n = (size_t)(nl - (c->buf + off));
    handle_line(c, c->buf + off, n);
    off += n + 1;
  }
  if (c->closing || c->finishing) return;
  memmove(c->buf, c->buf + off, c->len - off);
  c->len -= off;
  if (c->len > STATUSP_MAX_LINE) {
    char msg[64];
    snprintf(msg, sizeof msg, "request line is over %d bytes", STATUSP_MAX_LINE);
    conn_error(c, STATUSP_E_LINE_TOO_LONG, msg, 1);
  } else if (c->len == 0 && c->cap > 4096) {
    free(c->buf); /* do not keep a large buffer for an idle client */
    c->buf = NULL;
    c->cap = 0;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* One buffer for the whole loop: on_read consumes it before the next read. */
  status_server *srv = ((conn *)h->data)->srv;
  *buf = uv_buf_init(srv->readbuf, sizeof srv->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn *c = s->data;
  if (c->closing) return;
  if (c->finishing) { /* only HTTP clients are still read: drop the data, close on their EOF */
    if (nread < 0) {
      c->peer_done = 1;
      if (c->shut_done) conn_close(c);
    }
    return;
  }
  if (nread < 0) c->peer_done = 1;
  if (nread == UV_EOF) {
    /* A client that wrote its request and half-closed still gets its answers. */
    if (c->len && !c->http) {
      handle_line(c, c->buf, c->len);
      c->len = 0;
    }
    conn_finish(c);
    return;
  }
  if (nread < 0) {
    conn_close(c);
    return;
  }
  size_t n = (size_t)nread;
  if (c->len + n > c->cap) {
    size_t cap = c->len + n + 1024;
    char *b = realloc(c->buf, cap);
    if (!b) {
      conn_close(c);
      return;
    }
    c->buf = b;
    c->cap = cap;
  }
  memcpy(c->buf + c->len, buf->base, n);
  c->len += n;
  process(c);
}

/* Closes the connections whose client has gone (EOF or reset) and left nothing to answer.
 * One accept pass takes the whole backlog before any of those EOFs is read, so after a burst
 * of connect+close the cap would count hundreds of dead clients and refuse a live one. */
static void reap_departed(status_server *srv) {
  for (conn *c = srv->conns, *next; c; c = next) {
    next = c->next;
    uv_os_fd_t fd;
    char b;
    if (c->len || uv_stream_get_write_queue_size(&c->io.s) || uv_fileno(&c->io.h, &fd) != 0)
      continue;
    ssize_t k = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
      conn_close(c);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  status_server *srv = server->data;
  if (status < 0) return;
  conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = srv;
  c->is_tcp = server->type == UV_TCP;
  int rc = c->is_tcp ? uv_tcp_init(&srv->loop, &c->io.tcp) : uv_pipe_init(&srv->loop, &c->io.pipe, 0);
  if (rc != 0) {
    free(c);
    return;
  }
  c->io.h.data = c;
  uv_timer_init(&srv->loop, &c->idle);
  uv_timer_init(&srv->loop, &c->sub);
  c->idle.data = c->sub.data = c;
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  srv->n_conns++;
  if (uv_accept(server, &c->io.s) != 0) {
    conn_close(c);
    return;
  }
  if (!c->is_tcp) {
    /* Defence in depth behind the 0600 mode (say someone chmods the socket): only the job's
     * owner (or root) is served on the Unix socket. */
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (uv_fileno(&c->io.h, &fd) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
      conn_close(c);
      return;
    }
  }
  restart_idle(c);
  /* Reaping costs a peek per connection; doing it at most once per max_conns/4 accepts keeps
   * that a few syscalls per accept even when every slot is really taken. */
  srv->accepted_since_reap++;
  if (srv->n_conns > srv->opts.max_conns &&
      srv->accepted_since_reap > srv->opts.max_conns / 4) {
    srv->accepted_since_reap = 0;
    reap_departed(srv);
    if (c->closing) return; /* this one had gone too */
  }
  if (srv->n_conns > srv->opts.max_conns) {
    char msg[96];
    snprintf(msg, sizeof msg, "too many status connections (%d); try again later",
             srv->opts.max_conns);
    conn_error(c, STATUSP_E_BUSY, msg, 1);
    return;
  }
  if (uv_read_start(&c->io.s, on_alloc, on_read) != 0) conn_close(c);
}

/* ---- lifecycle ---- */

static void on_wake(uv_async_t *a) {
  status_server *srv = a->data;
  uv_close((uv_handle_t *)&srv->unix_srv, NULL);
  if (srv->has_tcp) uv_close((uv_handle_t *)&srv->tcp_srv, NULL);
  uv_close((uv_handle_t *)&srv->wake, NULL);
  while (srv->conns) conn_close(srv->conns);
}

static void *loop_main(void *arg) {
  status_server *srv = arg;
  pthread_setname_np(pthread_self(), "pollen-status"); /* for top -H and the benchmark */
  uv_run(&srv->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Removes NAME only while it is still the file we made (a newer job may have replaced it). */
static void remove_ours(int dirfd, const char *name, dev_t dev, ino_t ino) {
  struct stat st;
  if (ino && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == ino &&
      st.st_dev == dev)
    unlinkat(dirfd, name, 0);
}

static void remove_our_files(status_server *srv) {
  remove_ours(srv->dirfd, SOCK_NAME, srv->sock_dev, srv->sock_ino);
  remove_ours(srv->dirfd, TOKEN_NAME, srv->token_dev, srv->token_ino);
}

/* Running servers, for the atexit handler: a die() anywhere after the start (or any other
 * exit()) must not leave status.sock behind for `pollen status` to find. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static status_server *live;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;

static void remove_live_files_at_exit(void) {
  pthread_mutex_lock(&live_mu);
  for (status_server *s = live; s; s = s->live_next)
    if (s->pid == getpid()) remove_our_files(s); /* not the files of the parent of a fork */
  pthread_mutex_unlock(&live_mu);
}

static void register_at_exit(void) {
  if (atexit(remove_live_files_at_exit) != 0)
    log_warn("status: cannot register exit cleanup; a failed job may leave status.sock behind");
}

static void live_add(status_server *srv) {
  pthread_once(&live_once, register_at_exit);
  pthread_mutex_lock(&live_mu);
  srv->live_next = live;
  live = srv;
  pthread_mutex_unlock(&live_mu);
}

static void live_remove(status_server *srv) {
  pthread_mutex_lock(&live_mu);
  for (status_server **p = &live; *p; p = &(*p)->live_next)
    if (*p == srv) {
      *p = srv->live_next;
      break;
    }
  pthread_mutex_unlock(&live_mu);
}

static void free_server(status_server *srv) {
  if (srv->dirfd >= 0) close(srv->dirfd);
  pthread_mutex_destroy(&srv->mu);
  free(srv->workers);
  free(srv->ring);
  free(srv->lw);
  free(srv->lm);
  free(srv->job_dir);
  free(srv);
}

/* Checks for an existing status.sock: a live one means another job; a dead one is removed. */
static int check_existing(status_server *srv, char *err, size_t cap) {
  struct stat st;
  if (fstatat(srv->dirfd, SOCK_NAME, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return 0;
    snprintf(err, cap, "%s/%s: %s", srv->job_dir, SOCK_NAME, strerror(errno));
    return -1;
  }
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, cap, "%s/%s exists and is not a socket; move it away and start again",
             srv->job_dir, SOCK_NAME);
    return -1;
  }
  int fd = status_server_connect(srv->job_dir);
  if (fd >= 0) {
    close(fd);
    snprintf(err, cap,
             "another pollen job is live in %s (its status socket answers); stop it with "
             "'pollen ctl %s stop' or use another job folder",
             srv->job_dir, srv->job_dir);
    return -1;
  }
  if (errno != ECONNREFUSED) {
    snprintf(err, cap, "cannot check %s/%s: %s", srv->job_dir, SOCK_NAME, strerror(errno));
    return -1;
  }
  /* Nobody listens: left by a killed job. */
  if (unlinkat(srv->dirfd, SOCK_NAME, 0) != 0 && errno != ENOENT) {
    snprintf(err, cap, "cannot remove stale %s/%s: %s", srv->job_dir, SOCK_NAME, strerror(errno));
    return -1;
  }
  log_info("status: replaced stale socket %s/%s", srv->job_dir, SOCK_NAME);
  return 0;
}

static int bind_unix(status_server *srv, char *err, size_t cap) {
  struct sockaddr_un a;
  if (unix_addr(srv->job_dir, srv->dirfd, SOCK_NAME, &a) != 0) {
    snprintf(err, cap, "job folder path too long for a socket: %s", srv->job_dir);
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, cap, "status socket: %s", strerror(errno));
    return -1;
  }
  /* The mode bind() gives the file comes from this inode, so there is no moment when the
   * socket exists with looser permissions. */
  if (fchmod(fd, 0600) != 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    snprintf(err, cap, "cannot create %s/%s: %s%s", srv->job_dir, SOCK_NAME, strerror(errno),
             errno == EADDRINUSE ? " (another job started at the same moment)" : "");
    close(fd);
    return -1;
  }
  struct stat st;
  if (fchmodat(srv->dirfd, SOCK_NAME, 0600, 0) != 0 ||
      fstatat(srv->dirfd, SOCK_NAME, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    snprintf(err, cap, "cannot set up %s/%s: %s", srv->job_dir, SOCK_NAME, strerror(errno));
    close(fd);
    return -1;
  }
  srv->sock_dev = st.st_dev;
  srv->sock_ino = st.st_ino;
  int rc = uv_pipe_init(&srv->loop, &srv->unix_srv, 0);
  if (rc == 0) rc = uv_pipe_open(&srv->unix_srv, fd);
  else close(fd);
  srv->unix_srv.data = srv;
  if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->unix_srv, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, cap, "cannot listen on %s/%s: %s", srv->job_dir, SOCK_NAME, uv_strerror(rc));
    return -1;
  }
  return 0;
}

static int random_token(status_server *srv, char *err, size_t cap) {
  unsigned char raw[TOKEN_HEX / 2];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
    snprintf(err, cap, "cannot read random bytes for the status token: %s", strerror(errno));
    return -1;
  }
  for (size_t i = 0; i < sizeof raw; i++) sprintf(srv->token + 2 * i, "%02x", raw[i]);
  srv->token_len = TOKEN_HEX;
  return 0;
}

/* The token a user keeps (a Kubernetes Secret mounted as a file): its first line, without the
 * line end, so Prometheus's credentials and every launch's token are one. */
static int read_token_file(status_server *srv, const char *path, char *err, size_t cap) {
  char line[STATUSP_MAX_TOKEN + 3] = "";
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, cap, "--status-token-file %s: %s; name a readable file holding the token", path, strerror(errno));
    return -1;
  }
  int got = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  size_t n = got ? strcspn(line, "\r\n") : 0;
  if (!statusp_token_valid(line, n)) {
    snprintf(err, cap,
             "--status-token-file %s: its first line is not a token of 16 to %d characters of A-Z a-z 0-9 - . _ ~ + / "
             "= (make one with: openssl rand -hex 16)",
             path, STATUSP_MAX_TOKEN);
    return -1;
  }
  memcpy(srv->token, line, n);
  srv->token[n] = 0;
  srv->token_len = n;
  return 0;
}

static int write_token(status_server *srv, char *err, size_t cap) {
  if (srv->opts.token_file ? read_token_file(srv, srv->opts.token_file, err, cap) : random_token(srv, err, cap))
    return -1;
  /* A fresh file each start (O_EXCL, no symlinks followed), owner-only from creation. */
  unlinkat(srv->dirfd, TOKEN_NAME, 0);
  int fd = openat(srv->dirfd, TOKEN_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  char line[STATUSP_MAX_TOKEN + 2];
  int len = snprintf(line, sizeof line, "%s\n", srv->token);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || write(fd, line, (size_t)len) != len) {
    snprintf(err, cap, "cannot write %s/%s: %s", srv->job_dir, TOKEN_NAME, strerror(errno));
    if (fd >= 0) {
      close(fd);
      unlinkat(srv->dirfd, TOKEN_NAME, 0); /* ours: just made with O_EXCL */
    }
    return -1;
  }
  srv->token_dev = st.st_dev;
  srv->token_ino = st.st_ino;
  close(fd);
  return 0;
}

static int listen_tcp(status_server *srv, const char *spec, char *err, size_t cap) {
  char host[128];
  int port;
  if (statusp_parse_address(spec, host, sizeof host, &port, err, cap) != 0) return -1;
  struct sockaddr_storage ss;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, cap, "--status-tcp %s: not a numeric address", spec);
    return -1;
  }
  int rc = uv_tcp_init(&srv->loop, &srv->tcp_srv);
  if (rc == 0) {
    srv->has_tcp = 1;
    srv->tcp_srv.data = srv;
    rc = uv_tcp_bind(&srv->tcp_srv, (struct sockaddr *)&ss, 0);
  }
  if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->tcp_srv, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, cap, "cannot listen for status on TCP %s: %s; pick another port", spec,
             uv_strerror(rc));
    return -1;
  }
  struct sockaddr_storage got;
  int len = sizeof got;
  uv_tcp_getsockname(&srv->tcp_srv, (struct sockaddr *)&got, &len);
  srv->tcp_port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                  : ((struct sockaddr_in *)&got)->sin_port);
  return write_token(srv, err, cap);
}

/* Each client is a descriptor. Under the common soft limit of 1024 a burst of clients hits
 * EMFILE before the cap, and libuv then drops every pending connection, live ones included. */
static void raise_fd_limit(int max_conns) {
  struct rlimit rl;
  rlim_t want = (rlim_t)max_conns + 1024; /* room for the job's own files too */
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
    return;
  rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want) ? want : rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

status_server *status_server_start_opts(const char *job_dir, const char *tcp_spec,
                                        const status_server_opts *opts, char *err,
                                        size_t err_cap) {
  char local_err[2];
  if (!err || err_cap == 0) {
    err = local_err;
    err_cap = sizeof local_err;
  }
  err[0] = 0;
  status_server *srv = xcalloc(1, sizeof *srv);
  pthread_mutex_init(&srv->mu, NULL);
  srv->opts = (status_server_opts){10000, 1024, 1 << 20, 0, NULL};
  if (opts) {
    if (opts->timeout_ms > 0) srv->opts.timeout_ms = opts->timeout_ms;
    if (opts->max_conns > 0) srv->opts.max_conns = opts->max_conns;
    if (opts->max_write_queue > 0) srv->opts.max_write_queue = opts->max_write_queue;
    if (opts->health_stall_s > 0) srv->opts.health_stall_s = opts->health_stall_s;
    srv->opts.token_file = opts->token_file; /* read before this returns */
  }
  raise_fd_limit(srv->opts.max_conns);
  srv->job_dir = xstrdup(job_dir);
  srv->ring = xcalloc(STATUSP_METRICS_MAX, sizeof *srv->ring);
  srv->lm = xcalloc(STATUSP_METRICS_MAX, sizeof *srv->lm);
  snprintf(srv->job.state, sizeof srv->job.state, "starting");
  srv->job.val_acc = NAN;
  srv->job.eta_s = -1;
  srv->job.last_ckpt_step = -1;
  srv->job.start_time = time_unix();
  srv->progress_time = srv->job.start_time;
  srv->dirfd = open(job_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (srv->dirfd < 0) {
    snprintf(err, err_cap, "job folder %s: %s; create it first", job_dir, strerror(errno));
    free_server(srv);
    return NULL;
  }
  if (check_existing(srv, err, err_cap) != 0) {
    free_server(srv);
    return NULL;
  }
  int rc = uv_loop_init(&srv->loop);
  if (rc != 0) {
    snprintf(err, err_cap, "status loop: %s", uv_strerror(rc));
    free_server(srv);
    return NULL;
  }
  if (bind_unix(srv, err, err_cap) != 0 ||
      (tcp_spec && listen_tcp(srv, tcp_spec, err, err_cap) != 0) ||
      (rc = uv_async_init(&srv->loop, &srv->wake, on_wake)) != 0)
    goto fail;
  srv->wake.data = srv;
  /* The loop thread takes no signals: SIGINT/SIGTERM stay with training, and a write to a
   * vanished client gives EPIPE instead of killing the job with SIGPIPE. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&srv->thread, NULL, loop_main, srv);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(err, err_cap, "cannot start the status thread: %s", strerror(rc));
    uv_close((uv_handle_t *)&srv->wake, NULL);
    goto fail;
  }
  srv->pid = getpid();
  live_add(srv);
  return srv;
fail:
  if (rc != 0 && !err[0]) snprintf(err, err_cap, "status loop: %s", uv_strerror(rc));
  uv_walk(&srv->loop, close_walk, NULL);
  uv_run(&srv->loop, UV_RUN_DEFAULT);
  uv_loop_close(&srv->loop);
  remove_our_files(srv);
  free_server(srv);
  return NULL;
}

status_server *status_server_start(const char *job_dir, const char *tcp_spec, const status_server_opts *opts) {
  char err[512] = "";
  status_server *srv = status_server_start_opts(job_dir, tcp_spec, opts, err, sizeof err);
  if (!srv) die("%s", err);
  return srv; /* the caller logs where it listens (status_server_tcp_port) */
}

void status_server_stop(status_server *srv) {
  if (!srv) return;
  uv_async_send(&srv->wake);
  pthread_join(srv->thread, NULL);
  uv_loop_close(&srv->loop);
  remove_our_files(srv);
  live_remove(srv);
  free_server(srv);
}
