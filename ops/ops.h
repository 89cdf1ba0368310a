/* ops.h - pollen's tensor kernels, forward and backward, float32, CPU.
 *
 * One layout for the whole engine: activations are NHWC, i.e. a batch of N images of H x W
 * pixels with C channels stored as [N][H][W][C] (channels fastest). On CPUs this makes the
 * 1x1 convolutions (most of MobileNet's FLOPs) plain GEMMs over M = N*H*W rows with no
 * transposes, and lets depthwise convolutions and per-channel ops (BN, SE scale) vectorise
 * along C. BENCHMARKS.md has the measurement behind the choice.
 *
 * Weight layouts (the engine's own; safetensors import/export converts to PyTorch's):
 *   conv2d (groups = 1)  [Cout][K][K][Cin]  (OHWI: one row of the im2col GEMM per filter)
 *   pointwise / linear   [Cout][Cin]        (same as PyTorch)
 *   depthwise            [K][K][C]          (HWC: vectorises along C)
 *
 * Conventions:
 *   - Every X_forward has an X_backward beside it (llm.c style): plain functions, no framework.
 *   - Backward functions ACCUMULATE (+=) into parameter gradients (dw, dbias, dgamma, ...) and
 *     OVERWRITE input gradients (din), unless noted. din may be NULL where stated, to skip it.
 *   - Padding is "same" for odd K: pad = (K - 1) / 2 on every side; output size is
 *     conv_out_size(H, K, stride) = (H + 2*pad - K) / stride + 1, as PyTorch computes it.
 *   - Threads: OpenMP inside each op; GEMMs in linear.c's and conv2d.c's own kernels at
 *     the networks' shapes, OpenBLAS (OpenMP build) otherwise. Call from one thread. On the
 *     own kernels results do not depend on the thread count (reductions over fixed chunks,
 *     ops_simd.h; tests compare 1 and 2 threads bit for bit); OpenBLAS's may.
 *   - Nothing here allocates in the steady state: ops that need scratch take it as an argument
 *     and have a *_scratch_floats() function giving the size.
 *   - Kernel paths: every function below exists once per instruction set (baseline
 *     x86-64-v2, AVX2+FMA, AVX-512) in the one binary; the best the CPU has runs unless
 *     POLLEN_KERNELS or ops_kernels_use() picks a lower one. Results are bit-identical across
 *     thread counts on each path, not across paths (the sums group differently).
 */
#ifndef POLLEN_OPS_H
#define POLLEN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- kernel paths (dispatch.c) ---- */
typedef enum { OPS_KERNELS_BASELINE = 0, OPS_KERNELS_AVX2, OPS_KERNELS_AVX512, OPS_KERNELS_COUNT } ops_kernels;
/* "baseline", "avx2", "avx512". */
const char *ops_kernels_name(ops_kernels path);
/* Whether this binary has the path and this CPU (and OS) can run it. */
int ops_kernels_supported(ops_kernels path);
/* The path that runs now: the one last passed to ops_kernels_use(), else POLLEN_KERNELS
 * from the environment (a bad or unsupported value there dies with a one-line message),
 * else the best supported. */
ops_kernels ops_kernels_active(void);
/* Parse a path name; 0 on success. On failure err says why (unknown name, or what this CPU
 * lacks) in one line. Then ops_kernels_use() switches to it; call between steps only. */
int ops_kernels_parse(const char *name, ops_kernels *path, char *err, size_t errlen);
void ops_kernels_use(ops_kernels path);
/* ---- GEMM input precision (dispatch.c) ----
 * OPS_GEMM_BF16 (opt-in, `--precision bf16`): linear.c's GEMMs - every 1x1 convolution and
 * fully connected layer, forward, input and weight gradients - round both inputs to bfloat16
 * and accumulate in float32 (AVX512_BF16's VDPBF16PS). Only on the avx512 path of a CPU with
 * AVX512_BF16; everything else stays float32 (the stem, depthwise, batch norm, weights,
 * gradients, optimizer state). Still bit-identical across thread counts. A lower kernel path
 * chosen later runs its float32 GEMMs. */
