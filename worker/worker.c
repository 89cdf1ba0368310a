/* worker.c - one rank of a training job (see worker.h).
 *
 * Randomness is counter-based (augmentation: seed, epoch, sample; dropout: seed, step, rank)
 * and the sample order is proto/plan.h's, so a position (epoch, step) is all a resume needs:
 * a resumed run repeats an uninterrupted one bit for bit, on any number of ranks. */
#include "worker/worker.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/core.h"
#include "worker/device.h"
#include "worker/loader.h"
#include "worker/model.h"
#include "worker/nccl_sync.h"
#include "worker/ema.h"
#include "worker/mix.h"
#include "worker/optim.h"
#include "worker/staging.h"
#include "worker/weights.h"

#define PRECISE_BN_AUTO_BATCHES 16 /* batches per rank of --precise-bn auto */

struct worker {
  job_config *cfg;
  comm *c;
  int on_gpu;
  job_plan plan;
  job_position pos;
  model m;
  optimizer opt;
  lr_schedule sched;
  grad_sync *sync;   /* gradients averaged over MPI (CPU) ... */
  nccl_sync *nccl;   /* ... or NCCL (GPU, more than one rank) */
  loader *train, *val;
  float *images;
  int *labels;
  int *labels2;      /* mixup / CutMix: the labels of the images mixed in (worker/mix.h) */
  int64_t *order, *mine;
  float *stats;      /* world x n_stats on rank 0: the ranks' BN statistics */
  float *eval_stats; /* the BN statistics evaluation used at step eval_stats_step (precise BN), */
  int64_t eval_stats_step; /* so the export and a checkpoint of that step go with them; -1: none */
  weight_ema ema;    /* --ema-decay: what evaluation and export use (avg NULL: none) */
  unsigned char *stats_msgs; /* rank 0: the world's bn_stats messages, as gathered */
};

void worker_log(const worker *w, const char *fmt, ...) {
  if (w->c->rank != 0) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  log_info("%s", line);
}

/* Ends the job on every rank after a failed cross-rank check: rank 0 says why (the other ranks
 * have logged their side), the others wait for it to do so. */
static void end_job(const worker *w, int status, const char *why) __attribute__((noreturn));
static void end_job(const worker *w, int status, const char *why) {
  comm_barrier(w->c);
  if (w->c->rank == 0 && why) die_status(status, "%s", why);
  comm_abort(w->c, status);
}

/* ---- set-up -------------------------------------------------------------------------- */

/* --precision on the CPU: every rank must be able to run it (a node without AVX512_BF16
 * cannot take bf16), or the job ends: with rank 0's reason when rank 0 is one of them, else
 * with the count (the other ranks log their own reason). */
static void use_cpu_precision(worker *w) {
  const comm *c = w->c;
  char err[256] = "";
  double failed = device_cpu_precision_use(w->cfg->precision, err, sizeof err) != 0;
  if (failed && c->rank != 0) /* rank 0's reason is the job's last line */
    log_warn("rank %d (%s): --precision %s: %s", c->rank, c->host, w->cfg->precision, err);
  comm_allreduce_sum_f64(c, &failed, 1);
  if (failed > 0) {
    char why[400];
    if (err[0])
      snprintf(why, sizeof why, "--precision %s: %s", w->cfg->precision, err);
    else
      snprintf(why, sizeof why, "--precision %s: %d rank(s) cannot run it (their lines above say why); use fp32",
               w->cfg->precision, (int)failed);
    end_job(w, EXIT_USAGE, why);
  }
  worker_log(w, "training on the CPU, GEMMs in %s", w->cfg->precision);
}

/* Resolves --device for this rank (its GPU from the node-local rank) and checks that every
 * rank agrees: NCCL needs all of them on GPUs, MPI's CPU path all on CPUs. */
