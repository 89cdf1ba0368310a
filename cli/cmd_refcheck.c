/* cmd_refcheck.c - `pollen refcheck FILE`: loads a PyTorch reference dump (tests/ref/README.md,
 * written by tools/make_reference.py), runs the same training step in pollen and reports the
 * per-tensor maximum relative error of logits, loss, every gradient and the BN running
 * statistics; with a loss sequence in the file, also replays its optimizer steps. Fails above
 * the documented tolerances. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "cli/cli.h"
#include "proto/safetensors.h"
#include "worker/device.h"
#include "worker/model.h"
#include "worker/optim.h"
#include "worker/weights.h"

typedef struct {
  double tol_logits, tol_loss, tol_grad, tol_stats, tol_loss_seq, grad_floor;
  int verbose, failures, checked;
  int cuda; /* run the engine on the GPU (exact fp32 GEMMs) */
  double worst_logits, worst_grad;
} check_state;

/* max|a-b| / max(max|b|, floor): relative to the tensor's scale, and effectively absolute
 * for tensors that are zero in theory (tests/ref/README.md, "Tolerances"). */
static double rel_error(const float *a, const float *b, size_t n, double floor) {
  double err = 0, scale = floor;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= err)) err = d; /* also catches NaN */
    if (fabs(b[i]) > scale) scale = fabs(b[i]);
  }
  return scale > 0 ? err / scale : err;
}

static void report(check_state *s, const char *name, double err, double tol) {
  int bad = !(err <= tol);
  s->checked++;
  s->failures += bad;
  if (bad || s->verbose) printf("  %-48s max rel err %.2e  (tol %.0e)%s\n", name, err, tol, bad ? "  FAIL" : "");
}

static const float *expect_f32(const st_file *f, const char *name, size_t n, float *buf) {
  const st_tensor *t = st_find(f, name);
  if (!t || t->numel != n || st_copy_f32(t, buf, n) != 0)
    die("%s: tensor '%s' is missing or has the wrong size; regenerate it with tools/make_reference.py", f->path, name);
  return buf;
}

static const char *meta_or_die(const st_file *f, const char *key) {
  const char *v = st_meta(f, key);
  if (!v) die("%s: metadata '%s' is missing; regenerate it with tools/make_reference.py", f->path, key);
  return v;
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen refcheck [flags] REFERENCE.safetensors...\n\n"
          "Runs the training step recorded in a PyTorch reference file (tools/make_reference.py)\n"
          "and compares logits, loss, every gradient and the BN running statistics.\n\n"
          "  --tol-logits X   max relative error of logits and loss (default 1e-4)\n"
          "  --tol-grad X     max relative error of each gradient (default 1e-3)\n"
          "  --verbose        print every tensor, not only failures\n"
          "  --threads N      threads (default: all cores)\n"
          "  --device D       cpu (default), cuda or auto: check the GPU engine the same way\n"
          "  --help\n");
}

