/* test_mix.c - mixup and CutMix (worker/mix.h) against torchvision's semantics computed here:
 * the Beta draws' mean and variance, mixup's images and rolled labels, CutMix's box, pasted
 * pixels and recomputed lambda, the random choice between the two, determinism; and the
 * mixed loss and gradients of the model equal lam times those of the labels plus (1 - lam)
 * times those of the rolled labels (model_forward_mixed, model_backward_mixed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "tests/check.h"
#include "worker/mix.h"
#include "worker/model.h"

enum { S = 16, N = 5, PER = S * S * 3 };

static void test_beta(void) {
  const double alphas[] = {0.2, 1.0, 2.5};
  for (int a = 0; a < 3; a++) {
    double al = alphas[a], sum = 0, sq = 0;
    int n = 6000, in_range = 1;
    for (int i = 0; i < n; i++) {
      double x = mix_beta(al, 1000 + (uint64_t)i, 2);
      in_range &= x >= 0 && x <= 1;
      sum += x, sq += x * x;
    }
    double mean = sum / n, var = sq / n - mean * mean, want = 1.0 / (4 * (2 * al + 1));
    CHECK(in_range, "Beta(%g, %g) draws in [0, 1]", al, al);
    CHECK(fabs(mean - 0.5) < 0.02, "Beta(%g, %g) mean %.4f, want 0.5", al, al, mean);
    CHECK(fabs(var - want) < 0.1 * want + 0.003, "Beta(%g, %g) variance %.4f, want %.4f", al, al, var, want);
  }
  CHECK(mix_beta(0.2, 77, 2) == mix_beta(0.2, 77, 2), "a draw is a function of its key");
}

static float images[N * PER], orig[N * PER];
static int labels[N] = {3, 1, 4, 0, 2}, labels2[N];

static void fill(void) {
  for (int i = 0; i < N; i++)
    for (int k = 0; k < PER; k++) orig[i * PER + k] = (float)i + 0.001f * (float)(k % 97);
  memcpy(images, orig, sizeof images);
}

static void test_mixup(void) {
  fill();
  mix_result r = mix_batch(images, labels, labels2, N, S, 0.2, 0.0, 123);
  CHECK(r.kind == MIX_MIXUP && r.lam >= 0 && r.lam <= 1, "mixup alone: kind %d, lam %g", r.kind, r.lam);
  int ok = 1;
  for (int i = 0; i < N; i++) {
    int p = (i + N - 1) % N;
    ok &= labels2[i] == labels[p];
    for (int k = 0; k < PER; k++)
      ok &= fabsf(images[i * PER + k] - (r.lam * orig[i * PER + k] + (1 - r.lam) * orig[p * PER + k])) < 1e-6f;
  }
  CHECK(ok, "mixup: x_i = lam x_i + (1 - lam) x_(i-1), labels2 the rolled labels");
  memcpy(images, orig, sizeof images);
  mix_result again = mix_batch(images, labels, labels2, N, S, 0.2, 0.0, 123);
  CHECK(again.lam == r.lam, "the same key mixes the same way");
}

static void test_cutmix(void) {
  int boxes_cut = 0;
  for (uint64_t key = 1; key <= 200; key++) {
    fill();
    mix_result r = mix_batch(images, labels, labels2, N, S, 0.0, 1.0, key);
    int *b = r.box;
    CHECK(r.kind == MIX_CUTMIX && b[0] >= 0 && b[1] >= 0 && b[2] <= S && b[3] <= S && b[0] <= b[2] && b[1] <= b[3],
          "key %llu: a box inside the image: %d %d %d %d", (unsigned long long)key, b[0], b[1], b[2], b[3]);
    float lam = 1.0f - (float)((b[2] - b[0]) * (b[3] - b[1])) / (S * S);
    CHECK(r.lam == lam, "key %llu: lam is 1 - the box's share: %g vs %g", (unsigned long long)key, r.lam, lam);
    boxes_cut += (b[2] - b[0]) * 2 < S && (b[0] == 0 || b[2] == S);
    int ok = 1;
    for (int i = 0; i < N; i++) {
      int p = (i + N - 1) % N;
      for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
          int inside = x >= b[0] && x < b[2] && y >= b[1] && y < b[3];
          size_t at = (size_t)i * PER + ((size_t)y * S + x) * 3;
          size_t from = (size_t)(inside ? p : i) * PER + ((size_t)y * S + x) * 3;
          ok &= !memcmp(images + at, orig + from, 3 * sizeof(float));
        }
    }
    CHECK(ok, "key %llu: inside the box the previous image's pixels, outside the image's own", (unsigned long long)key);
  }
  CHECK(boxes_cut > 0, "some boxes are cut at the border");
  int cut = 0;
  for (uint64_t key = 1; key <= 400; key++) {
    fill();
    cut += mix_batch(images, labels, labels2, N, S, 0.2, 1.0, key).kind == MIX_CUTMIX;
  }
  CHECK(cut > 160 && cut < 240, "with both on, CutMix chosen %d of 400 times (half)", cut);
  fill();
  CHECK(mix_batch(images, labels, labels2, N, S, 0, 0, 9).kind == MIX_NONE && !memcmp(images, orig, sizeof images),
        "both off: nothing changes");
  CHECK(mix_batch(images, labels, labels2, 1, S, 0.2, 1.0, 9).kind == MIX_NONE, "a batch of one is not mixed");
}

/* The mixed loss and gradient are the lam-weighted sum of the two labels' ones. */
static void test_mixed_loss(void) {
  model_config cfg = {(model_arch)model_arch_parse("mnv3-small"), 0.35, 5, 0.0f, 0};
  enum { B = 4, SZ = 32 };
  static float x[B * SZ * SZ * 3];
  for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = sinf(0.013f * (float)i);
  int y1[B] = {0, 1, 2, 3}, y2[B] = {4, 0, 1, 2};
  const float lam = 0.3f, smoothing = 0.1f;
  model m;
  model_init(&m, &cfg, 5);
  model_prepare(&m, B, SZ);
  float *g1 = malloc(m.n_params * sizeof(float)), *g2 = malloc(m.n_params * sizeof(float));
  REQUIRE(g1 && g2, "memory");
  model_zero_grads(&m);
  float l1 = model_forward(&m, x, y1, B, 1, smoothing);
  model_backward(&m, y1, B, smoothing);
  memcpy(g1, m.grads, m.n_params * sizeof(float));
  model_zero_grads(&m);
  float l2 = model_forward(&m, x, y2, B, 1, smoothing);
  model_backward(&m, y2, B, smoothing);
  memcpy(g2, m.grads, m.n_params * sizeof(float));
  model_zero_grads(&m);
  float lm = model_forward_mixed(&m, x, y1, y2, lam, B, smoothing);
  model_backward_mixed(&m, y1, y2, lam, B, smoothing);
  CHECK(fabsf(lm - (lam * l1 + (1 - lam) * l2)) < 1e-5f, "mixed loss %g = %g x %g + %g x %g", lm, lam, l1, 1 - lam, l2);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < m.n_params; i++) {
    double want = lam * g1[i] + (1 - lam) * g2[i];
    worst = fmax(worst, fabs(m.grads[i] - want));
    scale = fmax(scale, fabs(want));
  }
  CHECK(worst <= 1e-4 * scale, "mixed gradients are the weighted sum: max error %g of %g", worst, scale);
  free(g1), free(g2);
  model_free(&m);
}

int main(void) {
  test_beta();
  test_mixup();
  test_cutmix();
  test_mixed_loss();
  if (!check_failures) printf("ok: mixup, CutMix, their Beta draws and the mixed loss\n");
  return check_status();
}
