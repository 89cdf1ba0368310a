/* tb_events.c - TensorBoard event files: scalar Events (protobuf-c) in TFRecord framing. */
#include "proto/tb_events.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/tf_event.pb-c.h"
#include "proto/tfrecord.h"

struct tb_events {
  FILE *f;
  char *path;
};

static int write_event(FILE *f, const Tensorflow__Event *ev) {
  size_t n = tensorflow__event__get_packed_size(ev);
  unsigned char *buf = xmalloc(n ? n : 1);
  tensorflow__event__pack(ev, buf);
  int rc = tfrecord_write(f, buf, n) != 0 || fflush(f) != 0 ? -1 : 0;
  free(buf);
  return rc;
}

/* TensorBoard's writers name files after the host; only characters safe in a file name. */
static void host_name(char *out, size_t cap) {
  if (gethostname(out, cap) != 0) snprintf(out, cap, "localhost");
  out[cap - 1] = 0;
  for (char *c = out; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
          *c == '.' || *c == '_'))
      *c = '_';
}

tb_events *tb_events_open(const char *dir, char *err, size_t errlen) {
  if (make_dirs(dir) != 0) {
    err_set(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    return NULL;
  }
  char host[256];
  host_name(host, sizeof host);
  size_t cap = strlen(dir) + strlen(host) + 64;
  char *path = xmalloc(cap);
  int fd = -1;
  for (long long t = (long long)time(NULL); fd < 0; t++) {
    snprintf(path, cap, "%s/events.out.tfevents.%lld.%s.pollen", dir, t, host);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) {
      err_set(err, errlen, "cannot create %s: %s", path, strerror(errno));
      free(path);
      return NULL;
    }
  }
  tb_events *w = xcalloc(1, sizeof *w);
  w->path = path;
  w->f = fdopen(fd, "wb");
  Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
  ev.wall_time = time_unix();
  ev.what_case = TENSORFLOW__EVENT__WHAT_FILE_VERSION;
  ev.file_version = (char *)TB_EVENTS_FILE_VERSION;
  if (!w->f || write_event(w->f, &ev) != 0) {
    err_set(err, errlen, "cannot write %s: %s", path, strerror(errno));
    if (w->f) fclose(w->f);
    else close(fd);
    unlink(path);
    free(path);
    free(w);
    return NULL;
  }
  return w;
}

int tb_events_scalar(tb_events *w, const char *tag, int64_t step, float value) {
  Tensorflow__Summary__Value v = TENSORFLOW__SUMMARY__VALUE__INIT;
  v.tag = (char *)tag;
  v.value_case = TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
  v.simple_value = value;
  Tensorflow__Summary__Value *values[1] = {&v};
  Tensorflow__Summary s = TENSORFLOW__SUMMARY__INIT;
  s.n_value = 1;
  s.value = values;
  Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
  ev.wall_time = time_unix();
  ev.step = step;
  ev.what_case = TENSORFLOW__EVENT__WHAT_SUMMARY;
  ev.summary = &s;
  return write_event(w->f, &ev);
}

const char *tb_events_path(const tb_events *w) { return w->path; }

void tb_events_close(tb_events *w) {
  if (!w) return;
  fclose(w->f);
  free(w->path);
  free(w);
}

/* ---- the cut --------------------------------------------------------------------------- */

typedef struct {
  int64_t kept, dropped;
  int changed; /* the folder changed: sync it */
} cut_tally;

/* Cuts one file into tmp and renames it over the file (or removes the file when no event is
 * left). 0, or -1 with err set. */
static int cut_file(const char *path, const char *tmp, int64_t through_step, cut_tally *t, char *err,
                    size_t errlen) {
  tfrecord_reader *r = tfrecord_open(path, err, errlen);
  if (!r) return -1;
  FILE *out = fopen(tmp, "wb");
  if (!out) {
    err_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    tfrecord_close(r);
    return -1;
  }
  int64_t kept = 0, dropped = 0;
  int write_errno = 0;
  for (int64_t i = 0;; i++) {
    const unsigned char *data;
    size_t len;
    char why[512];
    int rc = tfrecord_next(r, &data, &len, why, sizeof why);
    if (rc == 0) break;
    if (rc < 0) { /* torn by a crash or a full disk: nothing after it can be trusted */
      dropped++;
      break;
    }
    Tensorflow__Event *ev = tensorflow__event__unpack(NULL, len, data);
    int version = ev && ev->what_case == TENSORFLOW__EVENT__WHAT_FILE_VERSION;
    int keep = ev && (version ? i == 0 : ev->step <= through_step);
    if (ev) tensorflow__event__free_unpacked(ev, NULL);
    if (!keep) {
      dropped++;
      continue;
    }
    if (!version) kept++;
    if (!write_errno && tfrecord_write(out, data, len) != 0) write_errno = errno;
  }
  tfrecord_close(r);
  if (!write_errno && (fflush(out) != 0 || fsync(fileno(out)) != 0)) write_errno = errno;
  fclose(out);
  t->kept += kept, t->dropped += dropped;
  if (write_errno) {
    unlink(tmp);
    err_set(err, errlen, "cannot rewrite %s: %s", path, strerror(write_errno));
    return -1;
  }
  if (kept == 0 || dropped == 0) unlink(tmp);
  if (kept == 0) {
    if (unlink(path) != 0) {
      err_set(err, errlen, "cannot remove %s: %s", path, strerror(errno));
      return -1;
    }
    t->changed = 1;
  } else if (dropped > 0) {
    if (rename(tmp, path) != 0) {
      err_set(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
      unlink(tmp);
      return -1;
    }
    t->changed = 1;
  }
  return 0;
}

int tb_events_cut(const char *dir, int64_t through_step, int64_t *kept, int64_t *dropped, char *err,
                  size_t errlen) {
  *kept = *dropped = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    err_set(err, errlen, "cannot read %s: %s", dir, strerror(errno));
    return -1;
  }
  /* The names first: renaming inside the folder while reading it may list a file twice. */
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strstr(e->d_name, "tfevents")) {
      if (n == cap) names = xrealloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
      names[n++] = xstrdup(e->d_name);
    }
  closedir(d);
  size_t plen = strlen(dir) + 16;
  char *tmp = xmalloc(plen), *path = NULL;
  snprintf(tmp, plen, "%s/cut.tmp", dir);
  cut_tally t = {0, 0, 0};
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t len = strlen(dir) + strlen(names[i]) + 2;
    path = xrealloc(path, len);
    snprintf(path, len, "%s/%s", dir, names[i]);
    rc = cut_file(path, tmp, through_step, &t, err, errlen);
  }
  /* The renames and removals last across a power cut only once the folder is synced. */
  if (t.changed) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) fsync(fd), close(fd);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  free(path);
  free(tmp);
  *kept = t.kept, *dropped = t.dropped;
  return rc;
}
