/* linear.c - fully connected layer and NHWC 1x1 convolution: out[M][Cout] = in . w^T + bias.
 *
 * MobileNet's 1x1 convolutions are tall and skinny (M = N*H*W up to 100352 rows, 16..576
 * channels): OpenBLAS spends most of its time packing there, and in the weight gradient
 * (a reduction over all M rows) even more; and its results can change with the thread count
 * for some shapes. So GEMM kernels written here (AVX2: 4 rows x 24 columns in registers;
 * AVX-512: 8 rows x 48, the last vector masked) do all three products: out = in . w^T + bias
 * and din = dout . w over fixed (row block, column block) work items, and dw = dout^T . in
 * summed per fixed chunk of rows with the chunks added in order, so every result is the same
 * for any thread count. A work item's block is still in cache when it is done: the fused
 * epilogues (activation, batch-norm statistics) run on it there. OpenBLAS (OpenMP build: it
 * shares pollen's threads) is left for the baseline path and huge K.
 * (tools/gemm_compare measures these kernels against oneDNN and libxsmm: BENCHMARKS.md.)
 * dbias is a column sum over fixed row chunks (ops_simd.h). The chunk partials live in
 * static buffers grown on demand (no steady-state allocation). */
#include <cblas.h>
#include <string.h>

#include "ops/ops.h"
#include "ops/ops_simd.h"

#ifndef LIN_SMALL_KMAX
#define LIN_SMALL_KMAX 4096
#endif

static ops_scratch linear_partials, lin_dw_partials;

/* Row chunks of dw's reduction over M: a function of M only (see ops_simd.h). */
static long lin_dw_nchunks(long M) {
  long nch = M / 512;
  return nch > 16 ? 16 : (nch < 1 ? 1 : nch);
}

/* ---- GEMM kernels (AVX2) -------------------------------------------------------------- */
#if OPS_AVX2
static ops_scratch lin_wt;
#define LIN_INLINE static inline __attribute__((always_inline))

/* C[MR][8*NB] = bias + A[MR][K] . B[K][8*NB] (lda, ldb, ldc in floats; bias may be NULL);
 * MR and NB are constants after inlining, so the MR*NB accumulators live in registers.
 * Each output element is a sum over k in order: the same bits whichever thread runs it. */
LIN_INLINE void lin_kern_nn(float *C, const float *A, const float *B, const float *bias, int K,
                            int lda, int ldb, int ldc, int MR, int NB) {
  __m256 acc[4][3];
  for (int r = 0; r < MR; r++)
    for (int b = 0; b < NB; b++)
      acc[r][b] = bias ? _mm256_loadu_ps(bias + 8 * b) : _mm256_setzero_ps();
  for (int k = 0; k < K; k++) {
    __m256 bv[3];
    for (int b = 0; b < NB; b++) bv[b] = _mm256_loadu_ps(B + (size_t)k * ldb + 8 * b);
    for (int r = 0; r < MR; r++) {
      __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + k);
      for (int b = 0; b < NB; b++) acc[r][b] = _mm256_fmadd_ps(a, bv[b], acc[r][b]);
    }
  }
  for (int r = 0; r < MR; r++)
    for (int b = 0; b < NB; b++) _mm256_storeu_ps(C + (size_t)r * ldc + 8 * b, acc[r][b]);
}

/* Rows m..m+MR-1, columns [n0, n1) of C[M][N] = bias + A[M][K] . B[K][N]. */
LIN_INLINE void lin_rows_nn_mr(float *C, const float *A, const float *B, const float *bias,
                               long m, int K, int N, int n0, int n1, int MR) {
  float *c = C + (size_t)m * N;
  const float *a = A + (size_t)m * K;
  int n = n0;
#define LIN_TILE(NB) lin_kern_nn(c + n, a, B + n, bias ? bias + n : NULL, K, K, N, N, MR, NB)
  for (; n + 24 <= n1; n += 24) LIN_TILE(3);
  if (n + 16 <= n1) LIN_TILE(2), n += 16;
  if (n + 8 <= n1) LIN_TILE(1), n += 8;
#undef LIN_TILE
  for (; n < n1; n++) /* fewer than 8 columns left: the same sum, one lane */
    for (int r = 0; r < MR; r++) {
      float acc = bias ? bias[n] : 0.0f;
      for (int k = 0; k < K; k++) acc = fmaf(a[(size_t)r * K + k], B[(size_t)k * N + n], acc);
      c[(size_t)r * N + n] = acc;
    }
}

#if OPS_AVX512
/* The AVX-512 kernels: tiles of NB 16-wide vectors, the last one masked to the columns left
 * (so 24-, 40- or 88-channel layers need no scalar tail), MR up to 8 rows: 24 of the 32
 * registers accumulate. Same sums in the same order as the AVX2 kernels' per element. */
