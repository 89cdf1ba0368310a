/* cli.h - the subcommands of the one `pollen` binary. Each lives in cli/cmd_<name>.c, parses
 * its own GNU-style flags with getopt_long, answers --help, and returns an exit status. */
#ifndef POLLEN_CLI_H
#define POLLEN_CLI_H

#include <getopt.h>
#include <stddef.h>

typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} cli_command;

/* Registered in cli/main.c. */
int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_launch(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_refcheck(int argc, char **argv);
/* cli/cmd_status.c: clients of a job's status socket; exit 3 = job not running. */
int cmd_status(int argc, char **argv);
int cmd_ctl(int argc, char **argv);
int cmd_checkpoints(int argc, char **argv);

/* `pollen bench ops`: the per-op micro-benchmark (cli/bench_ops.c). */
int bench_ops(int argc, char **argv);
/* `pollen bench loader`: loader images/s (cli/bench_loader.c). */
int bench_loader(int argc, char **argv);

/* Shared flag helpers: parse a number or die with "--flag: 'x' is not a ..." (exit 2). */
long cli_parse_long(const char *flag, const char *text, long min, long max);
double cli_parse_double(const char *flag, const char *text, double min, double max);
/* The value of the last "--name V" or "--name=V" among args, up to a "--"; NULL when absent.
 * For a flag needed before getopt runs (train's --config; the train flags pollen launch
 * passes on): getopt still reports any flag error. */
const char *cli_flag_value(int argc, char **args, const char *name);
/* Prints "pollen CMD: unknown option; see 'pollen CMD --help'" and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd);
/* --device: "cpu" | "cuda" | "auto" -> worker/device.h's kind, or exit 2 naming the flag. */
int cli_parse_device(const char *text);
/* --precision: "fp32" | "tf32" | "bf16" | "fp16" -> the GEMM math index, or exit 2. */
int cli_parse_precision(const char *text);
/* --kernels: "baseline" | "avx2" | "avx512": runs the CPU kernels of that path from now on,
 * or exits 2 naming what is wrong (unknown, or not on this CPU). */
void cli_use_kernels(const char *text);
/* --precision on the CPU (fp32, bf16; device_cpu_precision_use), or exit 2 saying why. Call
 * after --kernels is applied. */
void cli_use_cpu_precision(const char *text);
/* For the commands that run a model in one process: resolves kind and moves the prepared
 * model to the GPU when it is cuda (exact fp32 GEMMs). Dies with the reason when cuda was
 * asked for and cannot be had. Returns 1 on the GPU, 0 on the CPU. */
struct model;
int cli_use_device(struct model *m, int kind);
/* Test-time augmentation (cli/tta.c), the same flags in eval and predict. --size S[,S...]:
 * the sizes to score each image at (each in [32, 1024], at most CLI_MAX_SIZES), or exit 2;
 * returns how many. */
#define CLI_MAX_SIZES 8
int cli_parse_sizes(const char *text, int sizes[CLI_MAX_SIZES]);
/* --tta: "flip" -> 1, "none" -> 0, or exit 2. */
int cli_parse_tta(const char *text);
/* n images of size x size x 3 mirrored left to right, in place. */
void cli_mirror_images(float *images, int n, int size);
/* "224" or "224+256": the sizes as the output names them. */
const char *cli_sizes_text(const int *sizes, int n, char *out, size_t cap);
/* 1 when stdout is a terminal (human output), 0 when piped (plain/--json output). */
int cli_is_tty(void);

#endif
