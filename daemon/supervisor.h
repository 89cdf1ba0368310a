/* supervisor.h - `pollen launch`: keeps one training job alive across launches of Open MPI's
 * mpirun. Each round: read the hostfile, probe every host, choose the hosts and world size
 * (daemon/launch_policy.h), run `mpirun ... pollen train`, pass its output through while
 * reading the job's progress and the cause of a failure from it, record the launch
 * (JOB/launch.jsonl, proto/launch_record.h) and decide: done, relaunch or give up.
 *
 * A signal (TERM, INT, USR1, HUP) to the supervisor becomes SIGUSR1 to mpirun, which
 * forwards it to every rank: each checkpoints and exits 75, and so does the supervisor; a
 * second signal stops mpirun at once. Not for: what a rank does (daemon/driver.h). */
#ifndef POLLEN_SUPERVISOR_H
#define POLLEN_SUPERVISOR_H

#define SUPERVISOR_MAX_PASS 64

typedef struct {
  const char *hostfile;  /* an Open MPI hostfile, read again before every launch; or */
  const char *host_list; /* "h1,h2,h3" */
  int per_host;          /* ranks on each host, K */
  int min_hosts, max_restarts;
  double backoff_s, probe_timeout_s;
  int threads;           /* cores per rank; 0: this machine's physical cores / K */
  int bind;              /* 1: each rank bound to its T cores; 0: no binding (containers) */
  const char *net;       /* subnet or interface for Open MPI; NULL: its choice */
  int keepalive[3];      /* TCP keepalive: idle seconds, interval, probes */
  const char *pollen;    /* the binary, the same path on every host */
  const char *mpirun;
  const char *mca[SUPERVISOR_MAX_PASS][2]; /* extra --mca KEY VALUE, after the defaults */
  int n_mca;
  const char *exports[SUPERVISOR_MAX_PASS]; /* environment variables passed to every rank */
  int n_exports;
  const char *job_dir;   /* the train flags' --job */
  int global_batch;      /* the job's --batch */
  char **train_argv;     /* pollen train's flags */
  int train_argc;
  int dry_run;           /* print the environment and the mpirun command of launch 1 only */
} supervisor_opts;

/* Runs the job to its end; returns the exit status: 0 finished, 75 stopped by a signal
 * (launch again to resume), 1 given up (the one-line reason printed), 2 bad options. */
int supervisor_run(const supervisor_opts *o);

/* --daemon: detaches (a new session, the log in JOB/launch.log, the pid in JOB/launch.pid);
 * returns in the detached process, the caller's process exits 0 after printing where. */
void supervisor_daemonize(const char *job_dir);

#endif
