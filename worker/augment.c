/* augment.c - TrivialAugmentWide and RandomErasing with torchvision's semantics (augment.h).
 * The pixel ops follow torchvision's tensor code for uint8 images: blends clamp to [0, 255]
 * and truncate, grayscale is 0.2989 R + 0.587 G + 0.114 B truncated, sharpness smooths with
 * [[1,1,1],[1,5,1],[1,1,1]] / 13 rounded and keeps the border, equalize is its per-channel
 * lookup table. Geometric ops map each output pixel centre back through the inverse transform
 * and take the nearest source pixel, black outside. */
#include "worker/augment.h"

#include <math.h>
#include <string.h>

#include "base/core.h"

/* Philox streams of one sample (worker/loader.c uses 0..10 for the crop and the flip). */
enum { STREAM_TA = 11, STREAM_ERASE = 12 };

static const int signed_op[TA_N_OPS] = {
    [TA_SHEAR_X] = 1, [TA_SHEAR_Y] = 1, [TA_TRANSLATE_X] = 1, [TA_TRANSLATE_Y] = 1, [TA_ROTATE] = 1,
    [TA_BRIGHTNESS] = 1, [TA_COLOR] = 1, [TA_CONTRAST] = 1, [TA_SHARPNESS] = 1,
};

static double linspace(double a, double b, int bin) { return a + (b - a) * bin / (TA_BINS - 1); }

double ta_magnitude(ta_op op, int bin) {
  switch (op) {
  case TA_SHEAR_X: case TA_SHEAR_Y: case TA_BRIGHTNESS: case TA_COLOR: case TA_CONTRAST: case TA_SHARPNESS:
    return linspace(0.0, 0.99, bin);
  case TA_TRANSLATE_X: case TA_TRANSLATE_Y: return linspace(0.0, 32.0, bin);
  case TA_ROTATE: return linspace(0.0, 135.0, bin);
  case TA_POSTERIZE: return 8 - (int)lround(bin / ((TA_BINS - 1) / 6.0));
  case TA_SOLARIZE: return linspace(255.0, 0.0, bin);
  default: return 0.0;
  }
}

/* torchvision computes in float32 and truncates to uint8: so does this. */
static unsigned char clamp_u8(float v) { return v <= 0 ? 0 : v >= 255 ? 255 : (unsigned char)v; }

/* ---- geometric ops: out(x, y) = in(A (x, y) + b) at pixel centres, nearest, black outside */

static void warp(unsigned char *rgb, int S, unsigned char *scratch, const double a[4], const double b[2]) {
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) {
      double px = x + 0.5, py = y + 0.5;
      double sx = a[0] * px + a[1] * py + b[0], sy = a[2] * px + a[3] * py + b[1];
      int ix = (int)floor(sx), iy = (int)floor(sy);
      unsigned char *o = scratch + ((size_t)y * S + x) * 3;
      if (ix < 0 || iy < 0 || ix >= S || iy >= S) o[0] = o[1] = o[2] = 0;
      else memcpy(o, rgb + ((size_t)iy * S + ix) * 3, 3);
    }
  memcpy(rgb, scratch, (size_t)S * S * 3);
}

/* Shear about the top-left corner (torchvision passes center [0, 0]); m = tan(shear angle). */
static void shear(unsigned char *rgb, int S, unsigned char *scratch, double m, int along_x) {
  double a[4] = {1, along_x ? m : 0, along_x ? 0 : m, 1}, b[2] = {0, 0};
  warp(rgb, S, scratch, a, b);
}

static void translate(unsigned char *rgb, int S, unsigned char *scratch, int dx, int dy) {
  double a[4] = {1, 0, 0, 1}, b[2] = {-dx, -dy};
  warp(rgb, S, scratch, a, b);
}

/* Counter-clockwise by deg about the centre, the corners cut off (no expand). */
static void rotate(unsigned char *rgb, int S, unsigned char *scratch, double deg) {
  double t = deg * M_PI / 180, c = cos(t), s = sin(t), h = S / 2.0;
  /* inverse of a counter-clockwise turn in image coordinates (y down) */
  double a[4] = {c, -s, s, c}, b[2] = {h - c * h + s * h, h - s * h - c * h};
  warp(rgb, S, scratch, a, b);
}

