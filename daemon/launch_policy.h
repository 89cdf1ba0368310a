/* launch_policy.h - the supervisor's decisions (`pollen launch`), as pure functions: which
 * hosts a launch uses, and what to do when a launch ends. daemon/supervisor.c carries them
 * out (probes, mpirun, signals, records).
 *
 * The world-size rule: of the hosts that answer the probe, in hostfile order, a launch takes
 * the first n, n as large as possible with n*K ranks dividing the global batch (K = ranks per
 * host), so every rank gets the same share and the job's arithmetic is unchanged (elastic
 * resume keeps the global batch). Fewer than --min-hosts is giving up.
 *
 * After a launch: exit 0 is done; a signal to the supervisor is a stop (exit 75); anything
 * else (75: preempted; any failure) is a relaunch from the newest checkpoint, until the
 * restart budget is spent or the same step has failed LAUNCH_SAME_STEP_LIMIT times in a row
 * (a bug or bad data, which no relaunch cures). Not for: running anything. */
#ifndef POLLEN_LAUNCH_POLICY_H
#define POLLEN_LAUNCH_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define LAUNCH_SAME_STEP_LIMIT 3
#define LAUNCH_BACKOFF_MAX_S 300.0

/* Host names from an Open MPI hostfile's text (the first word of each line that is not blank
 * or a comment; "slots=" and the like are ignored) or from a comma-separated list. Returns
 * the count, or -1 with a one-line reason in err (too many, a name too long, none). */
int launch_parse_hostfile(const char *text, char (*hosts)[64], int max, char *err, size_t errlen);
int launch_parse_host_list(const char *list, char (*hosts)[64], int max, char *err, size_t errlen);

/* How many of the `answering` hosts a launch uses (the rule above); 0 when no n >= min_hosts
 * works, with the reason in why. */
int launch_hosts_to_use(int answering, int total, int per_host, int global_batch, int min_hosts, char *why,
                        size_t whylen);

typedef enum { LAUNCH_DONE, LAUNCH_RELAUNCH, LAUNCH_GIVE_UP, LAUNCH_STOP } launch_decision;

typedef struct {
  int max_restarts;     /* relaunches allowed in all */
  double backoff_s;     /* wait before a relaunch after a failure; doubled while failures repeat */
  int restarts;         /* relaunches so far */
  int same_step_failures;
  int64_t failed_step;  /* the last step reached by the last failed launch; -2: none yet */
  int64_t best_step;    /* the furthest step any launch reached; -1: none */
  double next_backoff_s;
} launch_policy;

void launch_policy_init(launch_policy *p, int max_restarts, double backoff_s);

/* The decision after a launch that exited with exit_status (mpirun's), having reached
 * last_step (-1: none seen) from resumed_step; stopping: the supervisor was asked to stop.
 * why gets a one-line reason for LAUNCH_GIVE_UP; *wait_s the pause before a relaunch. */
launch_decision launch_policy_after(launch_policy *p, int exit_status, int stopping, int64_t resumed_step,
                                    int64_t last_step, double *wait_s, char *why, size_t whylen);

#endif
