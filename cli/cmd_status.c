/* cmd_status.c - `pollen status JOB_DIR` and `pollen ctl JOB_DIR checkpoint|stop`: clients
 * of the job's status socket (daemon/status_server.h, protocol in proto/README.md).
 *
 * When no job answers, status says so and shows what the folder still knows: how the last
 * launch ended (outcome.json: finished, stopped, failed, or killed when it never said), the
 * newest line of metrics.jsonl and the checkpoint files. Exit statuses: 0 answered, 1 error or
 * request not accepted, 2 usage, 3 job not running. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/status_server.h"
#include "proto/metrics.h"
#include "proto/launch_record.h"
#include "proto/outcome.h"

#define STATUS_EXIT_NOT_RUNNING 3
#define REPLY_MAX (16u << 20)

/* ---- talking to the socket ---- */

/* Connects, or returns -1 when no job is serving JOB_DIR; dies on other errors. */
static int connect_job(const char *dir) {
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    die("job folder %s: %s", dir, errno ? strerror(errno) : "not a folder");
  int fd = status_server_connect(dir);
  if (fd >= 0) return fd;
  if (errno == ENOENT || errno == ECONNREFUSED) return -1;
  if (errno == EACCES)
    die("cannot connect to %s/status.sock: permission denied (only the job's owner may)", dir);
  die("cannot connect to %s/status.sock: %s", dir, strerror(errno));
}

/* Sends one request line and reads one reply line (malloc'd). NULL: the job went away. */
static char *request(int fd, const char *line, int timeout_ms) {
  size_t n = strlen(line);
  for (size_t off = 0; off < n;) {
    ssize_t k = send(fd, line + off, n - off, MSG_NOSIGNAL);
    if (k <= 0) return NULL;
    off += (size_t)k;
  }
  size_t len = 0, cap = 4096;
  char *buf = xmalloc(cap);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) die("the job did not answer within %d s; it may be overloaded, try again", timeout_ms / 1000);
    if (r < 0) continue;
    if (cap - len < 2048) {
      if (cap >= REPLY_MAX) die("the job's reply is over %u bytes; is that a pollen job?", REPLY_MAX);
      cap *= 2;
      buf = xrealloc(buf, cap);
    }
    ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
    if (k <= 0) {
      free(buf);
      return NULL;
    }
    char *nl = memchr(buf + len, '\n', (size_t)k);
    len += (size_t)k;
    if (nl) {
      *nl = 0;
      return buf;
    }
  }
}

static cJSON *parse_reply(const char *line) {
  cJSON *o = cJSON_Parse(line);
  if (!cJSON_IsObject(o)) die("the job's reply is not JSON: %.80s", line);
  return o;
}

static double num(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : "?";
}

static int reply_ok(const cJSON *o) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok")); }

/* ---- human output ---- */

static const char *fmt_duration(double s, char *buf, size_t cap) {
  if (!isfinite(s) || s < 0) return "-";
  long t = (long)(s + 0.5);
  if (t >= 86400) snprintf(buf, cap, "%ldd %02ldh", t / 86400, t % 86400 / 3600);
  else if (t >= 3600) snprintf(buf, cap, "%ldh %02ldm", t / 3600, t % 3600 / 60);
  else if (t >= 60) snprintf(buf, cap, "%ldm %02lds", t / 60, t % 60);
  else snprintf(buf, cap, "%lds", t);
  return buf;
}

static const char *fmt_pct(double v, char *buf, size_t cap) {
  if (!isfinite(v)) return "-";
  snprintf(buf, cap, "%.1f%%", 100 * v);
  return buf;
}

static const char *fmt_num(double v, const char *fmt, char *buf, size_t cap) {
  if (!isfinite(v)) return "-";
  snprintf(buf, cap, fmt, v);
  return buf;
}

