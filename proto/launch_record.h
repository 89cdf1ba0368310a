/* launch_record.h - what `pollen launch` (the supervisor) knows about one launch of a job,
 * in two places (proto/README.md "Launch record"):
 *   - JOB_DIR/launch.jsonl, one line per launch when it ends (and one when the supervisor
 *     gives up): the job's history of restarts, for people and scripts;
 *   - the POLLEN_LAUNCH environment variable of every rank (mpirun -x), the launch as it
 *     starts: rank 0's status server shows it (`pollen status`, pollen_restarts_total).
 *
 * {"v":1,"attempt":3,"restarts":2,"hosts":["h1","h2"],"world":2,"ranks_per_node":1,
 *  "excluded":["h3"],"start_time":..,"end_time":..,"resumed_step":..,"last_step":..,
 *  "exit_status":..,"outcome":"failed","reason":"..","decision":"relaunch","decision_reason":"",
 *  "last_failure":{"reason":"..","exit_status":137,"step":40,"time":..,"down_s":8.1}}
 * end_time, resumed_step, last_step, exit_status, outcome, reason and the decision are those
 * of a finished launch (the env copy says "running" and has none); last_failure is the previous launch
 * that failed, or null. Not for: the training's own figures (metrics.jsonl). */
#ifndef POLLEN_LAUNCH_RECORD_H
#define POLLEN_LAUNCH_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define LAUNCH_RECORD_VERSION 1
#define LAUNCH_RECORD_ENV "POLLEN_LAUNCH"
#define LAUNCH_RECORD_FILE "launch.jsonl"
#define LAUNCH_MAX_HOSTS 64

typedef struct {
  char reason[256];  /* one line; "" when there was no failure */
  int exit_status;   /* mpirun's */
  int64_t step;      /* the last step the launch reached; -1: none */
  double time;       /* unix seconds the failure was seen */
  double down_s;     /* from the failure to the start of the next launch */
} launch_failure;

typedef struct {
  int attempt;  /* 1, 2, ... */
  int restarts; /* launches before this one that ended in a failure or a preemption */
  int n_hosts, n_excluded, world, ranks_per_node;
  char hosts[LAUNCH_MAX_HOSTS][64];    /* this launch's, in rank order */
  char excluded[LAUNCH_MAX_HOSTS][64]; /* the hostfile's hosts that did not answer */
  double start_time, end_time;         /* end_time 0: still running */
  int64_t resumed_step, last_step;     /* -1: not seen */
  int exit_status;                     /* -1: still running */
  char outcome[16]; /* running finished preempted stopped failed */
  char reason[256];
  char decision[16];         /* the supervisor's, after this launch: done relaunch give_up stop */
  char decision_reason[256]; /* give_up: why ("the restart budget is spent", ...) */
  int has_last_failure;
  launch_failure last_failure;
} launch_record;

/* hosts[0..n) joined with commas into out (cap bytes), cut short when it does not fit. */
void launch_join_hosts(char *out, size_t cap, const char (*hosts)[64], int n);
/* A launch_record with nothing known: steps and exit -1, outcome "running". */
void launch_record_init(launch_record *r);
/* One line of JSON (no newline), malloc'd; NULL only when out of memory. */
char *launch_record_json(const launch_record *r);
/* Strict: 0, or -1 with a one-line reason in err (not JSON, wrong types, a newer version). */
int launch_record_parse(const char *text, launch_record *r, char *err, size_t errlen);

#endif
