#!/bin/bash
# test_resume_faults.sh - the real `pollen train` under harsher interruptions than a clean
# stop (test_resume.sh): SIGKILL at random moments of a job that checkpoints every step
# (every relaunch resumes, no checkpoint is ever torn, the end result is bit-identical); a
# second SIGINT (exit 130 at once, the job still resumes); a full disk (a clear checkpoint
# error, training goes on, earlier checkpoints stay valid; needs root for a small tmpfs); and
# elastic resume of a 2-rank job on 1 and on 3 ranks.
# Env: POLLEN, POLLEN_SRC; POLLEN_RESUME_SEED (kill moments, default 4242);
# POLLEN_RESUME_KEEP=1 keeps the temp folder.
# shellcheck source=tests/resume_lib.sh
source "${POLLEN_SRC:?}/tests/resume_lib.sh"

train 1 "$tmp/A" "$tmp/A.log"
rc=$?
if [ $rc != 0 ] || ! grep -q "finished: $TOTAL steps" "$tmp/A.log"; then show "$tmp/A.log"; fail "uninterrupted run: exit $rc"; finish; fi
echo "reference: 1 rank, weights hash $(weights_hash "$tmp/A.log")"

echo "== 5. SIGKILL at random moments, --ckpt-every 1 (at ${SECONDS}s)"
seed=${POLLEN_RESUME_SEED:-4242}
RANDOM=$seed
job=$tmp/torn
kills=0 resumes=0 prev=0 ok=1 leftovers=0 final_log=
for i in $(seq 12); do
  had_ckpt=0
  compgen -G "$job/checkpoints/step-*.ckpt" >/dev/null && had_ckpt=1
  log=$job.$i.log
  start 1 "$job" "$log" --ckpt-every 1
  target=$((prev + 1 + RANDOM % 4))
  if [ $target -lt $((TOTAL - 1)) ] && wait_step "$job" $target; then
    # A random moment inside the next step or two, where a checkpoint write may be running.
    sleep "0.00$((RANDOM % 10))"
    kill -9 "$run_pid" 2>/dev/null
  fi
  bg_wait
  rc=$?
  read_step "$job"
  prev=$step
  if [ $rc != 137 ] && [ $rc != 0 ]; then show "$log"; fail "5: launch $i (seed $seed): exit $rc"; ok=0; break; fi
  if [ $had_ckpt = 1 ]; then
    if grep -q "resuming from" "$log"; then resumes=$((resumes + 1)); else show "$log"; fail "5: launch $i did not resume"; ok=0; break; fi
  fi
  grep -q "left by an interrupted checkpoint write" "$log" && leftovers=$((leftovers + 1))
  # A kill never leaves a damaged file under a final name.
  if "$POLLEN" checkpoints --job "$job" | grep -q INVALID; then
    "$POLLEN" checkpoints --job "$job"; fail "5: an INVALID checkpoint after launch $i (seed $seed)"; ok=0; break
  fi
  if [ $rc = 0 ]; then final_log=$log; break; fi
  kills=$((kills + 1))
done
if [ $ok = 1 ]; then
  if [ -z "$final_log" ]; then
    final_log=$job.final.log
    train 1 "$job" "$final_log" --ckpt-every 1
    rc=$?
    if [ $rc != 0 ] || ! grep -q "resuming from" "$final_log"; then show "$final_log"; fail "5: last relaunch: exit $rc (or no resume)"; ok=0; fi
  fi
  if [ $ok = 1 ] && [ $kills -lt 4 ]; then
    fail "5: only $kills kills landed mid-run (seed $seed); the test wants 4 or more"
  elif [ $ok = 1 ]; then
    [ $leftovers -gt 0 ] && resumes="$resumes (the .tmp of an interrupted write removed on $leftovers)"
    pass "5: $kills SIGKILLs at random moments (seed $seed), every relaunch resumed: $resumes resumes, no INVALID checkpoint ever"
    same_as "$tmp/A" "$tmp/A.log" "$job" "$final_log" "5: after $kills SIGKILLs"
  fi
