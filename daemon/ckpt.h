/* ckpt.h - crash-safe checkpoints of a training job: a background writer, the loader that
 * picks the newest checkpoint that verifies, and listing.
 *
 * Files live in JOB_DIR/checkpoints/step-XXXXXXXXX.ckpt (the step, 9+ digits), in the format
 * of proto/ckpt_format.h. A write goes to step-N.ckpt.tmp, is fsync'd, renamed over the final
 * name and the directory fsync'd: a crash at any instant leaves the old set of checkpoints or
 * the new one, never a torn file under a final name. Leftover .tmp files are ignored by the
 * loader and deleted when the next writer starts. One writer per job directory (enforced with
 * a lock file, JOB_DIR/checkpoints/.lock).
 *
 * Not for: choosing what goes into a snapshot (the training loop does) or the byte format
 * (proto/ckpt_format.h). */
#ifndef POLLEN_CKPT_H
#define POLLEN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/ckpt_format.h"

/* What to save: named buffers (borrowed; copied by ckpt_writer_submit) and the meta. Names
 * must be unique, valid for ckptf_name_ok and not "meta". meta.pollen_version is filled in
 * when empty and meta.unix_time when 0. */
typedef struct {
  ckptf_meta meta;
  const ckptf_section_in *sections;
  int n_sections;
} ckpt_snapshot;

/* ---- writing ---- */

typedef struct ckpt_writer ckpt_writer;

/* Creates JOB_DIR and JOB_DIR/checkpoints if needed, takes the job's checkpoint lock, deletes
 * leftover .tmp files and starts the background thread. keep >= 1: how many checkpoints to
 * keep. Returns NULL with a one-line reason in err (unwritable directory, another writer). */
ckpt_writer *ckpt_writer_start(const char *job_dir, int keep, char *err, size_t errlen);

/* Copies the snapshot into the writer's staging buffer (reused between calls, grown when
 * needed) and returns; the background thread then checksums and writes it. The caller may
 * change or free its buffers as soon as this returns. If the previous write is still running,
 * this first WAITS for it (at most one snapshot is in flight, so memory stays at one copy).
 * Returns 0 when the previous write (if any) succeeded, else its errno value: the message is
 * in ckpt_writer_last_error. Aborts on an invalid snapshot (duplicate or bad names: a bug). */
int ckpt_writer_submit(ckpt_writer *w, const ckpt_snapshot *s);

/* Waits until the submitted write is finished. Returns 0 or the errno of the failed write. */
int ckpt_writer_wait(ckpt_writer *w);

/* The errno of the most recently finished write (0: it succeeded, or nothing finished yet);
 * its one-line message goes to msg when msg is not NULL. A failed write never removes or
 * damages earlier checkpoints and removes its own .tmp file. */
int ckpt_writer_last_error(ckpt_writer *w, char *msg, size_t msglen);

/* Never blocks: the step of the newest checkpoint this writer finished writing successfully
 * (-1: none yet). What may be copied elsewhere: its file is complete and final. */
int64_t ckpt_writer_written(ckpt_writer *w);

/* Waits for the submitted write, stops the thread, releases the lock and frees w. Returns as
 * ckpt_writer_wait. NULL is accepted. */
int ckpt_writer_stop(ckpt_writer *w);

/* ---- loading ---- */

typedef enum {
  CKPT_LOADED = 0,      /* out holds a verified checkpoint */
  CKPT_NONE = 1,        /* no checkpoint at all: a fresh start */
  CKPT_ALL_CORRUPT = 2, /* checkpoints exist but none verifies: an error, not a fresh start */
  CKPT_MISMATCH = 3,    /* the newest valid one is from another model or config: refuse */
  CKPT_IO_ERROR = 4,    /* the checkpoint directory cannot be read */
} ckpt_status;

typedef struct {
  char path[4096];
  ckptf_file file; /* sections (ckptf_find) and meta */
  int n_skipped;      /* newer checkpoints rejected before this one */
  char skipped[1024]; /* why the newest rejected one was rejected; "" when none */
} ckpt_loaded;

/* Whether a verified checkpoint belongs to a job of this model and config hash (either may
 * be NULL: not checked). The one rule ckpt_load_latest refuses by and `pollen checkpoints`
 * shows. */
typedef enum { CKPT_SAME_JOB = 0, CKPT_OTHER_MODEL, CKPT_OTHER_CONFIG } ckpt_match;
ckpt_match ckpt_meta_match(const ckptf_meta *m, const char *expect_model, const char *expect_config_hash);

/* Loads the newest checkpoint in JOB_DIR/checkpoints that verifies, trying newest to oldest
 * by the step in the name; each one skipped is logged (log_warn) with its reason. The model
 * and config hash of the one found must equal expect_model / expect_config_hash (either may
 * be NULL: not checked); a difference is CKPT_MISMATCH with both values in err, never a
 * fallback to an older file. err gets a one-line message for every status but CKPT_LOADED.
 * Free out with ckpt_loaded_free (also safe after a failure). */
ckpt_status ckpt_load_latest(const char *job_dir, const char *expect_model,
                             const char *expect_config_hash, ckpt_loaded *out, char *err,
                             size_t errlen);
const ckptf_section *ckpt_loaded_find(const ckpt_loaded *l, const char *name);
void ckpt_loaded_free(ckpt_loaded *l);

/* ---- listing ---- */

typedef struct {
  char path[4096];
  uint64_t step;      /* from the file name */
  uint64_t size;      /* bytes */
  int valid;          /* 1: every check passed */
  char reason[512];   /* why not valid; "" when valid */
  ckptf_meta meta;    /* when valid (extra is NULL: listings do not keep it) */
} ckpt_info;

/* Every step-N.ckpt in JOB_DIR/checkpoints, newest first, each fully verified. Returns 0 with
 * *out (free with free()) and *n (0 when there is no checkpoints directory), or -1 with a
 * one-line reason in err when the directory cannot be read. */
int ckpt_list(const char *job_dir, ckpt_info **out, int *n, char *err, size_t errlen);

/* Deletes all but the newest `keep` checkpoints of JOB_DIR/checkpoints, never the one of step
 * `except` (the one just written: a stale newer one must not push it out). */
void ckpt_prune(const char *job_dir, int keep, uint64_t except);

/* The path of the checkpoint of a step: JOB_DIR/checkpoints/step-%09llu.ckpt. */
void ckpt_path(char *out, size_t outlen, const char *job_dir, uint64_t step);

#endif
