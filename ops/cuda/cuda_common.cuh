/* cuda_common.cuh - private helpers for the ops/cuda kernels: launch sizes, the
 * activation formulas (act.c's, operation for operation) and the fixed-order reductions.
 *
 * Why fixed order: a column sum over M rows is split into cuda_nchunks(M) row chunks whose
 * bounds depend on M only; inside a chunk 8 threads per column stride over rows and their
 * sums are added in thread order; the chunk partials are then added in chunk order. No
 * atomics, so a result is bit-identical from run to run (and does not depend on the GPU).
 * Not for: anything public (ops_cuda.h is the API). */
#ifndef POLLEN_CUDA_COMMON_CUH
#define POLLEN_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

/* core.h is C without extern "C" guards: die(), xcalloc() must keep their C names here. */
extern "C" {
#include "base/core.h"
}
#include "ops/cuda/ops_cuda.h"

#define CU_THREADS 256

/* Blocks for a grid-stride loop over n elements: enough to fill any current GPU, bounded. */
static inline unsigned cu_blocks(size_t n) {
  size_t b = (n + CU_THREADS - 1) / CU_THREADS;
  if (b < 1) b = 1;
  if (b > 8192) b = 8192;
  return (unsigned)b;
}

#define CU_FOR(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (size_t)gridDim.x * blockDim.x)

/* Philox4x32-10 on v in place: base/core.c's rounds, word for word, so the GPU's dropout and
 * stochastic-depth masks are the CPU's. */
