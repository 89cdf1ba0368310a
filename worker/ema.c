/* ema.c - the weights' exponential moving average (see ema.h). */
#include "worker/ema.h"

#include <stdlib.h>
#include <string.h>

#include "base/core.h"

void ema_init(weight_ema *e, size_t n, double decay) {
  *e = (weight_ema){xmalloc(n * sizeof(float) + 1), n, decay, 0};
}

void ema_update(weight_ema *e, const float *x) {
  if (e->updates == 0) {
    memcpy(e->avg, x, e->n * sizeof(float));
  } else {
    /* As torch: the two scalars from the double decay, the products in float32. */
    const float d = (float)e->decay, keep = (float)(1.0 - e->decay);
    float *a = e->avg;
    for (size_t i = 0; i < e->n; i++) a[i] = d * a[i] + keep * x[i];
  }
  e->updates++;
}

void ema_restart(weight_ema *e) { e->updates = 0; }

void ema_free(weight_ema *e) {
  free(e->avg);
  *e = (weight_ema){0};
}
