/* dataset_prepare.h - `pollen prepare`: turns a folder of class sub-folders or tf_flowers
 * TFRecord files into train/val shard files (proto/shard.h) plus manifest.json, and reads that
 * manifest back for the loader.
 *
 * Not for: decoding at training time (worker/loader.h). Everything is held in memory while
 * preparing (fine for tf_flowers' 3,670 photos; a dataset larger than RAM would need a
 * streaming pass). */
#ifndef POLLEN_DATASET_PREPARE_H
#define POLLEN_DATASET_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_FORMAT_VERSION 1
#define DATASET_MANIFEST "manifest.json"
#define DATASET_MAX_SEED ((1ull << 53) - 1) /* stored as a JSON number */

typedef struct {
  const char *src;     /* class folder, TFRecord file, folder of TFRecord files, or a glob */
  const char *out;     /* output folder (created if missing) */
  int shards;          /* train shards; val gets as many, fewer if it has fewer samples */
  double val_fraction; /* per class, rounded; 0 = no val split */
  int max_side;        /* 0 = keep the original JPEG bytes */
  uint64_t seed;
  int force;           /* overwrite finished or different output */
  int threads;         /* 0 = all cores */
  int progress;        /* draw a progress bar on stderr */
} prepare_opts;

typedef struct {
  int already;        /* 1 when the output was already prepared with these settings */
  int64_t train, val; /* samples written */
  int64_t skipped_not_image, skipped_corrupt, skipped_unreadable;
} prepare_result;

/* Dies with one clear line on any user error (bad --src, conflicting output, empty class);
 * reports corrupt or unreadable images by name and skips them. */
void dataset_prepare(const prepare_opts *o, prepare_result *res);

typedef struct {
  char *file; /* name inside the data folder */
  int64_t count;
  uint64_t bytes;
  uint32_t crc32c; /* of the whole file */
} dataset_shard_info;

typedef struct {
  int64_t count;
  int64_t *per_class;
  int n_shards;
  dataset_shard_info *shards;
} dataset_split_info;

typedef struct {
  int format_version;
  char *source, *source_kind; /* "folder" | "tfrecord" */
  uint64_t seed;
  double val_fraction;
  int max_side, shards;
  int num_classes;
  char **classes;
  dataset_split_info train, val;
  int64_t skipped_not_image, skipped_corrupt, skipped_unreadable;
} dataset_manifest;

/* Reads DIR/manifest.json strictly. NULL with err set (missing, unparsable, wrong version:
 * the message says to run `pollen prepare`). */
dataset_manifest *dataset_manifest_read(const char *dir, char *err, size_t errlen);
void dataset_manifest_free(dataset_manifest *m);
/* The split named "train" or "val", or NULL. */
const dataset_split_info *dataset_manifest_split(const dataset_manifest *m, const char *split);

#endif