/* What pollen launch said: the launch, its hosts, the excluded ones, the last failure. */
static void print_launch(const cJSON *o) {
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "launch");
  if (!cJSON_IsObject(l)) return;
  char a[32], b[32], c[32];
  printf("launch      %.0f by pollen launch, %.0f restart%s; hosts %s (world %.0f)", num(l, "attempt"),
         num(l, "restarts"), num(l, "restarts") == 1 ? "" : "s", str(l, "hosts"), num(l, "world"));
  if (str(l, "excluded")[0]) printf("; excluded %s", str(l, "excluded"));
  printf("\n");
  const cJSON *f = cJSON_GetObjectItemCaseSensitive(l, "last_failure");
  if (cJSON_IsObject(f))
    printf("failure     %s (exit %.0f) after step %s, %s ago; down %s before this launch\n", str(f, "reason"),
           num(f, "exit_status"), fmt_num(num(f, "step"), "%.0f", a, sizeof a),
           fmt_duration(num(o, "time") - num(f, "time"), b, sizeof b), fmt_duration(num(f, "down_s"), c, sizeof c));
}

static void print_status(const char *dir, const cJSON *o) {
  char a[32], b[32], c[32];
  double step = num(o, "step"), total = num(o, "total_steps");
  printf("job         %s  (%s)\n", dir, str(o, "state"));
  printf("model       %s, %g worker%s\n", str(o, "model"), num(o, "world_size"),
         num(o, "world_size") == 1 ? "" : "s");
  printf("progress    epoch %g/%g, step %.0f/%.0f", num(o, "epoch"), num(o, "epochs"), step, total);
  if (total > 0) printf(" (%.1f%%)", 100 * step / total);
  printf("\n");
  printf("loss        %s   train acc %s   val acc %s\n", fmt_num(num(o, "loss"), "%.4f", a, sizeof a),
         fmt_pct(num(o, "train_acc"), b, sizeof b), fmt_pct(num(o, "val_acc"), c, sizeof c));
  printf("lr          %s   %s images/s\n", fmt_num(num(o, "lr"), "%.4g", a, sizeof a),
         fmt_num(num(o, "images_per_s"), "%.1f", b, sizeof b));
  printf("eta         %s   uptime %s\n", fmt_duration(num(o, "eta_s"), a, sizeof a),
         fmt_duration(num(o, "uptime_s"), b, sizeof b));
  const cJSON *ck = cJSON_GetObjectItemCaseSensitive(o, "last_checkpoint");
  if (cJSON_IsObject(ck))
    printf("checkpoint  step %.0f, %s (%s ago)\n", num(ck, "step"), str(ck, "path"),
           fmt_duration(num(o, "time") - num(ck, "time"), a, sizeof a));
  else
    printf("checkpoint  none yet\n");
  print_launch(o);
}

static void print_workers(const cJSON *o) {
  const cJSON *ws = cJSON_GetObjectItemCaseSensitive(o, "workers");
  char a[32], b[32], c[32], d[32];
  printf("\n%4s  %-20s %8s %9s %9s %10s %9s\n", "rank", "host", "pid", "step s", "images/s",
         "heartbeat", "comm s");
  const cJSON *w;
  cJSON_ArrayForEach(w, ws) {
    printf("%4.0f  %-20.20s %8.0f %9s %9s %10s %9s\n", num(w, "rank"), str(w, "host"), num(w, "pid"),
           fmt_num(num(w, "step_time_s"), "%.3f", a, sizeof a),
           fmt_num(num(w, "images_per_s"), "%.1f", b, sizeof b),
           fmt_num(num(w, "heartbeat_age_s"), "%.1fs ago", c, sizeof c),
           fmt_num(num(w, "comm_exposed_s"), "%.3f", d, sizeof d));
  }
}

/* ---- job not running: what the folder knows ---- */

/* What JOB_DIR/metrics.jsonl's tail says: its newest record, and the newest one with a
 * validation accuracy (a job stopped mid-epoch has none on its last line). */
typedef struct {
  metrics_record last, last_val;
  int has_last, has_val;
} newest_metrics;

static void keep_newest(const metrics_record *r, void *ctx) {
  newest_metrics *n = ctx;
  n->last = *r, n->has_last = 1;
  if (isfinite(r->val_acc)) n->last_val = *r, n->has_val = 1;
}

