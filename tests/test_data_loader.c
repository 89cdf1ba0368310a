/* test_data_loader.c - prepare the bundled sample (folder and TFRecord input), read every
 * record back, and check the loader: same batches with 1 and 4 threads, eval determinism,
 * value range, labels, a short last batch and an epoch restarted half way. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/crc32c.h"
#include "proto/manifest.h"
#include "proto/plan.h"
#include "proto/shard.h"
#include "tests/check.h"
#include "worker/dataset_prepare.h"
#include "worker/loader.h"


#define SAMPLE "tests/data/flowers_sample"

static int count_images(const char *cls) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/%s", SAMPLE, cls);
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (strstr(e->d_name, ".jpg")) n++;
  if (d) closedir(d);
  return n;
}

/* (class name, crc32c of bytes) of every record of both splits, sorted. */
typedef struct { char cls[32]; uint32_t crc; size_t len; } rec_id;
static int cmp_rec(const void *a, const void *b) {
  const rec_id *x = a, *y = b;
  int c = strcmp(x->cls, y->cls);
  return c ? c : x->crc < y->crc ? -1 : x->crc > y->crc;
}

static int read_all(const char *dir, rec_id *out, int cap, int *per_class) {
  char err[SHARD_ERR_LEN];
  manifest_info *m = manifest_read(dir, err, sizeof err);
  CHECK(m, "manifest: %s", err);
  if (!m) return 0;
  int n = 0;
  shard_buf buf = {0};
  for (int s = 0; s < 2; s++) {
    const manifest_split *sp = manifest_find_split(m, s ? "val" : "train");
    int64_t split_total = 0;
    for (int j = 0; j < sp->n_shards; j++) {
      char path[512];
      snprintf(path, sizeof path, "%s/%s", dir, sp->shards[j].file);
      shard_reader *r = shard_open(path, err, sizeof err);
      CHECK(r, "%s", err);
      if (!r) continue;
      CHECK(shard_count(r) == sp->shards[j].count, "shard count matches manifest");
      for (int64_t i = 0; i < shard_count(r); i++) {
        shard_record rec;
        CHECK(shard_read(r, i, &buf, &rec, err, sizeof err) == 0, "%s", err);
        if (per_class) per_class[rec.label]++;
        if (n < cap) {
          snprintf(out[n].cls, sizeof out[n].cls, "%s", m->classes[rec.label]);
          out[n].crc = crc32c_update(0, rec.data, rec.len);
          out[n].len = rec.len;
          n++;
        }
      }
      split_total += shard_count(r);
      shard_close(r);
    }
    CHECK(split_total == sp->count, "split count");
  }
  free(buf.p);
  manifest_free(m);
  qsort(out, (size_t)n, sizeof *out, cmp_rec);
  return n;
}

static void test_prepare_sample(const char *tmp) {
  char out[256];
  snprintf(out, sizeof out, "%s/folder", tmp);
  prepare_opts o = {.src = SAMPLE, .out = out, .shards = 3, .val_fraction = 0.2, .seed = 5, .threads = 2};
  prepare_result r;
  dataset_prepare(&o, &r);
  CHECK(!r.already && r.train + r.val == 100 && r.val == 20, "counts %lld + %lld", (long long)r.train, (long long)r.val);
  char err[SHARD_ERR_LEN];
  manifest_info *m = manifest_read(out, err, sizeof err);
  CHECK(m && m->num_classes == 5 && !strcmp(m->classes[0], "daisy") && !strcmp(m->classes[4], "tulips"), "classes sorted");
  int per_class[5] = {0};
  rec_id ids[200];
  int n = read_all(out, ids, 200, per_class);
  CHECK(n == 100, "read back %d records", n);
  for (int k = 0; m && k < 5; k++) {
    CHECK(per_class[k] == count_images(m->classes[k]), "class %s: %d records vs %d files", m->classes[k], per_class[k],
          count_images(m->classes[k]));
    CHECK(m->val.per_class[k] == 4, "stratified: 4 val per class, got %lld", (long long)m->val.per_class[k]);
  }
  manifest_free(m);
  /* Same settings again: a no-op. */
  dataset_prepare(&o, &r);
  CHECK(r.already, "second run is 'already prepared'");
}

