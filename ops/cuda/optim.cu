/* optim.cu - the optimizer update on the GPU: the same formulas as worker/optim.c, one
 * element per thread, and the global gradient norm as a fixed-order reduction (no atomics,
 * so every run gives the same bits). Nothing is read back: clipping reads the norm from
 * device memory. */
#include "ops/cuda/cuda_common.cuh"

#define NORM_BLOCKS 512

/* part[b] = sum of g^2 over block b's grid-stride share, in double like the CPU's. */
__global__ void norm_part_k(double *part, const float *g, size_t n) {
  __shared__ double sh[CU_THREADS];
  double s = 0.0;
  CU_FOR(i, n) s += (double)g[i] * g[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = CU_THREADS / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

/* One thread: norm = sqrt(sum part); scale = clip / (norm + 1e-6) when clipping applies. */
__global__ void norm_final_k(float *norm_scale, const double *part, int nparts, float clip) {
  double s = 0.0;
  for (int i = 0; i < nparts; i++) s += part[i];
  float norm = (float)sqrt(s);
  norm_scale[0] = norm;
  norm_scale[1] = (clip > 0.0f && norm > clip) ? clip / (norm + 1e-6f) : 1.0f;
}

__global__ void optim_k(cuda_optim_args a, float *params, float *grads, float *m, float *v,
                        const float *decay, const float *norm_scale, size_t n) {
  const float scale = norm_scale[1];
  CU_FOR(i, n) {
    float g = grads[i];
    if (scale != 1.0f) g *= scale, grads[i] = g;
    float p = params[i], wd = a.weight_decay * decay[i];
    switch (a.kind) {
    case CUDA_OPT_SGD:
      g += wd * p;
      if (a.momentum != 0.0f) {
        m[i] = a.momentum * m[i] + g;
        g = a.nesterov ? g + a.momentum * m[i] : m[i];
      }
      p -= a.lr * g;
      break;
    case CUDA_OPT_RMSPROP_TF:
    case CUDA_OPT_RMSPROP_TORCH: {
      g += wd * p;
      v[i] = a.alpha * v[i] + (1.0f - a.alpha) * g * g;
      if (a.kind == CUDA_OPT_RMSPROP_TF) {
        float step = a.lr * g / sqrtf(v[i] + a.eps);
        if (a.momentum != 0.0f) step = m[i] = a.momentum * m[i] + step;
        p -= step;
      } else {
        float step = g / (sqrtf(v[i]) + a.eps);
        if (a.momentum != 0.0f) step = m[i] = a.momentum * m[i] + step;
        p -= a.lr * step;
      }
      break;
    }
    case CUDA_OPT_ADAM:
    case CUDA_OPT_ADAMW:
      if (a.kind == CUDA_OPT_ADAMW) p *= 1.0f - a.lr * wd;
      else g += wd * p;
      m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g;
      v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
      p -= a.step_size * m[i] / (sqrtf(v[i]) / a.bc2_sqrt + a.eps);
      break;
    }
    params[i] = p;
  }
}

void cuda_optim_step(cuda_ctx *ctx, const cuda_optim_args *args, float *params, float *grads,
                     float *m, float *v, const float *decay, size_t n, float *norm_scale) {
  double *part = (double *)cuda_ctx_scratch(ctx, 0, NORM_BLOCKS * sizeof(double));
  norm_part_k<<<NORM_BLOCKS, CU_THREADS, 0, ctx->stream>>>(part, grads, n);
  CUDA_CHECK_LAUNCH();
  norm_final_k<<<1, 1, 0, ctx->stream>>>(norm_scale, part, NORM_BLOCKS, args->clip_norm);
  CUDA_CHECK_LAUNCH();
  optim_k<<<cu_blocks(n), CU_THREADS, 0, ctx->stream>>>(*args, params, grads, m, v, decay,
                                                         norm_scale, n);
  CUDA_CHECK_LAUNCH();
}
