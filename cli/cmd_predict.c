/* cmd_predict.c - `pollen predict`: the top-k classes of JPEG photos under trained weights.
 * A photo that cannot be scored (unreadable, a folder, not a JPEG, damaged) is named in one
 * line and skipped, never scored from a half-decoded picture; the exit status says so. Paths
 * and class names are untrusted text, printed through name_escape / name_utf8. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/core.h"
#include "cli/cli.h"
#include "worker/dataset_prepare.h"
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

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen predict --weights FILE [--top K] [--size S[,S...]] [--tta flip] [--json] IMAGE.jpg|png...\n"
          "       pollen predict --weights FILE --tensor FILE\n\n"
          "Prints the K most likely classes of each photo with their probabilities (eval\n"
          "preprocessing: shorter side to S/0.875, center S x S crop).\n\n"
          "  --weights FILE   weights exported by pollen train/export (JOB/weights.safetensors)\n"
          "  --top K          classes per photo (default 3)\n"
          "  --size S[,S...]  image size (default: the one the weights were trained at, else 224);\n"
          "                   several: the mean of the class probabilities at each size (as eval)\n"
          "  --tta flip       also average with the mirror image's probabilities (as eval)\n"
          "  --threads N\n"
          "  --device D       cpu, cuda or auto (default: cuda when built with it and a GPU is\n"
          "                   visible)\n"
          "  --json           one JSON object per photo\n"
          "  --tensor FILE    instead of photos: the `input` tensor [N,3,H,W] of a safetensors\n"
          "                   file, already preprocessed; prints the logits as JSON (to compare an\n"
          "                   export with another framework, e.g. tools/load_check.py)\n"
          "  --help\n\n"
          "A photo that cannot be read, is neither JPEG nor PNG, or is damaged or truncated (the\n"
          "check `pollen prepare` applies) is named in one line on stderr and not scored; the other\n"
          "photos are, and the exit status is then 1 (0 when every photo was scored, 2 for bad\n"
          "flags).\n");
}

#define MAX_PHOTO_BYTES (1ull << 30) /* far past any photo: refuse before allocating */

/* The bytes of one photo, or NULL with the line that says why (path: how to name it). */
static unsigned char *read_photo(const char *path, const char *shown, size_t *n, char *why, size_t whylen) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    err_set(why, whylen, "cannot read %s: %s", shown, strerror(errno));
    if (f) fclose(f);
    return NULL;
  }
  /* fopen opens a folder for reading, and its "size" is no byte count. */
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_PHOTO_BYTES) {
    if (S_ISDIR(st.st_mode)) err_set(why, whylen, "%s is a directory, not an image file; give the photos in it", shown);
    else if (!S_ISREG(st.st_mode)) err_set(why, whylen, "%s is not a regular file; give JPEG photos", shown);
    else err_set(why, whylen, "%s is larger than 1 GiB, not a photo; give JPEG photos", shown);
    fclose(f);
    return NULL;
  }
  unsigned char *buf = xmalloc((size_t)st.st_size + 1);
  size_t got = fread(buf, 1, (size_t)st.st_size, f);
  int e = ferror(f) ? errno : 0;
  fclose(f);
  if (got != (size_t)st.st_size) {
    err_set(why, whylen, "cannot read %s: %s", shown, e ? strerror(e) : "it shrank while being read");
    free(buf);
    return NULL;
  }
  *n = got;
  return buf;
}

/* --tensor: the logits of every image in FILE's "input" [N,3,S,S] (NCHW, as PyTorch takes
 * it), as JSON, for comparing with another implementation. */