/* ---- pixel ops */

static int gray(const unsigned char *p) { return (int)(0.2989f * p[0] + 0.587f * p[1] + 0.114f * p[2]); }

/* torchvision's _blend: clamp(f * img + (1 - f) * other) truncated to uint8. */
static void blend_with(unsigned char *rgb, const unsigned char *other, size_t n, float f) {
  for (size_t i = 0; i < n; i++) rgb[i] = clamp_u8(f * rgb[i] + (1.0f - f) * other[i]);
}

static void brightness(unsigned char *rgb, int S, float f) {
  size_t n = (size_t)S * S * 3;
  for (size_t i = 0; i < n; i++) rgb[i] = clamp_u8(f * rgb[i]);
}

static void saturation(unsigned char *rgb, int S, unsigned char *scratch, float f) {
  size_t px = (size_t)S * S;
  for (size_t i = 0; i < px; i++) scratch[3 * i] = scratch[3 * i + 1] = scratch[3 * i + 2] = (unsigned char)gray(rgb + 3 * i);
  blend_with(rgb, scratch, px * 3, f);
}

static void contrast(unsigned char *rgb, int S, float f) {
  size_t px = (size_t)S * S;
  double sum = 0;
  for (size_t i = 0; i < px; i++) sum += gray(rgb + 3 * i);
  float mean = (float)(sum / (double)px);
  for (size_t i = 0; i < px * 3; i++) rgb[i] = clamp_u8(f * rgb[i] + (1.0f - f) * mean);
}

static void sharpness(unsigned char *rgb, int S, unsigned char *scratch, float f) {
  memcpy(scratch, rgb, (size_t)S * S * 3);
  for (int y = 1; y < S - 1; y++)
    for (int x = 1; x < S - 1; x++)
      for (int c = 0; c < 3; c++) {
        int sum = 0;
        for (int dy = -1; dy <= 1; dy++)
          for (int dx = -1; dx <= 1; dx++) sum += rgb[((size_t)(y + dy) * S + x + dx) * 3 + c] * (dx || dy ? 1 : 5);
        scratch[((size_t)y * S + x) * 3 + c] = clamp_u8(nearbyintf(sum / 13.0f));
      }
  blend_with(rgb, scratch, (size_t)S * S * 3, f);
}

static void posterize(unsigned char *rgb, int S, int bits) {
  unsigned char mask = (unsigned char)(0xff << (8 - bits));
  for (size_t i = 0; i < (size_t)S * S * 3; i++) rgb[i] &= mask;
}

static void solarize(unsigned char *rgb, int S, double threshold) {
  for (size_t i = 0; i < (size_t)S * S * 3; i++)
    if (rgb[i] >= threshold) rgb[i] = (unsigned char)(255 - rgb[i]);
}

static void autocontrast(unsigned char *rgb, int S) {
  size_t px = (size_t)S * S;
  for (int c = 0; c < 3; c++) {
    int lo = 255, hi = 0;
    for (size_t i = 0; i < px; i++) lo = rgb[3 * i + c] < lo ? rgb[3 * i + c] : lo, hi = rgb[3 * i + c] > hi ? rgb[3 * i + c] : hi;
    float scale = hi > lo ? 255.0f / (float)(hi - lo) : 1.0f;
    if (hi == lo) lo = 0;
    for (size_t i = 0; i < px; i++) rgb[3 * i + c] = clamp_u8((float)(rgb[3 * i + c] - lo) * scale);
  }
}