/* The names in one split of a prepared folder, sorted, newline-separated, into out. */
static int split_names(const char *dir, const char *split, char *out, size_t cap) {
  char err[SHARD_ERR_LEN];
  manifest_info *m = manifest_read(dir, err, sizeof err);
  REQUIRE(m, "manifest: %s", err);
  const manifest_split *sp = manifest_find_split(m, split);
  char *names[256];
  int n = 0;
  shard_buf buf = {0};
  for (int j = 0; sp && j < sp->n_shards; j++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, sp->shards[j].file);
    shard_reader *r = shard_open(path, err, sizeof err);
    REQUIRE(r, "%s", err);
    for (int64_t i = 0; i < shard_count(r) && n < 256; i++) {
      shard_record rec;
      REQUIRE(shard_read(r, i, &buf, &rec, err, sizeof err) == 0, "%s", err);
      names[n++] = xstrdup(rec.name);
    }
    shard_close(r);
  }
  free(buf.p);
  manifest_free(m);
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
      char *t = names[j];
      names[j] = names[j - 1], names[j - 1] = t;
    }
  size_t at = 0;
  out[0] = 0;
  for (int i = 0; i < n; i++) {
    at += (size_t)snprintf(out + at, at < cap ? cap - at : 0, "%s\n", names[i]);
    free(names[i]);
  }
  return n;
}

/* --test-fraction: a split by content hash, the same photos whatever the seed, in no other
 * split; without it, no test split (and older manifests read the same). */
static void test_test_split(const char *tmp) {
  char a[256], b[256], none[256];
  snprintf(a, sizeof a, "%s/test-a", tmp);
  snprintf(b, sizeof b, "%s/test-b", tmp);
  snprintf(none, sizeof none, "%s/folder", tmp); /* test_prepare_sample's, without a test split */
  prepare_opts o = {.src = SAMPLE, .out = a, .shards = 2, .val_fraction = 0.2, .test_fraction = 0.25, .seed = 5, .threads = 2};
  prepare_result r;
  dataset_prepare(&o, &r);
  CHECK(r.test > 10 && r.test < 40 && r.train + r.val + r.test == 100, "about a quarter in test: %lld",
        (long long)r.test);
  o.out = b, o.seed = 6;
  dataset_prepare(&o, &r);
  static char ta[16384], tb[16384], tr[16384], va[16384], vb[16384];
  int na = split_names(a, "test", ta, sizeof ta), nb = split_names(b, "test", tb, sizeof tb);
  CHECK(na == r.test && na == nb && !strcmp(ta, tb), "the same test photos with seeds 5 and 6 (%d, %d)", na, nb);
  split_names(a, "val", va, sizeof va), split_names(b, "val", vb, sizeof vb);
  CHECK(strcmp(va, vb) != 0, "the seed still moves photos between train and val");
  split_names(a, "train", tr, sizeof tr);
  for (char *line = strtok(ta, "\n"); line; line = strtok(NULL, "\n")) {
    char needle[300];
    snprintf(needle, sizeof needle, "%s\n", line);
    CHECK(!strstr(tr, needle) && !strstr(va, needle), "%s is in test and in train or val", line);
  }
  char err[SHARD_ERR_LEN];
  manifest_info *m = manifest_read(none, err, sizeof err);
  REQUIRE(m, "%s", err);
  CHECK(m->test_fraction == 0 && !manifest_find_split(m, "test"), "no --test-fraction, no test split");
  manifest_free(m);
}

/* The TFRecord fixture holds the first 2 photos of each class: same images and labels as a
 * folder of those photos. */
