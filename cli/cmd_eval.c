/* cmd_eval.c - `pollen eval`: accuracy, per-class precision and recall, and the confusion
 * matrix of trained weights on a prepared split. Class names and paths are untrusted text:
 * escaped in the table (name_escape), and written by cJSON as UTF-8 (name_utf8) in --json. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "cli/cli.h"
#include "proto/job_config.h"
#include "worker/device.h"
#include "worker/loader.h"
#include "worker/model.h"
#include "worker/weights.h"

/* A number as "%.6f": the precision the output always had, without cJSON's 17 digits (and
 * null for a NaN of a diverged model, which JSON cannot hold). */
static void add_fixed6(cJSON *o, const char *key, double v) {
  char text[48];
  snprintf(text, sizeof text, "%.6f", v);
  cJSON_AddRawToObject(o, key, isfinite(v) ? text : "null");
}

/* Test-time flip: the mirrored batch's probabilities averaged into probs. Returns the
 * change to the batch's summed loss, which becomes the loss of the averaged probabilities. */
static double add_mirrored(model *m, float *images, const int *labels, int n, int size, float *probs, int classes) {
  for (int b = 0; b < n; b++)
    for (int y = 0; y < size; y++) {
      float *row = images + ((size_t)b * size + y) * size * 3;
      for (int x = 0; x < size / 2; x++)
        for (int c = 0; c < 3; c++) {
          float t = row[x * 3 + c];
          row[x * 3 + c] = row[(size - 1 - x) * 3 + c], row[(size - 1 - x) * 3 + c] = t;
        }
    }
  double before = 0, after = 0;
  for (int b = 0; b < n; b++) before -= log(fmax(probs[b * classes + labels[b]], 1e-30));
  model_forward(m, images, labels, n, 0, 0.0f);
  for (int i = 0; i < n * classes; i++) probs[i] = 0.5f * (probs[i] + m->probs[i]);
  for (int b = 0; b < n; b++) after -= log(fmax(probs[b * classes + labels[b]], 1e-30));
  return after - before;
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen eval (--job DIR | --weights FILE) [--data DIR] [flags]\n\n"
          "Evaluates weights on a prepared split: accuracy, per-class precision/recall and the\n"
          "confusion matrix (rows: true class, columns: predicted).\n\n"
          "  --job DIR        a job folder: its weights.safetensors, data folder and image size\n"
          "  --best           with --job: the weights of its best validation (" JOB_BEST_WEIGHTS_NAME ")\n"
          "  --weights FILE   safetensors weights exported by pollen (or torchvision-named)\n"
          "  --data DIR       prepared dataset (default: the job's)\n"
          "  --split S        val (default), train, or test (the photos prepare held out by\n"
          "                   content hash: training and the choice of best weights never\n"
          "                   saw them)\n"
          "  --size S         image size (default: the one the weights were trained at, else the\n"
          "                   job's, else 224)\n"
          "  --tta flip       test-time augmentation: the mean of the class probabilities of each\n"
          "                   image and its mirror image (default none); with --size larger than\n"
          "                   the training size, what helps after random-resized-crop training\n"
          "  --batch B        (default 32)\n"
          "  --threads N\n"
          "  --device D       cpu, cuda or auto (default: cuda when built with it and a GPU is\n"
          "                   visible)\n"
          "  --json           machine-readable output\n"
          "  --help\n");
}

