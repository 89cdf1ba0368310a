/* loader.h - reads a prepared split (proto/manifest.h) as batches of float images for
 * training or evaluation, decoding on background threads ahead of the training step.
 *
 * Preprocessing (output [B][S][S][3] NHWC float32, x/127.5 - 1, i.e. in [-1, 1]):
 *   train (augment=1): torchvision RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3)),
 *     including its 10 attempts and the center-crop fallback, bilinear resize to S x S, then
 *     horizontal flip with p = 0.5; then, when asked, TrivialAugmentWide on the uint8 image and
 *     RandomErasing on the normalised one (worker/augment.h).
 *   eval (augment=0): resize the shorter side to S/0.875 (256 for 224) and take the center
 *     S x S crop, done in one bilinear step from the matching center region of the photo.
 * JPEGs far larger than needed are decoded at a reduced DCT scale (1/2, 1/4, ... the smallest
 * that still covers the crop at S pixels), so the remaining bilinear downscale is under 2x.
 * Decoded photos can be kept (loader_set_cache) for the epochs after, one entry per DCT scale
 * a photo's crops asked for: decoding is most of the loader's time, and the batches are the
 * same bytes with or without it.
 * Every random choice comes from Philox keyed by (seed, epoch, sample index): the batches are
 * identical whatever the thread count or timing. Not for: the epoch order (proto/plan.h). */
#ifndef POLLEN_LOADER_H
#define POLLEN_LOADER_H

#include <stddef.h>
#include <stdint.h>

/* torchvision's RandomResizedCrop scale=(0.08, 1): the smallest crop when crop_scale is 0. */
#define LOADER_CROP_SCALE_DEFAULT 0.08

typedef struct {
  const char *data_dir; /* holds manifest.json */
  const char *split;    /* "train" | "val" */
  int image_size;       /* S */
  int batch;
  int augment;          /* 1 train augmentation, 0 eval preprocessing */
  int trivial_augment;  /* with augment: TrivialAugmentWide after the crop and flip */
  double random_erase;  /* with augment: RandomErasing probability (0: off) */
  double crop_scale;    /* with augment: RandomResizedCrop's smallest area fraction (0: the default) */
  uint64_t seed;
  int threads;          /* decode threads, 0 = all cores */
  int inline_decode;    /* 1: no decode threads; loader_next decodes its batch on the caller's
                           OpenMP threads (no overlap with the step, no pre-empted compute thread) */
  int nice;             /* the decode threads' nice value (0..19): yield the cores to the step */
} loader_config;

typedef struct loader loader;

/* Dies with a clear message on a bad folder, manifest or shard. */
loader *loader_open(const loader_config *cfg);
/* Samples in the split; sample i is record i of the split's shards taken in manifest order. */
int loader_size(const loader *l);
int loader_num_classes(const loader *l);
const char *loader_class_name(const loader *l, int k);
/* Reads these sample indices (into the split) in this order; copies the array. Cancels what is
 * left of a previous epoch. */
void loader_start_epoch(loader *l, int epoch, const int64_t *order, int64_t n);
/* Fills up to `batch` images and labels; returns the count (0 at the end of the epoch; the
 * last batch may be short). Dies naming the shard and record if one is damaged. */
int loader_next(loader *l, float *images, int *labels);
/* Eval preprocessing of one JPEG in memory into out [size][size][3] (pollen predict): the
 * same crop and normalisation as the eval loader, after loader_decode_jpeg_checked's check.
 * Returns 0, or -1 with a reason in err (not a JPEG, damaged, truncated). */
int loader_preprocess_jpeg(const unsigned char *jpeg, size_t len, int size, float *out, char *err,
                           size_t errlen);
/* The one check for photos a user hands in (`pollen prepare`, `pollen predict`): decodes the
 * whole JPEG into rgb (w x h: its size, or a TJSCALED size of it) with the TurboJPEG
 * decompressor tj, and refuses a damaged one. libjpeg-turbo reports truncated data or a bad
 * Huffman code only as a warning and fills the rest with grey, so a warning fails here like an
 * error. Shards hold only photos that passed it. Returns 0, or -1 with the reason in why. */
int loader_decode_jpeg_checked(void *tj, const unsigned char *jpeg, size_t len, unsigned char *rgb, int w,
                               int h, char *why, size_t whylen);
/* Keeps up to `bytes` of decoded photos (each at the DCT scales its crops asked for) for later
 * epochs (0: none, the default); entries are never evicted. Before the first
 * loader_start_epoch. */
void loader_set_cache(loader *l, size_t bytes);
/* What the decoded-photo cache holds now: photos and bytes. */
int64_t loader_cached_photos(const loader *l, size_t *bytes);
/* Stops and joins the threads; safe at any point of an epoch. */
void loader_close(loader *l);

#endif
