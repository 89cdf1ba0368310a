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

/* One pass over the split at one size: each image's class probabilities (and its mirror
 * image's, with flip) times `weight` added to probs[image * classes ...]; labels in split order. */
static void add_split_probs(model *m, loader *l, int n, int size, int tta_flip, double weight, float *images,
                            int *batch_labels, double *probs, int *labels) {
  int classes = m->cfg.num_classes, got, seen = 0;
  int64_t *order = xmalloc((size_t)n * sizeof *order);
  for (int i = 0; i < n; i++) order[i] = i;
  loader_start_epoch(l, 0, order, n);
  while ((got = loader_next(l, images, batch_labels)) > 0) {
    for (int pass = 0; pass <= tta_flip; pass++) {
      if (pass) cli_mirror_images(images, got, size);
      model_forward(m, images, batch_labels, got, 0, 0.0f);
      for (int i = 0; i < got * classes; i++) probs[(size_t)seen * classes + i] += weight * m->probs[i];
    }
    memcpy(labels + seen, batch_labels, (size_t)got * sizeof *labels);
    seen += got;
  }
  if (seen != n) die("eval: the loader delivered %d of %d images (internal error)", seen, n);
  free(order);
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
          "  --size S[,S...]  image size (default: the one the weights were trained at, else the\n"
          "                   job's, else 224); several: multi-scale test-time augmentation,\n"
          "                   the mean of the class probabilities at each size (at most 8)\n"
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
  int sizes[CLI_MAX_SIZES] = {0}, n_sizes = 0, batch = 32, threads = 0, json = 0, device = DEVICE_AUTO, best = 0, tta_flip = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'j': job = optarg; break;
    case 'w': weights = optarg; break;
    case 'd': data = optarg; break;
    case 's': split = optarg; break;
    case 'z': n_sizes = cli_parse_sizes(optarg, sizes); break;
    case 'b': batch = (int)cli_parse_long("--batch", optarg, 1, 4096); break;
    case 't': threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case 'J': json = 1; break;
    case 'B': best = 1; break;
    case 'T': tta_flip = cli_parse_tta(optarg); break;
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
  if (!n_sizes) {
    sizes[0] = weights_image_size(f);
    if (!sizes[0] && job) sizes[0] = jc.size;
    if (!sizes[0]) sizes[0] = 224;
    n_sizes = 1;
  }
  int largest = 0;
  for (int i = 0; i < n_sizes; i++) largest = sizes[i] > largest ? sizes[i] : largest;
  model_config mc = {MODEL_MNV3_SMALL, 1.0, 5, 0.0, 0};
  if (weights_read_config(f, &mc) != 0)
    die("%s has no pollen metadata (model, width, classes); export it with pollen export", name_escape(weights, b1, sizeof b1));
  mc.dropout = 0;
  loader_config lc = {.data_dir = data, .split = split, .image_size = sizes[0], .batch = batch};
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
  model_prepare(&m, batch, sizes[0]);
  cli_use_device(&m, device);

  /* Each image's class probabilities, averaged over the sizes and flips; then the argmax
   * and the loss of the averaged probabilities. */
  float *images = model_host_alloc(&m, (size_t)batch * largest * largest * 3 * sizeof(float));
  int *batch_labels = model_host_alloc(&m, (size_t)batch * sizeof(int));
  double *probs = xcalloc((size_t)n * classes, sizeof *probs);
  int *labels = xmalloc((size_t)n * sizeof *labels);
  double weight = 1.0 / (n_sizes * (1 + tta_flip));
  for (int i = 0; i < n_sizes; i++) {
    if (i) {
      loader_close(l);
      lc.image_size = sizes[i];
      l = loader_open(&lc);
      model_prepare(&m, batch, sizes[i]);
    }
    add_split_probs(&m, l, n, sizes[i], tta_flip, weight, images, batch_labels, probs, labels);
  }
  long *confusion = xcalloc((size_t)classes * classes, sizeof *confusion);
  double loss_sum = 0;
  for (int i = 0; i < n; i++) {
    const double *p = probs + (size_t)i * classes;
    int best = 0;
    for (int k = 1; k < classes; k++) if (p[k] > p[best]) best = k;
    confusion[labels[i] * classes + best]++;
    loss_sum -= log(fmax(p[labels[i]], 1e-30));
  }
  long correct = 0;
  for (int k = 0; k < classes; k++) correct += confusion[k * classes + k];
  double acc = (double)correct / n;
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "weights", name_utf8(weights, b1, sizeof b1));
    cJSON_AddStringToObject(o, "data", name_utf8(data, b2, sizeof b2));
    cJSON_AddStringToObject(o, "split", split);
    if (n_sizes == 1) cJSON_AddNumberToObject(o, "image_size", sizes[0]);
    cJSON *by_size = cJSON_AddArrayToObject(o, "image_sizes");
    for (int i = 0; i < n_sizes; i++) cJSON_AddItemToArray(by_size, cJSON_CreateNumber(sizes[i]));
    cJSON_AddStringToObject(o, "tta", tta_flip ? "flip" : "none");
    cJSON_AddNumberToObject(o, "images", n);
    add_fixed6(o, "accuracy", acc);
    add_fixed6(o, "loss", loss_sum / n);
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
    char shown_sizes[CLI_MAX_SIZES * 6];
    printf("%s on %s (%s, %d images at %s px%s): accuracy %.4f, loss %.4f\n\n", name_escape(weights, b1, sizeof b1),
           name_escape(data, b2, sizeof b2), split, n, cli_sizes_text(sizes, n_sizes, shown_sizes, sizeof shown_sizes),
           tta_flip ? ", flip TTA" : "", acc, loss_sum / n);
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
  model_host_free(&m, images), model_host_free(&m, batch_labels);
  free(labels), free(confusion), free(probs);
  loader_close(l);
  model_free(&m);
  return EXIT_OK;
}
