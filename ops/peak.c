/* peak.c - the floating-point peak of this kernel path, measured: every thread runs
 * independent fused multiply-add chains on registers (enough of them to cover the FMA
 * latency on every core pollen has met), so the rate is the FMA units' throughput at the
 * clock the cores really run at. Benchmarks quote their GFLOP/s against it. The baseline
 * path has no FMA: there it is a multiply and an add, which is what its kernels run. */
#include "base/core.h"
#include "ops/ops.h"
#include "ops/ops_simd.h"

#if OPS_AVX512
typedef __m512 peak_vec;
#define PEAK_LANES 16
#define PEAK_SET1(x) _mm512_set1_ps(x)
#define PEAK_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define PEAK_SUM(v) _mm512_reduce_add_ps(v)
#elif OPS_AVX2
typedef __m256 peak_vec;
#define PEAK_LANES 8
#define PEAK_SET1(x) _mm256_set1_ps(x)
#define PEAK_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
static inline float peak_sum8(__m256 v) {
  float t[8];
  _mm256_storeu_ps(t, v);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#define PEAK_SUM(v) peak_sum8(v)
#elif defined(__SSE__) /* x86-64-v2: SSE, no FMA */
#include <immintrin.h>
typedef __m128 peak_vec;
#define PEAK_LANES 4
#define PEAK_SET1(x) _mm_set1_ps(x)
#define PEAK_FMA(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))
static inline float peak_sum4(__m128 v) {
  float t[4];
  _mm_storeu_ps(t, v);
  return t[0] + t[1] + t[2] + t[3];
}
#define PEAK_SUM(v) peak_sum4(v)
#else
typedef float peak_vec;
#define PEAK_LANES 1
#define PEAK_SET1(x) (x)
#define PEAK_FMA(a, b, c) ((a) * (b) + (c))
#define PEAK_SUM(v) (v)
#endif

/* Twelve chains, named one by one: as an array the compiler may keep them in memory. */
#define PEAK_CHAINS 12
#define PEAK_EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* iters rounds of PEAK_CHAINS independent FMAs; the sum keeps the work observable. */
static float peak_run(long iters, float seed) {
  const peak_vec mul = PEAK_SET1(0.999999f), add = PEAK_SET1(1e-7f);
#define PEAK_INIT(c) peak_vec acc##c = PEAK_SET1(seed + (float)(c));
  PEAK_EACH(PEAK_INIT)
  for (long i = 0; i < iters; i++) {
#define PEAK_STEP(c) acc##c = PEAK_FMA(acc##c, mul, add);
    PEAK_EACH(PEAK_STEP)
  }
  float s = 0.0f;
#define PEAK_ADD(c) s += PEAK_SUM(acc##c);
  PEAK_EACH(PEAK_ADD)
  return s;
}

double ops_fma_peak_gflops(void) {
  const long iters = 20000000;
  double best = 0.0;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = time_now();
    float sink = 0.0f;
    int ran = 0;
#pragma omp parallel reduction(+ : sink, ran)
    {
      sink += peak_run(iters, 1.0f);
      ran += 1;
    }
    double dt = time_now() - t0;
    if (sink == 0.12345f) log_info("peak: %g", sink); /* keep the sums alive */
    double flops = 2.0 * PEAK_LANES * PEAK_CHAINS * (double)iters * ran;
    if (flops / dt / 1e9 > best) best = flops / dt / 1e9;
  }
  return best;
}
