/* mix.h - mixup and CutMix on a rank's batch, torchvision's reference semantics
 * (references/classification/transforms.py RandomMixup / RandomCutmix, p = 1, chosen at
 * random per batch when both are on; applied to each process's own batch as its DDP
 * collate_fn does):
 *   mixup:  lam ~ Beta(alpha, alpha); x = lam x + (1 - lam) x.roll(1); target likewise;
 *   CutMix: lam ~ Beta(alpha, alpha); a box of half-size (W, H) * sqrt(1 - lam) / 2 about a
 *           uniform centre, cut at the borders, is pasted from the rolled batch, and lam is
 *           recomputed as 1 - box area / image area.
 * The rolled batch's labels are labels2 (labels2[i] = labels[i - 1 mod N]); the loss then
 * takes lam of one and 1 - lam of the other (model_forward_mixed). Every draw comes from
 * Philox keyed by the caller (seed, step, rank): a resume redoes the same mixing. */
#ifndef POLLEN_MIX_H
#define POLLEN_MIX_H

#include <stdint.h>

typedef enum { MIX_NONE, MIX_MIXUP, MIX_CUTMIX } mix_kind;

typedef struct {
  mix_kind kind;
  float lam;
  int box[4]; /* CutMix: x1, y1, x2, y2 (exclusive ends) */
} mix_result;

/* A Beta(a, a) draw from Philox stream `stream` of key (two gamma draws, Marsaglia-Tsang). */
double mix_beta(double a, uint64_t key, uint32_t stream);

/* Mixes images [N][S][S][3] (NHWC) in place and fills labels2; alphas 0 turn a method off.
 * N < 2 or both off: MIX_NONE, nothing changed. */
mix_result mix_batch(float *images, const int *labels, int *labels2, int N, int S, double mixup_alpha,
                     double cutmix_alpha, uint64_t key);

#endif
