/* loader.c - background decode threads filling a bounded ring of batches.
 *
 * Workers claim single samples (not whole batches) so every thread stays busy even with a
 * short ring; a batch becomes ready when all its samples are written. The ring holds
 * LOADER_RING batches: workers run at most that far ahead of loader_next. */
#include "worker/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/manifest.h"
#include "proto/shard.h"
#include "worker/augment.h"

#define LOADER_RING 3
#define MAX_PIXELS (200ll * 1000 * 1000)

struct loader {
  loader_config cfg;
  char *dir, *split;
  manifest_info *m;
  int n_shards;
  shard_reader **shards;
  int64_t *first; /* first[j] = index of shard j's first sample; first[n_shards] = size */
  int64_t size;
  size_t image_floats;

  pthread_mutex_t mu;
  pthread_cond_t work_cv, ready_cv, idle_cv;
  pthread_t *threads;
  int n_threads, stop, busy;
  uint64_t gen, key;
  int64_t *order, n, next_pos, consumed, n_batches;
  float *slot_images[LOADER_RING];
  int *slot_labels[LOADER_RING];
  int64_t slot_batch[LOADER_RING], slot_done[LOADER_RING];
};

/* ---------------------------------------------------------------- preprocessing */

typedef struct {
  tjhandle tj;
  shard_buf buf;
  unsigned char *rgb;
  size_t rgb_cap;
  int *x0, *x1, *y0, *y1;
  float *wx, *wy;
  unsigned char *u8, *u8_scratch; /* S x S x 3: the crop as bytes, for TrivialAugmentWide */
} worker_scratch;

/* RandomResizedCrop's box in source pixels, torchvision's algorithm with Philox draws. */
static void random_resized_crop(int w, int h, uint64_t key, int64_t idx, int box[4]) {
  double area = (double)w * h, lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
  for (uint32_t a = 0; a < 10; a++) {
    float u[4];
    philox_uniform4(key, (uint32_t)idx, (uint32_t)((uint64_t)idx >> 32), a, u);
    double target = area * (0.08 + u[0] * (1.0 - 0.08));
    double ratio = exp(lr0 + u[1] * (lr1 - lr0));
    int cw = (int)lround(sqrt(target * ratio)), ch = (int)lround(sqrt(target / ratio));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      int i = (int)(u[2] * (h - ch + 1)), j = (int)(u[3] * (w - cw + 1));
      box[0] = j < w - cw ? j : w - cw;
      box[1] = i < h - ch ? i : h - ch;
      box[2] = cw;
      box[3] = ch;
      return;
    }
  }
  double in_ratio = (double)w / h;
  int cw = w, ch = h;
  if (in_ratio < 3.0 / 4.0) ch = (int)lround(w / (3.0 / 4.0));
  else if (in_ratio > 4.0 / 3.0) cw = (int)lround(h * (4.0 / 3.0));
  box[0] = (w - cw) / 2;
  box[1] = (h - ch) / 2;
  box[2] = cw;
  box[3] = ch;
}

int loader_decode_jpeg_checked(void *tj, const unsigned char *jpeg, size_t len, unsigned char *rgb, int w,
                               int h, char *why, size_t whylen) {
  if (tjDecompress2(tj, jpeg, (unsigned long)len, rgb, w, 0, h, TJPF_RGB, TJFLAG_STOPONWARNING) == 0) return 0;
  err_set(why, whylen, tjGetErrorCode(tj) == TJERR_WARNING ? "JPEG is damaged or truncated (%s)" : "JPEG does not decode (%s)",
          tjGetErrorStr2(tj));
  return -1;
}

/* Decodes jpeg and writes the S x S crop of source box (x0, y0, cw, ch) to out, bilinear,
 * normalised, optionally mirrored. strict: a photo from a user, checked by
 * loader_decode_jpeg_checked (why gets the reason); else a shard record, already checked by
 * prepare. */
