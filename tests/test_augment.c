/* test_augment.c - TrivialAugmentWide's ops and draw and RandomErasing (worker/augment.h)
 * against torchvision's semantics, on small images whose answers are computed here: the
 * magnitude tables, each pixel op's formula (blends clamp and truncate, grayscale weights,
 * posterize masks, solarize thresholds, autocontrast and equalize lookup tables, sharpness'
 * 3x3 kernel with the border kept), the geometric ops' pixel moves, the uniform draw of 14 ops
 * with random signs, and RandomErasing's probability, area and ratio bounds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "tests/check.h"
#include "worker/augment.h"

enum { S = 32, N = S * S * 3 };
static unsigned char img[N], orig[N], scratch[N];

static void fill_random(unsigned seed) {
  for (int i = 0; i < N; i++) orig[i] = (unsigned char)((i * 2654435761u + seed * 40503u) >> 13);
  memcpy(img, orig, N);
}
static unsigned char *px(unsigned char *p, int x, int y) { return p + ((size_t)y * S + x) * 3; }

static void test_magnitudes(void) {
  CHECK(ta_magnitude(TA_SHEAR_X, 0) == 0 && fabs(ta_magnitude(TA_SHEAR_X, 30) - 0.99) < 1e-12, "shear 0..0.99");
  CHECK(fabs(ta_magnitude(TA_TRANSLATE_Y, 30) - 32) < 1e-12 && fabs(ta_magnitude(TA_TRANSLATE_Y, 15) - 16) < 1e-12,
        "translate 0..32 px (Wide: absolute pixels)");
  CHECK(fabs(ta_magnitude(TA_ROTATE, 30) - 135) < 1e-12, "rotate up to 135 degrees");
  CHECK(ta_magnitude(TA_POSTERIZE, 0) == 8 && ta_magnitude(TA_POSTERIZE, 5) == 7 && ta_magnitude(TA_POSTERIZE, 30) == 2,
        "posterize bits 8 - round(bin / 5): 8, 7, ..., 2");
  CHECK(ta_magnitude(TA_SOLARIZE, 0) == 255 && ta_magnitude(TA_SOLARIZE, 30) == 0, "solarize thresholds 255..0");
  CHECK(ta_magnitude(TA_EQUALIZE, 17) == 0 && ta_magnitude(TA_IDENTITY, 3) == 0, "unparameterised ops");
}

static void test_pixel_ops(void) {
  fill_random(1);
  for (ta_op op = TA_BRIGHTNESS; op <= TA_SHARPNESS; op++) {
    memcpy(img, orig, N);
    ta_apply(op, 0.0, img, S, scratch);
    CHECK(!memcmp(img, orig, N), "op %d at magnitude 0 (factor 1) is the identity", op);
  }
  memcpy(img, orig, N);
  ta_apply(TA_BRIGHTNESS, -0.5, img, S, scratch);
  int ok = 1;
  for (int i = 0; i < N; i++) ok &= img[i] == (unsigned char)(0.5f * orig[i]);
  CHECK(ok, "brightness 0.5: x * 0.5 truncated");
  memcpy(img, orig, N);
  ta_apply(TA_BRIGHTNESS, 0.9, img, S, scratch);
  ok = 1;
  for (int i = 0; i < N; i++) ok &= img[i] == (1.9f * orig[i] >= 255 ? 255 : (unsigned char)(1.9f * orig[i]));
  CHECK(ok, "brightness 1.9 clamps at 255");
  memcpy(img, orig, N);
  ta_apply(TA_COLOR, -1.0, img, S, scratch);
  ok = 1;
  for (int i = 0; i < S * S; i++) {
    const unsigned char *o = orig + 3 * i, *g = img + 3 * i;
    unsigned char want = (unsigned char)(0.2989f * o[0] + 0.587f * o[1] + 0.114f * o[2]);
    ok &= g[0] == want && g[1] == want && g[2] == want;
  }
  CHECK(ok, "color 0: the grayscale 0.2989 R + 0.587 G + 0.114 B, truncated");
  memcpy(img, orig, N);
  ta_apply(TA_CONTRAST, -1.0, img, S, scratch);
  double mean = 0;
  for (int i = 0; i < S * S; i++) mean += (int)(0.2989f * orig[3 * i] + 0.587f * orig[3 * i + 1] + 0.114f * orig[3 * i + 2]);
  mean /= S * S;
  ok = 1;
  for (int i = 0; i < N; i++) ok &= img[i] == (unsigned char)(float)mean;
  CHECK(ok, "contrast 0: every value the grayscale mean %g", mean);

  memset(img, 0xff, N);
  ta_apply(TA_POSTERIZE, 2, img, S, scratch);
  CHECK(img[0] == 0xc0 && img[N - 1] == 0xc0, "posterize 2 bits keeps the top two: %#x", img[0]);
  for (int i = 0; i < N; i++) img[i] = (unsigned char)i;
  memcpy(orig, img, N);
  ta_apply(TA_SOLARIZE, 128, img, S, scratch);
  ok = 1;
  for (int i = 0; i < N; i++) ok &= img[i] == (orig[i] >= 128 ? 255 - orig[i] : orig[i]);
  CHECK(ok, "solarize 128 inverts values >= 128 only");

  for (int i = 0; i < S * S; i++) img[3 * i] = (unsigned char)(50 + i % 51), img[3 * i + 1] = 7, img[3 * i + 2] = (unsigned char)(i % 2 ? 9 : 3);
  ta_apply(TA_AUTOCONTRAST, 0, img, S, scratch);
  CHECK(img[0] == 0 && img[3 * 50] == 255 && img[3 * 25] == (unsigned char)(25 * (255.0f / 50)), "autocontrast stretches [50, 100]");
  CHECK(img[1] == 7, "autocontrast leaves a flat channel as it is");
  CHECK(img[2] == 0 && img[5] == 255, "autocontrast stretches [3, 9]");

  for (int i = 0; i < S * S; i++) img[3 * i] = img[3 * i + 1] = img[3 * i + 2] = i < S * S / 2 ? 10 : 200;
  ta_apply(TA_EQUALIZE, 0, img, S, scratch);
  CHECK(img[0] == 0 && img[N - 1] == 255, "equalize maps a two-level image to 0 and 255: %d %d", img[0], img[N - 1]);
  for (int i = 0; i < N; i++) img[i] = (unsigned char)(i % 3 == 0 ? 5 : 77);
  memcpy(orig, img, N);
  ta_apply(TA_EQUALIZE, 0, img, S, scratch);
  CHECK(!memcmp(img, orig, N), "equalize leaves a one-level channel (step 0) as it is");

  /* sharpness 0: the smoothed image inside, the border kept */
  fill_random(3);
  ta_apply(TA_SHARPNESS, -1.0, img, S, scratch);
  int x = 7, y = 9, c = 1, sum = 0;
  for (int dy = -1; dy <= 1; dy++)
    for (int dx = -1; dx <= 1; dx++) sum += px(orig, x + dx, y + dy)[c] * (dx || dy ? 1 : 5);
  CHECK(px(img, x, y)[c] == (unsigned char)nearbyintf(sum / 13.0f), "sharpness 0 at (7, 9): the 3x3 smoothing, rounded");
  CHECK(!memcmp(px(img, 0, 5), px(orig, 0, 5), 3) && !memcmp(px(img, S - 1, S - 1), px(orig, S - 1, S - 1), 3),
        "sharpness keeps the border");
}