static int select_device(worker *w) {
  const comm *c = w->c;
  int gpu = -1;
  device_kind kind = device_select((device_kind)device_parse(w->cfg->device), c->local_rank, &gpu);
  double on_gpu = kind == DEVICE_CUDA ? 1.0 : 0.0, count = on_gpu;
  comm_allreduce_sum_f64(c, &count, 1);
  if (count > 0 && count < c->world) {
    if (kind == DEVICE_CPU)
      log_warn("rank %d (%s) has no usable GPU and would train on the CPU", c->rank, c->host);
    char why[256];
    snprintf(why, sizeof why, "%d of %d ranks found a GPU: every rank must train on the same kind "
             "of device; give each node GPUs or pass --device cpu", (int)count, c->world);
    end_job(w, EXIT_FAILED, why);
  }
  char what[256];
  device_describe(kind, gpu, what, sizeof what);
  if (kind == DEVICE_CUDA && w->cfg->loader_inline && c->rank == 0)
    log_warn("--loader-inline on a GPU: the GPU waits while the CPU decodes each batch; leave it out to decode "
             "beside the step");
  if (kind == DEVICE_CUDA)
    worker_log(w, "training on %s, GEMMs in %s%s", what, w->cfg->precision,
               c->world > 1 ? " (rank 0's; every rank takes its node-local GPU)" : "");
  else
    use_cpu_precision(w);
  return kind == DEVICE_CUDA;
}

worker *worker_new(job_config *cfg, comm *c) {
  if (cfg->batch % c->world)
    die_status(EXIT_USAGE, "--batch %d (the global batch) must be a multiple of the %d ranks", cfg->batch, c->world);
  worker *w = xcalloc(1, sizeof *w);
  w->cfg = cfg, w->c = c;
  c->stall_timeout = cfg->stall_timeout;
  threads_set(cfg->threads);
  w->on_gpu = select_device(w);
  return w;
}

void worker_check_config(worker *w) {
  const comm *c = w->c;
  /* Ranks may see the data under other paths (or not at all: staging), so the cross-rank
   * check leaves the data folder out; staging checks the data itself. */
  job_config flags = *w->cfg;
  flags.data_dir[0] = 0;
  char *mine = job_config_definition_json(&flags);
  size_t len = strlen(mine) + 1;
  config_msg msg = {TRAIN_MSG_VERSION, 0, len};
  comm_bcast(c, &msg, sizeof msg, 0);
  char err[256];
  if (config_msg_check(&msg, 1u << 20, err, sizeof err) != 0) die("rank %d: %s", c->rank, err);
  char *root = xmalloc(msg.json_bytes);
  if (c->rank == 0) memcpy(root, mine, len);
  comm_bcast(c, root, msg.json_bytes, 0);
  double differs = (msg.json_bytes != len || memcmp(root, mine, len)) ? 1.0 : 0.0, any = differs;
  comm_allreduce_sum_f64(c, &any, 1);
  if (differs)
    log_warn("rank %d (%s) was launched with other training flags than rank 0", c->rank, c->host);
  free(root);
  free(mine);
  if (any > 0)
    end_job(w, EXIT_USAGE, "ranks disagree on the training flags (see the warnings above); launch every rank with the same command");
}

static void setup_optimizer(worker *w) {
  const job_config *cfg = w->cfg;
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
  optim_init(&w->opt, &oc, &w->m);
  memset(&w->sched, 0, sizeof w->sched);
  int steps_per_epoch = w->plan.steps_per_epoch;
  w->sched.kind = (lr_kind)lr_kind_parse(cfg->schedule);
  w->sched.base = (float)cfg->lr;
  w->sched.warmup_steps = (long)(cfg->warmup_epochs * steps_per_epoch + 0.5);
  w->sched.step_every = (long)cfg->step_epochs * steps_per_epoch;
  w->sched.gamma = (float)cfg->step_gamma;
  w->sched.min_lr = (float)cfg->min_lr;
}

static void grads_ready(void *ctx, size_t lowest) { grad_sync_ready(ctx, lowest); }
static void grads_ready_nccl(void *ctx, size_t lowest) { nccl_sync_ready(ctx, lowest); }

/* Gradients averaged with MPI on CPUs, NCCL on GPUs, as buckets complete during backward. */
static void setup_gradient_averaging(worker *w) {
  const job_config *cfg = w->cfg;
  size_t bucket = (size_t)cfg->bucket_kib * 1024 / sizeof(float);
  if (!w->on_gpu) {
    w->sync = grad_sync_new(w->c, w->m.grads, w->m.n_params, bucket, cfg->overlap);
    if (w->c->world > 1) w->m.grads_ready = grads_ready, w->m.grads_ready_ctx = w->sync;
  } else if (w->c->world > 1) {
    w->nccl = nccl_sync_new(w->c, &w->m, bucket);
    /* Without overlap every bucket starts in nccl_sync_finish, after backward. */
    if (cfg->overlap) w->m.grads_ready = grads_ready_nccl, w->m.grads_ready_ctx = w->nccl;
  }
}

