/* ops_cuda.h - pollen's tensor kernels on an NVIDIA GPU: the same functions, layouts and
 * semantics as ops/ops.h (read it first), on device pointers, queued on one CUDA stream.
 *
 * Same as the CPU ops: NHWC activations; OHWI / [Cout][Cin] / HWC weights; backward functions
 * ACCUMULATE into parameter gradients and OVERWRITE input gradients; din may be NULL where the
 * CPU op allows it; PyTorch's formulas, running-stat updates and activation break points;
 * dropout draws the very Philox mask of ops/dropout.c, so a CPU and a GPU run keep the same
 * elements. Reductions use a fixed order (no atomics), so results are run-to-run identical.
 *
 * Different from the CPU ops:
 *   - every function takes a cuda_ctx (stream + cuBLAS handle + scratch) first and is
 *     asynchronous: it only queues work on ctx->stream;
 *   - conv2d's scratch covers the whole batch (cuda_conv2d_scratch_floats takes N);
 *   - crossentropy writes the mean loss to a device float instead of returning it (no sync),
 *     and its labels are a device int array;
 *   - the GEMMs (conv2d, linear, se) may run in reduced precision: cuda_ctx_set_math.
 * Errors: a failing CUDA or cuBLAS call dies naming file, line and the error (CUDA_CHECK).
 * Not for: choosing a device (worker/device.h) or talking to other GPUs (worker/nccl_sync.h). */
#ifndef POLLEN_OPS_CUDA_H
#define POLLEN_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ops/ops.h"

/* Dies with "pollen: CUDA error at FILE:LINE: CALL: reason" when a runtime call fails. */
#define CUDA_CHECK(call) cuda_check_at((call), #call, __FILE__, __LINE__)
void cuda_check_at(cudaError_t err, const char *what, const char *file, int line);
/* Same for the last kernel launch (launch errors surface here, not at the launch). */
#define CUDA_CHECK_LAUNCH() cuda_check_at(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* GEMM precision. Storage stays float32 everywhere; only the GEMMs' inner products change.
 *   FP32  exact float32 (cublasSgemm): the default, matches the CPU to ~1e-6
 *   TF32  tensor cores, 10-bit mantissa inputs, float32 accumulate (sm_80+)
 *   BF16  tensor cores, bfloat16 inputs, float32 accumulate (sm_80+)
 *   FP16  tensor cores, float16 inputs, float32 accumulate */
typedef enum { CUDA_MATH_FP32 = 0, CUDA_MATH_TF32, CUDA_MATH_BF16, CUDA_MATH_FP16 } cuda_math;

typedef struct cuda_ctx cuda_ctx;
struct cuda_ctx {
  cudaStream_t stream;
  void *cublas;        /* cublasHandle_t, bound to stream */
  cuda_math math;
  int device;
  /* Scratch grown on demand and kept (no allocation in the steady state). Slot 0 belongs to
   * the leaf reductions inside one op call; slot 1 to composite ops (se) that call others. */
  void *scratch[2];
  size_t scratch_bytes[2];
};

/* A context on the current device with its own non-blocking stream. Dies on failure. */
cuda_ctx *cuda_ctx_new(void);
void cuda_ctx_free(cuda_ctx *ctx);
void cuda_ctx_set_math(cuda_ctx *ctx, cuda_math math);
/* The flag's name of a precision (worker/device.h's device_precision_parse reads them). */
const char *cuda_math_name(cuda_math math);
/* Waits for everything queued on ctx->stream; dies on an asynchronous kernel error. */
void cuda_ctx_sync(cuda_ctx *ctx);
/* At least `bytes` of device scratch in slot (0 or 1); valid until the next call for it. */
void *cuda_ctx_scratch(cuda_ctx *ctx, int slot, size_t bytes);

/* Device memory that never returns NULL; copies queued on ctx->stream (host memory should be
 * pinned for the copies to be asynchronous; pageable memory makes them synchronous). */
void *cuda_malloc(size_t bytes);
void cuda_free(void *p);
void cuda_upload(cuda_ctx *ctx, void *dst_dev, const void *src_host, size_t bytes);
void cuda_download(cuda_ctx *ctx, void *dst_host, const void *src_dev, size_t bytes);
void cuda_memset0(cuda_ctx *ctx, void *dev, size_t bytes);
void cuda_copy(cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes);
/* Page-locked host memory (the loader's batches): copies from it overlap with kernels. */
void *cuda_host_alloc(size_t bytes);
void cuda_host_free(void *p);

/* Row-major GEMM with cblas_sgemm's meaning: C[M][N] = alpha*op(A).op(B) + beta*C, in
 * ctx->math precision. ta/tb: 0 = no transpose, 1 = transpose. */
