/* ops_simd.h - private helpers shared by the ops kernels: an 8-wide float vector when the
 * kernel build targets AVX2+FMA (the avx2 and avx512 builds, CMakeLists.txt), plain scalars
 * otherwise, and the fixed row chunking used by every reduction.
 * OPS_AVX2: the hand-written __m256 kernels are compiled (the avx2 and avx512 builds).
 * OPS_AVX512: the __m512 kernels are too (the avx512 build), where they measured faster.
 *
 * Why fixed chunks: a reduction over M rows is split into ops_nchunks(M) pieces whose bounds
 * depend on M only, each piece is summed in order into its own partial, and the partials are
 * added in chunk order. The result is then bit-identical whatever the OpenMP thread count.
 * Not for: anything public (ops.h is the API). */
#ifndef POLLEN_OPS_SIMD_H
#define POLLEN_OPS_SIMD_H

#include <stddef.h>
#include <math.h>
#include <stdlib.h>

#include "base/core.h"
#include "ops/ops.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define OPS_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define OPS_AVX512 1
#else
#define OPS_AVX512 0
#endif
#define OPS_VW 8
typedef __m256 ops_vf;
#define OPS_VLOAD(p) _mm256_loadu_ps(p)
#define OPS_VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define OPS_VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define OPS_VADD(a, b) _mm256_add_ps((a), (b))
#define OPS_VMUL(a, b) _mm256_mul_ps((a), (b))
#define OPS_VZERO() _mm256_setzero_ps()
#define OPS_VSET1(x) _mm256_set1_ps(x)
#define OPS_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define OPS_AVX2 0
#define OPS_AVX512 0
#define OPS_VW 1
typedef float ops_vf;
#define OPS_VLOAD(p) (*(p))
#define OPS_VSTORE(p, v) (*(p) = (v))
#define OPS_VFMA(a, b, c) ((a) * (b) + (c))
#define OPS_VADD(a, b) ((a) + (b))
#define OPS_VMUL(a, b) ((a) * (b))
#define OPS_VZERO() 0.0f
#define OPS_VSET1(x) (x)
#define OPS_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* PyTorch divides by 6 (hardswish, hardsigmoid) and 3 (hardswish's gradient); pollen
 * multiplies by the float reciprocal instead: within an ulp, and a division per element was
 * 2% of an inference step (BENCHMARKS.md). */
#define OPS_SIXTH (1.0f / 6.0f)
#define OPS_THIRD (1.0f / 3.0f)

/* act.c's forward formulas for one element, in PyTorch's operation order. */
static inline __attribute__((always_inline)) float ops_act1(float x, act_kind act) {
  float y;
  switch (act) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_RELU6: y = x > 0.0f ? x : 0.0f; return y < 6.0f ? y : 6.0f;
    case ACT_HARDSWISH: y = x + 3.0f > 0.0f ? x + 3.0f : 0.0f; return x * (y < 6.0f ? y : 6.0f) * OPS_SIXTH;
    case ACT_HARDSIGMOID: y = x + 3.0f > 0.0f ? x + 3.0f : 0.0f; return (y < 6.0f ? y : 6.0f) * OPS_SIXTH;
    case ACT_NONE: break;
  }
  return x;
}

/* The epilogue of the fused inference kernels: p = act(p + bias[col]) over a block of rows x
 * cols floats (row stride ld) that the kernel has just written, so still in cache. bias may
 * be NULL; with no bias and ACT_NONE it does nothing, so kernels call it unconditionally.
 * Each act gets a loop of its own, so GCC vectorises it. */
#define OPS_BIAS_ACT_ROWS(A)                                                  \
  for (long r = 0; r < rows; r++) {                                           \
    float *q = p + r * ld;                                                    \
    if (bias)                                                                 \
      for (int c = 0; c < cols; c++) q[c] = ops_act1(q[c] + bias[c], (A));    \
    else                                                                      \
      for (int c = 0; c < cols; c++) q[c] = ops_act1(q[c], (A));              \
  }
static inline __attribute__((always_inline)) void ops_bias_act_block(float *p, long rows, int cols,
                                                                     long ld, const float *bias,
                                                                     act_kind act) {
  switch (act) {
    case ACT_NONE:
      if (bias) OPS_BIAS_ACT_ROWS(ACT_NONE);
      break;
    case ACT_RELU: OPS_BIAS_ACT_ROWS(ACT_RELU); break;
    case ACT_RELU6: OPS_BIAS_ACT_ROWS(ACT_RELU6); break;
    case ACT_HARDSWISH: OPS_BIAS_ACT_ROWS(ACT_HARDSWISH); break;
    case ACT_HARDSIGMOID: OPS_BIAS_ACT_ROWS(ACT_HARDSIGMOID); break;
  }
}
#undef OPS_BIAS_ACT_ROWS

