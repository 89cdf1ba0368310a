/* supervisor.c - `pollen launch` (see supervisor.h): a loop of named phases per launch
 * (hosts, probe, launch, record, decide), the processes it runs, and its signals. */
#include "daemon/supervisor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "daemon/launch_policy.h"
#include "proto/launch_record.h"

static volatile sig_atomic_t stop_signals; /* how many stop signals arrived */
static volatile sig_atomic_t last_signal;

static void on_stop_signal(int sig) { stop_signals++, last_signal = sig; }

/* Copies src into dst (cap bytes), cut short when it does not fit. */
static void copy_text(char *dst, size_t cap, const char *src) {
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* A small text file, NUL-terminated and malloc'd; NULL with a reason in err. */
static char *read_small_file(const char *path, size_t max, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) return err_set(err, errlen, "cannot read %s: %s", path, strerror(errno)), NULL;
  char *text = xmalloc(max + 1);
  size_t n = fread(text, 1, max + 1, f);
  fclose(f);
  if (n > max) return free(text), err_set(err, errlen, "%s is larger than %zu bytes: not a hostfile", path, max), NULL;
  text[n] = 0;
  return text;
}

/* Sleeps up to s seconds; returns early (1) when a stop signal arrives. */
static int pause_unless_stopped(double s) {
  for (double end = time_unix() + s; time_unix() < end;) {
    if (stop_signals) return 1;
    usleep(50 * 1000);
  }
  return stop_signals != 0;
}

/* ---- processes ---- */

/* Starts argv in a session of its own (a Ctrl-C to the supervisor's group reaches mpirun
 * only through the supervisor) with stdout/stderr on out/err (-1: /dev/null). */
