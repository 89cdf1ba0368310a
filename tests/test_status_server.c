/* test_status_server.c - drives the real status socket (daemon/status_server.c) with fake
 * published state: every request, subscribe pushes, stop through the socket, malformed and
 * oversized input, half-open clients, 500 concurrent clients, the connection cap, TCP
 * auth and GET /metrics, stale and live sockets, file modes, and another user's access.
 * The edges (issue 18): the cap after a burst of departed clients, HTTP methods other than
 * GET, an empty token, and the socket and token removed by exit() paths such as die().
 *
 * Also two helper modes (not run by ctest):
 *   test_status_server --serve JOB_DIR SECS   serve a fake training job (tests/test_status_cli.sh)
 *   test_status_server --bench N              status request latency over N requests */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/status_server.h"
#include "tests/check.h"


static void fake_job(job_status *j, int64_t step, const char *state) {
  memset(j, 0, sizeof *j);
  snprintf(j->state, sizeof j->state, "%s", state);
  snprintf(j->model, sizeof j->model, "mobilenet_v3_small");
  j->epoch = 2;
  j->epochs = 10;
  j->step = step;
  j->total_steps = 1000;
  j->loss = 0.5;
  j->train_acc = 0.8;
  j->val_acc = NAN;
  j->lr = 0.01;
  j->images_per_s = 512.5;
  j->eta_s = 60;
  j->last_ckpt_step = 100;
  snprintf(j->last_ckpt_path, sizeof j->last_ckpt_path, "checkpoints/step100.ckpt");
  j->last_ckpt_time = time_unix() - 5;
  j->world_size = 2;
  j->start_time = time_unix() - 30;
}

static void fake_workers(worker_status w[2]) {
  memset(w, 0, 2 * sizeof *w);
  for (int r = 0; r < 2; r++) {
    w[r].rank = r;
    snprintf(w[r].host, sizeof w[r].host, r ? "node\"1" : "node0");
    w[r].pid = 1000 + r;
    w[r].step_time_s = 0.25 + r;
    w[r].images_per_s = 256;
    w[r].last_heartbeat = time_unix() - 1;
    w[r].comm_exposed_s = 0.01;
  }
}

static void publish_fake(status_server *s, int64_t step, const char *state) {
  job_status j;
  worker_status w[2];
  fake_job(&j, step, state);
  fake_workers(w);
  status_server_publish(s, &j, w, 2);
}

/* ---- a small blocking client with a line buffer ---- */

typedef struct {
  int fd;
  char *buf;
  size_t len, cap;
  int eof;
} client;

static void cl_init(client *c, int fd) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
}

static void cl_close(client *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->buf);
  memset(c, 0, sizeof *c);
  c->fd = -1;
}

static client cl_unix(const char *dir) {
  client c;
  int fd = status_server_connect(dir);
  REQUIRE(fd >= 0, "connect to %s/status.sock: %s", dir, strerror(errno));
  cl_init(&c, fd);
  return c;
}

static client cl_tcp(int port) {
  client c;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "tcp connect: %s",
        strerror(errno));
  cl_init(&c, fd);
  return c;
}

static void cl_send(client *c, const char *data, size_t n) {
  while (n) {
    ssize_t k = send(c->fd, data, n, MSG_NOSIGNAL);
    REQUIRE(k > 0, "send: %s", strerror(errno));
    data += k;
    n -= (size_t)k;
  }
}

static void cl_sends(client *c, const char *s) { cl_send(c, s, strlen(s)); }

/* Next line (malloc'd, no '\n'), or NULL on EOF or after timeout_ms. */
static char *cl_line(client *c, int timeout_ms) {
  double deadline = time_unix() + timeout_ms / 1000.0;
  for (;;) {
    char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      char *line = xmalloc(n + 1);
      memcpy(line, c->buf, n);
      line[n] = 0;
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return line;
    }
    if (c->eof) return NULL;
    int left = (int)((deadline - time_unix()) * 1000);
    if (left <= 0) return NULL;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, left) <= 0) continue;
    if (c->cap - c->len < 65536) {
      c->cap = c->cap * 2 + 65536;
      c->buf = xrealloc(c->buf, c->cap);
    }
    ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (k <= 0) c->eof = 1;
    else c->len += (size_t)k;
  }
}

/* Reads everything until EOF (or timeout); returns it. For HTTP answers. */
static char *cl_all(client *c, int timeout_ms) {
  double deadline = time_unix() + timeout_ms / 1000.0;
  while (!c->eof && time_unix() < deadline) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0) continue;
    if (c->cap - c->len < 65536) {
      c->cap = c->cap * 2 + 65536;
      c->buf = xrealloc(c->buf, c->cap);
    }
    ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
    if (k <= 0) c->eof = 1;
    else c->len += (size_t)k;
  }
  REQUIRE(c->eof, "server did not close the HTTP connection");
  char *s = xmalloc(c->len + 1);
  memcpy(s, c->buf, c->len);
  s[c->len] = 0;
  return s;
}

/* True when the server has closed the connection (after whatever lines it sent). */
static int cl_closed_by_server(client *c, int timeout_ms) {
  char *l;
  while ((l = cl_line(c, timeout_ms))) free(l);
  return c->eof;
}

/* Sends one request, returns the parsed reply (caller frees). */
static cJSON *ask(client *c, const char *req) {
  cl_sends(c, req);
  char *line = cl_line(c, 5000);
  REQUIRE(line, "no reply to %s", req);
  cJSON *o = cJSON_Parse(line);
  REQUIRE(cJSON_IsObject(o), "reply to %s is not a JSON object: %s", req, line);
  free(line);
  return o;
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  REQUIRE(cJSON_IsNumber(v), "field %s missing or not a number", k);
  return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  REQUIRE(cJSON_IsString(v), "field %s missing or not a string", k);
  return v->valuestring;
}

static int is_true(const cJSON *o, const char *k) {
  return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Expects an error reply with this code. */
static void expect_error(client *c, const char *req, const char *code) {
  cJSON *o = ask(c, req);
  REQUIRE(!is_true(o, "ok"), "request %.60s should fail", req);
  REQUIRE(!strcmp(str(o, "code"), code), "request %.60s: code %s, wanted %s", req, str(o, "code"),
        code);
  REQUIRE(strlen(str(o, "message")) > 0, "error without a message");
  cJSON_Delete(o);
}

static char *mkjob(void) {
  char *d = xstrdup("/tmp/pollen-status-test-XXXXXX");
  REQUIRE(mkdtemp(d), "mkdtemp: %s", strerror(errno));
  return d;
}

static void rmjob(const char *d) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", d);
}

static status_server *start(const char *dir, const char *tcp, int timeout_ms, int max_conns) {
  status_server_opts o = {.timeout_ms = timeout_ms, .max_conns = max_conns};
  char err[512];
  status_server *s = status_server_start_opts(dir, tcp, &o, err, sizeof err);
  REQUIRE(s, "start in %s: %s", dir, err);
  return s;
}

/* ---- tests ---- */

