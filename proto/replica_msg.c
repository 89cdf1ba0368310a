/* replica_msg.c - checks of the replication header (see replica_msg.h). */
#include "proto/replica_msg.h"

#include "base/core.h"

const char *replica_kind_file(uint32_t kind) {
  return kind == REPLICA_KIND_CONFIG ? "config.json" : kind == REPLICA_KIND_METRICS ? "metrics.jsonl" : NULL;
}

int replica_msg_check(const replica_msg *m, char *err, size_t errlen) {
  if (m->version != REPLICA_VERSION) {
    err_set(err, errlen, "replica message of version %u, this pollen speaks %u: install one pollen version everywhere",
            m->version, REPLICA_VERSION);
    return -1;
  }
  int absent = m->flags == REPLICA_ABSENT;
  int bad = m->kind < REPLICA_KIND_CKPT || m->kind > REPLICA_KIND_END || (m->flags & ~REPLICA_ABSENT) ||
            m->step < 0 || m->size > REPLICA_MAX_BYTES || ((absent || m->kind == REPLICA_KIND_END) && m->size) ||
            (absent && m->crc) || (m->kind == REPLICA_KIND_CKPT && !absent && m->size == 0);
  if (bad) {
    err_set(err, errlen, "replica message (kind %u, step %lld, %llu bytes, flags %u) is malformed", m->kind,
            (long long)m->step, (unsigned long long)m->size, m->flags);
    return -1;
  }
  return 0;
}