static void test_tfrecord_matches_folder(const char *tmp) {
  char fold[256], link[1024], target[1024], out1[256], out2[256];
  const char *classes[5] = {"daisy", "dandelion", "roses", "sunflowers", "tulips"};
  snprintf(fold, sizeof fold, "%s/first2", tmp);
  mkdir(fold, 0777);
  for (int k = 0; k < 5; k++) {
    snprintf(link, sizeof link, "%s/%s", fold, classes[k]);
    mkdir(link, 0777);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", SAMPLE, classes[k]);
    struct dirent **names;
    int m = scandir(dir, &names, NULL, alphasort), taken = 0;
    for (int i = 0; i < m; i++) {
      if (names[i]->d_name[0] != '.' && taken < 2) {
        char *cwd = getcwd(NULL, 0);
        snprintf(target, sizeof target, "%s/%s/%s", cwd, dir, names[i]->d_name);
        snprintf(link, sizeof link, "%s/%s/%s", fold, classes[k], names[i]->d_name);
        CHECK(symlink(target, link) == 0, "symlink");
        free(cwd);
        taken++;
      }
      free(names[i]);
    }
    free(names);
  }
  snprintf(out1, sizeof out1, "%s/from-folder", tmp);
  snprintf(out2, sizeof out2, "%s/from-tfrecord", tmp);
  prepare_opts o = {.src = fold, .out = out1, .shards = 2, .val_fraction = 0.5, .seed = 1, .threads = 2};
  prepare_result r;
  dataset_prepare(&o, &r);
  o.src = "tests/data/flowers_sample.tfrecord";
  o.out = out2;
  dataset_prepare(&o, &r);
  rec_id a[20], b[20];
  int na = read_all(out1, a, 20, NULL), nb = read_all(out2, b, 20, NULL);
  CHECK(na == 10 && nb == 10, "10 records each (%d, %d)", na, nb);
  for (int i = 0; i < na && i < nb; i++)
    CHECK(!strcmp(a[i].cls, b[i].cls) && a[i].crc == b[i].crc && a[i].len == b[i].len, "record %d same class and bytes", i);
}

/* One epoch of l in `order` into all (and labels, unless NULL); the number of batches. */
static int read_epoch(loader *l, int epoch, const int64_t *order, int64_t n, int batch, int S, float *all, int *labels) {
  size_t per = (size_t)S * S * 3;
  float *x = xmalloc(sizeof(float) * per * (size_t)batch);
  int *y = xmalloc(sizeof(int) * (size_t)batch), got, total = 0, batches = 0;
  loader_start_epoch(l, epoch, order, n);
  while ((got = loader_next(l, x, y)) > 0) {
    CHECK(total + got <= n && (got == batch || total + got == n), "batch sizes (%d)", got);
    if (total + got > n) break;
    memcpy(all + per * (size_t)total, x, sizeof(float) * per * (size_t)got);
    if (labels) memcpy(labels + total, y, sizeof(int) * (size_t)got);
    total += got;
    batches++;
  }
  CHECK(total == n, "epoch delivers %lld samples, got %d", (long long)n, total);
  CHECK(loader_next(l, x, y) == 0, "stays at end");
  free(x);
  free(y);
  return batches;
}

static float *run_epoch(const char *dir, int threads, int augment, int epoch, const int64_t *order, int64_t n, int batch,
                        int **labels_out, int *batches) {
  /* augment 2: the crop and flip, then TrivialAugmentWide and RandomErasing(0.5) */
  loader_config cfg = {.data_dir = dir, .split = "train", .image_size = 64, .batch = batch, .augment = augment > 0,
                       .trivial_augment = augment == 2, .random_erase = augment == 2 ? 0.5 : 0, .seed = 9,
                       .threads = threads};
  loader *l = loader_open(&cfg);
  float *all = xmalloc(sizeof(float) * 64 * 64 * 3 * (size_t)n);
  *labels_out = xmalloc(sizeof(int) * (size_t)n);
  *batches = read_epoch(l, epoch, order, n, batch, 64, all, *labels_out);
  loader_close(l);
  return all;
}

