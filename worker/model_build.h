/* model_build.h - internal: the calls mobilenet.c uses to describe an architecture to
 * model.c. Not part of the engine's public surface (model.h). */
#ifndef POLLEN_MODEL_BUILD_H
#define POLLEN_MODEL_BUILD_H

#include "worker/model.h"

/* Each returns the id of the tensor it produces; `in` is the id of its input tensor and
 * `cin` its channel count. Names are torchvision's module paths. */
int build_conv_bn_act(model *m, const char *conv_name, const char *bn_prefix, int in, int cin,
                      int cout, int k, int stride, conv_kind kind, act_kind act);
int build_se(model *m, const char *prefix, int in, int channels, int squeeze);
/* in + skip, in's branch dropped per sample with probability drop_path while training. */
int build_add(model *m, int in, int skip, float drop_path);
int build_pool(model *m, int in);
int build_linear(model *m, const char *prefix, int in, int cin, int cout, act_kind act);
int build_dropout(model *m, int in);
/* Channels of a tensor built so far. */
int build_channels(const model *m, int t);

/* torchvision's _make_divisible(v, 8). */
int make_divisible(double v, int divisor);

/* The architectures (mobilenet.c): add every layer to m, whose cfg is set. */
void mobilenet_build(model *m);

#endif