typedef enum { OPS_GEMM_FP32 = 0, OPS_GEMM_BF16 } ops_gemm_precision;
/* Whether p can run on this CPU and the active kernel path: 0, else -1 and err says in one
 * line what the CPU or the path lacks. _use switches to it (between steps only). */
int ops_gemm_precision_check(ops_gemm_precision p, char *err, size_t errlen);
int ops_gemm_precision_use(ops_gemm_precision p, char *err, size_t errlen);
ops_gemm_precision ops_gemm_precision_active(void);
/* "fp32", "bf16". */
const char *ops_gemm_precision_name(ops_gemm_precision p);

/* This path's float32 peak on all threads (threads_get()), measured by FMA chains in
 * registers (about 0.5 s): what benchmarks quote their GFLOP/s against. */
double ops_fma_peak_gflops(void);

static inline int conv_out_size(int h, int k, int stride) {
  int pad = (k - 1) / 2;
  return (h + 2 * pad - k) / stride + 1;
}

/* ---- full convolution (groups = 1): the 3x3 stride-2 stem. Direct AVX2 kernel for few input
 * channels and Cout a multiple of 8 up to 32 (the stem); im2col + cblas_sgemm otherwise. ----
 * in [N][H][W][Cin], w [Cout][K][K][Cin], out [N][Ho][Wo][Cout]. No bias (always followed by
 * batch norm in MobileNet). scratch: conv2d_scratch_floats(...) floats. */
size_t conv2d_scratch_floats(int H, int W, int Cin, int K, int stride);
void conv2d_forward(float *out, const float *in, const float *w, int N, int H, int W, int Cin,
                    int Cout, int K, int stride, float *scratch);
/* din may be NULL (the stem's input needs no gradient). */
void conv2d_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                     int N, int H, int W, int Cin, int Cout, int K, int stride, float *scratch);

/* ---- linear: out[M][Cout] = in[M][Cin] . w^T + bias. Also the 1x1 convolution in NHWC,
 * with M = N*H*W. bias may be NULL (no bias); dbias may be NULL when bias is NULL; din may
 * be NULL. */
void linear_forward(float *out, const float *in, const float *w, const float *bias, int M,
                    int Cin, int Cout);
void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int M, int Cin, int Cout);

/* ---- depthwise convolution: K in {3, 5}, stride in {1, 2}, same padding, no bias.
 * in [N][H][W][C], w [K][K][C], out [N][Ho][Wo][C]. */
void dwconv_forward(float *out, const float *in, const float *w, int N, int H, int W, int C, int K,
                    int stride);
void dwconv_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                     int N, int H, int W, int C, int K, int stride);

/* ---- batch norm over M rows of C channels (M = N*H*W in NHWC). ----
 * Training: normalises with the batch mean and biased variance; saves mean and rstd
 * (1/sqrt(var+eps)) for backward; updates running stats as PyTorch does:
 *   running_mean = (1-momentum)*running_mean + momentum*mean
 *   running_var  = (1-momentum)*running_var  + momentum*var*M/(M-1)   (unbiased)
 * running_mean/running_var may be NULL to skip the update. */
void batchnorm_forward_train(float *out, float *save_mean, float *save_rstd, float *running_mean,
                             float *running_var, const float *in, const float *gamma,
                             const float *beta, int M, int C, float eps, float momentum);
void batchnorm_forward_eval(float *out, const float *in, const float *gamma, const float *beta,
                            const float *running_mean, const float *running_var, int M, int C,
                            float eps);
/* Backward of the training-mode forward (batch statistics). din may alias dout. */
void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                        const float *in, const float *save_mean, const float *save_rstd,
                        const float *gamma, int M, int C);

