/* status_proto.c - parse status requests, build replies and the Prometheus text.
 * Strict and bounded: every byte comes from a socket. See status_proto.h. */
#include "proto/status_proto.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const err_codes[STATUSP_E_COUNT_] = {
    [STATUSP_OK] = "ok",
    [STATUSP_E_LINE_TOO_LONG] = "line_too_long",
    [STATUSP_E_BAD_JSON] = "bad_json",
    [STATUSP_E_BAD_REQUEST] = "bad_request",
    [STATUSP_E_UNKNOWN_CMD] = "unknown_cmd",
    [STATUSP_E_BAD_ARG] = "bad_arg",
    [STATUSP_E_VERSION] = "unsupported_version",
    [STATUSP_E_AUTH_REQUIRED] = "auth_required",
    [STATUSP_E_AUTH_FAILED] = "auth_failed",
    [STATUSP_E_BUSY] = "busy",
    [STATUSP_E_TIMEOUT] = "timeout",
    [STATUSP_E_INTERNAL] = "internal",
};

const char *statusp_err_code(statusp_err e) {
  return (e >= 0 && e < STATUSP_E_COUNT_) ? err_codes[e] : "internal";
}

static const char *const cmd_names[] = {
    [STATUSP_CMD_NONE] = "",           [STATUSP_CMD_STATUS] = "status",
    [STATUSP_CMD_WORKERS] = "workers", [STATUSP_CMD_METRICS] = "metrics",
    [STATUSP_CMD_CHECKPOINT] = "checkpoint", [STATUSP_CMD_STOP] = "stop",
    [STATUSP_CMD_SUBSCRIBE] = "subscribe",   [STATUSP_CMD_UNSUBSCRIBE] = "unsubscribe",
    [STATUSP_CMD_AUTH] = "auth",
};
#define N_CMDS ((int)(sizeof cmd_names / sizeof cmd_names[0]))

const char *statusp_cmd_name(statusp_cmd c) {
  return (c > STATUSP_CMD_NONE && (int)c < N_CMDS) ? cmd_names[c] : "";
}

/* Quotes untrusted text into an error message only as short printable ASCII, so a reply
 * never carries control bytes or invalid UTF-8 back out. */
static void sanitize(char *out, size_t cap, const char *in) {
  size_t o = 0;
  for (size_t i = 0; in[i] && o + 4 < cap; i++) {
    if (i == 32) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    unsigned char c = (unsigned char)in[i];
    out[o++] = (c >= 32 && c < 127 && c != '\'') ? (char)c : '?';
  }
  out[o] = 0;
}