static void test_geometric_ops(void) {
  fill_random(5);
  ta_apply(TA_TRANSLATE_X, 5, img, S, scratch);
  CHECK(!memcmp(px(img, 12, 3), px(orig, 7, 3), 3) && px(img, 4, 3)[0] == 0 && px(img, 4, 3)[2] == 0,
        "translate x by 5: pixels move right, black fill");
  memcpy(img, orig, N);
  ta_apply(TA_TRANSLATE_Y, -3, img, S, scratch);
  CHECK(!memcmp(px(img, 6, 10), px(orig, 6, 13), 3) && px(img, 6, S - 2)[1] == 0, "translate y by -3");
  memcpy(img, orig, N);
  ta_apply(TA_SHEAR_X, 0.5, img, S, scratch);
  CHECK(!memcmp(px(img, 3, 0), px(orig, 3, 0), 3), "shear x about the top-left corner keeps row 0");
  CHECK(!memcmp(px(img, 3, 10), px(orig, 3 + 5, 10), 3), "shear x 0.5: row 10 reads 5.25 px across");
  memcpy(img, orig, N);
  ta_apply(TA_ROTATE, 90, img, S, scratch);
  CHECK(memcmp(img, orig, N) != 0, "rotate 90 moves pixels");
  ta_apply(TA_ROTATE, -90, img, S, scratch);
  CHECK(!memcmp(img, orig, N), "rotate 90 then -90 about the centre is the identity (pixel centres map exactly)");
  ta_apply(TA_ROTATE, 45, img, S, scratch);
  CHECK(px(img, 0, 0)[0] == 0 && px(img, S - 1, S - 1)[2] == 0 && !memcmp(px(img, S / 2, S / 2), px(orig, S / 2, S / 2), 3),
        "rotate 45: the corners black, the centre kept");
}

