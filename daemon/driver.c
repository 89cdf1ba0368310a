/* trainer.c - the training loop (see trainer.h).
 *
 * Sample order: epoch e is plan_shuffle(seed, e) of the training split; step s of the epoch
 * takes order[s*B .. (s+1)*B) where B is the global batch, and rank r of W takes the r-th
 * contiguous B/W of it. A position in the job is therefore just (epoch, step), whatever the
 * world size, which is what lets a job resume on more or fewer ranks. Randomness is
 * counter-based (augmentation: seed, epoch, sample; dropout: seed, step, rank), so there is
 * no RNG state to save and a resumed run repeats an uninterrupted one bit for bit. */
#include "daemon/driver.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/coordinator.h"
#include "proto/plan.h"
#include "daemon/signals.h"
#include "base/core.h"
#ifdef POLLEN_HAVE_CUDA
#include "ops/cuda/ops_cuda.h"
#endif
#include "proto/control.h"
#include "worker/device.h"
#include "worker/loader.h"
#include "worker/model.h"
#include "worker/nccl_sync.h"
#include "worker/optim.h"
#include "worker/staging.h"
#include "worker/weights.h"

typedef struct {
  job_config *cfg;
  const char *job_dir;
  comm *c;
  coordinator *co;           /* rank 0 only */
  char config_hash[17];
  model m;
  optimizer opt;
  lr_schedule sched;
  grad_sync *sync;           /* gradients averaged over MPI (CPU) ... */
  nccl_sync *nccl;           /* ... or NCCL (GPU, more than one rank) */
  loader *train, *val;
  int n_train, n_val, classes;
  int local_batch, steps_per_epoch;
  long total_steps;          /* where this launch stops: all epochs, or --max-steps */
  long schedule_steps;       /* the LR schedule's length: all epochs (--max-steps is a knob) */
  /* position */
  int64_t step;              /* optimizer steps done */
  int epoch, step_in_epoch;
  double best_val, last_val;
  double start_time;
  double run_start;          /* monotonic time this launch began training, and its first step: */
  int64_t first_step;        /* the ETA is the remaining steps at this launch's average rate */
  float *images;
  int *labels;
  int64_t *order, *mine;
  float *stats_scratch;      /* world x n_stats on rank 0 for snapshots; n_stats elsewhere */
  control_timing *timings;
  const char **hosts;
  double window_loss, window_correct, window_samples, window_time, window_comm;
  int window_steps;
  char state[16];            /* last state published (rank 0) */
} trainer;

