/* augment.h - the training augmentations after the crop, with torchvision's semantics
 * (its classification reference recipe: RandomResizedCrop, RandomHorizontalFlip, then these):
 *   TrivialAugmentWide (torchvision.transforms.TrivialAugmentWide, num_bins 31): one op drawn
 *     uniformly from 14 (Identity, ShearX, ShearY, TranslateX, TranslateY, Rotate, Brightness,
 *     Color, Contrast, Sharpness, Posterize, Solarize, AutoContrast, Equalize), a magnitude bin
 *     drawn uniformly from 31, and for the signed ops a sign with p = 0.5; on the uint8 image,
 *     geometric ops with nearest interpolation and black fill, as torchvision does;
 *   RandomErasing (torchvision.transforms.RandomErasing, scale (0.02, 0.33), ratio (0.3, 3.3),
 *     value 0, 10 attempts) with probability p, on the normalised image.
 * Every draw comes from Philox keyed by the loader's (seed, epoch) key and the sample index, so
 * an image's augmentation is the same whatever the thread count. Not for: the crop and flip
 * (worker/loader.c), batch-level mixing. */
#ifndef POLLEN_AUGMENT_H
#define POLLEN_AUGMENT_H

#include <stdint.h>

typedef enum {
  TA_IDENTITY, TA_SHEAR_X, TA_SHEAR_Y, TA_TRANSLATE_X, TA_TRANSLATE_Y, TA_ROTATE, TA_BRIGHTNESS,
  TA_COLOR, TA_CONTRAST, TA_SHARPNESS, TA_POSTERIZE, TA_SOLARIZE, TA_AUTOCONTRAST, TA_EQUALIZE,
  TA_N_OPS
} ta_op;

#define TA_BINS 31

/* The op's magnitude at bin (0..30), unsigned: torchvision's _augmentation_space for
 * TrivialAugmentWide. Posterize: bits kept; Solarize: the threshold; others: shear factor,
 * pixels, degrees, or the enhancement offset (factor 1 + m). */
double ta_magnitude(ta_op op, int bin);
/* Applies one op with a signed magnitude to an RGB image (S x S x 3 bytes, in place; scratch
 * holds S*S*3 bytes). */
void ta_apply(ta_op op, double magnitude, unsigned char *rgb, int S, unsigned char *scratch);
/* TrivialAugmentWide's draw for this sample: the op, and its signed magnitude. */
ta_op ta_draw(uint64_t key, int64_t sample, double *magnitude);
/* TrivialAugmentWide on rgb: ta_apply of ta_draw's op. */
void trivial_augment_wide(unsigned char *rgb, int S, unsigned char *scratch, uint64_t key, int64_t sample);

/* RandomErasing(p) on a normalised S x S x 3 float image (NHWC), in place; 1 when it erased. */
int random_erase(float *img, int S, double p, uint64_t key, int64_t sample);

#endif
