/* train_msg.c - checks of the coordinator's messages to the workers (see train_msg.h). */
#include "proto/train_msg.h"

#include "base/core.h"

static int version_ok(uint32_t v, const char *what, char *err, size_t errlen) {
  if (v == TRAIN_MSG_VERSION) return 1;
  err_set(err, errlen, "%s message of version %u, this pollen speaks %u: the ranks run different "
          "pollen versions; install one version everywhere", what, v, TRAIN_MSG_VERSION);
  return 0;
}

int config_msg_check(const config_msg *m, size_t max_bytes, char *err, size_t errlen) {
  if (!version_ok(m->version, "config", err, errlen)) return -1;
  if (m->zero != 0 || m->json_bytes == 0 || m->json_bytes > max_bytes) {
    err_set(err, errlen, "config message of %llu bytes (at most %zu): malformed",
            (unsigned long long)m->json_bytes, max_bytes);
    return -1;
  }
  return 0;
}

int resume_msg_check(const resume_msg *m, int world, char *err, size_t errlen) {
  if (!version_ok(m->version, "resume", err, errlen)) return -1;
  int bad = m->found > 1 || m->world != world || m->step < 0 || m->epoch < 0 || m->step_in_epoch < 0 ||
            m->optimizer_steps < 0 || (m->found && m->saved_world < 1);
  if (bad) {
    err_set(err, errlen, "resume message for %d ranks at step %lld is malformed (this job has %d ranks)",
            m->world, (long long)m->step, world);
    return -1;
  }
  return 0;
}

int bn_stats_msg_check(const bn_stats_msg *m, int rank, size_t n_stats, char *err, size_t errlen) {
  if (!version_ok(m->version, "BN statistics", err, errlen)) return -1;
  if (m->rank != rank || m->n_stats != n_stats) {
    err_set(err, errlen, "BN statistics of rank %d with %llu values, expected rank %d with %zu: "
            "the ranks built different models", m->rank, (unsigned long long)m->n_stats, rank, n_stats);
    return -1;
  }
  return 0;
}