static void log_evaluation_bn(const worker *w) {
  int n = w->cfg->precise_bn;
  if (n < 0)
    worker_log(w, "evaluation uses precise BN (%d training batches per rank) while the BN running averages are young, "
               "then the averages (--precise-bn auto)", PRECISE_BN_AUTO_BATCHES);
  else if (n > 0)
    worker_log(w, "evaluation uses precise BN: BN statistics from %d training batches per rank (--precise-bn %d)", n, n);
  if (w->cfg->ema_decay > 0)
    worker_log(w, "evaluation and export use the weights' moving average (decay %g, updated every %d steps, "
               "restarted during the LR warm-up), BN statistics by precise BN", w->cfg->ema_decay, w->cfg->ema_every);
}

/* Stochastic depth's per-block probabilities, from the model (they grow with depth). */
static void log_drop_path(const worker *w) {
  int blocks = 0;
  float lo = 1.0f, hi = 0.0f;
  for (int i = 0; i < w->m.n_layers; i++) {
    const layer *l = &w->m.layers[i];
    if (l->kind != LAYER_ADD || l->drop_path <= 0.0f) continue;
    blocks++;
    if (l->drop_path < lo) lo = l->drop_path;
    if (l->drop_path > hi) hi = l->drop_path;
  }
  if (blocks)
    worker_log(w, "stochastic depth: %d residual branches dropped per sample while training, with probability %.3f to %.3f "
               "(--drop-path %g)", blocks, lo, hi, w->cfg->drop_path);
}

/* The decoded-photo budget split between the loaders in proportion to their photos, so both
 * splits fit whole when the budget holds them all. Set before the first epoch starts. */
static void share_decoded_cache(worker *w, size_t budget) {
  double n_train = loader_size(w->train), n_val = loader_size(w->val);
  size_t for_train = (size_t)(budget * (n_train / (n_train + n_val)));
  loader_set_cache(w->train, for_train);
  loader_set_cache(w->val, budget - for_train);
}

