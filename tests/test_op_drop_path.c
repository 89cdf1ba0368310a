/* test_op_drop_path.c - stochastic depth (torchvision's StochasticDepth, mode "row"): each
 * sample's branch is kept whole or dropped whole, kept ones scaled by 1/(1-p), the kept
 * fraction ~ 1-p; forward against a double reference; the branch's backward against double
 * finite differences of L = sum(out * R) under the same mask; 1 thread == 2 threads; p = 0
 * is the plain residual sum; in-place use; another seed another mask. */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

/* L = sum((branch * s_n + skip) * R), the reference in double. */
typedef struct {
  const double *branch, *skip, *R, *scale;
  int N;
  size_t per_image;
} drop_path_ctx;

static double drop_path_loss(void *p) {
  const drop_path_ctx *c = p;
  double L = 0.0;
  for (int n = 0; n < c->N; n++)
    for (size_t i = 0; i < c->per_image; i++) {
      size_t at = (size_t)n * c->per_image + i;
      L += (c->branch[at] * c->scale[n] + c->skip[at]) * c->R[at];
    }
  return L;
}

static void check_mask_statistics(float p) {
  const int N = 20000;
  size_t kept = 0, badscale = 0;
  for (int n = 0; n < N; n++) {
    float s = drop_path_scale(n, p, 77);
    kept += s != 0.0f;
    badscale += s != 0.0f && fabsf(s - 1.0f / (1.0f - p)) > 1e-6f;
  }
  double frac = (double)kept / N, sigma = sqrt(p * (1.0 - p) / N);
  char what[160];
  snprintf(what, sizeof what, "drop path p=%.2f kept fraction %.4f ~ %.2f (5 sigma = %.4f)", p, frac,
           1.0 - p, 5 * sigma);
  gc_expect(fabs(frac - (1.0 - p)) <= 5 * sigma, what);
  snprintf(what, sizeof what, "drop path p=%.2f kept samples scaled by 1/(1-p) (%zu wrong)", p, badscale);
  gc_expect(badscale == 0, what);
  size_t differ = 0;
  for (int n = 0; n < N; n++) differ += (drop_path_scale(n, p, 77) != 0) != (drop_path_scale(n, p, 78) != 0);
  snprintf(what, sizeof what, "drop path p=%.2f other seed -> other mask (%zu of %d differ)", p, differ, N);
  gc_expect(differ > (size_t)(N * p * (1 - p)), what);
}

int main(void) {
  gc_seed(21);
  check_mask_statistics(0.2f);
  check_mask_statistics(0.5f);
  gc_expect(drop_path_scale(3, 0.0f, 1) == 1.0f && drop_path_scale(3, 1.0f, 1) == 0.0f,
            "drop path p=0 keeps every sample unscaled, p=1 drops every one");

  const int N = 37;
  const size_t per_image = 5 * 3 * 8, n = (size_t)N * per_image;
  const float p = 0.3f;
  const uint64_t seed = 4242;
  float *branch = GC_NEWF(n), *skip = GC_NEWF(n), *out = GC_NEWF(n), *R = GC_NEWF(n);
  float *db = GC_NEWF(n), *tmp = GC_NEWF(n);
  gc_fill(branch, n, 0.5, 1.5); /* never zero: a sample's zero branch contribution means dropped */
  gc_fill(skip, n, -1, 1);
  gc_fill(R, n, -1, 1);
  double *scale = GC_NEWD(N), *ref = GC_NEWD(n), *grad = GC_NEWD(n);
  int dropped = 0;
  for (int k = 0; k < N; k++) dropped += (scale[k] = drop_path_scale(k, p, seed)) == 0.0;
  char what[160];
  snprintf(what, sizeof what, "drop path: some of %d samples dropped (%d), some kept", N, dropped);
  gc_expect(dropped > 0 && dropped < N, what);

  drop_path_forward(out, branch, skip, N, per_image, p, seed);
  size_t mixed = 0; /* a sample is dropped or kept as a whole */
  for (int k = 0; k < N; k++)
    for (size_t i = 0; i < per_image; i++) {
      size_t at = (size_t)k * per_image + i;
      ref[at] = (double)branch[at] * scale[k] + (double)skip[at];
      mixed += (out[at] == skip[at]) != (scale[k] == 0.0);
    }
  gc_check("drop path fwd", out, ref, n, 1e-6, 1e-7);
  snprintf(what, sizeof what, "drop path drops whole samples (%zu elements disagree)", mixed);
  gc_expect(mixed == 0, what);

  double *bd = gc_to_double(branch, n), *sd = gc_to_double(skip, n), *Rd = gc_to_double(R, n);
  drop_path_ctx ctx = {bd, sd, Rd, scale, N, per_image};
  gc_fd(grad, bd, n, drop_path_loss, &ctx, 1e-3);
  drop_path_backward(db, R, N, per_image, p, seed);
  gc_check("drop path d(branch)", db, grad, n, 1e-5, 1e-6);

  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  drop_path_forward(tmp, branch, skip, N, per_image, p, seed);
  int same = !memcmp(tmp, out, sizeof(float) * n);
  omp_set_num_threads(2);
  drop_path_forward(tmp, branch, skip, N, per_image, p, seed);
  same &= !memcmp(tmp, out, sizeof(float) * n);
  omp_set_num_threads(saved);
  gc_expect(same, "drop path 1 thread == 2 threads == default");

  drop_path_forward(tmp, branch, skip, N, per_image, 0.0f, seed);
  residual_forward(db, branch, skip, n);
  gc_expect(!memcmp(tmp, db, sizeof(float) * n), "drop path p=0 is the residual sum");

  memcpy(tmp, branch, sizeof(float) * n);
  drop_path_forward(tmp, tmp, skip, N, per_image, p, seed);
  gc_expect(!memcmp(tmp, out, sizeof(float) * n), "drop path in place (out == branch)");
  drop_path_backward(db, R, N, per_image, p, seed);
  memcpy(tmp, R, sizeof(float) * n);
  drop_path_backward(tmp, tmp, N, per_image, p, seed);
  gc_expect(!memcmp(tmp, db, sizeof(float) * n), "drop path backward in place (dbranch == dout)");

  free(branch), free(skip), free(out), free(R), free(db), free(tmp);
  free(scale), free(ref), free(grad), free(bd), free(sd), free(Rd);
  return gc_finish("test_op_drop_path");
}
