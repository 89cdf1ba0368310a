/* se.cu - squeeze-and-excite as ops/se.c, built from the other CUDA ops: pool, fc1, relu,
 * fc2, hardsigmoid, then the per-channel scale. Backward's small N*C vectors live in the
 * context's scratch slot 1 (the ops it calls use slot 0). */
#include "ops/cuda/cuda_common.cuh"

typedef struct {
  float *s, *z1, *h, *z2, *g;
} se_parts;

static se_parts se_split(float *save, int N, int C, int Cs) {
  se_parts p;
  p.s = save;
  p.z1 = p.s + (size_t)N * C;
  p.h = p.z1 + (size_t)N * Cs;
  p.z2 = p.h + (size_t)N * Cs;
  p.g = p.z2 + (size_t)N * C;
  return p;
}

/* cu_rows layout over the N*HW pixel rows (32-bit, checked on the host). */
__global__ void se_scale_k(float *out, const float *in, const float *g, int HW, int C,
                           unsigned rows) {
  const int c = CU_ROW_CHANNEL();
  if (c >= C) return;
  CU_ROWS(r, (long)rows) {
    const size_t i = (size_t)r * C + c;
    out[i] = in[i] * g[(size_t)((unsigned)r / HW) * C + c];
  }
}

/* dg[n][c] = sum over positions of dout*x */
struct se_dg_f {
  const float *g, *x;
  int HW, C;
  __device__ float operator()(int n, int q, int c) const {
    size_t i = ((size_t)n * HW + q) * C + c;
    return g[i] * x[i];
  }
};

/* din = dout*g + ds/HW */
__global__ void se_din_k(float *din, const float *dout, const float *g, const float *ds, int HW,
                         int C, float inv, unsigned rows) {
  const int c = CU_ROW_CHANNEL();
  if (c >= C) return;
  CU_ROWS(r, (long)rows) {
    const size_t i = (size_t)r * C + c, nc = (size_t)((unsigned)r / HW) * C + c;
    din[i] = fmaf(dout[i], g[nc], __fmul_rn(ds[nc], inv));
  }
}

void cuda_se_forward(cuda_ctx *ctx, float *out, float *save, const float *in, const float *w1,
                     const float *b1, const float *w2, const float *b2, int N, int HW, int C,
                     int Cs) {
  se_parts p = se_split(save, N, C, Cs);
  cuda_avgpool_forward(ctx, p.s, in, N, HW, C);
  cuda_linear_forward(ctx, p.z1, p.s, w1, b1, N, C, Cs);
  cuda_act_forward(ctx, p.h, p.z1, (size_t)N * Cs, ACT_RELU);
  cuda_linear_forward(ctx, p.z2, p.h, w2, b2, N, Cs, C);
  cuda_act_forward(ctx, p.g, p.z2, (size_t)N * C, ACT_HARDSIGMOID);
  const long rows = (long)N * HW;
  if (rows <= 0 || C <= 0) return;
  POLLEN_ASSERT(rows < (1l << 31));
  const cu_rows L = cu_rows_launch(rows, C);
  se_scale_k<<<L.grid, L.block, 0, ctx->stream>>>(out, in, p.g, HW, C, (unsigned)rows);
  CUDA_CHECK_LAUNCH();
}

void cuda_se_backward(cuda_ctx *ctx, float *din, float *dw1, float *db1, float *dw2, float *db2,
                      const float *dout, const float *in, const float *save, const float *w1,
                      const float *w2, int N, int HW, int C, int Cs) {
  se_parts p = se_split((float *)save, N, C, Cs); /* read only below */
  size_t nc = (size_t)N * C, ncs = (size_t)N * Cs;
  float *dg = (float *)cuda_ctx_scratch(ctx, 1, sizeof(float) * (2 * nc + 2 * ncs));
  float *ds = dg + nc, *dh = ds + nc, *dz1 = dh + ncs;
  cu_segsum(ctx->stream, dg, N, HW, C, 1.0f, se_dg_f{dout, in, HW, C});
  cuda_act_backward(ctx, dg, dg, p.z2, nc, ACT_HARDSIGMOID); /* dg becomes dz2 */
  cuda_linear_backward(ctx, dh, dw2, db2, dg, p.h, w2, N, Cs, C);
  cuda_act_backward(ctx, dz1, dh, p.z1, ncs, ACT_RELU);
  cuda_linear_backward(ctx, ds, dw1, db1, dz1, p.s, w1, N, C, Cs);
  const long rows = (long)N * HW;
  if (rows <= 0 || C <= 0) return;
  POLLEN_ASSERT(rows < (1l << 31));
  const cu_rows L = cu_rows_launch(rows, C);
  se_din_k<<<L.grid, L.block, 0, ctx->stream>>>(din, dout, p.g, ds, HW, C, 1.0f / (float)HW,
                                                 (unsigned)rows);
  CUDA_CHECK_LAUNCH();
}