static void test_loader(const char *tmp) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/folder", tmp);
  loader_config cfg = {.data_dir = dir, .split = "train", .image_size = 64, .batch = 7, .augment = 1, .seed = 9, .threads = 2};
  loader *l = loader_open(&cfg);
  int64_t n = loader_size(l);
  CHECK(n == 80 && loader_num_classes(l) == 5 && !strcmp(loader_class_name(l, 1), "dandelion"), "loader size %lld", (long long)n);
  loader_close(l);
  int64_t order[80];
  plan_shuffle(3, 1, n, order);
  size_t per = 64 * 64 * 3;
  int *l1, *l4, *l4b, *le1, *le2, nb1, nb4;
  float *a = run_epoch(dir, 1, 1, 1, order, n, 7, &l1, &nb1);
  float *b = run_epoch(dir, 4, 1, 1, order, n, 7, &l4, &nb4);
  CHECK(nb1 == 12 && nb4 == 12, "12 batches of 7 (last short)");
  CHECK(!memcmp(a, b, sizeof(float) * per * (size_t)n) && !memcmp(l1, l4, sizeof(int) * (size_t)n),
        "train batches identical with 1 and 4 threads");
  float lo = 1e9f, hi = -1e9f;
  double mean = 0;
  for (size_t i = 0; i < per * (size_t)n; i++) {
    lo = fminf(lo, a[i]);
    hi = fmaxf(hi, a[i]);
    mean += a[i];
  }
  CHECK(lo >= -1.0f && hi <= 1.0f && hi - lo > 1.5f, "range [-1,1] and not flat: [%g, %g]", lo, hi);
  /* TrivialAugmentWide and RandomErasing: as deterministic, and they change the images. */
  int *lt1, *lt4, nbt;
  float *t1 = run_epoch(dir, 1, 2, 1, order, n, 7, &lt1, &nbt);
  float *t4 = run_epoch(dir, 4, 2, 1, order, n, 7, &lt4, &nbt);
  CHECK(!memcmp(t1, t4, sizeof(float) * per * (size_t)n), "TrivialAugmentWide + RandomErasing identical with 1 and 4 threads");
  CHECK(memcmp(t1, a, sizeof(float) * per * (size_t)n) != 0, "TrivialAugmentWide + RandomErasing change the batches");
  /* Decoded inline on the caller's OpenMP threads (1 and 3 of them): the same batches. */
  for (int omp = 1; omp <= 3; omp += 2) {
    threads_set(omp);
    loader_config ic = {.data_dir = dir, .split = "train", .image_size = 64, .batch = 7, .augment = 1,
                        .trivial_augment = 1, .random_erase = 0.5, .seed = 9, .inline_decode = 1};
    loader *il = loader_open(&ic);
    float *in = xmalloc(sizeof(float) * per * (size_t)n);
    int *lin = xmalloc(sizeof(int) * (size_t)n);
    CHECK(read_epoch(il, 1, order, n, 7, 64, in, lin) == 12, "inline: 12 batches");
    CHECK(!memcmp(in, t1, sizeof(float) * per * (size_t)n) && !memcmp(lin, lt1, sizeof(int) * (size_t)n),
          "inline decoding on %d OpenMP threads gives the decode threads' batches", omp);
    loader_close(il);
    free(in), free(lin);
  }
  threads_set(0);
  free(t1), free(t4), free(lt1), free(lt4);
  /* Another epoch: other crops of the same samples. */
  float *c = run_epoch(dir, 4, 1, 2, order, n, 7, &l4b, &nb4);
  CHECK(memcmp(a, c, sizeof(float) * per * (size_t)n) != 0 && !memcmp(l1, l4b, sizeof(int) * (size_t)n),
        "epoch 2 augments differently, labels equal");
  /* Eval: deterministic across runs, epochs and thread counts. */
  float *e1 = run_epoch(dir, 1, 0, 1, order, n, 16, &le1, &nb1);
  float *e2 = run_epoch(dir, 3, 0, 5, order, n, 16, &le2, &nb4);
  CHECK(!memcmp(e1, e2, sizeof(float) * per * (size_t)n), "eval preprocessing deterministic");
  /* Labels agree with the shard records the order points at. */
  char err[SHARD_ERR_LEN];
  manifest_info *m = manifest_read(dir, err, sizeof err);
  int64_t base = 0;
  shard_buf buf = {0};
  for (int j = 0; m && j < m->train.n_shards; j++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, m->train.shards[j].file);
    shard_reader *r = shard_open(path, err, sizeof err);
    for (int64_t i = 0; r && i < shard_count(r); i++) {
      shard_record rec;
      shard_read(r, i, &buf, &rec, err, sizeof err);
      for (int p = 0; p < n; p++)
        if (order[p] == base + i) CHECK(l1[p] == rec.label, "label of sample %lld", (long long)(base + i));
    }
    base += r ? shard_count(r) : 0;
    shard_close(r);
  }
  free(buf.p);
  manifest_free(m);
  /* Restart half way and an empty epoch. */
  cfg.threads = 3;
  l = loader_open(&cfg);
  float *x = xmalloc(sizeof(float) * per * 7);
  int y[7];
  loader_start_epoch(l, 1, order, n);
  CHECK(loader_next(l, x, y) == 7, "first batch");
  loader_start_epoch(l, 1, order + 10, 20);
  int got, total = 0;
  while ((got = loader_next(l, x, y)) > 0) {
    if (total == 0) CHECK(!memcmp(x, a + per * 10, sizeof(float) * per), "restarted epoch starts at its first sample");
    total += got;
  }
  CHECK(total == 20, "restarted epoch has 20 samples, got %d", total);
  loader_start_epoch(l, 2, order, 0);
  CHECK(loader_next(l, x, y) == 0, "empty epoch");
  loader_start_epoch(l, 3, order, n); /* close mid-epoch must join cleanly */
  loader_close(l);
  free(x);
  free(a);
  free(b);
  free(c);
  free(e1);
  free(e2);
  free(l1);
  free(l4);
  free(l4b);
  free(le1);
  free(le2);
}

