/* stage_msg.h - the MPI messages that ship a prepared dataset from rank 0 to ranks whose
 * node cannot read it (no shared filesystem), version 1.
 *
 *   1. every rank reports whether it can read the data folder (an all-reduce);
 *   2. rank 0 sends each needy rank STAGE_TAG_MANIFEST: the manifest.json bytes;
 *   3. the rank answers STAGE_TAG_WANT: a stage_want header + n u32 shard indices (into the
 *      manifest's train shards then val shards) that its cache lacks or holds damaged;
 *   4. rank 0 sends, per wanted shard, STAGE_TAG_FILE: the file's bytes; the rank checks
 *      size and CRC32C against the manifest before renaming it into the cache.
 * Ranks are served one after another, so rank 0's memory holds one shard at a time. */
#ifndef POLLEN_STAGE_MSG_H
#define POLLEN_STAGE_MSG_H

#include <stdint.h>

#define STAGE_VERSION 1u
enum { STAGE_TAG_MANIFEST = 7101, STAGE_TAG_WANT = 7102, STAGE_TAG_FILE = 7103 };
#define STAGE_MAX_MANIFEST (16u << 20)

typedef struct {
  uint32_t version; /* STAGE_VERSION */
  uint32_t count;   /* shard indices that follow */
} stage_want;

#endif
