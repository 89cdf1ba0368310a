/* replica_msg.h - the MPI messages that copy a job's checkpoints and records from one rank's
 * node-local job folder to another's (daemon/replica.h), version 1.
 *
 * Every file travels as a replica_msg header (REPLICA_TAG_HEAD) and then `size` bytes
 * (REPLICA_TAG_BODY, in chunks), on a communicator of their own, so they never mix with the
 * gradients. The receiver checks the header before it allocates anything and the body's
 * CRC32C before it writes anything; a checkpoint is verified again as a whole file
 * (proto/ckpt_format.h) before it gets its final name.
 *
 *   replication  rank 0 -> the replica rank, at step boundaries, after each checkpoint
 *                write: the checkpoint, then config.json and metrics.jsonl (travelling
 *                with that step); REPLICA_KIND_END when the job ends (the receiver stops).
 *   fetch        at start-up, the rank holding the newest valid checkpoint -> rank 0 when
 *                rank 0 lacks it: the checkpoint, config.json, metrics.jsonl, each header
 *                flagged REPLICA_ABSENT (no body) when the sender has no such file. */
#ifndef POLLEN_REPLICA_MSG_H
#define POLLEN_REPLICA_MSG_H

#include <stddef.h>
#include <stdint.h>

#define REPLICA_VERSION 1u
enum { REPLICA_TAG_HEAD = 7301, REPLICA_TAG_BODY = 7302 };
enum { REPLICA_KIND_CKPT = 1, REPLICA_KIND_CONFIG = 2, REPLICA_KIND_METRICS = 3, REPLICA_KIND_END = 4 };
#define REPLICA_ABSENT 1u
/* Bigger than any checkpoint of these models by far; a header above it is not ours. */
#define REPLICA_MAX_BYTES ((uint64_t)64 << 30)
/* The body's pieces: a checkpoint never holds the link for long at a stretch. */
#define REPLICA_CHUNK_BYTES ((size_t)4 << 20)

typedef struct {
  uint32_t version; /* REPLICA_VERSION */
  uint32_t kind;    /* REPLICA_KIND_* */
  int64_t step;     /* the checkpoint's step (config and records: the one they travel with) */
  uint64_t size;    /* body bytes that follow (0 with REPLICA_ABSENT and for END) */
  uint32_t crc;     /* CRC32C of the body */
  uint32_t flags;   /* REPLICA_ABSENT or 0 */
  int64_t sent_us;  /* unix time (microseconds) the checkpoint was complete on the sender */
} replica_msg;

/* 0, or -1 with a one-line reason in err. */
int replica_msg_check(const replica_msg *m, char *err, size_t errlen);
/* The job-folder file of a kind other than CKPT: "config.json", "metrics.jsonl"; NULL else. */
const char *replica_kind_file(uint32_t kind);

#endif
