/* dataset_prepare.c - `pollen prepare`: source discovery, parallel decode/validate/downscale,
 * the seeded stratified split, shard writing, then manifest.json (proto/manifest.h). */
#include "worker/dataset_prepare.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <omp.h>
#include <png.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "base/core.h"
#include "proto/manifest.h"
#include "proto/shard.h"
#include "proto/tfrecord.h"
#include "worker/loader.h"

#define MAX_PIXELS (200ll * 1000 * 1000) /* refuse absurd image headers before allocating */
#define JPEG_QUALITY 90

enum { ITEM_OK = 0, ITEM_CORRUPT, ITEM_UNREADABLE };

typedef struct {
  char *name;          /* "class/file.jpg" or "file.tfrecord#17": how errors name it */
  char *path;          /* folder input: file to read; NULL for TFRecord input (raw already set) */
  int label;
  unsigned char *data; /* the JPEG to store */
  size_t len;
  uint64_t content_hash; /* of the bytes as read, before any re-encoding: decides the test split */
  int status;
  char *why; /* for CORRUPT / UNREADABLE */
} item;

typedef struct {
  item *v;
  int64_t n, cap;
} item_list;

static void items_push(item_list *l, item it) {
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->v = xrealloc(l->v, sizeof(item) * (size_t)l->cap);
  }
  l->v[l->n++] = it;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* File and folder names are untrusted text: every message shows them through name_escape
 * (base/core.h), so a name can neither forge a log line nor send terminal escapes. ESC(s)
 * escapes one into a buffer of its own, alive until the end of the enclosing block. */
#define ESC(s) name_escape((s), (char[4 * 4096 + 1]){0}, 4 * 4096 + 1)

/* What a record's source name becomes in a shard: the name itself when it is UTF-8, else its
 * escaped form, so names in shards and everything printed from them are text. */
static char *utf8_name(const char *s) {
  size_t cap = 4 * strlen(s) + 1;
  char *buf = xmalloc(cap);
  const char *u = name_utf8(s, buf, cap);
  if (u != buf) snprintf(buf, cap, "%s", u);
  return buf;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_suffix_ci(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && !strcasecmp(s + n - m, suf);
}

/* Sorted names of a folder's entries, hidden ones left out. */
static char **list_dir(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d) die("cannot list %s: %s", ESC(dir), strerror(errno));
  char **names = NULL;
  int n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      names = xrealloc(names, sizeof(char *) * (size_t)cap);
    }
    names[n++] = xstrdup(e->d_name);
  }
  closedir(d);
  if (n) qsort(names, (size_t)n, sizeof(char *), cmp_str);
  *count = n;
  return names;
}

static void free_names(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* ---------------------------------------------------------------- source discovery */

typedef struct {
  int is_folder;
  char *identity; /* what the manifest records as "source" */
  int num_classes;
  char **classes;
  item_list items;
  int64_t not_image;
  char **tf_files;
  int n_tf_files;
} source;

static void find_folder_items(source *s, const char *root) {
  int n;
  char **names = list_dir(root, &n);
  for (int i = 0; i < n; i++) {
    char *p = xasprintf("%s/%s", root, names[i]);
    struct stat st;
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
      /* The path is escaped into a buffer and freed before dying: LeakSanitizer, at exit,
       * may not find it on the stack of the noreturn call (a flaky leak report in CI). */
      char shown[4 * 4096 + 1];
      if (strlen(names[i]) > SHARD_MAX_CLASS_NAME) {
        name_escape(p, shown, sizeof shown);
        free(p);
        die("class folder name %s is longer than %d bytes; rename it", shown, SHARD_MAX_CLASS_NAME);
      }
      /* A class name is a label in manifest.json, the weights' metadata and every report:
       * it must be text, and no escaped stand-in could be renamed back. */
      if (!text_is_utf8(names[i])) {
        name_escape(p, shown, sizeof shown);
        free(p);
        die("class folder %s: its name is not valid UTF-8 (shown escaped); rename it, e.g. with 'convmv'", shown);
      }
      s->classes = xrealloc(s->classes, sizeof(char *) * (size_t)(s->num_classes + 1));
      s->classes[s->num_classes++] = xstrdup(names[i]);
    }
    free(p);
  }
  free_names(names, n);
  if (s->num_classes > SHARD_MAX_CLASSES) die("--src %s has %d class folders, more than %d", ESC(root), s->num_classes, SHARD_MAX_CLASSES);
  for (int k = 0; k < s->num_classes; k++) {
    char *cdir = xasprintf("%s/%s", root, s->classes[k]);
    int m, images = 0;
    char **files = list_dir(cdir, &m);
    for (int j = 0; j < m; j++) {
      if (!has_suffix_ci(files[j], ".jpg") && !has_suffix_ci(files[j], ".jpeg") && !has_suffix_ci(files[j], ".png")) {
        s->not_image++;
        continue;
      }
      item it = {0};
      char *name = xasprintf("%s/%s", s->classes[k], files[j]);
      it.name = utf8_name(name);
      free(name);
      it.path = xasprintf("%s/%s", cdir, files[j]);
      it.label = k;
      items_push(&s->items, it);
      images++;
    }
    if (!images)
      die("class folder %s has no JPEG or PNG images; add images or remove the folder", ESC(cdir));
    free_names(files, m);
    free(cdir);
  }
}

