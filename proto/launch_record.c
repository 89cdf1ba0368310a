/* launch_record.c - the supervisor's launch record (see launch_record.h). */
#include "proto/launch_record.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const outcomes[] = {"running", "finished", "preempted", "stopped", "failed"};
static const char *const decisions[] = {"", "done", "relaunch", "give_up", "stop"};

void launch_join_hosts(char *out, size_t cap, const char (*hosts)[64], int n) {
  size_t k = 0;
  out[0] = 0;
  for (int i = 0; i < n && k + 1 < cap; i++) {
    int w = snprintf(out + k, cap - k, "%s%s", i ? "," : "", hosts[i]);
    if (w < 0) break;
    k += (size_t)w;
  }
}

void launch_record_init(launch_record *r) {
  memset(r, 0, sizeof *r);
  r->resumed_step = r->last_step = -1;
  r->exit_status = -1;
  snprintf(r->outcome, sizeof r->outcome, "running");
  r->last_failure.step = -1;
}

static void add_hosts(cJSON *o, const char *key, char (*hosts)[64], int n) {
  cJSON *a = cJSON_AddArrayToObject(o, key);
  for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(hosts[i]));
}

static void add_num(cJSON *o, const char *key, double v) {
  if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
  else cJSON_AddNullToObject(o, key);
}

char *launch_record_json(const launch_record *r) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "v", LAUNCH_RECORD_VERSION);
  cJSON_AddNumberToObject(o, "attempt", r->attempt);
  cJSON_AddNumberToObject(o, "restarts", r->restarts);
  add_hosts(o, "hosts", (char(*)[64])r->hosts, r->n_hosts);
  cJSON_AddNumberToObject(o, "world", r->world);
  cJSON_AddNumberToObject(o, "ranks_per_node", r->ranks_per_node);
  add_hosts(o, "excluded", (char(*)[64])r->excluded, r->n_excluded);
  cJSON_AddNumberToObject(o, "start_time", r->start_time);
  add_num(o, "end_time", r->end_time > 0 ? r->end_time : NAN);
  add_num(o, "resumed_step", r->resumed_step >= 0 ? (double)r->resumed_step : NAN);
  add_num(o, "last_step", r->last_step >= 0 ? (double)r->last_step : NAN);
  add_num(o, "exit_status", r->exit_status >= 0 ? r->exit_status : NAN);
  cJSON_AddStringToObject(o, "outcome", r->outcome);
  cJSON_AddStringToObject(o, "reason", r->reason);
  cJSON_AddStringToObject(o, "decision", r->decision);
  cJSON_AddStringToObject(o, "decision_reason", r->decision_reason);
  if (r->has_last_failure) {
    const launch_failure *f = &r->last_failure;
    cJSON *x = cJSON_AddObjectToObject(o, "last_failure");
    if (x) {
      cJSON_AddStringToObject(x, "reason", f->reason);
      cJSON_AddNumberToObject(x, "exit_status", f->exit_status);
      add_num(x, "step", f->step >= 0 ? (double)f->step : NAN);
      cJSON_AddNumberToObject(x, "time", f->time);
      cJSON_AddNumberToObject(x, "down_s", f->down_s);
    }
  } else {
    cJSON_AddNullToObject(o, "last_failure");
  }
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* ---- parsing: every field checked, a reason for the first that is wrong ---- */

typedef struct {
  char *err;
  size_t errlen;
  int bad;
} checker;

static void bad(checker *c, const char *key, const char *want) {
  if (c->bad++) return;
  snprintf(c->err, c->errlen, "launch record: \"%s\" is not %s", key, want);
}

static double get_num(checker *c, const cJSON *o, const char *key, int nullable, double fallback) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  if (cJSON_IsNumber(x) && isfinite(x->valuedouble)) return x->valuedouble;
  if (nullable && (!x || cJSON_IsNull(x))) return fallback;
  bad(c, key, nullable ? "a number or null" : "a number");
  return fallback;
}

static int get_int(checker *c, const cJSON *o, const char *key, int lo, int hi) {
  double v = get_num(c, o, key, 0, lo);
  if (v < lo || v > hi || v != (int)v) bad(c, key, "a whole number in range");
  return (int)v;
}

