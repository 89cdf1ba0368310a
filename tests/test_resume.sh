#!/bin/bash
# test_resume.sh - preemption and automatic resume of the real `pollen train`, end to end.
# A job stopped mid-epoch (SIGTERM, SIGINT, SIGUSR1, `pollen ctl stop`) exits 75, and the
# same command run again resumes and ends with weights byte-identical to an uninterrupted
# run; a damaged (bit flip, truncation) newest checkpoint is skipped with a message and
# `pollen checkpoints` marks it INVALID; all damaged is an error, not a fresh start; a
# relaunch with another --lr is refused unless --force-config; a second launch on a running
# job is refused. 2 ranks: test_resume_mpi.sh; kills, full disk, elastic: test_resume_faults.sh.
# Env: POLLEN, POLLEN_SRC; POLLEN_RESUME_KEEP=1 keeps the temp folder.
# 8 epochs of 11 steps (~5 ms each): a stop is requested once step STOP_AT is logged (mid
# epoch 2), and the steps after it leave room for a slow `pollen ctl` or a busy machine.
EPOCHS=8
# shellcheck source=tests/resume_lib.sh
source "${POLLEN_SRC:?}/tests/resume_lib.sh"
STOP_AT=13

# ---- the uninterrupted references
train 1 "$tmp/A" "$tmp/A.log"
rc=$?
[ $rc = 0 ] || { show "$tmp/A.log"; fail "uninterrupted 1-rank run: exit $rc"; finish; }
grep -q "finished: $TOTAL steps" "$tmp/A.log" || { show "$tmp/A.log"; fail "reference run did not do $TOTAL steps"; finish; }
echo "reference: 1 rank, weights hash $(weights_hash "$tmp/A.log")"

echo "== 1. stop and resume, 1 rank (at ${SECONDS}s)"
stop_and_resume term TERM
stop_and_resume int INT
stop_and_resume usr1 USR1
stop_and_resume ctl ctl

