/* cmd_prepare.c - `pollen prepare`: flags and output; the work is in worker/dataset_prepare.c. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "proto/manifest.h"
#include "worker/dataset_prepare.h"

static void help(void) {
  printf(
      "usage: pollen prepare --src PATH --out DIR [flags]\n\n"
      "Turns photos into train/val shard files plus DIR/manifest.json for training.\n\n"
      "  --src PATH          a folder of class sub-folders (classes sorted by name; JPEG/PNG\n"
      "                      files used, others skipped and counted), or a tf_flowers TFRecord\n"
      "                      file, folder of them, or quoted glob ('data/tf_flowers-*')\n"
      "  --out DIR           output folder (created if missing)\n"
      "  --shards N          train shard files (default 4); val gets as many, or fewer\n"
      "  --val-fraction F    share of each class held out for validation (default 0.1, 0..0.9)\n"
      "  --test-fraction F   share of the photos held out as a test split that training and\n"
      "                      model selection never see, chosen by each photo's content hash\n"
      "                      (the same photos whatever the seed; default 0: none, 0..0.5);\n"
      "                      pollen eval scores it with the split named test\n"
      "  --max-side S        downscale so the long side <= S (re-encoded JPEG quality 90);\n"
      "                      0 keeps the original JPEG bytes (default 0)\n"
      "  --seed N            split seed (default 42)\n"
      "  --threads N         decode threads (default 0 = all cores)\n"
      "  --force             overwrite DIR even if prepared, damaged or different\n"
      "  --json              print a JSON summary on stdout\n"
      "  --help              this text\n\n"
      "Re-running with the same settings on finished output does nothing ('already prepared').\n"
      "Corrupt or unreadable images are reported by name and skipped. Names are printed with\n"
      "control characters and bytes that are not UTF-8 as \\xNN; a class folder whose name is\n"
      "not UTF-8 is refused (rename it).\n"
      "Exit status: 0 done, 1 failed (message says why), 2 bad flags or --src.\n");
}

int cmd_prepare(int argc, char **argv) {
  static const struct option opts[] = {
      {"src", required_argument, 0, 's'},     {"out", required_argument, 0, 'o'},
      {"shards", required_argument, 0, 'n'},  {"val-fraction", required_argument, 0, 'v'},
      {"max-side", required_argument, 0, 'm'}, {"seed", required_argument, 0, 'S'},
      {"threads", required_argument, 0, 't'}, {"force", no_argument, 0, 'f'},
      {"json", no_argument, 0, 'j'},          {"help", no_argument, 0, 'h'},
      {"test-fraction", required_argument, 0, 'T'},
      {0, 0, 0, 0}};
  prepare_opts o = {.shards = 4, .val_fraction = 0.1, .seed = 42};
  int json = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case 's': o.src = optarg; break;
      case 'o': o.out = optarg; break;
      case 'n': o.shards = (int)cli_parse_long("--shards", optarg, 1, 10000); break;
      case 'v': o.val_fraction = cli_parse_double("--val-fraction", optarg, 0.0, 0.9); break;
      case 'T': o.test_fraction = cli_parse_double("--test-fraction", optarg, 0.0, 0.5); break;
      case 'm': o.max_side = (int)cli_parse_long("--max-side", optarg, 0, 65535); break;
      case 'S': o.seed = (uint64_t)cli_parse_long("--seed", optarg, 0, (long)MANIFEST_MAX_SEED); break;
      case 't': o.threads = (int)cli_parse_long("--threads", optarg, 0, 1024); break;
      case 'f': o.force = 1; break;
      case 'j': json = 1; break;
      case 'h': help(); return EXIT_OK;
      default: return cli_usage_error("prepare");
    }
  }
  if (optind < argc) return cli_usage_error("prepare");
  if (!o.src || !o.out) die_status(EXIT_USAGE, "prepare needs --src PATH and --out DIR; see 'pollen prepare --help'");
  if (o.max_side > 0 && o.max_side < 16) die_status(EXIT_USAGE, "--max-side %d is too small; use 0 (keep) or at least 16", o.max_side);
  o.progress = !json && isatty(STDERR_FILENO);

  double t0 = time_now();
  prepare_result r;
  dataset_prepare(&o, &r);
  double secs = time_now() - t0;
  char shown[4 * 4096 + 1]; /* --out is printed escaped, written to JSON as UTF-8 */
  if (json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", r.already ? "already_prepared" : "prepared");
    cJSON_AddStringToObject(j, "out", name_utf8(o.out, shown, sizeof shown));
    cJSON_AddNumberToObject(j, "train", (double)r.train);
    cJSON_AddNumberToObject(j, "val", (double)r.val);
    cJSON_AddNumberToObject(j, "test", (double)r.test);
    cJSON_AddNumberToObject(j, "skipped_not_image", (double)r.skipped_not_image);
    cJSON_AddNumberToObject(j, "skipped_corrupt", (double)r.skipped_corrupt);
    cJSON_AddNumberToObject(j, "skipped_unreadable", (double)r.skipped_unreadable);
    cJSON_AddNumberToObject(j, "seconds", secs);
    char *text = cJSON_PrintUnformatted(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
  } else if (r.already) {
    printf("%s: already prepared with these settings (%lld train, %lld val, %lld test); nothing to do (--force redoes it)\n",
           name_escape(o.out, shown, sizeof shown), (long long)r.train, (long long)r.val, (long long)r.test);
  } else {
    printf("prepared %lld train + %lld val", (long long)r.train, (long long)r.val);
    if (o.test_fraction > 0) printf(" + %lld test", (long long)r.test);
    printf(" images into %s in %.1f s", name_escape(o.out, shown, sizeof shown), secs);
    if (r.skipped_not_image || r.skipped_corrupt || r.skipped_unreadable)
      printf("; skipped %lld non-image, %lld corrupt, %lld unreadable files", (long long)r.skipped_not_image,
             (long long)r.skipped_corrupt, (long long)r.skipped_unreadable);
    printf("\n");
  }
  return EXIT_OK;
}
