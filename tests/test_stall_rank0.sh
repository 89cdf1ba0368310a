#!/usr/bin/env bash
# test_stall_rank0.sh - the stall detector names the rank that stopped, whichever it is. A
# 2-rank `pollen train` with --stall-timeout 5; one rank gets SIGSTOP (hung, not dead: mpirun
# sees nothing wrong). Rank 0 stopped: rank 1's deadline passes, rank 0 does not answer its
# ping, and rank 1 ends the job naming rank 0 and its host. Rank 1 stopped: rank 0 names it,
# as before, also when another rank's deadline comes before rank 0's (tests/mpi/mpi_stall.c).
# Either way the job ends non-zero within a bounded time.
set -euo pipefail
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed (apt-get install openmpi-bin)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d)
pids=() # every process this test stopped or launched, released and killed on the way out
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2> /dev/null || true; kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe --mca odls_base_sigkill_timeout 0 --mca mpi_yield_when_idle 1)

"$POLLEN" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" > /dev/null
# Enough epochs that the job is still training whenever the stop lands.
train=(--data "$T/data" --size 64 --batch 8 --epochs 1000 --stall-timeout 5 --threads 1)

# The pid of rank R of the job in DIR: Open MPI puts the rank in each process's environment.
rank_pid() {
  local p
  for p in $(pgrep -f " train .*--job $1( |$)"); do
    tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return 0; }
  done
  return 1
}

# stop_rank NAME RANK: starts a job, stops RANK once it trains, and waits for the job to end;
# sets status and took (seconds from the stop to the end).
stop_rank() {
  local job=$T/$1 log=$T/$1.log victim="" launcher
  "${MPIRUN[@]}" -np 2 "$POLLEN" train "${train[@]}" --job "$job" > "$log" 2>&1 &
  launcher=$!
  pids+=("$launcher")
  for _ in $(seq 300); do grep -q " step " "$log" 2> /dev/null && break; sleep 0.2; done
  grep -q " step " "$log" || { cat "$log"; fail "$1: the job did not start training"; }
  for _ in $(seq 50); do victim=$(rank_pid "$job" "$2") && break; sleep 0.1; done
  [ -n "$victim" ] || fail "$1: no process of rank $2 found"
  pids+=("$victim")
  local start=$(date +%s)
  kill -STOP "$victim"
  set +e; wait "$launcher"; status=$?; set -e
  took=$(( $(date +%s) - start ))
  kill -CONT "$victim" 2> /dev/null || true
  kill -KILL "$victim" 2> /dev/null || true
  [ "$status" != 124 ] && [ "$status" != 137 ] || { tail "$log"; fail "$1: the job did not end by itself (timeout)"; }
  [ "$status" != 0 ] || { tail "$log"; fail "$1: the job exited 0 with a stopped rank"; }
  # Deadline 5 s (+5 s on rank 1), a 3 s answer window, and the abort.
  [ "$took" -le 30 ] || { tail "$log"; fail "$1: the job took ${took}s to end"; }
}

stop_rank r0 0
grep -Eq "rank 0 \([^)]+\) did not answer for [0-9]+ s: it is stopped, hung or cut off; the job ends" "$T/r0.log" \
  || { tail -n 20 "$T/r0.log"; fail "rank 0 stopped: no message names rank 0"; }
echo "ok: rank 0 stopped, the job ended in ${took}s (exit $status): $(grep -o 'rank [1-9] (.*did not answer.*' "$T/r0.log" | head -1)"

stop_rank r1 1
grep -q "rank 1 on .* does not answer" "$T/r1.log" || { tail -n 20 "$T/r1.log"; fail "rank 1 stopped: rank 0 did not name it"; }
grep -q "rank 0 (.*) did not answer" "$T/r1.log" && { tail -n 20 "$T/r1.log"; fail "rank 1 stopped: rank 0 was blamed"; }
echo "ok: rank 1 stopped, the job ended in ${took}s (exit $status): $(grep -o 'rank 1 on .* does not answer.*' "$T/r1.log" | head -1)"
# The race: 3 ranks, rank 2 stopped, rank 0 reaches the stuck barrier 5.5 s after rank 1, so
# rank 1's deadline passes first. Rank 0 answers rank 1's ping, and rank 1 must wait for rank 0
# to name rank 2 instead of ending the job at once with no one named.
log=$T/race.log
"${MPIRUN[@]}" -np 3 "$POLLEN_BUILD/mpi_stall" 2 5.5 5 > "$log" 2>&1 &
launcher=$!
pids+=("$launcher")
start=$(date +%s)
for _ in $(seq 100); do grep -q "pid [0-9]* stops" "$log" 2> /dev/null && break; sleep 0.1; done
victim=$(grep -o "pid [0-9]* stops" "$log" | grep -o "[0-9]*" || true)
[ -n "$victim" ] && pids+=("$victim")
set +e; wait "$launcher"; status=$?; set -e
took=$(( $(date +%s) - start ))
[ "$status" != 0 ] && [ "$status" != 124 ] && [ "$status" != 137 ] || { cat "$log"; fail "race: exit $status"; }
[ "$took" -le 30 ] || { cat "$log"; fail "race: the job took ${took}s to end"; }
grep -q "rank 2 on .* does not answer" "$log" || { cat "$log"; fail "race: rank 2 is not named"; }
grep -q "did not answer" "$log" && { cat "$log"; fail "race: rank 0 was blamed while alive"; }
echo "ok: rank 2 stopped while rank 1's deadline came first, rank 0 named it in ${took}s"
echo "PASS"