static void read_tfrecords(source *s) {
  /* Labels are remapped from tf_flowers' order to sorted class names, so folder and TFRecord
   * input of the same photos give the same class table. */
  static const int to_sorted[5] = {1, 0, 4, 3, 2}; /* dandelion daisy tulips sunflowers roses */
  s->num_classes = 5;
  s->classes = xmalloc(5 * sizeof(char *));
  for (int k = 0; k < 5; k++) s->classes[to_sorted[k]] = xstrdup(tfrecord_flowers_classes[k]);
  int64_t per_class[5] = {0};
  char err[SHARD_ERR_LEN];
  for (int f = 0; f < s->n_tf_files; f++) {
    tfrecord_reader *r = tfrecord_open(s->tf_files[f], err, sizeof err);
    if (!r) die("%s", ESC(err));
    const char *base = strrchr(s->tf_files[f], '/');
    base = base ? base + 1 : s->tf_files[f];
    const unsigned char *data;
    size_t len;
    int rc;
    int64_t idx = 0;
    while ((rc = tfrecord_next(r, &data, &len, err, sizeof err)) == 1) {
      item it = {0};
      char *name = xasprintf("%s#%lld", base, (long long)idx++);
      it.name = utf8_name(name);
      free(name);
      tfrecord_example ex;
      char why[256];
      if (tfrecord_parse_example(data, len, &ex, why, sizeof why) != 0) {
        it.status = ITEM_CORRUPT;
        it.why = xstrdup(why);
      } else if (ex.label < 0 || ex.label > 4) {
        it.status = ITEM_CORRUPT;
        it.why = xasprintf("label %lld is not a tf_flowers class (0..4)", (long long)ex.label);
        free(ex.image);
      } else {
        it.label = to_sorted[ex.label];
        it.data = ex.image;
        it.len = ex.image_len;
        per_class[it.label]++;
      }
      items_push(&s->items, it);
    }
    if (rc < 0) die("%s; re-download the file", ESC(err));
    tfrecord_close(r);
  }
  for (int k = 0; k < 5; k++)
    if (!per_class[k]) die("--src %s holds no examples of class %s; give all tf_flowers shards", ESC(s->identity), s->classes[k]);
}

static int is_tfrecord_name(const char *name) { return strstr(name, ".tfrecord") || strstr(name, ".tfrec"); }

