/* cmd_predict.c - `pollen predict`: the top-k classes of JPEG photos under trained weights. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"
#include "worker/device.h"
#include "worker/loader.h"
#include "worker/model.h"
#include "worker/weights.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen predict --weights FILE [--top K] [--size S] [--json] IMAGE.jpg...\n"
          "       pollen predict --weights FILE --tensor FILE\n\n"
          "Prints the K most likely classes of each photo with their probabilities (eval\n"
          "preprocessing: shorter side to S/0.875, center S x S crop).\n\n"
          "  --weights FILE   weights exported by pollen train/export (JOB/weights.safetensors)\n"
          "  --top K          classes per photo (default 3)\n"
          "  --size S         image size the model was trained at (default 224)\n"
          "  --threads N\n"
          "  --device D       cpu, cuda or auto (default: cuda when built with it and a GPU is\n"
          "                   visible)\n"
          "  --json           one JSON object per photo\n"
          "  --tensor FILE    instead of photos: the `input` tensor [N,3,H,W] of a safetensors\n"
          "                   file, already preprocessed; prints the logits as JSON (to compare an\n"
          "                   export with another framework, e.g. tools/load_check.py)\n"
          "  --help\n");
}

static unsigned char *read_whole(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot read %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (size < 0) die("cannot read %s: not a regular file", path);
  unsigned char *buf = xmalloc((size_t)size + 1);
  if (fread(buf, 1, (size_t)size, f) != (size_t)size) die("cannot read %s: %s", path, strerror(errno));
  fclose(f);
  *n = (size_t)size;
  return buf;
}

/* --tensor: the logits of every image in FILE's "input" [N,3,S,S] (NCHW, as PyTorch takes
 * it), as JSON, for comparing with another implementation. */
static void predict_tensor(model *m, const char *path, int device) {
  st_file *in = st_open_or_die(path);
  const st_tensor *x = st_expect(in, "input", ST_F32, 4, NULL);
  int n = (int)x->shape[0], c = (int)x->shape[1], h = (int)x->shape[2], w = (int)x->shape[3];
  if (c != 3 || h != w || n < 1 || h < 32) die("%s: 'input' must be [N,3,S,S] with S >= 32", path);
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

int cmd_predict(int argc, char **argv) {
  static const struct option opts[] = {
      {"weights", required_argument, 0, 'w'}, {"top", required_argument, 0, 'k'},
      {"size", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
      {"json", no_argument, 0, 'j'},          {"tensor", required_argument, 0, 'T'},
      {"device", required_argument, 0, 'D'},  {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  const char *weights = NULL, *tensor = NULL;
  int top = 3, size = 224, threads = 0, json = 0, device = DEVICE_AUTO, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'w': weights = optarg; break;
    case 'k': top = (int)cli_parse_long("--top", optarg, 1, 100000); break;
    case 's': size = (int)cli_parse_long("--size", optarg, 32, 1024); break;
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
  st_file *f = st_open_or_die(weights);
  model_config mc;
  if (weights_read_config(f, &mc) != 0)
    die("%s has no pollen metadata (model, width, classes); export it with pollen export", weights);
  mc.dropout = 0;
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
  st_close(f);
  model_prepare(&m, 1, size);
  cli_use_device(&m, device);
  if (top > mc.num_classes) top = mc.num_classes;
  float *image = xmalloc_aligned((size_t)size * size * 3 * sizeof(float));
  int *rank = xmalloc((size_t)mc.num_classes * sizeof(int));
  int failures = 0;
  for (int i = optind; i < argc; i++) {
    size_t n;
    unsigned char *bytes = read_whole(argv[i], &n);
    char err[256];
    if (loader_preprocess_jpeg(bytes, n, size, image, err, sizeof err) != 0) {
      fprintf(stderr, "pollen: %s: %s; give JPEG photos\n", argv[i], err);
      failures++;
      free(bytes);
      continue;
    }
    free(bytes);
    model_forward(&m, image, NULL, 1, 0, 0.0f);
    const float *logits = model_logits(&m);
    /* Softmax, then the top k by a partial selection sort. */
    double mx = logits[0], sum = 0;
    for (int k = 1; k < mc.num_classes; k++) mx = fmax(mx, logits[k]);
    for (int k = 0; k < mc.num_classes; k++) sum += exp(logits[k] - mx), rank[k] = k;
    for (int a = 0; a < top; a++)
      for (int b = a + 1; b < mc.num_classes; b++)
        if (logits[rank[b]] > logits[rank[a]]) { int tmp = rank[a]; rank[a] = rank[b]; rank[b] = tmp; }
    if (json) printf("{\"image\":\"%s\",\"top\":[", argv[i]);
    else printf("%s\n", argv[i]);
    for (int a = 0; a < top; a++) {
      int k = rank[a];
      double p = exp(logits[k] - mx) / sum;
      char fallback[32];
      snprintf(fallback, sizeof fallback, "class %d", k);
      const char *name = names ? names[k] : fallback;
      if (json) printf("%s{\"class\":\"%s\",\"index\":%d,\"probability\":%.6f}", a ? "," : "", name, k, p);
      else printf("  %-14s %6.2f%%\n", name, 100 * p);
    }
    if (json) printf("]}\n");
  }
  if (names) {
    for (int k = 0; k < mc.num_classes; k++) free(names[k]);
    free(names);
  }
  free(image), free(rank);
  model_free(&m);
  return failures ? EXIT_FAILED : EXIT_OK;
}