static inline __mmask16 lin_mask(int cols) { return cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1); }
/* Vector b of an NB-vector tile: all lanes but in the last. */
static inline __mmask16 lin_vmask(int b, int NB, __mmask16 last) {
  return b == NB - 1 ? last : (__mmask16)0xFFFF;
}

/* A tile's accumulators: from init's rows (stride init_ld; 0: one row for all, a bias), or
 * zero when init is NULL; and back to C's rows. */
LIN_INLINE void lin512_acc_init(__m512 acc[8][3], const float *init, long init_ld, int MR, int NB,
                                __mmask16 last) {
  for (int r = 0; r < MR; r++)
    for (int b = 0; b < NB; b++)
      acc[r][b] = init ? _mm512_maskz_loadu_ps(lin_vmask(b, NB, last), init + r * init_ld + 16 * b)
                       : _mm512_setzero_ps();
}
LIN_INLINE void lin512_acc_store(float *C, long ldc, __m512 acc[8][3], int MR, int NB,
                                 __mmask16 last) {
  for (int r = 0; r < MR; r++)
    for (int b = 0; b < NB; b++)
      _mm512_mask_storeu_ps(C + r * ldc + 16 * b, lin_vmask(b, NB, last), acc[r][b]);
}

/* One tile, for all three products: C[r][cols] = init[r][cols] + sum over i < len of
 * A[r*ars + i*ais] * B[i*ldb][cols], r < MR, cols in (16*(NB-1), 16*NB]. init rows have
 * stride init_ld (0: one row for all, a bias; init NULL: zero). out and din walk A's rows
 * (i = k, ais = 1); dw walks its columns (i = m) and accumulates onto the partial (init = C). */
LIN_INLINE void lin512_tile(float *C, long ldc, const float *init, long init_ld, const float *A,
                            long ars, long ais, const float *B, long ldb, long len, int MR,
                            int NB, __mmask16 last) {
  __m512 acc[8][3];
  lin512_acc_init(acc, init, init_ld, MR, NB, last);
  for (long i = 0; i < len; i++) {
    __m512 bv[3];
    for (int b = 0; b < NB; b++)
      bv[b] = _mm512_maskz_loadu_ps(lin_vmask(b, NB, last), B + i * ldb + 16 * b);
    for (int r = 0; r < MR; r++) {
      __m512 a = _mm512_set1_ps(A[r * ars + i * ais]);
      for (int b = 0; b < NB; b++) acc[r][b] = _mm512_fmadd_ps(a, bv[b], acc[r][b]);
    }
  }
  lin512_acc_store(C, ldc, acc, MR, NB, last);
}

/* Columns [n, end) in tiles: 48 wide, then one of 1-3 vectors with the last masked.
 * TILE(NB, LAST) reads n. */
#define LIN512_COLUMN_TILES(n, end, TILE)                                 \
  do {                                                                    \
    for (; (n) + 48 <= (end); (n) += 48) TILE(3, (__mmask16)0xFFFF);      \
    int left_ = (end) - (n);                                              \
    if (left_ > 32) TILE(3, lin_mask(left_ - 32));                        \
    else if (left_ > 16) TILE(2, lin_mask(left_ - 16));                   \
    else if (left_ > 0) TILE(1, lin_mask(left_));                         \
  } while (0)

/* Rows m..m+MR-1, columns [n0, n1) of C[M][N] = bias + A[M][K] . B[K][N]. */
LIN_INLINE void lin512_rows_nn_mr(float *C, const float *A, const float *B, const float *bias,
                                  long m, int K, int N, int n0, int n1, int MR) {
  float *c = C + (size_t)m * N;
  const float *a = A + (size_t)m * K;
  int n = n0;
#define LIN_TILE(NB, LAST) \
  lin512_tile(c + n, N, bias ? bias + n : NULL, 0, a, K, 1, B + n, N, K, MR, NB, LAST)
  LIN512_COLUMN_TILES(n, n1, LIN_TILE);
#undef LIN_TILE
}
#endif

#define LIN_ROWBLOCK OPS_STATS_ROWS_LINEAR /* rows per parallel work item: 64 */
#define LIN_COLBLOCK 192 /* columns per work item (8 tiles of 24) */

/* C[M][N] = bias + A[M][K] . B[K][N], parallel over fixed (row block, column block) items,
 * so that a few rows (a classifier's batch) still spread over the threads. */