static void discover(source *s, const char *src) {
  memset(s, 0, sizeof *s);
  struct stat st;
  if (stat(src, &st) != 0) {
    glob_t g;
    if (strpbrk(src, "*?[") && glob(src, 0, NULL, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; i++) {
        s->tf_files = xrealloc(s->tf_files, sizeof(char *) * (size_t)(s->n_tf_files + 1));
        s->tf_files[s->n_tf_files++] = xstrdup(g.gl_pathv[i]);
      }
      globfree(&g);
      s->identity = utf8_name(src);
      return;
    }
    die_status(EXIT_USAGE, "--src %s: %s; give a folder of class sub-folders or tf_flowers TFRecord files",
               ESC(src), strpbrk(src, "*?[") ? "no file matches" : strerror(errno));
  }
  /* The identity goes into manifest.json: a path that is not UTF-8 is kept in escaped form. */
  char *real = realpath(src, NULL);
  s->identity = utf8_name(real ? real : src);
  free(real);
  if (S_ISREG(st.st_mode)) {
    s->tf_files = xmalloc(sizeof(char *));
    s->tf_files[0] = xstrdup(src);
    s->n_tf_files = 1;
    return;
  }
  if (!S_ISDIR(st.st_mode)) die_status(EXIT_USAGE, "--src %s is neither a folder nor a file", ESC(src));
  int n, subdirs = 0;
  char **names = list_dir(src, &n);
  for (int i = 0; i < n; i++) {
    char *p = xasprintf("%s/%s", src, names[i]);
    struct stat es;
    if (stat(p, &es) == 0) {
      if (S_ISDIR(es.st_mode)) subdirs++;
      else if (S_ISREG(es.st_mode) && is_tfrecord_name(names[i])) {
        s->tf_files = xrealloc(s->tf_files, sizeof(char *) * (size_t)(s->n_tf_files + 1));
        s->tf_files[s->n_tf_files++] = xstrdup(p);
      }
    }
    free(p);
  }
  free_names(names, n);
  if (subdirs) {
    for (int i = 0; i < s->n_tf_files; i++) free(s->tf_files[i]);
    free(s->tf_files);
    s->tf_files = NULL;
    s->n_tf_files = 0;
    s->is_folder = 1;
    return;
  }
  if (!s->n_tf_files)
    die_status(EXIT_USAGE, "--src %s holds neither class sub-folders nor *.tfrecord* files; see 'pollen prepare --help'", ESC(src));
}

/* ---------------------------------------------------------------- image processing */

/* Box ("area") filter downscale of 8-bit RGB: each output pixel is the coverage-weighted mean
 * of the source pixels under it, so no source pixel is skipped (no aliasing). */