static void predict_tensor(model *m, const char *path, int device) {
  st_file *in = st_open_or_die(path);
  const st_tensor *x = st_expect(in, "input", ST_F32, 4, NULL);
  int n = (int)x->shape[0], c = (int)x->shape[1], h = (int)x->shape[2], w = (int)x->shape[3];
  char shown[4 * 4096 + 1];
  if (c != 3 || h != w || n < 1 || h < 32)
    die("%s: 'input' must be [N,3,S,S] with S >= 32", name_escape(path, shown, sizeof shown));
  float *nchw = xmalloc(x->numel * sizeof(float)), *nhwc = xmalloc(x->numel * sizeof(float));
  st_copy_f32(x, nchw, x->numel);
  weights_images_from_torch(nchw, nhwc, n, h * w);
  model_prepare(m, n, h);
  cli_use_device(m, device);
  model_forward(m, nhwc, NULL, n, 0, 0.0f);
  const int classes = m->cfg.num_classes;
  printf("{\"logits\":[");
  for (int b = 0; b < n; b++) {
    printf("%s[", b ? "," : "");
    for (int k = 0; k < classes; k++) printf("%s%.9g", k ? "," : "", model_logits(m)[b * classes + k]);
    printf("]");
  }
  printf("]}\n");
  free(nchw), free(nhwc);
  st_close(in);
}

/* Softmax of the model's logits for its one image, times weight, added to probs. */
static void add_softmax(const model *m, double weight, double *probs) {
  const float *logits = model_logits(m);
  int classes = m->cfg.num_classes;
  double mx = logits[0], sum = 0;
  for (int k = 1; k < classes; k++) mx = fmax(mx, logits[k]);
  for (int k = 0; k < classes; k++) sum += exp(logits[k] - mx);
  for (int k = 0; k < classes; k++) probs[k] += weight * exp(logits[k] - mx) / sum;
}

/* A photo's class probabilities, averaged over the sizes (and the mirror image with flip).
 * Returns 0, or -1 with the reason in why (loader_preprocess_jpeg's). */
static int score_photo(model *m, const unsigned char *jpeg, size_t len, const int *sizes, int n_sizes, int tta_flip,
                       float *image, double *probs, char *why, size_t whylen) {
  for (int k = 0; k < m->cfg.num_classes; k++) probs[k] = 0;
  double weight = 1.0 / (n_sizes * (1 + tta_flip));
  for (int s = 0; s < n_sizes; s++) {
    if (loader_preprocess_jpeg(jpeg, len, sizes[s], image, why, whylen) != 0) return -1;
    model_prepare(m, 1, sizes[s]);
    for (int pass = 0; pass <= tta_flip; pass++) {
      if (pass) cli_mirror_images(image, 1, sizes[s]);
      model_forward(m, image, NULL, 1, 0, 0.0f);
      add_softmax(m, weight, probs);
    }
  }
  return 0;
}

