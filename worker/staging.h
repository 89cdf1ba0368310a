/* staging.h - gets the prepared dataset to every rank: ranks that can read the data folder
 * use it in place; the others receive the manifest and shards from rank 0 over MPI
 * (proto/stage_msg.h), verified by size and CRC32C, into a node-local cache folder that is
 * reused by later runs. Multi-node jobs thus need no shared filesystem. */
#ifndef POLLEN_STAGING_H
#define POLLEN_STAGING_H

#include <stddef.h>

#include "worker/collective.h"

/* Collective. Returns the data folder this rank should read (data_dir itself, or
 * CACHE_DIR/<manifest digest>); cache_dir "" means $TMPDIR/pollen-cache (or /tmp). */
const char *staging_prepare(comm *c, const char *data_dir, const char *cache_dir);

#endif
