/* cmd_checkpoints.c - `pollen checkpoints --job DIR`: every checkpoint of a job, newest first,
 * with step, epoch, time, size and whether it verifies (every CRC is checked) and is of the
 * job's model and settings (ckpt_meta_match, the rule train resumes by), so this answers
 * "which one would a resume use". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/ckpt.h"
#include "proto/job_config.h"
#include "proto/plan.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen checkpoints --job DIR [--json]\n\n"
          "Lists the checkpoints in DIR/checkpoints, newest first, verifying each one: step,\n"
          "epoch, time saved, size, and 'valid' or 'INVALID' with the reason. A resume loads\n"
          "the newest valid one, and only if it is of the job's model and settings (its\n"
          "config.json): a valid checkpoint of another model or other settings is shown as such\n"
          "and is not resumable. EPOCH counts from 1 as the training log does (an epoch-end\n"
          "checkpoint shows the epoch it ends), in the table and in --json, which adds the\n"
          "sample position within the epoch in progress (\"sample_in_epoch\", 0 at an epoch's\n"
          "end) and \"resumable\" (valid and of this job; \"reason\" says why not).\n\n"
          "  --job DIR   the job directory given to pollen train\n"
          "  --json      a JSON array instead of the table (size in bytes, time in unix seconds)\n"
          "  --help\n");
}

/* The job's model and config hash from its config.json, which a relaunch resumes by; known
 * is 0 for a folder without one (nothing to compare: every valid checkpoint is shown so). */
typedef struct {
  int known;
  char model[sizeof ((job_config *)0)->model];
  char hash[17];
} job_identity;

static void job_identity_load(const char *job, job_identity *id) {
  job_config jc;
  job_config_defaults(&jc);
  char path[4200];
  snprintf(path, sizeof path, "%s/config.json", job);
  memset(id, 0, sizeof *id);
  if (job_config_load(&jc, path) != 0) return;
  id->known = 1;
  snprintf(id->model, sizeof id->model, "%s", jc.model);
  job_config_hash(&jc, id->hash);
}

/* NULL when c is a checkpoint this job resumes from; else, for a valid one, why not. The
 * model and hash were read from the file: untrusted text, escaped. */
static const char *not_this_job(const ckpt_info *c, const job_identity *id, char *buf, size_t cap) {
  if (!c->valid || !id->known) return NULL;
  char shown[4 * sizeof c->meta.config_hash + 1];
  switch (ckpt_meta_match(&c->meta, id->model, id->hash)) {
  case CKPT_OTHER_MODEL:
    snprintf(buf, cap, "of another model (%s; this job is %s)", name_escape(c->meta.model, shown, sizeof shown), id->model);
    return buf;
  case CKPT_OTHER_CONFIG:
    snprintf(buf, cap, "of other settings (config hash %s; this job's is %s)",
             c->meta.config_hash[0] ? name_escape(c->meta.config_hash, shown, sizeof shown) : "none", id->hash);
    return buf;
  default: return NULL;
  }
}