static int crop_resize(worker_scratch *ws, const unsigned char *jpeg, size_t len, int w, int h, double bx,
                       double by, double bw, double bh, int S, int flip, float *out, int strict, char *why,
                       size_t whylen) {
  /* Smallest DCT scale at which the crop still spans >= S pixels both ways. */
  double need = fmax(S / bw, S / bh);
  tjscalingfactor sf = {1, 1};
  int nsf;
  tjscalingfactor *f = tjGetScalingFactors(&nsf);
  for (int i = 0; f && i < nsf; i++) {
    double s = (double)f[i].num / f[i].denom;
    if (s <= 1.0 && s >= need && s < (double)sf.num / sf.denom) sf = f[i];
  }
  int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  if (ws->rgb_cap < (size_t)sw * sh * 3) {
    ws->rgb = xrealloc(ws->rgb, (size_t)sw * sh * 3);
    ws->rgb_cap = (size_t)sw * sh * 3;
  }
  if (strict) {
    if (loader_decode_jpeg_checked(ws->tj, jpeg, len, ws->rgb, sw, sh, why, whylen) != 0) return -1;
  } else if (tjDecompress2(ws->tj, jpeg, len, ws->rgb, sw, 0, sh, TJPF_RGB, 0) != 0 &&
             tjGetErrorCode(ws->tj) != TJERR_WARNING) {
    /* A shard's records passed the check at prepare: a warning now is harmless (trailing
     * bytes), only a fatal error fails. */
    err_set(why, whylen, "%s", tjGetErrorStr2(ws->tj));
    return -1;
  }
  double fx = (double)sw / w, fy = (double)sh / h;
  double x0 = bx * fx, y0 = by * fy, stepx = bw * fx / S, stepy = bh * fy / S;
  for (int o = 0; o < S; o++) {
    double sx = x0 + (o + 0.5) * stepx - 0.5, sy = y0 + (o + 0.5) * stepy - 0.5;
    if (sx < 0) sx = 0;
    if (sx > sw - 1) sx = sw - 1;
    if (sy < 0) sy = 0;
    if (sy > sh - 1) sy = sh - 1;
    int xi = (int)sx, yi = (int)sy;
    ws->x0[o] = xi;
    ws->x1[o] = xi + 1 < sw ? xi + 1 : xi;
    ws->wx[o] = (float)(sx - xi);
    ws->y0[o] = yi;
    ws->y1[o] = yi + 1 < sh ? yi + 1 : yi;
    ws->wy[o] = (float)(sy - yi);
  }
  const float k = 1.0f / 127.5f;
  for (int oy = 0; oy < S; oy++) {
    const unsigned char *r0 = ws->rgb + (size_t)ws->y0[oy] * sw * 3, *r1 = ws->rgb + (size_t)ws->y1[oy] * sw * 3;
    float wy = ws->wy[oy];
    float *row = out + (size_t)oy * S * 3;
    for (int ox = 0; ox < S; ox++) {
      int a = ws->x0[ox] * 3, b = ws->x1[ox] * 3;
      float wx = ws->wx[ox];
      float *px = row + (size_t)(flip ? S - 1 - ox : ox) * 3;
      for (int c = 0; c < 3; c++) {
        float top = r0[a + c] + wx * (r0[b + c] - r0[a + c]);
        float bot = r1[a + c] + wx * (r1[b + c] - r1[a + c]);
        px[c] = (top + wy * (bot - top)) * k - 1.0f;
      }
    }
  }
  return 0;
}

/* TrivialAugmentWide works on bytes, as on torchvision's PIL images: the crop is rounded to
 * bytes (what a PIL resize returns), augmented, and normalised again. */
