/* main.c - the `pollen` binary: dispatches `pollen <command> [flags]` to cli/cmd_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "ops/ops.h"
#include "daemon/signals.h"
#include "worker/device.h"
#include "worker/model.h"

static const cli_command commands[] = {
    {"train", cmd_train, "train a model (mpirun -np N pollen train ... for many ranks)"},
    {"launch", cmd_launch, "run a job on hosts with mpirun and keep it alive through failures"},
    {"eval", cmd_eval, "accuracy, per-class precision/recall, confusion matrix"},
    {"predict", cmd_predict, "top-k classes of photos"},
    {"export", cmd_export, "a job's newest checkpoint as torchvision-named safetensors"},
    {"plot", cmd_plot, "loss and accuracy curves of a job as SVG"},
    {"refcheck", cmd_refcheck, "compare one training step with a PyTorch reference file"},
    {"prepare", cmd_prepare, "turn photos (folders or TFRecord) into shards + manifest"},
    {"bench", cmd_bench, "throughput and memory of a model; `bench ops`, `bench loader`"},
    {"checkpoints", cmd_checkpoints, "list a job's checkpoints and whether each verifies"},
    {"status", cmd_status, "how a job is doing (its status socket), or what its folder shows"},
    {"ctl", cmd_ctl, "ask a running job to checkpoint or stop"},
    {"version", NULL, "print the version"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *to) {
  fprintf(to,
          "pollen %s - distributed MobileNetV3 training on CPUs and GPUs\n\n"
          "usage: pollen <command> [flags]    (pollen <command> --help for its flags)\n\n"
          "commands:\n",
          POLLEN_VERSION);
  for (int i = 0; i < n_commands; i++) fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(to, "\n  --version  print the version\n  --help     this text\n");
}

long cli_parse_long(const char *flag, const char *text, long min, long max) {
  char *end = NULL;
  long v = strtol(text, &end, 10);
  if (!text[0] || *end || v < min || v > max)
    die_status(EXIT_USAGE, "%s: '%s' is not a whole number in [%ld, %ld]", flag, text, min, max);
  return v;
}

double cli_parse_double(const char *flag, const char *text, double min, double max) {
  char *end = NULL;
  double v = strtod(text, &end);
  if (!text[0] || *end || !(v >= min && v <= max))
    die_status(EXIT_USAGE, "%s: '%s' is not a number in [%g, %g]", flag, text, min, max);
  return v;
}

const char *cli_flag_value(int argc, char **args, const char *name) {
  size_t n = strlen(name);
  const char *v = NULL;
  for (int i = 0; i < argc && strcmp(args[i], "--"); i++) {
    if (!strcmp(args[i], name) && i + 1 < argc) v = args[++i];
    else if (!strncmp(args[i], name, n) && args[i][n] == '=') v = args[i] + n + 1;
  }
  return v;
}

int cli_usage_error(const char *cmd) {
  fprintf(stderr, "pollen %s: invalid usage; see 'pollen %s --help'\n", cmd, cmd);
  return EXIT_USAGE;
}

int cli_is_tty(void) { return isatty(STDOUT_FILENO); }

int cli_parse_device(const char *text) {
  int kind = device_parse(text);
  if (kind < 0) die_status(EXIT_USAGE, "--device: '%s' is not cpu, cuda or auto", text);
  return kind;
}

int cli_parse_precision(const char *text) {
  int math = device_precision_parse(text);
  if (math < 0) die_status(EXIT_USAGE, "--precision: '%s' is not fp32, tf32, bf16 or fp16", text);
  return math;
}

void cli_use_kernels(const char *text) {
  ops_kernels path;
  char err[256];
  if (ops_kernels_parse(text, &path, err, sizeof err) != 0) die_status(EXIT_USAGE, "--kernels: %s", err);
  ops_kernels_use(path);
}

void cli_use_cpu_precision(const char *text) {
  char err[256];
  if (device_cpu_precision_use(text, err, sizeof err) != 0) die_status(EXIT_USAGE, "--precision %s: %s", text, err);
}

int cli_use_device(model *m, int kind) {
  int gpu = -1;
  if (device_select((device_kind)kind, 0, &gpu) != DEVICE_CUDA) return 0;
  model_use_cuda(m, 0);
  return 1;
}

/* libgomp reads its settings when it loads, before main: to change its defaults we set them
 * and re-execute ourselves once. A training step is hundreds of short parallel regions, so
 * how idle OpenMP threads wait matters. libgomp's default spins 300,000 rounds first, and
 * spinning threads on a shared node (other jobs, a loader thread, several ranks) steal the
 * cores that do the work: 3x slower under load. Sleeping at once (OMP_WAIT_POLICY=passive)
 * pays a wake-up per region: 8% of a step in the kernel. pollen spins 3,000 rounds, then
 * sleeps: measured on 2 cores against passive, +11% training images/s on an idle node (with
 * the JPEG loader too), -7% with another busy process (BENCHMARKS.md, "Threads"). A value
 * the user sets for either variable is respected. */
static void default_wait_policy(char **argv) {
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || getenv("POLLEN_NO_REEXEC")) return;
  setenv("GOMP_SPINCOUNT", "3000", 1);
  setenv("POLLEN_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);
  /* If that fails we simply run with libgomp's default. */
}

/* `pollen train` holds its stop signals from before any library initialises (libgomp,
 * OpenBLAS and Open MPI take milliseconds, and default_wait_policy starts them all twice): a
 * SIGTERM or SIGUSR1 that arrives meanwhile stays pending until cmd_train's handlers take it,
 * so an early preemption is a clean stop (exit 75), not a kill. An executable's preinit array
 * runs before the initialisers of its shared libraries; strcmp may not be ready yet. */
static void hold_stop_signals(int argc, char **argv, char **envp) {
  (void)envp;
  static const char train[] = "train";
  if (argc < 2) return;
  size_t i = 0;
  while (i < sizeof train && argv[1][i] == train[i]) i++;
  if (i == sizeof train) signals_hold();
}
__attribute__((section(".preinit_array"), used)) static void (*const preinit_hold_signals)(int, char **, char **) =
    hold_stop_signals;

int main(int argc, char **argv) {
  default_wait_policy(argv);
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--version") || !strcmp(name, "version")) {
    printf("pollen %s\n", POLLEN_VERSION);
    printf("CPU kernels: %s (this CPU runs:", ops_kernels_name(ops_kernels_active()));
    for (int p = 0; p < OPS_KERNELS_COUNT; p++)
      if (ops_kernels_supported((ops_kernels)p)) printf(" %s", ops_kernels_name((ops_kernels)p));
    printf(")\n");
    char why[256];
    if (ops_gemm_precision_check(OPS_GEMM_BF16, why, sizeof why) == 0)
      printf("bf16 GEMMs: available (--precision bf16)\n");
    else
      printf("bf16 GEMMs: not here (%s)\n", why);
    return EXIT_OK;
  }
  if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
    usage(stdout);
    return EXIT_OK;
  }
  for (int i = 0; i < n_commands; i++)
    if (commands[i].run && !strcmp(name, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "pollen: unknown command '%s'; see 'pollen --help'\n", name);
  return EXIT_USAGE;
}
