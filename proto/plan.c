/* plan.c - the epoch shuffle and each rank's samples of it (see plan.h). */
#include "proto/plan.h"

#include "base/core.h"

void plan_shuffle(uint64_t seed, int epoch, int64_t n, int64_t *order) {
  /* A separate key stream from the loader's augmentation keys (hash_mix of seed, epoch). */
  uint64_t key = hash_mix(hash_mix(seed, 0x73687566666c65ull /* "shuffle" */), (uint64_t)(uint32_t)epoch);
  for (int64_t i = 0; i < n; i++) order[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    philox_ctr c = {{(uint32_t)i, (uint32_t)((uint64_t)i >> 32), 0, 0}};
    philox_ctr r = philox4x32(c, key);
    uint64_t x = (uint64_t)r.v[0] | (uint64_t)r.v[1] << 32;
    /* Lemire's multiply-shift: j uniform in [0, i] up to a 2^-64 bias. */
    int64_t j = (int64_t)(((unsigned __int128)x * (uint64_t)(i + 1)) >> 64);
    int64_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
}

int64_t plan_rank_samples(const int64_t *order, int first_step, int steps_per_epoch,
                          int global_batch, int rank, int local_batch, int64_t *mine) {
  int64_t count = 0;
  for (int s = first_step; s < steps_per_epoch; s++)
    for (int b = 0; b < local_batch; b++)
      mine[count++] = order[(int64_t)s * global_batch + (int64_t)rank * local_batch + b];
  return count;
}

int plan_job(job_plan *p, const job_config *cfg, int world, int n_train, int n_val, int classes,
             char *err, size_t errlen) {
  *p = (job_plan){.n_train = n_train, .n_val = n_val, .classes = classes, .image_size = cfg->size,
                  .world = world, .global_batch = cfg->batch, .local_batch = cfg->batch / world,
                  .epochs = cfg->epochs, .steps_per_epoch = n_train / cfg->batch};
  if (p->steps_per_epoch < 1) {
    err_set(err, errlen, "the training split has %d samples, fewer than one global batch of %d; "
            "use a smaller --batch", n_train, cfg->batch);
    return -1;
  }
  p->total_steps = p->schedule_steps = (int64_t)p->steps_per_epoch * cfg->epochs;
  if (cfg->max_steps > 0 && cfg->max_steps < p->total_steps) p->total_steps = cfg->max_steps;
  return 0;
}

int plan_epoch_number(int64_t epoch_index, int64_t done_in_epoch) {
  int64_t e = epoch_index + (done_in_epoch > 0);
  return e > 1 ? (int)e : 1;
}
