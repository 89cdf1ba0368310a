/* model.h - MobileNetV3-Small/Large and MobileNetV2 as torchvision 0.14 defines them, on ops/.
 *
 * The network is a flat list of layers over numbered activation tensors (NHWC). All
 * parameters live in one buffer (params) and all gradients in another (grads) of the same
 * layout, so one all-reduce, one checkpoint section and one hash cover "the model". Each
 * parameter has its torchvision name and shape; safetensors import/export converts layouts.
 * Activations are allocated once per (batch, image size) and reused: no allocation happens
 * inside a training step after the first. Not for: optimizers (optim.h), data (loader.h). */
#ifndef POLLEN_MODEL_H
#define POLLEN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ops/ops.h"

typedef enum { MODEL_MNV3_SMALL, MODEL_MNV3_LARGE, MODEL_MNV2 } model_arch;

typedef struct {
  model_arch arch;
  double width;     /* width multiplier (double, as torchvision rounds channels in double), e.g. 1.0, 0.75, 0.5 */
  int num_classes;
  float dropout;    /* before the last Linear; torchvision's default 0.2 */
  float drop_path;  /* stochastic depth: the last block's rate, block b's is drop_path * b / blocks */
} model_config;

/* "mnv3-small" | "mnv3-large" | "mnv2" -> arch; returns -1 for an unknown name. */
int model_arch_parse(const char *name);
const char *model_arch_name(model_arch arch);

/* How the engine stores a weight versus torchvision's layout. */
typedef enum {
  PARAM_PLAIN,     /* identical layout: BN, biases, Linear and 1x1 conv [Cout][Cin](x1x1) */
  PARAM_CONV_OHWI, /* torchvision [Cout][Cin][K][K], engine [Cout][K][K][Cin] */
  PARAM_DW_HWC,    /* torchvision [C][1][K][K], engine [K][K][C] */
} param_layout;

typedef struct {
  char name[128];     /* torchvision state_dict name, e.g. features.0.0.weight */
  int ndim;
  int64_t shape[4];   /* torchvision shape */
  size_t offset;      /* into params / grads, in floats */
  size_t numel;
  param_layout layout;
  int no_decay;       /* BN weights/biases and biases: excluded from weight decay by default */
} param_info;

/* One batch norm's running statistics (state_dict buffers, not parameters). */
typedef struct {
  char prefix[128];   /* e.g. features.0.1 (names are prefix.running_mean, ...) */
  int channels;
  size_t offset;      /* running_mean at stats + offset, running_var right after it */
} bn_info;

typedef enum { LAYER_CONV, LAYER_SE, LAYER_ADD, LAYER_POOL, LAYER_LINEAR, LAYER_DROPOUT } layer_kind;
typedef enum { CONV_FULL, CONV_DEPTHWISE, CONV_POINTWISE } conv_kind;

/* A layer reads tensor `in` (and `skip` for ADD) and writes tensor `out`. CONV is
 * conv + batch norm + activation: it keeps its conv output `pre` (before BN) for backward,
 * whose fused BN+act kernel recomputes the BN output on the fly instead of storing it. On the
 * CPU its output `out` is not kept either: backward recomputes it from `pre` for the layers
 * that read it (tensor.producer). LINEAR keeps its pre-activation in `pre` when it has an activation. */
typedef struct {
  layer_kind kind;
  int in, out, skip, pre;
  conv_kind conv;
  int k, stride;
  int h, w, ho, wo;       /* input and output spatial size, for the allocated image size */
  int cin, cout, squeeze; /* squeeze: SE hidden width */
  act_kind act;
  size_t weight, bias;    /* conv/linear weight and bias; SE fc1 */
  size_t weight2, bias2;  /* SE fc2 */
  size_t gamma, beta;     /* batch norm */
  int bn;                 /* index into bn_info, -1 if none */
  size_t save;            /* offset into the save arena: BN mean/rstd or SE state */
  float drop_path;        /* ADD: probability of dropping the branch `in` per sample (training) */
} layer;

