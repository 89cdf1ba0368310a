/* test_bf16.c - the bf16 GEMMs (ops_gemm_precision_use(OPS_GEMM_BF16), linear.c): out,
 * din and dw equal a double reference computed from the inputs rounded to bfloat16 (to
 * nearest even), to float32 accumulation error; they differ from the float32 result by about
 * bfloat16's rounding (so the bf16 path really ran); the conv + BN training forward's fused
 * statistics describe its bf16 output; 1 and 2 threads give the same bits; and a CPU or kernel path without bf16 is
 * refused with a message. Then a whole training step of MobileNetV3-Small in bf16: loss and
 * gradients near float32's, the same bits on 1 and 2 threads. Skips (77) on a CPU without
 * AVX512_BF16. */
#include <omp.h>

#include "base/core.h"
#include "ops/ops.h"
#include "worker/model.h"
#include "tests/gradcheck.h"

/* x rounded to bfloat16 as VCVTNEPS2BF16 does (nearest, ties to even), back as a double. */
static double bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  float y;
  memcpy(&y, &u, sizeof y);
  return y;
}

static double *rounded(const float *x, size_t n, int bf16) {
  double *d = GC_NEWD(n);
  for (size_t i = 0; i < n; i++) d[i] = bf16 ? bf16_round(x[i]) : x[i];
  return d;
}

/* out = in . w^T + b, din = g . w, dw = g^T . in, in double from the given inputs. */
static void reference(double *out, double *din, double *dw, const double *in, const double *w,
                      const double *g, const float *b, int M, int Ci, int Co) {
  for (int m = 0; m < M; m++)
    for (int o = 0; o < Co; o++) {
      double a = b ? b[o] : 0.0;
      for (int i = 0; i < Ci; i++) a += in[(size_t)m * Ci + i] * w[(size_t)o * Ci + i];
      out[(size_t)m * Co + o] = a;
    }
  for (int m = 0; m < M; m++)
    for (int i = 0; i < Ci; i++) {
      double a = 0.0;
      for (int o = 0; o < Co; o++) a += g[(size_t)m * Co + o] * w[(size_t)o * Ci + i];
      din[(size_t)m * Ci + i] = a;
    }
  for (int o = 0; o < Co; o++)
    for (int i = 0; i < Ci; i++) {
      double a = 0.0;
      for (int m = 0; m < M; m++) a += g[(size_t)m * Co + o] * in[(size_t)m * Ci + i];
      dw[(size_t)o * Ci + i] = a;
    }
}

/* The largest |got - ref| relative to max |ref|. */
static double max_rel_err(const float *got, const double *ref, size_t n) {
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - ref[i]));
  return worst / (scale > 0 ? scale : 1.0);
}

