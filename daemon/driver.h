/* driver.h - one training job: the coordinator on rank 0 and a worker on every rank, wired
 * together at step boundaries. The only unit that sees both daemon/ and worker/: the
 * coordinator's decisions reach the workers as proto/ messages passed here.
 * A relaunch with the same command resumes from the newest valid checkpoint. */
#ifndef POLLEN_DRIVER_H
#define POLLEN_DRIVER_H

#include "proto/job_config.h"
#include "worker/collective.h"

/* Runs (or resumes) the job in job_dir. The caller installs the signal handlers first thing
 * (daemon/signals.h), so a stop asked at any moment of start-up is honoured. Returns EXIT_OK
 * when every epoch is done (a finished job's weights are written again from its final
 * checkpoint), EXIT_PREEMPTED after a clean stop; dies on errors. */
int driver_train(job_config *cfg, const char *job_dir, comm *c);

#endif