typedef struct {
  int hw_c[3];            /* per-image shape: H, W, C (pooled/linear tensors: 1, 1, C) */
  size_t per_image;       /* floats per image */
  float *data;
  /* A CONV layer's output on a device that recomputes it (model_ops.bn_act_recompute): the
   * layer (producer) that writes it; -1 for a tensor kept from forward to backward. Such a
   * tensor borrows a pool buffer in forward from its producer to its last reader
   * (last_read), and again in backward for each layer that reads it there. */
  int producer, last_read;
} tensor;

struct model_ops;    /* model_ops.h: the device's functions */
struct model_device; /* a device's own state (model_cuda.c: its buffers and streams) */

typedef struct model {
  model_config cfg;
  float bn_eps, bn_momentum;

  float *params, *grads;
  size_t n_params;
  param_info *param;
  int n_param;

  float *stats;           /* BN running mean/var, bn_info.offset */
  size_t n_stats;
  int64_t *bn_tracked;    /* num_batches_tracked per BN */
  bn_info *bn;
  int n_bn;

  layer *layers;
  int n_layers;
  tensor *tensors;        /* tensors[0] is the input images */
  int n_tensors;
  int logits_tensor;

  /* Allocated by model_prepare for (batch, size). */
  int batch, size;
  int keep_activations;   /* model_keep_activations: no recomputation in backward */
  float *save;            /* BN mean/rstd, SE saved values */
  size_t n_save;
  float *scratch;         /* im2col */
  size_t n_scratch;
  float *probs;           /* softmax of the logits [batch][classes] */
  float **grad_pool;      /* backward's reusable gradient buffers */
  int n_grad_pool, grad_pool_cap;
  size_t grad_floats;
  float **grad_of;        /* per tensor: its gradient buffer during backward, or NULL */
  uint64_t dropout_seed;  /* set per step by the worker: dropout and stochastic-depth masks depend only on it */
  /* Called during backward after each layer with parameters: every gradient at offset >=
   * lowest is final (the collectives start all-reducing it). May be NULL. */
  void (*grads_ready)(void *ctx, size_t lowest);
  void *grads_ready_ctx;
  /* The device the engine runs on, chosen once: model_init the CPU, model_use_cuda a GPU. The
   * graph walk calls every op through ops; dev is the device's own state (NULL on the CPU).
   * live_params/grads/stats are what the ops read and update: params/grads/stats above on
   * the CPU; on a GPU device memory, and params/grads/stats are host copies, brought up to
   * date by model_sync_to_host. */
  const struct model_ops *ops;
  struct model_device *dev;
  float *live_params, *live_grads, *live_stats;
  /* model_profile: seconds per layer, forward at [2i] and backward at [2i+1], and the steps
   * they cover; NULL when not profiling. */
  double *prof;
  int prof_steps;
} model;

/* Builds the architecture and initialises parameters as torchvision does (Kaiming normal
 * fan-out for convs, N(0, 0.01) for Linear, ones/zeros for BN), from `seed`. */
void model_init(model *m, const model_config *cfg, uint64_t seed);
/* BN running statistics back to their start (mean 0, var 1, no batches tracked), on the host
 * copy: model_sync_to_device after it on a GPU. */
void model_reset_bn_stats(model *m);
/* Precise BN with torch.optim.swa_utils.update_bn's semantics: the running statistics become
 * the plain average of the batch statistics (mean, unbiased variance) of the batches that
 * next_batch puts in images (returning their count, 0 at the end), from train-mode forwards
 * without backward: momentum 1/k at the k-th batch, from mean 0 and variance 1. No block is
 * dropped (stochastic depth): the statistics are those of the network evaluation runs. Host
 * copies current afterwards. */
void model_precise_bn(model *m, int (*next_batch)(void *ctx, float *images), void *ctx, float *images);
void model_free(model *m);

/* Allocates activations for batches of up to `batch` images of size x size. Idempotent for
 * the same shape; call again to change it. */
void model_prepare(model *m, int batch, int size);