/* A killed job may leave half a line; metrics_read skips it. Nothing when no readable file. */
static newest_metrics read_newest_metrics(const char *dir) {
  newest_metrics n = {0};
  char path[4096], err[512];
  snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
  FILE *f = fopen(path, "rb");
  if (!f) return n;
  if (metrics_read(f, 65536, keep_newest, &n, NULL, err, sizeof err) != 0) {
    log_warn("%s: %s", path, err);
    n = (newest_metrics){0};
  }
  fclose(f);
  return n;
}

static void add_number(cJSON *o, const char *key, double v) {
  if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
  else cJSON_AddNullToObject(o, key);
}

/* A record as the line has it, less its version. */
static cJSON *record_json(const metrics_record *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "step", (double)r->step);
  cJSON_AddNumberToObject(o, "epoch", r->epoch);
  add_number(o, "loss", r->loss);
  add_number(o, "train_acc", r->train_acc);
  add_number(o, "val_acc", r->val_acc);
  add_number(o, "lr", r->lr);
  add_number(o, "images_per_s", r->images_per_s);
  add_number(o, "comm_exposed_s", r->comm_exposed_s);
  add_number(o, "elapsed_s", r->elapsed_s);
  cJSON_AddNumberToObject(o, "time", (double)r->time);
  return o;
}

typedef struct {
  char name[256];
  double mtime;
  long long bytes;
} ckpt_file;

static int by_mtime_desc(const void *a, const void *b) {
  double x = ((const ckpt_file *)a)->mtime, y = ((const ckpt_file *)b)->mtime;
  return (x < y) - (x > y);
}

static int list_checkpoints(const char *dir, ckpt_file **out) {
  char path[4096];
  snprintf(path, sizeof path, "%s/checkpoints", dir);
  DIR *d = opendir(path);
  *out = NULL;
  if (!d) return 0;
  int n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 6 || len >= sizeof((*out)->name) || strcmp(e->d_name + len - 5, ".ckpt")) continue;
    char p[4096 + 256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      *out = xrealloc(*out, (size_t)cap * sizeof **out);
    }
    snprintf((*out)[n].name, sizeof (*out)[n].name, "%s", e->d_name);
    (*out)[n].mtime = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
    (*out)[n].bytes = (long long)st.st_size;
    n++;
  }
  closedir(d);
  if (n) qsort(*out, (size_t)n, sizeof **out, by_mtime_desc);
  return n;
}

/* How the last launch ended. A launch records "running" when it starts and its end when it
 * ends: "running" with nothing answering, or no record from a job that has a config, is a
 * launch killed outright. "none": no launch ever got that far here. */
static const char *ended_state(const char *dir, job_outcome *o, int *has) {
  char err[512], path[4200];
  int rc = outcome_read(dir, o, err, sizeof err);
  *has = rc == 0;
  if (rc < 0) log_warn("%s", err);
  if (rc == 0) return strcmp(o->state, "running") ? o->state : "killed";
  snprintf(path, sizeof path, "%s/config.json", dir);
  return rc < 0 ? "unknown" : access(path, F_OK) == 0 ? "killed" : "none";
}

static cJSON *outcome_json(const job_outcome *o) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "state", o->state);
  cJSON_AddNumberToObject(j, "exit_status", o->exit_status);
  cJSON_AddNumberToObject(j, "step", (double)o->step);
  add_number(j, "epoch", o->epoch >= 1 ? (double)o->epoch : NAN);
  cJSON_AddNumberToObject(j, "epochs_done", (double)o->epochs_done);
  add_number(j, "val_acc", o->val_acc);
  add_number(j, "best_val_acc", o->best_val_acc);
  cJSON_AddStringToObject(j, "message", o->message);
  cJSON_AddNumberToObject(j, "start_time", o->start_time);
  cJSON_AddNumberToObject(j, "time", o->time);
  return j;
}