static void lin_gemm_nn(float *C, const float *A, const float *B, const float *bias, long M,
                        int K, int N, act_kind act, double *stat_mean, double *stat_m2) {
  const long nrb = (M + LIN_ROWBLOCK - 1) / LIN_ROWBLOCK;
  const int ncb = (N + LIN_COLBLOCK - 1) / LIN_COLBLOCK;
#pragma omp parallel for schedule(static) if (M * (long)N * K >= 4 * OPS_PAR_MIN)
  for (long item = 0; item < nrb * ncb; item++) {
    long m = (item / ncb) * LIN_ROWBLOCK, end = m + LIN_ROWBLOCK < M ? m + LIN_ROWBLOCK : M;
    const long m_first = m;
    int n0 = (int)(item % ncb) * LIN_COLBLOCK, n1 = n0 + LIN_COLBLOCK < N ? n0 + LIN_COLBLOCK : N;
#if OPS_AVX512
    for (; m + 8 <= end; m += 8) lin512_rows_nn_mr(C, A, B, bias, m, K, N, n0, n1, 8);
    if (m + 4 <= end) lin512_rows_nn_mr(C, A, B, bias, m, K, N, n0, n1, 4), m += 4;
    for (; m < end; m++) lin512_rows_nn_mr(C, A, B, bias, m, K, N, n0, n1, 1);
#else
    for (; m + 4 <= end; m += 4) lin_rows_nn_mr(C, A, B, bias, m, K, N, n0, n1, 4);
    for (; m < end; m++) lin_rows_nn_mr(C, A, B, bias, m, K, N, n0, n1, 1);
#endif
    /* The item's block is still in cache: the activation costs no pass of its own. */
    ops_bias_act_block(C + (size_t)m_first * N + n0, end - m_first, n1 - n0, N, NULL, act);
    if (stat_mean) {
      const size_t at = (size_t)(m_first / LIN_ROWBLOCK) * N + n0;
      ops_block_stats(C + (size_t)m_first * N + n0, end - m_first, n1 - n0, N, stat_mean + at,
                      stat_m2 + at);
    }
  }
}

/* P[k0..k0+KR)[n0..n0+8*NB) += sum over rows m in [m0, m1) of A[m][k] * B[m][n]. */
LIN_INLINE void lin_kern_tn(float *P, const float *A, const float *B, long m0, long m1, int lda,
                            int ldb, int ldp, int KR, int NB) {
  __m256 acc[4][3];
  for (int r = 0; r < KR; r++)
    for (int b = 0; b < NB; b++) acc[r][b] = _mm256_loadu_ps(P + (size_t)r * ldp + 8 * b);
  for (long m = m0; m < m1; m++) {
    __m256 bv[3];
    for (int b = 0; b < NB; b++) bv[b] = _mm256_loadu_ps(B + (size_t)m * ldb + 8 * b);
    for (int r = 0; r < KR; r++) {
      __m256 a = _mm256_broadcast_ss(A + (size_t)m * lda + r);
      for (int b = 0; b < NB; b++) acc[r][b] = _mm256_fmadd_ps(a, bv[b], acc[r][b]);
    }
  }
  for (int r = 0; r < KR; r++)
    for (int b = 0; b < NB; b++) _mm256_storeu_ps(P + (size_t)r * ldp + 8 * b, acc[r][b]);
}

LIN_INLINE void lin_tn_kr(float *P, const float *A, const float *B, long m0, long m1, int K, int N,
                          int k, int KR) {
  int n = 0;
  for (; n + 24 <= N; n += 24)
    lin_kern_tn(P + (size_t)k * N + n, A + k, B + n, m0, m1, K, N, N, KR, 3);
  if (n + 16 <= N)
    lin_kern_tn(P + (size_t)k * N + n, A + k, B + n, m0, m1, K, N, N, KR, 2), n += 16;
  if (n + 8 <= N) lin_kern_tn(P + (size_t)k * N + n, A + k, B + n, m0, m1, K, N, N, KR, 1), n += 8;
  for (; n < N; n++) /* fewer than 8 columns left */
    for (int r = 0; r < KR; r++) {
      float acc = P[(size_t)(k + r) * N + n];
      for (long m = m0; m < m1; m++)
        acc = fmaf(A[(size_t)m * K + k + r], B[(size_t)m * N + n], acc);
      P[(size_t)(k + r) * N + n] = acc;
    }
}

#if OPS_AVX512
/* P[k..k+KR)[0..N) += sum over rows m in [m0, m1) of A[m][k+r] * B[m][n]: lin512_tile down
 * A's columns, onto the partial. */
LIN_INLINE void lin512_tn_kr(float *P, const float *A, const float *B, long m0, long m1, int K,
                             int N, int k, int KR) {
  float *p = P + (size_t)k * N;
  const float *a = A + (size_t)m0 * K + k, *b = B + (size_t)m0 * N;
  int n = 0;
#define LIN_TILE(NB, LAST) \
  lin512_tile(p + n, N, p + n, N, a, 1, K, b + n, N, m1 - m0, KR, NB, LAST)
  LIN512_COLUMN_TILES(n, N, LIN_TILE);
#undef LIN_TILE
}
#endif