static statusp_err fail(statusp_err e, char *msg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static statusp_err fail(statusp_err e, char *msg, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, cap, fmt, ap);
  va_end(ap);
  return e;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Checks the fields of a parsed object; root is freed by the caller. */
static statusp_err check_request(const cJSON *root, statusp_request *req, char *msg, size_t cap) {
  char a[40], b[40];
  if (!cJSON_IsObject(root))
    return fail(STATUSP_E_BAD_REQUEST, msg, cap,
                "a request is one JSON object such as {\"cmd\":\"status\"}");
  int n = 0;
  for (const cJSON *f = root->child; f; f = f->next) {
    if (++n > 8) return fail(STATUSP_E_BAD_ARG, msg, cap, "too many fields (at most 8)");
    for (const cJSON *g = root->child; g != f; g = g->next)
      if (!strcmp(g->string, f->string)) {
        sanitize(a, sizeof a, f->string);
        return fail(STATUSP_E_BAD_ARG, msg, cap, "field '%s' appears twice", a);
      }
  }
  const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(root, "cmd");
  if (!cJSON_IsString(cmd))
    return fail(STATUSP_E_BAD_REQUEST, msg, cap, "the request needs a \"cmd\" string");
  for (int i = 1; i < N_CMDS; i++)
    if (!strcmp(cmd->valuestring, cmd_names[i])) req->cmd = (statusp_cmd)i;
  if (req->cmd == STATUSP_CMD_NONE) {
    sanitize(a, sizeof a, cmd->valuestring);
    return fail(STATUSP_E_UNKNOWN_CMD, msg, cap,
                "unknown command '%s' (known: status workers metrics checkpoint stop subscribe "
                "unsubscribe auth)", a);
  }
  const char *name = cmd_names[req->cmd];
  for (const cJSON *f = root->child; f; f = f->next) {
    const char *k = f->string;
    if (!strcmp(k, "cmd")) continue;
    if (!strcmp(k, "v")) {
      if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble) ||
          !(f->valuedouble >= STATUSP_OLDEST_VERSION && f->valuedouble <= STATUSP_VERSION))
        return fail(STATUSP_E_VERSION, msg, cap, "this job speaks status protocol versions %d to %d",
                    STATUSP_OLDEST_VERSION, STATUSP_VERSION);
    } else if (!strcmp(k, "interval") && req->cmd == STATUSP_CMD_SUBSCRIBE) {
      if (!cJSON_IsNumber(f) || !(f->valuedouble >= 0.1 && f->valuedouble <= 3600))
        return fail(STATUSP_E_BAD_ARG, msg, cap, "\"interval\" is seconds in [0.1, 3600]");
      req->interval_s = f->valuedouble;
    } else if (!strcmp(k, "last") && req->cmd == STATUSP_CMD_METRICS) {
      double v = cJSON_IsNumber(f) ? f->valuedouble : 0;
      if (!(v >= 1 && v <= STATUSP_METRICS_MAX) || v != floor(v))
        return fail(STATUSP_E_BAD_ARG, msg, cap, "\"last\" is a whole number in [1, %d]",
                    STATUSP_METRICS_MAX);
      req->last = (int)v;
    } else if (!strcmp(k, "token") && req->cmd == STATUSP_CMD_AUTH) {
      size_t len = cJSON_IsString(f) ? strlen(f->valuestring) : 0;
      if (len == 0 || len > STATUSP_MAX_TOKEN)
        return fail(STATUSP_E_BAD_ARG, msg, cap, "\"token\" is a string of 1 to %d bytes",
                    STATUSP_MAX_TOKEN);
      memcpy(req->token, f->valuestring, len + 1);
      req->token_len = len;
    } else {
      sanitize(a, sizeof a, k);
      snprintf(b, sizeof b, "%s", name);
      return fail(STATUSP_E_BAD_ARG, msg, cap, "unknown field '%s' for \"%s\"", a, b);
    }
  }
  if (req->cmd == STATUSP_CMD_AUTH && req->token_len == 0)
    return fail(STATUSP_E_BAD_ARG, msg, cap, "\"auth\" needs a \"token\" string");
  return STATUSP_OK;
}

statusp_err statusp_parse_request(const char *line, size_t len, statusp_request *req, char *msg,
                                  size_t msg_cap) {
  char scratch[2];
  if (!msg || msg_cap == 0) {
    msg = scratch;
    msg_cap = sizeof scratch;
  }
  msg[0] = 0;
  memset(req, 0, sizeof *req);
  req->interval_s = 1;
  req->last = STATUSP_METRICS_MAX;
  if (len > STATUSP_MAX_LINE)
    return fail(STATUSP_E_LINE_TOO_LONG, msg, msg_cap, "request line is over %d bytes",
                STATUSP_MAX_LINE);
  if (memchr(line, 0, len))
    return fail(STATUSP_E_BAD_JSON, msg, msg_cap, "request contains a NUL byte");
  size_t i = 0;
  while (i < len && is_ws(line[i])) i++;
  if (i == len) return fail(STATUSP_E_BAD_JSON, msg, msg_cap, "empty request");
  /* cJSON wants a terminated string; a private copy also keeps it inside our bounds. */
  char *copy = malloc(len + 1);
  if (!copy) return fail(STATUSP_E_INTERNAL, msg, msg_cap, "out of memory");
  memcpy(copy, line, len);
  copy[len] = 0;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(copy, &end, 0);
  statusp_err e;
  if (!root) {
    e = fail(STATUSP_E_BAD_JSON, msg, msg_cap, "malformed JSON near byte %zu",
             end && end >= copy ? (size_t)(end - copy) : (size_t)0);
  } else {
    while (*end && is_ws(*end)) end++;
    if (*end)
      e = fail(STATUSP_E_BAD_JSON, msg, msg_cap, "extra characters after the JSON value at byte %zu",
               (size_t)(end - copy));
    else
      e = check_request(root, req, msg, msg_cap);
  }
  cJSON_Delete(root);
  free(copy);
  if (e != STATUSP_OK) req->cmd = STATUSP_CMD_NONE;
  return e;
}

