/* optim_ops.h - the per-device table behind the optimizer's update, chosen once (optim_init:
 * the CPU's, in optim.c; optim_use_cuda: the GPU's, in optim_cuda.c), so optim.c never tests
 * the device. Private to worker/optim*.c. */
#ifndef POLLEN_OPTIM_OPS_H
#define POLLEN_OPTIM_OPS_H

#include "worker/optim.h"

typedef struct optim_ops optim_ops;
struct optim_ops {
  /* One update (o->step already counts it); returns the gradient's norm or NAN (optim_step). */
  float (*step)(optimizer *o, float *params, float *grads, float lr);
  void (*sync_to_host)(optimizer *o);
  void (*sync_to_device)(optimizer *o);
  void (*release)(optimizer *o); /* optim_free: everything the device holds for o */
};

#endif
