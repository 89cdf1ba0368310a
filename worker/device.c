/* device.c - --device parsing and per-rank GPU choice; see device.h. The CUDA runtime calls
 * are in one section, which a build without CUDA replaces with answers that refuse cuda. */
#include "worker/device.h"

#include <stdio.h>
#include <string.h>

#include "base/core.h"
#include "ops/ops.h"

/* ---- the CUDA runtime: all that differs in a build without CUDA ---------------------- */

#ifdef POLLEN_HAVE_CUDA
#include <cuda_runtime_api.h>

int device_built_with_cuda(void) { return 1; }

int device_cuda_count(char *why, size_t why_len) {
  if (why && why_len) why[0] = '\0';
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) snprintf(why, why_len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
    cudaGetLastError(); /* the error is reported here; do not let it leak to a later check */
    return 0;
  }
  if (n <= 0 && why) snprintf(why, why_len, "cudaGetDeviceCount: 0 devices");
  return n > 0 ? n : 0;
}

static void bind_gpu(int g, int n) {
  cudaError_t e = cudaSetDevice(g);
  if (e != cudaSuccess)
    die("--device cuda: cannot use GPU %d of %d (cudaSetDevice: %s); check nvidia-smi", g, n,
        cudaGetErrorString(e));
}

static void describe_gpu(int gpu, char *out, size_t out_len) {
  struct cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, gpu) == cudaSuccess)
    snprintf(out, out_len, "GPU %d: %s, sm_%d%d, %.0f GiB", gpu, p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

#else /* no CUDA: no GPU is ever counted, so device_select never binds or describes one */

int device_built_with_cuda(void) { return 0; }

int device_cuda_count(char *why, size_t why_len) {
  if (why && why_len) why[0] = '\0';
  if (why) snprintf(why, why_len, "this pollen was built without CUDA (cmake -DPOLLEN_CUDA=ON)");
  return 0;
}

static void bind_gpu(int g, int n) {}
static void describe_gpu(int gpu, char *out, size_t out_len) {}

#endif

/* ---- parsing and the choice ---------------------------------------------------------- */

int device_parse(const char *name) {
  if (!name) return -1;
  if (strcmp(name, "cpu") == 0) return DEVICE_CPU;
  if (strcmp(name, "cuda") == 0) return DEVICE_CUDA;
  if (strcmp(name, "auto") == 0) return DEVICE_AUTO;
  return -1;
}

int device_precision_parse(const char *name) {
  static const char *names[] = {"fp32", "tf32", "bf16", "fp16"}; /* cuda_math order */
  for (int i = 0; name && i < 4; i++)
    if (strcmp(name, names[i]) == 0) return i;
  return -1;
}

int device_cpu_precision_use(const char *name, char *err, size_t errlen) {
  switch (device_precision_parse(name)) {
    case 0: return ops_gemm_precision_use(OPS_GEMM_FP32, err, errlen);
    case 2: return ops_gemm_precision_use(OPS_GEMM_BF16, err, errlen);
    default:
      err_set(err, errlen, "'%s' GEMMs run on a GPU only; on the CPU use fp32 or bf16", name ? name : "");
      return -1;
  }
}

const char *device_name(device_kind kind) {
  switch (kind) {
    case DEVICE_CPU: return "cpu";
    case DEVICE_CUDA: return "cuda";
    case DEVICE_AUTO: return "auto";
  }
  return "unknown";
}

device_kind device_select(device_kind kind, int local_rank, int *gpu) {
  if (gpu) *gpu = -1;
  if (kind == DEVICE_CPU) return DEVICE_CPU;
  if (!device_built_with_cuda()) {
    if (kind == DEVICE_AUTO) return DEVICE_CPU;
    die("--device cuda: this pollen was built without CUDA (cmake -DPOLLEN_CUDA=ON); "
        "use --device cpu");
  }
  char why[160];
  int n = device_cuda_count(why, sizeof why);
  if (n == 0) {
    if (kind == DEVICE_AUTO) return DEVICE_CPU;
    die("--device cuda: no CUDA device visible (%s); check nvidia-smi and CUDA_VISIBLE_DEVICES, "
        "or use --device cpu", why);
  }
  int g = (local_rank > 0 ? local_rank : 0) % n;
  bind_gpu(g, n);
  if (gpu) *gpu = g;
  return DEVICE_CUDA;
}

void device_describe(device_kind kind, int gpu, char *out, size_t out_len) {
  if (!out_len) return;
  snprintf(out, out_len, "cpu");
  if (kind == DEVICE_CUDA && gpu >= 0) describe_gpu(gpu, out, out_len);
}