/* Rows per sub-block of dw's reduction: its rows of in and dout (about 256 KiB of elements
 * of elem_bytes) stay in L2 while every (k, n) register tile accumulates over all of them,
 * so each tile of the partial is loaded and stored once per sub-block. (Sub-blocks of a few
 * rows that fit L1 measured 15-25% slower on Zen 5: the partial's traffic dominated.) An
 * even count, for the bf16 row pairs; the sums are the same whatever the size. */
static long lin_tn_sub(int K, int N, int elem_bytes) {
  long sub = (262144 / ((long)elem_bytes * (K + N))) & ~1L;
  return sub < 8 ? 8 : (sub > 1024 ? 1024 : sub);
}

/* dw[n][k] += the chunk partials part[ch][k][n], added in chunk order. */
static void lin_dw_add_chunks(float *dw, const float *part, long nch, int K, int N) {
  const size_t kn = (size_t)K * N;
#pragma omp parallel for schedule(static) if ((long)kn * nch >= OPS_PAR_MIN)
  for (int n = 0; n < N; n++)
    for (int k = 0; k < K; k++) {
      float a = 0.0f;
      for (long ch = 0; ch < nch; ch++) a += part[kn * ch + (size_t)k * N + n];
      dw[(size_t)n * K + k] += a;
    }
}

/* dw[n][k] += sum_m A[m][k] * B[m][n] (A = in [M][K=Cin], B = dout [M][N=Cout]), over
 * fixed chunks of rows: partial P[K][N] per chunk, chunks added in order. */
static void lin_dw(float *dw, const float *B, const float *A, long M, int K, int N) {
  const size_t kn = (size_t)K * N;
  const long nch = lin_dw_nchunks(M);
  float *part = ops_scratch_get(&lin_dw_partials, sizeof(float) * kn * nch);
  const long sub = lin_tn_sub(K, N, sizeof(float));
#pragma omp parallel for schedule(static) if (M * (long)kn >= 4 * OPS_PAR_MIN)
  for (long ch = 0; ch < nch; ch++) {
    float *P = part + kn * ch;
    memset(P, 0, sizeof(float) * kn);
    long lo = ops_chunk_lo(M, (int)nch, (int)ch), hi = ops_chunk_lo(M, (int)nch, (int)ch + 1);
    for (long m0 = lo; m0 < hi; m0 += sub) {
      long m1 = m0 + sub < hi ? m0 + sub : hi;
      int k = 0;
#if OPS_AVX512
      for (; k + 8 <= K; k += 8) lin512_tn_kr(P, A, B, m0, m1, K, N, k, 8);
      if (k + 4 <= K) lin512_tn_kr(P, A, B, m0, m1, K, N, k, 4), k += 4;
      for (; k < K; k++) lin512_tn_kr(P, A, B, m0, m1, K, N, k, 1);
#else
      for (; k + 4 <= K; k += 4) lin_tn_kr(P, A, B, m0, m1, K, N, k, 4);
      for (; k < K; k++) lin_tn_kr(P, A, B, m0, m1, K, N, k, 1);
#endif
    }
  }
  lin_dw_add_chunks(dw, part, nch, K, N);
}

/* dst[c][r] = src[r][c] for 32-bit elements, src [rows][cols], in 32 x 32 tiles: a plain
 * column walk of a wide matrix misses the cache on every read (the classifier's 1024 x 576
 * weights took longer to transpose than to multiply). */
static void lin_transpose_words(void *dst, const void *src, long rows, long cols) {
  uint32_t *d = dst;
  const uint32_t *s = src;
  enum { T = 32 };
#pragma omp parallel for schedule(static) if (rows * cols >= OPS_PAR_MIN)
  for (long c0 = 0; c0 < cols; c0 += T)
    for (long r0 = 0; r0 < rows; r0 += T)
      for (long c = c0; c < c0 + T && c < cols; c++)
        for (long r = r0; r < r0 + T && r < rows; r++) d[c * rows + r] = s[r * cols + c];
}

/* w^T [Cin][Cout], once per forward call into a scratch buffer: the kernel reads B rows along
 * the output channels. */
static const float *lin_transposed(const float *w, int Cin, int Cout) {
  float *wt = ops_scratch_get(&lin_wt, sizeof(float) * (size_t)Cin * Cout);
  lin_transpose_words(wt, w, Cout, Cin);
  return wt;
}

/* The kernels here take every shape the networks have. OpenBLAS is left for the rest: a
 * very long reduction (K), or a build without AVX2. */