/* One augmented epoch at 64 px with this RandomResizedCrop scale minimum and seed. */
static float *crop_epoch(const char *dir, double crop_scale, uint64_t seed, const int64_t *order, int64_t n) {
  loader_config cfg = {.data_dir = dir, .split = "train", .image_size = 64, .batch = 8, .augment = 1,
                       .crop_scale = crop_scale, .seed = seed, .threads = 2};
  loader *l = loader_open(&cfg);
  float *all = xmalloc(sizeof(float) * 64 * 64 * 3 * (size_t)n);
  read_epoch(l, 1, order, n, 8, 64, all, NULL);
  loader_close(l);
  return all;
}

/* Whether image a is image b or b mirrored left to right (S x S x 3). */
static int same_or_mirrored(const float *a, const float *b, int S) {
  if (!memcmp(a, b, sizeof(float) * (size_t)S * S * 3)) return 1;
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++)
      if (memcmp(a + ((size_t)y * S + x) * 3, b + ((size_t)y * S + S - 1 - x) * 3, 3 * sizeof(float))) return 0;
  return 1;
}

/* --crop-scale 1: every crop covers the largest box of allowed aspect ratio, so the batches
 * do not depend on the seed except for the flip (and, for a photo near 3:4 or square, a box
 * that rounds to a pixel short of it); the default scale 0.08 makes them depend on it. */
static void test_crop_scale(const char *tmp) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/folder", tmp);
  int64_t order[80];
  plan_shuffle(3, 1, 80, order);
  size_t per = 64 * 64 * 3;
  float *a = crop_epoch(dir, 1.0, 9, order, 80), *b = crop_epoch(dir, 1.0, 10, order, 80);
  float *c = crop_epoch(dir, 0, 9, order, 80), *d = crop_epoch(dir, 0, 10, order, 80);
  int whole = 0, varied = 0;
  for (int i = 0; i < 80; i++) {
    whole += same_or_mirrored(a + per * i, b + per * i, 64);
    varied += !same_or_mirrored(c + per * i, d + per * i, 64);
  }
  CHECK(whole >= 76, "crop scale 1: %d of 80 crops the same under another seed (up to the flip)", whole);
  CHECK(varied > 70, "crop scale 0.08: only %d of 80 crops change with the seed", varied);
  free(a), free(b), free(c), free(d);
}

/* Three epochs of TrivialAugmentWide + RandomErasing batches at size S through one loader with
 * a decoded-photo cache of `budget` bytes (0: none); the cache's photos and bytes after. */
static float *cached_epochs(const char *dir, int S, int threads, size_t budget, const int64_t *order, int64_t n,
                            int64_t *photos, size_t *bytes) {
  loader_config cfg = {.data_dir = dir, .split = "train", .image_size = S, .batch = 7, .augment = 1,
                       .trivial_augment = 1, .random_erase = 0.5, .seed = 9, .threads = threads};
  loader *l = loader_open(&cfg);
  loader_set_cache(l, budget);
  size_t per = (size_t)S * S * 3;
  float *all = xmalloc(sizeof(float) * per * (size_t)n * 3);
  for (int e = 0; e < 3; e++) read_epoch(l, e, order, n, 7, S, all + per * (size_t)n * e, NULL);
  *photos = loader_cached_photos(l, bytes);
  loader_close(l);
  return all;
}