static void augment_bytes(worker_scratch *ws, float *img, int S, uint64_t key, int64_t sample) {
  size_t n = (size_t)S * S * 3;
  for (size_t i = 0; i < n; i++) {
    float v = nearbyintf((img[i] + 1.0f) * 127.5f);
    ws->u8[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
  }
  trivial_augment_wide(ws->u8, S, ws->u8_scratch, key, sample);
  for (size_t i = 0; i < n; i++) img[i] = ws->u8[i] * (1.0f / 127.5f) - 1.0f;
}

static void load_sample(loader *l, worker_scratch *ws, int64_t sample, float *out, int *label) {
  int lo = 0, hi = l->n_shards - 1;
  while (lo < hi) { /* last shard whose first sample <= sample */
    int mid = (lo + hi + 1) / 2;
    if (l->first[mid] <= sample) lo = mid;
    else hi = mid - 1;
  }
  shard_reader *sr = l->shards[lo];
  shard_record rec;
  char err[SHARD_ERR_LEN];
  char shown[4 * SHARD_ERR_LEN + 1], name[4 * SHARD_MAX_NAME + 1];
  if (shard_read(sr, sample - l->first[lo], &ws->buf, &rec, err, sizeof err) != 0)
    die("%s", name_escape(err, shown, sizeof shown));
  int w, h, ss, cs;
  if (tjDecompressHeader3(ws->tj, rec.data, rec.len, &w, &h, &ss, &cs) != 0 || w < 1 || h < 1 ||
      (long long)w * h > MAX_PIXELS)
    die("shard %s: record %lld (%s) is not a readable JPEG; regenerate the data with 'pollen prepare --force'",
        name_escape(shard_path(sr), shown, sizeof shown), (long long)(sample - l->first[lo]),
        name_escape(rec.name, name, sizeof name));
  int S = l->cfg.image_size, flip = 0;
  double bx, by, bw, bh;
  if (l->cfg.augment) {
    int box[4];
    random_resized_crop(w, h, l->key, sample, box);
    bx = box[0], by = box[1], bw = box[2], bh = box[3];
    float u[4];
    philox_uniform4(l->key, (uint32_t)sample, (uint32_t)((uint64_t)sample >> 32), 10, u);
    flip = u[0] < 0.5f;
  } else {
    double side = 0.875 * (w < h ? w : h); /* S pixels of a shorter side resized to S/0.875 */
    bw = bh = side;
    bx = (w - side) / 2;
    by = (h - side) / 2;
  }
  if (crop_resize(ws, rec.data, rec.len, w, h, bx, by, bw, bh, S, flip, out, 0, err, sizeof err) != 0)
    die("shard %s: record %lld (%s) does not decode (%s); regenerate the data with 'pollen prepare --force'",
        name_escape(shard_path(sr), shown, sizeof shown), (long long)(sample - l->first[lo]),
        name_escape(rec.name, name, sizeof name), err);
  if (l->cfg.augment && l->cfg.trivial_augment) augment_bytes(ws, out, S, l->key, sample);
  if (l->cfg.augment && l->cfg.random_erase > 0) random_erase(out, S, l->cfg.random_erase, l->key, sample);
  *label = rec.label;
}

/* ---------------------------------------------------------------- threads */

static void *worker_main(void *arg) {
  loader *l = arg;
  int S = l->cfg.image_size;
  worker_scratch ws = {0};
  ws.tj = tjInitDecompress();
  if (!ws.tj) die("cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
  ws.x0 = xmalloc(sizeof(int) * (size_t)S);
  ws.x1 = xmalloc(sizeof(int) * (size_t)S);
  ws.y0 = xmalloc(sizeof(int) * (size_t)S);
  ws.y1 = xmalloc(sizeof(int) * (size_t)S);
  ws.wx = xmalloc(sizeof(float) * (size_t)S);
  ws.wy = xmalloc(sizeof(float) * (size_t)S);
  ws.u8 = xmalloc((size_t)S * S * 3);
  ws.u8_scratch = xmalloc((size_t)S * S * 3);
  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (!l->stop && !(l->next_pos < l->n && l->next_pos / l->cfg.batch < l->consumed + LOADER_RING))
      pthread_cond_wait(&l->work_cv, &l->mu);
    if (l->stop) break;
    int64_t p = l->next_pos++, sample = l->order[p], b = p / l->cfg.batch;
    uint64_t gen = l->gen;
    int slot = (int)(b % LOADER_RING), k = (int)(p - b * l->cfg.batch);
    l->busy++;
    pthread_mutex_unlock(&l->mu);
    load_sample(l, &ws, sample, l->slot_images[slot] + (size_t)k * l->image_floats, &l->slot_labels[slot][k]);
    pthread_mutex_lock(&l->mu);
    l->busy--;
    if (gen == l->gen) {
      int64_t size = l->n - b * l->cfg.batch;
      if (size > l->cfg.batch) size = l->cfg.batch;
      if (++l->slot_done[slot] == size) {
        l->slot_batch[slot] = b;
        pthread_cond_broadcast(&l->ready_cv);
      }
    }
    if (!l->busy) pthread_cond_broadcast(&l->idle_cv);
  }
  pthread_mutex_unlock(&l->mu);
  tjDestroy(ws.tj);
  free(ws.buf.p);
  free(ws.rgb);
  free(ws.x0);
  free(ws.x1);
  free(ws.y0);
  free(ws.y1);
  free(ws.wx);
  free(ws.wy);
  free(ws.u8), free(ws.u8_scratch);
  return NULL;
}

loader *loader_open(const loader_config *cfg) {
  if (!cfg->data_dir || !cfg->split || (strcmp(cfg->split, "train") && strcmp(cfg->split, "val") && strcmp(cfg->split, "test")))
    die("loader: split must be \"train\", \"val\" or \"test\"");
  if (cfg->image_size < 8 || cfg->image_size > 4096) die("loader: image size %d out of range [8, 4096]", cfg->image_size);
  if (cfg->batch < 1 || cfg->batch > 65536) die("loader: batch %d out of range [1, 65536]", cfg->batch);
  loader *l = xcalloc(1, sizeof *l);
  l->cfg = *cfg;
  l->dir = xstrdup(cfg->data_dir);
  l->split = xstrdup(cfg->split);
  l->cfg.data_dir = l->dir;
  l->cfg.split = l->split;
  /* Messages name paths and files the manifest lists: untrusted text, printed escaped. */
  char err[SHARD_ERR_LEN], shown[4 * SHARD_ERR_LEN + 1], dir[4 * 1024 + 1];
  l->m = manifest_read(cfg->data_dir, err, sizeof err);
  if (!l->m) die("%s", name_escape(err, shown, sizeof shown));
  name_escape(cfg->data_dir, dir, sizeof dir);
  const manifest_split *sp = manifest_find_split(l->m, cfg->split);
  if (!sp || sp->count == 0)
    die("%s has no %s samples; prepare it with --%s-fraction above 0 ('pollen prepare --force ...')", dir, cfg->split,
        strcmp(cfg->split, "test") ? "val" : "test");
  l->n_shards = sp->n_shards;
  l->shards = xcalloc((size_t)l->n_shards, sizeof(shard_reader *));
  l->first = xcalloc((size_t)l->n_shards + 1, sizeof(int64_t));
  for (int j = 0; j < l->n_shards; j++) {
    size_t n = strlen(cfg->data_dir) + strlen(sp->shards[j].file) + 2;
    char *path = xmalloc(n);
    snprintf(path, n, "%s/%s", cfg->data_dir, sp->shards[j].file);
    l->shards[j] = shard_open(path, err, sizeof err);
    if (!l->shards[j]) die("%s", name_escape(err, shown, sizeof shown));
    shard_reader *s = l->shards[j];
    if (shard_count(s) != sp->shards[j].count)
      die("shard %s holds %lld records but %s/manifest.json says %lld; regenerate the data with 'pollen prepare --force'",
          name_escape(path, shown, sizeof shown), (long long)shard_count(s), dir, (long long)sp->shards[j].count);
    int same = shard_num_classes(s) == l->m->num_classes;
    for (int k = 0; same && k < l->m->num_classes; k++) same = !strcmp(shard_class_name(s, k), l->m->classes[k]);
    if (!same)
      die("shard %s has a different class table from %s/manifest.json; regenerate the data with 'pollen prepare --force'",
          name_escape(path, shown, sizeof shown), dir);
    l->first[j + 1] = l->first[j] + shard_count(s);
    free(path);
  }
  l->size = l->first[l->n_shards];
  if (l->size > INT32_MAX) die("%s: %lld samples is more than the loader supports", dir, (long long)l->size);
  l->image_floats = (size_t)cfg->image_size * cfg->image_size * 3;
  for (int s = 0; s < LOADER_RING; s++) {
    l->slot_images[s] = xmalloc_aligned(sizeof(float) * l->image_floats * (size_t)cfg->batch);
    l->slot_labels[s] = xmalloc(sizeof(int) * (size_t)cfg->batch);
    l->slot_batch[s] = -1;
  }
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->work_cv, NULL);
  pthread_cond_init(&l->ready_cv, NULL);
  pthread_cond_init(&l->idle_cv, NULL);
  l->n_threads = cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (l->n_threads < 1) l->n_threads = 1;
  l->threads = xcalloc((size_t)l->n_threads, sizeof(pthread_t));
  for (int t = 0; t < l->n_threads; t++)
    if (pthread_create(&l->threads[t], NULL, worker_main, l) != 0) die("loader: cannot start decode thread %d", t);
  return l;
}