static int lin_own(int K) { return K <= LIN_SMALL_KMAX; }
#endif

/* ---- bfloat16 GEMMs (OPS_GEMM_BF16: AVX512_BF16) -----------------------------------------
 * VDPBF16PS multiplies pairs of bfloat16 and adds both products into one float32 lane, so
 * the reduction runs over pairs: (k, k+1) share a 32-bit word. The B side is packed as
 * words [pairs][N] (the weights once per call; dout per sub-block for dw); the A side is
 * one broadcast word per row and pair: plain bf16 rows for out and din, rows interleaved in
 * pairs for dw. An odd reduction length pairs its last element with zero. Rounding is
 * VCVTNEPS2BF16's (to nearest even) everywhere; the sums keep the float32 kernels' fixed
 * order, so results are bit-identical across thread counts here too. */
#if OPS_AVX512
#include <omp.h>
#pragma GCC push_options
#pragma GCC target("avx512bf16")

static ops_scratch lin_bf16_b, lin_bf16_rowbuf, lin_bf16_a;

static int lin_bf16(void) { return ops_gemm_precision_active() == OPS_GEMM_BF16; }

/* dst[r][0..ldd) = bf16(src[r][0..n)), zero past n (ldd even, >= n). */
static void lin_bf16_rows(uint16_t *dst, long ldd, const float *src, long lds, long rows, int n) {
  for (long r = 0; r < rows; r++) {
    uint16_t *d = dst + r * ldd;
    const float *s = src + r * lds;
    for (long c = 0; c < ldd; c += 16) {
      long left = n - c;
      __mmask16 in = left >= 16 ? (__mmask16)0xFFFF : (left > 0 ? lin_mask((int)left) : 0);
      long room = ldd - c;
      __mmask16 out = room >= 16 ? (__mmask16)0xFFFF : lin_mask((int)room);
      __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(in, s + c));
      _mm256_mask_storeu_epi16(d + c, out, (__m256i)v);
    }
  }
}

/* dst[p][c] = the word (bf16(src[2p][c]), bf16(src[2p+1][c])) for c < n, p < (rows + 1) / 2;
 * a missing last row is zero. */
static void lin_bf16_pairs(uint32_t *dst, const float *src, long lds, long rows, int n) {
  /* cvtne2ps puts row 2p's 16 values in the low half, row 2p+1's in the high half; the
   * permutation interleaves them into 16 words. */
  const __m512i weave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
  for (long p = 0; 2 * p < rows; p++) {
    const float *r0 = src + 2 * p * lds, *r1 = r0 + lds;
    const int has_r1 = 2 * p + 1 < rows;
    for (int c = 0; c < n; c += 16) {
      __mmask16 m = lin_mask(n - c);
      __m512 lo = _mm512_maskz_loadu_ps(m, r0 + c);
      __m512 hi = has_r1 ? _mm512_maskz_loadu_ps(m, r1 + c) : _mm512_setzero_ps();
      __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
      _mm512_mask_storeu_epi32(dst + p * n + c, m, _mm512_permutexvar_epi16(weave, both));
    }
  }
}

/* w [N][K] as the words of w^T: Bp[p][n] = (w[n][2p], w[n][2p+1]), for the forward product. */
static const uint32_t *lin_bf16_weights_t(const float *w, int K, int N) {
  const int kp = (K + 1) / 2;
  uint32_t *rows = ops_scratch_get(&lin_bf16_rowbuf, sizeof(uint32_t) * (size_t)N * kp);
  uint32_t *bp = ops_scratch_get(&lin_bf16_b, sizeof(uint32_t) * (size_t)N * kp);
  lin_bf16_rows((uint16_t *)rows, 2L * kp, w, K, N, K);
  lin_transpose_words(bp, rows, N, kp);
  return bp;
}

/* w [K][N] (K = Cout, N = Cin) as words over pairs of its rows, for din = dout . w. */
static const uint32_t *lin_bf16_weights(const float *w, int K, int N) {
  uint32_t *bp = ops_scratch_get(&lin_bf16_b, sizeof(uint32_t) * (size_t)((K + 1) / 2) * N);
  lin_bf16_pairs(bp, w, N, K, N);
  return bp;
}

/* lin512_tile on words: C[r][cols] = init[r][cols] + sum over pairs p < npairs of
 * dot(A[r*ars + p*ais], B[p*ldb][cols]). */
