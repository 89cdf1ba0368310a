#!/bin/bash
# fake_pollen.sh - stands in for `pollen train` so tests can drive deploy/mpirun/launch.sh
# before (or without) the real trainer: every rank exits like pollen would.
#   fake_pollen.sh train --preempt N   exit 75 on the first N launches, then 0 (counted in
#                                      a file in the rank's own working folder)
#   fake_pollen.sh train --fail S      exit S at once
#   fake_pollen.sh train --ring PROG ITERS MS   run the MPI program PROG (mpi_ring) instead
set -u
[ "${1-}" = train ] || { echo "fake_pollen.sh: first argument must be 'train'" >&2; exit 2; }
case ${2-} in
  --preempt)
    n=$(cat fake_pollen.launches 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >fake_pollen.launches
    echo "fake_pollen: rank ${OMPI_COMM_WORLD_RANK:-?} on $(hostname) launch $n, threads ${OMP_NUM_THREADS:-unset}"
    # Like pollen, whose ranks agree on the stop step and meet in MPI_Finalize before any
    # exits: mpirun kills the others as soon as one rank exits non-zero.
    [ "$n" -le "$3" ] && { sleep 0.5; exit 75; }
    exit 0
    ;;
  --fail) exit "$3" ;;
  --ring) exec "$3" "$4" "$5" ;;
  *) echo "fake_pollen.sh: unknown mode '${2-}'" >&2; exit 2 ;;
esac