const job_plan *worker_load(worker *w) {
  job_config *cfg = w->cfg;
  comm *c = w->c;
  /* Data: staged from rank 0 to ranks that cannot read it. */
  const char *data_dir = staging_prepare(c, cfg->data_dir, cfg->cache_dir);
  int local_batch = cfg->batch / c->world;
  loader_config lc = {.data_dir = data_dir, .split = "train", .image_size = cfg->size, .batch = local_batch,
                      .augment = cfg->augment, .trivial_augment = !strcmp(cfg->auto_augment, "ta_wide"),
                      .random_erase = cfg->random_erase, .crop_scale = cfg->crop_scale, .seed = cfg->seed,
                      .threads = cfg->loader_threads, .inline_decode = cfg->loader_inline, .nice = cfg->loader_nice};
  w->train = loader_open(&lc);
  loader_config vc = {.data_dir = data_dir, .split = "val", .image_size = cfg->size, .batch = local_batch,
                      .seed = cfg->seed, .threads = cfg->loader_threads,
                      .inline_decode = cfg->loader_inline, .nice = cfg->loader_nice};
  w->val = loader_open(&vc);
  share_decoded_cache(w, (size_t)cfg->decoded_cache_mib << 20);
  char err[512];
  if (plan_job(&w->plan, cfg, c->world, loader_size(w->train), loader_size(w->val),
               loader_num_classes(w->train), err, sizeof err) != 0)
    die("%s: %s", data_dir, err);

  /* Engine. */
  model_config mc = {(model_arch)model_arch_parse(cfg->model), cfg->width, w->plan.classes, (float)cfg->dropout,
                     (float)cfg->drop_path};
  model_init(&w->m, &mc, cfg->seed);
  if (cfg->init_weights[0]) weights_import(&w->m, cfg->init_weights, 1);
  model_keep_activations(&w->m, cfg->keep_activations);
  model_prepare(&w->m, local_batch, cfg->size);
  setup_optimizer(w);
  if (w->on_gpu && (cfg->mixup_alpha > 0 || cfg->cutmix_alpha > 0))
    die_status(EXIT_USAGE, "--mixup-alpha and --cutmix-alpha run on the CPU engine only for now; train with --device cpu");
  if (w->on_gpu) {
    model_use_cuda(&w->m, device_precision_parse(cfg->precision));
    optim_use_cuda(&w->opt, &w->m);
  }
  setup_gradient_averaging(w);

  /* Page-locked on a GPU: the batch's copy to the device runs alongside kernels. */
  w->images = model_host_alloc(&w->m, (size_t)local_batch * cfg->size * cfg->size * 3 * sizeof(float));
  w->labels = model_host_alloc(&w->m, (size_t)local_batch * sizeof(int));
  w->labels2 = xmalloc((size_t)local_batch * sizeof(int));
  int64_t biggest = w->plan.n_train > w->plan.n_val ? w->plan.n_train : w->plan.n_val;
  w->order = xmalloc((size_t)(biggest + 1) * sizeof(int64_t));
  w->mine = xmalloc((size_t)(biggest + 1) * sizeof(int64_t));
  size_t ranks = c->rank == 0 ? (size_t)c->world : 1;
  w->stats = xmalloc(ranks * w->m.n_stats * sizeof(float));
  w->eval_stats = xmalloc(w->m.n_stats * sizeof(float));
  w->eval_stats_step = -1;
  if (cfg->ema_decay > 0) ema_init(&w->ema, w->m.n_params, cfg->ema_decay);
  if (c->rank == 0) w->stats_msgs = xmalloc(ranks * (sizeof(bn_stats_msg) + w->m.n_stats * sizeof(float)));
  log_evaluation_bn(w);
  log_drop_path(w);
  return &w->plan;
}

train_state_shape worker_state_shape(const worker *w) {
  return (train_state_shape){w->m.n_params, w->opt.n, w->m.n_stats, w->m.n_bn};
}

job_position worker_position(const worker *w) { return w->pos; }

double worker_lr_at(const worker *w, int64_t step) {
  return lr_at(&w->sched, (long)step, (long)w->plan.schedule_steps);
}

/* ---- BN statistics between ranks ------------------------------------------------------ */

/* Gathers every rank's BN statistics to rank 0 (world x n_stats in w->stats), each as a
 * bn_stats message. Collective; the host copy of the model's statistics must be current. */
static void gather_bn_stats(worker *w) {
  size_t ns = w->m.n_stats, bytes = sizeof(bn_stats_msg) + ns * sizeof(float);
  bn_stats_msg head = {TRAIN_MSG_VERSION, w->c->rank, ns};
  unsigned char *own = xmalloc(bytes);
  memcpy(own, &head, sizeof head);
  memcpy(own + sizeof head, w->m.stats, ns * sizeof(float));
  comm_gather(w->c, own, bytes, w->c->rank == 0 ? w->stats_msgs : NULL, 0);
  free(own);
  if (w->c->rank != 0) return;
  for (int r = 0; r < w->c->world; r++) {
    const unsigned char *block = w->stats_msgs + (size_t)r * bytes;
    bn_stats_msg got;
    memcpy(&got, block, sizeof got);
    char err[256];
    if (bn_stats_msg_check(&got, r, ns, err, sizeof err) != 0) die("%s", err);
    memcpy(w->stats + (size_t)r * ns, block + sizeof got, ns * sizeof(float));
  }
}

/* ---- BN statistics for evaluation and export ------------------------------------------ */

/* Batches per rank that evaluation recomputes the BN statistics from first (0: none):
 * --precise-bn N, or by default (auto) PRECISE_BN_AUTO_BATCHES while the running averages
 * still hold more than 5% of their starting values, (1 - momentum)^steps > 0.05 (about 300
 * steps at momentum 0.01): that is when they lag behind what the weights have learned. At most
 * an epoch's steps. The same on every rank. */