fi

echo "== second SIGINT (at ${SECONDS}s)"
# The second interrupt exits 130 at once, without a checkpoint. Wait until the first has been
# delivered (not pending in /proc/PID/status) so the kernel cannot merge the two.
# Builtins only: a poll that forks can miss the window on a loaded machine.
sigint_pending() {
  local key mask
  { while read -r key mask; do
      case $key in ShdPnd: | SigPnd:) (( 0x$mask & 2 )) && return 0 ;; esac
    done <"/proc/$1/status"; } 2>/dev/null
  return 1
}
job=$tmp/int2
for _ in 1 2 3 4 5; do
  rm -rf "$job"
  start 1 "$job" "$job.log"
  wait_step "$job" 13 || { bg_wait; continue; }
  p=$run_pid
  kill -INT "$p"
  for _ in $(seq 200); do sigint_pending "$p" || break; sleep 0.001; done
  kill -INT "$p" 2>/dev/null
  bg_wait
  rc=$?
  [ $rc = 75 ] && continue # the stop finished between the two: too fast to test, try again
  break
done
if [ "$rc" = 130 ] && grep -q "second interrupt: exiting now without a checkpoint" "$job.log"; then
  pass "second SIGINT: exit 130 at once with a message"
  train 1 "$job" "$job.2.log"
  rc=$?
  if [ $rc = 0 ]; then
    r=$(resumed_step "$job.2.log")
    pass "second SIGINT: the relaunch resumed from step ${r:-0 (no checkpoint yet)} and finished"
    same_as "$tmp/A" "$tmp/A.log" "$job" "$job.2.log" "second SIGINT"
  else
    show "$job.2.log"; fail "second SIGINT: relaunch exit $rc"
  fi
else
  show "$job.log"; fail "second SIGINT: exit $rc, want 130 with 'second interrupt' on stderr"
fi

echo "== 6. full disk (at ${SECONDS}s)"
mnt=$tmp/small
ckfiles=("$tmp"/A/checkpoints/step-*.ckpt)
ck=$(stat -c %s "${ckfiles[0]}")
# Room for two checkpoints, the best and the final weights (a third of a checkpoint each) and
# the best's replacement while it is written: not for a third checkpoint.
kib=$(((ck * 29 / 10) / 1024 + 1))
if [ "$(id -u)" != 0 ]; then
  skip "6. full disk: needs root to mount a small tmpfs"
elif ! mkdir -p "$mnt" || ! mount -t tmpfs -o size=${kib}k pollen-test "$mnt" 2>"$tmp/mount.err"; then
  skip "6. full disk: cannot mount a tmpfs here ($(head -1 "$tmp/mount.err"))"