/* Batch-norm statistics of a block of rows x cols floats (row stride ld) that a kernel has
 * just written: per column, mean[c] and m2[c] = sum of squared deviations from that mean.
 * Two passes over the block while it is in cache, in float but on deviations from the
 * block's first row (a block is at most a few hundred rows of one channel, so x - x0 is
 * small and exact enough: a mean 10^4 times the spread keeps batch norm's accuracy; the
 * shift goes back in double). The blocks are combined in double, in a fixed order
 * (batchnorm.c), so the totals do not depend on the thread count. */
static inline void ops_block_stats(const float *p, long rows, int cols, long ld, double *mean,
                                   double *m2) {
  float s[cols], q[cols];
  for (int c = 0; c < cols; c++) s[c] = q[c] = 0.0f;
  for (long r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) s[c] += p[r * ld + c] - p[c];
  const float inv = 1.0f / (float)rows;
  for (int c = 0; c < cols; c++) s[c] *= inv;
  for (long r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++) {
      float d = (p[r * ld + c] - p[c]) - s[c];
      q[c] += d * d;
    }
  for (int c = 0; c < cols; c++) mean[c] = (double)p[c] + (double)s[c], m2[c] = q[c];
}

/* The conv kernels that leave those statistics (conv_bn_act_forward_train, batchnorm.c): the
 * plain forward, plus per block b of rows [b*block_rows, min((b+1)*block_rows, M)) the
 * column means and squared deviations in mean[b*C + c], m2[b*C + c]. Blocks are
 * OPS_STATS_ROWS_LINEAR rows for the GEMM and one output row (Wo pixels) for the depthwise
 * conv; the caller sizes the arrays for ops_stats_blocks(M, block_rows). */
#define OPS_STATS_ROWS_LINEAR 64
void linear_stats_forward(float *out, const float *in, const float *w, int M, int Cin, int Cout,
                          double *mean, double *m2);
void dwconv_stats_forward(float *out, const float *in, const float *w, int N, int H, int W, int C,
                          int K, int stride, double *mean, double *m2);
static inline long ops_stats_blocks(long M, long block_rows) {
  return (M + block_rows - 1) / block_rows;
}

/* Below this many elements a parallel region costs more than it saves. */
#define OPS_PAR_MIN 16384

/* Number of reduction chunks for M rows of width C: a function of (M, C) only, so the
 * summation order never depends on the thread count. Aim for >= ~32K elements per chunk and
 * at most 64 chunks (enough to balance 2..16 threads). */
static inline int ops_nchunks(long M, long C) {
  long per = 32768 / (C > 0 ? C : 1);
  if (per < 1) per = 1;
  long n = (M + per - 1) / per;
  if (n > 64) n = 64;
  if (n < 1) n = 1;
  return (int)n;
}
static inline long ops_chunk_lo(long M, int nchunk, int i) { return M * i / nchunk; }

/* A per-file scratch buffer grown on demand and kept for the process lifetime: reductions
 * need nchunk partials, and ops.h promises no allocation in the steady state (after the
 * first step every call finds the buffer big enough). Ops are called from one thread. */
typedef struct {
  void *p;
  size_t bytes;
} ops_scratch;
static inline void *ops_scratch_get(ops_scratch *s, size_t bytes) {
  if (bytes > s->bytes) {
    free(s->p);
    s->p = xmalloc_aligned(bytes);
    s->bytes = bytes;
  }
  return s->p;
}

/* OpenBLAS GEMMs whose bits do not depend on the thread count (linear.c): fixed row chunks,
 * one serial call each inside an OpenMP region, and a reduction over rows as chunk partials
 * added in order. For every op that needs OpenBLAS (a build without AVX2, huge K).
 *   ops_blas_rows: C[M][N] = A[M][K] . op(B) + beta*C, op(B) = B^T for B [N][K], else B [K][N]
 *   ops_blas_dw:   dw[N][K] += sum_m dout[m][n] * in[m][k] */
void ops_blas_rows(float *C, const float *A, const float *B, int b_transposed, float beta, int M,
                   int K, int N);
void ops_blas_dw(float *dw, const float *dout, const float *in, long M, int K, int N);

#endif