static pid_t spawn(char *const *argv, int out, int err) {
  pid_t pid = fork();
  if (pid < 0) die("cannot start %s: %s", argv[0], strerror(errno));
  if (pid > 0) return pid;
  setsid();
  int null = open("/dev/null", O_RDWR);
  dup2(null, 0);
  dup2(out >= 0 ? out : null, 1);
  dup2(err >= 0 ? err : null, 2);
  signal(SIGTERM, SIG_DFL), signal(SIGINT, SIG_DFL), signal(SIGUSR1, SIG_DFL), signal(SIGHUP, SIG_DFL);
  execvp(argv[0], argv);
  fprintf(stderr, "pollen launch: cannot run %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

static int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

typedef struct {
  char *v[512];
  int n;
} argv_list;

static void arg(argv_list *a, const char *s) {
  if (a->n + 1 >= (int)(sizeof a->v / sizeof *a->v)) die("pollen launch: too many arguments for mpirun");
  a->v[a->n++] = xstrdup(s);
  a->v[a->n] = NULL;
}

static void args_free(argv_list *a) {
  for (int i = 0; i < a->n; i++) free(a->v[i]);
  a->n = 0;
}

/* What every mpirun this supervisor starts shares: the extra --mca pairs. */
static void add_mca(argv_list *a, const supervisor_opts *o) {
  for (int i = 0; i < o->n_mca; i++) arg(a, "--mca"), arg(a, o->mca[i][0]), arg(a, o->mca[i][1]);
}

/* ---- Open MPI's settings, through the environment: --mca on the command line wins over
 * them, and mpirun passes OMPI_MCA_* on to the daemons it starts on the other hosts. ---- */

static void set_default(const char *name, const char *value) { setenv(name, value, 0); }

static void set_mpi_environment(const supervisor_opts *o, int threads) {
  set_default("OMPI_MCA_pml", "ob1"); /* the TCP path; InfiniBand: deploy/mpirun/README.md */
  set_default("OMPI_MCA_btl", "self,vader,tcp");
  set_default("OMPI_MCA_osc", "^ucx");
  if (o->net) setenv("OMPI_MCA_oob_tcp_if_include", o->net, 1), setenv("OMPI_MCA_btl_tcp_if_include", o->net, 1);
  /* A host that vanishes without closing its sockets (power, cable, kernel panic) is only
   * noticed by TCP keepalive on mpirun's control connection; Open MPI's default is 300 s idle
   * + 9 probes x 20 s. The kernel answers keepalives, so a busy host never trips them. */
  char v[32];
  snprintf(v, sizeof v, "%d", o->keepalive[0]), setenv("OMPI_MCA_oob_tcp_keepalive_time", v, 1);
  snprintf(v, sizeof v, "%d", o->keepalive[1]), setenv("OMPI_MCA_oob_tcp_keepalive_intvl", v, 1);
  snprintf(v, sizeof v, "%d", o->keepalive[2]), setenv("OMPI_MCA_oob_tcp_keepalive_probes", v, 1);
  setenv("OMPI_MCA_orte_abort_on_non_zero_status", "1", 1);
  /* One OpenMP pool per rank pinned to its own cores: OpenBLAS (the OpenMP build) shares it,
   * so BLAS threads never fight pollen's or another rank's. */
  snprintf(v, sizeof v, "%d", threads), setenv("OMP_NUM_THREADS", v, 1);
  set_default("OMP_PROC_BIND", "close");
  set_default("OMP_PLACES", "cores");
}

/* Physical cores of this machine (Open MPI's pe=T counts cores, and two busy threads on one
 * core's hyperthreads run slower than one); hosts are assumed alike. */
static int physical_cores(void) {
  int n = 0, seen[4096][2];
  for (int cpu = 0; cpu < 4096; cpu++) {
    char path[128];
    int core = -1, pkg = -1;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
    FILE *f = fopen(path, "r");
    if (!f) break;
    if (fscanf(f, "%d", &core) != 1) core = cpu;
    fclose(f);
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
    if ((f = fopen(path, "r"))) {
      if (fscanf(f, "%d", &pkg) != 1) pkg = 0;
      fclose(f);
    }
    int dup = 0;
    for (int i = 0; i < n && !dup; i++) dup = seen[i][0] == core && seen[i][1] == pkg;
    if (!dup) seen[n][0] = core, seen[n][1] = pkg, n++;
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : online > 0 ? (int)online : 1;
}

/* ---- phase: the hosts, read again before every launch ---- */

static int read_hosts(const supervisor_opts *o, char (*hosts)[64], char *err, size_t errlen) {
  if (o->host_list) return launch_parse_host_list(o->host_list, hosts, LAUNCH_MAX_HOSTS, err, errlen);
  char *text = read_small_file(o->hostfile, 1 << 20, err, errlen);
  if (!text) return -1;
  int n = launch_parse_hostfile(text, hosts, LAUNCH_MAX_HOSTS, err, errlen);
  free(text);
  return n;
}

/* ---- phase: probe every host at once, each a one-rank mpirun of `pollen --version` under a
 * deadline: it proves what a launch needs (the remote shell, Open MPI's daemon, the binary). */

/* The first line of a failed probe's output that says something (not a rule of dashes). */
static void probe_words(int fd, char *out, size_t cap) {
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = 0;
  out[0] = 0;
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    while (*line == ' ') line++;
    if (*line && *line != '-') {
      copy_text(out, cap, line);
      return;
    }
  }
}

static int probe_hosts(const supervisor_opts *o, char (*hosts)[64], int n, int *answers, char (*why)[160]) {
  pid_t pids[LAUNCH_MAX_HOSTS];
  int outs[LAUNCH_MAX_HOSTS];
  for (int i = 0; i < n; i++) {
    argv_list a = {0};
    char host[80];
    snprintf(host, sizeof host, "%s:1", hosts[i]);
    arg(&a, o->mpirun), arg(&a, "--host"), arg(&a, host), arg(&a, "-np"), arg(&a, "1");
    add_mca(&a, o);
    arg(&a, o->pollen), arg(&a, "--version");
    int p[2];
    if (pipe(p)) die("pollen launch: cannot make a pipe: %s", strerror(errno));
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    pids[i] = spawn(a.v, p[1], p[1]);
    close(p[1]);
    outs[i] = p[0];
    answers[i] = -1;
    why[i][0] = 0;
    args_free(&a);
  }
  double deadline = time_unix() + o->probe_timeout_s;
  for (int left = n; left > 0;) {
    for (int i = 0; i < n; i++) {
      int status;
      if (answers[i] < 0 && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        answers[i] = WIFEXITED(status) && WEXITSTATUS(status) == 0, left--;
        if (!answers[i]) {
          char words[128];
          probe_words(outs[i], words, sizeof words);
          snprintf(why[i], 160, "the probe failed (exit %d)%s%s", exit_code(status), words[0] ? ": " : "", words);
        }
      }
    }
    if (left == 0) break;
    if (time_unix() > deadline || stop_signals) {
      for (int i = 0; i < n; i++)
        if (answers[i] < 0) {
          kill(-pids[i], SIGKILL), waitpid(pids[i], NULL, 0), answers[i] = 0;
          snprintf(why[i], 160, "no answer within %.0f s (--probe-timeout)", o->probe_timeout_s);
        }
      break;
    }
    usleep(20 * 1000);
  }
  int answering = 0;
  for (int i = 0; i < n; i++) answering += answers[i], close(outs[i]);
  return answering;
}

/* ---- phase: one launch. Its output passes through line by line; what the job says about
 * its progress and pollen's and Open MPI's words for a failure are noted on the way. ---- */

typedef struct {
  int64_t resumed_step, last_step;
  char lost_host[128], killed[256], pollen_error[256];
} launch_watch;

/* "[hh:mm:ss] rank 0 epoch E/N  step s/S ..." (daemon/coordinator.c's progress line) */
static void note_progress(launch_watch *w, const char *line) {
  const char *p = line;
  int e, epochs, s, per_epoch;
  while ((p = strstr(p, " epoch "))) {
    if (sscanf(p, " epoch %d/%d  step %d/%d", &e, &epochs, &s, &per_epoch) == 4 && e >= 1) {
      int64_t step = (int64_t)(e - 1) * per_epoch + s;
      if (step > w->last_step) w->last_step = step;
      break;
    }
    p++;
  }
  long long r;
  if ((p = strstr(line, "resuming from ")) && (p = strstr(p, ": step ")) && sscanf(p, ": step %lld", &r) == 1) {
    w->resumed_step = r;
    if (w->last_step < r) w->last_step = r;
  }
}

static void trim_copy(char *out, size_t cap, const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  snprintf(out, cap, "%s", s);
  size_t n = strlen(out);
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ')) out[--n] = 0;
}

static void note_failure(launch_watch *w, const char *line) {
  const char *p;
  /* Open MPI 4: "Remote daemon: [[...],2] on node 10.0.0.3" after "lost communication" */
  if (!w->lost_host[0] && (p = strstr(line, "Remote daemon:")) && (p = strstr(p, " on node "))) {
    trim_copy(w->lost_host, sizeof w->lost_host, p + 9);
  }
  /* "mpirun noticed that process rank 1 with PID 7 on node h2 exited on signal 9 (Killed)." */
  int rank, pid, sig;
  char node[128];
  if (!w->killed[0] && (p = strstr(line, "process rank ")) &&
      sscanf(p, "process rank %d with PID %d on node %127s exited on signal %d", &rank, &pid, node, &sig) == 4)
    snprintf(w->killed, sizeof w->killed, "rank %d on %s killed by signal %d (%s)", rank, node, sig,
             sig == SIGKILL ? "SIGKILL: the OOM killer or kill -9" : strsignal(sig));
  if (!w->pollen_error[0] && (p = strstr(line, "pollen: ")) && (p == line || strstr(line, "] pollen: ") + 2 == p))
    trim_copy(w->pollen_error, sizeof w->pollen_error, p);
  if (!w->pollen_error[0] && (p = strstr(line, "no message from rank"))) trim_copy(w->pollen_error, sizeof w->pollen_error, p);
}

typedef struct {
  int fd, out;
  char buf[8192];
  size_t n;
} line_pipe;

/* Reads what is there; passes whole lines on and notes them. 0 at EOF. */
static int pump(line_pipe *lp, launch_watch *w) {
  ssize_t got = read(lp->fd, lp->buf + lp->n, sizeof lp->buf - 1 - lp->n);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (got <= 0) {
    if (lp->n) lp->buf[lp->n] = 0, write_all(lp->out, lp->buf, lp->n), note_progress(w, lp->buf), note_failure(w, lp->buf);
    lp->n = 0;
    return 0;
  }
  lp->n += (size_t)got;
  char *start = lp->buf, *nl;
  while ((nl = memchr(start, '\n', lp->n - (size_t)(start - lp->buf)))) {
    *nl = 0;
    note_progress(w, start), note_failure(w, start);
    *nl = '\n';
    write_all(lp->out, start, (size_t)(nl + 1 - start));
    start = nl + 1;
  }
  size_t rest = lp->n - (size_t)(start - lp->buf);
  if (rest == sizeof lp->buf - 1) { /* a line longer than the buffer: pass it on as is */
    write_all(lp->out, lp->buf, rest);
    rest = 0;
  }
  memmove(lp->buf, start, rest);
  lp->n = rest;
  return 1;
}

/* Runs mpirun to its end, forwarding stop signals: the first as SIGUSR1 (every rank
 * checkpoints and exits 75), a second as SIGTERM (at once). Returns its exit status. */
static int run_mpirun(char *const *argv, launch_watch *w) {
  int out[2], err[2];
  if (pipe(out) || pipe(err)) die("pollen launch: cannot make pipes: %s", strerror(errno));
  pid_t pid = spawn(argv, out[1], err[1]);
  close(out[1]), close(err[1]);
  line_pipe lp[2] = {{.fd = out[0], .out = 1}, {.fd = err[0], .out = 2}};
  int open_pipes = 2, status = 0, reaped = 0, forwarded = 0;
  double reaped_at = 0;
  while (open_pipes > 0 || !reaped) {
    if (stop_signals > forwarded && !reaped) {
      forwarded = stop_signals;
      if (forwarded == 1) {
        log_info("got %s: asking every rank to checkpoint and stop (again to stop at once)", strsignal(last_signal));
        kill(pid, SIGUSR1);
      } else {
        log_info("second stop signal: stopping mpirun at once");
        kill(pid, SIGTERM);
      }
    }
    struct pollfd fds[2];
    int nf = 0;
    for (int i = 0; i < 2; i++)
      if (lp[i].fd >= 0) fds[nf].fd = lp[i].fd, fds[nf].events = POLLIN, nf++;
    if (nf) poll(fds, (nfds_t)nf, 100);
    else usleep(50 * 1000);
    for (int i = 0, k = 0; i < 2; i++) {
      if (lp[i].fd < 0) continue;
      if (fds[k++].revents && !pump(&lp[i], w)) close(lp[i].fd), lp[i].fd = -1, open_pipes--;
    }
    if (!reaped && waitpid(pid, &status, WNOHANG) == pid) reaped = 1, reaped_at = time_unix();
    /* Daemons of a lost host may hold the pipes open: their last words are not worth a hang. */
    if (reaped && time_unix() - reaped_at > 3) break;
  }
  for (int i = 0; i < 2; i++)
    if (lp[i].fd >= 0) close(lp[i].fd);
  return exit_code(status);
}

/* Ranks are placed host by host in launch order (ppr mapping): host j holds ranks j*K ..
 * j*K+K-1, so a lost host names its ranks. */
static void lost_host_reason(const launch_watch *w, const launch_record *r, char *out, size_t cap) {
  int j = 0;
  while (j < r->n_hosts && strcmp(r->hosts[j], w->lost_host)) j++;
  int k = r->ranks_per_node, first = j * k;
  if (j == r->n_hosts) snprintf(out, cap, "lost host %s (Open MPI lost its daemon there)", w->lost_host);
  else if (k == 1) snprintf(out, cap, "lost host %s (rank %d; Open MPI lost its daemon there)", w->lost_host, first);
  else snprintf(out, cap, "lost host %s (ranks %d..%d; Open MPI lost its daemon there)", w->lost_host, first, first + k - 1);
}

static void failure_reason(const launch_watch *w, const launch_record *r, int status, char *out, size_t cap) {
  if (w->lost_host[0]) lost_host_reason(w, r, out, cap);
  else if (w->killed[0]) snprintf(out, cap, "%s", w->killed);
  else if (w->pollen_error[0]) snprintf(out, cap, "%s", w->pollen_error);
  else snprintf(out, cap, "mpirun exited %d", status);
}

/* ---- phase: the record, one line per launch in JOB/launch.jsonl ---- */

static void append_record(const char *job_dir, const launch_record *r) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", job_dir, LAUNCH_RECORD_FILE);
  char *line = launch_record_json(r);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (!line || fd < 0 || write_all(fd, line, strlen(line)) || write_all(fd, "\n", 1))
    log_info("warning: cannot append to %s: %s; supervising goes on", path, strerror(errno));
  if (fd >= 0) close(fd);
  free(line);
}

/* The mpirun command of one launch: K ranks on each chosen host, each bound to T cores. */
static void launch_command(const supervisor_opts *o, const launch_record *r, int threads, argv_list *a) {
  char np[16], map[64], host_arg[LAUNCH_MAX_HOSTS * 72];
  size_t k = 0;
  host_arg[0] = 0;
  for (int i = 0; i < r->n_hosts; i++)
    k += (size_t)snprintf(host_arg + k, sizeof host_arg - k, "%s%s:%d", i ? "," : "", r->hosts[i], o->per_host);
  snprintf(np, sizeof np, "%d", r->world);
  if (o->bind) snprintf(map, sizeof map, "ppr:%d:node:pe=%d", o->per_host, threads);
  else snprintf(map, sizeof map, "ppr:%d:node", o->per_host);
  arg(a, o->mpirun), arg(a, "-np"), arg(a, np), arg(a, "--host"), arg(a, host_arg);
  arg(a, "--map-by"), arg(a, map), arg(a, "--bind-to"), arg(a, o->bind ? "core" : "none");
  const char *env[] = {"OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", LAUNCH_RECORD_ENV};
  for (size_t i = 0; i < sizeof env / sizeof *env; i++) arg(a, "-x"), arg(a, env[i]);
  for (int i = 0; i < o->n_exports; i++) arg(a, "-x"), arg(a, o->exports[i]);
  add_mca(a, o);
  arg(a, o->pollen), arg(a, "train");
  for (int i = 0; i < o->train_argc; i++) arg(a, o->train_argv[i]);
}

static void print_dry_run(const argv_list *a) {
  extern char **environ;
  for (char **e = environ; *e; e++)
    if (!strncmp(*e, "OMPI_MCA_", 9) || !strncmp(*e, "OMP_", 4)) printf("%s\n", *e);
  for (int i = 0; i < a->n; i++) printf("%s%s", i ? " " : "", a->v[i]);
  printf("\n");
}

/* Only one supervisor per job: a second one would start a second job in the same folder. */
static int lock_job(const char *job_dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/launch.lock", job_dir);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) die("cannot open %s: %s; check the --job folder", path, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    die("another pollen launch supervises %s (see its launch.pid); stop it first, or use another --job", job_dir);
  return fd;
}

static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
}