static void equalize(unsigned char *rgb, int S) {
  size_t px = (size_t)S * S;
  for (int c = 0; c < 3; c++) {
    int64_t hist[256] = {0}, lut[256];
    for (size_t i = 0; i < px; i++) hist[rgb[3 * i + c]]++;
    int last = 255;
    while (last > 0 && !hist[last]) last--;
    int64_t step = ((int64_t)px - hist[last]) / 255; /* the non-zero bins but the last, / 255 */
    if (step == 0) continue;
    int64_t cum = 0;
    for (int v = 0; v < 256; v++) { /* lut shifted by one: lut[v] counts the bins below v */
      int64_t e = (cum + step / 2) / step;
      lut[v] = e > 255 ? 255 : e;
      cum += hist[v];
    }
    for (size_t i = 0; i < px; i++) rgb[3 * i + c] = (unsigned char)lut[rgb[3 * i + c]];
  }
}

void ta_apply(ta_op op, double m, unsigned char *rgb, int S, unsigned char *scratch) {
  switch (op) {
  case TA_IDENTITY: break;
  case TA_SHEAR_X: shear(rgb, S, scratch, m, 1); break;
  case TA_SHEAR_Y: shear(rgb, S, scratch, m, 0); break;
  case TA_TRANSLATE_X: translate(rgb, S, scratch, (int)m, 0); break;
  case TA_TRANSLATE_Y: translate(rgb, S, scratch, 0, (int)m); break;
  case TA_ROTATE: rotate(rgb, S, scratch, m); break;
  case TA_BRIGHTNESS: brightness(rgb, S, (float)(1.0 + m)); break;
  case TA_COLOR: saturation(rgb, S, scratch, (float)(1.0 + m)); break;
  case TA_CONTRAST: contrast(rgb, S, (float)(1.0 + m)); break;
  case TA_SHARPNESS: sharpness(rgb, S, scratch, (float)(1.0 + m)); break;
  case TA_POSTERIZE: posterize(rgb, S, (int)m); break;
  case TA_SOLARIZE: solarize(rgb, S, m); break; /* a threshold: exact in double */
  case TA_AUTOCONTRAST: autocontrast(rgb, S); break;
  case TA_EQUALIZE: equalize(rgb, S); break;
  default: break;
  }
}

ta_op ta_draw(uint64_t key, int64_t sample, double *magnitude) {
  float u[4];
  philox_uniform4(key, (uint32_t)sample, (uint32_t)((uint64_t)sample >> 32), STREAM_TA, u);
  int op = (int)(u[0] * TA_N_OPS), bin = (int)(u[1] * TA_BINS);
  if (op >= TA_N_OPS) op = TA_N_OPS - 1;
  if (bin >= TA_BINS) bin = TA_BINS - 1;
  double m = ta_magnitude((ta_op)op, bin);
  *magnitude = signed_op[op] && u[2] < 0.5f ? -m : m;
  return (ta_op)op;
}

void trivial_augment_wide(unsigned char *rgb, int S, unsigned char *scratch, uint64_t key, int64_t sample) {
  double m;
  ta_op op = ta_draw(key, sample, &m);
  ta_apply(op, m, rgb, S, scratch);
}

int random_erase(float *img, int S, double p, uint64_t key, int64_t sample) {
  float u[4];
  uint32_t lo = (uint32_t)sample, hi = (uint32_t)((uint64_t)sample >> 32);
  philox_uniform4(key, lo, hi, STREAM_ERASE, u);
  if (!(u[0] < p)) return 0;
  double area = (double)S * S, lr0 = log(0.3), lr1 = log(3.3);
  for (uint32_t a = 0; a < 10; a++) {
    philox_uniform4(key, lo, hi, STREAM_ERASE + 1 + a, u);
    double target = area * (0.02 + u[0] * (0.33 - 0.02));
    double ratio = exp(lr0 + u[1] * (lr1 - lr0));
    int h = (int)lround(sqrt(target * ratio)), w = (int)lround(sqrt(target / ratio));
    if (h >= S || w >= S || h < 1 || w < 1) continue;
    int i = (int)(u[2] * (S - h + 1)), j = (int)(u[3] * (S - w + 1));
    if (i > S - h) i = S - h;
    if (j > S - w) j = S - w;
    for (int y = i; y < i + h; y++) memset(img + ((size_t)y * S + j) * 3, 0, sizeof(float) * 3 * (size_t)w);
    return 1;
  }
  return 0;
}
