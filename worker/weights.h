/* weights.h - the model's weights as safetensors with torchvision's names and layouts, so a
 * model trained by pollen loads into torchvision with load_state_dict(strict=True) and
 * torchvision weights load into pollen (fine-tuning). Not for: resumable training state
 * (checkpoints). */
#ifndef POLLEN_WEIGHTS_H
#define POLLEN_WEIGHTS_H

#include "proto/safetensors.h"
#include "worker/model.h"

/* Copy one parameter between the engine's layout and torchvision's (param_info.layout). */
void weights_to_torch(const param_info *p, const float *engine, float *torch);
void weights_from_torch(const param_info *p, const float *torch, float *engine);

/* A batch of PyTorch images [n][3][hw] (NCHW, hw = H*W) into the engine's NHWC [n][hw][3]. */
void weights_images_from_torch(const float *nchw, float *nhwc, int n, int hw);

/* Adds every parameter, BN running statistic and num_batches_tracked, named as torchvision's
 * state_dict, plus metadata (model, width, classes, pollen version) to w. */
void weights_add_state_dict(const model *m, st_writer *w);
/* Writes weights_add_state_dict's tensors to path (atomically), with what inference needs in
 * the metadata: the class names (may be NULL) as a JSON array, the training image_size (0:
 * unknown, not written) and the input normalization (WEIGHTS_NORMALIZATION). Returns 0, or -1
 * with a one-line reason in err (a full disk, say) and path untouched. */
#define WEIGHTS_NORMALIZATION "{\"range\":[-1,1],\"formula\":\"x/127.5-1\",\"channels\":\"RGB\",\"layout\":\"NCHW\"}"
int weights_export(const model *m, const char *path, const char *const *class_names, int image_size, char *err,
                   size_t errlen);
/* The training image size in f's metadata, or 0 when it has none (older exports). */
int weights_image_size(const st_file *f);
/* The class names stored by weights_export: a malloc'd array of num_classes malloc'd strings,
 * or NULL when the file has none. */
char **weights_class_names(const st_file *f, int num_classes);

/* Loads a torchvision-named state dict from f into m: every parameter and BN buffer must be
 * present with the right shape, or it dies naming the tensor. With skip_classifier, the
 * last Linear layer is left as initialised when its class count differs (fine-tuning
 * ImageNet weights on 5 classes). With strict, a tensor in f that the model lacks is refused
 * (like load_state_dict); reference files hold more and load with strict 0. */
void weights_load_state_dict(model *m, const st_file *f, const char *prefix, int skip_classifier,
                             int strict);
/* Opens path and loads it (prefix ""); the model config must match the file's metadata when
 * present. */
void weights_import(model *m, const char *path, int skip_classifier);

/* Reads model, width and classes from a pollen-exported file's metadata into cfg; returns 0,
 * or -1 when the file has no pollen metadata. */
int weights_read_config(const st_file *f, model_config *cfg);

#endif
