/* dispatch.c - the ops.h functions, each a call into the kernel build chosen for this CPU.
 *
 * CMakeLists.txt compiles the ops/ sources three times (kernels_api.h says how): baseline x86-64-v2,
 * AVX2+FMA x86-64-v3 and AVX-512 x86-64-v4. One binary then runs well everywhere a node may
 * land, and a lower path can be forced (POLLEN_KERNELS, `pollen bench --kernels`) to test it or
 * to compare. The path is read once per op call: a predictable indirect call, noise next to
 * any kernel here. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/core.h"
#include "ops/kernels_api.h"
#include "ops/ops.h"

#define OPS_CAT_(a, b) a##b
#define OPS_CAT(a, b) OPS_CAT_(a, b)

/* The suffixed definitions of each build. */
#define OPS_DECL_VOID(name, params, args) void OPS_CAT(name, OPS_SUFFIX) params;
#define OPS_DECL_RET(type, name, params, args) type OPS_CAT(name, OPS_SUFFIX) params;
#define OPS_FIELD_VOID(name, params, args) void(*name) params;
#define OPS_FIELD_RET(type, name, params, args) type(*name) params;
#define OPS_INIT_VOID(name, params, args) .name = OPS_CAT(name, OPS_SUFFIX),
#define OPS_INIT_RET(type, name, params, args) .name = OPS_CAT(name, OPS_SUFFIX),

typedef struct {
  OPS_API_LIST(OPS_FIELD_VOID, OPS_FIELD_RET)
} ops_table;

#define OPS_SUFFIX _baseline
OPS_API_LIST(OPS_DECL_VOID, OPS_DECL_RET)
static const ops_table ops_table_baseline = {OPS_API_LIST(OPS_INIT_VOID, OPS_INIT_RET)};
#undef OPS_SUFFIX
#if POLLEN_KERNELS_X86
#define OPS_SUFFIX _avx2
OPS_API_LIST(OPS_DECL_VOID, OPS_DECL_RET)
static const ops_table ops_table_avx2 = {OPS_API_LIST(OPS_INIT_VOID, OPS_INIT_RET)};
#undef OPS_SUFFIX
#define OPS_SUFFIX _avx512
OPS_API_LIST(OPS_DECL_VOID, OPS_DECL_RET)
static const ops_table ops_table_avx512 = {OPS_API_LIST(OPS_INIT_VOID, OPS_INIT_RET)};
#undef OPS_SUFFIX
#endif

static const ops_table *ops_table_of(ops_kernels path) {
#if POLLEN_KERNELS_X86
  if (path == OPS_KERNELS_AVX512) return &ops_table_avx512;
  if (path == OPS_KERNELS_AVX2) return &ops_table_avx2;
#endif
  (void)path;
  return &ops_table_baseline;
}

static const char *const ops_path_names[OPS_KERNELS_COUNT] = {"baseline", "avx2", "avx512"};

const char *ops_kernels_name(ops_kernels path) {
  return path >= 0 && path < OPS_KERNELS_COUNT ? ops_path_names[path] : "?";
}

/* What a path needs beyond the one below it, as the CPU reports it (libgcc's checks include
 * the OS saving the wide registers). NULL when the CPU has it all. */
