#!/usr/bin/env bash
# A stop asked while `pollen train` is still starting is a stop (exit 75), not a kill: the
# process holds SIGTERM/SIGINT/SIGUSR1 from before its libraries initialise (cli/main.c) until
# its handlers take them. One process and a 2-rank mpirun job, signalled at moments of
# start-up found by watching the process, not by guessed delays.
set -euo pipefail
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
P="$POLLEN"
fail() { echo "FAIL: $*"; exit 1; }
"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 > /dev/null
args=(--data "$T/data" --size 64 --batch 16 --width 0.5 --epochs 40 --threads 1 --log-every 1)

# mask PID FIELD SIGNAL: whether SIGNAL is set in /proc/PID/status's FIELD (SigBlk, SigCgt).
# Builtins only: the held window lasts some milliseconds, too short for a fork per look.
mask() {
  local k v m=""
  { while read -r k v; do if [ "$k" = "$2:" ]; then m=$v; fi; done < "/proc/$1/status"; } 2>/dev/null || return 1
  [ -n "$m" ] && (( (16#$m >> ($3 - 1)) & 1 ))
}
# takes_usr1 PID: SIGUSR1 is held or handled: pollen will take it as a stop.
takes_usr1() { mask "$1" SigBlk 10 || mask "$1" SigCgt 10; }
wait_for() { # wait_for WHAT CMD...: polls CMD for up to 20 s
  local what=$1; shift
  local deadline=$((SECONDS + 20))
  while [ $SECONDS -lt $deadline ]; do "$@" && return 0; sleep 0.01; done
  fail "timed out waiting for $what"
}

# One process. A SIGTERM that came before pollen could take it (the earliest moment: before
# its exec, kept pending by a blocked mask as pollen's own preinit keeps it), one during
# set-up, and one after a few steps.
early_term() { # runs pollen with a SIGTERM already pending
  python3 -c 'import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
os.kill(os.getpid(), signal.SIGTERM)
os.execv(sys.argv[1], sys.argv[1:])' "$@"
}
for when in pending setup steps; do
  job="$T/job-$when"
  if [ $when = pending ]; then early_term "$P" train --job "$job" "${args[@]}" > "$T/$when.log" 2>&1 &
  else "$P" train --job "$job" "${args[@]}" > "$T/$when.log" 2>&1 &
  fi
  pid=$!; pids+=("$pid")
  case $when in
    setup) wait_for "the job folder" test -e "$job/config.json" && kill -TERM "$pid" ;;
    steps) wait_for "a few steps" grep -q 'step 3/' "$T/$when.log" && kill -TERM "$pid" ;;
  esac
  set +e; wait "$pid"; rc=$?; set -e
  [ $rc = 75 ] || { cat "$T/$when.log"; fail "SIGTERM ($when) ended pollen with $rc, not 75"; }
  echo "ok: SIGTERM $when: exit 75"
done
grep -q "stop requested before the first step" "$T/pending.log" || fail "no 'before the first step' line"
grep -q "stop requested (SIGTERM): checkpointing step" "$T/steps.log" || fail "no checkpoint line after steps"
# The stopped jobs resume: the one stopped after steps goes on from its checkpoint.
"$P" train --job "$T/job-steps" "${args[@]}" --max-steps 12 > "$T/resume.log" 2>&1 || fail "resume after the stop"
grep -q "resuming from" "$T/resume.log" || fail "the relaunch did not resume"
echo "ok: the job stopped after its first steps resumes"

# mpirun: SIGUSR1 to mpirun as soon as both ranks are pollen processes (start-up, MPI_Init
# still ahead or under way).
if command -v mpirun > /dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpirun --oversubscribe --mca odls_base_sigkill_timeout 0 --mca mpi_yield_when_idle 1 -np 2 \
    "$P" train --job "$T/job-mpi" "${args[@]}" > "$T/mpi.log" 2>&1 &
  mpid=$!; pids+=("$mpid")
  ranks_started() {
    local n=0 p
    for p in $(pgrep -f "job-mpi" || true); do
      [ "$p" = "$mpid" ] && continue
      grep -qa "OMPI_COMM_WORLD_RANK" "/proc/$p/environ" 2>/dev/null && takes_usr1 "$p" && n=$((n + 1))
    done
    [ $n -ge 2 ]
  }
  wait_for "both ranks to start" ranks_started
  kill -USR1 "$mpid"
  # (its output not ctest's pipe: the sleep outlives the kill below, and ctest would wait for it)
  ( sleep 120; kill -9 "$mpid" 2>/dev/null ) > /dev/null 2>&1 &
  watchdog=$!
  set +e; wait "$mpid"; rc=$?; kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null; set -e
  [ $rc = 75 ] || { cat "$T/mpi.log"; fail "SIGUSR1 to mpirun during start-up: exit $rc, not 75"; }
  echo "ok: SIGUSR1 to mpirun during the ranks' start-up: exit 75"
else
  echo "skipped the mpirun part: mpirun not installed"
fi
