/* train_state.h - what a training checkpoint holds, on top of the file format
 * (proto/ckpt_format.h): the section names, the fields of meta.extra, and the one rule that
 * turns the ranks' BatchNorm statistics into a single set.
 *
 * Sections (float32 or u64, in the engine's layouts, whatever device wrote them):
 *   params          every parameter, the model's flat buffer
 *   opt.m, opt.v    the optimizer's moment buffers (n_opt floats each; zero-length if unused)
 *   bn_tracked      num_batches_tracked of each BatchNorm (u64)
 *   bn_stats.rankR  BN running mean/var of rank R, one per rank that trained it: batch
 *                   statistics stay per rank, as in PyTorch DDP, so a same-size resume gives
 *                   each rank its own and evaluation, export and an elastic resume use their
 *                   mean (bn_stats_mean)
 *   ema.params      optional: the weights' moving average (--ema-decay, worker/ema.h), which
 *                   evaluation and export use; meta.extra's ema_updates counts its updates
 *   bn_stats.eval   optional: the BN statistics the job's evaluation used at this step when
 *                   they were not that mean (precise BN, --precise-bn): the validation
 *                   accuracy recorded and the exported weights go with these; `pollen export`
 *                   and a relaunch prefer them
 * meta.extra: optimizer_steps, lr, global_batch, best_val_acc, last_val_acc, num_classes,
 * image_size, rng (a note), reason, ema_updates (with ema.params). num_classes and
 * image_size are absent from checkpoints of pollen 0.1.0 before this schema; readers fall
 * back as documented below.
 * Not for: writing or choosing checkpoints (daemon/ckpt.h). */
#ifndef POLLEN_TRAIN_STATE_H
#define POLLEN_TRAIN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "proto/ckpt_format.h"

#define TRAIN_STATE_PARAMS "params"
#define TRAIN_STATE_OPT_M "opt.m"
#define TRAIN_STATE_OPT_V "opt.v"
#define TRAIN_STATE_BN_TRACKED "bn_tracked"
#define TRAIN_STATE_BN_STATS_PREFIX "bn_stats.rank"
#define TRAIN_STATE_BN_EVAL "bn_stats.eval"
#define TRAIN_STATE_EMA "ema.params"
#define TRAIN_STATE_NAME_MAX 32

/* The sizes of one model's state: every section read is checked against them. */
typedef struct {
  size_t n_params, n_opt, n_stats;
  int n_bn;
} train_state_shape;

/* A state: borrowed views of its buffers, and the optimizer's step count (its bias
 * correction). bn_stats holds stats_ranks sets of n_stats floats, rank-major. */
typedef struct {
  const float *params, *opt_m, *opt_v;
  const int64_t *bn_tracked;
  const float *bn_stats;
  int stats_ranks;
  const float *eval_bn_stats; /* n_stats floats, or NULL: evaluation used the ranks' mean */
  const float *ema_params;    /* n_params floats, or NULL: no weight EMA */
  int64_t ema_updates;
  int64_t optimizer_steps;
} train_state_view;

/* What the job records beside the tensors. NaN: unknown; num_classes/image_size 0: unknown. */
typedef struct {
  int64_t optimizer_steps;
  double lr;
  int global_batch;
  double best_val_acc, last_val_acc;
  int num_classes, image_size;
  char reason[32];
  int64_t ema_updates;      /* updates of ema.params since its last restart; 0 without one */
} train_state_extra;

/* "bn_stats.rankR" into out (TRAIN_STATE_NAME_MAX bytes). */
void train_state_bn_stats_name(int rank, char out[TRAIN_STATE_NAME_MAX]);

/* The sections of a state, in schema order, into sec (6 + view->stats_ranks entries) with
 * their names in names (view->stats_ranks entries, which sec borrows). Returns the count. */
int train_state_sections(const train_state_view *v, const train_state_shape *shape,
                         ckptf_section_in *sec, char (*names)[TRAIN_STATE_NAME_MAX]);

/* Points v at the sections of a verified checkpoint file (ema.params and bn_stats.eval when
 * there are),
 * checking each one's size against shape, and copies the ranks' BN statistics (one set per meta.world_size rank) side by side
 * into *bn_stats (malloc'd; v->bn_stats points there: free it when done with v). Returns 0,
 * or -1 with "PATH: section 'X' ..." in err (the checkpoint is from another pollen version or
 * model). */
int train_state_from_file(const ckptf_file *f, const char *path, const train_state_shape *shape,
                          train_state_view *v, float **bn_stats, char *err, size_t errlen);
/* The same for what weights need (params, bn_tracked, bn_stats): opt_m/opt_v stay NULL and
 * shape->n_opt is not used. */
int train_state_weights_from_file(const ckptf_file *f, const char *path, const train_state_shape *shape,
                                  train_state_view *v, float **bn_stats, char *err, size_t errlen);

/* meta.extra as an object (caller deletes it) and back; fields missing from x keep the
 * "unknown" values, optimizer_steps falls back to meta.step. */
cJSON *train_state_extra_json(const train_state_extra *x);
void train_state_extra_read(const cJSON *extra, int64_t meta_step, train_state_extra *x);

/* The mean of `ranks` rank-major sets of n BN statistics into out, summed in double in rank
 * order: the one averaging of BN statistics, for evaluation, export and elastic resumes. */
void bn_stats_mean(const float *per_rank, int ranks, size_t n, float *out);

#endif