static void test_requests(const char *dir, status_server *s) {
  for (int i = 0; i < 1500; i++) {
    metric_point p = {.step = i, .epoch = i / 300, .loss = 2.0 / (i + 1), .train_acc = 0.5,
                      .val_acc = NAN, .lr = 0.01, .images_per_s = 400};
    status_server_push_metric(s, &p);
  }
  client c = cl_unix(dir);
  cJSON *o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok") && num(o, "v") == 2, "status not ok");
  REQUIRE(!strcmp(str(o, "state"), "training"), "state %s", str(o, "state"));
  REQUIRE(!strcmp(str(o, "model"), "mobilenet_v3_small"), "model");
  REQUIRE(num(o, "step") == 123 && num(o, "total_steps") == 1000, "step");
  REQUIRE(num(o, "epoch") == 2 && num(o, "epochs") == 10, "epoch");
  REQUIRE(fabs(num(o, "loss") - 0.5) < 1e-12 && fabs(num(o, "lr") - 0.01) < 1e-12, "loss/lr");
  REQUIRE(cJSON_IsNull(cJSON_GetObjectItem(o, "val_acc")), "val_acc NaN must be null");
  REQUIRE(num(o, "uptime_s") >= 29 && num(o, "uptime_s") < 120, "uptime %g", num(o, "uptime_s"));
  REQUIRE(num(o, "world_size") == 2 && num(o, "eta_s") == 60, "world/eta");
  const cJSON *ck = cJSON_GetObjectItem(o, "last_checkpoint");
  REQUIRE(cJSON_IsObject(ck) && num(ck, "step") == 100 &&
            !strcmp(str(ck, "path"), "checkpoints/step100.ckpt"), "last_checkpoint");
  cJSON_Delete(o);

  o = ask(&c, "{\"cmd\":\"workers\",\"v\":1}\n"); /* a version-1 client is answered, in version 2 */
  REQUIRE(num(o, "v") == STATUSP_VERSION && STATUSP_VERSION == 2, "reply version %g", num(o, "v"));
  const cJSON *w = cJSON_GetObjectItem(o, "workers");
  REQUIRE(cJSON_GetArraySize(w) == 2, "2 workers");
  const cJSON *w1 = cJSON_GetArrayItem(w, 1);
  REQUIRE(num(w1, "rank") == 1 && !strcmp(str(w1, "host"), "node\"1") && num(w1, "pid") == 1001,
        "worker 1");
  REQUIRE(num(w1, "heartbeat_age_s") >= 0.9 && num(w1, "step_time_s") == 1.25, "worker 1 timings");
  cJSON_Delete(o);

  /* 1500 points pushed: the newest 1000 are kept, oldest first. */
  o = ask(&c, "{\"cmd\":\"metrics\"}\n");
  const cJSON *pts = cJSON_GetObjectItem(o, "points");
  REQUIRE(cJSON_GetArraySize(pts) == STATUSP_METRICS_MAX, "metrics size %d", cJSON_GetArraySize(pts));
  REQUIRE(num(cJSON_GetArrayItem(pts, 0), "step") == 500, "oldest kept point");
  REQUIRE(num(cJSON_GetArrayItem(pts, 999), "step") == 1499, "newest point");
  cJSON_Delete(o);
  o = ask(&c, "{\"cmd\":\"metrics\",\"last\":5}\n");
  pts = cJSON_GetObjectItem(o, "points");
  REQUIRE(cJSON_GetArraySize(pts) == 5 && num(cJSON_GetArrayItem(pts, 4), "step") == 1499 &&
            num(cJSON_GetArrayItem(pts, 0), "step") == 1495, "metrics last 5");
  cJSON_Delete(o);

  /* A client that asks for 40 x ~100 KB and reads nothing is dropped once over 1 MiB is
   * queued for it, instead of the job buffering without bound. */
  client slow = cl_unix(dir);
  char *sl;
  static const char one[] = "{\"cmd\":\"metrics\"}\n";
  char reqs[40 * (sizeof one - 1) + 1] = "";
  for (int i = 0; i < 40; i++) strcat(reqs, one);
  cJSON_Delete(ask(&slow, "{\"cmd\":\"status\"}\n")); /* accepted and read from by now */
  cl_sends(&slow, reqs); /* one write: the server reads and answers all 40 in one callback */
  /* Two round trips on another client: the second is read in a later loop iteration than
   * the 40, so by its answer they have all been answered or refused, however slow the
   * server (a sanitizer build); reading them sooner would keep the queue short. */
  for (int i = 0; i < 2; i++) {
    cl_sends(&c, "{\"cmd\":\"status\"}\n");
    sl = cl_line(&c, 60000); /* a sanitizer build takes seconds to build the replies */
    REQUIRE(sl && strstr(sl, "\"ok\":true"), "status beside a slow reader");
    free(sl);
  }
  int got = 0;
  while ((sl = cl_line(&slow, 3000))) {
    got++;
    free(sl);
  }
  REQUIRE(slow.eof && got < 40, "slow reader dropped (got %d of 40 replies)", got);
  cl_close(&slow);
  o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok"), "others still served after dropping a slow reader");
  cJSON_Delete(o);

  /* checkpoint / stop only set bits the training thread polls. */
  REQUIRE(status_server_poll_requests(s) == 0, "no request yet");
  o = ask(&c, "{\"cmd\":\"checkpoint\"}\n");
  REQUIRE(is_true(o, "ok") && is_true(o, "accepted") && !strcmp(str(o, "cmd"), "checkpoint"),
        "checkpoint accepted");
  cJSON_Delete(o);
  REQUIRE(status_server_poll_requests(s) == STATUS_REQ_CHECKPOINT, "checkpoint bit");
  REQUIRE(status_server_poll_requests(s) == 0, "bits cleared by poll");
  publish_fake(s, 123, "finished");
  o = ask(&c, "{\"cmd\":\"checkpoint\"}\n");
  REQUIRE(is_true(o, "ok") && !is_true(o, "accepted"), "checkpoint of a finished job refused");
  cJSON_Delete(o);
  REQUIRE(status_server_poll_requests(s) == 0, "refused request sets no bit");
  publish_fake(s, 123, "training");

  /* Errors keep the connection usable. */
  expect_error(&c, "{bad json\n", "bad_json");
  expect_error(&c, "{\"cmd\":\"status\"} trailing\n", "bad_json");
  expect_error(&c, "[1,2]\n", "bad_request");
  expect_error(&c, "{\"command\":\"status\"}\n", "bad_request");
  expect_error(&c, "{\"cmd\":\"launch_missiles\"}\n", "unknown_cmd");
  expect_error(&c, "{\"cmd\":\"status\",\"x\":1}\n", "bad_arg");
  expect_error(&c, "{\"cmd\":\"status\",\"cmd\":\"stop\"}\n", "bad_arg");
  expect_error(&c, "{\"cmd\":\"subscribe\",\"interval\":0}\n", "bad_arg");
  expect_error(&c, "{\"cmd\":\"metrics\",\"last\":2.5}\n", "bad_arg");
  expect_error(&c, "{\"cmd\":\"status\",\"v\":3}\n", "unsupported_version");
  expect_error(&c, "{\"cmd\":\"status\",\"v\":1.5}\n", "unsupported_version");
  expect_error(&c, "{\"cmd\":\"status\",\"v\":0}\n", "unsupported_version");
  expect_error(&c, "   \n", "bad_json");
  static const char with_nul[] = "{\"cmd\":\0\"status\"}\n";
  cl_send(&c, with_nul, sizeof with_nul - 1);
  char *l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"bad_json\""), "NUL byte: %s", l ? l : "(none)");
  free(l);
  /* Two requests in one write, CRLF endings: two replies in order. */
  cl_sends(&c, "{\"cmd\":\"status\"}\r\n{\"cmd\":\"workers\"}\r\n");
  char *a = cl_line(&c, 5000), *b = cl_line(&c, 5000);
  REQUIRE(a && b && strstr(a, "\"cmd\":\"status\"") && strstr(b, "\"cmd\":\"workers\""),
        "pipelined replies");
  free(a);
  free(b);
  o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok"), "connection usable after errors");
  cJSON_Delete(o);
  cl_close(&c);

  /* A line of exactly the limit is served; one byte more is refused and closed. */
  size_t max = STATUSP_MAX_LINE;
  char *big = xmalloc(max + 2);
  memset(big, ' ', max + 1);
  memcpy(big, "{\"cmd\":\"status\"}", 16);
  big[max] = '\n';
  c = cl_unix(dir);
  cl_send(&c, big, max + 1);
  o = NULL;
  l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"ok\":true"), "line of exactly %zu bytes", max);
  free(l);
  big[max] = ' ';
  big[max + 1] = '\n';
  cl_send(&c, big, max + 2);
  l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"line_too_long\""), "64 KiB + 1 line: %s", l ? l : "(none)");
  free(l);
  REQUIRE(cl_closed_by_server(&c, 5000), "connection closed after an oversized line");
  cl_close(&c);
  /* The same without any newline at all. */
  c = cl_unix(dir);
  memset(big, 'x', max + 2);
  cl_send(&c, big, max + 2);
  l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"line_too_long\""), "unterminated oversized line");
  free(l);
  cl_close(&c);
  free(big);
  printf("ok: every request, errors, line limit\n");
}