static void resize_area(const unsigned char *src, int sw, int sh, unsigned char *dst, int dw, int dh) {
  float *tmp = xmalloc(sizeof(float) * (size_t)sh * (size_t)dw * 3);
  double sx = (double)sw / dw, sy = (double)sh / dh;
  for (int x = 0; x < dw; x++) {
    double a = x * sx, b = a + sx;
    int i0 = (int)a, i1 = (int)ceil(b);
    if (i1 > sw) i1 = sw;
    for (int y = 0; y < sh; y++) {
      float acc[3] = {0, 0, 0};
      for (int i = i0; i < i1; i++) {
        double lo = i > a ? i : a, hi = i + 1 < b ? i + 1 : b;
        float wgt = (float)(hi - lo);
        const unsigned char *p = src + ((size_t)y * sw + i) * 3;
        acc[0] += wgt * p[0];
        acc[1] += wgt * p[1];
        acc[2] += wgt * p[2];
      }
      float *t = tmp + ((size_t)y * dw + x) * 3;
      for (int c = 0; c < 3; c++) t[c] = acc[c] / (float)sx;
    }
  }
  for (int y = 0; y < dh; y++) {
    double a = y * sy, b = a + sy;
    int j0 = (int)a, j1 = (int)ceil(b);
    if (j1 > sh) j1 = sh;
    for (int x = 0; x < dw; x++) {
      float acc[3] = {0, 0, 0};
      for (int j = j0; j < j1; j++) {
        double lo = j > a ? j : a, hi = j + 1 < b ? j + 1 : b;
        float wgt = (float)(hi - lo);
        const float *t = tmp + ((size_t)j * dw + x) * 3;
        acc[0] += wgt * t[0];
        acc[1] += wgt * t[1];
        acc[2] += wgt * t[2];
      }
      for (int c = 0; c < 3; c++) {
        float v = acc[c] / (float)sy + 0.5f;
        dst[((size_t)y * dw + x) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  }
  free(tmp);
}

typedef struct {
  tjhandle dec, enc;
  unsigned char *rgb;
  size_t rgb_cap;
} worker_ctx;

static unsigned char *grow(unsigned char **buf, size_t *cap, size_t n) {
  if (*cap < n) {
    *buf = xrealloc(*buf, n);
    *cap = n;
  }
  return *buf;
}

static void target_dims(int w, int h, int max_side, int *dw, int *dh) {
  if (w >= h) {
    *dw = max_side;
    *dh = (int)lround((double)h * max_side / w);
  } else {
    *dh = max_side;
    *dw = (int)lround((double)w * max_side / h);
  }
  if (*dw < 1) *dw = 1;
  if (*dh < 1) *dh = 1;
}

/* Resizes rgb (w x h) to fit max_side and encodes it as JPEG with the encoder enc into *out
 * (malloc'd). 0, or -1 with why. */
static int fit_encode(tjhandle enc, const unsigned char *rgb, int w, int h, int max_side, unsigned char **out,
                      size_t *outlen, char **why) {
  unsigned char *small = NULL;
  if (max_side > 0 && (w > max_side || h > max_side)) {
    int dw, dh;
    target_dims(w, h, max_side, &dw, &dh);
    small = xmalloc((size_t)dw * dh * 3);
    resize_area(rgb, w, h, small, dw, dh);
    rgb = small;
    w = dw;
    h = dh;
  }
  unsigned char *jpg = NULL;
  unsigned long jlen = 0;
  int rc = tjCompress2(enc, rgb, w, 0, h, TJPF_RGB, &jpg, &jlen, TJSAMP_420, JPEG_QUALITY, 0);
  free(small);
  if (rc != 0) {
    *why = xasprintf("JPEG encoding failed: %s", tjGetErrorStr2(enc));
    tjFree(jpg);
    return -1;
  }
  *out = xmalloc(jlen);
  memcpy(*out, jpg, jlen);
  *outlen = jlen;
  tjFree(jpg);
  return 0;
}

static int encode_fitted(worker_ctx *c, item *it, const unsigned char *rgb, int w, int h, int max_side) {
  unsigned char *jpg;
  size_t n;
  if (fit_encode(c->enc, rgb, w, h, max_side, &jpg, &n, &it->why) != 0) return -1;
  free(it->data);
  it->data = jpg;
  it->len = n;
  return 0;
}

static int process_jpeg(worker_ctx *c, item *it, int max_side) {
  int w, h, subsamp, cs;
  if (tjDecompressHeader3(c->dec, it->data, it->len, &w, &h, &subsamp, &cs) != 0) {
    it->why = xasprintf("not a readable JPEG: %s", tjGetErrorStr2(c->dec));
    return -1;
  }
  if (w < 1 || h < 1 || (long long)w * h > MAX_PIXELS) {
    it->why = xasprintf("JPEG of %dx%d pixels is out of range", w, h);
    return -1;
  }
  int shrink = max_side > 0 && (w > max_side || h > max_side);
  /* Decode at the smallest DCT scale whose long side still covers max_side: far less work,
   * and the area filter does the rest. */
  tjscalingfactor sf = {1, 1};
  if (shrink) {
    int nsf;
    tjscalingfactor *f = tjGetScalingFactors(&nsf);
    int longside = w > h ? w : h, best = longside;
    for (int i = 0; f && i < nsf; i++) {
      if (f[i].num > f[i].denom) continue;
      int s = TJSCALED(longside, f[i]);
      if (s >= max_side && s < best) {
        best = s;
        sf = f[i];
      }
    }
  }
  int sw = TJSCALED(w, sf), sh = TJSCALED(h, sf);
  grow(&c->rgb, &c->rgb_cap, (size_t)sw * sh * 3);
  char why[320];
  if (loader_decode_jpeg_checked(c->dec, it->data, it->len, c->rgb, sw, sh, why, sizeof why) != 0) {
    it->why = xstrdup(why);
    return -1;
  }
  if (!shrink) return 0; /* keep the original bytes: no generation loss */
  return encode_fitted(c, it, c->rgb, sw, sh, max_side);
}

/* Decodes PNG data into *rgb (grown as needed) and its size. 0, or -1 with why. */
static int decode_png(const unsigned char *data, size_t len, unsigned char **rgb, size_t *cap, int *w, int *h,
                      char **why) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, data, len)) {
    *why = xasprintf("not a readable PNG: %s", img.message);
    return -1;
  }
  if ((long long)img.width * img.height > MAX_PIXELS) {
    *why = xasprintf("PNG of %ux%u pixels is out of range", img.width, img.height);
    png_image_free(&img);
    return -1;
  }
  img.format = PNG_FORMAT_RGB;
  grow(rgb, cap, PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, NULL, *rgb, 0, NULL)) {
    *why = xasprintf("PNG does not decode: %s", img.message);
    png_image_free(&img);
    return -1;
  }
  *w = (int)img.width, *h = (int)img.height;
  return 0;
}

