/* kernels_api.h - every function of ops.h, listed once, for the per-CPU kernel builds.
 *
 * The ops/ sources are compiled once per instruction set (CMakeLists.txt: baseline x86-64-v2, AVX2+FMA
 * x86-64-v3, AVX-512 x86-64-v4); each copy's names get that set's suffix (kernels_names.h),
 * and dispatch.c defines the real ops.h functions as calls through the table of the set
 * chosen at run time. A new ops.h function goes here, or it will not link.
 *   OPS_API_VOID(name, (parameters), (arguments))
 *   OPS_API_RET(type, name, (parameters), (arguments))
 * ops_blas_rows and ops_blas_dw (ops_simd.h) are private to ops/ but linked between its
 * files, so they are renamed too; they are not dispatched. */
#define OPS_API_LIST(OPS_API_VOID, OPS_API_RET)                                                   \
  OPS_API_RET(size_t, conv2d_scratch_floats, (int H, int W, int Cin, int K, int stride),         \
              (H, W, Cin, K, stride))                                                             \
  OPS_API_VOID(conv2d_forward,                                                                    \
               (float *out, const float *in, const float *w, int N, int H, int W, int Cin,        \
                int Cout, int K, int stride, float *scratch),                                     \
               (out, in, w, N, H, W, Cin, Cout, K, stride, scratch))                              \
  OPS_API_VOID(conv2d_backward,                                                                   \
               (float *din, float *dw, const float *dout, const float *in, const float *w, int N, \
                int H, int W, int Cin, int Cout, int K, int stride, float *scratch),              \
               (din, dw, dout, in, w, N, H, W, Cin, Cout, K, stride, scratch))                    \
  OPS_API_VOID(linear_forward,                                                                    \
               (float *out, const float *in, const float *w, const float *bias, int M, int Cin,   \
                int Cout),                                                                        \
               (out, in, w, bias, M, Cin, Cout))                                                  \
  OPS_API_VOID(linear_backward,                                                                   \
               (float *din, float *dw, float *dbias, const float *dout, const float *in,          \
                const float *w, int M, int Cin, int Cout),                                        \
               (din, dw, dbias, dout, in, w, M, Cin, Cout))                                       \
  OPS_API_VOID(dwconv_forward,                                                                    \
               (float *out, const float *in, const float *w, int N, int H, int W, int C, int K,   \
                int stride),                                                                      \
               (out, in, w, N, H, W, C, K, stride))                                               \
  OPS_API_VOID(dwconv_backward,                                                                   \
               (float *din, float *dw, const float *dout, const float *in, const float *w, int N, \
                int H, int W, int C, int K, int stride),                                          \
               (din, dw, dout, in, w, N, H, W, C, K, stride))                                     \
  OPS_API_VOID(batchnorm_forward_train,                                                           \
               (float *out, float *save_mean, float *save_rstd, float *running_mean,              \
                float *running_var, const float *in, const float *gamma, const float *beta,       \
                int M, int C, float eps, float momentum),                                         \
               (out, save_mean, save_rstd, running_mean, running_var, in, gamma, beta, M, C, eps, \
                momentum))                                                                        \
  OPS_API_VOID(batchnorm_forward_eval,                                                            \
               (float *out, const float *in, const float *gamma, const float *beta,               \
                const float *running_mean, const float *running_var, int M, int C, float eps),    \
               (out, in, gamma, beta, running_mean, running_var, M, C, eps))                      \
  OPS_API_VOID(batchnorm_backward,                                                                \
               (float *din, float *dgamma, float *dbeta, const float *dout, const float *in,      \
                const float *save_mean, const float *save_rstd, const float *gamma, int M,        \
                int C),                                                                           \
               (din, dgamma, dbeta, dout, in, save_mean, save_rstd, gamma, M, C))                 \
  OPS_API_VOID(act_forward, (float *out, const float *in, size_t n, act_kind act),               \
               (out, in, n, act))                                                                 \
  OPS_API_VOID(act_backward,                                                                      \
               (float *din, const float *dout, const float *in, size_t n, act_kind act),          \
               (din, dout, in, n, act))                                                           \
  OPS_API_RET(const char *, act_name, (act_kind act), (act))                                      \
  OPS_API_VOID(batchnorm_act_forward_train,                                                       \
               (float *out, float *save_mean, float *save_rstd, float *running_mean,              \
                float *running_var, const float *in, const float *gamma, const float *beta,       \
                int M, int C, float eps, float momentum, act_kind act),                           \
               (out, save_mean, save_rstd, running_mean, running_var, in, gamma, beta, M, C, eps, \
                momentum, act))                                                                   \
  OPS_API_VOID(batchnorm_act_forward_eval,                                                        \
               (float *out, const float *in, const float *gamma, const float *beta,               \
                const float *running_mean, const float *running_var, int M, int C, float eps,     \
                act_kind act),                                                                    \
               (out, in, gamma, beta, running_mean, running_var, M, C, eps, act))                 \
  OPS_API_VOID(batchnorm_act_backward,                                                            \
               (float *din, float *dgamma, float *dbeta, const float *dout, const float *in,      \
                const float *save_mean, const float *save_rstd, const float *gamma,               \
                const float *beta, int M, int C, act_kind act),                                   \
               (din, dgamma, dbeta, dout, in, save_mean, save_rstd, gamma, beta, M, C, act))      \
  OPS_API_VOID(batchnorm_act_recompute,                                                           \
               (float *y, const float *x, const float *save_mean, const float *save_rstd,         \
                const float *gamma, const float *beta, int M, int C, act_kind act),               \
               (y, x, save_mean, save_rstd, gamma, beta, M, C, act))                              \
  OPS_API_VOID(conv2d_act_forward,                                                                \
               (float *out, const float *in, const float *w, const float *bias, int N, int H,     \
                int W, int Cin, int Cout, int K, int stride, float *scratch, act_kind act),       \
               (out, in, w, bias, N, H, W, Cin, Cout, K, stride, scratch, act))                   \
  OPS_API_VOID(dwconv_act_forward,                                                                \
               (float *out, const float *in, const float *w, const float *bias, int N, int H,     \
                int W, int C, int K, int stride, act_kind act),                                   \
               (out, in, w, bias, N, H, W, C, K, stride, act))                                    \
  OPS_API_VOID(linear_act_forward,                                                                \
               (float *out, const float *in, const float *w, const float *bias, int M, int Cin,   \
                int Cout, act_kind act),                                                          \
               (out, in, w, bias, M, Cin, Cout, act))                                             \
  OPS_API_VOID(conv_bn_act_forward_eval,                                                          \
               (float *out, const float *in, const float *w, ops_conv_kind kind,                  \
                const float *gamma, const float *beta, const float *running_mean,                 \
                const float *running_var, float eps, int N, int H, int W, int Cin, int Cout,      \
                int K, int stride, act_kind act, float *scratch),                                 \
               (out, in, w, kind, gamma, beta, running_mean, running_var, eps, N, H, W, Cin,      \
                Cout, K, stride, act, scratch))                                                   \
  OPS_API_VOID(conv_bn_act_forward_train,                                                         \
               (float *y, float *x, float *save_mean, float *save_rstd, float *running_mean,      \
                float *running_var, const float *in, const float *w, ops_conv_kind kind,          \
                const float *gamma, const float *beta, float eps, float momentum, int N, int H,   \
                int W, int Cin, int Cout, int K, int stride, act_kind act, float *scratch),       \
               (y, x, save_mean, save_rstd, running_mean, running_var, in, w, kind, gamma, beta,  \
                eps, momentum, N, H, W, Cin, Cout, K, stride, act, scratch))                      \
  OPS_API_VOID(avgpool_forward, (float *out, const float *in, int N, int HW, int C),             \
               (out, in, N, HW, C))                                                               \
  OPS_API_VOID(avgpool_backward, (float *din, const float *dout, int N, int HW, int C),          \
               (din, dout, N, HW, C))                                                             \
  OPS_API_RET(size_t, se_save_floats, (int N, int C, int Cs), (N, C, Cs))                         \
  OPS_API_VOID(se_forward,                                                                        \
               (float *out, float *save, const float *in, const float *w1, const float *b1,       \
                const float *w2, const float *b2, int N, int HW, int C, int Cs),                  \
               (out, save, in, w1, b1, w2, b2, N, HW, C, Cs))                                     \
  OPS_API_VOID(se_backward,                                                                       \
               (float *din, float *dw1, float *db1, float *dw2, float *db2, const float *dout,    \
                const float *in, const float *save, const float *w1, const float *w2, int N,      \
                int HW, int C, int Cs),                                                           \
               (din, dw1, db1, dw2, db2, dout, in, save, w1, w2, N, HW, C, Cs))                   \
  OPS_API_VOID(residual_forward, (float *out, const float *a, const float *b, size_t n),         \
               (out, a, b, n))                                                                    \
  OPS_API_VOID(residual_backward, (float *da, const float *dout, size_t n), (da, dout, n))       \
  OPS_API_RET(float, drop_path_scale, (int n, float p, uint64_t seed), (n, p, seed))             \
  OPS_API_VOID(drop_path_forward,                                                                 \
               (float *out, const float *branch, const float *skip, int N, size_t per_image,      \
                float p, uint64_t seed),                                                          \
               (out, branch, skip, N, per_image, p, seed))                                        \
  OPS_API_VOID(drop_path_backward,                                                                \
               (float *dbranch, const float *dout, int N, size_t per_image, float p,              \
                uint64_t seed),                                                                   \
               (dbranch, dout, N, per_image, p, seed))                                            \
  OPS_API_VOID(dropout_forward, (float *out, const float *in, size_t n, float p, uint64_t seed), \
               (out, in, n, p, seed))                                                             \
  OPS_API_VOID(dropout_backward,                                                                  \
               (float *din, const float *dout, size_t n, float p, uint64_t seed),                 \
               (din, dout, n, p, seed))                                                           \
  OPS_API_RET(float, crossentropy_forward,                                                        \
              (float *probs, const float *logits, const int *labels, int N, int K,                \
               float smoothing),                                                                  \
              (probs, logits, labels, N, K, smoothing))                                           \
  OPS_API_VOID(crossentropy_backward,                                                             \
               (float *dlogits, const float *probs, const int *labels, int N, int K,              \
                float smoothing),                                                                 \
               (dlogits, probs, labels, N, K, smoothing))                                         \
  OPS_API_RET(double, ops_fma_peak_gflops, (void), ())
