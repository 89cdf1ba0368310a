/* staging.c - shipping shards to ranks without the data (see staging.h). */
#include "worker/staging.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/crc32c.h"
#include "proto/manifest.h"
#include "proto/shard.h"
#include "proto/stage_msg.h"

/* The shards of both splits, train first, as (name, bytes, crc). */
static int all_shards(const manifest_info *m, const manifest_shard **out) {
  int n = m->train.n_shards + m->val.n_shards;
  const manifest_shard **list = (const manifest_shard **)out;
  for (int i = 0; i < m->train.n_shards; i++) list[i] = &m->train.shards[i];
  for (int i = 0; i < m->val.n_shards; i++) list[m->train.n_shards + i] = &m->val.shards[i];
  return n;
}

/* Readable in place: the manifest parses and every shard has its recorded size. */
static int readable(const char *dir) {
  char err[512], path[4400];
  manifest_info *m = manifest_read(dir, err, sizeof err);
  if (!m) return 0;
  int ok = 1;
  const manifest_shard *list[4096];
  if (m->train.n_shards + m->val.n_shards > 4096) ok = 0;
  int n = ok ? all_shards(m, list) : 0;
  for (int i = 0; i < n && ok; i++) {
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, list[i]->file);
    ok = stat(path, &st) == 0 && (uint64_t)st.st_size == list[i]->bytes;
  }
  manifest_free(m);
  return ok;
}

static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = xfopen(path, "rb");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = xmalloc((size_t)size + 1);
  if (fread(buf, 1, (size_t)size, f) != (size_t)size) die("cannot read %s: %s", path, strerror(errno));
  fclose(f);
  *n = (size_t)size;
  return buf;
}

static void write_file_atomic(const char *path, const void *data, size_t n) {
  char tmp[4500];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("cannot write %s: %s; pass a writable node-local --cache-dir", tmp, strerror(errno));
  const char *p = data;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) die("cannot write %s: %s; check free space in --cache-dir", tmp, strerror(errno));
    p += w, n -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) die("cannot write %s: %s", tmp, strerror(errno));
  if (rename(tmp, path) != 0) die("cannot rename %s: %s", tmp, strerror(errno));
}

static void serve(const comm *c, int to, const char *data_dir) {
  char path[4400];
  snprintf(path, sizeof path, "%s/" MANIFEST_FILE, data_dir);
  size_t n;
  unsigned char *manifest = read_file(path, &n);
  if (n > STAGE_MAX_MANIFEST) die("%s is larger than %u bytes", path, STAGE_MAX_MANIFEST);
  comm_send(c, to, STAGE_TAG_MANIFEST, manifest, n);
  free(manifest);
  char err[512];
  manifest_info *m = manifest_read(data_dir, err, sizeof err);
  if (!m) die("%s", err);
  const manifest_shard *list[4096];
  int total = all_shards(m, list);
  uint32_t want_buf[4096 + 2];
  size_t got = comm_recv_any_len(c, to, STAGE_TAG_WANT, want_buf, sizeof want_buf);
  stage_want *w = (stage_want *)want_buf;
  if (got < sizeof *w || w->version != STAGE_VERSION || got != sizeof *w + w->count * sizeof(uint32_t))
    die("rank %d sent a malformed staging request; are all ranks running the same pollen?", to);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < w->count; i++) {
    uint32_t k = want_buf[2 + i];
    if ((int)k >= total) die("rank %d asked for shard %u of %d", to, k, total);
    snprintf(path, sizeof path, "%s/%s", data_dir, list[k]->file);
    unsigned char *data = read_file(path, &n);
    comm_send(c, to, STAGE_TAG_FILE, data, n);
    bytes += n;
    free(data);
  }
  log_info("staging: sent %u of %d shards (%.1f MB) to rank %d (%s)", w->count, total, bytes / 1e6, to,
           comm_host_of(c, to));
  manifest_free(m);
}

static char staged_dir[4096];