int loader_size(const loader *l) { return (int)l->size; }
int loader_num_classes(const loader *l) { return l->m->num_classes; }
const char *loader_class_name(const loader *l, int k) {
  return k >= 0 && k < l->m->num_classes ? l->m->classes[k] : NULL;
}

void loader_start_epoch(loader *l, int epoch, const int64_t *order, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (order[i] < 0 || order[i] >= l->size)
      die("loader: sample index %lld out of range [0, %lld)", (long long)order[i], (long long)l->size);
  int64_t *copy = xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  if (n) memcpy(copy, order, sizeof(int64_t) * (size_t)n);
  pthread_mutex_lock(&l->mu);
  l->gen++; /* samples of the old epoch still being decoded are dropped */
  while (l->busy) pthread_cond_wait(&l->idle_cv, &l->mu);
  free(l->order);
  l->order = copy;
  l->n = n;
  l->next_pos = 0;
  l->consumed = 0;
  l->n_batches = (n + l->cfg.batch - 1) / l->cfg.batch;
  l->key = hash_mix(hash_mix(l->cfg.seed, 0x6175676dull /* "augm" */), (uint64_t)(uint32_t)epoch);
  for (int s = 0; s < LOADER_RING; s++) {
    l->slot_batch[s] = -1;
    l->slot_done[s] = 0;
  }
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
}

