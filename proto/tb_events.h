/* tb_events.h - TensorBoard event files (proto/README.md "TensorBoard event files"): the job's
 * training curve as `tensorboard --logdir JOB/tensorboard` reads it, written by the coordinator
 * beside metrics.jsonl.
 *
 * A file is `events.out.tfevents.<unix time>.<host>.pollen`, TFRecord-framed
 * (proto/tfrecord.h) serialized Events (proto/tf_event.proto): first one with file_version
 * "brain.Event:2", then one per scalar point (one tag, one float). Each launch writes a new
 * file; TensorBoard reads every file in the folder, so a relaunch first cuts the old ones back
 * to the step it resumes at. Not for: histograms, images, reading events for pollen itself. */
#ifndef POLLEN_TB_EVENTS_H
#define POLLEN_TB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define TB_EVENTS_FILE_VERSION "brain.Event:2"

typedef struct tb_events tb_events;

/* Cuts every events file in dir (each name containing "tfevents": those TensorBoard reads) back
 * to the events of steps up to through_step, keeping its file_version event: what a job resumed
 * at that step has done. Records after a torn or corrupt one (a crash, a full disk) go too; a
 * file left without events is removed. *kept and *dropped count events. A file is rewritten to
 * dir/cut.tmp, synced and renamed over it, and left as it is when nothing goes; a missing dir
 * is no error. 0, or -1 with err set. */
int tb_events_cut(const char *dir, int64_t through_step, int64_t *kept, int64_t *dropped, char *err,
                  size_t errlen);

/* Creates dir if needed and a new events file in it (a later unix time in the name when one
 * of this second exists, so names sort in launch order), starting with the file_version event.
 * NULL with err set. */
tb_events *tb_events_open(const char *dir, char *err, size_t errlen);

/* Appends one scalar event (wall time now) and flushes it; 0, or -1 with errno set. After a
 * failure the file may end in a torn record: write no more (the next cut drops it). */
int tb_events_scalar(tb_events *w, const char *tag, int64_t step, float value);

const char *tb_events_path(const tb_events *w);
void tb_events_close(tb_events *w);

#endif