static void rank_log(const trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rank_log(const trainer *t, const char *fmt, ...) {
  if (t->c->rank != 0) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  log_info("%s", line);
}

static void mkdir_or_die(const char *path) {
  if (make_dirs(path) != 0)
    die("cannot create %s: %s; check the path and its permissions", path, strerror(errno));
}

/* Rank 0 freezes or checks JOB_DIR/config.json; every rank then checks it runs the same job. */
static void settle_config(trainer *t) {
  job_config *cfg = t->cfg;
  /* Ranks may see the data under other paths (or not at all: staging), so the cross-rank
   * check leaves the data folder out; staging checks the data itself. */
  job_config flags = *cfg;
  flags.data_dir[0] = 0;
  char *mine = job_config_definition_json(&flags);
  if (t->c->rank == 0) {
    mkdir_or_die(t->job_dir);
    char path[4200], msg[2400];
    snprintf(path, sizeof path, "%s/config.json", t->job_dir);
    job_config frozen = *cfg;
    if (job_config_load(&frozen, path) == 0 && job_config_diff(&frozen, cfg, msg, sizeof msg)) {
      if (!cfg->force_config)
        die("%s was started with other settings (%s); relaunch with the original flags, use "
            "another --job folder, or pass --force-config to adopt the new ones",
            t->job_dir, msg);
      log_warn("--force-config: adopting the new settings (%s)", msg);
      job_config_save(cfg, path);
    } else if (job_config_load(&frozen, path) == 1) {
      job_config_save(cfg, path);
    }
  }
  /* Every rank parsed its own flags: they must define the same job as rank 0's. */
  size_t len = strlen(mine) + 1;
  uint64_t n = len;
  comm_bcast(t->c, &n, sizeof n, 0);
  char *root = xmalloc(n);
  if (t->c->rank == 0) memcpy(root, mine, n);
  comm_bcast(t->c, root, n, 0);
  double differs = (n != len || memcmp(root, mine, n)) ? 1.0 : 0.0, any = differs;
  comm_allreduce_sum_f64(t->c, &any, 1);
  if (differs)
    log_warn("rank %d (%s) was launched with other training flags than rank 0", t->c->rank, t->c->host);
  if (any > 0) {
    comm_barrier(t->c);
    if (t->c->rank == 0) die("ranks disagree on the training flags (see the warnings above); launch every rank with the same command");
    comm_abort(t->c, EXIT_FAILED);
  }
  free(root);
  free(mine);
  job_config_hash(cfg, t->config_hash);
}

static void check_same_weights(trainer *t, const char *when) {
  model_sync_to_host(&t->m);
  uint64_t h = model_hash_params(&t->m);
  uint64_t *all = xmalloc((size_t)t->c->world * sizeof *all);
  comm_gather(t->c, &h, sizeof h, all, 0);
  int bad = -1;
  if (t->c->rank == 0)
    for (int r = 1; r < t->c->world && bad < 0; r++)
      if (all[r] != all[0]) bad = r;
  comm_bcast(t->c, &bad, sizeof bad, 0);
  free(all);
  if (bad < 0 && t->c->world > 1 && !strcmp(when, "at the end"))
    rank_log(t, "all %d ranks hold identical weights (parameter hash %016llx)", t->c->world, (unsigned long long)h);
  if (bad >= 0) {
    if (t->c->rank == 0)
      log_warn("rank %d (%s) has different weights than rank 0 %s: the replicas diverged; ending the job",
               bad, comm_host_of(t->c, bad), when);
    comm_barrier(t->c);
    comm_abort(t->c, EXIT_FAILED);
  }
}

static void setup_optimizer(trainer *t) {
  const job_config *cfg = t->cfg;
  int kind = optim_kind_parse(cfg->opt);
  optim_config oc = optim_defaults((opt_kind)kind);
  oc.momentum = (float)cfg->momentum;
  oc.nesterov = cfg->nesterov;
  oc.weight_decay = (float)cfg->weight_decay;
  oc.decay_all = cfg->decay_all;
  oc.clip_norm = (float)cfg->clip_norm;
  if (kind == OPT_RMSPROP) {
    oc.alpha = (float)cfg->alpha;
    oc.eps = (float)cfg->eps;
    oc.rmsprop = !strcmp(cfg->rmsprop, "torch") ? RMSPROP_TORCH : RMSPROP_TF;
  } else if (kind == OPT_ADAM || kind == OPT_ADAMW) {
    oc.beta1 = (float)cfg->beta1, oc.beta2 = (float)cfg->beta2, oc.eps = (float)cfg->eps;
  }
  optim_init(&t->opt, &oc, &t->m);
  memset(&t->sched, 0, sizeof t->sched);
  t->sched.kind = (lr_kind)lr_kind_parse(cfg->schedule);
  t->sched.base = (float)cfg->lr;
  t->sched.warmup_steps = (long)(cfg->warmup_epochs * t->steps_per_epoch + 0.5);
  t->sched.step_every = (long)cfg->step_epochs * t->steps_per_epoch;
  t->sched.gamma = (float)cfg->step_gamma;
  t->sched.min_lr = (float)cfg->min_lr;
}

/* ---- checkpoints ----------------------------------------------------------------------- */

/* Sections: params, opt.m, opt.v, bn_tracked (identical on every rank after the all-reduce),
 * and bn_stats.rankR for each rank (batch statistics stay per rank, like PyTorch DDP, so a
 * same-size resume restores each rank's own). */
static void publish(trainer *t, const char *state, double loss, double acc, double ips);

static void take_checkpoint(trainer *t, const char *why) {
  size_t ns = t->m.n_stats;
  char before[sizeof t->state];
  memcpy(before, t->state, sizeof before);
  publish(t, "checkpointing", NAN, NAN, 0);
  /* The same content from a GPU as from a CPU: the device state is copied back first. */
  model_sync_to_host(&t->m);
  optim_sync_to_host(&t->opt);
  comm_gather(t->c, t->m.stats, ns * sizeof(float), t->stats_scratch, 0);
  if (t->c->rank != 0) return;
  int n = 4 + t->c->world;
  ckptf_section_in *sec = xcalloc((size_t)n, sizeof *sec);
  char (*names)[32] = xcalloc((size_t)t->c->world, sizeof *names);
  sec[0] = (ckptf_section_in){"params", CKPTF_KIND_F32, t->m.params, t->m.n_params * sizeof(float)};
  sec[1] = (ckptf_section_in){"opt.m", CKPTF_KIND_F32, t->opt.m, t->opt.n * sizeof(float)};
  sec[2] = (ckptf_section_in){"opt.v", CKPTF_KIND_F32, t->opt.v, t->opt.n * sizeof(float)};
  sec[3] = (ckptf_section_in){"bn_tracked", CKPTF_KIND_U64, t->m.bn_tracked, (size_t)t->m.n_bn * sizeof(int64_t)};
  for (int r = 0; r < t->c->world; r++) {
    snprintf(names[r], sizeof names[r], "bn_stats.rank%d", r);
    sec[4 + r] = (ckptf_section_in){names[r], CKPTF_KIND_F32, t->stats_scratch + (size_t)r * ns, ns * sizeof(float)};
  }
  ckpt_snapshot s;
  memset(&s, 0, sizeof s);
  s.meta.step = t->step;
  s.meta.epoch = t->epoch;
  s.meta.sample_in_epoch = (int64_t)t->step_in_epoch * t->cfg->batch;
  s.meta.world_size = t->c->world;
  snprintf(s.meta.model, sizeof s.meta.model, "%s", t->cfg->model);
  snprintf(s.meta.config_hash, sizeof s.meta.config_hash, "%s", t->config_hash);
  cJSON *extra = cJSON_CreateObject();
  cJSON_AddNumberToObject(extra, "optimizer_steps", (double)t->opt.step);
  cJSON_AddNumberToObject(extra, "lr", lr_at(&t->sched, (long)t->step, t->schedule_steps));
  cJSON_AddNumberToObject(extra, "global_batch", t->cfg->batch);
  cJSON_AddNumberToObject(extra, "best_val_acc", t->best_val);
  cJSON_AddNumberToObject(extra, "last_val_acc", t->last_val);
  cJSON_AddStringToObject(extra, "rng", "counter-based Philox: augmentation keyed by (seed, epoch, sample), dropout by (seed, step, rank); no state");
  cJSON_AddStringToObject(extra, "reason", why);
  s.meta.extra = extra;
  s.sections = sec;
  s.n_sections = n;
  coord_checkpoint(t->co, &s);
  cJSON_Delete(extra);
  free(sec);
  free(names);
  /* The write goes on in the background: the job is back to what it was doing. */
  publish(t, before, NAN, NAN, 0);
}

static void restore_section(const ckpt_loaded *l, const char *name, void *dst, size_t bytes) {
  const ckptf_section *s = ckpt_loaded_find(l, name);
  if (!s || s->len != bytes)
    die("%s: section '%s' is missing or has %llu bytes instead of %zu; the checkpoint is from "
        "another pollen version or model", l->path, name, s ? (unsigned long long)s->len : 0ull, bytes);
  memcpy(dst, s->data, bytes);
}

/* Rank 0 finds the newest valid checkpoint and sends its state to every rank. */
static void resume(trainer *t) {
  int64_t pos[5] = {0, 0, 0, 0, 0}; /* found, step, epoch, step_in_epoch, saved world */
  double vals[3] = {0, 0, 0};
  ckpt_loaded l;
  memset(&l, 0, sizeof l);
  size_t ns = t->m.n_stats;
  if (t->c->rank == 0) {
    char err[2048];
    /* --force-config adopts new settings: the checkpoints of the old ones still resume. */
    ckpt_status st = ckpt_load_latest(t->job_dir, t->cfg->model,
                                      t->cfg->force_config ? NULL : t->config_hash, &l, err, sizeof err);
    if (st == CKPT_MISMATCH || st == CKPT_ALL_CORRUPT || st == CKPT_IO_ERROR)
      die("%s", err);
    if (st == CKPT_LOADED) {
      const ckptf_meta *meta = &l.file.meta;
      if (meta->sample_in_epoch % t->cfg->batch)
        die("%s: its sample position %lld is not a multiple of the global batch %d", l.path,
            (long long)meta->sample_in_epoch, t->cfg->batch);
      pos[0] = 1, pos[1] = meta->step, pos[2] = meta->epoch;
      pos[3] = meta->sample_in_epoch / t->cfg->batch, pos[4] = meta->world_size;
      restore_section(&l, "params", t->m.params, t->m.n_params * sizeof(float));
      restore_section(&l, "opt.m", t->opt.m, t->opt.n * sizeof(float));
      restore_section(&l, "opt.v", t->opt.v, t->opt.n * sizeof(float));
      restore_section(&l, "bn_tracked", t->m.bn_tracked, (size_t)t->m.n_bn * sizeof(int64_t));
      const cJSON *x = meta->extra;
      const cJSON *os = x ? cJSON_GetObjectItemCaseSensitive(x, "optimizer_steps") : NULL;
      const cJSON *bv = x ? cJSON_GetObjectItemCaseSensitive(x, "best_val_acc") : NULL;
      const cJSON *lv = x ? cJSON_GetObjectItemCaseSensitive(x, "last_val_acc") : NULL;
      vals[0] = cJSON_IsNumber(os) ? os->valuedouble : (double)meta->step;
      vals[1] = cJSON_IsNumber(bv) ? bv->valuedouble : NAN;
      vals[2] = cJSON_IsNumber(lv) ? lv->valuedouble : NAN;
      /* Per-rank BN statistics: each its own on the same world size, else their mean. */
      int saved = (int)pos[4];
      float *all = xmalloc((size_t)saved * ns * sizeof(float));
      for (int r = 0; r < saved; r++) {
        char name[32];
        snprintf(name, sizeof name, "bn_stats.rank%d", r);
        restore_section(&l, name, all + (size_t)r * ns, ns * sizeof(float));
      }
      if (saved == t->c->world) {
        memcpy(t->stats_scratch, all, (size_t)saved * ns * sizeof(float));
      } else {
        for (size_t i = 0; i < ns; i++) {
          double sum = 0;
          for (int r = 0; r < saved; r++) sum += all[(size_t)r * ns + i];
          for (int r = 0; r < t->c->world; r++) t->stats_scratch[(size_t)r * ns + i] = (float)(sum / saved);
        }
      }
      free(all);
      log_info("resuming from %s: step %lld, epoch %lld, sample %lld of the epoch%s", l.path,
               (long long)meta->step, (long long)meta->epoch + 1, (long long)meta->sample_in_epoch,
               l.n_skipped ? " (newer checkpoints were damaged and skipped)" : "");
      if (saved != t->c->world)
        log_warn("the checkpoint was written by %d ranks and this run has %d: the global batch "
                 "of %d is now split %d ways; BN running statistics start from the mean of the "
                 "saved ranks'", saved, t->c->world, t->cfg->batch, t->c->world);
    }
  }
  comm_bcast(t->c, pos, sizeof pos, 0);
  if (!pos[0]) {
    ckpt_loaded_free(&l);
    return;
  }
  comm_bcast(t->c, vals, sizeof vals, 0);
  comm_bcast(t->c, t->m.params, t->m.n_params * sizeof(float), 0);
  comm_bcast(t->c, t->opt.m, t->opt.n * sizeof(float), 0);
  comm_bcast(t->c, t->opt.v, t->opt.n * sizeof(float), 0);
  comm_bcast(t->c, t->m.bn_tracked, (size_t)t->m.n_bn * sizeof(int64_t), 0);
  /* Scatter each rank its statistics (rank 0's are at the front of stats_scratch). */
  if (t->c->rank == 0) {
    memcpy(t->m.stats, t->stats_scratch, ns * sizeof(float));
    for (int r = 1; r < t->c->world; r++) staging_send(t->c, r, t->stats_scratch + (size_t)r * ns, ns * sizeof(float));
  } else {
    staging_recv(t->c, 0, t->m.stats, ns * sizeof(float));
  }
  model_sync_to_device(&t->m);
  optim_sync_to_device(&t->opt);
  t->step = pos[1], t->epoch = (int)pos[2], t->step_in_epoch = (int)pos[3];
  t->opt.step = (long)vals[0];
  t->best_val = vals[1], t->last_val = vals[2];
  ckpt_loaded_free(&l);
}

/* ---- evaluation ---------------------------------------------------------------------- */

/* Evaluation and export use the ranks' BN running statistics averaged; each rank keeps its
 * own for training. Returns this rank's own statistics to hand to restore_bn_stats (NULL in
 * a world of one, where the average is the rank's own). Collective. */
static float *average_bn_stats(trainer *t) {
  model_sync_to_host(&t->m);
  if (t->c->world == 1) return NULL;
  size_t ns = t->m.n_stats;
  float *own = xmalloc(ns * sizeof(float));
  memcpy(own, t->m.stats, ns * sizeof(float));
  comm_allreduce_sum_f32(t->c, t->m.stats, ns);
  for (size_t i = 0; i < ns; i++) t->m.stats[i] /= (float)t->c->world;
  model_sync_to_device(&t->m);
  return own;
}

static void restore_bn_stats(trainer *t, float *own) {
  if (!own) return;
  memcpy(t->m.stats, own, t->m.n_stats * sizeof(float));
  model_sync_to_device(&t->m);
  free(own);
}

/* Accuracy on the validation split: rank r evaluates samples r, r+W, ...; counts are summed.
 * BN running statistics are averaged across ranks for it and then restored. */
static double evaluate(trainer *t) {
  if (t->n_val == 0) return NAN;
  float *own = average_bn_stats(t);
  int64_t count = 0;
  for (int64_t i = t->c->rank; i < t->n_val; i += t->c->world) t->mine[count++] = i;
  loader_start_epoch(t->val, 0, t->mine, count);
  double correct[2] = {0, 0};
  int n;
  while ((n = loader_next(t->val, t->images, t->labels)) > 0) {
    model_forward(&t->m, t->images, NULL, n, 0, 0.0f);
    const float *logits = model_logits(&t->m);
    for (int b = 0; b < n; b++) {
      int best = 0;
      for (int k = 1; k < t->classes; k++)
        if (logits[b * t->classes + k] > logits[b * t->classes + best]) best = k;
      correct[0] += best == t->labels[b];
      correct[1] += 1;
    }
  }
  comm_allreduce_sum_f64(t->c, correct, 2);
  restore_bn_stats(t, own);
  return correct[1] > 0 ? correct[0] / correct[1] : NAN;
}

/* Final weights with the ranks' BN statistics averaged (what evaluation uses). */
static void export_weights(trainer *t, const char *name) {
  float *own = average_bn_stats(t);
  if (t->c->rank == 0) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", t->job_dir, name);
    const char **names = xcalloc((size_t)t->classes, sizeof *names);
    for (int k = 0; k < t->classes; k++) names[k] = loader_class_name(t->train, k);
    weights_export(&t->m, path, names);
    free(names);
    log_info("weights written to %s (weights hash %016llx)", path, (unsigned long long)model_hash(&t->m));
  }
  restore_bn_stats(t, own);
}

