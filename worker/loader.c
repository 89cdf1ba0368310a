/* loader.c - background decode threads filling a bounded ring of batches, or (inline_decode)
 * each batch decoded when it is asked for, on the caller's OpenMP threads.
 *
 * Workers claim single samples (not whole batches) so every thread stays busy even with a
 * short ring; a batch becomes ready when all its samples are written. The ring holds
 * LOADER_RING batches: workers run at most that far ahead of loader_next. */
#include "worker/loader.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/manifest.h"
#include "proto/shard.h"
#include "worker/augment.h"

#define LOADER_RING 3
#define MAX_PIXELS (200ll * 1000 * 1000)

/* The DCT scales m/8 (m = 1..8) a crop can be decoded at: a photo has one cache entry per
 * scale its crops asked for. */
#define CACHE_SCALES 8

/* A photo (w x h) decoded at one DCT scale (sw x sh), kept for the epochs after
 * (loader_set_cache). */
typedef struct {
  int w, h, sw, sh, label;
  unsigned char rgb[]; /* sw x sh x 3 */
} decoded_photo;

struct loader {
  loader_config cfg;
  char *dir, *split;
  manifest_info *m;
  int n_shards;
  shard_reader **shards;
  int64_t *first; /* first[j] = index of shard j's first sample; first[n_shards] = size */
  int64_t size;
  size_t image_floats;
  /* cache[i * CACHE_SCALES + m - 1]: sample i decoded at scale m/8, or NULL; published once,
   * read lock-free by any thread. */
  _Atomic(decoded_photo *) *cache;
  size_t cache_budget;
  atomic_size_t cache_used;

  pthread_mutex_t mu;
  pthread_cond_t work_cv, ready_cv, idle_cv;
  pthread_t *threads;
  int n_threads, stop, busy;
  uint64_t gen, key;
  int64_t *order, n, next_pos, consumed, n_batches;
  float *slot_images[LOADER_RING];
  int *slot_labels[LOADER_RING];
  int64_t slot_batch[LOADER_RING], slot_done[LOADER_RING];
  struct worker_scratch *inline_ws; /* inline_decode: one per OpenMP thread */
  int n_inline_ws;
};

/* ---------------------------------------------------------------- preprocessing */

typedef struct worker_scratch {
  tjhandle tj;
  shard_buf buf;
  unsigned char *rgb;
  size_t rgb_cap;
  int *x0, *x1, *y0, *y1; /* x0, x1: the output columns' source pixels, as offsets (x * 3) into a row */
  float *wx, *wy;
  float *rows[2]; /* S x 3 (+1): two source rows interpolated across (resample_crop) */
  float *src_row; /* one source row as floats (+1 lane, zero) */
  size_t src_cap;
  int row_y[2];
  unsigned char *u8, *u8_scratch; /* S x S x 3: the crop as bytes, for TrivialAugmentWide */
} worker_scratch;

/* A decoder and the buffers for S x S outputs; -1 when TurboJPEG does not start. */
static int scratch_open(worker_scratch *ws, int S) {
  memset(ws, 0, sizeof *ws);
  ws->tj = tjInitDecompress();
  if (!ws->tj) return -1;
  ws->x0 = xmalloc(sizeof(int) * (size_t)S);
  ws->x1 = xmalloc(sizeof(int) * (size_t)S);
  ws->y0 = xmalloc(sizeof(int) * (size_t)S);
  ws->y1 = xmalloc(sizeof(int) * (size_t)S);
  ws->wx = xmalloc(sizeof(float) * (size_t)S);
  ws->wy = xmalloc(sizeof(float) * (size_t)S);
  for (int i = 0; i < 2; i++) ws->rows[i] = xmalloc(sizeof(float) * ((size_t)S * 3 + 1));
  ws->u8 = xmalloc((size_t)S * S * 3);
  ws->u8_scratch = xmalloc((size_t)S * S * 3);
  return 0;
}