LIN_INLINE void lin_bf16_tile(float *C, long ldc, const float *init, long init_ld,
                              const uint32_t *A, long ars, long ais, const uint32_t *B, long ldb,
                              long npairs, int MR, int NB, __mmask16 last) {
  __m512 acc[8][3];
  lin512_acc_init(acc, init, init_ld, MR, NB, last);
  for (long p = 0; p < npairs; p++) {
    __m512bh bv[3];
    for (int b = 0; b < NB; b++)
      bv[b] = (__m512bh)_mm512_maskz_loadu_epi32(lin_vmask(b, NB, last), B + p * ldb + 16 * b);
    for (int r = 0; r < MR; r++) {
      __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r * ars + p * ais]);
      for (int b = 0; b < NB; b++) acc[r][b] = _mm512_dpbf16_ps(acc[r][b], a, bv[b]);
    }
  }
  lin512_acc_store(C, ldc, acc, MR, NB, last);
}

/* MR rows of C (row stride N), columns [n0, n1), from MR bf16 rows of A (kp words each). */
LIN_INLINE void lin_bf16_rows_mr(float *C, const uint32_t *A, int kp, const uint32_t *Bp,
                                 const float *bias, int N, int n0, int n1, int MR) {
  int n = n0;
#define LIN_TILE(NB, LAST) \
  lin_bf16_tile(C + n, N, bias ? bias + n : NULL, 0, A, kp, 1, Bp + n, N, kp, MR, NB, LAST)
  LIN512_COLUMN_TILES(n, n1, LIN_TILE);
#undef LIN_TILE
}

/* lin_gemm_nn with B as words (Bp [kp][N]): each work item rounds its A rows to bf16 in
 * its thread's buffer, then runs the tiles and the same epilogues. */
static void lin_bf16_gemm(float *C, const float *A, const uint32_t *Bp, const float *bias, long M,
                          int K, int N, act_kind act, double *stat_mean, double *stat_m2) {
  const long nrb = (M + LIN_ROWBLOCK - 1) / LIN_ROWBLOCK;
  const int ncb = (N + LIN_COLBLOCK - 1) / LIN_COLBLOCK, kp = (K + 1) / 2;
  const size_t per_thread = (size_t)LIN_ROWBLOCK * kp;
  uint32_t *abuf = ops_scratch_get(&lin_bf16_a, sizeof(uint32_t) * per_thread * omp_get_max_threads());
#pragma omp parallel for schedule(static) if (M * (long)N * K >= 4 * OPS_PAR_MIN)
  for (long item = 0; item < nrb * ncb; item++) {
    const long m0 = (item / ncb) * LIN_ROWBLOCK, rows = m0 + LIN_ROWBLOCK < M ? LIN_ROWBLOCK : M - m0;
    int n0 = (int)(item % ncb) * LIN_COLBLOCK, n1 = n0 + LIN_COLBLOCK < N ? n0 + LIN_COLBLOCK : N;
    uint32_t *a = abuf + per_thread * omp_get_thread_num();
    lin_bf16_rows((uint16_t *)a, 2L * kp, A + (size_t)m0 * K, K, rows, K);
    float *c = C + (size_t)m0 * N;
    long r = 0;
    for (; r + 8 <= rows; r += 8) lin_bf16_rows_mr(c + r * N, a + r * kp, kp, Bp, bias, N, n0, n1, 8);
    if (r + 4 <= rows) lin_bf16_rows_mr(c + r * N, a + r * kp, kp, Bp, bias, N, n0, n1, 4), r += 4;
    for (; r < rows; r++) lin_bf16_rows_mr(c + r * N, a + r * kp, kp, Bp, bias, N, n0, n1, 1);
    ops_bias_act_block(c + n0, rows, n1 - n0, N, NULL, act);
    if (stat_mean) {
      const size_t at = (size_t)(m0 / LIN_ROWBLOCK) * N + n0;
      ops_block_stats(c + n0, rows, n1 - n0, N, stat_mean + at, stat_m2 + at);
    }
  }
}

/* P[k..k+KR)[0..N) += the products of np word pairs of in (Ap [np][K]) and dout
 * (Bp [np][N]): lin512_tn_kr on words. */
LIN_INLINE void lin_bf16_tn_kr(float *P, const uint32_t *Ap, const uint32_t *Bp, long np, int K,
                               int N, int k, int KR) {
  float *p = P + (size_t)k * N;
  int n = 0;
#define LIN_TILE(NB, LAST) lin_bf16_tile(p + n, N, p + n, N, Ap + k, 1, K, Bp + n, N, np, KR, NB, LAST)
  LIN512_COLUMN_TILES(n, N, LIN_TILE);
#undef LIN_TILE
}

/* lin_dw in bf16: each sub-block of rows packs in (A) and dout (B) as row pairs, then the
 * tiles walk A's columns onto the chunk's partial, as lin512_tn_kr does. */