int loader_next(loader *l, float *images, int *labels) {
  pthread_mutex_lock(&l->mu);
  if (l->consumed >= l->n_batches) {
    pthread_mutex_unlock(&l->mu);
    return 0;
  }
  int64_t b = l->consumed;
  int slot = (int)(b % LOADER_RING);
  while (l->slot_batch[slot] != b) pthread_cond_wait(&l->ready_cv, &l->mu);
  pthread_mutex_unlock(&l->mu);
  /* The slot is ours until consumed moves past b: workers do not refill it before then. */
  int64_t size = l->n - b * l->cfg.batch;
  if (size > l->cfg.batch) size = l->cfg.batch;
  memcpy(images, l->slot_images[slot], sizeof(float) * l->image_floats * (size_t)size);
  memcpy(labels, l->slot_labels[slot], sizeof(int) * (size_t)size);
  pthread_mutex_lock(&l->mu);
  l->slot_batch[slot] = -1;
  l->slot_done[slot] = 0;
  l->consumed++;
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  return (int)size;
}

void loader_close(loader *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_broadcast(&l->work_cv);
  pthread_mutex_unlock(&l->mu);
  for (int t = 0; t < l->n_threads; t++) pthread_join(l->threads[t], NULL);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->work_cv);
  pthread_cond_destroy(&l->ready_cv);
  pthread_cond_destroy(&l->idle_cv);
  for (int s = 0; s < LOADER_RING; s++) {
    free(l->slot_images[s]);
    free(l->slot_labels[s]);
  }
  for (int j = 0; j < l->n_shards; j++) shard_close(l->shards[j]);
  free(l->shards);
  free(l->first);
  free(l->threads);
  free(l->order);
  manifest_free(l->m);
  free(l->dir);
  free(l->split);
  free(l);
}

/* ---------------------------------------------------------------- single images */

int loader_preprocess_jpeg(const unsigned char *jpeg, size_t len, int size, float *out, char *err,
                           size_t errlen) {
  worker_scratch ws = {0};
  int rc = -1, w, h, ss, cs;
  ws.tj = tjInitDecompress();
  if (!ws.tj) {
    snprintf(err, errlen, "cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
    return -1;
  }
  ws.x0 = xmalloc(sizeof(int) * (size_t)size);
  ws.x1 = xmalloc(sizeof(int) * (size_t)size);
  ws.y0 = xmalloc(sizeof(int) * (size_t)size);
  ws.y1 = xmalloc(sizeof(int) * (size_t)size);
  ws.wx = xmalloc(sizeof(float) * (size_t)size);
  ws.wy = xmalloc(sizeof(float) * (size_t)size);
  if (tjDecompressHeader3(ws.tj, jpeg, len, &w, &h, &ss, &cs) != 0 || w < 1 || h < 1 ||
      (long long)w * h > MAX_PIXELS) {
    snprintf(err, errlen, "not a readable JPEG");
  } else {
    double side = 0.875 * (w < h ? w : h); /* the same eval crop as load_sample */
    if (crop_resize(&ws, jpeg, len, w, h, (w - side) / 2, (h - side) / 2, side, side, size, 0, out, 1, err, errlen) == 0)
      rc = 0;
  }
  tjDestroy(ws.tj);
  free(ws.rgb), free(ws.x0), free(ws.x1), free(ws.y0), free(ws.y1), free(ws.wx), free(ws.wy);
  return rc;
}
