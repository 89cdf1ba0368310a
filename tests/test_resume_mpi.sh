#!/bin/bash
# test_resume_mpi.sh - preemption and resume of a 2-rank `mpirun -np 2 pollen train`: a stop
# by SIGUSR1 to mpirun (which forwards it to every rank) or by SIGTERM to rank 1 alone exits
# 75, and the relaunch ends bit-identical to an uninterrupted 2-rank run; SIGKILL of rank 1 or
# of rank 0 ends the job within seconds naming the rank, and the relaunch (--ckpt-every 3)
# loses at most 3 steps and still ends bit-identical. Skipped without mpirun.
# Env: POLLEN, POLLEN_SRC; POLLEN_RESUME_KEEP=1 keeps the temp folder.
command -v mpirun >/dev/null || { echo "SKIP: no mpirun (apt-get install openmpi-bin)"; exit 77; }
# 8 epochs of 11 steps: room after STOP_AT for a busy machine (see test_resume.sh).
EPOCHS=8
# shellcheck source=tests/resume_lib.sh
source "${POLLEN_SRC:?}/tests/resume_lib.sh"
STOP_AT=13

echo "== 2. stop and resume, 2 ranks (at ${SECONDS}s)"
train 2 "$tmp/M" "$tmp/M.log"
rc=$?
if [ $rc != 0 ] || [ -z "$(param_hash "$tmp/M.log")" ]; then
  show "$tmp/M.log"; fail "uninterrupted 2-rank run: exit $rc (or no parameter hash logged)"; finish
fi
echo "reference: 2 ranks, weights hash $(weights_hash "$tmp/M.log"), parameter hash $(param_hash "$tmp/M.log")"
stop_and_resume mpi-usr1 mpirun-USR1 2
stop_and_resume mpi-rank1-term rank1-TERM 2

echo "== 3. SIGKILL of one rank of 2, --ckpt-every 3 (at ${SECONDS}s)"
# hard_kill R: SIGKILL to rank R mid-run; the job must end with a failure status within 30 s
# naming rank R, and the relaunch must lose at most 3 steps and end bit-identical.
hard_kill() {
  local r=$1 job=$tmp/kill$1 victim=
  start 2 "$job" "$job.log" --ckpt-every 3
  wait_step "$job" 1 && victim=$(rank_pid "$r")
  if [ -z "$victim" ] || ! wait_step "$job" $STOP_AT; then
    bg_wait; show "$job.log"; fail "3: the run ended before step $STOP_AT (or rank $r not found)"; return 1
  fi
  local t0 rc took killed_at named
  t0=$(date +%s.%N)
  kill -9 "$victim"
  bg_wait
  rc=$?
  took=$(echo "$(date +%s.%N) - $t0" | bc)
  killed_at=$(last_step "$job") # the last step rank 0 finished: no step ends without every rank
  named=$(grep -Eo "rank $r\\b.*(exited on signal 9|Killed|dead|never reached)[^.]*" "$job.log" | head -1)
  if [ $rc = 0 ] || [ $rc = 75 ] || [ $rc = 124 ]; then
    show "$job.log"; fail "3: after SIGKILL of rank $r the job exited $rc, want a failure status"; return 1
  elif [ "$(echo "$took > 30" | bc)" = 1 ]; then
    fail "3: the job took ${took}s to end after the kill of rank $r, want <= 30 s"; return 1
  elif [ -z "$named" ]; then
    show "$job.log"; fail "3: the output does not name rank $r as the lost one"; return 1
  fi
  pass "3: SIGKILL of rank $r at step $killed_at: job exited $rc after $(printf %.1f "$took") s: '$named'"
  train 2 "$job" "$job.2.log" --ckpt-every 3
  rc=$?
  local res
  res=$(resumed_step "$job.2.log")
  if [ $rc != 0 ] || [ -z "$res" ]; then
    show "$job.2.log"; fail "3: relaunch after the kill of rank $r: exit $rc, resumed step '$res'"; return 1
  elif [ $((killed_at - res)) -gt 3 ] || [ "$res" -gt "$killed_at" ]; then
    fail "3: resumed at step $res after the kill at step $killed_at: lost more than 3 steps"; return 1
  fi
  pass "3: relaunch resumed at step $res, $((killed_at - res)) step(s) before the kill"
  same_as "$tmp/M" "$tmp/M.log" "$job" "$job.2.log" "3: after SIGKILL of rank $r"
}
hard_kill 1
hard_kill 0

finish