static int precise_bn_batches(const worker *w) {
  int n = w->cfg->precise_bn;
  /* An EMA's weights never ran forward: the running averages belong to the live ones. */
  int young = pow(1.0 - w->m.bn_momentum, (double)w->pos.step) > 0.05 || w->ema.updates > 0;
  if (n < 0) n = young ? PRECISE_BN_AUTO_BATCHES : 0;
  return n < w->plan.steps_per_epoch ? n : w->plan.steps_per_epoch;
}

static int next_train_batch(void *ctx, float *images) {
  worker *w = ctx;
  return loader_next(w->train, images, w->labels);
}

/* Precise BN (model_precise_bn) over `batches` training batches: this rank's share of the first
 * steps of the current epoch's order, with that epoch's augmentation. */
static void recompute_bn_stats(worker *w, int batches) {
  const job_plan *p = &w->plan;
  plan_shuffle(w->cfg->seed, w->pos.epoch, p->n_train, w->order);
  int64_t count = plan_rank_samples(w->order, 0, batches, p->global_batch, w->c->rank, p->local_batch, w->mine);
  loader_start_epoch(w->train, w->pos.epoch, w->mine, count);
  model_precise_bn(&w->m, next_train_batch, w, w->images);
}

typedef struct {
  float *params;    /* the live weights while the EMA's are in, or NULL */
  float *stats;     /* this rank's training statistics, or NULL when evaluation uses them */
  int64_t *tracked;
} training_saved;

static void *copy_of(const void *p, size_t bytes) { return memcpy(xmalloc(bytes + 1), p, bytes); }

/* Evaluation and export see the EMA's weights when there is one, and BN statistics that are
 * precise (above) when due, averaged over the ranks; each rank keeps its own weights and
 * statistics for training. Returns what restore_training_model puts back. Collective. */
static training_saved use_eval_model(worker *w) {
  model *m = &w->m;
  model_sync_to_host(m);
  training_saved saved = {NULL, NULL, NULL};
  if (w->ema.updates > 0) {
    saved.params = copy_of(m->params, m->n_params * sizeof(float));
    memcpy(m->params, w->ema.avg, m->n_params * sizeof(float));
  }
  int batches = precise_bn_batches(w);
  size_t ns = m->n_stats;
  if (batches > 0 || w->c->world > 1) {
    saved.stats = copy_of(m->stats, ns * sizeof(float));
    saved.tracked = copy_of(m->bn_tracked, (size_t)m->n_bn * sizeof *m->bn_tracked);
    if (batches > 0 && w->eval_stats_step == w->pos.step) {
      memcpy(m->stats, w->eval_stats, ns * sizeof(float)); /* this step's, evaluated already */
    } else {
      if (batches > 0) recompute_bn_stats(w, batches);
      if (w->c->world > 1) {
        gather_bn_stats(w);
        if (w->c->rank == 0) bn_stats_mean(w->stats, w->c->world, ns, m->stats);
        comm_bcast(w->c, m->stats, ns * sizeof(float), 0);
      }
      if (batches > 0) memcpy(w->eval_stats, m->stats, ns * sizeof(float)), w->eval_stats_step = w->pos.step;
    }
  }
  model_sync_to_device(m);
  return saved;
}

static void restore_training_model(worker *w, training_saved saved) {
  model *m = &w->m;
  if (!saved.params && !saved.stats) return;
  if (saved.params) memcpy(m->params, saved.params, m->n_params * sizeof(float));
  if (saved.stats) {
    memcpy(m->stats, saved.stats, m->n_stats * sizeof(float));
    memcpy(m->bn_tracked, saved.tracked, (size_t)m->n_bn * sizeof *m->bn_tracked);
  }
  model_sync_to_device(m);
  free(saved.params), free(saved.stats), free(saved.tracked);
}

