#!/usr/bin/env bash
# test_nccl.sh - NCCL gradient sync under mpirun: 2 ranks (one GPU each: NCCL refuses two
# ranks on one GPU, so a 1-GPU machine runs 1 rank, which still covers the unique-id
# broadcast, the communicator, the bucketing and the watchdog's polling). With 2 GPUs it also
# checks that a rank that never joins ends the job with a message instead of a hang.
# Env: NCCL_CHECK = the nccl_check binary. Skips (77) without a GPU.
set -uo pipefail
: "${NCCL_CHECK:?set NCCL_CHECK to the nccl_check binary}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
count=$("$NCCL_CHECK" --count) || { echo "$count"; exit 77; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun (apt-get install openmpi-bin)"; exit 77; }
np=2
if [ "$count" -lt 2 ]; then
  np=1
  echo "note: $count GPU: NCCL needs one GPU per rank, so the all-reduce runs with 1 rank here"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout -k 5 180 mpirun -np "$np" "$NCCL_CHECK" --timeout 30 >"$out" 2>&1
rc=$?
cat "$out"
[ "$rc" -eq 0 ] || { echo "FAIL: mpirun -np $np nccl_check exited $rc"; exit 1; }
[ "$(grep -c '^PASS' "$out")" -eq "$np" ] || { echo "FAIL: not every rank passed"; exit 1; }
echo "ok   mpirun -np $np: bucketed ncclAllReduce(avg) correct on every rank"

if [ "$np" -ge 2 ]; then
  t0=$(date +%s)
  timeout -k 5 120 mpirun -np 2 "$NCCL_CHECK" --timeout 5 --hang-rank 1 >"$out" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  cat "$out"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] ||
    { echo "FAIL: a hung rank did not end the job (exit $rc)"; exit 1; }
  grep -q "rank 0 .*NCCL .*no progress before the deadline" "$out" ||
    { echo "FAIL: no message naming the stalled all-reduce"; exit 1; }
  echo "ok   a rank that never joins ends the job in ${secs}s with a message (exit $rc)"
fi
echo "PASS: NCCL gradient sync"