/* ---- pointwise activations, PyTorch's definitions and gradients (its divisions by 6 and 3
 * done as multiplications by the float reciprocals, within an ulp):
 *   relu       max(x,0)                      grad 1 where x > 0
 *   relu6      min(max(x,0),6)               grad 1 where 0 < x < 6
 *   hardswish  x*relu6(x+3)/6                grad 0 where x < -3, x/3+0.5 where -3 <= x <= 3,
 *                                            1 where x > 3
 *   hardsigmoid relu6(x+3)/6                 grad 1/6 where -3 < x < 3, else 0
 * out may alias in. din may alias dout. in is the forward INPUT. */
typedef enum { ACT_NONE = 0, ACT_RELU, ACT_RELU6, ACT_HARDSWISH, ACT_HARDSIGMOID } act_kind;
void act_forward(float *out, const float *in, size_t n, act_kind act);
void act_backward(float *din, const float *dout, const float *in, size_t n, act_kind act);
const char *act_name(act_kind act);

/* ---- batch norm fused with the activation that follows it (conv + BN + act layers).
 * Same numbers as batchnorm_forward_train then act_forward (bit for bit), in one pass less.
 * The backward takes the BN INPUT x and recomputes y = BN(x) on the fly for the activation's
 * derivative (no stored BN output, no scratch), then is batchnorm_backward of that gradient.
 * din may alias dout. */
void batchnorm_act_forward_train(float *out, float *save_mean, float *save_rstd,
                                 float *running_mean, float *running_var, const float *in,
                                 const float *gamma, const float *beta, int M, int C, float eps,
                                 float momentum, act_kind act);
void batchnorm_act_forward_eval(float *out, const float *in, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, int M, int C, float eps, act_kind act);
/* y = act(BN(x)) again, from a training forward's save_mean and save_rstd: bit for bit the y
 * that forward wrote (its scale is taken from the saved rstd too), so a backward can
 * recompute an activation instead of keeping it. */
void batchnorm_act_recompute(float *y, const float *x, const float *save_mean,
                             const float *save_rstd, const float *gamma, const float *beta, int M,
                             int C, act_kind act);
void batchnorm_act_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *save_mean, const float *save_rstd,
                            const float *gamma, const float *beta, int M, int C, act_kind act);

/* ---- inference kernels: a convolution with its bias and activation fused in, and batch norm
 * folded into them. Each fused kernel equals the plain one, then + bias[c] (bias may be
 * NULL), then act_forward, bit for bit; the bias and activation are applied to each block of
 * output while it is still in cache, so they cost no pass over memory. ---- */
void conv2d_act_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int Cin, int Cout, int K, int stride, float *scratch,
                        act_kind act);
void dwconv_act_forward(float *out, const float *in, const float *w, const float *bias, int N,
                        int H, int W, int C, int K, int stride, act_kind act);
void linear_act_forward(float *out, const float *in, const float *w, const float *bias, int M,
                        int Cin, int Cout, act_kind act);
/* act(BN_eval(conv(in, w))), the eval forward of a conv + BN + act layer, in one pass: BN's
 * scale s = gamma/sqrt(var+eps) multiplies a copy of the weights (w is not changed), and
 * beta - mean*s is the fused kernel's bias. Equal to the conv then batchnorm_act_forward_eval
 * up to rounding. kind: OPS_CONV_FULL (w OHWI, scratch as conv2d_forward), OPS_CONV_DEPTHWISE
 * (Cin = Cout), OPS_CONV_POINTWISE (in is [N*H*W][Cin]). */
typedef enum { OPS_CONV_FULL = 0, OPS_CONV_DEPTHWISE, OPS_CONV_POINTWISE } ops_conv_kind;
void conv_bn_act_forward_eval(float *out, const float *in, const float *w, ops_conv_kind kind,
                              const float *gamma, const float *beta, const float *running_mean,
                              const float *running_var, float eps, int N, int H, int W, int Cin,
                              int Cout, int K, int stride, act_kind act, float *scratch);

