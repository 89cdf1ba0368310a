/* cmd_export.c - `pollen export`: a job's newest valid checkpoint (or its final weights) as
 * safetensors with torchvision's names, loadable by
 * torchvision.models.mobilenet_v3_small(num_classes=K).load_state_dict(...). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "daemon/ckpt.h"
#include "proto/job_config.h"
#include "proto/manifest.h"
#include "proto/plan.h"
#include "proto/train_state.h"
#include "worker/model.h"
#include "worker/weights.h"

/* The class count whose parameter count is the checkpoint's: the count is linear in it. */
static int classes_from_params(const ckpt_loaded *l, const job_config *jc) {
  const ckptf_section *params = ckpt_loaded_find(l, TRAIN_STATE_PARAMS);
  size_t n[2]; /* with 2 and 3 classes */
  for (int i = 0; i < 2; i++) {
    model_config probe = {(model_arch)model_arch_parse(jc->model), jc->width, 2 + i, 0.0, 0};
    model m;
    model_init(&m, &probe, 0);
    n[i] = m.n_params;
    model_free(&m);
  }
  size_t have = params ? params->len / sizeof(float) : 0, per_class = n[1] - n[0];
  if (!params || params->len % sizeof(float) || have < n[0] || (have - n[0]) % per_class)
    die("%s: the checkpoint's parameters do not match a %s width %g", l->path, jc->model, jc->width);
  return (int)(2 + (have - n[0]) / per_class);
}

/* The best validation's weights, byte for byte, through a temporary file and a rename. */
static int export_best(const char *job, const char *out) {
  char src[4200], tmp[4200];
  snprintf(src, sizeof src, "%s/%s", job, JOB_BEST_WEIGHTS_NAME);
  FILE *in = fopen(src, "rb");
  if (!in) die("%s: %s; a job writes it at its first validation", src, strerror(errno));
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  FILE *to = fopen(tmp, "wb");
  if (!to) die("cannot write %s: %s", tmp, strerror(errno));
  char buf[1 << 16];
  size_t n;
  int bad = 0;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) bad |= fwrite(buf, 1, n, to) != n;
  bad |= ferror(in);
  fclose(in);
  if (fclose(to) != 0 || bad || rename(tmp, out) != 0) {
    int e = errno;
    unlink(tmp);
    die("cannot write %s: %s", out, strerror(e));
  }
  printf("exported %s to %s\n", src, out);
  return EXIT_OK;
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen export --job DIR --out FILE.safetensors [--best]\n\n"
          "Writes the newest valid checkpoint of a job as torchvision-named safetensors: its\n"
          "weights, or their moving average when the job kept one (pollen train's EMA), with\n"
          "the BN statistics its evaluation used (precise BN), else the mean over the ranks\n"
          "that trained it. The export of a finished job's final checkpoint is its weights.\n\n"
          "  --job DIR     the job folder\n"
          "  --out FILE    output file (written atomically)\n"
          "  --best        the weights of the job's best validation instead (" JOB_BEST_WEIGHTS_NAME ")\n"
          "  --help\n");
}

int cmd_export(int argc, char **argv) {
  static const struct option opts[] = {{"job", required_argument, 0, 'j'},
                                       {"out", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'},
                                       {"best", no_argument, 0, 'b'},
                                       {0, 0, 0, 0}};
  const char *job = NULL, *out = NULL;
  int best = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': job = optarg; break;
    case 'o': out = optarg; break;
    case 'b': best = 1; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("export");
    }
  }
  if (optind < argc || !job || !out) {
    fprintf(stderr, "pollen export: --job DIR and --out FILE are required; see 'pollen export --help'\n");
    return EXIT_USAGE;
  }
  char path[4200], err[2048];
  if (best) return export_best(job, out);
  job_config jc;
  job_config_defaults(&jc);
  snprintf(path, sizeof path, "%s/config.json", job);
  if (job_config_load(&jc, path) != 0) die("%s has no config.json: is it a pollen job folder?", job);
  /* Any config of this model will do: export needs the weights, not the training state. */
  ckpt_loaded l;
  ckpt_status st = ckpt_load_latest(job, jc.model, NULL, &l, err, sizeof err);
  if (st == CKPT_NONE) die("%s has no checkpoint yet; train first", job);
  if (st != CKPT_LOADED) die("%s", err);
  /* Checkpoints record the class count; for one written before they did, the data's
   * manifest says it, or else the parameter count does. The names need the manifest. */
  train_state_extra extra;
  train_state_extra_read(l.file.meta.extra, l.file.meta.step, &extra);
  manifest_info *dm = manifest_read(jc.data_dir, err, sizeof err);
  int classes = extra.num_classes ? extra.num_classes : dm ? dm->num_classes : classes_from_params(&l, &jc);
  if (dm && dm->num_classes != classes) manifest_free(dm), dm = NULL;
  model_config mc = {(model_arch)model_arch_parse(jc.model), jc.width, classes, 0.0, 0};
  model m;
  model_init(&m, &mc, 0);
  train_state_shape shape = {m.n_params, 0, m.n_stats, m.n_bn};
  train_state_view state;
  float *stats;
  if (train_state_weights_from_file(&l.file, l.path, &shape, &state, &stats, err, sizeof err) != 0) die("%s", err);
  /* The weights the job validated and exported: its EMA's when it kept one. */
  memcpy(m.params, state.ema_params ? state.ema_params : state.params, m.n_params * sizeof(float));
  memcpy(m.bn_tracked, state.bn_tracked, (size_t)m.n_bn * sizeof(int64_t));
  /* The statistics the job evaluated with at this step (precise BN), else the ranks' mean:
   * the export of a finished job's final checkpoint is its weights.safetensors. */
  if (state.eval_bn_stats) memcpy(m.stats, state.eval_bn_stats, m.n_stats * sizeof(float));
  else bn_stats_mean(state.bn_stats, state.stats_ranks, m.n_stats, m.stats);
  free(stats);
  if (weights_export(&m, out, dm ? (const char *const *)dm->classes : NULL, extra.image_size ? extra.image_size : jc.size,
                     err, sizeof err))
    die("%s", err);
  if (dm) manifest_free(dm);
  printf("exported %s (step %lld, epoch %d) to %s\n", l.path, (long long)l.file.meta.step,
         plan_epoch_number(l.file.meta.epoch, l.file.meta.sample_in_epoch), out);
  model_free(&m);
  ckpt_loaded_free(&l);
  return EXIT_OK;
}