static void test_subscribe(const char *dir, status_server *s) {
  client c = cl_unix(dir);
  cJSON *o = ask(&c, "{\"cmd\":\"subscribe\",\"interval\":0.2}\n");
  REQUIRE(is_true(o, "ok") && num(o, "interval") == 0.2, "subscribe ok");
  cJSON_Delete(o);
  double t0 = time_unix();
  int pushes = 0, saw_new = 0;
  while (pushes < 4) {
    char *l = cl_line(&c, 3000);
    REQUIRE(l, "subscription push %d missing", pushes);
    o = cJSON_Parse(l);
    free(l);
    REQUIRE(o && is_true(o, "push") && !strcmp(str(o, "cmd"), "status"), "push format");
    if (num(o, "step") == 124) saw_new = 1;
    cJSON_Delete(o);
    if (++pushes == 2) publish_fake(s, 124, "training");
  }
  double dt = time_unix() - t0;
  REQUIRE(saw_new, "pushes follow newly published state");
  REQUIRE(dt > 0.45 && dt < 3, "4 pushes at 0.2 s took %.2f s", dt);
  o = ask(&c, "{\"cmd\":\"unsubscribe\"}\n");
  /* A push may have been in flight; skip it. */
  while (o && is_true(o, "push")) {
    cJSON_Delete(o);
    char *l = cl_line(&c, 3000);
    REQUIRE(l, "unsubscribe reply");
    o = cJSON_Parse(l);
    free(l);
  }
  REQUIRE(o && !strcmp(str(o, "cmd"), "unsubscribe"), "unsubscribe ok");
  cJSON_Delete(o);
  char *l = cl_line(&c, 600);
  REQUIRE(!l, "no push after unsubscribe: %s", l);
  cl_close(&c);
  publish_fake(s, 123, "training");
  printf("ok: subscribe pushes\n");
}

static void test_half_open(void) {
  char *dir = mkjob();
  status_server *s = start(dir, NULL, 600, 0);
  publish_fake(s, 123, "training");
  client silent = cl_unix(dir), half = cl_unix(dir);
  cl_sends(&half, "{\"cmd\":\"sta");
  double t0 = time_unix();
  int served = 0;
  while (time_unix() - t0 < 1.0) {
    client c = cl_unix(dir);
    double r0 = time_unix();
    cJSON *o = ask(&c, "{\"cmd\":\"status\"}\n");
    REQUIRE(is_true(o, "ok") && time_unix() - r0 < 0.5, "others are served while clients hang");
    cJSON_Delete(o);
    cl_close(&c);
    served++;
    usleep(20000);
  }
  for (int k = 0; k < 2; k++) {
    client *c = k ? &half : &silent;
    char *l = cl_line(c, 3000);
    REQUIRE(l && strstr(l, "\"timeout\""), "%s client gets a timeout error: %s",
          k ? "half-line" : "silent", l ? l : "(none)");
    free(l);
    REQUIRE(cl_closed_by_server(c, 3000), "timed-out client is closed");
    cl_close(c);
  }
  status_server_stop(s);
  rmjob(dir);
  free(dir);
  printf("ok: half-open clients time out; %d requests served meanwhile\n", served);
}

static void test_many(const char *dir, int n) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < (rlim_t)(2 * n + 64) && rl.rlim_max >= (rlim_t)(2 * n + 64)) {
    rl.rlim_cur = (rlim_t)(2 * n + 64);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  REQUIRE(rl.rlim_cur >= (rlim_t)(2 * n + 64), "need %d open files (ulimit -n)", 2 * n + 64);
  client *cs = xcalloc((size_t)n, sizeof *cs);
  double t0 = time_unix();
  for (int i = 0; i < n; i++) cs[i] = cl_unix(dir);
  for (int i = 0; i < n; i++) cl_sends(&cs[i], "{\"cmd\":\"status\"}\n");
  int ok = 0;
  for (int i = 0; i < n; i++) {
    char *l = cl_line(&cs[i], 10000);
    if (l && strstr(l, "\"ok\":true") && strstr(l, "\"step\":123")) ok++;
    free(l);
  }
  double dt = time_unix() - t0;
  for (int i = 0; i < n; i++) cl_close(&cs[i]);
  free(cs);
  REQUIRE(ok == n, "%d of %d concurrent clients answered", ok, n);
  printf("ok: %d concurrent clients answered in %.3f s\n", n, dt);
}