static const char *ops_kernels_missing(ops_kernels path) {
#if POLLEN_KERNELS_X86
  __builtin_cpu_init();
  if (path >= OPS_KERNELS_AVX2 &&
      !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
    return "AVX2 and FMA";
  if (path >= OPS_KERNELS_AVX512 &&
      !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
    return "AVX-512 (F, BW, DQ, VL)";
  return NULL;
#else
  return path == OPS_KERNELS_BASELINE ? NULL : "x86-64 (this build has the baseline path only)";
#endif
}

int ops_kernels_supported(ops_kernels path) {
  return path >= 0 && path < OPS_KERNELS_COUNT && !ops_kernels_missing(path);
}

int ops_kernels_parse(const char *name, ops_kernels *path, char *err, size_t errlen) {
  for (int p = 0; p < OPS_KERNELS_COUNT; p++) {
    if (strcmp(name, ops_path_names[p]) != 0) continue;
    const char *missing = ops_kernels_missing((ops_kernels)p);
    if (missing) {
      err_set(err, errlen, "kernel path '%s' needs %s, which this CPU lacks; use baseline%s",
              name, missing, ops_kernels_supported(OPS_KERNELS_AVX2) ? " or avx2" : "");
      return -1;
    }
    *path = (ops_kernels)p;
    return 0;
  }
  err_set(err, errlen, "unknown kernel path '%s'; use baseline, avx2 or avx512", name);
  return -1;
}

/* The path in use, -1 until the first call chooses it. */
static _Atomic int ops_active_path = -1;

void ops_kernels_use(ops_kernels path) {
  POLLEN_ASSERT(ops_kernels_supported(path));
  atomic_store(&ops_active_path, (int)path);
}

static ops_kernels ops_kernels_choose(void) {
  const char *env = getenv("POLLEN_KERNELS");
  if (env && *env) {
    ops_kernels path;
    char err[256];
    if (ops_kernels_parse(env, &path, err, sizeof err) != 0) die("POLLEN_KERNELS: %s", err);
    return path;
  }
  for (int p = OPS_KERNELS_COUNT - 1; p > 0; p--)
    if (ops_kernels_supported((ops_kernels)p)) return (ops_kernels)p;
  return OPS_KERNELS_BASELINE;
}

ops_kernels ops_kernels_active(void) {
  int p = atomic_load_explicit(&ops_active_path, memory_order_relaxed);
  if (p < 0) {
    ops_kernels_use(ops_kernels_choose());
    p = atomic_load(&ops_active_path);
  }
  return (ops_kernels)p;
}

/* GEMM inputs: float32 unless ops_gemm_precision_use() asked for bfloat16. */
static _Atomic int ops_gemm_active = OPS_GEMM_FP32;

static int ops_cpu_has_bf16(void) {
#if POLLEN_KERNELS_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
#else
  return 0;
#endif
}

int ops_gemm_precision_check(ops_gemm_precision p, char *err, size_t errlen) {
  if (p == OPS_GEMM_BF16 && !ops_cpu_has_bf16()) {
    err_set(err, errlen, "bf16 GEMMs need AVX512_BF16, which this CPU lacks; use fp32");
    return -1;
  }
  if (p == OPS_GEMM_BF16 && ops_kernels_active() != OPS_KERNELS_AVX512) {
    err_set(err, errlen, "bf16 GEMMs run on the avx512 kernel path, not '%s'; drop POLLEN_KERNELS or --kernels, or use fp32",
            ops_kernels_name(ops_kernels_active()));
    return -1;
  }
  return 0;
}

int ops_gemm_precision_use(ops_gemm_precision p, char *err, size_t errlen) {
  if (ops_gemm_precision_check(p, err, errlen) != 0) return -1;
  atomic_store(&ops_gemm_active, (int)p);
  return 0;
}

ops_gemm_precision ops_gemm_precision_active(void) {
  return (ops_gemm_precision)atomic_load_explicit(&ops_gemm_active, memory_order_relaxed);
}

const char *ops_gemm_precision_name(ops_gemm_precision p) {
  return p == OPS_GEMM_BF16 ? "bf16" : "fp32";
}

static const ops_table *ops_kernels_table(void) { return ops_table_of(ops_kernels_active()); }

#define OPS_WRAP_VOID(name, params, args) \
  void name params { ops_kernels_table()->name args; }
#define OPS_WRAP_RET(type, name, params, args) \
  type name params { return ops_kernels_table()->name args; }
OPS_API_LIST(OPS_WRAP_VOID, OPS_WRAP_RET)