echo "== 4. damaged newest checkpoint (bit flip, truncation) and 9. pollen checkpoints (at ${SECONDS}s)"
# From copies of the job stopped by SIGTERM in case 1: checkpoints of epoch 1 and the stop.
if [ -d "$tmp/term.stopped" ]; then
  for damage in flip truncate; do
    job=$tmp/damaged-$damage
    cp -a "$tmp/term.stopped" "$job"
    mapfile -t ck < <(printf '%s\n' "$job"/checkpoints/step-*.ckpt | sort -r)
    if [ ${#ck[@]} -lt 2 ]; then fail "4 $damage: want 2+ checkpoints in the stopped job, have ${#ck[@]}"; continue; fi
    newest=${ck[0]} prev_step=$((10#$(basename "${ck[1]}" .ckpt | sed 's/step-//')))
    size=$(stat -c %s "$newest")
    if [ $damage = flip ]; then
      # One bit in the middle of the file (inside a tensor section).
      off=$((size / 2))
      byte=$(od -An -tu1 -j $off -N1 "$newest" | tr -d ' ')
      printf '%b' "$(printf '\\%03o' $((byte ^ 0x10)))" | dd of="$newest" bs=1 seek=$off conv=notrunc status=none
    else
      truncate -s $((size - 1000)) "$newest"
    fi
    list=$("$POLLEN" checkpoints --job "$job" 2>&1)
    rows_ok=$(echo "$list" | awk -v p="$prev_step" '$1 == p && /valid$/' | wc -l)
    if echo "$list" | head -2 | tail -1 | grep -q "INVALID: " && [ "$rows_ok" = 1 ]; then
      pass "9 ($damage): pollen checkpoints marks the newest INVALID ($(echo "$list" | sed -n 2p | sed 's/.*INVALID: //')) and step $prev_step valid"
    else
      echo "$list"; fail "9 ($damage): pollen checkpoints does not show newest INVALID and step $prev_step valid"
    fi
    json=$("$POLLEN" checkpoints --job "$job" --json)
    if [ "$(echo "$json" | grep -c '"valid":[[:space:]]*false')" = 1 ]; then
      pass "9 ($damage): --json lists it with \"valid\": false"
    else
      fail "9 ($damage): --json: $json"
    fi
    train 1 "$job" "$job.log"
    rc=$?
    r=$(resumed_step "$job.log")
    if [ $rc != 0 ]; then show "$job.log"; fail "4 $damage: relaunch: exit $rc"; continue; fi
    if [ "$r" != "$prev_step" ] || ! grep -q "falling back to the previous checkpoint" "$job.log" \
      || ! grep -q "newer checkpoints were damaged and skipped" "$job.log"; then
      show "$job.log"; fail "4 $damage: want a skip message and a resume from step $prev_step, got '$r'"; continue
    fi
    pass "4 $damage: relaunch skipped the damaged newest and resumed from step $r: $(grep -o 'warning: .*falling back' "$job.log" | head -1 | sed 's/^warning: [^:]*: //')"
    same_as "$tmp/A" "$tmp/A.log" "$job" "$job.log" "4 $damage"
  done

  # Every checkpoint damaged: a clear failure, never a silent fresh start.
  job=$tmp/damaged-all
  cp -a "$tmp/term.stopped" "$job"
  for f in "$job"/checkpoints/step-*.ckpt; do truncate -s 100 "$f"; done
  train 1 "$job" "$job.log"
  rc=$?
  if [ $rc = 1 ] && grep -q "none of the .* checkpoints .* verifies" "$job.log" && ! grep -q "  step [0-9]*/11  loss" "$job.log"; then
    pass "4 all damaged: exit 1 without training: $(grep -o 'pollen: none of.*' "$job.log" | cut -c1-110)..."
  else
    show "$job.log"; fail "4 all damaged: exit $rc, want 1 with 'none of the N checkpoints verifies' and no training"
  fi
else
  skip "4/9. no stopped job from case 1"
fi

echo "== 8. frozen config (at ${SECONDS}s)"
if [ -d "$tmp/usr1.stopped" ]; then
  job=$tmp/frozen
  cp -a "$tmp/usr1.stopped" "$job"
  cp "$job/config.json" "$tmp/frozen.config"
  train 1 "$job" "$job.log" --lr 0.002
  rc=$?
  if [ $rc = 1 ] && grep -q "pollen: .*(lr: frozen 0.001.*, now 0.002.*--force-config" "$job.log" \
    && cmp -s "$job/config.json" "$tmp/frozen.config" && ! grep -q "resuming" "$job.log"; then
    pass "8: relaunch with --lr 0.002 refused (exit 1), config.json unchanged: $(grep -o 'pollen: .*' "$job.log" | cut -c1-100)..."
  else
    show "$job.log"; fail "8: relaunch with --lr 0.002: exit $rc, want 1 with a message naming lr"
  fi
  train 1 "$job" "$job.2.log" --lr 0.002 --force-config
  rc=$?
  r=$(resumed_step "$job.2.log")
  s=$(stop_step "$tmp/usr1.log")
  if [ $rc = 0 ] && grep -q "force-config: adopting the new settings (lr" "$job.2.log" && [ "$r" = "$s" ] \
    && grep -q '"lr":[[:space:]]*0.002' "$job/config.json" && grep -q "finished: $TOTAL steps" "$job.2.log"; then
    pass "8: with --force-config it resumed from step $r with the new lr and finished"
  else
    show "$job.2.log"; fail "8: --force-config: exit $rc, resumed '$r' (want $s), or config.json not updated"
  fi
else
  skip "8. no stopped job from case 1"
fi

echo "== 10. a second launch on a running job (at ${SECONDS}s)"
job=$tmp/twice
start 1 "$job" "$job.log"
if wait_step "$job" 2; then
  train 1 "$job" "$job.2.log"
  rc=$?
  bg_wait
  rc1=$?
  if [ $rc = 1 ] && grep -q "is in use by another pollen process" "$job.2.log" && [ $rc1 = 0 ] \
    && grep -q "finished: $TOTAL steps" "$job.log"; then
    pass "10: refused (exit 1: $(grep -o 'in use by another pollen process' "$job.2.log")); the running job finished undisturbed"
  else
    show "$job.2.log"; fail "10: second launch exit $rc (want 1, 'in use'); first run exit $rc1"
  fi
else
  bg_wait; fail "10: the first run ended before step 2"
fi

finish
