/* mpi_grads.c - run by tests/test_mpi.sh under mpirun: N ranks, each with its own micro-batch
 * of B images, must produce the same averaged gradient as one process accumulating the N
 * micro-batches (so every micro-batch sees the same batch statistics in both), with bucketed
 * overlap on and off; after K SGD steps the weights must match within float tolerance, and
 * be bit-identical on every rank. Exits non-zero on any mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "worker/collective.h"
#include "worker/model.h"
#include "worker/optim.h"

enum { B = 4, S = 48, STEPS = 3 };

static void batch_for(int rank, int step, float *x, int *labels) {
  for (size_t i = 0; i < (size_t)B * S * S * 3; i += 4) {
    float u[4];
    philox_uniform4(hash_mix(99, (uint64_t)step), (uint32_t)rank, (uint32_t)i, 1, u);
    for (int k = 0; k < 4; k++) x[i + k] = 2 * u[k] - 1;
  }
  for (int b = 0; b < B; b++) labels[b] = (rank * B + b + step) % 5;
}

static double max_rel(const float *a, const float *b, size_t n) {
  double err = 0, scale = 1e-12;
  for (size_t i = 0; i < n; i++) {
    err = fmax(err, fabs((double)a[i] - b[i]));
    scale = fmax(scale, fabs(b[i]));
  }
  return err / scale;
}

static void grads_ready(void *ctx, size_t lowest) { grad_sync_ready(ctx, lowest); }

int main(int argc, char **argv) {
  comm c;
  comm_init(&c, &argc, &argv);
  threads_set(1);
  int failures = 0;
  model_config cfg = {MODEL_MNV3_SMALL, 0.35, 5, 0.0, 0};
  float *x = xmalloc((size_t)B * S * S * 3 * sizeof(float));
  int labels[B];
  for (int overlap = 0; overlap <= 1; overlap++) {
    model dist, ref;
    model_init(&dist, &cfg, 5);
    model_init(&ref, &cfg, 5);
    model_prepare(&dist, B, S);
    model_prepare(&ref, B, S);
    /* Small buckets so several are in flight during backward. */
    grad_sync *gs = grad_sync_new(&c, dist.grads, dist.n_params, 4096, overlap);
    dist.grads_ready = grads_ready;
    dist.grads_ready_ctx = gs;
    optim_config oc = optim_defaults(OPT_SGD);
    optimizer od, orf;
    optim_init(&od, &oc, &dist);
    optim_init(&orf, &oc, &ref);
    for (int step = 0; step < STEPS; step++) {
      model_zero_grads(&dist);
      batch_for(c.rank, step, x, labels);
      grad_sync_begin(gs);
      model_forward(&dist, x, labels, B, 1, 0.0f);
      model_backward(&dist, labels, B, 0.0f);
      grad_sync_finish(gs);
      /* Reference: one process, all ranks' micro-batches, gradients averaged. */
      model_zero_grads(&ref);
      for (int r = 0; r < c.world; r++) {
        batch_for(r, step, x, labels);
        model_forward(&ref, x, labels, B, 1, 0.0f);
        model_backward(&ref, labels, B, 0.0f);
      }
      for (size_t i = 0; i < ref.n_params; i++) ref.grads[i] /= (float)c.world;
      double e = max_rel(dist.grads, ref.grads, ref.n_params);
      if (!(e < 1e-5)) failures++;
      if (c.rank == 0)
        printf("overlap %d step %d: averaged gradient vs one process: max rel err %.2e%s\n", overlap, step, e,
               e < 1e-5 ? "" : "  FAIL");
      optim_step(&od, dist.params, dist.grads, 0.05f);
      optim_step(&orf, ref.params, ref.grads, 0.05f);
    }
    double e = max_rel(dist.params, ref.params, ref.n_params);
    if (!(e < 1e-5)) failures++;
    /* Bit-identical replicas: every rank's parameter hash equals rank 0's. */
    uint64_t h = model_hash_params(&dist), *all = xmalloc((size_t)c.world * sizeof *all);
    comm_gather(&c, &h, sizeof h, all, 0);
    int same = 1;
    for (int r = 1; c.rank == 0 && r < c.world; r++) same &= all[r] == all[0];
    if (!same) failures++;
    if (c.rank == 0)
      printf("overlap %d: weights after %d steps vs one process: max rel err %.2e; %d ranks bit-identical: %s\n", overlap,
             STEPS, e, c.world, same ? "yes" : "NO");
    free(all);
    grad_sync_free(gs);
    optim_free(&od), optim_free(&orf);
    model_free(&dist), model_free(&ref);
  }
  double total = failures;
  comm_allreduce_sum_f64(&c, &total, 1);
  if (c.rank == 0) printf("%s\n", total == 0 ? "PASS" : "FAIL");
  free(x);
  comm_finalize(&c);
  return total == 0 ? 0 : 1;
}
