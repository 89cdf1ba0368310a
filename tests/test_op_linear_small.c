/* test_op_linear_small.c - linear.c's own GEMM kernels at MobileNet's shapes: forward, din
 * and dw against double products (the layer is linear, so the gradients are exact products:
 * din = dout . w, dw = dout^T . in), with row counts that leave partial register tiles,
 * partial work items and partial chunks, every column tail (24/16/8 and fewer than 8),
 * din = NULL, and 1 versus 2 threads bit for bit (a shape where OpenBLAS was not).
 * test_op_linear covers bias and the finite differences. */
#include <omp.h>

#include "ops/ops.h"
#include "tests/gradcheck.h"

static void run(int M, int Ci, int Co) {
  size_t nin = (size_t)M * Ci, nw = (size_t)Co * Ci, nout = (size_t)M * Co;
  float *in = GC_NEWF(nin), *w = GC_NEWF(nw), *out = GC_NEWF(nout), *R = GC_NEWF(nout);
  float *din = GC_NEWF(nin), *dw = GC_NEWF(nw), *dw0 = GC_NEWF(nw);
  float *out1 = GC_NEWF(nout), *din1 = GC_NEWF(nin), *dw1 = GC_NEWF(nw), *dw2 = GC_NEWF(nw);
  gc_fill(in, nin, -1, 1);
  gc_fill(w, nw, -1, 1);
  gc_fill(R, nout, -1, 1);
  gc_fill(dw0, nw, -1, 1);
  double *ref = GC_NEWD(nout > nin ? (nout > nw ? nout : nw) : (nin > nw ? nin : nw));
  char name[96], what[200];
  snprintf(name, sizeof name, "M%d Cin%d Cout%d", M, Ci, Co);

  linear_forward(out, in, w, NULL, M, Ci, Co);
  for (int m = 0; m < M; m++)
    for (int o = 0; o < Co; o++) {
      double a = 0.0;
      for (int i = 0; i < Ci; i++) a += (double)in[(size_t)m * Ci + i] * w[(size_t)o * Ci + i];
      ref[(size_t)m * Co + o] = a;
    }
  snprintf(what, sizeof what, "linear fwd  %s", name);
  gc_check(what, out, ref, nout, 1e-5, 1e-6);

  memcpy(dw, dw0, sizeof(float) * nw);
  for (size_t i = 0; i < nin; i++) din[i] = NAN;
  linear_backward(din, dw, NULL, R, in, w, M, Ci, Co);
  for (int m = 0; m < M; m++)
    for (int i = 0; i < Ci; i++) {
      double a = 0.0;
      for (int o = 0; o < Co; o++) a += (double)R[(size_t)m * Co + o] * w[(size_t)o * Ci + i];
      ref[(size_t)m * Ci + i] = a;
    }
  snprintf(what, sizeof what, "linear din  %s", name);
  gc_check(what, din, ref, nin, 1e-5, 1e-6);
  for (int o = 0; o < Co; o++)
    for (int i = 0; i < Ci; i++) {
      double a = dw0[(size_t)o * Ci + i]; /* dw accumulates */
      for (int m = 0; m < M; m++) a += (double)R[(size_t)m * Co + o] * in[(size_t)m * Ci + i];
      ref[(size_t)o * Ci + i] = a;
    }
  snprintf(what, sizeof what, "linear dw (accumulated)  %s", name);
  gc_check(what, dw, ref, nw, 1e-4, 1e-5);

  /* din = NULL: the same dw bits. */
  memcpy(dw1, dw0, sizeof(float) * nw);
  linear_backward(NULL, dw1, NULL, R, in, w, M, Ci, Co);
  snprintf(what, sizeof what, "linear din=NULL gives the same dw bits  %s", name);
  gc_expect(!memcmp(dw1, dw, sizeof(float) * nw), what);

  /* 1 versus 2 threads. */
  int saved = omp_get_max_threads();
  memset(dw1, 0, sizeof(float) * nw);
  memset(dw2, 0, sizeof(float) * nw);
  omp_set_num_threads(1);
  linear_forward(out1, in, w, NULL, M, Ci, Co);
  linear_backward(din1, dw1, NULL, R, in, w, M, Ci, Co);
  omp_set_num_threads(2);
  linear_forward(out, in, w, NULL, M, Ci, Co);
  linear_backward(din, dw2, NULL, R, in, w, M, Ci, Co);
  omp_set_num_threads(saved);
  snprintf(what, sizeof what, "linear 1 thread == 2 threads, same bits  %s", name);
  gc_expect(!memcmp(out, out1, sizeof(float) * nout) && !memcmp(din, din1, sizeof(float) * nin) &&
                !memcmp(dw1, dw2, sizeof(float) * nw),
            what);

  free(in), free(w), free(out), free(R), free(din), free(dw), free(dw0), free(out1), free(din1),
      free(dw1), free(dw2), free(ref);
}

int main(void) {
  gc_seed(17);
  run(64, 16, 16);
  run(4099, 16, 72);  /* M % 4 = 3, column tiles 24+24+24 */
  run(1031, 72, 24);  /* din: N = 72; dw K = 72 */
  run(777, 24, 88);   /* 88 = 24*3 + 16 */
  run(2053, 40, 8);   /* a single 8-wide column tile */
  run(513, 8, 40);    /* 40 = 24 + 16 */
  run(300, 96, 576);  /* the late blocks' expand */
  run(129, 576, 96);
  run(70000, 16, 24); /* many rows: 16 reduction chunks for dw, threaded */
  run(16, 336, 80);   /* OpenBLAS gave different bits with 1 and 2 threads here */
  run(32, 576, 1029); /* a classifier: few rows, several column blocks, a 5-column tail */
  run(35, 1024, 5);   /* columns fewer than 8 only */
  return gc_finish("test_op_linear_small");
}