/* ---- the loop ------------------------------------------------------------------------ */

static void grads_ready(void *ctx, size_t lowest) { grad_sync_ready(ctx, lowest); }
static void grads_ready_nccl(void *ctx, size_t lowest) { nccl_sync_ready(ctx, lowest); }

/* Resolves --device for this rank (its GPU from the node-local rank) and checks that every
 * rank agrees: NCCL needs all of them on GPUs, MPI's CPU path all on CPUs. */
static int select_device(trainer *t) {
  int gpu = -1;
  device_kind kind = device_select((device_kind)device_parse(t->cfg->device), t->c->local_rank, &gpu);
  double on_gpu = kind == DEVICE_CUDA ? 1.0 : 0.0, count = on_gpu;
  comm_allreduce_sum_f64(t->c, &count, 1);
  if (count > 0 && count < t->c->world) {
    if (kind == DEVICE_CPU)
      log_warn("rank %d (%s) has no usable GPU and would train on the CPU", t->c->rank, t->c->host);
    comm_barrier(t->c);
    if (t->c->rank == 0)
      die("%d of %d ranks found a GPU: every rank must train on the same kind of device; give "
          "each node GPUs or pass --device cpu", (int)count, t->c->world);
    comm_abort(t->c, EXIT_FAILED);
  }
  char what[256];
  device_describe(kind, gpu, what, sizeof what);
  if (kind == DEVICE_CUDA)
    rank_log(t, "training on %s, GEMMs in %s%s", what, t->cfg->precision,
             t->c->world > 1 ? " (rank 0's; every rank takes its node-local GPU)" : "");
  else
    rank_log(t, "training on the CPU");
  return kind == DEVICE_CUDA;
}