static const char *receive(const comm *c, const char *cache_dir) {
  unsigned char *manifest = xmalloc(STAGE_MAX_MANIFEST);
  size_t n = comm_recv_any_len(c, 0, STAGE_TAG_MANIFEST, manifest, STAGE_MAX_MANIFEST);
  snprintf(staged_dir, sizeof staged_dir, "%s/data-%016llx", cache_dir,
           (unsigned long long)hash_bytes(manifest, n, 0));
  if (make_dirs(staged_dir) != 0)
    die("cannot create %s: %s; pass a writable node-local --cache-dir", staged_dir, strerror(errno));
  char path[4400], err[512];
  snprintf(path, sizeof path, "%s/" MANIFEST_FILE, staged_dir);
  write_file_atomic(path, manifest, n);
  free(manifest);
  manifest_info *m = manifest_read(staged_dir, err, sizeof err);
  if (!m) die("staging: the manifest from rank 0 does not parse: %s", err);
  const manifest_shard *list[4096];
  int total = all_shards(m, list);
  uint32_t want[4096 + 2];
  stage_want *w = (stage_want *)want;
  w->version = STAGE_VERSION, w->count = 0;
  for (int k = 0; k < total; k++) {
    uint64_t bytes;
    uint32_t crc;
    snprintf(path, sizeof path, "%s/%s", staged_dir, list[k]->file);
    if (access(path, R_OK) == 0 && shard_file_checksum(path, &bytes, &crc, err, sizeof err) == 0 &&
        bytes == list[k]->bytes && crc == list[k]->crc32c)
      continue; /* cached by an earlier run and intact */
    want[2 + w->count++] = (uint32_t)k;
  }
  comm_send(c, 0, STAGE_TAG_WANT, want, sizeof *w + w->count * sizeof(uint32_t));
  for (uint32_t i = 0; i < w->count; i++) {
    const manifest_shard *s = list[want[2 + i]];
    unsigned char *data = xmalloc(s->bytes ? s->bytes : 1);
    comm_recv(c, 0, STAGE_TAG_FILE, data, s->bytes);
    if (crc32c_update(0, data, s->bytes) != s->crc32c)
      die("staging: shard %s arrived damaged (CRC32C mismatch); relaunch the job", s->file);
    snprintf(path, sizeof path, "%s/%s", staged_dir, s->file);
    write_file_atomic(path, data, s->bytes);
    free(data);
  }
  log_info("staging: rank %d (%s) has the data in %s (%u of %d shards received, the rest cached)", c->rank,
           c->host, staged_dir, w->count, total);
  manifest_free(m);
  return staged_dir;
}

const char *staging_prepare(comm *c, const char *data_dir, const char *cache_dir) {
  int here = readable(data_dir);
  if (c->world == 1 || !c->mpi) {
    if (!here) {
      char err[512];
      manifest_info *m = manifest_read(data_dir, err, sizeof err);
      if (!m) die("%s", err);
      manifest_free(m);
      die("%s: a shard listed in its manifest is missing or has the wrong size; run pollen prepare --force", data_dir);
    }
    return data_dir;
  }
  double *have = xcalloc((size_t)c->world, sizeof *have);
  have[c->rank] = here;
  comm_allreduce_sum_f64(c, have, c->world);
  if (!have[0]) {
    if (c->rank == 0) {
      char err[512];
      manifest_info *m = manifest_read(data_dir, err, sizeof err);
      if (!m) die("%s", err);
      die("%s: a shard listed in its manifest is missing or has the wrong size; run pollen prepare --force", data_dir);
    }
    comm_abort(c, EXIT_FAILED);
  }
  char cache[4096];
  if (cache_dir && cache_dir[0]) snprintf(cache, sizeof cache, "%s", cache_dir);
  else snprintf(cache, sizeof cache, "%s/pollen-cache", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  /* Transfers can take longer than a training step: widen the stall deadline meanwhile. */
  double saved_timeout = c->stall_timeout;
  c->stall_timeout = saved_timeout > 3600 ? saved_timeout : 3600;
  const char *result = data_dir;
  for (int r = 1; r < c->world; r++) {
    if (have[r]) continue;
    if (c->rank == 0) serve(c, r, data_dir);
    else if (c->rank == r) result = receive(c, cache);
  }
  comm_barrier(c);
  c->stall_timeout = saved_timeout;
  free(have);
  return result;
}
