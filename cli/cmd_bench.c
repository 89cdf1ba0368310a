/* cmd_bench.c - `pollen bench`: training and inference throughput of a model on synthetic
 * data (median of timed steps after warm-up), peak memory and achieved GFLOP/s.
 * `pollen bench ops` and `pollen bench loader` time the kernels and the data loader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/core.h"
#include "cli/cli.h"
#include "worker/device.h"
#include "worker/model.h"
#include "worker/optim.h"

static void usage(FILE *to) {
  fprintf(to,
          "usage: pollen bench [--model M] [--size S] [--batch B] [--threads T] [--json]\n"
          "       pollen bench ops [--help]       time each op at MobileNetV3-Small's shapes\n"
          "       pollen bench loader [--help]    time the data loader\n\n"
          "Times training steps (forward, loss, backward, SGD update) and inference on random\n"
          "images; reports the median over timed steps after warm-up.\n\n"
          "  --model M       mnv3-small (default), mnv3-large, mnv2\n"
          "  --width W       width multiplier (default 1.0)\n"
          "  --size S        image size (default 224)\n"
          "  --batch B       batch size (default 32)\n"
          "  --threads T     threads (default: all cores)\n"
          "  --device D      cpu (default), cuda or auto; on a GPU each step copies its batch\n"
          "                  from page-locked host memory, overlapping the previous step, as\n"
          "                  in training\n"
          "  --precision P   GEMM inputs: fp32 (default), bf16 (CPU: needs AVX512_BF16);\n"
          "                  on a GPU also tf32, fp16\n"
          "  --kernels K     CPU kernels: baseline, avx2 or avx512 (default: the best this\n"
          "                  CPU runs; also POLLEN_KERNELS)\n"
          "  --keep-activations  backward reads kept conv+BN+act outputs instead of recomputing\n"
          "                  them (CPU; faster, more memory)\n"
          "  --steps N       timed steps (default 10)\n"
          "  --warmup N      untimed steps first (default 2)\n"
          "  --mode M        train, infer or both (default both)\n"
          "  --json          one JSON object on stdout\n"
          "  --profile       then time each layer over --steps more training steps and print\n"
          "                  the slowest (on stderr with --json)\n"
          "  --help\n");
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, compare_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static long peak_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* One training step on the benchmark's batch: forward, loss, backward, SGD update. On a GPU
 * it only queues the work (the next step's forward waits for it). */
static void train_step(model *m, optimizer *o, const float *x, const int *labels, int batch,
                       uint64_t step) {
  m->dropout_seed = step;
  model_zero_grads(m);
  model_forward(m, x, labels, batch, 1, 0.0f);
  model_backward(m, labels, batch, 0.0f);
  optim_step(o, model_live_params(m), model_live_grads(m), 1e-4f);
}