__device__ __forceinline__ void cu_philox4x32(uint32_t v[4], uint64_t key) {
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * v[0];
    uint64_t p1 = (uint64_t)0xCD9E8D57u * v[2];
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ v[1] ^ k0, n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ v[3] ^ k1, n3 = (uint32_t)p0;
    v[0] = n0, v[1] = n1, v[2] = n2, v[3] = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

/* Per-channel work over M rows of C channels (NHWC): each thread keeps one channel c and
 * strides over rows, and a block spans cw channels x lanes consecutive rows, so a block's
 * loads are one contiguous range (cw = C up to 1024) and no element needs a division. */
struct cu_rows {
  dim3 grid, block;
};
static inline cu_rows cu_rows_launch(long M, int C) {
  const int groups = (C + 1023) / 1024, cw = (C + groups - 1) / groups;
  const int lanes = cw >= 256 ? 1 : 256 / cw;
  long gx = (M + lanes - 1) / lanes;
  if (gx > 16384) gx = 16384;
  if (gx < 1) gx = 1;
  return cu_rows{dim3((unsigned)gx, (unsigned)groups), dim3((unsigned)cw, (unsigned)lanes)};
}
#define CU_ROW_CHANNEL() ((int)(blockIdx.y * blockDim.x + threadIdx.x))
#define CU_ROWS(m, M) \
  for (long m = (long)blockIdx.x * blockDim.y + threadIdx.y; m < (M); m += (long)gridDim.x * blockDim.y)

/* ---- activations: PyTorch's formulas and break-point gradients, as in ops/act.c ---- */
__device__ __forceinline__ float cu_relu6(float x) {
  float y = x > 0.0f ? x : 0.0f;
  return y < 6.0f ? y : 6.0f;
}

template <int ACT>
__device__ __forceinline__ float cu_act_f(float x) {
  if (ACT == ACT_RELU) return x > 0.0f ? x : 0.0f;
  if (ACT == ACT_RELU6) return cu_relu6(x);
  /* __fmul_rn / __fdiv_rn: no contraction into an FMA, so the bits match the CPU's */
  if (ACT == ACT_HARDSWISH) return __fdiv_rn(__fmul_rn(x, cu_relu6(x + 3.0f)), 6.0f);
  if (ACT == ACT_HARDSIGMOID) return __fdiv_rn(cu_relu6(x + 3.0f), 6.0f);
  return x;
}

template <int ACT>
__device__ __forceinline__ float cu_act_grad(float x, float g) {
  if (ACT == ACT_RELU) return x > 0.0f ? g : 0.0f;
  if (ACT == ACT_RELU6) return (x > 0.0f && x < 6.0f) ? g : 0.0f;
  if (ACT == ACT_HARDSWISH) {
    float mid = __fmul_rn(g, __fadd_rn(__fdiv_rn(x, 3.0f), 0.5f));
    return x < -3.0f ? 0.0f : (x <= 3.0f ? mid : g);
  }
  if (ACT == ACT_HARDSIGMOID) return (x > -3.0f && x < 3.0f) ? __fdiv_rn(g, 6.0f) : 0.0f;
  return g;
}

/* Calls KERNEL<ACT><<<...>>>(args) with ACT a compile-time constant (branch-free kernels). */
#define CU_ACT_DISPATCH(act, LAUNCH)                  \
  switch (act) {                                      \
    case ACT_NONE: LAUNCH(ACT_NONE); break;           \
    case ACT_RELU: LAUNCH(ACT_RELU); break;           \
    case ACT_RELU6: LAUNCH(ACT_RELU6); break;         \
    case ACT_HARDSWISH: LAUNCH(ACT_HARDSWISH); break; \
    case ACT_HARDSIGMOID: LAUNCH(ACT_HARDSIGMOID); break; \
  }

/* ---- fixed-order column sums ---- */
template <typename T>
struct cu_pair {
  T a, b;
};

/* Row chunks for a sum over M rows: a function of M only. ~1024 rows per chunk, <= 2048
 * (enough blocks to fill the GPU for the batch's largest activations). */
static inline int cu_nchunks(long M) {
  long n = (M + 1023) / 1024;
  if (n < 1) n = 1;
  if (n > 2048) n = 2048;
  return (int)n;
}

/* Elements of partials a cu_colsum2 over (M, C) needs. */
static inline size_t cu_colsum2_part_elems(long M, int C) {
  return 2 * (size_t)cu_nchunks(M) * (size_t)C;
}

#define CU_CS_W 32 /* columns per block: one warp wide, coalesced */
#define CU_CS_R 8  /* threads per column */

/* part[ch][0][c] = sum over the chunk's rows of f(m, c).a, part[ch][1][c] likewise .b */
template <typename T, typename F>
__global__ void cu_colsum2_part_k(T *part, long M, int C, int nch, F f) {
  __shared__ T sh[2][CU_CS_R][CU_CS_W + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * CU_CS_W + tx, ch = blockIdx.y;
  const long lo = M * ch / nch, hi = M * (ch + 1) / nch;
  T s1 = 0, s2 = 0;
  if (c < C)
    for (long m = lo + ty; m < hi; m += CU_CS_R) {
      cu_pair<T> v = f(m, c);
      s1 += v.a;
      s2 += v.b;
    }
  sh[0][ty][tx] = s1;
  sh[1][ty][tx] = s2;
  __syncthreads();
  if (ty == 0 && c < C) {
    T a = 0, b = 0;
    for (int r = 0; r < CU_CS_R; r++) {
      a += sh[0][r][tx];
      b += sh[1][r][tx];
    }
    part[((size_t)ch * 2 + 0) * C + c] = a;
    part[((size_t)ch * 2 + 1) * C + c] = b;
  }
}

template <typename T>
__global__ void cu_colsum2_final_k(T *S1, T *S2, const T *part, int C, int nch) {
  CU_FOR(c, (size_t)C) {
    T a = 0, b = 0;
    for (int ch = 0; ch < nch; ch++) {
      a += part[((size_t)ch * 2 + 0) * C + c];
      b += part[((size_t)ch * 2 + 1) * C + c];
    }
    S1[c] = a;
    if (S2) S2[c] = b;
  }
}

/* S1[c] = sum_m f(m,c).a, S2[c] = sum_m f(m,c).b (S2 may be NULL), fixed order. part holds
 * cu_colsum2_part_elems(M, C) elements of T. */
template <typename T, typename F>
static void cu_colsum2(cudaStream_t s, T *S1, T *S2, T *part, long M, int C, F f) {
  const int nch = cu_nchunks(M);
  dim3 grid((unsigned)((C + CU_CS_W - 1) / CU_CS_W), (unsigned)nch), block(CU_CS_W, CU_CS_R);
  cu_colsum2_part_k<T, F><<<grid, block, 0, s>>>(part, M, C, nch, f);
  CUDA_CHECK_LAUNCH();
  cu_colsum2_final_k<T><<<cu_blocks((size_t)C), CU_THREADS, 0, s>>>(S1, S2, part, C, nch);
  CUDA_CHECK_LAUNCH();
}

/* Per image: out[n][c] = scale * sum over q < HW of f(n, q, c), positions in a fixed order. */
template <typename F>
__global__ void cu_segsum_k(float *out, int N, int HW, int C, float scale, F f) {
  __shared__ float sh[CU_CS_R][CU_CS_W + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * CU_CS_W + tx, n = blockIdx.y;
  float s = 0.0f;
  if (c < C)
    for (int q = ty; q < HW; q += CU_CS_R) s += f(n, q, c);
  sh[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < C) {
    float a = 0.0f;
    for (int r = 0; r < CU_CS_R; r++) a += sh[r][tx];
    out[(size_t)n * C + c] = a * scale;
  }
}

template <typename F>
static void cu_segsum(cudaStream_t s, float *out, int N, int HW, int C, float scale, F f) {
  if (N <= 0 || C <= 0) return;
  dim3 grid((unsigned)((C + CU_CS_W - 1) / CU_CS_W), (unsigned)N), block(CU_CS_W, CU_CS_R);
  cu_segsum_k<F><<<grid, block, 0, s>>>(out, N, HW, C, scale, f);
  CUDA_CHECK_LAUNCH();
}

#endif