/* The decoded-photo cache changes no byte of any batch, whether it holds every photo, some
 * (its budget spent) or none, with any thread count; at size 40 large crops want a reduced
 * DCT scale, which the cache keeps as entries of their own, at 64 few do. */
static void test_decoded_cache(const char *tmp) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/folder", tmp);
  int64_t order[80], photos;
  plan_shuffle(3, 1, 80, order);
  size_t bytes, small = 300 * 1024;
  for (int S = 40; S <= 64; S += 24) {
    size_t floats = (size_t)S * S * 3 * 80 * 3;
    float *none = cached_epochs(dir, S, 2, 0, order, 80, &photos, &bytes);
    CHECK(photos == 0 && bytes == 0, "no cache holds nothing");
    float *all = cached_epochs(dir, S, 1, 1 << 30, order, 80, &photos, &bytes);
    CHECK(!memcmp(none, all, sizeof(float) * floats), "size %d: the same batches with a cache holding every photo", S);
    /* Every photo read was kept, at whichever scales its crops wanted (at least 1/8 of each side). */
    CHECK(photos == 80 && bytes > (size_t)photos * 20 * 12 * 3, "size %d: %lld photos cached (%zu bytes)", S,
          (long long)photos, bytes);
    int64_t most = photos;
    float *some = cached_epochs(dir, S, 4, small, order, 80, &photos, &bytes);
    CHECK(!memcmp(none, some, sizeof(float) * floats), "size %d: the same batches with a cache too small for all", S);
    CHECK(photos > 0 && photos < most && bytes <= small, "size %d: the budget holds %lld photos in %zu bytes", S,
          (long long)photos, bytes);
    free(none), free(all), free(some);
  }
}

/* Threads of this process at nice value `nice` (/proc/self/task/T/stat: field 19). */
static int threads_at_nice(int nice) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  while (d && (e = readdir(d))) {
    char path[300], text[1024];
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
    if (!f) continue;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    const char *p = strrchr(text, ')'); /* fields 3.. follow the command name */
    int field = 2, value = 0;
    for (; p && *p && field < 19; p++)
      if (*p == ' ') field++, value = atoi(p + 1);
    n += field == 19 && value == nice;
  }
  if (d) closedir(d);
  return n;
}

/* --loader-nice: the decode threads, and only they, run at that nice value. */
static void test_loader_nice(const char *tmp) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s/folder", tmp);
  loader_config cfg = {.data_dir = dir, .split = "train", .image_size = 32, .batch = 4, .augment = 1, .seed = 1,
                       .threads = 3, .nice = 7};
  loader *l = loader_open(&cfg);
  int64_t order[8];
  for (int i = 0; i < 8; i++) order[i] = i;
  float *x = xmalloc(sizeof(float) * 32 * 32 * 3 * 4);
  int y[4];
  loader_start_epoch(l, 0, order, 8);
  while (loader_next(l, x, y) > 0) {
  }
  for (int wait = 0; wait < 200 && threads_at_nice(7) < 3; wait++) usleep(10000); /* each sets it as it starts */
  CHECK(threads_at_nice(7) == 3, "3 decode threads at nice 7, found %d", threads_at_nice(7));
  CHECK(getpriority(PRIO_PROCESS, 0) == 0, "the calling thread keeps nice 0");
  loader_close(l);
  free(x);
}

int main(void) {
  char tmp[64] = "/tmp/pollen-test-loader-XXXXXX";
  if (!mkdtemp(tmp)) return 1;
  log_set_quiet(1);
  test_prepare_sample(tmp);
  test_tfrecord_matches_folder(tmp);
  test_test_split(tmp);
  test_loader(tmp);
  test_decoded_cache(tmp);
  test_crop_scale(tmp);
  test_loader_nice(tmp);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
  if (check_failures) fprintf(stderr, "%d checks failed\n", check_failures);
  else printf("all data loader checks passed\n");
  return check_status();
}