static void sync_begin(trainer *t) {
#ifdef POLLEN_HAVE_CUDA
  if (t->nccl) nccl_sync_begin(t->nccl, model_cuda_ctx(&t->m)->stream);
#endif
  if (t->sync) grad_sync_begin(t->sync);
}

static double sync_finish(trainer *t) {
  if (t->nccl) return nccl_sync_finish(t->nccl);
  return t->sync ? grad_sync_finish(t->sync) : 0.0;
}

static void format_eta(double s, char *out, size_t cap) {
  if (!isfinite(s) || s < 0) snprintf(out, cap, "?");
  else if (s >= 3600) snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
  else snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
}

/* Seconds left at this launch's average rate so far; NaN before the first step. */
static double eta_seconds(const trainer *t) {
  double rate = (double)(t->step - t->first_step) / (time_now() - t->run_start);
  return rate > 0 ? (double)(t->total_steps - t->step) / rate : NAN;
}

static void publish(trainer *t, const char *state, double loss, double acc, double ips) {
  if (t->c->rank != 0) return;
  snprintf(t->state, sizeof t->state, "%s", state);
  statusp_job j;
  memset(&j, 0, sizeof j);
  snprintf(j.state, sizeof j.state, "%s", state);
  snprintf(j.model, sizeof j.model, "%s", t->cfg->model);
  /* 0-based on the wire and in metrics; after the last epoch t->epoch is one past the end. */
  j.epoch = t->epoch < t->cfg->epochs ? t->epoch : t->cfg->epochs - 1, j.epochs = t->cfg->epochs;
  j.step = t->step, j.total_steps = t->total_steps;
  j.loss = loss, j.train_acc = acc, j.val_acc = t->last_val;
  j.lr = lr_at(&t->sched, (long)(t->step > 0 ? t->step - 1 : 0), t->schedule_steps);
  j.images_per_s = ips;
  j.eta_s = eta_seconds(t);
  j.world_size = t->c->world;
  j.start_time = t->start_time;
  coord_publish(t->co, &j, t->timings, t->c->world, t->hosts);
}

