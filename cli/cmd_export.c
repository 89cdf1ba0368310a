/* cmd_export.c - `pollen export`: a job's newest valid checkpoint (or its final weights) as
 * safetensors with torchvision's names, loadable by
 * torchvision.models.mobilenet_v3_small(num_classes=K).load_state_dict(...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "daemon/ckpt.h"
#include "base/core.h"
#include "proto/job_config.h"
#include "proto/manifest.h"
#include "worker/model.h"
#include "worker/weights.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen export --job DIR --out FILE.safetensors [--classes K]\n\n"
          "Writes the newest valid checkpoint of a job as torchvision-named safetensors. BN\n"
          "running statistics are the mean over the ranks that trained it.\n\n"
          "  --job DIR     the job folder\n"
          "  --out FILE    output file (written atomically)\n"
          "  --help\n");
}

int cmd_export(int argc, char **argv) {
  static const struct option opts[] = {{"job", required_argument, 0, 'j'},
                                       {"out", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *job = NULL, *out = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': job = optarg; break;
    case 'o': out = optarg; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("export");
    }
  }
  if (optind < argc || !job || !out) {
    fprintf(stderr, "pollen export: --job DIR and --out FILE are required; see 'pollen export --help'\n");
    return EXIT_USAGE;
  }
  char path[4200], err[2048];
  job_config jc;
  job_config_defaults(&jc);
  snprintf(path, sizeof path, "%s/config.json", job);
  if (job_config_load(&jc, path) != 0) die("%s has no config.json: is it a pollen job folder?", job);
  /* Any config of this model will do: export needs the weights, not the training state. */
  ckpt_loaded l;
  ckpt_status st = ckpt_load_latest(job, jc.model, NULL, &l, err, sizeof err);
  if (st == CKPT_NONE) die("%s has no checkpoint yet; train first", job);
  if (st != CKPT_LOADED) die("%s", err);
  /* The class count and names live in the data's manifest; when the data is gone, the count
   * is the one whose parameter count matches the checkpoint. */
  int classes = 0;
  const ckptf_section *params = ckpt_loaded_find(&l, "params");
  manifest_info *dm = manifest_read(jc.data_dir, err, sizeof err);
  if (dm) classes = dm->num_classes;
  for (int k = 2; !classes && k <= 100000 && params; k++) {
    model_config probe = {(model_arch)model_arch_parse(jc.model), jc.width, k, 0.0};
    model m;
    model_init(&m, &probe, 0);
    size_t n = m.n_params;
    model_free(&m);
    if (n * sizeof(float) == params->len) { classes = k; break; }
    if (n * sizeof(float) > params->len) break;
  }
  if (!classes) die("%s: the checkpoint's parameters do not match a %s width %g", l.path, jc.model, jc.width);
  model_config mc = {(model_arch)model_arch_parse(jc.model), jc.width, classes, 0.0};
  model m;
  model_init(&m, &mc, 0);
  if (!params || params->len != m.n_params * sizeof(float))
    die("%s: the checkpoint's parameters do not match a %s width %g with %d classes", l.path, jc.model, jc.width, classes);
  memcpy(m.params, params->data, params->len);
  const ckptf_section *tracked = ckpt_loaded_find(&l, "bn_tracked");
  if (!tracked || tracked->len != (size_t)m.n_bn * sizeof(int64_t)) die("%s: section bn_tracked is missing or malformed", l.path);
  memcpy(m.bn_tracked, tracked->data, tracked->len);
  int world = l.file.meta.world_size;
  for (size_t i = 0; i < m.n_stats; i++) m.stats[i] = 0;
  for (int r = 0; r < world; r++) {
    char name[32];
    snprintf(name, sizeof name, "bn_stats.rank%d", r);
    const ckptf_section *s = ckpt_loaded_find(&l, name);
    if (!s || s->len != m.n_stats * sizeof(float)) die("%s: section %s is missing or malformed", l.path, name);
    const float *v = (const float *)s->data;
    for (size_t i = 0; i < m.n_stats; i++) m.stats[i] += v[i] / (float)world;
  }
  weights_export(&m, out, dm ? (const char *const *)dm->classes : NULL);
  if (dm) manifest_free(dm);
  printf("exported %s (step %lld, epoch %lld) to %s\n", l.path, (long long)l.file.meta.step,
         (long long)l.file.meta.epoch, out);
  model_free(&m);
  ckpt_loaded_free(&l);
  return EXIT_OK;
}