static void get_str(checker *c, const cJSON *o, const char *key, char *out, size_t cap,
                    const char *const *allowed, int n_allowed) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsString(x) || strlen(x->valuestring) >= cap) return bad(c, key, "a string");
  if (allowed) {
    int ok = 0;
    for (int i = 0; i < n_allowed; i++) ok |= !strcmp(x->valuestring, allowed[i]);
    if (!ok) return bad(c, key, "a known value");
  }
  snprintf(out, cap, "%s", x->valuestring);
}

static int get_hosts(checker *c, const cJSON *o, const char *key, char (*out)[64]) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > LAUNCH_MAX_HOSTS) {
    bad(c, key, "an array of at most 64 host names");
    return 0;
  }
  int n = 0;
  const cJSON *h;
  cJSON_ArrayForEach(h, a) {
    if (!cJSON_IsString(h) || !h->valuestring[0] || strlen(h->valuestring) >= 64) {
      bad(c, key, "an array of host names");
      return 0;
    }
    snprintf(out[n++], 64, "%s", h->valuestring);
  }
  return n;
}

static void parse_failure(checker *c, const cJSON *x, launch_record *r) {
  if (!x || cJSON_IsNull(x)) return;
  if (!cJSON_IsObject(x)) return bad(c, "last_failure", "an object or null");
  launch_failure *f = &r->last_failure;
  r->has_last_failure = 1;
  get_str(c, x, "reason", f->reason, sizeof f->reason, NULL, 0);
  f->exit_status = get_int(c, x, "exit_status", 0, 255);
  f->step = (int64_t)get_num(c, x, "step", 1, -1);
  f->time = get_num(c, x, "time", 0, 0);
  f->down_s = get_num(c, x, "down_s", 0, 0);
}

int launch_record_parse(const char *text, launch_record *r, char *err, size_t errlen) {
  launch_record_init(r);
  cJSON *o = cJSON_Parse(text);
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    snprintf(err, errlen, "launch record: not a JSON object");
    return -1;
  }
  checker c = {err, errlen, 0};
  int v = get_int(&c, o, "v", 1, 1000);
  if (!c.bad && v > LAUNCH_RECORD_VERSION) {
    snprintf(err, errlen, "launch record: version %d is newer than this pollen's %d; upgrade pollen", v,
             LAUNCH_RECORD_VERSION);
    cJSON_Delete(o);
    return -1;
  }
  r->attempt = get_int(&c, o, "attempt", 1, 1 << 30);
  r->restarts = get_int(&c, o, "restarts", 0, 1 << 30);
  r->n_hosts = get_hosts(&c, o, "hosts", r->hosts);
  r->world = get_int(&c, o, "world", 0, 1 << 20);
  r->ranks_per_node = get_int(&c, o, "ranks_per_node", 0, 4096);
  r->n_excluded = get_hosts(&c, o, "excluded", r->excluded);
  r->start_time = get_num(&c, o, "start_time", 0, 0);
  r->end_time = get_num(&c, o, "end_time", 1, 0);
  r->resumed_step = (int64_t)get_num(&c, o, "resumed_step", 1, -1);
  r->last_step = (int64_t)get_num(&c, o, "last_step", 1, -1);
  r->exit_status = (int)get_num(&c, o, "exit_status", 1, -1);
  get_str(&c, o, "outcome", r->outcome, sizeof r->outcome, outcomes, (int)(sizeof outcomes / sizeof *outcomes));
  get_str(&c, o, "reason", r->reason, sizeof r->reason, NULL, 0);
  get_str(&c, o, "decision", r->decision, sizeof r->decision, decisions, (int)(sizeof decisions / sizeof *decisions));
  get_str(&c, o, "decision_reason", r->decision_reason, sizeof r->decision_reason, NULL, 0);
  parse_failure(&c, cJSON_GetObjectItemCaseSensitive(o, "last_failure"), r);
  cJSON_Delete(o);
  return c.bad ? -1 : 0;
}