static void scratch_close(worker_scratch *ws) {
  tjDestroy(ws->tj);
  free(ws->buf.p);
  free(ws->rgb);
  free(ws->x0), free(ws->x1), free(ws->y0), free(ws->y1);
  free(ws->wx), free(ws->wy);
  free(ws->rows[0]), free(ws->rows[1]), free(ws->src_row);
  free(ws->u8), free(ws->u8_scratch);
}

/* RandomResizedCrop's box in source pixels, torchvision's algorithm (scale (min_scale, 1),
 * ratio (3/4, 4/3)) with Philox draws. */
static void random_resized_crop(int w, int h, double min_scale, uint64_t key, int64_t idx, int box[4]) {
  double area = (double)w * h, lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
  for (uint32_t a = 0; a < 10; a++) {
    float u[4];
    philox_uniform4(key, (uint32_t)idx, (uint32_t)((uint64_t)idx >> 32), a, u);
    double target = area * (min_scale + u[0] * (1.0 - min_scale));
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

/* The smallest DCT scale at which a crop of bw x bh source pixels still spans >= S pixels
 * both ways (1/1 when none is smaller). */
static tjscalingfactor dct_scale_for(double bw, double bh, int S) {
  double need = fmax(S / bw, S / bh);
  tjscalingfactor sf = {1, 1};
  int nsf;
  tjscalingfactor *f = tjGetScalingFactors(&nsf);
  for (int i = 0; f && i < nsf; i++) {
    double s = (double)f[i].num / f[i].denom;
    if (s <= 1.0 && s >= need && s < (double)sf.num / sf.denom) sf = f[i];
  }
  return sf;
}

/* Decodes jpeg (w x h) at scale sf into rgb (TJSCALED size). strict: a photo from a user,
 * checked by loader_decode_jpeg_checked (why gets the reason); else a shard record, already
 * checked by prepare. */
static int decode_scaled(tjhandle tj, const unsigned char *jpeg, size_t len, int w, int h, tjscalingfactor sf,
                         unsigned char *rgb, int strict, char *why, size_t whylen) {
  int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  if (strict) return loader_decode_jpeg_checked(tj, jpeg, len, rgb, sw, sh, why, whylen);
  if (tjDecompress2(tj, jpeg, len, rgb, sw, 0, sh, TJPF_RGB, 0) != 0 && tjGetErrorCode(tj) != TJERR_WARNING) {
    /* A shard's records passed the check at prepare: a warning now is harmless (trailing
     * bytes), only a fatal error fails. */
    err_set(why, whylen, "%s", tjGetErrorStr2(tj));
    return -1;
  }
  return 0;
}

static unsigned char *scratch_rgb(worker_scratch *ws, size_t bytes) {
  if (ws->rgb_cap < bytes) {
    ws->rgb = xrealloc(ws->rgb, bytes);
    ws->rgb_cap = bytes;
  }
  return ws->rgb;
}

/* Source row y of rgb (sw wide) interpolated across to the S output columns (the columns'
 * sources already mirrored when flipping), in one of the scratch's two row buffers: the one
 * not holding row `keep`, which the caller still needs. Rows are reused by the output rows
 * that share them (an upscaled crop reads each source row for several output rows). The row
 * is made floats first, so each output pixel is two 4-float loads and one 4-float store (the
 * 4th lane a neighbour's, overwritten by the next pixel; the row's extra zero lane serves the
 * last): vector code from plain C, the same values as interpolating the bytes. */
static const float *across_row(worker_scratch *ws, const unsigned char *rgb, int sw, int y, int S, int keep) {
  for (int i = 0; i < 2; i++)
    if (ws->row_y[i] == y) return ws->rows[i];
  int slot = ws->row_y[0] == keep ? 1 : 0;
  const unsigned char *r = rgb + (size_t)y * sw * 3;
  float *src = ws->src_row, *dst = ws->rows[slot];
  for (size_t i = 0; i < (size_t)sw * 3; i++) src[i] = r[i];
  const int *x0 = ws->x0, *x1 = ws->x1;
  const float *wx = ws->wx;
  for (int ox = 0; ox < S; ox++) {
    const float *pa = src + x0[ox], *pb = src + x1[ox];
    float px[4];
    for (int c = 0; c < 4; c++) px[c] = pa[c] + wx[ox] * (pb[c] - pa[c]);
    memcpy(dst + (size_t)ox * 3, px, sizeof px);
  }
  ws->row_y[slot] = y;
  return dst;
}

/* Writes the S x S crop of source box (bx, by, bw, bh), in the coordinates of the w x h photo,
 * to out: bilinear from rgb, the photo decoded at sw x sh (across, then down); normalised,
 * optionally mirrored. */
static void resample_crop(worker_scratch *ws, const unsigned char *rgb, int sw, int sh, int w, int h, double bx,
                          double by, double bw, double bh, int S, int flip, float *out) {
  double fx = (double)sw / w, fy = (double)sh / h;
  double x0 = bx * fx, y0 = by * fy, stepx = bw * fx / S, stepy = bh * fy / S;
  for (int o = 0; o < S; o++) {
    double sx = x0 + (o + 0.5) * stepx - 0.5, sy = y0 + (o + 0.5) * stepy - 0.5;
    if (sx < 0) sx = 0;
    if (sx > sw - 1) sx = sw - 1;
    if (sy < 0) sy = 0;
    if (sy > sh - 1) sy = sh - 1;
    int xi = (int)sx, yi = (int)sy, ox = flip ? S - 1 - o : o;
    ws->x0[ox] = xi * 3;
    ws->x1[ox] = (xi + 1 < sw ? xi + 1 : xi) * 3;
    ws->wx[ox] = (float)(sx - xi);
    ws->y0[o] = yi;
    ws->y1[o] = yi + 1 < sh ? yi + 1 : yi;
    ws->wy[o] = (float)(sy - yi);
  }
  ws->row_y[0] = ws->row_y[1] = -1;
  if (ws->src_cap < (size_t)sw * 3 + 1) {
    ws->src_cap = (size_t)sw * 3 + 1;
    ws->src_row = xrealloc(ws->src_row, sizeof(float) * ws->src_cap);
  }
  ws->src_row[(size_t)sw * 3] = 0; /* the 4th lane of the last pixel */
  const float k = 1.0f / 127.5f;
  for (int oy = 0; oy < S; oy++) {
    const float *top = across_row(ws, rgb, sw, ws->y0[oy], S, ws->y1[oy]);
    const float *bot = across_row(ws, rgb, sw, ws->y1[oy], S, ws->y0[oy]);
    float wy = ws->wy[oy], *row = out + (size_t)oy * S * 3;
    for (int i = 0; i < S * 3; i++) row[i] = (top[i] + wy * (bot[i] - top[i])) * k - 1.0f;
  }
}

/* TrivialAugmentWide works on bytes, as on torchvision's PIL images: the crop is rounded to
 * bytes (what a PIL resize returns), augmented, and normalised again. */
static void augment_bytes(worker_scratch *ws, float *img, int S, uint64_t key, int64_t sample) {
  size_t n = (size_t)S * S * 3;
  /* Rounded half to even by adding and taking away 1.5 * 2^23 (as nearbyintf, exact for the
   * crop's values, within [-1, 1]), then clamped as integers: a loop the compiler vectorises,
   * once the byte stores cannot alias ws->u8 itself (hence the local pointer). */
  const float to_even = 12582912.0f;
  unsigned char *u8 = ws->u8;
  for (size_t i = 0; i < n; i++) {
    int q = (int)(((img[i] + 1.0f) * 127.5f + to_even) - to_even);
    u8[i] = (unsigned char)(q < 0 ? 0 : q > 255 ? 255 : q);
  }
  trivial_augment_wide(u8, S, ws->u8_scratch, key, sample);
  for (size_t i = 0; i < n; i++) img[i] = u8[i] * (1.0f / 127.5f) - 1.0f;
}

static int shard_of(const loader *l, int64_t sample) {
  int lo = 0, hi = l->n_shards - 1;
  while (lo < hi) { /* last shard whose first sample <= sample */
    int mid = (lo + hi + 1) / 2;
    if (l->first[mid] <= sample) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* Dies naming the shard and record of sample: it is damaged and prepare must run again. */
static _Noreturn void die_record(const loader *l, int64_t sample, const shard_record *rec, const char *what) {
  int j = shard_of(l, sample);
  char shown[4 * SHARD_ERR_LEN + 1], name[4 * SHARD_MAX_NAME + 1];
  die("shard %s: record %lld (%s) %s; regenerate the data with 'pollen prepare --force'",
      name_escape(shard_path(l->shards[j]), shown, sizeof shown), (long long)(sample - l->first[j]),
      name_escape(rec->name, name, sizeof name), what);
}

/* Reads sample's record into ws->buf and its photo's size from the JPEG header. */
static void read_record(loader *l, worker_scratch *ws, int64_t sample, shard_record *rec, int *w, int *h) {
  int j = shard_of(l, sample), ss, cs;
  char err[SHARD_ERR_LEN], shown[4 * SHARD_ERR_LEN + 1];
  if (shard_read(l->shards[j], sample - l->first[j], &ws->buf, rec, err, sizeof err) != 0)
    die("%s", name_escape(err, shown, sizeof shown));
  if (tjDecompressHeader3(ws->tj, rec->data, rec->len, w, h, &ss, &cs) != 0 || *w < 1 || *h < 1 ||
      (long long)*w * *h > MAX_PIXELS)
    die_record(l, sample, rec, "is not a readable JPEG");
}

/* The source box a sample is cropped from: RandomResizedCrop and a coin for the flip when
 * training, the center crop for evaluation. */
static void sample_box(const loader *l, int64_t sample, int w, int h, double box[4], int *flip) {
  *flip = 0;
  if (l->cfg.augment) {
    int b[4];
    random_resized_crop(w, h, l->cfg.crop_scale > 0 ? l->cfg.crop_scale : LOADER_CROP_SCALE_DEFAULT, l->key, sample, b);
    for (int i = 0; i < 4; i++) box[i] = b[i];
    float u[4];
    philox_uniform4(l->key, (uint32_t)sample, (uint32_t)((uint64_t)sample >> 32), 10, u);
    *flip = u[0] < 0.5f;
  } else {
    double side = 0.875 * (w < h ? w : h); /* S pixels of a shorter side resized to S/0.875 */
    box[0] = (w - side) / 2;
    box[1] = (h - side) / 2;
    box[2] = box[3] = side;
  }
}

/* What a cache entry of sw x sh pixels takes, as the budget counts it. */
static size_t photo_bytes(int sw, int sh) { return sizeof(decoded_photo) + (size_t)sw * sh * 3; }

/* m of a DCT scale m/8 (TurboJPEG's scales up to 1/1 are all eighths). */
static int scale_eighths(tjscalingfactor sf) { return sf.num * 8 / sf.denom; }

static _Atomic(decoded_photo *) *cache_slot(const loader *l, int64_t sample, int eighths) {
  return &l->cache[sample * CACHE_SCALES + eighths - 1];
}

/* Any entry of sample (for its size and label), or NULL. */
static decoded_photo *cache_any(const loader *l, int64_t sample) {
  for (int m = CACHE_SCALES; l->cache && m >= 1; m--) {
    decoded_photo *d = atomic_load_explicit(cache_slot(l, sample, m), memory_order_acquire);
    if (d) return d;
  }
  return NULL;
}

/* A new cache entry for a w x h photo decoded at sw x sh, or NULL once the cache's budget is
 * spent (then the photo is decoded afresh each time; entries are never evicted). */
static decoded_photo *cache_reserve(loader *l, int w, int h, int sw, int sh) {
  if (!l->cache) return NULL;
  size_t bytes = photo_bytes(sw, sh);
  if (atomic_fetch_add(&l->cache_used, bytes) + bytes > l->cache_budget) {
    atomic_fetch_sub(&l->cache_used, bytes);
    return NULL;
  }
  decoded_photo *d = xmalloc(bytes);
  d->w = w, d->h = h, d->sw = sw, d->sh = sh;
  return d;
}

/* Publishes d as sample's entry at its scale; a thread that decoded the same one first keeps
 * its own. */
static void cache_publish(loader *l, int64_t sample, int eighths, decoded_photo *d) {
  decoded_photo *none = NULL;
  if (atomic_compare_exchange_strong_explicit(cache_slot(l, sample, eighths), &none, d, memory_order_release,
                                              memory_order_relaxed))
    return;
  atomic_fetch_sub(&l->cache_used, photo_bytes(d->sw, d->sh));
  free(d);
}

/* Phases: the photo's size (cache or header), its box, the pixels at the box's DCT scale
 * (cache, or a decode at that scale), the resampled crop, then the byte and float
 * augmentations. The cache keeps each scale's own decode, so the result never depends on what
 * it holds. */
static void load_sample(loader *l, worker_scratch *ws, int64_t sample, float *out, int *label) {
  decoded_photo *known = cache_any(l, sample), *cached = NULL;
  shard_record rec = {0};
  int w, h;
  if (known) w = known->w, h = known->h, *label = known->label;
  else read_record(l, ws, sample, &rec, &w, &h), *label = rec.label;
  int S = l->cfg.image_size, flip;
  double box[4];
  sample_box(l, sample, w, h, box, &flip);
  tjscalingfactor sf = dct_scale_for(box[2], box[3], S);
  int eighths = scale_eighths(sf), sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  if (l->cache) cached = atomic_load_explicit(cache_slot(l, sample, eighths), memory_order_acquire);
  const unsigned char *rgb;
  decoded_photo *fresh = NULL;
  if (cached) {
    rgb = cached->rgb;
  } else {
    if (known) read_record(l, ws, sample, &rec, &w, &h); /* a scale not cached yet */
    fresh = cache_reserve(l, w, h, sw, sh);
    unsigned char *dst = fresh ? fresh->rgb : scratch_rgb(ws, (size_t)sw * sh * 3);
    char err[SHARD_ERR_LEN], what[SHARD_ERR_LEN + 32];
    if (decode_scaled(ws->tj, rec.data, rec.len, w, h, sf, dst, 0, err, sizeof err) != 0) {
      snprintf(what, sizeof what, "does not decode (%s)", err);
      die_record(l, sample, &rec, what);
    }
    rgb = dst;
  }
  resample_crop(ws, rgb, sw, sh, w, h, box[0], box[1], box[2], box[3], S, flip, out);
  if (fresh) fresh->label = *label, cache_publish(l, sample, eighths, fresh);
  if (l->cfg.augment && l->cfg.trivial_augment) augment_bytes(ws, out, S, l->key, sample);
  if (l->cfg.augment && l->cfg.random_erase > 0) random_erase(out, S, l->cfg.random_erase, l->key, sample);
}

/* ---------------------------------------------------------------- threads */

static void *worker_main(void *arg) {
  loader *l = arg;
  int S = l->cfg.image_size;
  worker_scratch ws;
  if (scratch_open(&ws, S) != 0) die("cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
  /* A nice value for this thread alone (Linux: a thread id is a PRIO_PROCESS target). */
  if (l->cfg.nice > 0 && setpriority(PRIO_PROCESS, (id_t)gettid(), l->cfg.nice) != 0)
    log_warn("loader: cannot lower the decode threads' priority to nice %d; they run at the step's", l->cfg.nice);
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
  scratch_close(&ws);
  return NULL;
}

loader *loader_open(const loader_config *cfg) {
  if (!cfg->data_dir || !cfg->split || (strcmp(cfg->split, "train") && strcmp(cfg->split, "val") && strcmp(cfg->split, "test")))
    die("loader: split must be \"train\", \"val\" or \"test\"");
  if (cfg->image_size < 8 || cfg->image_size > 4096) die("loader: image size %d out of range [8, 4096]", cfg->image_size);
  if (cfg->batch < 1 || cfg->batch > 65536) die("loader: batch %d out of range [1, 65536]", cfg->batch);
  if (!(cfg->crop_scale >= 0 && cfg->crop_scale <= 1)) die("loader: crop scale %g out of range [0, 1]", cfg->crop_scale);
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
  atomic_init(&l->cache_used, 0);
  for (int s = 0; s < LOADER_RING && !cfg->inline_decode; s++) {
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
  if (cfg->inline_decode) l->n_threads = 0; /* loader_next decodes */
  l->threads = xcalloc((size_t)l->n_threads + 1, sizeof(pthread_t));
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

/* inline_decode: the next batch decoded now, its samples spread over the OpenMP threads
 * (each with its own decoder and buffers, opened the first time it is needed). */
static int next_inline(loader *l, float *images, int *labels) {
  if (l->consumed >= l->n_batches) return 0;
  int64_t first = l->consumed++ * l->cfg.batch, size = l->n - first;
  if (size > l->cfg.batch) size = l->cfg.batch;
  int threads = omp_get_max_threads();
  if (threads > l->n_inline_ws) {
    l->inline_ws = xrealloc(l->inline_ws, sizeof *l->inline_ws * (size_t)threads);
    for (; l->n_inline_ws < threads; l->n_inline_ws++)
      if (scratch_open(&l->inline_ws[l->n_inline_ws], l->cfg.image_size) != 0)
        die("cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
  }
#pragma omp parallel for schedule(dynamic, 1) if (size > 1)
  for (int64_t k = 0; k < size; k++)
    load_sample(l, &l->inline_ws[omp_get_thread_num()], l->order[first + k], images + (size_t)k * l->image_floats, &labels[k]);
  return (int)size;
}

int loader_next(loader *l, float *images, int *labels) {
  if (l->cfg.inline_decode) return next_inline(l, images, labels);
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

void loader_set_cache(loader *l, size_t bytes) {
  if (l->order) die("loader_set_cache after the first epoch started (internal error)");
  l->cache_budget = bytes;
  if (bytes == 0 || l->cache) return;
  size_t slots = (size_t)(l->size ? l->size : 1) * CACHE_SCALES;
  l->cache = xmalloc(sizeof *l->cache * slots);
  for (size_t i = 0; i < slots; i++) atomic_init(&l->cache[i], NULL);
}

int64_t loader_cached_photos(const loader *l, size_t *bytes) {
  int64_t n = 0;
  for (int64_t i = 0; l->cache && i < l->size; i++) n += cache_any(l, i) != NULL;
  if (bytes) *bytes = atomic_load(&l->cache_used);
  return n;
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
  for (int t = 0; t < l->n_inline_ws; t++) scratch_close(&l->inline_ws[t]);
  free(l->inline_ws);
  for (int64_t i = 0; l->cache && i < l->size * CACHE_SCALES; i++)
    free(atomic_load_explicit(&l->cache[i], memory_order_relaxed));
  free(l->cache);
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
  worker_scratch ws;
  int rc = -1, w, h, ss, cs;
  if (scratch_open(&ws, size) != 0) {
    snprintf(err, errlen, "cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
    return -1;
  }
  if (tjDecompressHeader3(ws.tj, jpeg, len, &w, &h, &ss, &cs) != 0 || w < 1 || h < 1 ||
      (long long)w * h > MAX_PIXELS) {
    snprintf(err, errlen, "not a readable JPEG");
  } else {
    double side = 0.875 * (w < h ? w : h); /* the same eval crop as load_sample */
    tjscalingfactor sf = dct_scale_for(side, side, size);
    int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
    if (decode_scaled(ws.tj, jpeg, len, w, h, sf, scratch_rgb(&ws, (size_t)sw * sh * 3), 1, err, errlen) == 0) {
      resample_crop(&ws, ws.rgb, sw, sh, w, h, (w - side) / 2, (h - side) / 2, side, side, size, 0, out);
      rc = 0;
    }
  }
  scratch_close(&ws);
  return rc;
}
