/* bench_loader.c - `pollen bench loader`: how many images per second the loader delivers
 * (read + decode + augment) from a prepared folder, with no training step in between. Also a
 * quick way to read every record of a split end to end (a damaged shard fails it). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"
#include "proto/plan.h"
#include "worker/loader.h"

static void help(void) {
  printf(
      "usage: pollen bench loader --data DIR [flags]\n\n"
      "Reads shuffled epochs of a prepared split, as training does but with no training step in\n"
      "between, and reports images/s for each.\n\n"
      "  --data DIR      folder made by 'pollen prepare'\n"
      "  --split S       train or val (default train)\n"
      "  --size S        image side (default 224)\n"
      "  --batch B       batch size (default 32)\n"
      "  --eval          eval preprocessing instead of train augmentation\n"
      "  --auto-augment ta_wide  TrivialAugmentWide after the crop (as pollen train)\n"
      "  --random-erase P        RandomErasing with probability P (as pollen train)\n"
      "  --epochs N      epochs to read (default 1); from the second on, photos come from the\n"
      "                  decoded-photo cache\n"
      "  --decoded-cache MIB  memory for decoded photos (default 1024 as pollen train; 0: off)\n"
      "  --threads N     decode threads (default 0 = all cores)\n"
      "  --images N      stop after about N images (default 0 = the whole split)\n"
      "  --seed N        shuffle and augmentation seed (default 1)\n"
      "  --json          one JSON line on stdout\n"
      "  --help          this text\n");
}

/* One epoch of n images in the order of `epoch`'s shuffle; images/s. */
static double read_epoch(loader *l, int epoch, uint64_t seed, int64_t *order, int64_t n, float *x, int *y) {
  plan_shuffle(seed, epoch, loader_size(l), order);
  double t0 = time_now();
  loader_start_epoch(l, epoch, order, n);
  int64_t got = 0, got_k;
  while ((got_k = loader_next(l, x, y)) > 0) got += got_k;
  double secs = time_now() - t0;
  if (got != n) die("loader delivered %lld of %lld images (internal error)", (long long)got, (long long)n);
  return n / secs;
}

int bench_loader(int argc, char **argv) {
  static const struct option opts[] = {
      {"data", required_argument, 0, 'd'}, {"split", required_argument, 0, 'p'},
      {"size", required_argument, 0, 's'}, {"batch", required_argument, 0, 'b'},
      {"eval", no_argument, 0, 'e'},       {"threads", required_argument, 0, 't'},
      {"images", required_argument, 0, 'n'}, {"seed", required_argument, 0, 'S'},
      {"json", no_argument, 0, 'j'},       {"help", no_argument, 0, 'h'},
      {"auto-augment", required_argument, 0, 'A'}, {"random-erase", required_argument, 0, 'E'},
      {"epochs", required_argument, 0, 'N'}, {"decoded-cache", required_argument, 0, 'C'},
      {0, 0, 0, 0}};
  loader_config cfg = {.split = "train", .image_size = 224, .batch = 32, .augment = 1, .seed = 1};
  long images = 0, cache_mib = 1024;
  int json = 0, epochs = 1, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
      case 'd': cfg.data_dir = optarg; break;
      case 'p': cfg.split = optarg; break;
      case 's': cfg.image_size = (int)cli_parse_long("--size", optarg, 8, 4096); break;
      case 'b': cfg.batch = (int)cli_parse_long("--batch", optarg, 1, 4096); break;
      case 'e': cfg.augment = 0; break;
      case 't': cfg.threads = (int)cli_parse_long("--threads", optarg, 0, 1024); break;
      case 'n': images = cli_parse_long("--images", optarg, 0, 1L << 40); break;
      case 'S': cfg.seed = (uint64_t)cli_parse_long("--seed", optarg, 0, 1L << 62); break;
      case 'j': json = 1; break;
      case 'A':
        if (strcmp(optarg, "ta_wide")) die_status(EXIT_USAGE, "--auto-augment: '%s' is not ta_wide", optarg);
        cfg.trivial_augment = 1;
        break;
      case 'E': cfg.random_erase = cli_parse_double("--random-erase", optarg, 0, 1); break;
      case 'N': epochs = (int)cli_parse_long("--epochs", optarg, 1, 1000); break;
      case 'C': cache_mib = cli_parse_long("--decoded-cache", optarg, 0, 1 << 24); break;
      case 'h': help(); return EXIT_OK;
      default: return cli_usage_error("bench loader");
    }
  }
  if (optind < argc) return cli_usage_error("bench loader");
  if (!cfg.data_dir) die_status(EXIT_USAGE, "bench loader needs --data DIR (a folder made by 'pollen prepare')");
  if (strcmp(cfg.split, "train") && strcmp(cfg.split, "val"))
    die_status(EXIT_USAGE, "--split %s: use train or val", cfg.split);

  loader *l = loader_open(&cfg);
  loader_set_cache(l, (size_t)cache_mib << 20);
  int64_t n = loader_size(l);
  if (images > 0 && images < n) n = images;
  int64_t *order = xmalloc(sizeof(int64_t) * (size_t)loader_size(l));
  size_t floats = (size_t)cfg.batch * cfg.image_size * cfg.image_size * 3;
  float *x = xmalloc_aligned(sizeof(float) * floats);
  int *y = xmalloc(sizeof(int) * (size_t)cfg.batch);
  double *rate = xmalloc(sizeof(double) * (size_t)epochs);
  for (int e = 0; e < epochs; e++) rate[e] = read_epoch(l, e, cfg.seed, order, n, x, y);
  size_t cached_bytes;
  int64_t cached = loader_cached_photos(l, &cached_bytes);
  loader_close(l);
  int threads = cfg.threads > 0 ? cfg.threads : threads_get();
  if (json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "data", cfg.data_dir);
    cJSON_AddStringToObject(j, "split", cfg.split);
    cJSON_AddStringToObject(j, "mode", cfg.augment ? "train" : "eval");
    cJSON_AddNumberToObject(j, "size", cfg.image_size);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "images", (double)n);
    cJSON_AddNumberToObject(j, "images_per_s", rate[epochs - 1]);
    cJSON_AddItemToObject(j, "epochs_images_per_s", cJSON_CreateDoubleArray(rate, epochs));
    cJSON_AddNumberToObject(j, "cached_photos", (double)cached);
    cJSON_AddNumberToObject(j, "cached_mib", cached_bytes / 1048576.0);
    char *text = cJSON_PrintUnformatted(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
  } else {
    printf("loader %s %s %dx%d, %d threads, %lld images per epoch:", cfg.data_dir, cfg.augment ? "train-aug" : "eval",
           cfg.image_size, cfg.image_size, threads, (long long)n);
    for (int e = 0; e < epochs; e++) printf("%s %.0f", e ? "," : "", rate[e]);
    printf(" images/s; %lld photos (%.0f MiB) in the decoded-photo cache\n", (long long)cached, cached_bytes / 1048576.0);
  }
  free(rate);
  free(order);
  free(x);
  free(y);
  return EXIT_OK;
}