static void check_file(const char *path, check_state *s) {
  st_file *f = st_open_or_die(path);
  model_config cfg = {0};
  int arch = model_arch_parse(meta_or_die(f, "model"));
  if (arch < 0) die("%s: unknown model '%s'", path, st_meta(f, "model"));
  cfg.arch = (model_arch)arch;
  cfg.width = strtod(meta_or_die(f, "width"), NULL);
  cfg.num_classes = atoi(meta_or_die(f, "classes"));
  cfg.dropout = 0.0f; /* references are taken with dropout off */
  int size = atoi(meta_or_die(f, "size")), batch = atoi(meta_or_die(f, "batch"));
  model m;
  model_init(&m, &cfg, 0);
  model_prepare(&m, batch, size);
  weights_load_state_dict(&m, f, "", 0, 0);
  if (s->cuda) model_use_cuda(&m, 0);

  /* Input NCHW -> NHWC, labels int64 -> int. */
  size_t n_in = (size_t)batch * 3 * size * size;
  float *nchw = xmalloc(n_in * sizeof(float)), *nhwc = xmalloc(n_in * sizeof(float));
  expect_f32(f, "input", n_in, nchw);
  weights_images_from_torch(nchw, nhwc, batch, size * size);
  int64_t *labels64 = xmalloc((size_t)batch * sizeof(int64_t));
  int *labels = xmalloc((size_t)batch * sizeof(int));
  const st_tensor *lt = st_find(f, "labels");
  if (!lt || lt->numel != (uint64_t)batch || st_copy_i64(lt, labels64, (size_t)batch) != 0)
    die("%s: 'labels' is missing or malformed", path);
  for (int b = 0; b < batch; b++) {
    if (labels64[b] < 0 || labels64[b] >= cfg.num_classes) die("%s: label %lld out of range", path, (long long)labels64[b]);
    labels[b] = (int)labels64[b];
  }

  printf("%s: %s width %g, %dx%d, batch %d, %zu parameters\n", path, model_arch_name(cfg.arch),
         (double)cfg.width, size, size, batch, m.n_params);
  model_zero_grads(&m);
  float loss = model_forward(&m, nhwc, labels, batch, 1, 0.0f);
  model_backward(&m, labels, batch, 0.0f);
  model_sync_to_host(&m); /* gradients and statistics from a GPU */

  size_t n_logits = (size_t)batch * cfg.num_classes;
  float *buf = xmalloc((m.n_params > n_logits ? m.n_params : n_logits) * sizeof(float));
  float *mine = xmalloc(m.n_params * sizeof(float));
  double e = rel_error(model_logits(&m), expect_f32(f, "logits", n_logits, buf), n_logits, 0);
  /* Tolerances: tests/ref/README.md. */
  report(s, "logits", e, s->tol_logits);
  if (e > s->worst_logits) s->worst_logits = e;
  float ref_loss = *expect_f32(f, "loss", 1, buf);
  report(s, "loss", fabs(loss - ref_loss) / fabs(ref_loss), s->tol_loss);
  if (st_find(f, "eval_logits")) {
    /* Eval mode, with the statistics that forward left: the inference path (on the CPU,
     * batch norm folded into the convolutions). It reuses the activations, not the gradients
     * backward already wrote. */
    model_forward(&m, nhwc, NULL, batch, 0, 0.0f);
    e = rel_error(model_logits(&m), expect_f32(f, "eval_logits", n_logits, buf), n_logits, 0);
    report(s, "eval_logits", e, s->tol_logits);
    if (e > s->worst_logits) s->worst_logits = e;
  }

  char name[320];
  /* Lean files (optimizer sequences) carry no gradients. */
  int full = st_find(f, "grad.features.0.0.weight") != NULL;
  double g_max = 0;
  for (int i = 0; full && i < f->n_tensors; i++) {
    const st_tensor *t = &f->tensors[i];
    if (strncmp(t->name, "grad.", 5) || t->dtype != ST_F32) continue;
    const float *v = t->data;
    for (uint64_t k = 0; k < t->numel; k++) if (fabs(v[k]) > g_max) g_max = fabs(v[k]);
  }
  s->grad_floor = 1e-3 * g_max;
  for (int i = 0; full && i < m.n_param; i++) {
    const param_info *p = &m.param[i];
    snprintf(name, sizeof name, "grad.%s", p->name);
    weights_to_torch(p, m.grads + p->offset, mine);
    e = rel_error(mine, expect_f32(f, name, p->numel, buf), p->numel, s->grad_floor);
    report(s, name, e, s->tol_grad);
    if (e > s->worst_grad) s->worst_grad = e;
  }
  for (int b = 0; full && b < m.n_bn; b++) {
    const bn_info *bn = &m.bn[b];
    snprintf(name, sizeof name, "after.%s.running_mean", bn->prefix);
    report(s, name, rel_error(m.stats + bn->offset, expect_f32(f, name, bn->channels, buf), bn->channels, 1.0), s->tol_stats);
    snprintf(name, sizeof name, "after.%s.running_var", bn->prefix);
    report(s, name, rel_error(m.stats + bn->offset + bn->channels, expect_f32(f, name, bn->channels, buf), bn->channels, 1.0), s->tol_stats);
  }

  const st_tensor *seq = st_find(f, "loss_seq");
  if (seq) {
    /* Replay: fresh weights from the file, the same batch, the recorded optimizer. */
    const char *opt = meta_or_die(f, "opt");
    float lr = strtof(meta_or_die(f, "lr"), NULL);
    optim_config oc;
    if (!strcmp(opt, "sgd")) {
      oc = optim_defaults(OPT_SGD);
      oc.momentum = strtof(meta_or_die(f, "momentum"), NULL);
      const char *nest = st_meta(f, "nesterov");
      oc.nesterov = nest && (!strcmp(nest, "1") || !strcmp(nest, "True") || !strcmp(nest, "true"));
    } else if (!strcmp(opt, "rmsprop") || !strcmp(opt, "rmsprop-tf")) {
      oc = optim_defaults(OPT_RMSPROP);
      oc.rmsprop = !strcmp(opt, "rmsprop") ? RMSPROP_TORCH : RMSPROP_TF;
      /* torch calls the smoothing constant alpha, Keras rho. */
      oc.alpha = strtof(st_meta(f, "alpha") ? st_meta(f, "alpha") : meta_or_die(f, "rho"), NULL);
      oc.eps = strtof(meta_or_die(f, "eps"), NULL);
      oc.momentum = strtof(meta_or_die(f, "momentum"), NULL);
    } else {
      die("%s: optimizer '%s' is not replayable here", path, opt);
    }
    const char *wd = st_meta(f, "weight_decay");
    oc.weight_decay = wd ? strtof(wd, NULL) : 0.0f;
    oc.decay_all = 1; /* torch.optim decays every parameter it is given */
    size_t steps = seq->numel;
    float *ref = xmalloc(steps * sizeof(float)), *got = xmalloc(steps * sizeof(float));
    expect_f32(f, "loss_seq", steps, ref);
    model m2;
    model_init(&m2, &cfg, 0);
    model_prepare(&m2, batch, size);
    weights_load_state_dict(&m2, f, "", 0, 0);
    optimizer o;
    optim_init(&o, &oc, &m2);
    if (s->cuda) model_use_cuda(&m2, 0), optim_use_cuda(&o, &m2);
    for (size_t k = 0; k < steps; k++) {
      model_zero_grads(&m2);
      got[k] = model_forward(&m2, nhwc, labels, batch, 1, 0.0f);
      model_backward(&m2, labels, batch, 0.0f);
      optim_step(&o, model_live_params(&m2), model_live_grads(&m2), lr);
    }
    double worst = 0;
    for (size_t k = 0; k < steps; k++) {
      double d = fabs((double)got[k] - ref[k]) / fabs(ref[k]);
      if (!(d <= worst)) worst = d;
      if (s->verbose) printf("  step %2zu loss pollen %.6f torch %.6f\n", k, got[k], ref[k]);
    }
    snprintf(name, sizeof name, "loss_seq (%zu %s steps)", steps, opt);
    report(s, name, worst, s->tol_loss_seq);
    optim_free(&o);
    model_free(&m2);
    free(ref), free(got);
  }
  free(nchw), free(nhwc), free(labels64), free(labels), free(buf), free(mine);
  model_free(&m);
  st_close(f);
}