static void print_json(const ckpt_info *v, int n, const job_identity *id) {
  cJSON *arr = cJSON_CreateArray();
  char shown[4 * sizeof v->path + 1], why[512];
  for (int i = 0; i < n; i++) {
    cJSON *o = cJSON_CreateObject();
    const char *foreign = not_this_job(&v[i], id, why, sizeof why);
    cJSON_AddStringToObject(o, "file", name_utf8(v[i].path, shown, sizeof shown));
    cJSON_AddNumberToObject(o, "step", (double)v[i].step);
    cJSON_AddNumberToObject(o, "size", (double)v[i].size);
    cJSON_AddBoolToObject(o, "valid", v[i].valid);
    cJSON_AddBoolToObject(o, "resumable", v[i].valid && !foreign);
    if (v[i].valid) {
      cJSON_AddNumberToObject(o, "epoch", plan_epoch_number(v[i].meta.epoch, v[i].meta.sample_in_epoch));
      cJSON_AddNumberToObject(o, "sample_in_epoch", (double)v[i].meta.sample_in_epoch);
      cJSON_AddNumberToObject(o, "time", (double)v[i].meta.unix_time);
      cJSON_AddNumberToObject(o, "world_size", v[i].meta.world_size);
      cJSON_AddStringToObject(o, "model", name_utf8(v[i].meta.model, shown, sizeof shown));
      cJSON_AddStringToObject(o, "config_hash", name_utf8(v[i].meta.config_hash, shown, sizeof shown));
      cJSON_AddStringToObject(o, "pollen_version", name_utf8(v[i].meta.pollen_version, shown, sizeof shown));
      if (foreign) cJSON_AddStringToObject(o, "reason", foreign);
    } else {
      cJSON_AddNumberToObject(o, "mtime", (double)v[i].meta.unix_time);
      cJSON_AddStringToObject(o, "reason", name_utf8(v[i].reason, shown, sizeof shown));
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

static void print_table(const char *job, const ckpt_info *v, int n, const job_identity *id) {
  char shown[4 * sizeof v->path + 1], why[512];
  if (!n) {
    printf("no checkpoints in %s/checkpoints\n", name_escape(job, shown, sizeof shown));
    return;
  }
  int newest_valid = -1;
  printf("%12s %7s  %-19s %10s  %s\n", "STEP", "EPOCH", "TIME", "SIZE", "STATUS");
  for (int i = 0; i < n; i++) {
    char when[32] = "-", epoch[24] = "-";
    time_t t = (time_t)v[i].meta.unix_time;
    struct tm tm;
    if (t && localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    /* As the log counts: an epoch-end one (sample 0 of the next epoch) shows the epoch it ends. */
    if (v[i].valid) snprintf(epoch, sizeof epoch, "%d", plan_epoch_number(v[i].meta.epoch, v[i].meta.sample_in_epoch));
    char size[32];
    format_size(size, sizeof size, v[i].size);
    const char *foreign = not_this_job(&v[i], id, why, sizeof why);
    if (v[i].valid && newest_valid < 0) newest_valid = i;
    if (!v[i].valid)
      printf("%12llu %7s  %-19s %10s  INVALID: %s\n", (unsigned long long)v[i].step, epoch, when, size,
             name_escape(v[i].reason, shown, sizeof shown));
    else if (foreign)
      printf("%12llu %7s  %-19s %10s  valid, but %s: not resumable%s\n", (unsigned long long)v[i].step, epoch, when,
             size, foreign, strstr(foreign, "settings") ? " without --force-config" : "");
    else
      printf("%12llu %7s  %-19s %10s  valid\n", (unsigned long long)v[i].step, epoch, when, size);
  }
  /* train resumes from the newest valid checkpoint or refuses: it never falls back past one
   * of another job, so say what that means for this one. */
  if (newest_valid >= 0 && not_this_job(&v[newest_valid], id, why, sizeof why))
    printf("\npollen train refuses to resume this job: its newest valid checkpoint (step %llu) is %s; "
           "move that file out of %s/checkpoints to resume from an older one\n",
           (unsigned long long)v[newest_valid].step, why, name_escape(job, shown, sizeof shown));
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
  char shown[4 * 4096 + 1];
  if (stat(job, &st) || !S_ISDIR(st.st_mode))
    die("%s: no such job directory; pass the --job directory given to pollen train", name_escape(job, shown, sizeof shown));
  ckpt_info *v;
  int n;
  char err[1024];
  if (ckpt_list(job, &v, &n, err, sizeof err)) die("%s", name_escape(err, shown, sizeof shown));
  job_identity id;
  job_identity_load(job, &id);
  if (json) print_json(v, n, &id);
  else print_table(job, v, n, &id);
  free(v);
  return EXIT_OK;
}
