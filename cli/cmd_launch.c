/* cmd_launch.c - `pollen launch [options] -- <pollen train flags>`: the supervisor
 * (daemon/supervisor.h) that runs a job with Open MPI's mpirun on a set of hosts and keeps it
 * alive through preemptions, crashes and lost hosts. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/supervisor.h"
#include "proto/job_config.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen launch (--hostfile FILE | --hosts LIST) [options] -- <pollen train flags>\n\n"
          "Runs `pollen train` with Open MPI's mpirun on the hosts and keeps the job alive until it\n"
          "finishes. Before every launch each host is probed (a one-rank mpirun of this pollen,\n"
          "under --probe-timeout); the launch uses the hosts that answer, in hostfile order, as many\n"
          "as keep the global --batch divisible by the ranks (every rank the same share: the job's\n"
          "arithmetic is unchanged, and the relaunch resumes from the newest checkpoint). A host\n"
          "that answers again later is taken back at the next launch. Exit 75 (preempted) or any\n"
          "failure (a rank killed or crashed, a host lost, a stall) is relaunched; the supervisor\n"
          "gives up, with the reason, when fewer than --min-hosts answer, when --max-restarts\n"
          "relaunches are spent, or when 3 launches in a row fail at the same step (a bug or bad\n"
          "data). SIGTERM, SIGINT, SIGUSR1 or SIGHUP: every rank checkpoints, exit 75 (again: stop\n"
          "at once). Every launch is a line of JOB/launch.jsonl; pollen status shows the restarts,\n"
          "the hosts, the excluded hosts and the last failure.\n\n"
          "  --hostfile FILE       Open MPI hostfile, one host a line; read again before every launch\n"
          "  --hosts LIST          the hosts, comma-separated (instead of --hostfile)\n"
          "  --ranks-per-node K    ranks on each host (default 1: one rank per host, all its cores)\n"
          "  --min-hosts M         give up when fewer hosts answer (default 1)\n"
          "  --max-restarts R      relaunches in all, failures and preemptions (default 20)\n"
          "  --backoff S           seconds before a relaunch, doubled while launches fail without\n"
          "                        progress, up to 300 (default 10)\n"
          "  --probe-timeout S     seconds a host has to answer the probe (default 20)\n"
          "  --threads T           cores per rank = OMP_NUM_THREADS (default: physical cores of this\n"
          "                        machine / K; hosts are assumed alike)\n"
          "  --bind-to core|none   core (default): each rank bound to its T cores; none: no binding\n"
          "                        (containers sharing a node's cores under a CPU quota)\n"
          "  --net CIDR|IFACE      the network Open MPI uses, e.g. 10.1.0.0/24 or eth1 (default: its\n"
          "                        choice; name it on hosts with more than one network)\n"
          "  --keepalive T,I,P     TCP keepalive of Open MPI's control connections: seconds idle,\n"
          "                        seconds between probes, probes lost (default 10,4,3: a dead host\n"
          "                        or cable ends the launch in about 25 s instead of ~8 min)\n"
          "  --pollen PATH         the pollen binary, the same path on every host (default: this one)\n"
          "  --mpirun PATH         Open MPI's mpirun (default: mpirun in PATH)\n"
          "  --mca KEY VALUE       an extra Open MPI parameter (repeatable); wins over the defaults\n"
          "  --export NAME         pass environment variable NAME to every rank (repeatable)\n"
          "  --daemon              detach: pid in JOB/launch.pid, output in JOB/launch.log\n"
          "  --dry-run             print the environment and the first launch's mpirun command\n"
          "  --help\n\n"
          "Exit status: 0 finished; 75 stopped by a signal (launch again to resume); 1 given up (the\n"
          "reason is the last line); 2 bad options. The train flags must name the job (--job DIR).\n");
}

/* The job's global batch, where pollen train would take it from: --batch, else --config's,
 * else the frozen config.json of an earlier launch, else the default. */
static int global_batch(int argc, char **argv, const char *job) {
  const char *b = cli_flag_value(argc, argv, "--batch");
  if (b) return (int)cli_parse_long("--batch (a train flag)", b, 1, 1 << 20);
  job_config c;
  job_config_defaults(&c);
  const char *config = cli_flag_value(argc, argv, "--config");
  char frozen[4200];
  snprintf(frozen, sizeof frozen, "%s/config.json", job);
  if (config) {
    if (job_config_load(&c, config) != 0) die_status(EXIT_USAGE, "--config %s cannot be read", config);
  } else if (access(frozen, R_OK) == 0) {
    job_config_load(&c, frozen);
  }
  return c.batch;
}

static void parse_keepalive(const char *text, int out[3]) {
  char tail;
  if (sscanf(text, "%d,%d,%d%c", &out[0], &out[1], &out[2], &tail) != 3 || out[0] < 1 || out[1] < 1 || out[2] < 1)
    die_status(EXIT_USAGE, "--keepalive: '%s' is not T,I,P (three whole numbers >= 1, e.g. 10,4,3)", text);
}