static void test_draw(void) {
  int count[TA_N_OPS] = {0}, negative = 0, signed_draws = 0;
  enum { DRAWS = 14000 };
  for (int s = 0; s < DRAWS; s++) {
    double m, m2;
    ta_op op = ta_draw(0x1234, s, &m);
    CHECK(ta_draw(0x1234, s, &m2) == op && m2 == m, "the draw is a function of key and sample");
    count[op]++;
    if (op >= TA_SHEAR_X && op <= TA_SHARPNESS) signed_draws++, negative += m < 0;
    if (op == TA_POSTERIZE) CHECK(m >= 2 && m <= 8 && m == (int)m, "posterize bits %g", m);
  }
  for (int op = 0; op < TA_N_OPS; op++)
    CHECK(abs(count[op] - DRAWS / TA_N_OPS) < 150, "op %d drawn %d times of %d (uniform: %d)", op, count[op], DRAWS,
          DRAWS / TA_N_OPS);
  CHECK(fabs((double)negative / signed_draws - 0.5) < 0.03, "signed ops negative half the time: %d of %d", negative,
        signed_draws);
  fill_random(7);
  unsigned char a[N];
  trivial_augment_wide(img, S, scratch, 99, 5);
  memcpy(a, img, N);
  memcpy(img, orig, N);
  trivial_augment_wide(img, S, scratch, 99, 5);
  CHECK(!memcmp(a, img, N), "trivial_augment_wide is deterministic");
}

static void test_random_erase(void) {
  static float f[N];
  int erased = 0;
  enum { TRIES = 2000 };
  for (int s = 0; s < TRIES; s++) {
    for (int i = 0; i < N; i++) f[i] = 0.5f;
    int e = random_erase(f, S, 0.25, 42, s);
    erased += e;
    int zeros = 0, x0 = S, x1 = -1, y0 = S, y1 = -1;
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S; x++)
        if (f[(y * S + x) * 3] == 0) {
          zeros++;
          x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1, y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
        }
    if (!e) {
      CHECK(zeros == 0, "sample %d: nothing erased, nothing changed", s);
      continue;
    }
    int w = x1 - x0 + 1, h = y1 - y0 + 1;
    CHECK(zeros == w * h, "sample %d: the erased pixels are one rectangle", s);
    double frac = (double)zeros / (S * S), ratio = (double)h / w;
    /* scale (0.02, 0.33) and ratio (0.3, 3.3), widened by the rounding of h and w */
    CHECK(frac > 0.01 && frac < 0.36 && ratio > 0.2 && ratio < 4.5, "sample %d: area %.3f, ratio %.2f", s, frac, ratio);
  }
  CHECK(fabs((double)erased / TRIES - 0.25) < 0.04, "erased with p 0.25: %d of %d", erased, TRIES);
  CHECK(random_erase(f, S, 0.0, 42, 3) == 0, "p 0 never erases");
}

int main(void) {
  test_magnitudes();
  test_pixel_ops();
  test_geometric_ops();
  test_draw();
  test_random_erase();
  if (!check_failures) printf("ok: TrivialAugmentWide ops, draw, RandomErasing\n");
  return check_status();
}
