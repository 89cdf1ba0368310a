/* ema.h - an exponential moving average of the weights, with the semantics of torchvision's
 * ExponentialMovingAverage (torch.optim.swa_utils.AveragedModel over the parameters): the
 * first update copies the weights, each later one takes avg = decay * avg + (1 - decay) * x,
 * elementwise in float32. Evaluation and export use the average; BatchNorm statistics for it
 * are recomputed from training batches (precise BN), as AveragedModel's users do with
 * update_bn. Not for: when to update (worker.c) or where it is saved (proto/train_state.h). */
#ifndef POLLEN_EMA_H
#define POLLEN_EMA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  float *avg;        /* n floats */
  size_t n;
  double decay;
  int64_t updates;   /* since the last restart: 0 means the next update copies */
} weight_ema;

void ema_init(weight_ema *e, size_t n, double decay);
void ema_update(weight_ema *e, const float *x);
/* The next update copies the weights (torchvision's n_averaged.fill_(0) during warm-up). */
void ema_restart(weight_ema *e);
void ema_free(weight_ema *e);

#endif
