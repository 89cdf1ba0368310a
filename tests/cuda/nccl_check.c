/* nccl_check.c - the NCCL gradient sync (worker/nccl_sync.h) under mpirun, for
 * tests/cuda/test_nccl.sh. Each rank fills the n live gradients of a model on its GPU with
 * (rank+1)*f(i) on the model's stream, reports buckets ready from the end of the buffer
 * towards the start as backward would, and checks that every element ends as the average
 * over the ranks, for several steps. --count prints the number of GPUs (or "SKIP: ..." and
 * exit 77).
 * --hang-rank R: rank R never joins the all-reduce; the others must end the job with a
 * message naming the stall within --timeout seconds. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/core.h"
#include "ops/cuda/ops_cuda.h"
#include "worker/collective.h"
#include "worker/device.h"
#include "worker/model.h"
#include "worker/nccl_sync.h"

static float f_of(size_t i) { return (float)(i % 1000) * 0.001f + 0.5f; }

int main(int argc, char **argv) {
  int count_only = 0, hang_rank = -1;
  double timeout = 30.0;
  static const struct option opts[] = {{"count", no_argument, 0, 'c'},
                                        {"hang-rank", required_argument, 0, 'h'},
                                        {"timeout", required_argument, 0, 't'},
                                        {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if (o == 'c') count_only = 1;
    else if (o == 'h') hang_rank = atoi(optarg);
    else if (o == 't') timeout = atof(optarg);
    else die_status(EXIT_USAGE, "usage: nccl_check [--count] [--hang-rank R] [--timeout S]");
  }
  char why[200];
  int gpus = device_cuda_count(why, sizeof why);
  if (count_only) {
    if (!gpus) {
      printf("SKIP: no CUDA device: %s\n", why);
      return 77;
    }
    printf("%d\n", gpus);
    return 0;
  }
  comm c;
  comm_init(&c, &argc, &argv);
  c.stall_timeout = timeout;
  int gpu = -1;
  device_select(DEVICE_CUDA, c.local_rank, &gpu);
  model_config mc = {MODEL_MNV3_SMALL, 1.0, 5, 0.2f, 0};
  model m;
  model_init(&m, &mc, 1);
  model_use_cuda(&m, 0);
  cuda_ctx *ctx = model_cuda_ctx(&m);
  const size_t n = m.n_params, bucket = 65536; /* 1522981: the last bucket is short */
  float *h = xmalloc(sizeof(float) * n), *d = model_live_grads(&m);
  nccl_sync *s = nccl_sync_new(&c, &m, bucket);
  if (c.rank == 0) printf("NCCL %d, %d ranks, %zu floats in buckets of %zu\n", nccl_sync_version(), c.world, n, bucket);
  int bad_total = 0;
  for (int step = 0; step < 3; step++) {
    for (size_t i = 0; i < n; i++) h[i] = (float)(c.rank + 1) * f_of(i) * (float)(step + 1);
    cuda_upload(ctx, d, h, sizeof(float) * n);
    if (c.rank == hang_rank) {
      fprintf(stderr, "rank %d: hanging on purpose\n", c.rank);
      for (;;) pause();
    }
    nccl_sync_begin(s);
    for (size_t lowest = n; lowest > 0; lowest = lowest > 100000 ? lowest - 100000 : 0)
      nccl_sync_ready(s, lowest);
    double waited = nccl_sync_finish(s);
    cuda_download(ctx, h, d, sizeof(float) * n);
    cuda_ctx_sync(ctx);
    double mean_mult = (c.world + 1) / 2.0 * (step + 1);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
      double want = f_of(i) * mean_mult;
      if (fabs(h[i] - want) > 1e-5 * want) bad++;
    }
    printf("rank %d step %d: %zu of %zu wrong, waited %.3f s\n", c.rank, step, bad, n, waited);
    bad_total += bad > 0;
  }
  nccl_sync_free(s);
  model_free(&m);
  free(h);
  comm_finalize(&c);
  if (bad_total) {
    printf("FAIL: averaged gradients wrong\n");
    return 1;
  }
  printf("PASS: rank averaged correctly\n");
  return 0;
}