static void test_cap(void) {
  char *dir = mkjob();
  status_server *s = start(dir, NULL, 5000, 3);
  publish_fake(s, 123, "training");
  client cs[3];
  for (int i = 0; i < 3; i++) {
    cs[i] = cl_unix(dir);
    cJSON_Delete(ask(&cs[i], "{\"cmd\":\"status\"}\n"));
  }
  client extra = cl_unix(dir);
  char *l = cl_line(&extra, 5000);
  REQUIRE(l && strstr(l, "\"busy\""), "connection over the cap gets busy: %s", l ? l : "(none)");
  free(l);
  REQUIRE(cl_closed_by_server(&extra, 3000), "busy connection closed");
  cl_close(&extra);
  cl_close(&cs[0]);
  usleep(100000);
  client again = cl_unix(dir);
  cJSON *o = ask(&again, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok"), "a slot frees when a client leaves");
  cJSON_Delete(o);
  cl_close(&again);
  for (int i = 1; i < 3; i++) cl_close(&cs[i]);
  status_server_stop(s);
  rmjob(dir);
  free(dir);
  printf("ok: connection cap\n");
}

static char *read_token(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/status.token", dir);
  struct stat st;
  REQUIRE(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "%s mode 0600", path);
  FILE *f = fopen(path, "r");
  REQUIRE(f, "open token");
  char tok[128] = "";
  REQUIRE(fgets(tok, sizeof tok, f), "read token");
  fclose(f);
  tok[strcspn(tok, "\n")] = 0;
  return xstrdup(tok);
}

/* A token the server made itself: 32 random hex digits. */
static char *read_random_token(const char *dir) {
  char *tok = read_token(dir);
  REQUIRE(strlen(tok) == 32 && strspn(tok, "0123456789abcdef") == 32, "token is 32 hex: %s", tok);
  return tok;
}

/* One HTTP request; `body` (may be NULL) is sent 100 ms after the head, as a slow client
 * would. Returns everything the server sent before closing. */
static char *http_req(int port, const char *method, const char *path, const char *auth,
                      const char *body) {
  client c = cl_tcp(port);
  char req[512], len[64] = "";
  if (body) snprintf(len, sizeof len, "Content-Length: %zu\r\n", strlen(body));
  snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s%s%s\r\n", method, path,
           auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "", len);
  cl_sends(&c, req);
  if (body) {
    usleep(100000);
    if (send(c.fd, body, strlen(body), MSG_NOSIGNAL) < 0) { /* the server may have closed */ }
  }
  char *r = cl_all(&c, 5000);
  cl_close(&c);
  return r;
}

static char *http_get(int port, const char *path, const char *auth) {
  return http_req(port, "GET", path, auth, NULL);
}

static void check_prometheus(const char *body) {
  /* Every sample's metric has HELP and TYPE lines before it. */
  char *copy = xstrdup(body), *save = NULL;
  char typed[64][64];
  int n_typed = 0, samples = 0;
  for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
    char name[64];
    if (!strncmp(ln, "# TYPE ", 7)) {
      REQUIRE(sscanf(ln + 7, "%63s", name) == 1 &&
                  (strstr(ln, " gauge") || strstr(ln, " counter") || strstr(ln, " histogram")),
              "TYPE line %s", ln);
      REQUIRE(n_typed < 64, "too many metrics");
      snprintf(typed[n_typed++], 64, "%s", name);
      continue;
    }
    if (!strncmp(ln, "# HELP ", 7)) continue;
    REQUIRE(ln[0] != '#', "unknown comment %s", ln);
    size_t k = strcspn(ln, "{ ");
    REQUIRE(k > 0 && k < 64, "sample line %s", ln);
    memcpy(name, ln, k);
    name[k] = 0;
    int found = 0;
    for (int i = 0; i < n_typed; i++) {
      size_t tl = strlen(typed[i]); /* a histogram's samples carry _bucket, _sum, _count */
      found |= !strcmp(typed[i], name) ||
               (!strncmp(typed[i], name, tl) &&
                (!strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") ||
                 !strcmp(name + tl, "_count")));
    }
    REQUIRE(found, "sample %s without TYPE", name);
    const char *val = strrchr(ln, ' ');
    char *end;
    double v = strtod(val + 1, &end);
    REQUIRE(*end == 0 && (isfinite(v) || isnan(v)), "value of %s", ln);
    samples++;
  }
  free(copy);
  REQUIRE(samples >= 15, "only %d samples", samples);
}