/* keep = 1: backward reads every activation forward kept instead of recomputing the conv+BN+act
 * outputs (faster, more memory; the same bits either way). Before model_prepare. */
void model_keep_activations(model *m, int keep);

/* Moves the engine to the current CUDA device (worker/device.h's device_select first):
 * uploads parameters and BN statistics, and re-allocates the prepared activations there.
 * gemm_math: the GEMMs' precision, a cuda_math (ops/cuda/ops_cuda.h; 0 = exact float32).
 * From then on model_forward/backward run as CUDA kernels; their arguments stay host memory
 * (images are copied on a stream of their own, overlapping the previous step's work when
 * they are page-locked: model_host_alloc). Dies in a build without CUDA. */
void model_use_cuda(model *m, int gemm_math);
/* Device -> host copies of parameters, gradients and BN statistics (a checkpoint, a hash,
 * an export); host -> device of parameters and statistics after the host changed them.
 * Both are no-ops on the CPU. */
void model_sync_to_host(model *m);
void model_sync_to_device(model *m);
/* The model's CUDA context (struct cuda_ctx, ops/cuda/ops_cuda.h), NULL on the CPU: for the
 * GPU halves of other modules (the optimizer's update, NCCL's fences) to queue on its stream. */
struct cuda_ctx *model_cuda_ctx(const model *m);
/* Waits until the device has run everything queued (timing); no-op on the CPU. */
void model_wait(model *m);
/* The buffers training updates (device memory on a GPU): what optim_step gets. */
float *model_live_params(model *m);
float *model_live_grads(model *m);
/* Host memory for batches: page-locked on a GPU (asynchronous copies), aligned otherwise.
 * Free with model_host_free on the same model. */
void *model_host_alloc(const model *m, size_t bytes);
void model_host_free(const model *m, void *p);

/* Forward on N <= batch images [N][size][size][3], which are not copied: they must stay
 * unchanged until the matching model_backward. train: batch statistics (running stats
 * updated), dropout and stochastic depth (masks from dropout_seed); else running statistics,
 * the whole network. With labels, returns the mean
 * cross-entropy (label smoothing `smoothing`) and fills m->probs; else returns 0. */
float model_forward(model *m, const float *images, const int *labels, int N, int train,
                    float smoothing);
/* Backward of the last train-mode forward; ACCUMULATES into m->grads (model_zero_grads
 * first for a fresh step). */
void model_backward(model *m, const int *labels, int N, float smoothing);
/* Training on mixed images (mixup, CutMix: worker/mix.h): the target is lam * the smoothed
 * one-hot of labels + (1 - lam) * that of labels2, so the loss and its gradient are lam times
 * those of labels plus (1 - lam) times those of labels2. CPU only. */
float model_forward_mixed(model *m, const float *images, const int *labels, const int *labels2, float lam, int N,
                          float smoothing);
void model_backward_mixed(model *m, const int *labels, const int *labels2, float lam, int N, float smoothing);
void model_zero_grads(model *m);

/* Per-layer timing (pollen bench --profile): on = 1 starts accumulating each layer's forward
 * and backward time, waiting for the device after every layer (so the total is a little
 * slower than an unprofiled step); on = 0 stops. model_profile_print writes the table, per
 * step: the slowest layers and the totals per kind of layer. */
void model_profile(model *m, int on);
void model_profile_print(const model *m, FILE *to, int top);

/* Logits of the last forward, [N][num_classes]. */
const float *model_logits(const model *m);

/* Multiply-adds of one forward pass of one image at size x size (x2 = FLOPs). */
double model_macs(const model *m, int size);
/* Bytes of activations + saves + scratch + gradient pool for the prepared shape. */
size_t model_activation_bytes(const model *m);

/* The parameter of this torchvision name (BN buffers are not parameters: see bn_info), or NULL. */
const param_info *model_find_param(const model *m, const char *name);

/* Stable fingerprint of parameters + BN statistics (bit-level). */
uint64_t model_hash(const model *m);
/* Of the parameters alone: what must be identical on every rank (BN statistics are per rank). */
uint64_t model_hash_params(const model *m);

#endif