static void print_ended(const char *state, const job_outcome *o, int has, const metrics_record *m) {
  char a[32], b[32], when[64];
  time_t t = (time_t)o->time;
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
  if (!strcmp(state, "killed")) {
    printf("ended         killed or crashed (no end recorded)");
    if (m) printf(" after step %lld", (long long)m->step);
    printf("; run the same command again to resume from the last checkpoint\n");
  } else if (!has) {
    printf("ended         %s\n", strcmp(state, "none") ? "unknown (outcome.json unreadable)" : "no launch recorded");
  } else {
    char in_epoch[48] = "";
    if (o->epoch >= 1) snprintf(in_epoch, sizeof in_epoch, " (epoch %lld)", (long long)o->epoch);
    printf("ended         %s (exit %d) at step %lld%s, %lld epoch%s done, %s; val acc %s (best %s)\n", state,
           o->exit_status, (long long)o->step, in_epoch, (long long)o->epochs_done, o->epochs_done == 1 ? "" : "s",
           when, fmt_pct(o->val_acc, a, sizeof a), fmt_pct(o->best_val_acc, b, sizeof b));
    if (!strcmp(state, "failed")) printf("error         %s\n", o->message);
    if (!strcmp(state, "stopped")) printf("              run the same command again to resume\n");
  }
}

/* The last line of JOB/launch.jsonl: how the supervisor's last launch ended and what it
 * decided. 0 with r filled, 1 when there is none, -1 when it does not parse (err says). */
static int last_launch(const char *dir, launch_record *r, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, LAUNCH_RECORD_FILE);
  FILE *f = fopen(path, "r");
  if (!f) return 1;
  char line[16384], last[16384] = "";
  while (fgets(line, sizeof line, f))
    if (line[0] == '{') memcpy(last, line, sizeof last);
  fclose(f);
  if (!last[0]) return 1;
  return launch_record_parse(last, r, err, errlen);
}

static cJSON *launch_json(const launch_record *r) {
  char *text = launch_record_json(r);
  cJSON *o = text ? cJSON_Parse(text) : NULL;
  free(text);
  return o ? o : cJSON_CreateNull();
}

static void print_last_launch(const launch_record *r) {
  char hosts[1024];
  launch_join_hosts(hosts, sizeof hosts, r->hosts, r->n_hosts);
  printf("supervisor    launch %d (%d restart%s) on %s: %s%s%s", r->attempt, r->restarts, r->restarts == 1 ? "" : "s",
         r->n_hosts ? hosts : "no host", r->outcome, r->reason[0] ? ", " : "", r->reason);
  if (!strcmp(r->decision, "give_up")) printf("; gave up: %s", r->decision_reason);
  else if (!strcmp(r->decision, "stop")) printf("; stopped by a signal: launch again to resume");
  printf("\n");
}