int cmd_launch(int argc, char **argv) {
  supervisor_opts o = {.per_host = 1, .bind = 1, .min_hosts = 1, .max_restarts = 20, .backoff_s = 10, .probe_timeout_s = 20,
                       .keepalive = {10, 4, 3}, .mpirun = getenv("MPIRUN") ? getenv("MPIRUN") : "mpirun"};
  int daemon = 0;
  static const struct option opts[] = {
      {"hostfile", required_argument, 0, 'f'},      {"hosts", required_argument, 0, 'H'},
      {"ranks-per-node", required_argument, 0, 'k'}, {"min-hosts", required_argument, 0, 'm'},
      {"max-restarts", required_argument, 0, 'r'},  {"backoff", required_argument, 0, 'b'},
      {"probe-timeout", required_argument, 0, 'p'}, {"threads", required_argument, 0, 't'},
      {"net", required_argument, 0, 'n'},           {"keepalive", required_argument, 0, 'K'},
      {"pollen", required_argument, 0, 'P'},        {"mpirun", required_argument, 0, 'M'},
      {"mca", required_argument, 0, 'c'},           {"export", required_argument, 0, 'x'},
      {"bind-to", required_argument, 0, 'B'},       {"daemon", no_argument, 0, 'd'},              {"dry-run", no_argument, 0, 'D'},
      {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    switch (c) {
    case 'f': o.hostfile = optarg; break;
    case 'H': o.host_list = optarg; break;
    case 'k': o.per_host = (int)cli_parse_long("--ranks-per-node", optarg, 1, 4096); break;
    case 'm': o.min_hosts = (int)cli_parse_long("--min-hosts", optarg, 1, 64); break;
    case 'r': o.max_restarts = (int)cli_parse_long("--max-restarts", optarg, 0, 1000000); break;
    case 'b': o.backoff_s = cli_parse_double("--backoff", optarg, 0, 3600); break;
    case 'p': o.probe_timeout_s = cli_parse_double("--probe-timeout", optarg, 0.1, 3600); break;
    case 't': o.threads = (int)cli_parse_long("--threads", optarg, 1, 4096); break;
    case 'n': o.net = optarg; break;
    case 'K': parse_keepalive(optarg, o.keepalive); break;
    case 'P': o.pollen = optarg; break;
    case 'M': o.mpirun = optarg; break;
    case 'c':
      if (optind >= argc || !strcmp(argv[optind], "--")) die_status(EXIT_USAGE, "--mca %s needs a VALUE", optarg);
      if (o.n_mca == SUPERVISOR_MAX_PASS) die_status(EXIT_USAGE, "--mca: at most %d", SUPERVISOR_MAX_PASS);
      o.mca[o.n_mca][0] = optarg, o.mca[o.n_mca++][1] = argv[optind++];
      break;
    case 'x':
      if (o.n_exports == SUPERVISOR_MAX_PASS) die_status(EXIT_USAGE, "--export: at most %d", SUPERVISOR_MAX_PASS);
      o.exports[o.n_exports++] = optarg;
      break;
    case 'B':
      if (strcmp(optarg, "core") && strcmp(optarg, "none"))
        die_status(EXIT_USAGE, "--bind-to: '%s' is not core or none", optarg);
      o.bind = !strcmp(optarg, "core");
      break;
    case 'd': daemon = 1; break;
    case 'D': o.dry_run = 1; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("launch");
    }
  }
  if (optind < argc && strcmp(argv[optind - 1], "--") != 0)
    die_status(EXIT_USAGE, "launch: '%s' is not a launch option; pollen train flags go after --", argv[optind]);
  o.train_argv = argv + optind, o.train_argc = argc - optind;
  if (!o.hostfile == !o.host_list) die_status(EXIT_USAGE, "launch: name the hosts with --hostfile FILE or --hosts LIST (one of them)");
  o.job_dir = cli_flag_value(o.train_argc, o.train_argv, "--job");
  if (!o.job_dir) die_status(EXIT_USAGE, "launch: the train flags after -- must name the job (--job DIR): its folder holds the launch record");
  o.global_batch = global_batch(o.train_argc, o.train_argv, o.job_dir);
  char self[PATH_MAX];
  if (!o.pollen) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) die_status(EXIT_USAGE, "launch: cannot tell where this pollen is; name it with --pollen PATH");
    self[n] = 0;
    o.pollen = self;
  }
  if (access(o.pollen, X_OK) != 0) die_status(EXIT_USAGE, "--pollen: '%s' is not an executable file", o.pollen);
  if (daemon && !o.dry_run) supervisor_daemonize(o.job_dir);
  return supervisor_run(&o);
}
