/* dataset_prepare.h - `pollen prepare`: turns a folder of class sub-folders or tf_flowers
 * TFRecord files into train/val shard files (proto/shard.h) plus manifest.json
 * (proto/manifest.h).
 *
 * Not for: decoding at training time (worker/loader.h). Everything is held in memory while
 * preparing (fine for tf_flowers' 3,670 photos; a dataset larger than RAM would need a
 * streaming pass). */
#ifndef POLLEN_DATASET_PREPARE_H
#define POLLEN_DATASET_PREPARE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  const char *src;     /* class folder, TFRecord file, folder of TFRecord files, or a glob */
  const char *out;     /* output folder (created if missing) */
  int shards;          /* train shards; val gets as many, fewer if it has fewer samples */
  double val_fraction; /* per class, rounded; 0 = no val split */
  double test_fraction; /* of all photos, by content hash (not seeded); 0 = no test split */
  int max_side;        /* 0 = keep the original JPEG bytes */
  uint64_t seed;       /* at most MANIFEST_MAX_SEED */
  int force;           /* overwrite finished or different output */
  int threads;         /* 0 = all cores */
  int progress;        /* draw a progress bar on stderr */
} prepare_opts;

typedef struct {
  int already;        /* 1 when the output was already prepared with these settings */
  int64_t train, val, test; /* samples written */
  int64_t skipped_not_image, skipped_corrupt, skipped_unreadable;
} prepare_result;

/* Dies with one clear line on any user error (bad --src, conflicting output, empty class);
 * reports corrupt or unreadable images by name and skips them. */
void dataset_prepare(const prepare_opts *o, prepare_result *res);

/* Prepare's conversion of one PNG (in memory) into the JPEG a shard holds: fitted to
 * max_side (0: its own size), prepare's quality. `pollen predict` uses it, so a PNG photo is
 * scored as its prepared copy would be trained on. *jpeg is malloc'd. 0, or -1 with why. */
int prepare_png_to_jpeg(const unsigned char *png, size_t len, int max_side, unsigned char **jpeg, size_t *jpeg_len,
                        char *why, size_t whylen);

#endif
