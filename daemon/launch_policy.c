/* launch_policy.c - the supervisor's decisions (see launch_policy.h). */
#include "daemon/launch_policy.h"

#include <stdio.h>
#include <string.h>

#include "base/core.h"

static int add_host(const char *word, size_t len, char (*hosts)[64], int n, int max, char *err, size_t errlen) {
  if (n >= max) {
    snprintf(err, errlen, "more than %d hosts; pollen launch supervises at most %d", max, max);
    return -1;
  }
  if (len == 0 || len >= 64) {
    snprintf(err, errlen, "host name '%.*s' is %s", (int)(len > 80 ? 80 : len), word,
             len ? "longer than 63 characters" : "empty");
    return -1;
  }
  memcpy(hosts[n], word, len);
  hosts[n][len] = 0;
  return 0;
}

int launch_parse_hostfile(const char *text, char (*hosts)[64], int max, char *err, size_t errlen) {
  int n = 0;
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    if (!end) end = line + strlen(line);
    const char *w = line;
    while (w < end && (*w == ' ' || *w == '\t' || *w == '\r')) w++;
    size_t len = 0;
    while (w + len < end && w[len] != ' ' && w[len] != '\t' && w[len] != '\r' && w[len] != '#') len++;
    if (len > 0 && add_host(w, len, hosts, n++, max, err, errlen)) return -1;
    line = *end ? end + 1 : end;
  }
  if (n == 0) snprintf(err, errlen, "names no host (one host a line: 'NAME slots=K')");
  return n ? n : -1;
}

int launch_parse_host_list(const char *list, char (*hosts)[64], int max, char *err, size_t errlen) {
  int n = 0;
  for (const char *p = list;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (add_host(p, len, hosts, n++, max, err, errlen)) return -1;
    if (!end) break;
    p = end + 1;
  }
  return n;
}

int launch_hosts_to_use(int answering, int total, int per_host, int global_batch, int min_hosts, char *why,
                        size_t whylen) {
  if (answering < min_hosts) {
    snprintf(why, whylen, "%d of %d host(s) answer, fewer than --min-hosts %d", answering, total, min_hosts);
    return 0;
  }
  for (int n = answering; n >= min_hosts && n >= 1; n--)
    if (global_batch % (n * per_host) == 0) return n;
  snprintf(why, whylen, "no world of %d..%d host(s) x %d rank(s) divides the global --batch %d", min_hosts,
           answering, per_host, global_batch);
  return 0;
}

void launch_policy_init(launch_policy *p, int max_restarts, double backoff_s) {
  memset(p, 0, sizeof *p);
  p->max_restarts = max_restarts;
  p->backoff_s = p->next_backoff_s = backoff_s;
  p->failed_step = -2;
  p->best_step = -1;
}

/* The pause before a relaunch: the base one after a launch that got further than any
 * before, doubling while none does. */
static double pause_for(launch_policy *p, int progressed) {
  if (progressed) p->next_backoff_s = p->backoff_s;
  double wait = p->next_backoff_s;
  p->next_backoff_s = wait * 2 > LAUNCH_BACKOFF_MAX_S ? LAUNCH_BACKOFF_MAX_S : wait * 2;
  return wait;
}

launch_decision launch_policy_after(launch_policy *p, int exit_status, int stopping, int64_t resumed_step,
                                    int64_t last_step, double *wait_s, char *why, size_t whylen) {
  why[0] = 0;
  *wait_s = 0;
  if (exit_status == EXIT_OK) return LAUNCH_DONE;
  if (stopping) return LAUNCH_STOP;
  if (exit_status == EXIT_USAGE && last_step < 0 && resumed_step < 0) {
    snprintf(why, whylen, "pollen train rejected its arguments (exit 2, message above); fix them and launch again");
    return LAUNCH_GIVE_UP;
  }
  int failed = exit_status != EXIT_PREEMPTED;
  int64_t reached = last_step >= 0 ? last_step : resumed_step;
  if (failed) {
    p->same_step_failures = reached == p->failed_step ? p->same_step_failures + 1 : 1;
    p->failed_step = reached;
    if (p->same_step_failures >= LAUNCH_SAME_STEP_LIMIT) {
      char where[64];
      if (reached < 0) snprintf(where, sizeof where, "before their first step");
      else snprintf(where, sizeof where, "at step %lld", (long long)reached);
      snprintf(why, whylen,
               "%d launches in a row failed %s: a bug or bad data, not a fault a relaunch cures "
               "(the reasons are above and in launch.jsonl)",
               p->same_step_failures, where);
      return LAUNCH_GIVE_UP;
    }
  } else {
    p->same_step_failures = 0;
    p->failed_step = -2;
  }
  if (p->restarts >= p->max_restarts) {
    snprintf(why, whylen, "the restart budget is spent (--max-restarts %d)", p->max_restarts);
    return LAUNCH_GIVE_UP;
  }
  p->restarts++;
  *wait_s = pause_for(p, !failed || last_step > p->best_step);
  if (last_step > p->best_step) p->best_step = last_step;
  return LAUNCH_RELAUNCH;
}