static void lin_bf16_dw(float *dw, const float *B, const float *A, long M, int K, int N) {
  const size_t kn = (size_t)K * N;
  const long nch = lin_dw_nchunks(M);
  const long sub = lin_tn_sub(K, N, 2), pairs = sub / 2;
  const size_t pack = (size_t)pairs * (K + N);
  float *part = ops_scratch_get(&lin_dw_partials, sizeof(float) * kn * nch);
  uint32_t *packs = ops_scratch_get(&lin_bf16_a, sizeof(uint32_t) * pack * nch);
#pragma omp parallel for schedule(static) if (M * (long)kn >= 4 * OPS_PAR_MIN)
  for (long ch = 0; ch < nch; ch++) {
    float *P = part + kn * ch;
    uint32_t *ap = packs + pack * ch, *bp = ap + (size_t)pairs * K;
    memset(P, 0, sizeof(float) * kn);
    long lo = ops_chunk_lo(M, (int)nch, (int)ch), hi = ops_chunk_lo(M, (int)nch, (int)ch + 1);
    for (long m0 = lo; m0 < hi; m0 += sub) {
      const long rows = m0 + sub < hi ? sub : hi - m0, np = (rows + 1) / 2;
      lin_bf16_pairs(ap, A + (size_t)m0 * K, K, rows, K);
      lin_bf16_pairs(bp, B + (size_t)m0 * N, N, rows, N);
      int k = 0;
      for (; k + 8 <= K; k += 8) lin_bf16_tn_kr(P, ap, bp, np, K, N, k, 8);
      if (k + 4 <= K) lin_bf16_tn_kr(P, ap, bp, np, K, N, k, 4), k += 4;
      for (; k < K; k++) lin_bf16_tn_kr(P, ap, bp, np, K, N, k, 1);
    }
  }
  lin_dw_add_chunks(dw, part, nch, K, N);
}
#pragma GCC pop_options
#endif

#if OPS_AVX2
/* The three products on the kernels above, in bf16 where it was asked for. */
static void lin_forward_own(float *out, const float *in, const float *w, const float *bias, long M,
                            int Cin, int Cout, act_kind act, double *mean, double *m2) {
#if OPS_AVX512
  if (lin_bf16()) {
    lin_bf16_gemm(out, in, lin_bf16_weights_t(w, Cin, Cout), bias, M, Cin, Cout, act, mean, m2);
    return;
  }
#endif
  lin_gemm_nn(out, in, lin_transposed(w, Cin, Cout), bias, M, Cin, Cout, act, mean, m2);
}

static void lin_din_own(float *din, const float *dout, const float *w, long M, int Cin, int Cout) {
#if OPS_AVX512
  if (lin_bf16()) {
    lin_bf16_gemm(din, dout, lin_bf16_weights(w, Cout, Cin), NULL, M, Cout, Cin, ACT_NONE, NULL, NULL);
    return;
  }
#endif
  lin_gemm_nn(din, dout, w, NULL, M, Cout, Cin, ACT_NONE, NULL, NULL);
}

static void lin_dw_own(float *dw, const float *dout, const float *in, long M, int Cin, int Cout) {
#if OPS_AVX512
  if (lin_bf16()) {
    lin_bf16_dw(dw, dout, in, M, Cin, Cout);
    return;
  }
#endif
  lin_dw(dw, dout, in, M, Cin, Cout);
}
#endif

/* ---- OpenBLAS, for what the kernels above do not take ------------------------------------
 * Its own threads split a GEMM by the thread count, which changes the bits for some shapes
 * (measured: M = 16, K = 336, N = 80). So it gets fixed row chunks here, one call each,
 * always inside an OpenMP region (where OpenBLAS runs serially): the same calls whatever the
 * thread count. */

void ops_blas_rows(float *C, const float *A, const float *B, int b_transposed, float beta, int M,
                   int K, int N) {
  const int nch = ops_nchunks(M, N);
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < nch; ch++) {
    long m0 = ops_chunk_lo(M, nch, ch), m1 = ops_chunk_lo(M, nch, ch + 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans,
                (int)(m1 - m0), N, K, 1.0f, A + (size_t)m0 * K, K, B, b_transposed ? K : N, beta,
                C + (size_t)m0 * N, N);
  }
}

void ops_blas_dw(float *dw, const float *dout, const float *in, long M, int K, int N) {
  const size_t kn = (size_t)K * N;
  const long nch = lin_dw_nchunks(M);
  float *part = ops_scratch_get(&lin_dw_partials, sizeof(float) * kn * nch);
#pragma omp parallel for schedule(static)
  for (long ch = 0; ch < nch; ch++) {
    long m0 = ops_chunk_lo(M, (int)nch, (int)ch), m1 = ops_chunk_lo(M, (int)nch, (int)ch + 1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, (int)(m1 - m0), 1.0f,
                dout + (size_t)m0 * N, N, in + (size_t)m0 * K, K, 0.0f, part + kn * ch, K);
  }
#pragma omp parallel for schedule(static) if ((long)kn * nch >= OPS_PAR_MIN)
  for (size_t i = 0; i < kn; i++) {
    float a = 0.0f;
    for (long ch = 0; ch < nch; ch++) a += part[kn * ch + i];
    dw[i] += a;
  }
}

