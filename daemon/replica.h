/* replica.h - copies of a job's checkpoints on another host, so that losing any one machine
 * (its node-local job folder with it) loses no checkpoint, with no shared storage.
 *
 * Rank 0 sends each checkpoint its writer finishes, then config.json and metrics.jsonl, to
 * the replica rank (the first rank, in rank order, on another host), which verifies and
 * installs them in its own JOB folder the way ckpt.c writes: step-N.ckpt.tmp, fsync, whole
 * file verified, rename, directory fsync, at most --keep kept. Both sides move only at step
 * boundaries and never block there (replica_progress); replica_drain finishes the last one
 * at the end of a launch. Nothing is copied when the folder is one shared filesystem (a
 * token file written by rank 0 is seen by the replica rank: replica_token_*).
 *
 * At start-up (before the coordinator opens the folder) the driver asks every host for its
 * newest valid checkpoint (replica_newest) and has the rank holding the newest one anywhere
 * send it to rank 0, which installs it (replica_install) when its own folder lacks it.
 *
 * The bytes travel over a replica_link, which the driver makes from worker/collective.h's
 * bulk transfers (proto/replica_msg.h is the format); this module decides what to copy,
 * verifies, installs and prunes. Not for: writing checkpoints (ckpt.h). */
#ifndef POLLEN_REPLICA_H
#define POLLEN_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "proto/replica_msg.h"

/* Non-blocking transfers to or from the one peer, by tag (replica_msg.h). A transfer handle
 * is released by test returning 1 or by wait. */
typedef struct {
  void *ctx;
  void *(*send)(void *ctx, int tag, const void *buf, size_t bytes);
  void *(*recv)(void *ctx, int tag, void *buf, size_t bytes);
  int (*test)(void *ctx, void *t); /* 1: done and released */
  void (*wait)(void *ctx, void *t); /* done and released; ends the job past the stall deadline */
  int (*probe)(void *ctx, int tag); /* 1 when a message with tag waits */
} replica_link;

typedef struct replica replica;

/* sending: 1 on rank 0, 0 on the replica rank. peer: "rank R (HOST)", for messages. */
replica *replica_new(const char *job_dir, int keep, int sending, const char *peer, const replica_link *link);
/* Rank 0: the newest checkpoint written (ckpt_writer_written; -1: none). A newer one than
 * the one being copied replaces whatever is still waiting. */
void replica_offer(replica *r, int64_t step);
/* Both sides, at step boundaries: moves the copy along; never blocks. */
void replica_progress(replica *r);
/* Both sides, at the end: the last offered checkpoint is installed on the replica (or failed
 * there with a message) when this returns. */
void replica_drain(replica *r);
/* The replica rank: the newest step installed (-1: none). Installs run on a thread of
 * their own (verify, write, fsync take longer than a step); replica_drain waits for them. */
int64_t replica_installed(replica *r);
void replica_free(replica *r);

/* Start-up, blocking. The rank holding the newest valid checkpoint (step) sends it,
 * config.json and metrics.jsonl (each flagged absent when it has none); dies when the
 * checkpoint cannot be read. */
void replica_send_newest(const char *job_dir, int64_t step, const replica_link *link);
/* Rank 0 receives them and installs the checkpoint, and config.json and metrics.jsonl where
 * its own are missing or end before that step; dies naming peer when the copy does not
 * verify. */
void replica_take_newest(const char *job_dir, int keep, int64_t step, const replica_link *link, const char *peer);

/* ---- pieces, also for tests ---- */

/* Verifies a received file (the body's CRC32C against m; a checkpoint also as a whole file
 * whose step is m->step) and installs it in job_dir under its name (checkpoints/step-N.ckpt,
 * config.json, metrics.jsonl) through NAME.tmp, fsync, rename and directory fsync; then keeps
 * at most `keep` checkpoints. 0, or -1 with a one-line reason in err (nothing installed). */
int replica_install(const char *job_dir, int keep, const replica_msg *m, const void *buf, char *err, size_t errlen);
/* The bytes of a file the way replica_msg sends them: 0 with *buf (free()) and m filled
 * (kind, step, size, crc, sent_us: its mtime), 1 with m flagged REPLICA_ABSENT when there is
 * no such file, -1 with err. */
int replica_read(const char *job_dir, uint32_t kind, int64_t step, replica_msg *m, uint8_t **buf, char *err,
                 size_t errlen);
/* The step of the newest checkpoint in job_dir that verifies and belongs to this model and
 * config hash (NULL: not checked); newer ones that do not are logged with the reason and
 * skipped. -1: none. */
int64_t replica_newest(const char *job_dir, const char *model, const char *config_hash);
/* The newest step metrics.jsonl in job_dir records (-1: no file or no record). */
int64_t replica_records_step(const char *job_dir);

/* Shared-folder detection: rank 0 writes a fresh random token into JOB/replica.token
 * (token: 32 hex digits and a NUL); another rank holding the same token in its JOB sees the
 * same folder. 0, or -1 with err. */
int replica_token_write(const char *job_dir, char token[33], char *err, size_t errlen);
int replica_token_same(const char *job_dir, const char *token);

#endif