/* ---- replies ---- */

static char *finish(cJSON *o) {
  char *s = o ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  if (!s) return NULL;
  size_t n = strlen(s);
  char *t = realloc(s, n + 2);
  if (!t) {
    free(s);
    return NULL;
  }
  t[n] = '\n';
  t[n + 1] = 0;
  return t;
}

static void add_num(cJSON *o, const char *k, double v) {
  if (isfinite(v))
    cJSON_AddNumberToObject(o, k, v);
  else
    cJSON_AddNullToObject(o, k);
}

static cJSON *reply_head(int ok, const char *cmd) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "v", STATUSP_VERSION);
  cJSON_AddBoolToObject(o, "ok", ok);
  if (cmd && cmd[0]) cJSON_AddStringToObject(o, "cmd", cmd);
  return o;
}

/* Copies a fixed-size string field that the publisher may have left unterminated. */
static void add_str(cJSON *o, const char *k, const char *s, size_t cap) {
  char buf[256];
  size_t n = strnlen(s, cap < sizeof buf ? cap : sizeof buf - 1);
  memcpy(buf, s, n);
  buf[n] = 0;
  cJSON_AddStringToObject(o, k, buf);
}

char *statusp_reply_error(statusp_err e, const char *msg) {
  cJSON *o = reply_head(0, NULL);
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "code", statusp_err_code(e));
  cJSON_AddStringToObject(o, "message", msg ? msg : "");
  return finish(o);
}

void statusp_launch_from_record(statusp_launch *l, const launch_record *r) {
  memset(l, 0, sizeof *l);
  l->present = 1;
  l->attempt = r->attempt, l->restarts = r->restarts, l->world = r->world;
  launch_join_hosts(l->hosts, sizeof l->hosts, r->hosts, r->n_hosts);
  launch_join_hosts(l->excluded, sizeof l->excluded, r->excluded, r->n_excluded);
  l->has_failure = r->has_last_failure;
  l->failure = r->last_failure;
}

/* "launch": what pollen launch said about this launch; null when not launched by it. */
static void add_launch(cJSON *o, const statusp_launch *l) {
  if (!l->present) {
    cJSON_AddNullToObject(o, "launch");
    return;
  }
  cJSON *x = cJSON_AddObjectToObject(o, "launch");
  if (!x) return;
  cJSON_AddNumberToObject(x, "attempt", l->attempt);
  cJSON_AddNumberToObject(x, "restarts", l->restarts);
  cJSON_AddNumberToObject(x, "world", l->world);
  add_str(x, "hosts", l->hosts, sizeof l->hosts);
  add_str(x, "excluded", l->excluded, sizeof l->excluded);
  if (!l->has_failure) {
    cJSON_AddNullToObject(x, "last_failure");
    return;
  }
  cJSON *f = cJSON_AddObjectToObject(x, "last_failure");
  if (!f) return;
  add_str(f, "reason", l->failure.reason, sizeof l->failure.reason);
  cJSON_AddNumberToObject(f, "exit_status", l->failure.exit_status);
  add_num(f, "step", l->failure.step >= 0 ? (double)l->failure.step : NAN);
  add_num(f, "time", l->failure.time);
  add_num(f, "down_s", l->failure.down_s);
}