int cmd_refcheck(int argc, char **argv) {
  static const struct option opts[] = {{"tol-logits", required_argument, 0, 'l'},
                                       {"tol-grad", required_argument, 0, 'g'},
                                       {"verbose", no_argument, 0, 'v'},
                                       {"threads", required_argument, 0, 't'},
                                       {"device", required_argument, 0, 'd'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  check_state s = {.tol_logits = 1e-4, .tol_loss = 1e-5, .tol_grad = 1e-3, .tol_stats = 1e-4,
                   .tol_loss_seq = 2e-4};
  int threads = 0, device = DEVICE_CPU, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'l': s.tol_logits = cli_parse_double("--tol-logits", optarg, 0, 1); break;
    case 'g': s.tol_grad = cli_parse_double("--tol-grad", optarg, 0, 1); break;
    case 'v': s.verbose = 1; break;
    case 't': threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case 'd': device = cli_parse_device(optarg); break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("refcheck");
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return EXIT_USAGE;
  }
  threads_set(threads);
  int gpu = -1;
  s.cuda = device_select((device_kind)device, 0, &gpu) == DEVICE_CUDA;
  char where[256];
  device_describe(s.cuda ? DEVICE_CUDA : DEVICE_CPU, gpu, where, sizeof where);
  printf("refcheck on %s\n", where);
  for (int i = optind; i < argc; i++) check_file(argv[i], &s);
  printf("refcheck: %d tensors checked, %d over tolerance; worst logits %.2e, worst gradient %.2e\n",
         s.checked, s.failures, s.worst_logits, s.worst_grad);
  return s.failures ? EXIT_FAILED : EXIT_OK;
}
