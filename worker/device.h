/* device.h - which processor a worker trains on: the CPU, or the GPU picked from the rank's
 * place on its node. --device cpu|cuda|auto (auto: cuda where this build has CUDA and a GPU
 * is visible, else cpu).
 *
 * Compiled in every build; without CUDA (cmake -DPOLLEN_CUDA=ON) asking for cuda is a clear
 * user error, never a crash. Not for: running kernels (ops/cuda/ops_cuda.h) or talking to other
 * GPUs (worker/nccl_sync.h). */
#ifndef POLLEN_DEVICE_H
#define POLLEN_DEVICE_H

#include <stddef.h>

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1, DEVICE_AUTO = 2 } device_kind;

/* "cpu" | "cuda" | "auto" -> the kind; -1 for anything else (the caller dies with the flag). */
int device_parse(const char *name);
const char *device_name(device_kind kind);

/* GEMM precision on a GPU: "fp32" | "tf32" | "bf16" | "fp16" -> 0..3 (ops/cuda's cuda_math
 * values); -1 for anything else. Every build parses it. */
int device_precision_parse(const char *name);
/* The same names on the CPU: fp32, or bf16 where the CPU has AVX512_BF16 (ops.h,
 * ops_gemm_precision_use); 0 when in use, else -1 and err says why in one line. */
int device_cpu_precision_use(const char *name, char *err, size_t errlen);

/* 1 when this pollen was built with CUDA. */
int device_built_with_cuda(void);

/* Number of CUDA devices this process sees; 0 with the reason in why (when why != NULL) when
 * there are none, the build lacks CUDA or the driver fails. Never dies. */
int device_cuda_count(char *why, size_t why_len);

/* Resolves kind (AUTO -> CUDA or CPU) and, for CUDA, binds this process to GPU
 * local_rank % count (cudaSetDevice), so the ranks of a node spread over its GPUs.
 * Returns DEVICE_CPU or DEVICE_CUDA; *gpu (may be NULL) gets the GPU index (-1 for CPU).
 * Dies with one clear line when cuda is asked for and cannot be had. */
device_kind device_select(device_kind kind, int local_rank, int *gpu);

/* One line describing the selected GPU ("NVIDIA H100 80GB HBM3, sm_90, 79 GiB") or "cpu". */
void device_describe(device_kind kind, int gpu, char *out, size_t out_len);

#endif