/* ---- training: batch-norm statistics taken by the convolution that produces their input ----
 * The conv's own kernel sums each block of output while it is in cache (per GEMM work item,
 * per depthwise output row), so batch norm's forward needs one pass over x, not two. Per
 * block, mean and sum of squared deviations; blocks combined in a fixed order (Chan et al.),
 * so results do not depend on the thread count; they differ from batchnorm_forward_train's
 * shifted sums in the last bits. out is the conv output x, kept for backward; y the layer's
 * output act(BN(x)). Saves and running statistics as batchnorm_act_forward_train. kind as
 * conv_bn_act_forward_eval (OPS_CONV_FULL takes its statistics in a pass of their own). */
void conv_bn_act_forward_train(float *y, float *x, float *save_mean, float *save_rstd,
                               float *running_mean, float *running_var, const float *in,
                               const float *w, ops_conv_kind kind, const float *gamma,
                               const float *beta, float eps, float momentum, int N, int H, int W,
                               int Cin, int Cout, int K, int stride, act_kind act, float *scratch);

/* ---- global average pool: in [N][HW][C] -> out [N][C]. ---- */
void avgpool_forward(float *out, const float *in, int N, int HW, int C);
void avgpool_backward(float *din, const float *dout, int N, int HW, int C);

/* ---- squeeze-and-excite (torchvision's SqueezeExcitation for MobileNetV3):
 *   s = avgpool(x); h = relu(fc1(s)); g = hardsigmoid(fc2(h)); out = x * g (per channel)
 * in/out [N][HW][C]; w1 [Cs][C], b1 [Cs], w2 [C][Cs], b2 [C].
 * save: se_save_floats(N, C, Cs) floats kept from forward for backward. out must not alias in. */
size_t se_save_floats(int N, int C, int Cs);
void se_forward(float *out, float *save, const float *in, const float *w1, const float *b1,
                const float *w2, const float *b2, int N, int HW, int C, int Cs);
void se_backward(float *din, float *dw1, float *db1, float *dw2, float *db2, const float *dout,
                 const float *in, const float *save, const float *w1, const float *w2, int N,
                 int HW, int C, int Cs);

/* ---- residual add: out = a + b. Backward: the gradient flows unchanged to both inputs,
 * so residual_backward ACCUMULATES dout into da (the skip branch). ---- */
void residual_forward(float *out, const float *a, const float *b, size_t n);
void residual_backward(float *da, const float *dout, size_t n);

/* ---- stochastic depth ("drop path", row mode): out = branch * s_n + skip over N samples of
 * per_image floats, s_n = drop_path_scale(n, p, seed): 0 for a dropped sample, 1/(1-p) for a
 * kept one, a pure function of (seed, n). The skip branch's gradient is dout unchanged (give
 * it with residual_backward); drop_path_backward writes the branch's, dbranch = dout * s_n.
 * out may alias branch or skip; dbranch may alias dout. ---- */
float drop_path_scale(int n, float p, uint64_t seed);
void drop_path_forward(float *out, const float *branch, const float *skip, int N, size_t per_image,
                       float p, uint64_t seed);
void drop_path_backward(float *dbranch, const float *dout, int N, size_t per_image, float p,
                        uint64_t seed);

/* ---- dropout (inverted: kept values scaled by 1/(1-p)). The mask is a pure function of
 * (seed, index) through Philox, so backward regenerates it instead of storing it, and the
 * result does not depend on the thread count. out may alias in; din may alias dout. ---- */
void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed);
void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t seed);

/* ---- softmax cross-entropy, mean over the batch, optional label smoothing (PyTorch's:
 * target = (1-s)*onehot + s/K). logits [N][K]; probs [N][K] is written (softmax) for backward
 * and for accuracy. Returns the mean loss. Labels outside [0,K) are a caller bug. ---- */
float crossentropy_forward(float *probs, const float *logits, const int *labels, int N, int K,
                           float smoothing);
void crossentropy_backward(float *dlogits, const float *probs, const int *labels, int N, int K,
                           float smoothing);

#endif