void linear_forward(float *out, const float *in, const float *w, const float *bias, int M,
                    int Cin, int Cout) {
  linear_act_forward(out, in, w, bias, M, Cin, Cout, ACT_NONE);
}

void linear_act_forward(float *out, const float *in, const float *w, const float *bias, int M,
                        int Cin, int Cout, act_kind act) {
  if (M <= 0 || Cout <= 0) return;
#if OPS_AVX2
  if (Cin > 0 && lin_own(Cin)) {
    lin_forward_own(out, in, w, bias, M, Cin, Cout, act, NULL, NULL);
    return;
  }
#endif
  float beta = 0.0f;
  if (bias) {
    /* Seed out with the bias so the GEMM adds onto it: no separate pass afterwards. */
#pragma omp parallel for schedule(static) if ((long)M * Cout >= OPS_PAR_MIN)
    for (long m = 0; m < M; m++) memcpy(out + (size_t)m * Cout, bias, sizeof(float) * Cout);
    beta = 1.0f;
  }
  if (Cin <= 0) {
    if (!bias) memset(out, 0, sizeof(float) * (size_t)M * Cout);
  } else {
    ops_blas_rows(out, in, w, 1, beta, M, Cin, Cout);
  }
  if (act != ACT_NONE) act_forward(out, out, (size_t)M * Cout, act);
}

void linear_stats_forward(float *out, const float *in, const float *w, int M, int Cin, int Cout,
                          double *mean, double *m2) {
  const long rows = OPS_STATS_ROWS_LINEAR;
#if OPS_AVX2
  if (Cin > 0 && lin_own(Cin)) {
    lin_forward_own(out, in, w, NULL, M, Cin, Cout, ACT_NONE, mean, m2);
    return;
  }
#endif
  /* OpenBLAS: the statistics in a pass of their own. */
  linear_forward(out, in, w, NULL, M, Cin, Cout);
  const long nb = ops_stats_blocks(M, rows);
#pragma omp parallel for schedule(static) if ((long)M * Cout >= OPS_PAR_MIN)
  for (long b = 0; b < nb; b++) {
    long r0 = b * rows, n = M - r0 < rows ? M - r0 : rows;
    ops_block_stats(out + (size_t)r0 * Cout, n, Cout, Cout, mean + (size_t)b * Cout,
                    m2 + (size_t)b * Cout);
  }
}

/* dbias[c] += sum_m dout[m][c], in a thread-count-independent order. */
static void linear_colsum(float *dbias, const float *dout, int M, int C) {
  int nch = ops_nchunks(M, C);
  float *part = ops_scratch_get(&linear_partials, sizeof(float) * (size_t)nch * C);
#pragma omp parallel for schedule(static) if ((long)M * C >= OPS_PAR_MIN)
  for (int ch = 0; ch < nch; ch++) {
    float *acc = part + (size_t)ch * C;
    for (int c = 0; c < C; c++) acc[c] = 0.0f;
    for (long m = ops_chunk_lo(M, nch, ch); m < ops_chunk_lo(M, nch, ch + 1); m++) {
      const float *g = dout + (size_t)m * C;
      for (int c = 0; c < C; c++) acc[c] += g[c];
    }
  }
  for (int ch = 0; ch < nch; ch++)
    for (int c = 0; c < C; c++) dbias[c] += part[(size_t)ch * C + c];
}

void linear_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                     const float *w, int M, int Cin, int Cout) {
  if (M <= 0) {
    return;
  }
  if (din) {
#if OPS_AVX2
    if (Cout > 0 && Cin > 0 && lin_own(Cout))
      lin_din_own(din, dout, w, M, Cin, Cout);
    else
#endif
    if (Cout > 0)
      ops_blas_rows(din, dout, w, 0, 0.0f, M, Cout, Cin);
    else
      memset(din, 0, sizeof(float) * (size_t)M * Cin);
  }
#if OPS_AVX2
  if (Cout > 0 && Cin > 0 && lin_own(Cin))
    lin_dw_own(dw, dout, in, M, Cin, Cout);
  else
#endif
  if (Cout > 0 && Cin > 0)
    ops_blas_dw(dw, dout, in, M, Cin, Cout);
  if (dbias && Cout > 0) linear_colsum(dbias, dout, M, Cout);
}