static void test_tcp(void) {
  char *dir = mkjob();
  status_server *s = start(dir, "127.0.0.1:0", 5000, 0);
  publish_fake(s, 123, "training");
  int port = status_server_tcp_port(s);
  REQUIRE(port > 0, "tcp port");
  char *tok = read_random_token(dir);

  client c = cl_tcp(port);
  char *l;
  cl_sends(&c, "{\"cmd\":\"status\"}\n");
  l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"auth_required\"") && !strstr(l, "\"step\""), "no auth: %s", l ? l : "-");
  free(l);
  REQUIRE(cl_closed_by_server(&c, 3000), "closed without auth");
  cl_close(&c);

  char wrong[100];
  snprintf(wrong, sizeof wrong, "{\"cmd\":\"auth\",\"token\":\"%.31s%c\"}\n", tok,
           tok[31] == '0' ? '1' : '0');
  c = cl_tcp(port);
  cl_sends(&c, wrong);
  l = cl_line(&c, 5000);
  REQUIRE(l && strstr(l, "\"auth_failed\""), "wrong token: %s", l ? l : "-");
  free(l);
  REQUIRE(cl_closed_by_server(&c, 3000), "closed after a wrong token");
  cl_close(&c);

  /* A wrong token of any length, empty included, or of the wrong type is a failed auth. */
  static const char *const bad_auths[] = {
      "{\"cmd\":\"auth\",\"token\":\"\"}\n", "{\"cmd\":\"auth\",\"token\":\"x\"}\n",
      "{\"cmd\":\"auth\",\"token\":\"0123456789abcdef0123456789abcdef0\"}\n",
      "{\"cmd\":\"auth\",\"token\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n",
      "{\"cmd\":\"auth\",\"token\":7}\n", "{\"cmd\":\"auth\"}\n"};
  for (size_t i = 0; i < sizeof bad_auths / sizeof *bad_auths; i++) {
    c = cl_tcp(port);
    cl_sends(&c, bad_auths[i]);
    l = cl_line(&c, 5000);
    REQUIRE(l && strstr(l, "\"auth_failed\""), "auth %.50s: %s", bad_auths[i], l ? l : "-");
    free(l);
    REQUIRE(cl_closed_by_server(&c, 3000), "closed after a failed auth");
    cl_close(&c);
  }
  /* Anything else first is still "authenticate first", bad JSON included. */
  static const char *const not_auths[] = {"{\"cmd\":\"status\",\"token\":\"\"}\n", "{bad\n",
                                          "[\"auth\"]\n", "{\"cmd\":\"nope\"}\n"};
  for (size_t i = 0; i < sizeof not_auths / sizeof *not_auths; i++) {
    c = cl_tcp(port);
    cl_sends(&c, not_auths[i]);
    l = cl_line(&c, 5000);
    REQUIRE(l && strstr(l, "\"auth_required\""), "before auth %.50s: %s", not_auths[i],
            l ? l : "-");
    free(l);
    cl_close(&c);
  }

  char right[100];
  snprintf(right, sizeof right, "{\"cmd\":\"auth\",\"token\":\"%s\"}\n", tok);
  c = cl_tcp(port);
  cJSON *o = ask(&c, right);
  REQUIRE(is_true(o, "ok") && !strcmp(str(o, "cmd"), "auth"), "right token accepted");
  cJSON_Delete(o);
  o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok") && num(o, "step") == 123, "status over TCP");
  cJSON_Delete(o);
  cl_close(&c);

  char *r = http_get(port, "/metrics", NULL);
  REQUIRE(!strncmp(r, "HTTP/1.1 401", 12) && !strstr(r, "pollen_step"), "GET without token: %.40s", r);
  free(r);
  r = http_get(port, "/metrics", "0123456789abcdef0123456789abcdef");
  REQUIRE(!strncmp(r, "HTTP/1.1 401", 12), "GET with a wrong token: %.40s", r);
  free(r);
  r = http_get(port, "/other", tok);
  REQUIRE(!strncmp(r, "HTTP/1.1 404", 12), "GET /other: %.40s", r);
  free(r);
  r = http_get(port, "/healthz", NULL); /* probes carry no token */
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12) && strstr(r, "\r\n\r\nok\n"), "GET /healthz: %.80s", r);
  free(r);
  r = http_get(port, "/metrics", tok);
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12), "GET /metrics: %.60s", r);
  REQUIRE(strstr(r, "Content-Type: text/plain; version=0.0.4"), "content type");
  char *body = strstr(r, "\r\n\r\n");
  REQUIRE(body, "HTTP head end");
  body += 4;
  const char *cl = strstr(r, "Content-Length: ");
  REQUIRE(cl && (size_t)atol(cl + 16) == strlen(body), "content length");
  REQUIRE(strstr(body, "# HELP pollen_steps_total ") &&
              strstr(body, "# TYPE pollen_steps_total counter\n") &&
              strstr(body, "\npollen_steps_total 123\n"), "pollen_steps_total sample");
  REQUIRE(strstr(body, "# TYPE pollen_step_seconds histogram\n") &&
              strstr(body, "\npollen_step_seconds_bucket{le=\"+Inf\"} "), "step-time histogram");
  REQUIRE(strstr(body, "pollen_state{state=\"training\"} 1\n") &&
              strstr(body, "pollen_state{state=\"failed\"} 0\n"), "state series");
  REQUIRE(strstr(body, "pollen_val_accuracy NaN\n"), "NaN value");
  REQUIRE(strstr(body, "pollen_worker_step_time_seconds{rank=\"1\",host=\"node\\\"1\"} 1.25\n"),
        "escaped label");
  check_prometheus(body);
  free(r);
  /* Every method but GET is refused with 405 and "Allow: GET", token or not, body or not;
   * HEAD gets the head alone. */
  static const char *const methods[] = {"POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH",
                                        "TRACE", "CONNECT"};
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    for (int with_body = 0; with_body < 2; with_body++) {
      r = http_req(port, methods[i], "/metrics", with_body ? NULL : tok,
                   with_body ? "{\"cmd\":\"status\"}\n" : NULL);
      REQUIRE(!strncmp(r, "HTTP/1.1 405 Method Not Allowed\r\n", 33) && strstr(r, "\r\nAllow: GET\r\n"),
              "%s /metrics%s: %.60s", methods[i], with_body ? " with a body" : "", r);
      char *end = strstr(r, "\r\n\r\n");
      REQUIRE(end && !strstr(r, "pollen_step") && !strstr(r, "\"v\":2"), "405 answer: %s", r);
      if (!strcmp(methods[i], "HEAD")) REQUIRE(end[4] == 0, "HEAD answer with a body: %s", r);
      free(r);
    }
  }
  /* The method may come in pieces; blank lines before it are skipped. */
  c = cl_tcp(port);
  cl_sends(&c, "\r\nPO");
  usleep(50000);
  cl_sends(&c, "ST /metrics HTTP/1.1\r\n\r\n");
  r = cl_all(&c, 5000);
  REQUIRE(!strncmp(r, "HTTP/1.1 405", 12), "split POST: %.40s", r);
  free(r);
  cl_close(&c);
  /* HTTP to the Unix socket is just bad JSON there. */
  c = cl_unix(dir);
  expect_error(&c, "GET /metrics HTTP/1.1\r\n", "bad_json");
  cl_close(&c);

  status_server_stop(s);
  char path[512];
  snprintf(path, sizeof path, "%s/status.token", dir);
  REQUIRE(access(path, F_OK) != 0, "token removed at stop");
  free(tok);
  rmjob(dir);
  free(dir);
  printf("ok: TCP auth and GET /metrics\n");
}

/* A stand-in training loop: publishes each "step", polls, obeys stop. */
typedef struct {
  status_server *s;
  atomic_int done;
  int64_t steps;
  int saw_stop, saw_ckpt;
  double max_publish_s;
} trainer;

static void *train_main(void *arg) {
  trainer *t = arg;
  for (int64_t step = 0; step < 200000; step++) {
    double t0 = time_now();
    publish_fake(t->s, step, "training");
    double dt = time_now() - t0;
    if (dt > t->max_publish_s) t->max_publish_s = dt;
    int req = status_server_poll_requests(t->s);
    if (req & STATUS_REQ_CHECKPOINT) t->saw_ckpt = 1;
    if (req & STATUS_REQ_STOP) {
      t->saw_stop = 1;
      publish_fake(t->s, step, "stopping");
      usleep(50000); /* the final checkpoint */
      publish_fake(t->s, step, "finished");
      t->steps = step;
      break;
    }
    usleep(1000);
  }
  atomic_store(&t->done, 1);
  return NULL;
}

/* /healthz tells a hung job (training, no step) from a live one; a token from a file is the
 * one TCP clients need, and the one in status.token. */
static void test_health_and_token_file(void) {
  char *dir = mkjob();
  char path[600];
  snprintf(path, sizeof path, "%s/secret", dir);
  FILE *f = fopen(path, "w");
  REQUIRE(f && fputs("kube-secret_0123456789.abc\n", f) >= 0 && fclose(f) == 0, "secret file");
  status_server_opts o = {.health_stall_s = 1, .token_file = path};
  char err[512];
  status_server *s = status_server_start_opts(dir, "127.0.0.1:0", &o, err, sizeof err);
  REQUIRE(s, "start: %s", err);
  int port = status_server_tcp_port(s);
  char *tok = read_token(dir);
  REQUIRE(!strcmp(tok, "kube-secret_0123456789.abc"), "status.token holds the file's token: '%s'", tok);
  char *r = http_get(port, "/metrics", "kube-secret_0123456789.abc");
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12), "GET /metrics with the file's token: %.60s", r);
  free(r);

  job_status j;
  worker_status w[2];
  fake_job(&j, 10, "training");
  fake_workers(w);
  j.last_step_time = time_unix();
  status_server_publish(s, &j, w, 2);
  r = http_get(port, "/healthz", NULL);
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12), "fresh step: %.60s", r);
  free(r);
  usleep(1300 * 1000);
  r = http_get(port, "/healthz", NULL);
  REQUIRE(!strncmp(r, "HTTP/1.1 503 Service Unavailable", 32) && strstr(r, "stalled: training, and no step for"),
          "no step for longer than the limit: %.200s", r);
  free(r);
  j.step = 11, j.last_step_time = time_unix();
  status_server_publish(s, &j, w, 2);
  r = http_get(port, "/healthz", NULL);
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12), "a step again: %.60s", r);
  free(r);
  snprintf(j.state, sizeof j.state, "evaluating");
  status_server_publish(s, &j, w, 2);
  usleep(1300 * 1000);
  r = http_get(port, "/healthz", NULL);
  REQUIRE(!strncmp(r, "HTTP/1.1 200", 12), "evaluating has no steps, and is not a stall: %.60s", r);
  free(r);
  status_server_stop(s);
  free(tok);

  /* Files that hold no token are refused by name, before anything listens. */
  const char *bad[] = {"short\n", "has space in the token here\n", ""};
  for (int i = 0; i < 3; i++) {
    f = fopen(path, "w");
    REQUIRE(f && fputs(bad[i], f) >= 0 && fclose(f) == 0, "secret file");
    err[0] = 0;
    REQUIRE(!status_server_start_opts(dir, "127.0.0.1:0", &o, err, sizeof err), "token file '%s' accepted", bad[i]);
    REQUIRE(strstr(err, "--status-token-file") && strstr(err, path) && !strchr(err, '\n'), "message: %s", err);
  }
  o.token_file = "/nonexistent/secret";
  REQUIRE(!status_server_start_opts(dir, "127.0.0.1:0", &o, err, sizeof err) && strstr(err, "No such file"),
          "missing token file: %s", err);
  rmjob(dir);
  free(dir);
}

