/* control.c - the step-boundary rule (see control.h). */
#include "proto/control.h"

control_action control_decide(const double ctl[CONTROL_N], const job_position *pos,
                              int64_t total_steps, int steps_per_epoch) {
  if (ctl[CONTROL_STOP] > 0 && pos->step < total_steps) return CONTROL_STOP_NOW;
  int last = pos->step_in_epoch == steps_per_epoch || pos->step == total_steps;
  if (ctl[CONTROL_CHECKPOINT] > 0 && !last) return CONTROL_TAKE_CHECKPOINT;
  return CONTROL_GO_ON;
}