/* Rank 0 sends each rank its statistics of a resumed state as a bn_stats message. */
static void scatter_bn_stats(worker *w, const float *per_rank) {
  size_t ns = w->m.n_stats, bytes = sizeof(bn_stats_msg) + ns * sizeof(float);
  unsigned char *msg = xmalloc(bytes);
  if (w->c->rank == 0) {
    memcpy(w->m.stats, per_rank, ns * sizeof(float));
    for (int r = 1; r < w->c->world; r++) {
      bn_stats_msg head = {TRAIN_MSG_VERSION, r, ns};
      memcpy(msg, &head, sizeof head);
      memcpy(msg + sizeof head, per_rank + (size_t)r * ns, ns * sizeof(float));
      comm_send(w->c, r, TRAIN_MSG_TAG_BN_STATS, msg, bytes);
    }
  } else {
    comm_recv(w->c, 0, TRAIN_MSG_TAG_BN_STATS, msg, bytes);
    bn_stats_msg head;
    memcpy(&head, msg, sizeof head);
    char err[256];
    if (bn_stats_msg_check(&head, w->c->rank, ns, err, sizeof err) != 0) die("rank %d: %s", w->c->rank, err);
    memcpy(w->m.stats, msg + sizeof head, ns * sizeof(float));
  }
  free(msg);
}

/* ---- resume and agreement ------------------------------------------------------------ */

/* The EMA goes on from the checkpoint's (state on rank 0 only). */
static void restore_ema(worker *w, const train_state_view *state) {
  int64_t saved = state && state->ema_params ? state->ema_updates : 0;
  comm_bcast(w->c, &saved, sizeof saved, 0);
  if (!w->ema.avg) {
    if (saved > 0) worker_log(w, "the checkpoint holds a weight EMA; without --ema-decay it is not used or kept");
    return;
  }
  if (saved == 0) {
    worker_log(w, "the checkpoint holds no weight EMA: it starts from the weights at the next update");
    return;
  }
  if (w->c->rank == 0) memcpy(w->ema.avg, state->ema_params, w->m.n_params * sizeof(float));
  comm_bcast(w->c, w->ema.avg, w->m.n_params * sizeof(float), 0);
  w->ema.updates = saved;
}

void worker_restore(worker *w, const resume_msg *msg, const train_state_view *state) {
  comm *c = w->c;
  resume_msg r;
  if (c->rank == 0) r = *msg;
  comm_bcast(c, &r, sizeof r, 0);
  char err[256];
  if (resume_msg_check(&r, c->world, err, sizeof err) != 0) die("rank %d: %s", c->rank, err);
  if (!r.found) return;
  if (c->rank == 0) {
    memcpy(w->m.params, state->params, w->m.n_params * sizeof(float));
    memcpy(w->opt.m, state->opt_m, w->opt.n * sizeof(float));
    memcpy(w->opt.v, state->opt_v, w->opt.n * sizeof(float));
    memcpy(w->m.bn_tracked, state->bn_tracked, (size_t)w->m.n_bn * sizeof(int64_t));
  }
  comm_bcast(c, w->m.params, w->m.n_params * sizeof(float), 0);
  comm_bcast(c, w->opt.m, w->opt.n * sizeof(float), 0);
  comm_bcast(c, w->opt.v, w->opt.n * sizeof(float), 0);
  comm_bcast(c, w->m.bn_tracked, (size_t)w->m.n_bn * sizeof(int64_t), 0);
  scatter_bn_stats(w, c->rank == 0 ? state->bn_stats : NULL);
  model_sync_to_device(&w->m);
  optim_sync_to_device(&w->opt);
  w->pos = (job_position){r.step, (int)r.epoch, (int)r.step_in_epoch};
  restore_ema(w, c->rank == 0 ? state : NULL);
  /* A relaunch exports what the first launch evaluated (a finished job's weights again). */
  int has_eval = c->rank == 0 && state->eval_bn_stats;
  comm_bcast(c, &has_eval, sizeof has_eval, 0);
  if (has_eval) {
    if (c->rank == 0) memcpy(w->eval_stats, state->eval_bn_stats, w->m.n_stats * sizeof(float));
    comm_bcast(c, w->eval_stats, w->m.n_stats * sizeof(float), 0);
    w->eval_stats_step = r.step;
  }
  w->opt.step = (long)r.optimizer_steps;
}

int worker_any(worker *w, int mine) {
  double any = mine ? 1.0 : 0.0;
  comm_allreduce_sum_f64(w->c, &any, 1);
  return any > 0;
}