/* Whether name is this machine: its hostname (short or full) or one of its addresses. */
static int is_this_machine(const char *name) {
  char self[256];
  if (gethostname(self, sizeof self) == 0) {
    self[sizeof self - 1] = 0;
    size_t n = strcspn(self, ".");
    if (!strcmp(name, self) || (strlen(name) == n && !strncmp(name, self, n))) return 1;
  }
  if (!strcmp(name, "localhost") || !strcmp(name, "127.0.0.1")) return 1;
  struct ifaddrs *ifs, *i;
  int found = 0;
  if (getifaddrs(&ifs) != 0) return 0;
  for (i = ifs; i && !found; i = i->ifa_next) {
    char addr[INET6_ADDRSTRLEN];
    if (!i->ifa_addr) continue;
    int fam = i->ifa_addr->sa_family;
    const void *a = fam == AF_INET ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                    : fam == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                                      : NULL;
    found = a && inet_ntop(fam, a, addr, sizeof addr) && !strcmp(addr, name);
  }
  freeifaddrs(ifs);
  return found;
}

/* Open MPI maps its own machine's ranks first when that machine is one of the hosts (then the
 * others in order): put it first here too, so the record's order is the rank order and rank
 * 0 runs beside the supervisor. */
static void this_machine_first(launch_record *r) {
  for (int i = 1; i < r->n_hosts; i++)
    if (is_this_machine(r->hosts[i])) {
      char mine[64];
      memcpy(mine, r->hosts[i], sizeof mine);
      memmove(r->hosts[1], r->hosts[0], (size_t)i * sizeof r->hosts[0]);
      memcpy(r->hosts[0], mine, sizeof mine);
      return;
    }
}