int cmd_predict(int argc, char **argv) {
  static const struct option opts[] = {
      {"weights", required_argument, 0, 'w'}, {"top", required_argument, 0, 'k'},
      {"size", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
      {"json", no_argument, 0, 'j'},          {"tensor", required_argument, 0, 'T'},
      {"device", required_argument, 0, 'D'},  {"help", no_argument, 0, 'h'},
      {"tta", required_argument, 0, 'F'},
      {0, 0, 0, 0}};
  const char *weights = NULL, *tensor = NULL;
  int top = 3, sizes[CLI_MAX_SIZES] = {0}, n_sizes = 0, tta_flip = 0, threads = 0, json = 0, device = DEVICE_AUTO, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'w': weights = optarg; break;
    case 'k': top = (int)cli_parse_long("--top", optarg, 1, 100000); break;
    case 's': n_sizes = cli_parse_sizes(optarg, sizes); break;
    case 'F': tta_flip = cli_parse_tta(optarg); break;
    case 't': threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case 'j': json = 1; break;
    case 'T': tensor = optarg; break;
    case 'D': device = cli_parse_device(optarg); break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("predict");
    }
  }
  if (!weights || (optind >= argc && !tensor)) {
    fprintf(stderr, "pollen predict: --weights FILE and at least one image are required; see 'pollen predict --help'\n");
    return EXIT_USAGE;
  }
  if (tensor && optind < argc) {
    fprintf(stderr, "pollen predict: give images or --tensor FILE, not both; see 'pollen predict --help'\n");
    return EXIT_USAGE;
  }
  threads_set(threads);
  char shown[4 * 4096 + 1];
  st_file *f = st_open_or_die(weights);
  model_config mc = {0}; /* no dropout or stochastic depth: inference */
  if (weights_read_config(f, &mc) != 0)
    die("%s has no pollen metadata (model, width, classes); export it with pollen export",
        name_escape(weights, shown, sizeof shown));
  model m;
  model_init(&m, &mc, 0);
  weights_load_state_dict(&m, f, "", 0, 1);
  if (tensor) {
    st_close(f);
    predict_tensor(&m, tensor, device);
    model_free(&m);
    return EXIT_OK;
  }
  char **names = weights_class_names(f, mc.num_classes);
  if (!n_sizes) {
    sizes[0] = weights_image_size(f);
    if (!sizes[0]) sizes[0] = 224;
    n_sizes = 1;
  }
  int largest = 0;
  for (int s = 0; s < n_sizes; s++) largest = sizes[s] > largest ? sizes[s] : largest;
  st_close(f);
  model_prepare(&m, 1, sizes[0]);
  cli_use_device(&m, device);
  if (top > mc.num_classes) top = mc.num_classes;
  float *image = xmalloc_aligned((size_t)largest * largest * 3 * sizeof(float));
  int *rank = xmalloc((size_t)mc.num_classes * sizeof(int));
  double *probs = xmalloc((size_t)mc.num_classes * sizeof(double));
  int failures = 0;
  for (int i = optind; i < argc; i++) {
    size_t n = 0;
    char why[4 * 4096 + 512];
    name_escape(argv[i], shown, sizeof shown);
    unsigned char *bytes = read_photo(argv[i], shown, &n, why, sizeof why);
    if (!bytes) {
      fprintf(stderr, "pollen: %s\n", why);
      failures++;
      continue;
    }
    /* A PNG is scored as prepare would have stored it: converted to JPEG first. */
    if (n >= 8 && !memcmp(bytes, "\x89PNG\r\n\x1a\n", 8)) {
      unsigned char *jpeg;
      size_t jn;
      int bad = prepare_png_to_jpeg(bytes, n, 0, &jpeg, &jn, why, sizeof why);
      free(bytes);
      if (bad) {
        fprintf(stderr, "pollen: %s: %s; not scored: give an intact copy\n", shown, why);
        failures++;
        continue;
      }
      bytes = jpeg, n = jn;
    }
    int rc = score_photo(&m, bytes, n, sizes, n_sizes, tta_flip, image, probs, why, sizeof why);
    free(bytes);
    if (rc != 0) {
      fprintf(stderr, "pollen: %s: %s; not scored: give %s\n", shown, why,
              strstr(why, "damaged") ? "an intact copy" : "JPEG or PNG photos");
      failures++;
      continue;
    }
    /* The top k by a partial selection sort. */
    for (int k = 0; k < mc.num_classes; k++) rank[k] = k;
    for (int a = 0; a < top; a++)
      for (int b = a + 1; b < mc.num_classes; b++)
        if (probs[rank[b]] > probs[rank[a]]) { int tmp = rank[a]; rank[a] = rank[b]; rank[b] = tmp; }
    cJSON *o = NULL, *arr = NULL;
    if (json) {
      o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "image", name_utf8(argv[i], shown, sizeof shown));
      arr = cJSON_AddArrayToObject(o, "top");
    } else {
      printf("%s\n", name_escape(argv[i], shown, sizeof shown));
    }
    for (int a = 0; a < top; a++) {
      int k = rank[a];
      double p = probs[k];
      char fallback[32];
      snprintf(fallback, sizeof fallback, "class %d", k);
      const char *name = names ? names[k] : fallback; /* from the weights file: untrusted */
      if (json) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "class", name_utf8(name, shown, sizeof shown));
        cJSON_AddNumberToObject(c, "index", k);
        add_fixed6(c, "probability", p);
        cJSON_AddItemToArray(arr, c);
      } else {
        printf("  %-14s %6.2f%%\n", name_escape(name, shown, sizeof shown), 100 * p);
      }
    }
    if (json) {
      char *text = cJSON_PrintUnformatted(o);
      if (!text) die("out of memory printing a prediction as JSON");
      printf("%s\n", text);
      cJSON_free(text);
      cJSON_Delete(o);
    }
  }
  if (names) {
    for (int k = 0; k < mc.num_classes; k++) free(names[k]);
    free(names);
  }
  free(image), free(rank), free(probs);
  model_free(&m);
  return failures ? EXIT_FAILED : EXIT_OK;
}