else
  resume_cleanup_hooks+=("umount '$mnt' 2>/dev/null || umount -l '$mnt' 2>/dev/null")
  job=$mnt/job
  train 1 "$job" "$tmp/full.log" --keep 5 --ckpt-every 1
  rc=$?
  n_ok=$("$POLLEN" checkpoints --job "$job" | grep -c ' valid$')
  n_bad=$("$POLLEN" checkpoints --job "$job" | grep -c INVALID)
  msg=$(grep -m1 -o "checkpoint not saved: .*" "$tmp/full.log")
  if ! echo "$msg" | grep -q "No space left on device.*earlier checkpoints are kept (disk full"; then
    show "$tmp/full.log"; fail "6: no clear 'checkpoint not saved ... No space left on device ... disk full' message"
  elif [ $rc != 0 ] || ! grep -q "training goes on" "$tmp/full.log"; then
    show "$tmp/full.log"; fail "6: exit $rc; by design training goes on past a failed checkpoint and finishes"
  elif ! grep -q "the final checkpoint could not be saved .* would resume from an older checkpoint" "$tmp/full.log"; then
    show "$tmp/full.log"; fail "6: the final checkpoint failed but the end of the log does not warn about it"
  elif [ "$n_ok" -lt 1 ] || [ "$n_bad" != 0 ] || compgen -G "$job/checkpoints/*.tmp" >/dev/null; then
    "$POLLEN" checkpoints --job "$job"; ls -la "$job/checkpoints"; fail "6: want only valid checkpoints and no .tmp left"
  else
    pass "6: a ${kib} KiB disk for ${ck}-byte checkpoints: '$(echo "$msg" | sed 's/.*: write/write/' | cut -c1-120)'; training went on and finished, warning that the final checkpoint is missing; pollen checkpoints: $n_ok valid, 0 INVALID, no .tmp left"
    same_as "$tmp/A" "$tmp/A.log" "$job" "$tmp/full.log" "6: a full disk does not change training"
  fi
  # A stop whose own checkpoint cannot be written: it must say so and fail, not claim success.
  rm -rf "$job"
  start 1 "$job" "$tmp/full-stop.log" --keep 5 --ckpt-every 1
  if wait_step "$job" 13; then
    kill -TERM "$run_pid"
    bg_wait
    rc=$?
    n_ok=$("$POLLEN" checkpoints --job "$job" | grep -c ' valid$')
    if [ $rc != 75 ] && [ $rc != 0 ] && grep -q "pollen: the final checkpoint could not be written" "$tmp/full-stop.log" && [ "$n_ok" -ge 1 ]; then
      pass "6: a stop on the full disk exits $rc: '$(grep -o 'pollen: the final.*' "$tmp/full-stop.log")'; $n_ok earlier checkpoint(s) valid"
    else
      show "$tmp/full-stop.log"; fail "6: a stop on the full disk: exit $rc, want a failure naming the final checkpoint"
    fi
  else
    bg_wait; show "$tmp/full-stop.log"; fail "6: the full-disk stop run ended before step 13"
  fi
fi

echo "== 7. elastic: 2 ranks -> 1 and 3 ranks (--batch 12) (at ${SECONDS}s)"
if [ $have_mpi = 1 ]; then
  job=$tmp/el2
  start 2 "$job" "$job.log" --batch 12
  if ! wait_step "$job" 9; then
    bg_wait; show "$job.log"; fail "7: the 2-rank run ended before step 9"
  else
    kill -USR1 "$run_pid"
    bg_wait
    rc=$?
    s=$(stop_step "$job.log")
    if [ $rc != 75 ] || [ -z "$s" ]; then
      show "$job.log"; fail "7: 2-rank stop: exit $rc"
    else
      cp -a "$job" "$tmp/el1"
      cp -a "$job" "$tmp/el3"
      for np in 1 3; do
        train $np "$tmp/el$np" "$tmp/el$np.log" --batch 12
        rc=$?
        r=$(resumed_step "$tmp/el$np.log")
        if [ $rc != 0 ] || [ "$r" != "$s" ] || ! grep -q "finished: 21 steps" "$tmp/el$np.log"; then
          show "$tmp/el$np.log"; fail "7: on $np rank(s): exit $rc, resumed at '$r' (want $s)"
        elif ! grep -q "written by 2 ranks and this run has $np: the global batch of 12 is now split $np ways" "$tmp/el$np.log"; then
          show "$tmp/el$np.log"; fail "7: on $np rank(s): no warning that the batch split changed"
        elif [ $np -gt 1 ] && ! grep -q "all $np ranks hold identical weights" "$tmp/el$np.log"; then
          show "$tmp/el$np.log"; fail "7: on $np ranks: no identical-weights line at the end"
        else
          pass "7: stopped on 2 ranks at step $s, resumed on $np at step $r with the warning, finished 21 steps"
        fi
      done
    fi
  fi
else
  skip "7. no mpirun"
fi

finish