static void test_stop_through_socket(const char *dir, status_server *s) {
  trainer t = {.s = s};
  pthread_t th;
  pthread_create(&th, NULL, train_main, &t);
  usleep(100000);
  client c = cl_unix(dir);
  cJSON *o = ask(&c, "{\"cmd\":\"checkpoint\"}\n");
  REQUIRE(is_true(o, "accepted"), "checkpoint accepted");
  cJSON_Delete(o);
  o = ask(&c, "{\"cmd\":\"stop\"}\n");
  REQUIRE(is_true(o, "accepted") && !strcmp(str(o, "state"), "training"), "stop accepted");
  cJSON_Delete(o);
  double t0 = time_unix();
  while (!atomic_load(&t.done) && time_unix() - t0 < 5) usleep(10000);
  REQUIRE(atomic_load(&t.done) && t.saw_stop && t.saw_ckpt, "trainer saw checkpoint and stop");
  pthread_join(th, NULL);
  o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(!strcmp(str(o, "state"), "finished") && num(o, "step") == (double)t.steps,
        "status after stop");
  cJSON_Delete(o);
  o = ask(&c, "{\"cmd\":\"stop\"}\n");
  REQUIRE(is_true(o, "ok") && !is_true(o, "accepted"), "stop of a finished job not accepted");
  cJSON_Delete(o);
  status_server_poll_requests(s);
  cl_close(&c);
  publish_fake(s, 123, "training");
  printf("ok: stop through the socket (after %lld steps, publish max %.1f us)\n",
         (long long)t.steps, t.max_publish_s * 1e6);
}

static void test_sockets_on_disk(void) {
  char err[512];
  /* Live socket: a second server in the same folder is refused. */
  char *dir = mkjob();
  status_server *s = start(dir, NULL, 5000, 0);
  char path[600];
  snprintf(path, sizeof path, "%s/status.sock", dir);
  struct stat st;
  REQUIRE(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600,
        "socket mode %o", st.st_mode & 0777);
  status_server *s2 = status_server_start_opts(dir, NULL, NULL, err, sizeof err);
  REQUIRE(!s2 && strstr(err, "another pollen job is live"), "live socket refused: %s", err);
  REQUIRE(stat(path, &st) == 0, "the live job's socket is left alone");
  client c = cl_unix(dir);
  cJSON_Delete(ask(&c, "{\"cmd\":\"status\"}\n"));
  cl_close(&c);
  status_server_stop(s);
  REQUIRE(stat(path, &st) != 0, "socket removed at stop");

  /* Stale socket: bound, never listened, process gone: replaced. */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  REQUIRE(strlen(path) < sizeof a.sun_path, "temp path too long");
  memcpy(a.sun_path, path, strlen(path) + 1);
  REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind stale: %s", strerror(errno));
  close(fd);
  s = start(dir, NULL, 5000, 0);
  c = cl_unix(dir);
  cJSON *o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok"), "served after replacing a stale socket");
  cJSON_Delete(o);
  cl_close(&c);
  status_server_stop(s);

  /* Not a socket: refused, file untouched. */
  FILE *f = fopen(path, "w");
  fputs("precious\n", f);
  fclose(f);
  s2 = status_server_start_opts(dir, NULL, NULL, err, sizeof err);
  REQUIRE(!s2 && strstr(err, "not a socket"), "regular file refused: %s", err);
  REQUIRE(stat(path, &st) == 0 && S_ISREG(st.st_mode), "regular file kept");
  unlink(path);
  /* Missing folder. */
  s2 = status_server_start_opts("/nonexistent/pollen-job", NULL, NULL, err, sizeof err);
  REQUIRE(!s2 && strstr(err, "/nonexistent/pollen-job"), "missing folder named: %s", err);
  s2 = status_server_start_opts(dir, "127.0.0.1:99999", NULL, err, sizeof err);
  REQUIRE(!s2 && strstr(err, "99999"), "bad TCP spec named: %s", err);
  REQUIRE(stat(path, &st) != 0, "failed start leaves no socket");
  rmjob(dir);
  free(dir);

  /* A job folder too long for sun_path (108 bytes) still works. */
  dir = mkjob();
  char longdir[400];
  snprintf(longdir, sizeof longdir, "%s/%0150d", dir, 7);
  REQUIRE(mkdir(longdir, 0700) == 0, "mkdir long");
  s = start(longdir, NULL, 5000, 0);
  c = cl_unix(longdir);
  o = ask(&c, "{\"cmd\":\"status\"}\n");
  REQUIRE(is_true(o, "ok"), "long path served");
  cJSON_Delete(o);
  cl_close(&c);
  status_server_stop(s);
  rmjob(dir);
  free(dir);
  printf("ok: live socket refused, stale replaced, mode 0600, long path\n");
}

static void test_other_user(const char *dir) {
  if (geteuid() != 0) {
    printf("SKIP part: another user's access needs root to switch user (running as uid %d)\n",
           (int)geteuid());
    return;
  }
  /* Open the folder to everyone so that only the socket's own mode keeps them out. */
  REQUIRE(chmod(dir, 0755) == 0, "chmod job dir");
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork");
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    int fd = status_server_connect(dir);
    _exit(fd >= 0 ? 1 : errno == EACCES ? 0 : 2);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "uid 65534 must get EACCES connecting (child exit %d)", WEXITSTATUS(st));
  /* Even with the socket opened up by hand, the server drops another user unanswered. */
  char sock[600];
  snprintf(sock, sizeof sock, "%s/status.sock", dir);
  REQUIRE(chmod(sock, 0666) == 0, "chmod socket");
  pid = fork();
  REQUIRE(pid >= 0, "fork");
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    int fd = status_server_connect(dir);
    if (fd < 0) _exit(4);
    client c;
    cl_init(&c, fd);
    if (send(fd, "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL) < 0) { /* may race the close */ }
    char *l = cl_line(&c, 3000);
    _exit(l ? 1 : c.eof ? 0 : 2);
  }
  waitpid(pid, &st, 0);
  REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "another user must be dropped unanswered (child exit %d)", WEXITSTATUS(st));
  chmod(sock, 0600);
  chmod(dir, 0700);
  printf("ok: another user (uid 65534) cannot connect\n");
}

