/* metrics.h - JOB_DIR/metrics.jsonl, the job's training curve (version 2, proto/README.md
 * "Metrics records"): one JSON object per line, appended by the coordinator at each logged
 * step and each validation, read back by `pollen plot` and by `pollen status` when no job runs.
 *
 * A line is {"v":2,"step":..,"epoch":..,"loss":..,"train_acc":..,"val_acc":..,"lr":..,
 * "images_per_s":..,"comm_exposed_s":..,"elapsed_s":..,"time":..}: numbers with 6 significant
 * digits, unknown ones null. "epoch" counts from 1 (proto/plan.h plan_epoch_number): the epoch
 * step belongs to; version 1 lines (0-based) read as version 2. Not for: the status socket's replies (proto/status_proto.h). */
#ifndef POLLEN_METRICS_H
#define POLLEN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_VERSION 2
#define METRICS_MAX_LINE 4096 /* a record is under 400 bytes; longer lines are not records */

typedef struct {
  int64_t step;          /* optimizer steps done */
  int epoch;             /* from 1: the epoch the step belongs to */
  double loss, train_acc, val_acc, lr, images_per_s, comm_exposed_s, elapsed_s; /* NaN: unknown (written as null) */
  int64_t time;          /* unix seconds */
} metrics_record;

/* Appends one line and flushes it; 0, or -1 with errno set (EINVAL: a negative step or time,
 * or an epoch below 1, which no reader would accept). */
int metrics_write(FILE *f, const metrics_record *r);

/* Parses one line strictly; 0, or -1 with a one-line reason in err. A trailing newline is
 * allowed. step and epoch are required; a missing number reads as NaN and a missing time as
 * 0 (hand-written lines); unknown or repeated keys, wrong types and trailing bytes are
 * refused. A line without "v" (older pollen) is version 1, whose 0-based epoch is read as
 * counted from 1; a newer version is refused. */
int metrics_parse(const char *line, metrics_record *r, char *err, size_t errlen);

typedef struct {
  int64_t lines;   /* lines read */
  int64_t skipped; /* of them, not a record: cut short by a crash, blank, garbage */
} metrics_tally;

/* Calls visit(record, ctx) for each record of f in file order: all of them, or with
 * tail_bytes > 0 those that start after the first newline within the file's last tail_bytes
 * (the newest records of a long file, cheaply). A line that is not a record is skipped and
 * counted in *tally (may be NULL). 0, or -1 with err set: a read error, or a record of a newer
 * version than METRICS_VERSION (the file's records can not be trusted to mean the same). */
int metrics_read(FILE *f, long tail_bytes, void (*visit)(const metrics_record *r, void *ctx), void *ctx,
                 metrics_tally *tally, char *err, size_t errlen);

/* Cuts the records file at path back to the records of steps up to through_step, in order:
 * what a job resumed at that step has done. Lines that are not records (torn by a crash or a
 * full disk, or glued to one) go too; *kept and *dropped count. Written to PATH.tmp, synced
 * and renamed; left as it is when nothing goes, and a missing file is no error. 0, or -1 with
 * err set. */
int metrics_cut(const char *path, int64_t through_step, int64_t *kept, int64_t *dropped, char *err,
                size_t errlen);

#endif