static int process_png(worker_ctx *c, item *it, int max_side) {
  int w, h;
  if (decode_png(it->data, it->len, &c->rgb, &c->rgb_cap, &w, &h, &it->why) != 0) return -1;
  return encode_fitted(c, it, c->rgb, w, h, max_side);
}

int prepare_png_to_jpeg(const unsigned char *png, size_t len, int max_side, unsigned char **jpeg, size_t *jpeg_len,
                        char *why, size_t whylen) {
  unsigned char *rgb = NULL;
  size_t cap = 0;
  char *reason = NULL;
  int w, h, rc = -1;
  tjhandle enc = tjInitCompress();
  if (!enc) reason = xasprintf("cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
  else if (decode_png(png, len, &rgb, &cap, &w, &h, &reason) == 0)
    rc = fit_encode(enc, rgb, w, h, max_side, jpeg, jpeg_len, &reason);
  if (rc) snprintf(why, whylen, "%s", reason);
  free(reason);
  free(rgb);
  if (enc) tjDestroy(enc);
  return rc;
}

static int read_file(const char *path, unsigned char **data, size_t *len, char **why) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    *why = xasprintf("cannot open: %s", strerror(errno));
    return -1;
  }
  size_t cap = 1 << 16, n = 0;
  unsigned char *b = xmalloc(cap);
  for (;;) {
    if (n == cap) {
      if (cap >= SHARD_MAX_DATA) {
        *why = xasprintf("larger than %u bytes", SHARD_MAX_DATA);
        free(b);
        fclose(f);
        return -1;
      }
      cap *= 2;
      b = xrealloc(b, cap);
    }
    size_t got = fread(b + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  int e = errno;
  fclose(f);
  if (bad) {
    *why = xasprintf("read error: %s", strerror(e));
    free(b);
    return -1;
  }
  *data = b;
  *len = n;
  return 0;
}

static void process_item(worker_ctx *c, item *it, int max_side) {
  if (it->path && read_file(it->path, &it->data, &it->len, &it->why) != 0) {
    it->status = ITEM_UNREADABLE;
    return;
  }
  if (it->status != ITEM_OK) return;
  it->content_hash = hash_bytes(it->data, it->len, 0x74657374ull /* "test" */);
  int rc;
  if (it->len >= 3 && it->data[0] == 0xFF && it->data[1] == 0xD8 && it->data[2] == 0xFF)
    rc = process_jpeg(c, it, max_side);
  else if (it->len >= 8 && !memcmp(it->data, "\x89PNG\r\n\x1a\n", 8))
    rc = process_png(c, it, max_side);
  else {
    it->why = xstrdup("neither JPEG nor PNG data");
    rc = -1;
  }
  if (rc == 0 && it->len > SHARD_MAX_DATA) {
    it->why = xasprintf("encoded image larger than %u bytes", SHARD_MAX_DATA);
    rc = -1;
  }
  if (rc != 0) {
    it->status = ITEM_CORRUPT;
    free(it->data);
    it->data = NULL;
  }
}

static void progress_bar(int64_t done, int64_t total, double t0) {
  int width = 30, filled = total ? (int)(width * done / total) : width;
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
  bar[width] = 0;
  double el = time_now() - t0;
  fprintf(stderr, "\rpreparing [%s] %lld/%lld images  %.0f/s ", bar, (long long)done, (long long)total,
          el > 0 ? done / el : 0.0);
  fflush(stderr);
}

static void process_all(item_list *items, int max_side, int threads, int progress) {
  int64_t done = 0, total = items->n;
  double t0 = time_now();
  int nt = threads > 0 ? threads : omp_get_num_procs();
#pragma omp parallel num_threads(nt)
  {
    worker_ctx c = {tjInitDecompress(), tjInitCompress(), NULL, 0};
    if (!c.dec || !c.enc) die("cannot start TurboJPEG: %s", tjGetErrorStr2(NULL));
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < total; i++) {
      process_item(&c, &items->v[i], max_side);
      int64_t d;
#pragma omp atomic capture
      d = ++done;
      if (progress && omp_get_thread_num() == 0) progress_bar(d, total, t0);
    }
    tjDestroy(c.dec);
    tjDestroy(c.enc);
    free(c.rgb);
  }
  if (progress) {
    progress_bar(total, total, t0);
    fputc('\n', stderr);
  }
}