/* ---- edges: bursts and exits (each in a child process: these tests stop or kill it) ---- */

static volatile sig_atomic_t child_term;
static void on_term_child(int sig) { child_term = 1; }

/* Blocking connect to loopback with a 3 s limit (a full backlog must fail, not hang). */
static int connect_to(const char *dir, int port) {
  int fd;
  struct timeval tv = {3, 0};
  if (dir) { /* mkjob's folders are short enough for sun_path */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/status.sock", dir);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s: %s", a.sun_path,
            strerror(errno));
  } else {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "tcp connect: %s", strerror(errno));
  }
  return fd;
}

/* Child: serves DIR (cap max_conns, TCP on a free port) until SIGTERM or 60 s; writes the
 * port to `ready` once it listens. fd_limit: a soft RLIMIT_NOFILE to start with (0: as is). */
static void serve_child(const char *dir, int max_conns, int fd_limit, int ready) {
  signal(SIGTERM, on_term_child);
  struct rlimit rl;
  if (fd_limit && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max >= (rlim_t)fd_limit) {
    rl.rlim_cur = (rlim_t)fd_limit;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  status_server *s = start(dir, "127.0.0.1:0", 5000, max_conns);
  publish_fake(s, 123, "training");
  int port = status_server_tcp_port(s);
  if (write(ready, &port, sizeof port) != sizeof port) _exit(3);
  for (int i = 0; i < 6000 && !child_term; i++) usleep(10000);
  status_server_stop(s);
  _exit(0);
}

/* Clients that connect and close at once, faster than the loop reads their EOF, must not
 * count against the cap: the server is frozen (SIGSTOP) while 5 x cap of them and one real
 * client of each transport queue up in the backlog, so one accept pass meets them all, the
 * real ones last. Then the same unfrozen, 1500 clients a burst, at the default cap. */
static void test_burst(void) {
  enum { CAP = 8, BURST = 5 * CAP };
  char *dir = mkjob();
  int pp[2];
  REQUIRE(pipe(pp) == 0, "pipe");
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork");
  if (pid == 0) serve_child(dir, CAP, 0, pp[1]);
  int port = 0;
  REQUIRE(read(pp[0], &port, sizeof port) == sizeof port && port > 0, "child server started");
  char *tok = read_token(dir);
  REQUIRE(kill(pid, SIGSTOP) == 0, "SIGSTOP");
  int st;
  REQUIRE(waitpid(pid, &st, WUNTRACED) == pid && WIFSTOPPED(st), "server frozen");
  for (int i = 0; i < BURST; i++) close(connect_to(dir, 0));
  client u;
  cl_init(&u, connect_to(dir, 0));
  cl_sends(&u, "{\"cmd\":\"status\"}\n");
  for (int i = 0; i < BURST; i++) close(connect_to(NULL, port));
  client t;
  cl_init(&t, connect_to(NULL, port));
  char auth[100];
  snprintf(auth, sizeof auth, "{\"cmd\":\"auth\",\"token\":\"%s\"}\n{\"cmd\":\"status\"}\n", tok);
  cl_sends(&t, auth);
  REQUIRE(kill(pid, SIGCONT) == 0, "SIGCONT");
  char *l = cl_line(&u, 5000);
  REQUIRE(l && strstr(l, "\"ok\":true") && strstr(l, "\"step\":123"),
          "Unix client after %d departed ones (cap %d): %s", BURST, CAP, l ? l : "(none)");
  free(l);
  l = cl_line(&t, 5000);
  REQUIRE(l && strstr(l, "\"cmd\":\"auth\""), "TCP auth after %d departed ones: %s", BURST,
          l ? l : "(none)");
  free(l);
  l = cl_line(&t, 5000);
  REQUIRE(l && strstr(l, "\"step\":123"), "TCP status after the burst: %s", l ? l : "(none)");
  free(l);
  /* The cap still holds for clients that stay. */
  client held[CAP];
  for (int i = 0; i < CAP - 2; i++) {
    cl_init(&held[i], connect_to(dir, 0));
    cJSON_Delete(ask(&held[i], "{\"cmd\":\"status\"}\n"));
  }
  client extra;
  cl_init(&extra, connect_to(dir, 0));
  l = cl_line(&extra, 5000);
  REQUIRE(l && strstr(l, "\"busy\""), "over the cap with live clients: %s", l ? l : "(none)");
  free(l);
  cl_close(&extra);
  for (int i = 0; i < CAP - 2; i++) cl_close(&held[i]);
  cl_close(&u);
  cl_close(&t);
  kill(pid, SIGTERM);
  REQUIRE(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "server child exit");
  close(pp[0]);
  close(pp[1]);

  /* Unfrozen, default cap, under the common soft limit of 1024 files (which the server must
   * lift: at EMFILE libuv drops every pending connection): 3 bursts of 1500 connect+close,
   * each followed by a real request. */
  REQUIRE(pipe(pp) == 0, "pipe");
  pid = fork();
  REQUIRE(pid >= 0, "fork");
  if (pid == 0) serve_child(dir, 0, 1024, pp[1]);
  REQUIRE(read(pp[0], &port, sizeof port) == sizeof port && port > 0, "child server started");
  double t0 = time_unix();
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 1500; i++) close(connect_to(dir, 0));
    cl_init(&u, connect_to(dir, 0));
    cl_sends(&u, "{\"cmd\":\"status\"}\n");
    l = cl_line(&u, 5000);
    REQUIRE(l && strstr(l, "\"ok\":true"), "request after burst %d of 1500: %s", round + 1,
            l ? l : "(none)");
    free(l);
    cl_close(&u);
  }
  double dt = time_unix() - t0;
  kill(pid, SIGTERM);
  REQUIRE(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "server child exit");
  close(pp[0]);
  close(pp[1]);
  free(tok);
  rmjob(dir);
  free(dir);
  printf("ok: departed clients do not count against the cap (%d frozen; 3 x 1500 in %.2f s)\n",
         BURST, dt);
}

static int exists(const char *dir, const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct stat st;
  return lstat(path, &st) == 0;
}

/* A child that starts the server and then ends through `how`; returns its exit status. */
enum { END_DIE, END_EXIT, END_REPLACED, END_FORK };
static int run_and_end(const char *dir, int how) {
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork");
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2); /* die()'s message is expected */
    status_server *s = status_server_start(dir, "127.0.0.1:0", NULL);
    (void)s;
    if (how == END_REPLACED) { /* someone else's files now: they must survive our exit */
      char path[600];
      snprintf(path, sizeof path, "%s/status.sock", dir);
      unlink(path);
      FILE *f = fopen(path, "w");
      if (!f) _exit(4);
      fclose(f);
      snprintf(path, sizeof path, "%s/status.token", dir);
      unlink(path);
      if (mkdir(path, 0700) != 0) _exit(4);
    }
    if (how == END_FORK) { /* a forked helper's exit() must leave its parent's files alone */
      pid_t g = fork();
      if (g == 0) exit(0);
      int gst;
      waitpid(g, &gst, 0);
      if (!exists(dir, "status.sock") || !exists(dir, "status.token")) _exit(5);
    }
    if (how == END_EXIT) exit(7);
    die("simulated failure after the status server started");
  }
  int st;
  REQUIRE(waitpid(pid, &st, 0) == pid && WIFEXITED(st), "child exit");
  return WEXITSTATUS(st);
}