void worker_check_same_weights(worker *w, const char *when) {
  const comm *c = w->c;
  model_sync_to_host(&w->m);
  uint64_t h = model_hash_params(&w->m);
  uint64_t *all = xmalloc((size_t)c->world * sizeof *all);
  comm_gather(c, &h, sizeof h, all, 0);
  int bad = -1;
  if (c->rank == 0)
    for (int r = 1; r < c->world && bad < 0; r++)
      if (all[r] != all[0]) bad = r;
  comm_bcast(c, &bad, sizeof bad, 0);
  free(all);
  if (bad < 0 && c->world > 1 && !strcmp(when, "at the end"))
    worker_log(w, "all %d ranks hold identical weights (parameter hash %016llx)", c->world, (unsigned long long)h);
  if (bad >= 0) {
    if (c->rank == 0)
      log_warn("rank %d (%s) has different weights than rank 0 %s: the replicas diverged; ending the job",
               bad, comm_host_of(c, bad), when);
    end_job(w, EXIT_FAILED, NULL);
  }
}

/* ---- the step ------------------------------------------------------------------------ */

void worker_begin_epoch(worker *w) {
  const job_plan *p = &w->plan;
  plan_shuffle(w->cfg->seed, w->pos.epoch, p->n_train, w->order);
  int64_t count = plan_rank_samples(w->order, w->pos.step_in_epoch, p->steps_per_epoch,
                                    p->global_batch, w->c->rank, p->local_batch, w->mine);
  loader_start_epoch(w->train, w->pos.epoch, w->mine, count);
}

static int count_correct(const float *scores, const int *labels, int n, int classes) {
  int correct = 0;
  for (int b = 0; b < n; b++) {
    const float *p = scores + (size_t)b * classes;
    int best = 0;
    for (int k = 1; k < classes; k++) if (p[k] > p[best]) best = k;
    correct += best == labels[b];
  }
  return correct;
}

/* torchvision's schedule: after the step of batch i of an epoch when i % --ema-every is 0;
 * restarted (the next update copies) while the learning rate warms up. */
static void update_ema(worker *w, int batch_in_epoch) {
  if (!w->ema.avg || batch_in_epoch % w->cfg->ema_every) return;
  model_sync_to_host(&w->m); /* on a GPU: waits for the queued update */
  ema_update(&w->ema, w->m.params);
  if (w->pos.step <= w->sched.warmup_steps) ema_restart(&w->ema);
}

/* The step's forward and backward, on its batch as mixed by mixup or CutMix when they are on
 * (keyed by seed, step and rank, so a resume mixes the same way). Returns the loss. */
static float forward_backward(worker *w, int n) {
  const job_config *cfg = w->cfg;
  float smoothing = (float)cfg->label_smoothing;
  uint64_t key = hash_mix(hash_mix(cfg->seed ^ 0x6d69787570ull, (uint64_t)w->pos.step), (uint64_t)w->c->rank);
  mix_result mix = mix_batch(w->images, w->labels, w->labels2, n, cfg->size, cfg->mixup_alpha, cfg->cutmix_alpha, key);
  if (mix.kind == MIX_NONE) {
    float loss = model_forward(&w->m, w->images, w->labels, n, 1, smoothing);
    model_backward(&w->m, w->labels, n, smoothing);
    return loss;
  }
  float loss = model_forward_mixed(&w->m, w->images, w->labels, w->labels2, mix.lam, n, smoothing);
  model_backward_mixed(&w->m, w->labels, w->labels2, mix.lam, n, smoothing);
  return loss;
}

void worker_step(worker *w, double ctl[CONTROL_N], control_timing *mine) {
  const job_config *cfg = w->cfg;
  double t0 = time_now();
  int n = loader_next(w->train, w->images, w->labels);
  POLLEN_ASSERT(n == w->plan.local_batch);
  double t1 = time_now();
  w->m.dropout_seed = hash_mix(hash_mix(cfg->seed, (uint64_t)w->pos.step), (uint64_t)w->c->rank);
  model_zero_grads(&w->m);
  if (w->nccl) nccl_sync_begin(w->nccl);
  if (w->sync) grad_sync_begin(w->sync);
  float loss = forward_backward(w, n);
  double exposed = w->nccl ? nccl_sync_finish(w->nccl) : w->sync ? grad_sync_finish(w->sync) : 0.0;
  /* On a GPU this only queues the update: it runs while the next batch is fetched. */
  optim_step(&w->opt, model_live_params(&w->m), model_live_grads(&w->m), (float)worker_lr_at(w, w->pos.step));
  int batch_in_epoch = w->pos.step_in_epoch;
  w->pos.step++, w->pos.step_in_epoch++;
  update_ema(w, batch_in_epoch);
  double t2 = time_now();

  ctl[CONTROL_LOSS_SUM] += (double)loss * n;
  ctl[CONTROL_CORRECT] += count_correct(w->m.probs, w->labels, n, w->plan.classes);
  ctl[CONTROL_SAMPLES] += n;
  ctl[CONTROL_VERSION_SUM] += CONTROL_VERSION;
  *mine = (control_timing){t2 - t0, t2 - t1, exposed, t1 - t0, n, (int)getpid(), 0};
}