char *statusp_reply_status(const statusp_job *j, double now, int push) {
  cJSON *o = reply_head(1, "status");
  if (!o) return NULL;
  if (push) cJSON_AddBoolToObject(o, "push", 1);
  add_str(o, "state", j->state, sizeof j->state);
  add_str(o, "model", j->model, sizeof j->model);
  cJSON_AddNumberToObject(o, "epoch", j->epoch);
  cJSON_AddNumberToObject(o, "epochs", j->epochs);
  cJSON_AddNumberToObject(o, "step", (double)j->step);
  cJSON_AddNumberToObject(o, "total_steps", (double)j->total_steps);
  add_num(o, "loss", j->loss);
  add_num(o, "train_acc", j->train_acc);
  add_num(o, "val_acc", j->val_acc);
  add_num(o, "lr", j->lr);
  add_num(o, "images_per_s", j->images_per_s);
  add_num(o, "eta_s", j->eta_s >= 0 ? j->eta_s : NAN);
  if (j->last_ckpt_step >= 0) {
    cJSON *c = cJSON_AddObjectToObject(o, "last_checkpoint");
    if (c) {
      cJSON_AddNumberToObject(c, "step", (double)j->last_ckpt_step);
      add_str(c, "path", j->last_ckpt_path, sizeof j->last_ckpt_path);
      add_num(c, "time", j->last_ckpt_time);
    }
  } else {
    cJSON_AddNullToObject(o, "last_checkpoint");
  }
  cJSON_AddNumberToObject(o, "world_size", j->world_size);
  add_launch(o, &j->launch);
  add_num(o, "uptime_s", j->start_time > 0 ? now - j->start_time : NAN);
  add_num(o, "time", now);
  return finish(o);
}

char *statusp_reply_workers(const statusp_worker *w, int n, double now) {
  cJSON *o = reply_head(1, "workers");
  cJSON *a = o ? cJSON_AddArrayToObject(o, "workers") : NULL;
  if (!a) {
    cJSON_Delete(o);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    cJSON *r = cJSON_CreateObject();
    if (!r) break;
    cJSON_AddNumberToObject(r, "rank", w[i].rank);
    add_str(r, "host", w[i].host, sizeof w[i].host);
    cJSON_AddNumberToObject(r, "pid", w[i].pid);
    add_num(r, "step_time_s", w[i].step_time_s);
    add_num(r, "images_per_s", w[i].images_per_s);
    add_num(r, "last_heartbeat", w[i].last_heartbeat);
    add_num(r, "heartbeat_age_s", w[i].last_heartbeat > 0 ? now - w[i].last_heartbeat : NAN);
    add_num(r, "comm_exposed_s", w[i].comm_exposed_s);
    cJSON_AddItemToArray(a, r);
  }
  return finish(o);
}

char *statusp_reply_metrics(const statusp_metric *m, int n) {
  cJSON *o = reply_head(1, "metrics");
  cJSON *a = o ? cJSON_AddArrayToObject(o, "points") : NULL;
  if (!a) {
    cJSON_Delete(o);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    cJSON *r = cJSON_CreateObject();
    if (!r) break;
    cJSON_AddNumberToObject(r, "step", (double)m[i].step);
    cJSON_AddNumberToObject(r, "epoch", m[i].epoch);
    add_num(r, "loss", m[i].loss);
    add_num(r, "train_acc", m[i].train_acc);
    add_num(r, "val_acc", m[i].val_acc);
    add_num(r, "lr", m[i].lr);
    add_num(r, "images_per_s", m[i].images_per_s);
    cJSON_AddItemToArray(a, r);
  }
  return finish(o);
}

char *statusp_reply_accepted(statusp_cmd cmd, int accepted, const char *state) {
  cJSON *o = reply_head(1, statusp_cmd_name(cmd));
  if (!o) return NULL;
  cJSON_AddBoolToObject(o, "accepted", accepted);
  add_str(o, "state", state, 16);
  return finish(o);
}

char *statusp_reply_ok(statusp_cmd cmd, double interval_s) {
  cJSON *o = reply_head(1, statusp_cmd_name(cmd));
  if (!o) return NULL;
  if (cmd == STATUSP_CMD_SUBSCRIBE) cJSON_AddNumberToObject(o, "interval", interval_s);
  return finish(o);
}

/* ---- Prometheus text ---- */

