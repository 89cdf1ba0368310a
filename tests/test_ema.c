/* test_ema.c - the weights' moving average against torchvision's ExponentialMovingAverage
 * semantics, computed here directly: the first update copies, each later one is
 * decay * avg + (1 - decay) * x with both scalars taken from the double decay and the
 * arithmetic in float32, and a restart makes the next update copy again. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/core.h"
#include "tests/check.h"
#include "worker/ema.h"

enum { N = 1000, UPDATES = 6 };

int main(void) {
  const double decay = 0.999;
  static float x[UPDATES][N], want[N];
  for (int k = 0; k < UPDATES; k++)
    for (int i = 0; i < N; i++) x[k][i] = sinf(0.37f * (float)i + (float)k) * (float)(k + 1);

  weight_ema e;
  ema_init(&e, N, decay);
  CHECK(e.updates == 0 && e.n == N, "a fresh EMA has no updates");
  ema_update(&e, x[0]);
  CHECK(!memcmp(e.avg, x[0], sizeof x[0]) && e.updates == 1, "the first update copies");
  memcpy(want, x[0], sizeof want);
  for (int k = 1; k < UPDATES; k++) {
    ema_update(&e, x[k]);
    for (int i = 0; i < N; i++) want[i] = (float)decay * want[i] + (float)(1.0 - decay) * x[k][i];
  }
  CHECK(!memcmp(e.avg, want, sizeof want) && e.updates == UPDATES, "decay * avg + (1 - decay) * x, in float32");

  /* Far from the weights after a few updates (decay 0.999): the average, not the last value. */
  double gap = 0;
  for (int i = 0; i < N; i++) gap += fabs(e.avg[i] - x[UPDATES - 1][i]);
  CHECK(gap / N > 0.5, "the average lags the weights (mean gap %g)", gap / N);

  ema_restart(&e);
  ema_update(&e, x[3]);
  CHECK(!memcmp(e.avg, x[3], sizeof x[3]) && e.updates == 1, "after a restart the next update copies");
  ema_free(&e);
  CHECK(e.avg == NULL, "freed");
  printf("ok: weight EMA: copy, then decay %g in float32 as torchvision, restart copies\n", decay);
  return check_status();
}