/* Chooses the hosts of the next launch into r; 0 when too few answer (why says so). */
static int choose_hosts(const supervisor_opts *o, launch_record *r, char *why, size_t whylen) {
  char hosts[LAUNCH_MAX_HOSTS][64];
  int answers[LAUNCH_MAX_HOSTS];
  char probe_why[LAUNCH_MAX_HOSTS][160];
  int n = read_hosts(o, hosts, why, whylen);
  if (n < 0) return 0;
  int answering = n;
  if (o->dry_run) /* what a launch would be with every host answering */
    for (int i = 0; i < n; i++) answers[i] = 1;
  else
    answering = probe_hosts(o, hosts, n, answers, probe_why);
  if (stop_signals) return 0;
  int use = launch_hosts_to_use(answering, n, o->per_host, o->global_batch, o->min_hosts, why, whylen);
  r->n_hosts = r->n_excluded = 0;
  for (int i = 0; i < n; i++) {
    if (answers[i] && r->n_hosts < use) copy_text(r->hosts[r->n_hosts++], 64, hosts[i]);
    else if (!answers[i]) copy_text(r->excluded[r->n_excluded++], 64, hosts[i]);
  }
  this_machine_first(r);
  r->world = use * o->per_host;
  r->ranks_per_node = o->per_host;
  for (int i = 0; i < n; i++)
    if (!answers[i]) log_info("host %s excluded from this launch: %s", hosts[i], probe_why[i]);
  return use;
}

