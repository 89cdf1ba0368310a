#!/bin/bash
# fake_pollen.sh - stands in for `pollen train` so tests can drive `pollen launch` before (or
# without) the real trainer: every rank exits like pollen would.
#   fake_pollen.sh --version                     answers the supervisor's probe
#   fake_pollen.sh train [--job DIR] [--batch B] --preempt N exit 75 on the first N launches, then 0
#                                      (counted in a file in the rank's own working folder)
#   fake_pollen.sh train [--job DIR] --fail S    exit S at once
#   fake_pollen.sh train [--job DIR] --ring PROG ITERS MS   run the MPI program PROG (mpi_ring)
set -u
[ "${1-}" = --version ] && { echo "pollen 0.0.0 (fake_pollen.sh)"; exit 0; }
[ "${1-}" = train ] || { echo "fake_pollen.sh: first argument must be 'train'" >&2; exit 2; }
shift
while [ "${1-}" = --job ] || [ "${1-}" = --batch ]; do shift 2; done
case ${1-} in
  --preempt)
    n=$(cat fake_pollen.launches 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >fake_pollen.launches
    echo "fake_pollen: rank ${OMPI_COMM_WORLD_RANK:-?} on $(hostname) launch $n, threads ${OMP_NUM_THREADS:-unset}"
    # Like pollen, whose ranks agree on the stop step and meet in MPI_Finalize before any
    # exits: mpirun kills the others as soon as one rank exits non-zero.
    [ "$n" -le "$2" ] && { sleep 0.5; exit 75; }
    exit 0
    ;;
  --fail) exit "$2" ;;
  --ring) exec "$2" "$3" "$4" ;;
  *) echo "fake_pollen.sh: unknown mode '${1-}'" >&2; exit 2 ;;
esac