/* ---------------------------------------------------------------- split and shards */

static void shuffle(int64_t *v, int64_t n, uint64_t key) {
  for (int64_t i = n - 1; i > 0; i--) {
    philox_ctr c = {{(uint32_t)i, (uint32_t)((uint64_t)i >> 32), 0, 0}};
    philox_ctr r = philox4x32(c, key);
    uint64_t x = (uint64_t)r.v[0] | (uint64_t)r.v[1] << 32;
    int64_t j = (int64_t)(((unsigned __int128)x * (uint64_t)(i + 1)) >> 64);
    int64_t t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

static int split_shards(int64_t count, int requested) {
  if (count <= 0) return 0;
  return count < requested ? (int)count : requested;
}

static char *shard_name(const char *split, int j, int n) { return xasprintf("%s-%05d-of-%05d.shard", split, j, n); }

/* Writes one split's shards; fills info. idx: the split's items in shuffled order. */
static void write_split(const char *out, const char *split, const source *s, const int64_t *idx, int64_t count,
                        int requested, manifest_split *info) {
  info->count = count;
  info->per_class = xcalloc((size_t)s->num_classes, sizeof(int64_t));
  info->n_shards = split_shards(count, requested);
  info->shards = xcalloc((size_t)(info->n_shards ? info->n_shards : 1), sizeof(manifest_shard));
  for (int64_t i = 0; i < count; i++) info->per_class[s->items.v[idx[i]].label]++;
  for (int j = 0; j < info->n_shards; j++) {
    manifest_shard *sh = &info->shards[j];
    sh->file = shard_name(split, j, info->n_shards);
    sh->count = count / info->n_shards + (j < count % info->n_shards);
    char *path = xasprintf("%s/%s", out, sh->file);
    shard_writer *w = shard_create(path, s->num_classes, (const char *const *)s->classes, sh->count);
    for (int64_t i = j; i < count; i += info->n_shards) {
      const item *it = &s->items.v[idx[i]];
      shard_append(w, it->label, it->name, it->data, it->len);
    }
    shard_finish(w, &sh->bytes, &sh->crc32c);
    free(path);
  }
}

/* A photo belongs to the test split when its content hash, as a fraction of 2^64, is below
 * the share: about that share of any collection, the same photos every time. */
static int in_test_split(const item *it, double fraction) {
  return fraction > 0 && (double)(it->content_hash >> 11) * 0x1p-53 < fraction;
}

/* ---------------------------------------------------------------- the command */

/* Names the first setting that differs, or NULL when the manifest matches these options. */
static const char *settings_differ(const manifest_info *m, const prepare_opts *o, const char *identity,
                                   char *buf, size_t cap) {
  if (strcmp(m->source, identity)) snprintf(buf, cap, "--src %s here, %s there", identity, m->source);
  else if (m->seed != o->seed) snprintf(buf, cap, "--seed %llu here, %llu there", (unsigned long long)o->seed, (unsigned long long)m->seed);
  else if (fabs(m->val_fraction - o->val_fraction) > 1e-12) snprintf(buf, cap, "--val-fraction %g here, %g there", o->val_fraction, m->val_fraction);
  else if (fabs(m->test_fraction - o->test_fraction) > 1e-12) snprintf(buf, cap, "--test-fraction %g here, %g there", o->test_fraction, m->test_fraction);
  else if (m->max_side != o->max_side) snprintf(buf, cap, "--max-side %d here, %d there", o->max_side, m->max_side);
  else if (m->shards != o->shards) snprintf(buf, cap, "--shards %d here, %d there", o->shards, m->shards);
  else return NULL;
  return buf;
}

/* 0 when every shard in the manifest is present with its size and checksum. */
static int verify_output(const char *out, const manifest_info *m, char *why, size_t cap) {
  const manifest_split *sp[3] = {&m->train, &m->val, &m->test};
  for (int s = 0; s < 3; s++)
    for (int j = 0; j < sp[s]->n_shards; j++) {
      const manifest_shard *sh = &sp[s]->shards[j];
      char *path = xasprintf("%s/%s", out, sh->file), err[SHARD_ERR_LEN];
      uint64_t bytes;
      uint32_t crc;
      int rc = shard_file_checksum(path, &bytes, &crc, err, sizeof err);
      if (rc) snprintf(why, cap, "%s", err);
      else if (bytes != sh->bytes) snprintf(why, cap, "%s is %llu bytes, the manifest says %llu", path, (unsigned long long)bytes, (unsigned long long)sh->bytes);
      else if (crc != sh->crc32c) snprintf(why, cap, "%s does not match its checksum in the manifest (corrupt)", path);
      free(path);
      if (rc || bytes != sh->bytes || crc != sh->crc32c) return -1;
    }
  return 0;
}

static void remove_old(const char *out, const manifest_info *m) {
  const manifest_split *sp[3] = {&m->train, &m->val, &m->test};
  for (int s = 0; s < 3; s++)
    for (int j = 0; j < sp[s]->n_shards; j++) {
      char *path = xasprintf("%s/%s", out, sp[s]->shards[j].file);
      unlink(path);
      free(path);
    }
  char *path = xasprintf("%s/%s", out, MANIFEST_FILE);
  unlink(path);
  free(path);
}

void dataset_prepare(const prepare_opts *o, prepare_result *res) {
  memset(res, 0, sizeof *res);
  source s;
  discover(&s, o->src);

  struct stat st;
  if (stat(o->out, &st) == 0 && !S_ISDIR(st.st_mode)) die_status(EXIT_USAGE, "--out %s exists and is not a folder", ESC(o->out));
  if (stat(o->out, &st) != 0 && make_dirs(o->out) != 0)
    die("cannot create --out folder %s: %s", ESC(o->out), strerror(errno));
  char *mpath = xasprintf("%s/%s", o->out, MANIFEST_FILE);
  if (access(mpath, F_OK) == 0) {
    char err[SHARD_ERR_LEN], why[SHARD_ERR_LEN];
    manifest_info *old = manifest_read(o->out, err, sizeof err);
    if (!old && !o->force) die("%s", ESC(err));
    if (old) {
      const char *diff = settings_differ(old, o, s.identity, why, sizeof why);
      if (!diff && !o->force) {
        if (verify_output(o->out, old, why, sizeof why) != 0)
          die("%s holds an incomplete or damaged preparation (%s); rerun with --force", ESC(o->out), ESC(why));
        res->already = 1;
        res->train = old->train.count;
        res->val = old->val.count;
        res->test = old->test.count;
        res->skipped_not_image = old->skipped_not_image;
        res->skipped_corrupt = old->skipped_corrupt;
        res->skipped_unreadable = old->skipped_unreadable;
        manifest_free(old);
        goto cleanup;
      }
      if (diff && !o->force)
        die("%s was prepared with different settings (%s); add --force to overwrite it or choose another --out",
            ESC(o->out), ESC(diff));
      remove_old(o->out, old);
      manifest_free(old);
    } else {
      unlink(mpath);
    }
  }

  if (s.is_folder) find_folder_items(&s, o->src);
  else read_tfrecords(&s);
  process_all(&s.items, o->max_side, o->threads, o->progress);

  /* Report in listing order, whatever order the threads finished in. */
  int64_t *per_class = xcalloc((size_t)s.num_classes, sizeof(int64_t));
  for (int64_t i = 0; i < s.items.n; i++) {
    item *it = &s.items.v[i];
    if (it->status == ITEM_OK) per_class[it->label]++;
    else {
      log_warn("skipping %s: %s", ESC(it->path ? it->path : it->name), it->why);
      if (it->status == ITEM_CORRUPT) res->skipped_corrupt++;
      else res->skipped_unreadable++;
    }
  }
  res->skipped_not_image = s.not_image;
  for (int k = 0; k < s.num_classes; k++)
    if (!per_class[k])
      die("class %s has no usable images in %s (all were skipped); fix or remove them", ESC(s.classes[k]), ESC(o->src));

  /* The test split first, by content hash: a photo is in it or not whatever the seed, the
   * other photos or their order, so no choice made on train/val (the seed, the best epoch)
   * can ever have seen it. Then a stratified split of the rest: per class, a seeded shuffle of
   * the usable items in listing order; the first round(n * val_fraction) go to val. Then each
   * split is shuffled so shards mix classes. */
  size_t slots = sizeof(int64_t) * (size_t)(s.items.n + 1);
  int64_t *train = xmalloc(slots), *val = xmalloc(slots), *test = xmalloc(slots);
  int64_t nt = 0, nv = 0, nx = 0;
  int64_t *cls = xmalloc(slots);
  for (int64_t i = 0; i < s.items.n; i++)
    if (s.items.v[i].status == ITEM_OK && in_test_split(&s.items.v[i], o->test_fraction)) test[nx++] = i;
  for (int k = 0; k < s.num_classes; k++) {
    int64_t m = 0;
    for (int64_t i = 0; i < s.items.n; i++)
      if (s.items.v[i].status == ITEM_OK && s.items.v[i].label == k && !in_test_split(&s.items.v[i], o->test_fraction))
        cls[m++] = i;
    if (m == 0) die("class %s has no photos left for training after the test split; lower --test-fraction", ESC(s.classes[k]));
    shuffle(cls, m, hash_mix(hash_mix(o->seed, 0x73706c6974ull /* "split" */), (uint64_t)k));
    int64_t v = (int64_t)llround((double)m * o->val_fraction);
    if (v >= m) v = m - 1; /* every class keeps at least one training image */
    for (int64_t i = 0; i < m; i++) {
      if (i < v) val[nv++] = cls[i];
      else train[nt++] = cls[i];
    }
  }
  free(cls);
  shuffle(train, nt, hash_mix(o->seed, 0x747261696eull /* "train" */));
  shuffle(val, nv, hash_mix(o->seed, 0x76616cull /* "val" */));
  shuffle(test, nx, 0x74657374ull); /* mixes classes across shards; the set itself is fixed */

  manifest_info m = {0};
  m.source = s.identity;
  m.source_kind = s.is_folder ? "folder" : "tfrecord";
  m.seed = o->seed;
  m.val_fraction = o->val_fraction;
  m.test_fraction = o->test_fraction;
  m.max_side = o->max_side;
  m.shards = o->shards;
  m.num_classes = s.num_classes;
  m.classes = s.classes;
  m.skipped_not_image = res->skipped_not_image;
  m.skipped_corrupt = res->skipped_corrupt;
  m.skipped_unreadable = res->skipped_unreadable;
  write_split(o->out, "train", &s, train, nt, o->shards, &m.train);
  write_split(o->out, "val", &s, val, nv, o->shards, &m.val);
  if (o->test_fraction > 0) write_split(o->out, "test", &s, test, nx, o->shards, &m.test);
  char err[SHARD_ERR_LEN];
  if (manifest_write(o->out, &m, err, sizeof err) != 0) die("%s", ESC(err));
  res->train = nt;
  res->val = nv;
  res->test = nx;
  manifest_split_free(&m.train);
  manifest_split_free(&m.val);
  manifest_split_free(&m.test);
  free(train);
  free(val);
  free(test);
  free(per_class);

cleanup:
  for (int64_t i = 0; i < s.items.n; i++) {
    free(s.items.v[i].name);
    free(s.items.v[i].path);
    free(s.items.v[i].data);
    free(s.items.v[i].why);
  }
  free(s.items.v);
  for (int k = 0; k < s.num_classes; k++) free(s.classes[k]);
  free(s.classes);
  for (int i = 0; i < s.n_tf_files; i++) free(s.tf_files[i]);
  free(s.tf_files);
  free(s.identity);
  free(mpath);
}