int supervisor_run(const supervisor_opts *o) {
  log_set_prefix("pollen launch:");
  int threads = o->threads > 0 ? o->threads : physical_cores() / o->per_host;
  if (threads < 1) threads = 1;
  set_mpi_environment(o, threads);
  if (!o->dry_run && make_dirs(o->job_dir) != 0)
    die("cannot create the job folder %s: %s", o->job_dir, strerror(errno));
  int lock = o->dry_run ? -1 : lock_job(o->job_dir);
  install_signals();
  launch_policy policy;
  launch_policy_init(&policy, o->max_restarts, o->backoff_s);
  launch_failure last_failure = {0};
  int has_failure = 0, status = EXIT_FAILED;
  for (int attempt = 1;; attempt++) {
    launch_record r;
    launch_record_init(&r);
    r.attempt = attempt, r.restarts = policy.restarts;
    char why[512];
    double chose_at = time_unix();
    if (!choose_hosts(o, &r, why, sizeof why)) {
      if (stop_signals) { log_info("stopped by a signal before launch %d; nothing was running", attempt); status = EXIT_PREEMPTED; break; }
      log_info("giving up: %s", why);
      snprintf(r.outcome, sizeof r.outcome, "failed"), copy_text(r.reason, sizeof r.reason, why);
      snprintf(r.decision, sizeof r.decision, "give_up"), copy_text(r.decision_reason, sizeof r.decision_reason, why);
      r.start_time = r.end_time = time_unix();
      if (!o->dry_run) append_record(o->job_dir, &r);
      break;
    }
    r.start_time = time_unix();
    if (has_failure) r.has_last_failure = 1, r.last_failure = last_failure, r.last_failure.down_s = r.start_time - last_failure.time;
    char *env = launch_record_json(&r);
    setenv(LAUNCH_RECORD_ENV, env ? env : "", 1);
    free(env);
    argv_list cmd = {0};
    launch_command(o, &r, threads, &cmd);
    if (o->dry_run) { print_dry_run(&cmd); args_free(&cmd); status = EXIT_OK; break; }
    char hosts[2048];
    launch_join_hosts(hosts, sizeof hosts, r.hosts, r.n_hosts);
    log_info("launch %d: %d rank(s) on %s (%d per host, %d thread(s) each; hosts probed in %.1f s)", attempt, r.world,
        hosts, o->per_host, threads, r.start_time - chose_at);
    launch_watch w = {.resumed_step = -1, .last_step = -1};
    int code = run_mpirun(cmd.v, &w);
    args_free(&cmd);
    r.end_time = time_unix();
    r.exit_status = code, r.resumed_step = w.resumed_step, r.last_step = w.last_step;
    double wait_s;
    launch_decision d =
        launch_policy_after(&policy, code, stop_signals != 0, w.resumed_step, w.last_step, &wait_s, why, sizeof why);
    copy_text(r.outcome, sizeof r.outcome, code == 0 ? "finished" : code == EXIT_PREEMPTED ? (stop_signals ? "stopped" : "preempted") : "failed");
    if (code != 0 && code != EXIT_PREEMPTED) {
      failure_reason(&w, &r, code, r.reason, sizeof r.reason);
      has_failure = 1;
      copy_text(last_failure.reason, sizeof last_failure.reason, r.reason);
      last_failure.exit_status = code, last_failure.step = w.last_step, last_failure.time = r.end_time;
      log_info("launch %d failed (exit %d, last step seen: %lld): %s", attempt, code, (long long)w.last_step, r.reason);
    }
    const char *names[] = {"done", "relaunch", "give_up", "stop"};
    copy_text(r.decision, sizeof r.decision, names[d]);
    copy_text(r.decision_reason, sizeof r.decision_reason, why);
    append_record(o->job_dir, &r);
    if (d == LAUNCH_DONE) { log_info("finished (launch %d, %d restart(s))", attempt, policy.restarts); status = EXIT_OK; break; }
    if (d == LAUNCH_STOP) {
      log_info("stopped by a signal; %s (exit 75: launch again to resume)",
          code == EXIT_PREEMPTED ? "every rank saved its state" : "the job's newest checkpoint is where it resumes");
      status = EXIT_PREEMPTED;
      break;
    }
    if (d == LAUNCH_GIVE_UP) { log_info("giving up: %s", why); status = EXIT_FAILED; break; }
    if (code == EXIT_PREEMPTED) log_info("preempted (exit 75, last step seen: %lld); relaunching in %.0f s", (long long)w.last_step, wait_s);
    else log_info("relaunching from the newest checkpoint in %.0f s", wait_s);
    if (pause_unless_stopped(wait_s)) { log_info("stopped by a signal while waiting to relaunch (exit 75)"); status = EXIT_PREEMPTED; break; }
  }
  if (lock >= 0) close(lock);
  return status;
}