typedef struct {
  char *s;
  size_t n, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)k < b->cap - b->n) {
      b->n += (size_t)k;
      return;
    }
    size_t cap = 2 * b->cap + (size_t)k + 1;
    char *t = realloc(b->s, cap);
    if (!t) {
      b->oom = 1;
      return;
    }
    b->s = t;
    b->cap = cap;
  }
}

/* Label values: backslash, double quote and newline escaped, as the format requires. */
static void sb_label(sbuf *b, const char *s, size_t cap) {
  for (size_t i = 0; i < cap && s[i]; i++) {
    char c = s[i];
    if (c == '\\') sb_printf(b, "\\\\");
    else if (c == '"') sb_printf(b, "\\\"");
    else if (c == '\n') sb_printf(b, "\\n");
    else sb_printf(b, "%c", c);
  }
}

static void sb_value(sbuf *b, double v) {
  if (isnan(v)) sb_printf(b, "NaN\n");
  else if (isinf(v)) sb_printf(b, "%sInf\n", v > 0 ? "+" : "-");
  else sb_printf(b, "%.15g\n", v);
}

static void sb_head(sbuf *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sb_gauge(sbuf *b, const char *name, const char *help, double v) {
  sb_head(b, name, "gauge", help);
  sb_printf(b, "%s ", name);
  sb_value(b, v);
}

static void sb_counter(sbuf *b, const char *name, const char *help, double v) {
  sb_head(b, name, "counter", help);
  sb_printf(b, "%s ", name);
  sb_value(b, v);
}

const double statusp_step_bounds[STATUSP_STEP_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                           1,    2.5,   5,    10,  30,   60};

void statusp_step_observe(statusp_job *j, double t) {
  if (!(t >= 0)) return; /* NaN or negative: no step time to count */
  for (int i = 0; i < STATUSP_STEP_BUCKETS; i++)
    if (t <= statusp_step_bounds[i]) j->step_le[i]++;
  j->step_count++;
  j->step_sum += t;
}

/* Every known state, each a series of its own: a state change flips values, it never adds a
 * series (an info-style label would start a new one at each change). */
static const char *const known_states[] = {"starting", "training", "evaluating", "checkpointing",
                                           "stopping", "finished", "failed"};

char *statusp_prometheus(const statusp_job *j, const statusp_worker *w, int n, double now) {
  sbuf b = {malloc(4096), 0, 4096, 0};
  if (!b.s) return NULL;
  b.s[0] = 0;
  sb_head(&b, "pollen_info", "gauge", "Constant 1, labelled with the model.");
  sb_printf(&b, "pollen_info{model=\"");
  sb_label(&b, j->model, sizeof j->model);
  sb_printf(&b, "\"} 1\n");
  sb_head(&b, "pollen_state", "gauge", "1 for the job's current state, 0 for the others.");
  for (size_t k = 0; k < sizeof known_states / sizeof known_states[0]; k++)
    sb_printf(&b, "pollen_state{state=\"%s\"} %d\n", known_states[k],
              !strncmp(j->state, known_states[k], sizeof j->state));
  sb_counter(&b, "pollen_steps_total", "Optimizer steps done in the job.", (double)j->step);
  sb_counter(&b, "pollen_images_total", "Images trained in this launch, all ranks.",
             (double)j->images_total);
  if (j->launch.present)
    sb_counter(&b, "pollen_restarts_total", "Relaunches by pollen launch before this launch (failures, preemptions).",
               (double)j->launch.restarts);
  sb_head(&b, "pollen_step_seconds", "histogram", "Rank 0's seconds per step in this launch.");
  for (int i = 0; i < STATUSP_STEP_BUCKETS; i++)
    sb_printf(&b, "pollen_step_seconds_bucket{le=\"%g\"} %lld\n", statusp_step_bounds[i],
              (long long)j->step_le[i]);
  sb_printf(&b, "pollen_step_seconds_bucket{le=\"+Inf\"} %lld\n", (long long)j->step_count);
  sb_printf(&b, "pollen_step_seconds_sum ");
  sb_value(&b, j->step_sum);
  sb_printf(&b, "pollen_step_seconds_count %lld\n", (long long)j->step_count);
  sb_gauge(&b, "pollen_last_step_timestamp_seconds", "Unix time of the last step (0: none yet).",
           j->last_step_time);
  sb_gauge(&b, "pollen_epoch", "Epoch of the last step done, counted from 1 as the log does.", j->epoch);
  sb_gauge(&b, "pollen_epochs", "Epochs in the run.", j->epochs);
  sb_gauge(&b, "pollen_total_steps", "Optimizer steps in the run.", (double)j->total_steps);
  sb_gauge(&b, "pollen_loss", "Training loss (recent average).", j->loss);
  sb_gauge(&b, "pollen_train_accuracy", "Training top-1 accuracy (recent average).", j->train_acc);
  sb_gauge(&b, "pollen_val_accuracy", "Validation top-1 accuracy (NaN before the first).",
           j->val_acc);
  sb_gauge(&b, "pollen_learning_rate", "Current learning rate.", j->lr);
  sb_gauge(&b, "pollen_images_per_second", "Training throughput, all ranks (recent average).",
           j->images_per_s);
  sb_gauge(&b, "pollen_eta_seconds", "Estimated seconds to the end of the run.",
           j->eta_s >= 0 ? j->eta_s : NAN);
  sb_gauge(&b, "pollen_last_checkpoint_step", "Step of the newest checkpoint (-1: none).",
           (double)(j->last_ckpt_step >= 0 ? j->last_ckpt_step : -1));
  sb_gauge(&b, "pollen_world_size", "Ranks in the job.", j->world_size);
  sb_gauge(&b, "pollen_uptime_seconds", "Seconds since the job started.",
           j->start_time > 0 ? now - j->start_time : NAN);
  static const struct {
    const char *name, *help;
    size_t off;
  } per_rank[] = {
      {"pollen_worker_step_time_seconds", "Seconds per step on this rank.",
       offsetof(statusp_worker, step_time_s)},
      {"pollen_worker_images_per_second", "Images per second on this rank.",
       offsetof(statusp_worker, images_per_s)},
      {"pollen_worker_comm_exposed_seconds", "Communication seconds per step not hidden by compute.",
       offsetof(statusp_worker, comm_exposed_s)},
      {"pollen_worker_heartbeat_age_seconds", "Seconds since this rank's last heartbeat.", 0},
  };
  for (size_t k = 0; k < sizeof per_rank / sizeof per_rank[0]; k++) {
    if (n <= 0) break;
    sb_head(&b, per_rank[k].name, "gauge", per_rank[k].help);
    for (int i = 0; i < n; i++) {
      sb_printf(&b, "%s{rank=\"%d\",host=\"", per_rank[k].name, w[i].rank);
      sb_label(&b, w[i].host, sizeof w[i].host);
      sb_printf(&b, "\"} ");
      double v = per_rank[k].off
                     ? *(const double *)((const char *)&w[i] + per_rank[k].off)
                     : (w[i].last_heartbeat > 0 ? now - w[i].last_heartbeat : NAN);
      sb_value(&b, v);
    }
  }
  if (b.oom) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* ---- HTTP request head ---- */

static int is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

int statusp_http_parse(const char *head, size_t len, statusp_http_request *req) {
  memset(req, 0, sizeof *req);
  if (len > STATUSP_HTTP_MAX_HEAD) return 431;
  if (memchr(head, 0, len)) return 400;
  const char *p = head, *end = head + len;
  /* Request line: METHOD SP TARGET SP HTTP/1.x */
  const char *eol = memchr(p, '\n', (size_t)(end - p));
  if (!eol) return 400;
  const char *le = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
  const char *sp1 = memchr(p, ' ', (size_t)(le - p));
  if (!sp1 || sp1 == p) return 400;
  for (const char *q = p; q < sp1; q++)
    if (!is_tchar(*q)) return 400;
  const char *tgt = sp1 + 1;
  const char *sp2 = memchr(tgt, ' ', (size_t)(le - tgt));
  if (!sp2 || sp2 == tgt) return 400;
  if (le - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) || (sp2[8] != '0' && sp2[8] != '1'))
    return 400;
  int is_get = (sp1 - p == 3 && !memcmp(p, "GET", 3));
  size_t tl = (size_t)(sp2 - tgt);
  int path_ok = (tl == 8 && !memcmp(tgt, "/metrics", 8)) ||
                (tl > 8 && !memcmp(tgt, "/metrics?", 9));
  int health = (tl == 8 && !memcmp(tgt, "/healthz", 8)) ||
               (tl > 8 && !memcmp(tgt, "/healthz?", 9));
  /* Headers: each "Name: value" up to the blank line. */
  p = eol + 1;
  for (;;) {
    if (p >= end) break; /* the head may stop right after the last header */
    eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) return 400;
    le = (eol > p && eol[-1] == '\r') ? eol - 1 : eol;
    if (le == p) break; /* blank line: end of head */
    const char *colon = memchr(p, ':', (size_t)(le - p));
    if (!colon || colon == p) return 400;
    for (const char *q = p; q < colon; q++)
      if (!is_tchar(*q)) return 400;
    const char *v = colon + 1;
    while (v < le && (*v == ' ' || *v == '\t')) v++;
    const char *ve = le;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (colon - p == 13 && !strncasecmp(p, "authorization", 13)) {
      req->has_token = 1;
      req->token_len = 0;
      if (ve - v > 7 && !strncasecmp(v, "bearer ", 7)) {
        const char *t = v + 7;
        while (t < ve && *t == ' ') t++;
        size_t n = (size_t)(ve - t);
        if (n > 0 && n <= STATUSP_MAX_TOKEN) {
          memcpy(req->token, t, n);
          req->token[n] = 0;
          req->token_len = n;
        }
      }
    }
    p = eol + 1;
  }
  if (!is_get) return 405;
  if (health) {
    req->is_health = 1;
    return 0;
  }
  if (!path_ok) return 404;
  req->is_metrics = 1;
  return 0;
}