static void test_exit_cleanup(void) {
  char *dir = mkjob();
  int rc = run_and_end(dir, END_DIE);
  REQUIRE(rc == EXIT_FAILED, "die() exit status %d", rc);
  REQUIRE(!exists(dir, "status.sock") && !exists(dir, "status.token"),
          "die() after the start leaves status.sock or status.token behind");
  rc = run_and_end(dir, END_EXIT);
  REQUIRE(rc == 7 && !exists(dir, "status.sock") && !exists(dir, "status.token"),
          "exit(7) after the start leaves files behind (exit status %d)", rc);
  rc = run_and_end(dir, END_FORK);
  REQUIRE(rc == EXIT_FAILED, "a forked child's exit removed its parent's files (status %d)", rc);
  REQUIRE(!exists(dir, "status.sock") && !exists(dir, "status.token"), "files left after fork+die");
  rc = run_and_end(dir, END_REPLACED);
  REQUIRE(rc == EXIT_FAILED, "replaced files child (status %d)", rc);
  REQUIRE(exists(dir, "status.sock") && exists(dir, "status.token"),
          "exit removed files that were no longer the server's");
  rmjob(dir);
  free(dir);
  printf("ok: die() and exit() remove status.sock and status.token, only their own\n");
}

/* ---- helper modes ---- */

static volatile sig_atomic_t got_term;
static void on_term(int sig) { got_term = 1; }

static int serve(const char *dir, double secs) {
  log_set_quiet(1);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  status_server *s = status_server_start(dir, NULL, NULL);
  for (int i = 0; i < 50; i++) {
    metric_point p = {.step = i * 10, .epoch = 0, .loss = 2.0 - i * 0.02, .train_acc = i / 60.0,
                      .val_acc = NAN, .lr = 0.01, .images_per_s = 500};
    status_server_push_metric(s, &p);
  }
  double t0 = time_unix();
  int64_t step = 490;
  int rc = 0;
  while (!got_term && time_unix() - t0 < secs) {
    publish_fake(s, step++, "training");
    int req = status_server_poll_requests(s);
    if (req & STATUS_REQ_STOP) {
      publish_fake(s, step, "stopping");
      usleep(200000);
      rc = 75;
      break;
    }
    usleep(10000);
  }
  status_server_stop(s);
  return rc;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* 100 clients each asking for status 10 times a second, until *stop. */
typedef struct {
  const char *dir;
  atomic_int stop;
  long answered;
} pollers;

static void *poll_main(void *arg) {
  pollers *p = arg;
  enum { N = 100 };
  client *cs = xcalloc(N, sizeof *cs);
  for (int i = 0; i < N; i++) cs[i] = cl_unix(p->dir);
  while (!atomic_load(&p->stop)) {
    double t0 = time_now();
    for (int i = 0; i < N; i++) cl_sends(&cs[i], "{\"cmd\":\"status\"}\n");
    for (int i = 0; i < N; i++) {
      char *l = cl_line(&cs[i], 5000);
      REQUIRE(l, "poller reply");
      free(l);
      p->answered++;
    }
    double left = 0.1 - (time_now() - t0);
    if (left > 0) usleep((useconds_t)(left * 1e6));
  }
  for (int i = 0; i < N; i++) cl_close(&cs[i]);
  free(cs);
  return NULL;
}

/* Cost of status_server_publish() (what training pays each step), over 2 s. */
static void time_publish(status_server *s, const char *label) {
  enum { M = 20000 };
  double *t = xmalloc(M * sizeof *t);
  job_status j;
  worker_status w[2];
  fake_job(&j, 1, "training");
  fake_workers(w);
  for (int i = 0; i < M; i++) {
    j.step = i;
    double t0 = time_now();
    status_server_publish(s, &j, w, 2);
    t[i] = time_now() - t0;
    usleep(100);
  }
  qsort(t, M, sizeof *t, cmp_double);
  printf("publish() %s: median %.2f us, p99 %.2f us, max %.1f us\n", label, t[M / 2] * 1e6,
         t[(int)(M * 0.99)] * 1e6, t[M - 1] * 1e6);
  free(t);
}

static int bench(int n) {
  log_set_quiet(1);
  char *dir = mkjob();
  status_server *s = start(dir, NULL, 10000, 0);
  publish_fake(s, 123, "training");
  client c = cl_unix(dir);
  double *lat = xmalloc((size_t)n * sizeof *lat);
  for (int i = 0; i < 200; i++) cJSON_Delete(ask(&c, "{\"cmd\":\"status\"}\n"));
  for (int i = 0; i < n; i++) {
    double t0 = time_now();
    cl_sends(&c, "{\"cmd\":\"status\"}\n");
    char *l = cl_line(&c, 5000);
    lat[i] = time_now() - t0;
    REQUIRE(l && strstr(l, "\"ok\":true"), "bench reply");
    free(l);
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  printf("status request latency over %d requests (Unix socket, one client): median %.1f us, "
         "p99 %.1f us, max %.1f us\n",
         n, lat[n / 2] * 1e6, lat[(size_t)(n * 0.99)] * 1e6, lat[n - 1] * 1e6);
  cl_close(&c);
  free(lat);
  time_publish(s, "with no clients");
  pollers p = {.dir = dir};
  pthread_t th;
  pthread_create(&th, NULL, poll_main, &p);
  usleep(200000);
  time_publish(s, "with 100 clients polling at 10 Hz");
  atomic_store(&p.stop, 1);
  pthread_join(th, NULL);
  printf("(pollers got %ld answers)\n", p.answered);
  status_server_stop(s);
  rmjob(dir);
  free(dir);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && !strcmp(argv[1], "--serve")) return serve(argv[2], atof(argv[3]));
  if (argc == 3 && !strcmp(argv[1], "--bench")) return bench(atoi(argv[2]) > 0 ? atoi(argv[2]) : 10000);
  log_set_quiet(1);
  char *dir = mkjob();
  status_server *s = start(dir, NULL, 5000, 0);
  publish_fake(s, 123, "training");
  test_requests(dir, s);
  test_subscribe(dir, s);
  test_half_open();
  test_many(dir, 500);
  test_stop_through_socket(dir, s);
  test_other_user(dir);
  status_server_stop(s);
  rmjob(dir);
  free(dir);
  test_cap();
  test_tcp();
  test_health_and_token_file();
  test_sockets_on_disk();
  test_burst(); /* these fork: no other thread may be running */
  test_exit_cleanup();
  printf("all status server tests passed\n");
  return 0;
}
