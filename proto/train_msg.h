/* train_msg.h - what the coordinator (rank 0) tells the workers outside the per-step control
 * message (proto/control.h), version 1. Every message travels over MPI at a step boundary and
 * starts with its version, which the receiver checks before it reads anything else.
 *
 *   config    rank 0 -> every rank (broadcast): config_msg, then json_bytes of rank 0's job
 *             definition (job_config_definition_json, without the data folder: ranks may see
 *             the data under other paths, and staging checks the data itself). Each rank
 *             compares it with the definition its own flags give.
 *   resume    rank 0 -> every rank (broadcast): resume_msg, where the job goes on. When found,
 *             the state follows in the schema's order (proto/train_state.h: params, opt.m,
 *             opt.v, bn_tracked), then each rank gets its bn_stats message.
 *   bn_stats  one rank's BatchNorm running statistics: bn_stats_msg, then n_stats floats.
 *             Rank r -> rank 0 for a snapshot or an average (gathered), rank 0 -> rank r at a
 *             resume (point to point, TRAIN_MSG_TAG_BN_STATS).
 * A mismatch (another pollen version on some rank, a message of another job) is refused with
 * a one-line reason: it means "install one version everywhere". */
#ifndef POLLEN_TRAIN_MSG_H
#define POLLEN_TRAIN_MSG_H

#include <stddef.h>
#include <stdint.h>

#define TRAIN_MSG_VERSION 1u
enum { TRAIN_MSG_TAG_BN_STATS = 7201 };

typedef struct {
  uint32_t version;    /* TRAIN_MSG_VERSION */
  uint32_t zero;
  uint64_t json_bytes; /* the definition that follows, with its NUL */
} config_msg;

typedef struct {
  uint32_t version;     /* TRAIN_MSG_VERSION */
  uint32_t found;       /* 0: a fresh start (the fields below are 0) */
  int64_t step;         /* optimizer steps done */
  int64_t epoch;        /* the epoch the next step belongs to (0-based) */
  int64_t step_in_epoch;
  int64_t optimizer_steps;
  int32_t saved_world;  /* ranks that wrote the checkpoint */
  int32_t world;        /* ranks it is meant for */
} resume_msg;

typedef struct {
  uint32_t version;     /* TRAIN_MSG_VERSION */
  int32_t rank;         /* whose statistics these are */
  uint64_t n_stats;     /* floats that follow */
} bn_stats_msg;

/* Each returns 0, or -1 with a one-line reason in err. */
int config_msg_check(const config_msg *m, size_t max_bytes, char *err, size_t errlen);
int resume_msg_check(const resume_msg *m, int world, char *err, size_t errlen);
int bn_stats_msg_check(const bn_stats_msg *m, int rank, size_t n_stats, char *err, size_t errlen);

#endif