static int show_offline(const char *dir, int json) {
  launch_record lr;
  char lerr[256];
  int has_launch = last_launch(dir, &lr, lerr, sizeof lerr);
  if (has_launch < 0) fprintf(stderr, "pollen status: warning: %s/%s: %s\n", dir, LAUNCH_RECORD_FILE, lerr);
  job_outcome oc;
  int has_oc;
  const char *state = ended_state(dir, &oc, &has_oc);
  newest_metrics nm = read_newest_metrics(dir);
  const metrics_record *m = nm.has_last ? &nm.last : NULL, *v = nm.has_val ? &nm.last_val : NULL;
  ckpt_file *ck;
  int n = list_checkpoints(dir, &ck);
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", 0);
    cJSON_AddBoolToObject(o, "running", 0);
    cJSON_AddStringToObject(o, "code", "not_running");
    cJSON_AddStringToObject(o, "job_dir", dir);
    cJSON_AddStringToObject(o, "state", state);
    if (has_oc) cJSON_AddItemToObject(o, "outcome", outcome_json(&oc));
    else cJSON_AddNullToObject(o, "outcome");
    if (m) cJSON_AddItemToObject(o, "last_metrics", record_json(m));
    else cJSON_AddNullToObject(o, "last_metrics");
    if (v) cJSON_AddItemToObject(o, "last_validation", record_json(v));
    if (has_launch == 0) cJSON_AddItemToObject(o, "last_launch", launch_json(&lr));
    else cJSON_AddNullToObject(o, "last_launch");
    cJSON *a = cJSON_AddArrayToObject(o, "checkpoints");
    for (int i = 0; i < n; i++) {
      cJSON *c = cJSON_CreateObject();
      cJSON_AddStringToObject(c, "name", ck[i].name);
      cJSON_AddNumberToObject(c, "mtime", ck[i].mtime);
      cJSON_AddNumberToObject(c, "bytes", (double)ck[i].bytes);
      cJSON_AddItemToArray(a, c);
    }
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
  } else {
    char a[32], b[32], c[32], d[32], e[32];
    printf("job not running: nothing answers on %s/status.sock\n", dir);
    print_ended(state, &oc, has_oc, m);
    if (has_launch == 0) print_last_launch(&lr);
    if (m) {
      printf("last metrics  step %lld, epoch %lld, loss %s, train acc %s, val acc %s, lr %s, %s images/s\n",
             (long long)m->step, (long long)m->epoch, fmt_num(m->loss, "%.4f", a, sizeof a), fmt_pct(m->train_acc, b, sizeof b),
             fmt_pct(m->val_acc, c, sizeof c), fmt_num(m->lr, "%.4g", d, sizeof d),
             fmt_num(m->images_per_s, "%.1f", e, sizeof e));
      if (v)
        printf("last val acc  %s at step %lld (end of epoch %lld)\n", fmt_pct(v->val_acc, c, sizeof c), (long long)v->step,
               (long long)v->epoch);
    } else {
      printf("last metrics  none (no readable %s/metrics.jsonl)\n", dir);
    }
    if (n == 0) printf("checkpoints   none in %s/checkpoints/\n", dir);
    for (int i = 0; i < n && i < 10; i++) {
      char when[64];
      time_t t = (time_t)ck[i].mtime;
      struct tm tm;
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
      printf("%-13s %s  %s  %.1f MB\n", i ? "" : "checkpoints", ck[i].name, when, ck[i].bytes / 1e6);
    }
    if (n > 10) printf("              ... and %d older\n", n - 10);
  }
  free(ck);
  return STATUS_EXIT_NOT_RUNNING;
}

/* ---- commands ---- */

static void status_usage(FILE *to) {
  fprintf(to,
          "usage: pollen status JOB_DIR [--json] [--workers] [--watch [SECS]] [--count N]\n\n"
          "Asks the job running in JOB_DIR (through JOB_DIR/status.sock) how it is doing.\n"
          "If no job runs there, says so and shows how its last launch ended (finished,\n"
          "stopped, failed, or killed), the last metrics and checkpoints.\n\n"
          "  --json         print the job's raw JSON answer (with --workers: the per-rank one)\n"
          "  --workers      also print the per-rank table\n"
          "  --watch [SECS] refresh every SECS seconds (default 2) until interrupted\n"
          "  --count N      with --watch: stop after N refreshes\n"
          "  --help\n\n"
          "exit status: 0 answered, 1 error, 2 usage, 3 job not running (however it ended:\n"
          "see the 'ended' line, or \"state\" with --json)\n");
}

