/* outcome.c - JOB_DIR/outcome.json (see outcome.h). */
#include "proto/outcome.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"

static const char *const states[] = {"running", "finished", "stopped", "failed"};

/* JSON string body of s into out (cap bytes), escaping what JSON requires; truncates. */
static void json_escape(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
    else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
    else out[n++] = (char)c;
  }
  out[n] = 0;
}

static void json_num(double v, const char *fmt, char *out, size_t cap) {
  if (isfinite(v)) snprintf(out, cap, fmt, v);
  else snprintf(out, cap, "null");
}

int outcome_write(const char *job_dir, const job_outcome *o) {
  char path[4200], tmp[4220], msg[3200], va[32], ba[32], buf[OUTCOME_MAX_BYTES];
  json_escape(o->message, msg, sizeof msg);
  json_num(o->val_acc, "%.6g", va, sizeof va);
  json_num(o->best_val_acc, "%.6g", ba, sizeof ba);
  int n = snprintf(buf, sizeof buf,
                   "{\"v\":%d,\"state\":\"%s\",\"exit_status\":%d,\"step\":%lld,\"epoch\":%lld,"
                   "\"epochs_done\":%lld,\"val_acc\":%s,\"best_val_acc\":%s,\"message\":\"%s\","
                   "\"start_time\":%.3f,\"time\":%.3f}\n",
                   OUTCOME_VERSION, o->state, o->exit_status, (long long)o->step, (long long)o->epoch,
                   (long long)o->epochs_done, va, ba, msg, o->start_time, o->time);
  if (n < 0 || (size_t)n >= sizeof buf) return errno = EOVERFLOW, -1;
  snprintf(path, sizeof path, "%s/outcome.json", job_dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int bad = write(fd, buf, (size_t)n) != n || fsync(fd) != 0;
  int saved = errno;
  if (close(fd) != 0 && !bad) bad = 1, saved = errno;
  if (!bad && rename(tmp, path) == 0) return 0;
  unlink(tmp);
  errno = saved;
  return -1;
}

static int get_num(const cJSON *o, const char *k, int nullable, double *v) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
  if (cJSON_IsNumber(x)) return *v = x->valuedouble, 0;
  if (nullable && (cJSON_IsNull(x) || !x)) return *v = NAN, 0;
  return -1;
}

int outcome_read(const char *job_dir, job_outcome *o, char *err, size_t errlen) {
  char path[4200], buf[OUTCOME_MAX_BYTES + 1];
  snprintf(path, sizeof path, "%s/outcome.json", job_dir);
  memset(o, 0, sizeof *o);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return 1;
    err_set(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  if (n > OUTCOME_MAX_BYTES) {
    err_set(err, errlen, "%s: over %d bytes, not a launch outcome", path, OUTCOME_MAX_BYTES);
    return -1;
  }
  buf[n] = 0;
  cJSON *j = cJSON_ParseWithLength(buf, n);
  int rc = -1;
  double v, step, epoch, done = 0, status;
  const cJSON *state = cJSON_GetObjectItemCaseSensitive(j, "state");
  const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
  if (!cJSON_IsObject(j)) {
    err_set(err, errlen, "%s: not JSON", path);
  } else if (get_num(j, "v", 0, &v) != 0 || v < 1 || v != floor(v)) {
    err_set(err, errlen, "%s: no version \"v\"", path);
  } else if (v > OUTCOME_VERSION) {
    err_set(err, errlen, "%s: version %g is newer than this pollen reads (%d); use a newer pollen", path, v,
            OUTCOME_VERSION);
  } else if (!cJSON_IsString(state) || (msg && !cJSON_IsString(msg)) || get_num(j, "exit_status", 0, &status) ||
             get_num(j, "step", 0, &step) || get_num(j, "epoch", 0, &epoch) ||
             (v >= 2 && get_num(j, "epochs_done", 0, &done)) ||
             get_num(j, "val_acc", 1, &o->val_acc) || get_num(j, "best_val_acc", 1, &o->best_val_acc) ||
             get_num(j, "start_time", 0, &o->start_time) || get_num(j, "time", 0, &o->time) ||
             fabs(status) > 1000 || step < 0 || epoch < 0 || step > 9e15 || epoch > 9e15 || done < 0 ||
             done > 9e15) {
    err_set(err, errlen, "%s: a field is missing or of the wrong type", path);
  } else {
    for (size_t i = 0; i < sizeof states / sizeof *states; i++)
      if (!strcmp(state->valuestring, states[i])) rc = 0;
    if (rc) err_set(err, errlen, "%s: unknown state '%.20s'", path, state->valuestring);
    snprintf(o->state, sizeof o->state, "%s", state->valuestring);
    snprintf(o->message, sizeof o->message, "%s", msg ? msg->valuestring : "");
    o->exit_status = (int)status, o->step = (int64_t)step;
    /* Version 1's "epoch" was the count done; which epoch its last step fell in is unknown. */
    if (v >= 2) o->epoch = (int64_t)epoch, o->epochs_done = (int64_t)done;
    else o->epoch = -1, o->epochs_done = (int64_t)epoch;
  }
  cJSON_Delete(j);
  return rc;
}
