/* model_ops.h - the per-device table of functions the model's graph walk (model.c) calls: one
 * table per device, each in a file of its own (model_cpu.c, model_cuda.c). The device is
 * chosen once, at set-up (model_init: the CPU; model_use_cuda: a GPU), and the walk calls
 * m->ops->X(m, ...) with no test of the device anywhere. A new device is one new table; a new
 * op is one entry here and one function in each table.
 *
 * Every entry takes the model first: a device's own state hangs off it (m->dev). An op entry
 * then takes exactly the arguments of ops/ops.h's function of the same name, in the device's
 * memory (conv2d_scratch_floats adds the batch, which the GPU's im2col covers whole). The
 * other entries own the device's memory and move a step's inputs and outputs.
 * Private to worker/model*.c. */
#ifndef POLLEN_MODEL_OPS_H
#define POLLEN_MODEL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"
#include "worker/model.h"

typedef struct model_ops model_ops;
struct model_ops {
  /* ---- the device's memory and state ---- */
  float *(*act_alloc)(const model *m, size_t floats); /* activations, saves, scratch, gradients */
  void (*act_free)(const model *m, void *p);
  void *(*host_alloc)(const model *m, size_t bytes); /* model_host_alloc */
  void (*host_free)(const model *m, void *p);
  /* The device's own buffers for a batch shape (model_prepare), and their release. */
  void (*shape_alloc)(model *m, int batch, int size);
  void (*shape_free)(model *m);
  void (*release)(model *m); /* model_free: everything the device holds for m */
  void (*sync_to_host)(model *m);
  void (*sync_to_device)(model *m);
  void (*wait)(model *m);
  void (*memset0)(model *m, void *p, size_t bytes);
  void (*copy)(model *m, void *dst, const void *src, size_t bytes);

  /* ---- a step's inputs and outputs ---- */
  /* Makes the caller's images (and labels, may be NULL) readable by the ops; returns where
   * the images are for them. */
  const float *(*stage_inputs)(model *m, const float *images, const int *labels, int N);
  /* After the forward walk: makes model_logits readable and, with labels, fills m->probs and
   * returns the mean cross-entropy; 0 without labels. */
  float (*loss_forward)(model *m, const int *labels, int N, float smoothing);
  const float *(*logits)(const model *m);
  /* dlogits of the last loss_forward with these labels. */
  void (*loss_backward)(model *m, float *dlogits, const int *labels, int N, float smoothing);

  /* ---- the ops (ops/ops.h) ---- */
  size_t (*conv2d_scratch_floats)(const model *m, int N, int H, int W, int Cin, int K, int stride);
  void (*conv2d_backward)(model *m, float *din, float *dw, const float *dout, const float *in,
                          const float *w, int N, int H, int W, int Cin, int Cout, int K,
                          int stride, float *scratch);
  void (*dwconv_backward)(model *m, float *din, float *dw, const float *dout, const float *in,
                          const float *w, int N, int H, int W, int C, int K, int stride);
  void (*linear_forward)(model *m, float *out, const float *in, const float *w,
                         const float *bias, int M, int Cin, int Cout);
  void (*linear_backward)(model *m, float *din, float *dw, float *dbias, const float *dout,
                          const float *in, const float *w, int M, int Cin, int Cout);
  /* The training forward of a conv + BN + act layer, ops.h's conv_bn_act_forward_train: x =
   * conv(in) (kept for backward), y = act(BN(x)) with the batch's statistics, saved in
   * save_mean/save_rstd and folded into the running ones. */
  void (*conv_bn_act_forward_train)(model *m, float *y, float *x, float *save_mean,
                                    float *save_rstd, float *running_mean, float *running_var,
                                    const float *in, const float *w, conv_kind kind,
                                    const float *gamma, const float *beta, float eps,
                                    float momentum, int N, int H, int W, int Cin, int Cout, int K,
                                    int stride, act_kind act, float *scratch);
  /* The eval forward of a conv + BN + act layer, ops.h's conv_bn_act_forward_eval: out =
   * act(BN_eval(conv(in))). x is the layer's conv output buffer, for a device that does it
   * in two steps (the CPU folds BN into the conv and does not write it). */
  void (*conv_bn_act_forward_eval)(model *m, float *out, float *x, const float *in,
                                   const float *w, conv_kind kind, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, float eps, int N, int H, int W,
                                   int Cin, int Cout, int K, int stride, act_kind act,
                                   float *scratch);
  void (*batchnorm_act_backward)(model *m, float *din, float *dgamma, float *dbeta,
                                 const float *dout, const float *in, const float *save_mean,
                                 const float *save_rstd, const float *gamma, const float *beta,
                                 int M, int C, act_kind act);
  /* ops.h's batchnorm_act_recompute; NULL where the device keeps every activation instead. */
  void (*bn_act_recompute)(model *m, float *y, const float *x, const float *save_mean,
                           const float *save_rstd, const float *gamma, const float *beta, int M,
                           int C, act_kind act);
  void (*act_forward)(model *m, float *out, const float *in, size_t n, act_kind act);
  void (*act_backward)(model *m, float *din, const float *dout, const float *in, size_t n,
                       act_kind act);
  void (*avgpool_forward)(model *m, float *out, const float *in, int N, int HW, int C);
  void (*avgpool_backward)(model *m, float *din, const float *dout, int N, int HW, int C);
  void (*se_forward)(model *m, float *out, float *save, const float *in, const float *w1,
                     const float *b1, const float *w2, const float *b2, int N, int HW, int C,
                     int Cs);
  void (*se_backward)(model *m, float *din, float *dw1, float *db1, float *dw2, float *db2,
                      const float *dout, const float *in, const float *save, const float *w1,
                      const float *w2, int N, int HW, int C, int Cs);
  void (*residual_forward)(model *m, float *out, const float *a, const float *b, size_t n);
  void (*residual_backward)(model *m, float *da, const float *dout, size_t n);
  void (*drop_path_forward)(model *m, float *out, const float *branch, const float *skip, int N,
                            size_t per_image, float p, uint64_t seed);
  void (*drop_path_backward)(model *m, float *dbranch, const float *dout, int N,
                             size_t per_image, float p, uint64_t seed);
  void (*dropout_forward)(model *m, float *out, const float *in, size_t n, float p,
                          uint64_t seed);
  void (*dropout_backward)(model *m, float *din, const float *dout, size_t n, float p,
                           uint64_t seed);
};

/* model_cpu.c: ops/ on the host; what model_init sets. */
extern const model_ops model_cpu_ops;

/* model_cuda.c: puts m on the current CUDA device (worker/device.h's device_select first):
 * its table and device state, the device's parameter, gradient (zeroed) and statistics
 * buffers as m's live ones. The caller uploads the parameters and re-prepares the shape.
 * Dies in a build without CUDA. */
void model_cuda_open(model *m, int gemm_math);

#endif