static void run(int M, int Ci, int Co, int has_bias) {
  size_t nin = (size_t)M * Ci, nw = (size_t)Co * Ci, nout = (size_t)M * Co;
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *b = GC_NEWF(Co), *g = GC_NEWF(nout);
  float *out = GC_NEWF(nout), *din = GC_NEWF(nin), *dw = GC_NEWF(nw);
  float *out2 = GC_NEWF(nout), *din2 = GC_NEWF(nin > nout ? nin : nout), *dw2 = GC_NEWF(nw);
  gc_fill(in, nin, -1, 1);
  gc_fill(w, nw, -1, 1);
  gc_fill(b, Co, -1, 1);
  gc_fill(g, nout, -1, 1);
  const float *bias = has_bias ? b : NULL;
  char name[96], what[200];
  snprintf(name, sizeof name, "M%d Cin%d Cout%d %s", M, Ci, Co, has_bias ? "bias" : "nobias");

  double *ref_out = GC_NEWD(nout), *ref_din = GC_NEWD(nin), *ref_dw = GC_NEWD(nw);
  double *r_in = rounded(in, nin, 1), *r_w = rounded(w, nw, 1), *r_g = rounded(g, nout, 1);
  reference(ref_out, ref_din, ref_dw, r_in, r_w, r_g, bias, M, Ci, Co);

  char err[256];
  POLLEN_ASSERT(ops_gemm_precision_use(OPS_GEMM_BF16, err, sizeof err) == 0);
  linear_forward(out, in, w, bias, M, Ci, Co);
  memset(dw, 0, sizeof(float) * nw);
  linear_backward(din, dw, NULL, g, in, w, M, Ci, Co);
  /* float32 sums of exact products: a few float32 ulps of the largest partial sum. */
  snprintf(what, sizeof what, "bf16 out = rounded-input reference  %s", name);
  gc_check(what, out, ref_out, nout, 1e-5, 1e-5);
  snprintf(what, sizeof what, "bf16 din = rounded-input reference  %s", name);
  gc_check(what, din, ref_din, nin, 1e-5, 1e-5);
  snprintf(what, sizeof what, "bf16 dw  = rounded-input reference  %s", name);
  gc_check(what, dw, ref_dw, nw, 1e-5, 1e-5);

  /* The training forward of a 1x1 conv + BN takes its statistics in the bf16 GEMM's
   * epilogue: its x is the bf16 product and its batch mean that of x. */
  float *gamma = GC_NEWF(Co), *beta = GC_NEWF(Co), *y = GC_NEWF(nout), *smean = GC_NEWF(Co),
        *srstd = GC_NEWF(Co), *rmean = GC_NEWF(Co), *rvar = GC_NEWF(Co);
  for (int o = 0; o < Co; o++) gamma[o] = 1.0f, beta[o] = 0.0f, rmean[o] = 0.0f, rvar[o] = 1.0f;
  linear_forward(out2, in, w, NULL, M, Ci, Co);
  conv_bn_act_forward_train(y, din2, smean, srstd, rmean, rvar, in, w, OPS_CONV_POINTWISE, gamma,
                            beta, 1e-5f, 0.1f, 1, M, 1, Ci, Co, 1, 1, ACT_NONE, NULL);
  int stats_ok = !memcmp(out2, din2, sizeof(float) * nout);
  for (int o = 0; o < Co; o++) {
    double direct = 0.0;
    for (int m = 0; m < M; m++) direct += out2[(size_t)m * Co + o];
    direct /= M;
    stats_ok &= fabs(direct - smean[o]) <= 1e-5 * (1 + fabs(direct));
  }
  snprintf(what, sizeof what, "bf16 conv+BN forward: x is the bf16 product, mean is x's  %s", name);
  gc_expect(stats_ok, what);
  free(gamma), free(beta), free(y), free(smean), free(srstd), free(rmean), free(rvar);

  /* Thread counts: the same bits. */
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  linear_forward(out2, in, w, bias, M, Ci, Co);
  memset(dw2, 0, sizeof(float) * nw);
  linear_backward(din2, dw2, NULL, g, in, w, M, Ci, Co);
  omp_set_num_threads(saved);
  snprintf(what, sizeof what, "bf16 1 thread == %d threads, same bits  %s", saved, name);
  gc_expect(!memcmp(out, out2, sizeof(float) * nout) && !memcmp(din, din2, sizeof(float) * nin) &&
                !memcmp(dw, dw2, sizeof(float) * nw),
            what);

  /* Against float32 inputs: near (bf16 keeps 8 bits), but not equal. */
  POLLEN_ASSERT(ops_gemm_precision_use(OPS_GEMM_FP32, err, sizeof err) == 0);
  double *f_in = rounded(in, nin, 0), *f_w = rounded(w, nw, 0), *f_g = rounded(g, nout, 0);
  reference(ref_out, ref_din, ref_dw, f_in, f_w, f_g, bias, M, Ci, Co);
  double e_out = max_rel_err(out, ref_out, nout), e_din = max_rel_err(din, ref_din, nin),
         e_dw = max_rel_err(dw, ref_dw, nw);
  linear_forward(out2, in, w, bias, M, Ci, Co);
  double e32 = max_rel_err(out2, ref_out, nout);
  snprintf(what, sizeof what,
           "bf16 vs float32 inputs: out %.1e din %.1e dw %.1e (fp32 path %.1e)  %s", e_out, e_din,
           e_dw, e32, name);
  gc_expect(e_out < 2e-2 && e_din < 2e-2 && e_dw < 2e-2 && e_out > 10 * e32, what);

  free(in), free(w), free(b), free(g), free(out), free(din), free(dw), free(out2), free(din2),
      free(dw2), free(ref_out), free(ref_din), free(ref_dw), free(r_in), free(r_w), free(r_g),
      free(f_in), free(f_w), free(f_g);
}