int trainer_run(job_config *cfg, const char *job_dir, comm *c) {
  trainer tr, *t = &tr;
  memset(t, 0, sizeof tr);
  t->cfg = cfg, t->job_dir = job_dir, t->c = c;
  t->best_val = t->last_val = NAN;
  t->start_time = (double)time(NULL);
  c->stall_timeout = cfg->stall_timeout;
  signals_install();
  if (cfg->batch % c->world)
    die_status(EXIT_USAGE, "--batch %d (the global batch) must be a multiple of the %d ranks", cfg->batch, c->world);
  t->local_batch = cfg->batch / c->world;
  threads_set(cfg->threads);
  int on_gpu = select_device(t); /* before anything is written: a missing GPU changes nothing */
  settle_config(t);

  /* Data: staged from rank 0 to ranks that cannot read it. */
  const char *data_dir = staging_prepare(c, cfg->data_dir, cfg->cache_dir);
  loader_config lc = {data_dir, "train", cfg->size, t->local_batch, cfg->augment, cfg->seed, cfg->loader_threads};
  t->train = loader_open(&lc);
  loader_config vc = {data_dir, "val", cfg->size, t->local_batch, 0, cfg->seed, cfg->loader_threads};
  t->val = loader_open(&vc);
  t->n_train = loader_size(t->train), t->n_val = loader_size(t->val);
  t->classes = loader_num_classes(t->train);
  t->steps_per_epoch = t->n_train / cfg->batch;
  if (t->steps_per_epoch < 1)
    die("the training split of %s has %d samples, fewer than one global batch of %d; use a smaller --batch",
        data_dir, t->n_train, cfg->batch);
  t->total_steps = t->schedule_steps = (long)t->steps_per_epoch * cfg->epochs;
  if (cfg->max_steps > 0 && cfg->max_steps < t->total_steps) t->total_steps = (long)cfg->max_steps;

  /* Engine. */
  model_config mc = {(model_arch)model_arch_parse(cfg->model), cfg->width, t->classes, (float)cfg->dropout};
  model_init(&t->m, &mc, cfg->seed);
  if (cfg->init_weights[0]) weights_import(&t->m, cfg->init_weights, 1);
  model_prepare(&t->m, t->local_batch, cfg->size);
  setup_optimizer(t);
  if (on_gpu) {
    model_use_cuda(&t->m, device_precision_parse(cfg->precision));
    optim_use_cuda(&t->opt, &t->m);
  }
  size_t bucket = (size_t)cfg->bucket_kib * 1024 / sizeof(float);
  if (!on_gpu) {
    t->sync = grad_sync_new(c, t->m.grads, t->m.n_params, bucket, cfg->overlap);
    if (c->world > 1) t->m.grads_ready = grads_ready, t->m.grads_ready_ctx = t->sync;
  } else if (c->world > 1) {
    t->nccl = nccl_sync_new(c, model_live_grads(&t->m), t->m.n_params, bucket);
    /* Without overlap every bucket starts in nccl_sync_finish, after backward. */
    if (cfg->overlap) t->m.grads_ready = grads_ready_nccl, t->m.grads_ready_ctx = t->nccl;
  }
  /* Page-locked on a GPU: the batch's copy to the device runs alongside kernels. */
  t->images = model_host_alloc(&t->m, (size_t)t->local_batch * cfg->size * cfg->size * 3 * sizeof(float));
  t->labels = model_host_alloc(&t->m, (size_t)t->local_batch * sizeof(int));
  int64_t biggest = t->n_train > t->n_val ? t->n_train : t->n_val;
  t->order = xmalloc((size_t)(biggest + 1) * sizeof(int64_t));
  t->mine = xmalloc((size_t)(biggest + 1) * sizeof(int64_t));
  t->stats_scratch = xmalloc((size_t)c->world * t->m.n_stats * sizeof(float));
  t->timings = xcalloc((size_t)c->world, sizeof *t->timings);
  t->hosts = xcalloc((size_t)c->world, sizeof *t->hosts);
  for (int r = 0; r < c->world; r++) t->hosts[r] = comm_host_of(c, r);

  if (c->rank == 0) t->co = coord_start(cfg, job_dir);
  resume(t);
  check_same_weights(t, "at start-up");
  rank_log(t, "%s width %g: %zu parameters, %d classes; %d training and %d validation images; "
           "%d ranks x batch %d; %d steps per epoch, %d epochs",
           cfg->model, cfg->width, t->m.n_params, t->classes, t->n_train, t->n_val, c->world,
           t->local_batch, t->steps_per_epoch, cfg->epochs);
  int status = EXIT_OK;
  if (t->step >= t->total_steps) {
    rank_log(t, "the job in %s is already finished (step %lld of %ld)", job_dir, (long long)t->step, t->total_steps);
    goto done;
  }

  double last_ckpt_time = time_now();
  t->run_start = time_now(), t->first_step = t->step;
  publish(t, "training", NAN, NAN, 0);
  while (t->step < t->total_steps) {
    /* Epoch plan: this rank's slice of every remaining step. */
    plan_shuffle(cfg->seed, t->epoch, t->n_train, t->order);
    int64_t count = 0;
    for (int s = t->step_in_epoch; s < t->steps_per_epoch; s++)
      for (int b = 0; b < t->local_batch; b++)
        t->mine[count++] = t->order[(int64_t)s * cfg->batch + (int64_t)c->rank * t->local_batch + b];
    loader_start_epoch(t->train, t->epoch, t->mine, count);
    int stop = 0;
    while (t->step_in_epoch < t->steps_per_epoch && t->step < t->total_steps) {
      double t0 = time_now();
      int n = loader_next(t->train, t->images, t->labels);
      POLLEN_ASSERT(n == t->local_batch);
      double t1 = time_now();
      t->m.dropout_seed = hash_mix(hash_mix(cfg->seed, (uint64_t)t->step), (uint64_t)c->rank);
      model_zero_grads(&t->m);
      sync_begin(t);
      float loss = model_forward(&t->m, t->images, t->labels, n, 1, (float)cfg->label_smoothing);
      model_backward(&t->m, t->labels, n, (float)cfg->label_smoothing);
      double exposed = sync_finish(t);
      float lr = lr_at(&t->sched, (long)t->step, t->schedule_steps);
      /* On a GPU this only queues the update: it runs while the next batch is fetched. */
      optim_step(&t->opt, model_live_params(&t->m), model_live_grads(&t->m), lr);
      t->step++, t->step_in_epoch++;
      double t2 = time_now();

      /* The step-boundary control message. */
      double ctl[CONTROL_N] = {0};
      ctl[CONTROL_LOSS_SUM] = (double)loss * n;
      for (int b = 0; b < n; b++) {
        const float *p = t->m.probs + (size_t)b * t->classes;
        int best = 0;
        for (int k = 1; k < t->classes; k++) if (p[k] > p[best]) best = k;
        ctl[CONTROL_CORRECT] += best == t->labels[b];
      }
      ctl[CONTROL_SAMPLES] = n;
      int sig = signals_stop_requested();
      ctl[CONTROL_STOP] = sig ? 1 : 0;
      ctl[CONTROL_VERSION_SUM] = CONTROL_VERSION;
      if (c->rank == 0) {
        int req = coord_poll_requests(t->co);
        if (req & STATUS_REQ_STOP) ctl[CONTROL_STOP] += 1;
        if (req & STATUS_REQ_CHECKPOINT) ctl[CONTROL_CHECKPOINT] += 1;
        if (cfg->ckpt_every > 0 && t->step % cfg->ckpt_every == 0) ctl[CONTROL_CHECKPOINT] += 1;
        if (cfg->ckpt_seconds > 0 && time_now() - last_ckpt_time >= cfg->ckpt_seconds) ctl[CONTROL_CHECKPOINT] += 1;
      }
      comm_allreduce_sum_f64(c, ctl, CONTROL_N);
      if ((int)ctl[CONTROL_VERSION_SUM] != c->world * CONTROL_VERSION)
        die("ranks run different pollen versions (control message mismatch); install one version everywhere");
      control_timing mine = {t2 - t0, t2 - t1, exposed, t1 - t0, n, (int)getpid(), sig};
      comm_gather(c, &mine, sizeof mine, t->timings, 0);

      t->window_loss += ctl[CONTROL_LOSS_SUM], t->window_correct += ctl[CONTROL_CORRECT];
      t->window_samples += ctl[CONTROL_SAMPLES], t->window_time += t2 - t0, t->window_comm += exposed;
      t->window_steps++;
      double ips = t->window_time > 0 ? t->window_samples / t->window_time : 0;
      double wloss = t->window_loss / t->window_samples, wacc = t->window_correct / t->window_samples;
      if (t->step % cfg->log_every == 0 || t->step_in_epoch == t->steps_per_epoch || ctl[CONTROL_STOP] > 0) {
        if (c->rank == 0) {
          char eta[32];
          format_eta(eta_seconds(t), eta, sizeof eta);
          log_info("epoch %d/%d  step %d/%d  loss %.4f  acc %.3f  lr %.3g  %.1f img/s  comm %.1f ms  ETA %s",
                   t->epoch + 1, cfg->epochs, t->step_in_epoch, t->steps_per_epoch, wloss, wacc, lr, ips,
                   1e3 * t->window_comm / t->window_steps, eta);
          statusp_metric p = {t->step, t->epoch, wloss, wacc, NAN, lr, ips};
          coord_metric(t->co, &p, time_now() - t->run_start, t->window_comm / t->window_steps);
        }
        publish(t, "training", wloss, wacc, ips);
        t->window_loss = t->window_correct = t->window_samples = t->window_time = t->window_comm = 0;
        t->window_steps = 0;
      } else {
        publish(t, "training", wloss, wacc, ips);
      }

      /* A stop asked at the job's very last step lets it finish instead (exit 0, with the
       * final validation), so a scheduler does not relaunch a finished job. */
      if (ctl[CONTROL_STOP] > 0 && t->step < t->total_steps) {
        if (c->rank == 0) {
          int any = 0;
          for (int r = 0; r < c->world && !any; r++) any = t->timings[r].signal;
          log_info("stop requested (%s): checkpointing step %lld", any ? signals_name(any) : "status socket", (long long)t->step);
        }
        stop = 1;
        break;
      }
      /* At the last step of an epoch (or of the job) the epoch-end (or final) checkpoint of
       * this same step follows at once, with the validation result: one write, not two. */
      int last = t->step_in_epoch == t->steps_per_epoch || t->step == t->total_steps;
      if (ctl[CONTROL_CHECKPOINT] > 0 && !last) {
        take_checkpoint(t, "periodic");
        last_ckpt_time = time_now();
      }
    }
    if (stop) {
      publish(t, "stopping", NAN, NAN, 0);
      take_checkpoint(t, "stop");
      if (c->rank == 0 && coord_checkpoint_wait(t->co) != 0)
        die("the final checkpoint could not be written (see above); the previous one is intact");
      export_weights(t, "weights.safetensors");
      status = EXIT_PREEMPTED;
      break;
    }
    if (t->step_in_epoch == t->steps_per_epoch) {
      /* Epoch end: validate, log, checkpoint. */
      publish(t, "evaluating", NAN, NAN, 0);
      double val = evaluate(t);
      t->last_val = val;
      if (isfinite(val) && !(val <= t->best_val)) t->best_val = val;
      t->epoch++, t->step_in_epoch = 0;
      if (c->rank == 0) {
        log_info("epoch %d/%d done: validation accuracy %.4f (best %.4f)", t->epoch, cfg->epochs, val, t->best_val);
        statusp_metric p = {t->step, t->epoch - 1, NAN, NAN, val, lr_at(&t->sched, (long)t->step - 1, t->schedule_steps), 0};
        coord_metric(t->co, &p, time_now() - t->run_start, 0);
      }
      check_same_weights(t, "at an epoch end");
      take_checkpoint(t, "epoch end");
      last_ckpt_time = time_now();
      if (t->step < t->total_steps) publish(t, "training", NAN, NAN, 0);
    }
  }
  check_same_weights(t, "at the end");
  if (status == EXIT_OK) {
    if (t->step_in_epoch != 0) take_checkpoint(t, "max steps");
    /* The final checkpoint is finished first: written alongside, on a nearly full disk its
     * temporary file could take the room the weights need (a failed one is removed). */
    int ckpt_failed = c->rank == 0 && coord_checkpoint_wait(t->co) != 0;
    export_weights(t, "weights.safetensors");
    if (c->rank == 0) {
      /* A relaunch would go back to the last checkpoint that did get saved and train again. */
      if (ckpt_failed)
        log_warn("the final checkpoint could not be saved (see above): %s/weights.safetensors holds "
                 "the finished weights, but running this command again would resume from an older "
                 "checkpoint and overwrite them", t->job_dir);
      publish(t, "finished", NAN, NAN, 0);
      log_info("finished: %lld steps, validation accuracy %.4f (best %.4f)", (long long)t->step, t->last_val, t->best_val);
    }
  } else if (c->rank == 0) {
    log_info("stopped at step %lld with a checkpoint; run the same command again to resume (exit %d)",
             (long long)t->step, EXIT_PREEMPTED);
  }
done:
  if (c->rank == 0) coord_stop(t->co);
  /* No rank leaves before rank 0 has written everything: launchers (mpirun, srun) kill the
   * remaining ranks soon after one exits. */
  comm_barrier(c);
  loader_close(t->train);
  loader_close(t->val);
  if (t->sync) grad_sync_free(t->sync);
  if (t->nccl) nccl_sync_free(t->nccl);
  model_host_free(&t->m, t->images), model_host_free(&t->m, t->labels);
  optim_free(&t->opt);
  model_free(&t->m);
  free(t->order), free(t->mine), free(t->stats_scratch);
  free(t->timings), free(t->hosts);
  return status;
}