void cuda_gemm(cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* ---- the ops: see ops.h for each one's meaning ---- */
size_t cuda_conv2d_scratch_floats(int N, int H, int W, int Cin, int K, int stride);
void cuda_conv2d_forward(cuda_ctx *ctx, float *out, const float *in, const float *w, int N, int H,
                         int W, int Cin, int Cout, int K, int stride, float *scratch);
void cuda_conv2d_backward(cuda_ctx *ctx, float *din, float *dw, const float *dout,
                          const float *in, const float *w, int N, int H, int W, int Cin, int Cout,
                          int K, int stride, float *scratch);

void cuda_linear_forward(cuda_ctx *ctx, float *out, const float *in, const float *w,
                         const float *bias, int M, int Cin, int Cout);
void cuda_linear_backward(cuda_ctx *ctx, float *din, float *dw, float *dbias, const float *dout,
                          const float *in, const float *w, int M, int Cin, int Cout);

void cuda_dwconv_forward(cuda_ctx *ctx, float *out, const float *in, const float *w, int N, int H,
                         int W, int C, int K, int stride);
void cuda_dwconv_backward(cuda_ctx *ctx, float *din, float *dw, const float *dout,
                          const float *in, const float *w, int N, int H, int W, int C, int K,
                          int stride);

/* Batch norm; act = ACT_NONE gives the plain batchnorm_* ops. */
void cuda_batchnorm_forward_train(cuda_ctx *ctx, float *out, float *save_mean, float *save_rstd,
                                  float *running_mean, float *running_var, const float *in,
                                  const float *gamma, const float *beta, int M, int C, float eps,
                                  float momentum, act_kind act);
void cuda_batchnorm_forward_eval(cuda_ctx *ctx, float *out, const float *in, const float *gamma,
                                 const float *beta, const float *running_mean,
                                 const float *running_var, int M, int C, float eps, act_kind act);
/* beta is only read when act != ACT_NONE (the fused backward recomputes the BN output). */
void cuda_batchnorm_backward(cuda_ctx *ctx, float *din, float *dgamma, float *dbeta,
                             const float *dout, const float *in, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta, int M,
                             int C, act_kind act);

void cuda_act_forward(cuda_ctx *ctx, float *out, const float *in, size_t n, act_kind act);
void cuda_act_backward(cuda_ctx *ctx, float *din, const float *dout, const float *in, size_t n,
                       act_kind act);

void cuda_avgpool_forward(cuda_ctx *ctx, float *out, const float *in, int N, int HW, int C);
void cuda_avgpool_backward(cuda_ctx *ctx, float *din, const float *dout, int N, int HW, int C);

/* save: se_save_floats(N, C, Cs) floats, same layout as the CPU op's. */
void cuda_se_forward(cuda_ctx *ctx, float *out, float *save, const float *in, const float *w1,
                     const float *b1, const float *w2, const float *b2, int N, int HW, int C,
                     int Cs);
void cuda_se_backward(cuda_ctx *ctx, float *din, float *dw1, float *db1, float *dw2, float *db2,
                      const float *dout, const float *in, const float *save, const float *w1,
                      const float *w2, int N, int HW, int C, int Cs);

void cuda_residual_forward(cuda_ctx *ctx, float *out, const float *a, const float *b, size_t n);
void cuda_residual_backward(cuda_ctx *ctx, float *da, const float *dout, size_t n);
/* Stochastic depth (ops.h's drop_path_*; the same masks), 0 < p < 1. */
void cuda_drop_path_forward(cuda_ctx *ctx, float *out, const float *branch, const float *skip,
                            int N, size_t per_image, float p, uint64_t seed);
void cuda_drop_path_backward(cuda_ctx *ctx, float *dbranch, const float *dout, int N,
                             size_t per_image, float p, uint64_t seed);

void cuda_dropout_forward(cuda_ctx *ctx, float *out, const float *in, size_t n, float p,
                          uint64_t seed);
void cuda_dropout_backward(cuda_ctx *ctx, float *din, const float *dout, size_t n, float p,
                           uint64_t seed);

/* loss: one device float, written with the batch-mean loss. labels: device ints in [0,K). */
void cuda_crossentropy_forward(cuda_ctx *ctx, float *loss, float *probs, const float *logits,
                               const int *labels, int N, int K, float smoothing);
void cuda_crossentropy_backward(cuda_ctx *ctx, float *dlogits, const float *probs,
                                const int *labels, int N, int K, float smoothing);

/* ---- the optimizer (worker/optim.c's formulas; worker/optim.h for their meaning) ---- */
typedef enum {
  CUDA_OPT_SGD, CUDA_OPT_RMSPROP_TF, CUDA_OPT_RMSPROP_TORCH, CUDA_OPT_ADAM, CUDA_OPT_ADAMW
} cuda_opt_kind;
typedef struct {
  cuda_opt_kind kind;
  float lr, momentum, weight_decay, alpha, eps, beta1, beta2;
  int nesterov;
  float step_size, bc2_sqrt; /* Adam: lr / (1 - beta1^t) and sqrt(1 - beta2^t) */
  float clip_norm;           /* 0: off */
} cuda_optim_args;
/* One update in place. decay: per-element 0/1 weight-decay factors. norm_scale: 2 device
 * floats, written with the gradient's global L2 norm before clipping and the scale applied. */
void cuda_optim_step(cuda_ctx *ctx, const cuda_optim_args *args, float *params, float *grads,
                     float *m, float *v, const float *decay, size_t n, float *norm_scale);

#ifdef __cplusplus
}
#endif

#endif