/* One training step of a model: loss, and the gradients into grads. */
static float train_step_grads(const model_config *cfg, int threads, const float *images,
                              const int *labels, int batch, int size, float *grads) {
  threads_set(threads);
  model m;
  model_init(&m, cfg, 42);
  model_prepare(&m, batch, size);
  model_zero_grads(&m);
  float loss = model_forward(&m, images, labels, batch, 1, 0.1f);
  model_backward(&m, labels, batch, 0.1f);
  memcpy(grads, m.grads, m.n_params * sizeof(float));
  model_free(&m);
  return loss;
}

static void check_model(void) {
  const int batch = 4, size = 64;
  model_config cfg = {MODEL_MNV3_SMALL, 1.0, 5, 0.0f, 0};
  model probe;
  model_init(&probe, &cfg, 42);
  const size_t np = probe.n_params, npix = (size_t)batch * size * size * 3;
  model_free(&probe);
  float *images = GC_NEWF(npix), *g32 = GC_NEWF(np), *g16 = GC_NEWF(np), *g16b = GC_NEWF(np);
  gc_fill(images, npix, -1, 1);
  int labels[4] = {0, 1, 2, 3};
  char err[256], what[200];
  float l32 = train_step_grads(&cfg, 2, images, labels, batch, size, g32);
  POLLEN_ASSERT(ops_gemm_precision_use(OPS_GEMM_BF16, err, sizeof err) == 0);
  float l16 = train_step_grads(&cfg, 2, images, labels, batch, size, g16);
  float l16b = train_step_grads(&cfg, 1, images, labels, batch, size, g16b);
  ops_gemm_precision_use(OPS_GEMM_FP32, err, sizeof err);
  threads_set(0);
  double dot = 0, n32 = 0, n16 = 0;
  for (size_t i = 0; i < np; i++) dot += (double)g32[i] * g16[i], n32 += (double)g32[i] * g32[i], n16 += (double)g16[i] * g16[i];
  const double cosine = dot / sqrt(n32 * n16), rel_loss = fabs(l16 - l32) / fabs(l32);
  snprintf(what, sizeof what, "mnv3-small step in bf16: loss %.5f vs %.5f (%.1e), gradient cosine %.5f",
           l16, l32, rel_loss, cosine);
  gc_expect(rel_loss < 1e-2 && cosine > 0.99 && memcmp(g16, g32, np * sizeof(float)), what);
  gc_expect(l16 == l16b && !memcmp(g16, g16b, np * sizeof(float)),
            "mnv3-small step in bf16: the same bits on 1 and 2 threads");
  free(images), free(g32), free(g16), free(g16b);
}

int main(void) {
  char err[256];
  if (ops_gemm_precision_use(OPS_GEMM_BF16, err, sizeof err) != 0) {
    printf("skip: %s\n", err);
    gc_expect(ops_gemm_precision_active() == OPS_GEMM_FP32 && strstr(err, "fp32"),
              "refused bf16 stays float32 and the message names the way out");
    return gc_failures ? 1 : 77;
  }
  gc_expect(!strcmp(ops_gemm_precision_name(ops_gemm_precision_active()), "bf16"), "bf16 is on");
  ops_gemm_precision_use(OPS_GEMM_FP32, err, sizeof err);
  gc_seed(11);
  run(7, 13, 5, 1);      /* odd reduction lengths: a last pair with zero */
  run(37, 24, 40, 0);    /* masked column tails, 4- and 1-row tiles */
  run(300, 16, 72, 1);   /* several row blocks; the stats blocks */
  run(1031, 96, 200, 0); /* column blocks; dw chunks with odd row counts */
  run(64, 576, 1024, 1); /* the classifier's shape */
  check_model();

  /* A lower kernel path has no bf16: refused, with the way out named. */
  ops_kernels_use(OPS_KERNELS_AVX2);
  int refused = ops_gemm_precision_use(OPS_GEMM_BF16, err, sizeof err) != 0;
  gc_expect(refused && strstr(err, "avx512") && ops_gemm_precision_active() == OPS_GEMM_FP32,
            "bf16 on the avx2 path is refused, naming the avx512 path");
  return gc_finish("test_bf16");
}
