/* manifest.h - manifest.json, the table of contents of a prepared data folder (format version
 * 1, proto/README.md "Manifest"): the preparation's settings, the class names, and per split
 * the shard files with their counts, sizes and CRC32C. `pollen prepare` writes it last, so its
 * presence means the shards beside it are complete; the loader, shard staging, export and the
 * tests read it.
 *
 * Not for: the shard files themselves (proto/shard.h) or preparing data (worker/dataset_prepare.h). */
#ifndef POLLEN_MANIFEST_H
#define POLLEN_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#define MANIFEST_FORMAT_VERSION 1
#define MANIFEST_FILE "manifest.json"
#define MANIFEST_MAX_SEED ((1ull << 53) - 1) /* stored as a JSON number */

typedef struct {
  char *file; /* name inside the data folder */
  int64_t count;
  uint64_t bytes;
  uint32_t crc32c; /* of the whole file */
} manifest_shard;

typedef struct {
  int64_t count;
  int64_t *per_class;
  int n_shards;
  manifest_shard *shards; /* sample i of the split is record i of these, in this order */
} manifest_split;

typedef struct {
  char *source, *source_kind; /* "folder" | "tfrecord" */
  uint64_t seed;
  double val_fraction;
  double test_fraction;  /* share held out by content hash (optional key; 0: no test split) */
  int max_side, shards;
  int num_classes;
  char **classes;
  manifest_split train, val, test; /* test: count 0 and no shards without one */
  int64_t skipped_not_image, skipped_corrupt, skipped_unreadable;
} manifest_info;

/* Reads DIR/manifest.json strictly (every byte untrusted). NULL with err set (missing,
 * unparsable, wrong version, damaged: the message says to run `pollen prepare`). */
manifest_info *manifest_read(const char *dir, char *err, size_t errlen);
/* Writes DIR/manifest.json.tmp and renames it to DIR/manifest.json, so a killed writer never
 * leaves a manifest for shards that are not all there. 0, or -1 with err naming the file. */
int manifest_write(const char *dir, const manifest_info *m, char *err, size_t errlen);
/* Frees what manifest_read returned (NULL is fine). */
void manifest_free(manifest_info *m);
/* Frees one split's arrays: for a manifest built in memory, whose strings are borrowed. */
void manifest_split_free(manifest_split *sp);
/* The split named "train", "val" or "test" (only when the manifest has one), or NULL. */
const manifest_split *manifest_find_split(const manifest_info *m, const char *name);

#endif