int cmd_bench(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "ops")) return bench_ops(argc - 1, argv + 1);
  if (argc >= 2 && !strcmp(argv[1], "loader")) return bench_loader(argc - 1, argv + 1);
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'}, {"width", required_argument, 0, 'w'},
      {"size", required_argument, 0, 's'},  {"batch", required_argument, 0, 'b'},
      {"threads", required_argument, 0, 't'}, {"steps", required_argument, 0, 'n'},
      {"warmup", required_argument, 0, 'u'}, {"mode", required_argument, 0, 'o'},
      {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
      {"device", required_argument, 0, 'd'}, {"precision", required_argument, 0, 'p'},
      {"profile", no_argument, 0, 'P'},     {"kernels", required_argument, 0, 'k'},
      {"keep-activations", no_argument, 0, 'K'},
      {0, 0, 0, 0}};
  const char *model_name = "mnv3-small", *mode = "both", *precision = "fp32";
  int device = DEVICE_CPU, math = 0; /* fp32 */
  double width = 1.0;
  int size = 224, batch = 32, threads = 0, steps = 10, warmup = 2, json = 0, profile = 0, keep = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model_name = optarg; break;
    case 'w': width = cli_parse_double("--width", optarg, 0.05, 4); break;
    case 's': size = (int)cli_parse_long("--size", optarg, 32, 1024); break;
    case 'b': batch = (int)cli_parse_long("--batch", optarg, 1, 4096); break;
    case 't': threads = (int)cli_parse_long("--threads", optarg, 1, 1024); break;
    case 'n': steps = (int)cli_parse_long("--steps", optarg, 1, 100000); break;
    case 'u': warmup = (int)cli_parse_long("--warmup", optarg, 0, 100000); break;
    case 'o': mode = optarg; break;
    case 'j': json = 1; break;
    case 'P': profile = 1; break;
    case 'K': keep = 1; break;
    case 'k': cli_use_kernels(optarg); break;
    case 'd': device = cli_parse_device(optarg); break;
    case 'p':
      math = cli_parse_precision(optarg);
      precision = optarg;
      break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return cli_usage_error("bench");
    }
  }
  if (optind < argc) return cli_usage_error("bench");
  int arch = model_arch_parse(model_name);
  if (arch < 0) die_status(EXIT_USAGE, "--model: unknown model '%s'; use mnv3-small, mnv3-large or mnv2", model_name);
  int do_train = !strcmp(mode, "train") || !strcmp(mode, "both");
  int do_infer = !strcmp(mode, "infer") || !strcmp(mode, "both");
  if (!do_train && !do_infer) die_status(EXIT_USAGE, "--mode: '%s' is not train, infer or both", mode);
  threads_set(threads);

  model_config cfg = {(model_arch)arch, width, 5, 0.2, 0};
  model m;
  model_init(&m, &cfg, 1);
  model_keep_activations(&m, keep);
  model_prepare(&m, batch, size);
  int gpu = -1;
  device_kind dev = device_select((device_kind)device, 0, &gpu);
  char where[256];
  device_describe(dev, gpu, where, sizeof where);
  if (dev == DEVICE_CPU)
    snprintf(where, sizeof where, "cpu, %d threads, %s kernels", threads_get(),
             ops_kernels_name(ops_kernels_active()));
  if (dev == DEVICE_CUDA) model_use_cuda(&m, math);
  if (dev == DEVICE_CPU) cli_use_cpu_precision(precision);
  size_t n_in = (size_t)batch * size * size * 3;
  float *x = model_host_alloc(&m, n_in * sizeof(float));
  int *labels = model_host_alloc(&m, (size_t)batch * sizeof(int));
  for (size_t i = 0; i < n_in; i++) x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
  for (int b = 0; b < batch; b++) labels[b] = b % 5;
  optim_config oc = optim_defaults(OPT_SGD);
  optimizer o;
  optim_init(&o, &oc, &m);
  if (dev == DEVICE_CUDA) optim_use_cuda(&o, &m);
  double *t = xmalloc((size_t)steps * sizeof(double));
  double macs = model_macs(&m, size);
  double train_ips = 0, infer_ips = 0, train_ms = 0, infer_ms = 0;
  long rss_train = 0;
  if (do_train) {
    for (int s = 0; s < warmup + steps; s++) {
      double t0 = time_now();
      train_step(&m, &o, x, labels, batch, (uint64_t)s);
      /* On a GPU the steps are not waited for one by one, as in pollen train: a step's batch
       * copy overlaps the previous step's backward and update, and each forward's read-back
       * of the loss paces the loop, so the interval between steps is the step time. */
      if (s >= warmup) t[s - warmup] = time_now() - t0;
    }
    model_wait(&m);
    train_ms = 1e3 * median(t, steps);
    train_ips = batch / (train_ms / 1e3);
    rss_train = peak_rss_kib();
  }
  if (do_infer) {
    for (int s = 0; s < warmup + steps; s++) {
      double t0 = time_now();
      model_forward(&m, x, NULL, batch, 0, 0.0f);
      if (s >= warmup) t[s - warmup] = time_now() - t0;
    }
    infer_ms = 1e3 * median(t, steps);
    infer_ips = batch / (infer_ms / 1e3);
  }
  /* Training is about 3x the forward FLOPs (forward, input grads, weight grads). */
  double train_gflops = train_ips * 3 * 2 * macs / 1e9, infer_gflops = infer_ips * 2 * macs / 1e9;
  if (json) {
    /* images_per_s: the headline figure of the chosen mode (training when both). */
    printf("{\"images_per_s\":%.2f,\"device\":\"%s\",\"precision\":\"%s\",\"kernels\":\"%s\",\"model\":\"%s\",\"width\":%g,\"size\":%d,\"batch\":%d,\"threads\":%d,"
           "\"params\":%zu,\"mflops_per_image\":%.1f,"
           "\"train_images_per_s\":%.2f,\"train_step_ms\":%.2f,\"train_gflops\":%.2f,"
           "\"infer_images_per_s\":%.2f,\"infer_batch_ms\":%.2f,\"infer_gflops\":%.2f,"
           "\"activation_mib\":%.1f,\"peak_rss_mib\":%.1f,\"peak_rss_train_mib\":%.1f}\n",
           do_train ? train_ips : infer_ips, where, precision, ops_kernels_name(ops_kernels_active()), model_arch_name(cfg.arch), width, size, batch, threads_get(), m.n_params, 2 * macs / 1e6,
           train_ips, train_ms, train_gflops, infer_ips, infer_ms, infer_gflops,
           model_activation_bytes(&m) / 1048576.0, peak_rss_kib() / 1024.0, rss_train / 1024.0);
  } else {
    printf("%s width %g, %dx%d, batch %d, on %s: %zu parameters, %.1f MFLOPs/image\n",
           model_arch_name(cfg.arch), width, size, size, batch, where, m.n_params, 2 * macs / 1e6);
    printf("  GEMM precision: %s\n", precision);
    if (do_train)
      printf("  train: %8.1f images/s  (%.1f ms/step, %.1f GFLOP/s)\n", train_ips, train_ms, train_gflops);
    if (do_infer)
      printf("  infer: %8.1f images/s  (%.1f ms/batch, %.1f GFLOP/s)\n", infer_ips, infer_ms, infer_gflops);
    printf("  memory: activations %.1f MiB, peak RSS %.1f MiB\n", model_activation_bytes(&m) / 1048576.0,
           peak_rss_kib() / 1024.0);
  }
  if (profile) {
    model_profile(&m, 1);
    for (int s = 0; s < steps; s++) train_step(&m, &o, x, labels, batch, (uint64_t)(warmup + steps + s));
    model_wait(&m);
    model_profile_print(&m, json ? stderr : stdout, 25);
    model_profile(&m, 0);
  }
  free(t);
  model_host_free(&m, x), model_host_free(&m, labels);
  optim_free(&o);
  model_free(&m);
  return EXIT_OK;
}
