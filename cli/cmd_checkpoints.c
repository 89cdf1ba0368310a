/* cmd_checkpoints.c - `pollen checkpoints --job DIR`: every checkpoint of a job, newest first,
 * with step, epoch, time, size and whether it verifies (every CRC is checked, so this also
 * answers "which one would a resume use"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/ckpt.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen checkpoints --job DIR [--json]\n\n"
          "Lists the checkpoints in DIR/checkpoints, newest first, verifying each one: step,\n"
          "epoch, time saved, size, and 'valid' or 'INVALID' with the reason. A resume loads\n"
          "the newest valid one. EPOCH counts from 1 as the training log does (an epoch-end\n"
          "checkpoint shows the epoch it ends); --json gives the file's 0-based epoch and the\n"
          "sample position within it.\n\n"
          "  --job DIR   the job directory given to pollen train\n"
          "  --json      a JSON array instead of the table (size in bytes, time in unix seconds)\n"
          "  --help\n");
}

static void print_json(const ckpt_info *v, int n) {
  cJSON *arr = cJSON_CreateArray();
  for (int i = 0; i < n; i++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", v[i].path);
    cJSON_AddNumberToObject(o, "step", (double)v[i].step);
    cJSON_AddNumberToObject(o, "size", (double)v[i].size);
    cJSON_AddBoolToObject(o, "valid", v[i].valid);
    if (v[i].valid) {
      cJSON_AddNumberToObject(o, "epoch", (double)v[i].meta.epoch);
      cJSON_AddNumberToObject(o, "sample_in_epoch", (double)v[i].meta.sample_in_epoch);
      cJSON_AddNumberToObject(o, "time", (double)v[i].meta.unix_time);
      cJSON_AddNumberToObject(o, "world_size", v[i].meta.world_size);
      cJSON_AddStringToObject(o, "model", v[i].meta.model);
      cJSON_AddStringToObject(o, "config_hash", v[i].meta.config_hash);
      cJSON_AddStringToObject(o, "pollen_version", v[i].meta.pollen_version);
    } else {
      cJSON_AddNumberToObject(o, "mtime", (double)v[i].meta.unix_time);
      cJSON_AddStringToObject(o, "reason", v[i].reason);
    }
    cJSON_AddItemToArray(arr, o);
  }
  char *s = cJSON_Print(arr);
  puts(s);
  cJSON_free(s);
  cJSON_Delete(arr);
}

static void format_size(char *out, size_t n, uint64_t bytes) {
  if (bytes < 1000 * 1000) snprintf(out, n, "%.1f kB", (double)bytes / 1e3);
  else if (bytes < 1000ull * 1000 * 1000) snprintf(out, n, "%.1f MB", (double)bytes / 1e6);
  else snprintf(out, n, "%.2f GB", (double)bytes / 1e9);
}

static void print_table(const char *job, const ckpt_info *v, int n) {
  if (!n) {
    printf("no checkpoints in %s/checkpoints\n", job);
    return;
  }
  printf("%12s %7s  %-19s %10s  %s\n", "STEP", "EPOCH", "TIME", "SIZE", "STATUS");
  for (int i = 0; i < n; i++) {
    char when[32] = "-", epoch[24] = "-";
    time_t t = (time_t)v[i].meta.unix_time;
    struct tm tm;
    if (t && localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    /* As the log counts: the epoch it falls in, from 1; an epoch-end one (sample 0 of the
     * next epoch) shows the epoch just finished. The file and --json keep the 0-based index. */
    if (v[i].valid) {
      long long e = v[i].meta.epoch + (v[i].meta.sample_in_epoch > 0);
      snprintf(epoch, sizeof epoch, "%lld", e > 0 ? e : 1);
    }
    char size[32];
    format_size(size, sizeof size, v[i].size);
    printf("%12llu %7s  %-19s %10s  %s%s\n", (unsigned long long)v[i].step, epoch, when, size,
           v[i].valid ? "valid" : "INVALID: ", v[i].valid ? "" : v[i].reason);
  }
}

int cmd_checkpoints(int argc, char **argv) {
  static const struct option opts[] = {
      {"job", required_argument, NULL, 'j'},
      {"json", no_argument, NULL, 'J'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *job = NULL;
  int json = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case 'j': job = optarg; break;
      case 'J': json = 1; break;
      case 'h': usage(stdout); return EXIT_OK;
      default: return cli_usage_error("checkpoints");
    }
  }
  if (optind != argc || !job) {
    if (!job) fprintf(stderr, "pollen checkpoints: --job DIR is required\n");
    return cli_usage_error("checkpoints");
  }
  struct stat st;
  if (stat(job, &st) || !S_ISDIR(st.st_mode))
    die("%s: no such job directory; pass the --job directory given to pollen train", job);
  ckpt_info *v;
  int n;
  char err[1024];
  if (ckpt_list(job, &v, &n, err, sizeof err)) die("%s", err);
  if (json) print_json(v, n);
  else print_table(job, v, n);
  free(v);
  return EXIT_OK;
}
