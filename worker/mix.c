/* mix.c - mixup and CutMix on a batch (see mix.h). */
#include "worker/mix.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"

/* Uniform draws of one stream, four at a time. */
typedef struct {
  uint64_t key;
  uint32_t stream, counter;
  float u[4];
  int left;
} draws;

static double uniform(draws *d) {
  if (!d->left) philox_uniform4(d->key, d->stream, d->counter++, 0x6d6978, d->u), d->left = 4;
  return d->u[--d->left];
}

static double normal(draws *d) { /* Box-Muller; 1 - u is in (0, 1] */
  double r = sqrt(-2.0 * log(1.0 - uniform(d)));
  return r * cos(2.0 * M_PI * uniform(d));
}

/* Gamma(a, 1): Marsaglia and Tsang's method; a < 1 through Gamma(a + 1) U^(1/a). */
static double gamma_draw(draws *d, double a) {
  if (a < 1.0) return gamma_draw(d, a + 1.0) * pow(1.0 - uniform(d), 1.0 / a);
  double dd = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * dd);
  for (;;) {
    double x = normal(d), v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = 1.0 - uniform(d);
    if (log(u) < 0.5 * x * x + dd - dd * v + dd * log(v)) return dd * v;
  }
}

double mix_beta(double a, uint64_t key, uint32_t stream) {
  draws d = {.key = key, .stream = stream};
  double x = gamma_draw(&d, a), y = gamma_draw(&d, a);
  return x + y > 0 ? x / (x + y) : 0.5;
}

enum { STREAM_CHOICE = 1, STREAM_LAMBDA = 2, STREAM_BOX = 3 };

static void mixup(float *images, int N, size_t per, float lam) {
  /* in place, from the last image back: image i mixes with the original i - 1 */
  float *last = xmalloc(per * sizeof *last);
  memcpy(last, images + (size_t)(N - 1) * per, per * sizeof *last);
  for (int i = N - 1; i >= 0; i--) {
    float *x = images + (size_t)i * per;
    const float *prev = i ? images + (size_t)(i - 1) * per : last;
    for (size_t k = 0; k < per; k++) x[k] = lam * x[k] + (1.0f - lam) * prev[k];
  }
  free(last);
}

/* torchvision's box: r_x, r_y uniform in [0, W), [0, H); half sides int(r * W), int(r * H). */
static void cutmix_box(int S, float lam, uint64_t key, int box[4]) {
  draws d = {.key = key, .stream = STREAM_BOX};
  int rx = (int)(uniform(&d) * S), ry = (int)(uniform(&d) * S);
  if (rx >= S) rx = S - 1;
  if (ry >= S) ry = S - 1;
  double r = 0.5 * sqrt(1.0 - lam);
  int hw = (int)(r * S), hh = (int)(r * S);
  box[0] = rx - hw < 0 ? 0 : rx - hw, box[1] = ry - hh < 0 ? 0 : ry - hh;
  box[2] = rx + hw > S ? S : rx + hw, box[3] = ry + hh > S ? S : ry + hh;
}

static void cutmix(float *images, int N, int S, const int box[4]) {
  size_t per = (size_t)S * S * 3, run = (size_t)(box[2] - box[0]) * 3;
  float *last = xmalloc(per * sizeof *last);
  memcpy(last, images + (size_t)(N - 1) * per, per * sizeof *last);
  for (int i = N - 1; i >= 0; i--) {
    float *x = images + (size_t)i * per;
    const float *prev = i ? images + (size_t)(i - 1) * per : last;
    for (int y = box[1]; y < box[3]; y++) {
      size_t at = ((size_t)y * S + box[0]) * 3;
      memcpy(x + at, prev + at, run * sizeof *x);
    }
  }
  free(last);
}

mix_result mix_batch(float *images, const int *labels, int *labels2, int N, int S, double mixup_alpha,
                     double cutmix_alpha, uint64_t key) {
  mix_result r = {MIX_NONE, 1.0f, {0, 0, 0, 0}};
  if (N < 2 || (mixup_alpha <= 0 && cutmix_alpha <= 0)) return r;
  int use_cutmix = cutmix_alpha > 0;
  if (mixup_alpha > 0 && cutmix_alpha > 0) {
    draws d = {.key = key, .stream = STREAM_CHOICE};
    use_cutmix = uniform(&d) < 0.5;
  }
  for (int i = 0; i < N; i++) labels2[i] = labels[(i + N - 1) % N];
  float lam = (float)mix_beta(use_cutmix ? cutmix_alpha : mixup_alpha, key, STREAM_LAMBDA);
  if (!use_cutmix) {
    mixup(images, N, (size_t)S * S * 3, lam);
    r.kind = MIX_MIXUP, r.lam = lam;
    return r;
  }
  cutmix_box(S, lam, key, r.box);
  cutmix(images, N, S, r.box);
  r.kind = MIX_CUTMIX;
  r.lam = 1.0f - (float)((double)(r.box[2] - r.box[0]) * (r.box[3] - r.box[1]) / ((double)S * S));
  return r;
}