/* One look at the job: 0, or STATUS_EXIT_NOT_RUNNING. */
static int status_once(const char *dir, int json, int workers) {
  int fd = connect_job(dir);
  if (fd < 0) return show_offline(dir, json);
  char *st = request(fd, "{\"cmd\":\"status\"}\n", 5000);
  char *wk = st && workers ? request(fd, "{\"cmd\":\"workers\"}\n", 5000) : NULL;
  close(fd);
  if (!st || (workers && !wk)) {
    free(st);
    return show_offline(dir, json); /* it stopped while we asked */
  }
  cJSON *o = parse_reply(st), *w = wk ? parse_reply(wk) : NULL;
  if (!reply_ok(o) || (w && !reply_ok(w)))
    die("the job answered with an error: %s", reply_ok(o) ? wk : st);
  if (json) {
    printf("%s\n", workers ? wk : st);
  } else {
    print_status(dir, o);
    if (w) print_workers(w);
  }
  cJSON_Delete(o);
  cJSON_Delete(w);
  free(st);
  free(wk);
  return EXIT_OK;
}

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'},   {"workers", no_argument, NULL, 'w'},
      {"watch", optional_argument, NULL, 'W'}, {"count", required_argument, NULL, 'n'},
      {"help", no_argument, NULL, 'h'},   {NULL, 0, NULL, 0},
  };
  int json = 0, workers = 0, watch = 0;
  double every = 2;
  long count = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'j': json = 1; break;
      case 'w': workers = 1; break;
      case 'W':
        watch = 1;
        /* "--watch 5" as well as "--watch=5" */
        if (!optarg && optind < argc && argv[optind][0] >= '0' && argv[optind][0] <= '9' &&
            strspn(argv[optind], "0123456789.") == strlen(argv[optind]))
          optarg = argv[optind++];
        if (optarg) every = cli_parse_double("--watch", optarg, 0.1, 86400);
        break;
      case 'n': count = cli_parse_long("--count", optarg, 1, 1000000000L); break;
      case 'h': status_usage(stdout); return EXIT_OK;
      default: return cli_usage_error("status");
    }
  }
  if (optind != argc - 1) {
    status_usage(stderr);
    return EXIT_USAGE;
  }
  const char *dir = argv[optind];
  if (!watch) return status_once(dir, json, workers);
  int tty = cli_is_tty() && !json;
  for (long i = 0;; i++) {
    if (tty) printf("\033[H\033[2J");
    int rc = status_once(dir, json, workers);
    fflush(stdout);
    if (rc != EXIT_OK || (count && i + 1 >= count)) return rc;
    usleep((useconds_t)(every * 1e6));
  }
}

static void ctl_usage(FILE *to) {
  fprintf(to,
          "usage: pollen ctl JOB_DIR checkpoint|stop [--json]\n\n"
          "  checkpoint   the job writes a checkpoint at its next step boundary\n"
          "  stop         the job writes a checkpoint and stops cleanly (exit status 75:\n"
          "               launch it again to resume)\n"
          "  --json       print the job's raw JSON answer\n"
          "  --help\n\n"
          "exit status: 0 accepted, 1 not accepted or error, 2 usage, 3 job not running\n");
}

int cmd_ctl(int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  int json = 0, c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (c == 'j') json = 1;
    else if (c == 'h') {
      ctl_usage(stdout);
      return EXIT_OK;
    } else {
      return cli_usage_error("ctl");
    }
  }
  if (optind != argc - 2 || (strcmp(argv[optind + 1], "checkpoint") && strcmp(argv[optind + 1], "stop"))) {
    ctl_usage(stderr);
    return EXIT_USAGE;
  }
  const char *dir = argv[optind], *what = argv[optind + 1];
  int fd = connect_job(dir);
  char req[64];
  snprintf(req, sizeof req, "{\"cmd\":\"%s\"}\n", what);
  char *line = fd >= 0 ? request(fd, req, 5000) : NULL;
  if (fd >= 0) close(fd);
  if (!line) {
    if (json) printf("{\"ok\":false,\"running\":false,\"code\":\"not_running\"}\n");
    else printf("job not running: nothing answers on %s/status.sock\n", dir);
    return STATUS_EXIT_NOT_RUNNING;
  }
  cJSON *o = parse_reply(line);
  int accepted = reply_ok(o) && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "accepted"));
  if (json) printf("%s\n", line);
  else if (!reply_ok(o)) printf("the job refused: %s\n", str(o, "message"));
  else if (accepted)
    printf("%s requested: the job %s at its next step boundary (state now: %s)\n", what,
           strcmp(what, "stop") ? "writes a checkpoint" : "writes a checkpoint and stops",
           str(o, "state"));
  else
    printf("%s not accepted: the job is %s\n", what, str(o, "state"));
  cJSON_Delete(o);
  free(line);
  return accepted ? EXIT_OK : EXIT_FAILED;
}