int cmd_eval(int argc, char **argv) {
  static const struct option opts[] = {
      {"job", required_argument, 0, 'j'},   {"weights", required_argument, 0, 'w'},
      {"data", required_argument, 0, 'd'},  {"split", required_argument, 0, 's'},
      {"size", required_argument, 0, 'z'},  {"batch", required_argument, 0, 'b'},
      {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'J'},
      {"device", required_argument, 0, 'D'}, {"help", no_argument, 0, 'h'}, {"best", no_argument, 0, 'B'},
      {"tta", required_argument, 0, 'T'},
      {0, 0, 0, 0}};
  const char *job = NULL, *weights = NULL, *data = NULL, *split = "val";
  int size = 0, batch = 32, threads = 0, json = 0, device = DEVICE_AUTO, best = 0, tta_flip = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': job = optarg; break;
    case 'w': weights = optarg; break;
    case 'd': data = optarg; break;
    case 's': split = optarg; break;
    case 'z': size = (int)cli_parse_long("--size", optarg, 32, 1024); break;
    case 'b': batch = (int)cli_parse_long("--batch", optarg, 1, 4096); break;
    case 't': threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case 'J': json = 1; break;
    case 'B': best = 1; break;
    case 'T':
      if (strcmp(optarg, "flip") && strcmp(optarg, "none")) die_status(EXIT_USAGE, "--tta: '%s' is not flip or none", optarg);
      tta_flip = !strcmp(optarg, "flip");
      break;
    case 'D': device = cli_parse_device(optarg); break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("eval");
    }
  }
  if (optind < argc || (!job && !weights)) {
    fprintf(stderr, "pollen eval: give --job DIR or --weights FILE; see 'pollen eval --help'\n");
    return EXIT_USAGE;
  }
  if (best && (!job || weights)) die_status(EXIT_USAGE, "eval: --best picks a job's best weights: give --job DIR, not --weights");
  if (strcmp(split, "val") && strcmp(split, "train") && strcmp(split, "test"))
    die_status(EXIT_USAGE, "--split: '%s' is not val, train or test", split);
  threads_set(threads);
  char path[4200], b1[4 * 4200 + 1], b2[4 * 1024 + 1];
  job_config jc;
  job_config_defaults(&jc);
  if (job) {
    snprintf(path, sizeof path, "%s/config.json", job);
    if (job_config_load(&jc, path) != 0) die("%s has no config.json: is it a pollen job folder?", name_escape(job, b1, sizeof b1));
    if (!weights) {
      snprintf(path, sizeof path, "%s/%s", job, best ? JOB_BEST_WEIGHTS_NAME : "weights.safetensors");
      if (best && access(path, R_OK) != 0) die("%s: %s; a job writes it at its first validation", path, strerror(errno));
      weights = path;
    }
    if (!data) data = jc.data_dir;
  }
  if (!data) die_status(EXIT_USAGE, "eval: --data DIR is required with --weights");

  st_file *f = st_open_or_die(weights);
  if (!size) size = weights_image_size(f);
  if (!size && job) size = jc.size;
  if (!size) size = 224;
  model_config mc = {MODEL_MNV3_SMALL, 1.0, 5, 0.0};
  if (weights_read_config(f, &mc) != 0)
    die("%s has no pollen metadata (model, width, classes); export it with pollen export", name_escape(weights, b1, sizeof b1));
  mc.dropout = 0;
  loader_config lc = {.data_dir = data, .split = split, .image_size = size, .batch = batch};
  loader *l = loader_open(&lc);
  int classes = loader_num_classes(l), n = loader_size(l);
  if (classes != mc.num_classes)
    die("%s has %d classes but %s has %d; evaluate on the dataset it was trained on", name_escape(weights, b1, sizeof b1),
        mc.num_classes, name_escape(data, b2, sizeof b2), classes);
  if (n == 0) die("%s: the %s split is empty", name_escape(data, b2, sizeof b2), split);
  model m;
  model_init(&m, &mc, 0);
  weights_load_state_dict(&m, f, "", 0, 1);
  st_close(f);
  model_prepare(&m, batch, size);
  cli_use_device(&m, device);

  int64_t *order = xmalloc((size_t)n * sizeof *order);
  for (int i = 0; i < n; i++) order[i] = i;
  loader_start_epoch(l, 0, order, n);
  float *images = model_host_alloc(&m, (size_t)batch * size * size * 3 * sizeof(float));
  int *labels = model_host_alloc(&m, (size_t)batch * sizeof(int));
  long *confusion = xcalloc((size_t)classes * classes, sizeof *confusion);
  double loss_sum = 0;
  int got, seen = 0;
  float *probs = xmalloc((size_t)batch * classes * sizeof(float));
  while ((got = loader_next(l, images, labels)) > 0) {
    loss_sum += (double)model_forward(&m, images, labels, got, 0, 0.0f) * got;
    memcpy(probs, m.probs, (size_t)got * classes * sizeof(float));
    if (tta_flip) loss_sum += add_mirrored(&m, images, labels, got, size, probs, classes);
    for (int b = 0; b < got; b++) {
      int best = 0;
      for (int k = 1; k < classes; k++) if (probs[b * classes + k] > probs[b * classes + best]) best = k;
      confusion[labels[b] * classes + best]++;
    }
    seen += got;
  }
  long correct = 0;
  for (int k = 0; k < classes; k++) correct += confusion[k * classes + k];
  double acc = (double)correct / seen;
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "weights", name_utf8(weights, b1, sizeof b1));
    cJSON_AddStringToObject(o, "data", name_utf8(data, b2, sizeof b2));
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "image_size", size);
    cJSON_AddStringToObject(o, "tta", tta_flip ? "flip" : "none");
    cJSON_AddNumberToObject(o, "images", seen);
    add_fixed6(o, "accuracy", acc);
    add_fixed6(o, "loss", loss_sum / seen);
    cJSON *arr = cJSON_AddArrayToObject(o, "classes");
    for (int k = 0; k < classes; k++) {
      long tp = confusion[k * classes + k], pred = 0, truth = 0;
      for (int j = 0; j < classes; j++) pred += confusion[j * classes + k], truth += confusion[k * classes + j];
      cJSON *c = cJSON_CreateObject();
      cJSON_AddStringToObject(c, "name", name_utf8(loader_class_name(l, k), b1, sizeof b1));
      add_fixed6(c, "precision", pred ? (double)tp / pred : 0.0);
      add_fixed6(c, "recall", truth ? (double)tp / truth : 0.0);
      cJSON_AddNumberToObject(c, "support", (double)truth);
      cJSON *row = cJSON_AddArrayToObject(c, "confusion");
      for (int j = 0; j < classes; j++) cJSON_AddItemToArray(row, cJSON_CreateNumber((double)confusion[k * classes + j]));
      cJSON_AddItemToArray(arr, c);
    }
    char *text = cJSON_PrintUnformatted(o);
    if (!text) die("out of memory printing the evaluation as JSON");
    printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(o);
  } else {
    printf("%s on %s (%s, %d images at %d px%s): accuracy %.4f, loss %.4f\n\n", name_escape(weights, b1, sizeof b1),
           name_escape(data, b2, sizeof b2), split, seen, size, tta_flip ? ", flip TTA" : "", acc, loss_sum / seen);
    printf("%-14s %9s %9s %8s\n", "class", "precision", "recall", "support");
    for (int k = 0; k < classes; k++) {
      long tp = confusion[k * classes + k], pred = 0, truth = 0;
      for (int j = 0; j < classes; j++) pred += confusion[j * classes + k], truth += confusion[k * classes + j];
      printf("%-14s %9.3f %9.3f %8ld\n", name_escape(loader_class_name(l, k), b1, sizeof b1),
             pred ? (double)tp / pred : 0.0, truth ? (double)tp / truth : 0.0, truth);
    }
    printf("\nconfusion (rows true, columns predicted):\n%-14s", "");
    for (int k = 0; k < classes; k++) printf(" %9.9s", name_escape(loader_class_name(l, k), b1, sizeof b1));
    printf("\n");
    for (int k = 0; k < classes; k++) {
      printf("%-14s", name_escape(loader_class_name(l, k), b1, sizeof b1));
      for (int j = 0; j < classes; j++) printf(" %9ld", confusion[k * classes + j]);
      printf("\n");
    }
  }
  model_host_free(&m, images), model_host_free(&m, labels);
  free(order), free(confusion), free(probs);
  loader_close(l);
  model_free(&m);
  return EXIT_OK;
}
