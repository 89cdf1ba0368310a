/* ctx.cu - the device context (stream, cuBLAS handle, scratch), error checks, device memory
 * and the row-major GEMM every other op uses. */
#include <cublas_v2.h>
#include <string.h>

#include "ops/cuda/cuda_common.cuh"

void cuda_check_at(cudaError_t err, const char *what, const char *file, int line) {
  if (err == cudaSuccess) return;
  die("CUDA error at %s:%d: %s: %s (%s); check the GPU with nvidia-smi", file, line, what,
      cudaGetErrorString(err), cudaGetErrorName(err));
}

#define CUBLAS_CHECK(call) cublas_check_at((call), #call, __FILE__, __LINE__)
static void cublas_check_at(cublasStatus_t st, const char *what, const char *file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  die("cuBLAS error at %s:%d: %s: %s (%s)", file, line, what, cublasGetStatusString(st),
      cublasGetStatusName(st));
}

cuda_ctx *cuda_ctx_new(void) {
  cuda_ctx *ctx = (cuda_ctx *)xcalloc(1, sizeof *ctx);
  CUDA_CHECK(cudaGetDevice(&ctx->device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, ctx->stream));
  ctx->cublas = h;
  cuda_ctx_set_math(ctx, CUDA_MATH_FP32);
  return ctx;
}

void cuda_ctx_free(cuda_ctx *ctx) {
  if (!ctx) return;
  cuda_ctx_sync(ctx);
  for (int i = 0; i < 2; i++) cuda_free(ctx->scratch[i]);
  cublasDestroy((cublasHandle_t)ctx->cublas);
  cudaStreamDestroy(ctx->stream);
  free(ctx);
}

void cuda_ctx_set_math(cuda_ctx *ctx, cuda_math math) {
  ctx->math = math;
  /* Default math is float32 (no TF32) for cublasSgemm; the reduced precisions are asked for
   * per call through cublasGemmEx's compute type. */
  CUBLAS_CHECK(cublasSetMathMode((cublasHandle_t)ctx->cublas, CUBLAS_DEFAULT_MATH));
}

static const char *const math_names[] = {"fp32", "tf32", "bf16", "fp16"};

const char *cuda_math_name(cuda_math math) {
  return (unsigned)math < 4 ? math_names[math] : "unknown";
}

void cuda_ctx_sync(cuda_ctx *ctx) { CUDA_CHECK(cudaStreamSynchronize(ctx->stream)); }

void *cuda_ctx_scratch(cuda_ctx *ctx, int slot, size_t bytes) {
  POLLEN_ASSERT(slot == 0 || slot == 1);
  if (bytes > ctx->scratch_bytes[slot]) {
    /* cudaFree waits for the device, so no queued kernel still reads the old buffer. */
    cuda_free(ctx->scratch[slot]);
    size_t grown = bytes + bytes / 4;
    ctx->scratch[slot] = cuda_malloc(grown);
    ctx->scratch_bytes[slot] = grown;
  }
  return ctx->scratch[slot];
}

void *cuda_malloc(size_t bytes) {
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    die("out of GPU memory allocating %zu bytes (%zu of %zu MiB free): %s; use a smaller batch",
        bytes, free_b >> 20, total_b >> 20, cudaGetErrorString(e));
  }
  return p;
}

void cuda_free(void *p) {
  if (p) CUDA_CHECK(cudaFree(p));
}

void cuda_upload(cuda_ctx *ctx, void *dst_dev, const void *src_host, size_t bytes) {
  if (bytes)
    CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_host, bytes, cudaMemcpyHostToDevice, ctx->stream));
}

void cuda_download(cuda_ctx *ctx, void *dst_host, const void *src_dev, size_t bytes) {
  if (bytes)
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src_dev, bytes, cudaMemcpyDeviceToHost, ctx->stream));
}

void cuda_copy(cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes) {
  if (bytes && dst_dev != src_dev)
    CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
}

void *cuda_host_alloc(size_t bytes) {
  void *p = NULL;
  cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
  if (e != cudaSuccess)
    die("cannot pin %zu bytes of host memory for GPU transfers: %s; use a smaller batch", bytes,
        cudaGetErrorString(e));
  return p;
}

void cuda_host_free(void *p) {
  if (p) CUDA_CHECK(cudaFreeHost(p));
}

void cuda_memset0(cuda_ctx *ctx, void *dev, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dev, 0, bytes, ctx->stream));
}

/* Row-major C = op(A).op(B) is column-major C^T = op(B)^T.op(A)^T: swap the operands and
 * the dimensions M and N, keep the transpose flags. */
void cuda_gemm(cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
  cublasHandle_t h = (cublasHandle_t)ctx->cublas;
  cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (ctx->math == CUDA_MATH_FP32) {
    CUBLAS_CHECK(cublasSgemm(h, opb, opa, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
    return;
  }
  cublasComputeType_t ct = ctx->math == CUDA_MATH_TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
                           : ctx->math == CUDA_MATH_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                         : CUBLAS_COMPUTE_32F_FAST_16F;
  CUBLAS_CHECK(cublasGemmEx(h, opb, opa, N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda,
                            &beta, C, CUDA_R_32F, ldc, ct, CUBLAS_GEMM_DEFAULT));
}