/* A pid file outliving its process would name whatever process gets the number next. */
static char pid_file[4200];
static void remove_pid_file(void) {
  if (pid_file[0]) unlink(pid_file);
}

void supervisor_daemonize(const char *job_dir) {
  if (make_dirs(job_dir) != 0) die("cannot create the job folder %s: %s", job_dir, strerror(errno));
  char log_path[4200], pid_path[4200];
  snprintf(log_path, sizeof log_path, "%s/launch.log", job_dir);
  snprintf(pid_path, sizeof pid_path, "%s/launch.pid", job_dir);
  int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) die("cannot open %s: %s", log_path, strerror(errno));
  fflush(stdout), fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) die("cannot detach: %s", strerror(errno));
  if (pid > 0) { /* written before the caller returns, so a script can read it at once */
    FILE *f = fopen(pid_path, "w");
    if (!f || fprintf(f, "%d\n", (int)pid) < 0 || fclose(f) != 0) {
      kill(pid, SIGTERM);
      die("cannot write %s: %s; the supervisor was stopped", pid_path, strerror(errno));
    }
    printf("pollen launch: supervising in the background, pid %d; log %s, pid file %s\n", (int)pid, log_path, pid_path);
    exit(EXIT_OK);
  }
  setsid();
  int null = open("/dev/null", O_RDONLY);
  dup2(null, 0), dup2(log, 1), dup2(log, 2);
  close(null), close(log);
  copy_text(pid_file, sizeof pid_file, pid_path);
  atexit(remove_pid_file);
}