int statusp_health(const statusp_job *j, double progress_time, double now, double stall_s, char *why,
                   size_t cap) {
  double idle = now - progress_time;
  if (stall_s <= 0 || strncmp(j->state, "training", sizeof j->state) || !(idle > stall_s)) return 200;
  snprintf(why, cap, "stalled: training, and no step for %.0f s (limit %.0f s)", idle, stall_s);
  return 503;
}

int statusp_token_valid(const char *s, size_t n) {
  if (n < 16 || n > STATUSP_MAX_TOKEN) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
             c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
    if (!ok) return 0;
  }
  return 1;
}

int statusp_token_equal(const char *given, size_t given_len, const char *expected,
                        size_t expected_len) {
  /* Every byte of the expected token is looked at whatever the input: no early exit. */
  volatile unsigned char diff = (unsigned char)(given_len != expected_len);
  for (size_t i = 0; i < expected_len; i++) {
    unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
    diff |= (unsigned char)(g ^ (unsigned char)expected[i]);
  }
  return expected_len > 0 && diff == 0;
}

int statusp_parse_address(const char *spec, char *host, size_t host_cap, int *port, char *err,
                          size_t errlen) {
  const char *port_s = spec, *colon = strrchr(spec, ':');
  snprintf(host, host_cap, "127.0.0.1");
  if (colon) {
    const char *h = spec;
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h++, hl -= 2;
    if (hl == 0 || hl >= host_cap) goto bad;
    memcpy(host, h, hl);
    host[hl] = 0;
    port_s = colon + 1;
  }
  char *end;
  long p = strtol(port_s, &end, 10);
  if (!*port_s || *end || p < 0 || p > 65535) goto bad;
  unsigned char addr[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) goto bad;
  *port = (int)p;
  return 0;
bad:
  /* snprintf, not base's err_set: this file also builds alone into the fuzzer. */
  if (err && errlen)
    snprintf(err, errlen, "--status-tcp %s: not [HOST:]PORT with a numeric address and a port "
             "0..65535 (e.g. 9100 or 0.0.0.0:9100)", spec);
  return -1;
}
