/* mpi_ring.c - the harness self-test's MPI program: proves that each rank runs on its own
 * "host" (a distinct hostname) and that the ranks can all-reduce over TCP, then keeps
 * all-reducing so a test can cut a host out from under a running job.
 *
 * Not built by CMake (tests/test_netns_mpi.sh compiles it with mpicc): it is harness code,
 * not part of pollen. usage: mpi_ring [ITERATIONS [MS_PER_ITERATION]] */
#define _POSIX_C_SOURCE 200809L
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static long arg_long(const char *s, long min, long max, const char *what) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (!s[0] || *end || v < min || v > max) {
    fprintf(stderr, "mpi_ring: %s '%s' is not a whole number in [%ld, %ld]\n", what, s, min, max);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? arg_long(argv[1], 0, 1000000, "ITERATIONS") : 0;
  long ms = argc > 2 ? arg_long(argv[2], 0, 60000, "MS_PER_ITERATION") : 100;
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0, len = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  MPI_Get_processor_name(host, &len);
  printf("mpi_ring: rank %d of %d on host %s\n", rank, size, host);
  fflush(stdout);

  /* Every rank's hostname to rank 0, which checks that no two ranks share a host. */
  char *all = rank == 0 ? calloc((size_t)size, MPI_MAX_PROCESSOR_NAME) : NULL;
  MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
             MPI_COMM_WORLD);
  int distinct = 1;
  if (rank == 0) {
    for (int i = 0; i < size; i++)
      for (int j = i + 1; j < size; j++)
        if (!strcmp(all + (size_t)i * MPI_MAX_PROCESSOR_NAME, all + (size_t)j * MPI_MAX_PROCESSOR_NAME))
          distinct = 0;
    free(all);
  }
  MPI_Bcast(&distinct, 1, MPI_INT, 0, MPI_COMM_WORLD);

  /* The sum of (rank+1) over all ranks must be size*(size+1)/2 everywhere. */
  long mine = rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  int ok = distinct && sum == (long)size * (size + 1) / 2;
  if (rank == 0) {
    printf("mpi_ring: hosts %s, allreduce sum %ld (want %ld): %s\n", distinct ? "distinct" : "SHARED",
           sum, (long)size * (size + 1) / 2, ok ? "ok" : "FAILED");
    fflush(stdout);
  }

  /* The long run a failure test cuts into: one small all-reduce per iteration. */
  for (long it = 0; ok && it < iters; it++) {
    sleep_ms(ms);
    long one = 1, n = 0;
    MPI_Allreduce(&one, &n, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (n != size) ok = 0;
    if (rank == 0 && it % 10 == 0) {
      printf("mpi_ring: iteration %ld\n", it);
      fflush(stdout);
    }
  }
  if (rank == 0 && iters > 0) {
    printf("mpi_ring: %ld iterations %s\n", iters, ok ? "done" : "FAILED");
    fflush(stdout);
  }
  MPI_Finalize();
  return ok ? 0 : 1;
}