void worker_exchange_control(worker *w, double ctl[CONTROL_N], const control_timing *mine,
                             control_timing *timings) {
  comm_allreduce_sum_f64(w->c, ctl, CONTROL_N);
  if ((int)ctl[CONTROL_VERSION_SUM] != w->c->world * CONTROL_VERSION)
    die("ranks run different pollen versions (control message mismatch); install one version everywhere");
  comm_gather(w->c, mine, sizeof *mine, timings, 0);
}

void worker_end_epoch(worker *w) { w->pos.epoch++, w->pos.step_in_epoch = 0; }

/* ---- snapshot, evaluation, export ----------------------------------------------------- */

int worker_snapshot(worker *w, train_state_view *v) {
  /* The same content from a GPU as from a CPU: the device state is copied back first. */
  model_sync_to_host(&w->m);
  optim_sync_to_host(&w->opt);
  gather_bn_stats(w);
  if (w->c->rank != 0) return 0;
  *v = (train_state_view){w->m.params, w->opt.m, w->opt.v, w->m.bn_tracked, w->stats, w->c->world,
                          w->eval_stats_step == w->pos.step ? w->eval_stats : NULL,
                          w->ema.updates > 0 ? w->ema.avg : NULL, w->ema.updates, w->opt.step};
  return 1;
}

/* Accuracy on the validation split: rank r evaluates samples r, r+W, ...; counts are summed. */
double worker_evaluate(worker *w) {
  if (w->plan.n_val == 0) return NAN;
  training_saved own = use_eval_model(w);
  int64_t count = 0;
  for (int64_t i = w->c->rank; i < w->plan.n_val; i += w->c->world) w->mine[count++] = i;
  loader_start_epoch(w->val, 0, w->mine, count);
  double correct[2] = {0, 0};
  int n;
  while ((n = loader_next(w->val, w->images, w->labels)) > 0) {
    model_forward(&w->m, w->images, NULL, n, 0, 0.0f);
    correct[0] += count_correct(model_logits(&w->m), w->labels, n, w->plan.classes);
    correct[1] += n;
  }
  comm_allreduce_sum_f64(w->c, correct, 2);
  restore_training_model(w, own);
  return correct[1] > 0 ? correct[0] / correct[1] : NAN;
}

int worker_export_weights(worker *w, const char *path, char *err, size_t errlen) {
  training_saved own = use_eval_model(w);
  int rc = 0;
  if (w->c->rank == 0) {
    const char **names = xcalloc((size_t)w->plan.classes, sizeof *names);
    for (int k = 0; k < w->plan.classes; k++) names[k] = loader_class_name(w->train, k);
    rc = weights_export(&w->m, path, names, w->plan.image_size, err, errlen);
    free(names);
    if (rc == 0) log_info("weights written to %s (weights hash %016llx)", path, (unsigned long long)model_hash(&w->m));
  }
  restore_training_model(w, own);
  return rc;
}

void worker_free(worker *w) {
  if (!w) return;
  loader_close(w->train);
  loader_close(w->val);
  if (w->sync) grad_sync_free(w->sync);
  if (w->nccl) nccl_sync_free(w->nccl);
  model_host_free(&w->m, w->images), model_host_free(&w->m, w->labels);
  free(w->labels2);
  optim_free(&w->opt);
  model_free(&w->m);
  free(w->order), free(w->mine), free(w->stats), free(w->stats_msgs), free(w->eval_stats);
  ema_free(&w->ema);
  free(w);
}
