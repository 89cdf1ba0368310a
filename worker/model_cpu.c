/* model_cpu.c - the CPU's model_ops table: ops/ on host memory, every call forwarded as it is
 * (the CPU has no device state: m->dev stays NULL). See model_ops.h. */
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "ops/ops.h"
#include "worker/model_ops.h"

static float *cpu_act_alloc(const model *m, size_t floats) {
  return xmalloc_aligned(floats * sizeof(float));
}
static void cpu_act_free(const model *m, void *p) { free(p); }
static void *cpu_host_alloc(const model *m, size_t bytes) { return xmalloc_aligned(bytes); }
static void cpu_host_free(const model *m, void *p) { free(p); }
/* Nothing lives anywhere but in the model's own host buffers. */
static void cpu_nothing(model *m) {}
static void cpu_shape_alloc(model *m, int batch, int size) {}
static void cpu_memset0(model *m, void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(model *m, void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static const float *cpu_stage_inputs(model *m, const float *images, const int *labels, int N) {
  return images;
}

static const float *cpu_logits(const model *m) { return m->tensors[m->logits_tensor].data; }

static float cpu_loss_forward(model *m, const int *labels, int N, float smoothing) {
  if (!labels) return 0.0f;
  return crossentropy_forward(m->probs, cpu_logits(m), labels, N, m->cfg.num_classes, smoothing);
}

static void cpu_loss_backward(model *m, float *dlogits, const int *labels, int N, float smoothing) {
  crossentropy_backward(dlogits, m->probs, labels, N, m->cfg.num_classes, smoothing);
}

/* The CPU's im2col covers one image at a time. */
static size_t cpu_conv2d_scratch_floats(const model *m, int N, int H, int W, int Cin, int K, int stride) {
  return conv2d_scratch_floats(H, W, Cin, K, stride);
}

static void cpu_conv2d_backward(model *m, float *din, float *dw, const float *dout, const float *in,
                                const float *w, int N, int H, int W, int Cin, int Cout, int K,
                                int stride, float *scratch) {
  conv2d_backward(din, dw, dout, in, w, N, H, W, Cin, Cout, K, stride, scratch);
}

static void cpu_dwconv_backward(model *m, float *din, float *dw, const float *dout, const float *in,
                                const float *w, int N, int H, int W, int C, int K, int stride) {
  dwconv_backward(din, dw, dout, in, w, N, H, W, C, K, stride);
}

static void cpu_linear_forward(model *m, float *out, const float *in, const float *w,
                               const float *bias, int M, int Cin, int Cout) {
  linear_forward(out, in, w, bias, M, Cin, Cout);
}

static void cpu_linear_backward(model *m, float *din, float *dw, float *dbias, const float *dout,
                                const float *in, const float *w, int M, int Cin, int Cout) {
  linear_backward(din, dw, dbias, dout, in, w, M, Cin, Cout);
}

static void cpu_batchnorm_act_backward(model *m, float *din, float *dgamma, float *dbeta,
                                       const float *dout, const float *in, const float *save_mean,
                                       const float *save_rstd, const float *gamma, const float *beta,
                                       int M, int C, act_kind act) {
  batchnorm_act_backward(din, dgamma, dbeta, dout, in, save_mean, save_rstd, gamma, beta, M, C, act);
}

static void cpu_bn_act_recompute(model *m, float *y, const float *x, const float *save_mean,
                                 const float *save_rstd, const float *gamma, const float *beta,
                                 int M, int C, act_kind act) {
  batchnorm_act_recompute(y, x, save_mean, save_rstd, gamma, beta, M, C, act);
}

static void cpu_act_forward(model *m, float *out, const float *in, size_t n, act_kind act) {
  act_forward(out, in, n, act);
}

static void cpu_act_backward(model *m, float *din, const float *dout, const float *in, size_t n,
                             act_kind act) {
  act_backward(din, dout, in, n, act);
}

static const ops_conv_kind cpu_conv_kinds[] = {[CONV_FULL] = OPS_CONV_FULL,
                                               [CONV_DEPTHWISE] = OPS_CONV_DEPTHWISE,
                                               [CONV_POINTWISE] = OPS_CONV_POINTWISE};

static void cpu_conv_bn_act_forward_train(model *m, float *y, float *x, float *save_mean,
                                          float *save_rstd, float *running_mean,
                                          float *running_var, const float *in, const float *w,
                                          conv_kind kind, const float *gamma, const float *beta,
                                          float eps, float momentum, int N, int H, int W, int Cin,
                                          int Cout, int K, int stride, act_kind act,
                                          float *scratch) {
  conv_bn_act_forward_train(y, x, save_mean, save_rstd, running_mean, running_var, in, w,
                            cpu_conv_kinds[kind], gamma, beta, eps, momentum, N, H, W, Cin, Cout,
                            K, stride, act, scratch);
}

static void cpu_conv_bn_act_forward_eval(model *m, float *out, float *x, const float *in,
                                         const float *w, conv_kind kind, const float *gamma,
                                         const float *beta, const float *running_mean,
                                         const float *running_var, float eps, int N, int H, int W,
                                         int Cin, int Cout, int K, int stride, act_kind act,
                                         float *scratch) {
  conv_bn_act_forward_eval(out, in, w, cpu_conv_kinds[kind], gamma, beta, running_mean, running_var, eps,
                           N, H, W, Cin, Cout, K, stride, act, scratch);
}

static void cpu_avgpool_forward(model *m, float *out, const float *in, int N, int HW, int C) {
  avgpool_forward(out, in, N, HW, C);
}

static void cpu_avgpool_backward(model *m, float *din, const float *dout, int N, int HW, int C) {
  avgpool_backward(din, dout, N, HW, C);
}

static void cpu_se_forward(model *m, float *out, float *save, const float *in, const float *w1,
                           const float *b1, const float *w2, const float *b2, int N, int HW, int C,
                           int Cs) {
  se_forward(out, save, in, w1, b1, w2, b2, N, HW, C, Cs);
}

static void cpu_se_backward(model *m, float *din, float *dw1, float *db1, float *dw2, float *db2,
                            const float *dout, const float *in, const float *save, const float *w1,
                            const float *w2, int N, int HW, int C, int Cs) {
  se_backward(din, dw1, db1, dw2, db2, dout, in, save, w1, w2, N, HW, C, Cs);
}

static void cpu_residual_forward(model *m, float *out, const float *a, const float *b, size_t n) {
  residual_forward(out, a, b, n);
}

static void cpu_residual_backward(model *m, float *da, const float *dout, size_t n) {
  residual_backward(da, dout, n);
}

static void cpu_drop_path_forward(model *m, float *out, const float *branch, const float *skip,
                                  int N, size_t per_image, float p, uint64_t seed) {
  drop_path_forward(out, branch, skip, N, per_image, p, seed);
}

static void cpu_drop_path_backward(model *m, float *dbranch, const float *dout, int N,
                                   size_t per_image, float p, uint64_t seed) {
  drop_path_backward(dbranch, dout, N, per_image, p, seed);
}

static void cpu_dropout_forward(model *m, float *out, const float *in, size_t n, float p,
                                uint64_t seed) {
  dropout_forward(out, in, n, p, seed);
}

static void cpu_dropout_backward(model *m, float *din, const float *dout, size_t n, float p,
                                 uint64_t seed) {
  dropout_backward(din, dout, n, p, seed);
}

const model_ops model_cpu_ops = {
    .act_alloc = cpu_act_alloc,
    .act_free = cpu_act_free,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .shape_alloc = cpu_shape_alloc,
    .shape_free = cpu_nothing,
    .release = cpu_nothing,
    .sync_to_host = cpu_nothing,
    .sync_to_device = cpu_nothing,
    .wait = cpu_nothing,
    .memset0 = cpu_memset0,
    .copy = cpu_copy,
    .stage_inputs = cpu_stage_inputs,
    .loss_forward = cpu_loss_forward,
    .logits = cpu_logits,
    .loss_backward = cpu_loss_backward,
    .conv2d_scratch_floats = cpu_conv2d_scratch_floats,
    .conv2d_backward = cpu_conv2d_backward,
    .dwconv_backward = cpu_dwconv_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .conv_bn_act_forward_train = cpu_conv_bn_act_forward_train,
    .conv_bn_act_forward_eval = cpu_conv_bn_act_forward_eval,
    .batchnorm_act_backward = cpu_batchnorm_act_backward,
    .bn_act_recompute = cpu_bn_act_recompute,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .avgpool_forward = cpu_avgpool_forward,
    .avgpool_backward = cpu_avgpool_backward,
    .se_forward = cpu_se_forward,
    .se_backward = cpu_se_backward,
    .residual_forward = cpu_residual_forward,
    .residual_backward = cpu_residual_backward,
    .drop_path_forward = cpu_drop_path_forward,
    .drop_path_backward = cpu_drop_path_backward,
    .dropout_forward = cpu_dropout_forward,
    .dropout_backward = cpu_dropout_backward,
};
