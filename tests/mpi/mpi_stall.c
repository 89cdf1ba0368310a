/* mpi_stall.c - run by tests/test_stall_rank0.sh under mpirun: mpi_stall STOP DELAY TIMEOUT.
 * After a first barrier, rank STOP prints its pid and stops itself (SIGSTOP: hung, not dead),
 * and rank 0 sleeps DELAY seconds before the second barrier, which cannot complete. With
 * DELAY a little over 5 s, another rank's deadline (TIMEOUT + 5 s) passes while rank 0 is
 * alive and only then reaches its own: that rank must leave rank 0 time to name STOP. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/core.h"
#include "worker/collective.h"

int main(int argc, char **argv) {
  comm c;
  comm_init(&c, &argc, &argv);
  if (argc != 4) {
    fprintf(stderr, "usage: mpi_stall STOP_RANK RANK0_DELAY_S STALL_TIMEOUT_S\n");
    comm_abort(&c, 2);
  }
  int stop = atoi(argv[1]);
  double delay = atof(argv[2]);
  c.stall_timeout = atof(argv[3]);
  comm_barrier(&c);
  if (c.rank == stop) {
    fprintf(stderr, "rank %d pid %d stops\n", c.rank, (int)getpid());
    raise(SIGSTOP);
  }
  if (c.rank == 0) usleep((useconds_t)(delay * 1e6));
  comm_barrier(&c);
  comm_finalize(&c);
  return 0;
}
