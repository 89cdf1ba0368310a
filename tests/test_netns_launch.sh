#!/bin/bash
# test_netns_launch.sh - `pollen launch` keeps a 3-host job alive (hosts made of network
# namespaces, tests/netns): a rank killed with SIGKILL mid-run is relaunched on the same hosts
# and the job ends with weights bit-identical to an uninterrupted run; a host's cable pulled
# mid-run gets the host named and excluded, the job resumes on the others, and once plugged
# back in the host is taken back at the next launch (pollen status shows restarts, hosts and
# the last failure meanwhile); a rank that always fails at the same step makes the supervisor
# give up with that reason; with the job folder on each host's own disk, cutting rank 0's host
# resumes the job on the others from a replica. Prints the time from each fault to the first
# resumed step and the steps redone.
#
# Needs root (network namespaces), Open MPI and a pollen with `launch`; skips (77) otherwise.
set -u
SRC=${POLLEN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
. "$SRC/tests/netns/harness.sh"
POLLEN=${POLLEN:-$SRC/build/pollen}
[ -x "$POLLEN" ] || skip "no pollen binary at $POLLEN (set POLLEN)"
"$POLLEN" launch --help >/dev/null 2>&1 || skip "this pollen has no launch command"
POLLEN=$(realpath "$POLLEN")
harness_setup
PROGRAM=$POLLEN
A3=$(netns_addr 3)

OUT=$W/prepare.txt
netns_run 1 "$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$W/node/data" \
  --max-side 64 --shards 3 >"$OUT" 2>&1 || fail "pollen prepare on h1"
# --batch 6: 3 or 2 ranks share it evenly, so losing a host keeps the job's arithmetic.
TRAIN=(--data "$W/node/data" --cache-dir "$W/node/cache" --model mnv3-small --width 0.35
  --size 64 --batch 6 --threads 1 --loader-threads 1 --log-every 1 --ckpt-every 2)
hash_of() { grep -Eo 'weights written to [^ ]*/weights.safetensors \(weights hash [0-9a-f]+' "$1" | tail -n 1 | grep -Eo '[0-9a-f]{16}'; }

# resumed_after T0 N: seconds from T0 until launch N (its "pollen launch: launch N:" line)
# logged its first training step; "" after 90 s.
resumed_after() {
  local t0=$1 n=$2 i
  for ((i = 0; i < 900; i++)); do
    if awk -v n="$n" '$0 ~ "pollen launch: launch " n ":" { on = 1 } on && / epoch [0-9]+\/[0-9]+  step / { found = 1; exit }
      END { exit !found }' "$OUT"; then
      since "$t0"
      return 0
    fi
    sleep 0.1
  done
}

# steps_redone JOB: what the first relaunch did again: launch 1's last step - launch 2's resume.
steps_redone() { # JOB [HOST]: the host whose folder holds the supervisor's record (default 1)
  python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(r[0]["last_step"] - r[1]["resumed_step"])' \
    "$W/h${2:-1}/$1/launch.jsonl"
}

# --- 1. an uninterrupted run: the reference -------------------------------------------------
OUT=$W/reference.txt
launch --threads 1 -- "${TRAIN[@]}" --job "$W/node/ref" --epochs 6 >"$OUT" 2>&1 || fail "the uninterrupted run exited $?"
ref=$(hash_of "$OUT")
[ -n "$ref" ] || fail "no weights hash in the uninterrupted run"
ok "uninterrupted 3-host run: weights hash $ref"

# --- 2. kill -9 one rank mid-run: relaunched on the same hosts, bit-identical weights --------
OUT=$W/kill.txt
: >"$OUT"
launch --threads 1 --backoff 0 -- "${TRAIN[@]}" --job "$W/node/kill" --epochs 6 >>"$OUT" 2>&1 &
bg=$!
wait_line "$OUT" "epoch 2/6  step 3/" "$bg"
t0=$(now)
netns_kill 3 KILL "pollen train" || fail "no pollen train on h3 to kill"
kill_resume=$(resumed_after "$t0" 2)
wait "$bg"
st=$?
[ "$st" = 0 ] || fail "the job with a rank killed exited $st, want 0 (relaunched)"
grep -q "launch 1 failed (exit [0-9]*, last step seen: [0-9]*): rank 2 on $A3 killed by signal 9" "$OUT" ||
  fail "the supervisor did not name rank 2 on $A3 as killed"
grep -q "pollen launch: launch 2: 3 rank(s) on $(netns_addr 1),$(netns_addr 2),$A3 " "$OUT" || fail "not relaunched on the same 3 hosts"
grep -q "resuming from .*step-0*[1-9][0-9]*.ckpt" "$OUT" || fail "the relaunch did not resume from a checkpoint"
[ "$(hash_of "$OUT")" = "$ref" ] || fail "weights after the kill and relaunch ($(hash_of "$OUT")) differ from the uninterrupted run's ($ref)"
[ -n "$kill_resume" ] || fail "no resumed step within 90 s of the kill"
kill_redone=$(steps_redone kill)
[ "$kill_redone" -ge 0 ] && [ "$kill_redone" -le 2 ] || fail "the relaunch redid $kill_redone steps, more than --ckpt-every 2"
ok "rank on h3 killed: relaunched on the same hosts, first resumed step ${kill_resume}s after the kill, $kill_redone step(s) redone; weights bit-identical ($ref)"

# --- 3. a cable pulled: the host is excluded, the job resumes on the others; plugged back in,
# the host is taken back at the next launch ---------------------------------------------------
OUT=$W/cut.txt
: >"$OUT"
LAUNCH_TIMEOUT=240 launch --threads 1 --backoff 0 -- "${TRAIN[@]}" --job "$W/node/cut" --epochs 3000 >>"$OUT" 2>&1 &
bg=$!
wait_line "$OUT" "epoch 1/3000  step 5/" "$bg"
t0=$(now)
netns_cut 3
cut_resume=$(resumed_after "$t0" 2)
[ -n "$cut_resume" ] || fail "no resumed step within 90 s of the cable pulled"
grep -q "host $A3 excluded from this launch: no answer within 5 s" "$OUT" || fail "h3 was not named and excluded"
grep -q "pollen launch: launch 2: 2 rank(s) on $(netns_addr 1),$(netns_addr 2) " "$OUT" || fail "launch 2 is not on h1 and h2"
status=$("$POLLEN" status "$W/h1/cut" --json) || fail "pollen status on the relaunched job exited $?"
echo "$status" | grep -q '"launch":{"attempt":2,"restarts":1,"world":2,"hosts":"[^"]*","excluded":"'"$A3"'","last_failure":{"reason":"' ||
  fail "the status does not show launch 2, 1 restart, world 2, $A3 excluded, the last failure: $status"
human=$("$POLLEN" status "$W/h1/cut")
echo "$human" | grep -q "^launch      2 by pollen launch, 1 restart; hosts .* (world 2); excluded $A3" &&
  echo "$human" | grep -q "^failure     " || fail "pollen status does not show the launch and the failure: $human"
netns_uncut 3
netns_wait_links || fail "h3 did not come back"
# A preemption (SIGUSR1 to a rank) ends launch 2 cleanly; the next probe finds h3 again.
netns_kill 2 USR1 "pollen train" || fail "no pollen train on h2 to signal"
wait_line "$OUT" "pollen launch: launch 3: 3 rank\(s\) on $(netns_addr 1),$(netns_addr 2),$A3 " "$bg" 60
for ((i = 0; i < 300; i++)); do [ "$(grep -c "resuming from" "$OUT")" -ge 2 ] && break; sleep 0.1; done
[ "$(grep -c "resuming from" "$OUT")" -ge 2 ] || fail "launch 3 did not resume"
netns_kill 1 TERM "^[^ ]*pollen launch " || fail "no pollen launch on h1 to stop"
wait "$bg"
st=$?
[ "$st" = 75 ] || fail "pollen launch stopped by SIGTERM exited $st, want 75"
rec=$W/h1/cut/launch.jsonl
[ "$(wc -l <"$rec")" = 3 ] && grep -q '"attempt":1,.*"outcome":"failed",.*"decision":"relaunch"' "$rec" &&
  grep -q '"attempt":2,.*"excluded":\["'"$A3"'"\].*"outcome":"preempted"' "$rec" &&
  grep -q '"attempt":3,.*"outcome":"stopped",.*"decision":"stop"' "$rec" || fail "launch.jsonl does not tell the story: $(cat "$rec")"
cut_redone=$(steps_redone cut)
[ "$cut_redone" -ge 0 ] && [ "$cut_redone" -le 2 ] || fail "the relaunch after the cut redid $cut_redone steps, more than --ckpt-every 2"
ok "cable of h3 pulled: excluded, resumed on h1+h2 ${cut_resume}s after the cut, $cut_redone step(s) redone; plugged back in: taken back at launch 3; status and launch.jsonl show it"

# --- 4. a rank that always fails at the same step: the supervisor gives up with that reason --
OUT=$W/fault.txt
POLLEN_FAULT_AT_STEP=1:5 launch --threads 1 --backoff 0 --export POLLEN_FAULT_AT_STEP -- "${TRAIN[@]}" \
  --job "$W/node/fault" --epochs 3 >"$OUT" 2>&1
st=$?
[ "$st" = 1 ] || fail "a rank failing at step 5 every time: pollen launch exited $st, want 1"
grep -q "giving up: 3 launches in a row failed at step 5: a bug or bad data" "$OUT" || fail "no give-up naming step 5"
[ "$(grep -c "killed by signal 9" "$OUT")" -ge 3 ] || fail "the failures are not named"
# With nothing running, pollen status says what the supervisor last did, from launch.jsonl.
human=$("$POLLEN" status "$W/h1/fault")
grep -q "^supervisor    launch 3 (2 restarts) on .*: failed, rank 1 on $(netns_addr 2) killed by signal 9.*; gave up: 3 launches in a row failed at step 5" <<<"$human" ||
  fail "pollen status of the given-up job does not show the supervisor's end: $human"
"$POLLEN" status "$W/h1/fault" --json | python3 -c 'import json,sys; l=json.load(sys.stdin)["last_launch"]; assert l["decision"] == "give_up" and l["attempt"] == 3, l' ||
  fail "pollen status --json has no last_launch that gave up"
ok "a rank failing at step 5 at every launch: given up after 3 launches, naming step 5"

# --- 5. the job folder on each host's own disk only, and rank 0's host cut: the job resumes
# on the other host from the replica of its checkpoints. The job runs on h1 and h2, the
# supervisor on h3 (as on a login node that stays up); the dataset is on storage every host
# sees (W/bin), the checkpoints only on the hosts' own folders -------------------------------
OUT=$W/rank0.txt
: >"$OUT"
printf '%s slots=1\n' "$(netns_addr 1)" "$(netns_addr 2)" >"$W/bin/hostfile2"
cp -r "$W/h1/data" "$W/bin/data" || fail "copying the data to W/bin"
LOCAL=("${TRAIN[@]}")
LOCAL[1]=$W/bin/data
HOSTFILE=$W/bin/hostfile2 LAUNCH_HOST=3 launch --threads 1 --backoff 0 -- "${LOCAL[@]}" --job "$W/node/local" \
  --epochs 8 >>"$OUT" 2>&1 &
bg=$!
wait_line "$OUT" "epoch 1/8  step 9/" "$bg"
grep -q "pollen launch: launch 1: 2 rank(s) on $(netns_addr 1),$(netns_addr 2) " "$OUT" || fail "launch 1 is not rank 0 on h1, rank 1 on h2"
t0=$(now)
netns_cut 1
r0_resume=$(resumed_after "$t0" 2)
wait "$bg"
st=$?
[ "$st" = 0 ] || fail "the job with rank 0's host cut exited $st, want 0"
[ -n "$r0_resume" ] || fail "no resumed step within 90 s of rank 0's host cut"
grep -q "host $(netns_addr 1) excluded from this launch" "$OUT" || fail "h1 was not excluded"
grep -q "pollen launch: launch 2: 1 rank(s) on $(netns_addr 2) " "$OUT" || fail "launch 2 is not on h2"
resumed=$(sed -n 's|.*resuming from [^ ]*/local/checkpoints/step-0*\([0-9][0-9]*\)\.ckpt.*|\1|p' "$OUT" | tail -n 1)
[ -n "$resumed" ] && [ "$resumed" -ge 4 ] ||
  fail "launch 2 did not resume from h2's replica of a checkpoint after step 3: $(grep -E 'resuming|fresh' "$OUT")"
[ -s "$W/h2/local/weights.safetensors" ] || fail "no final weights in h2's job folder"
# Not bounded by --ckpt-every here: what rank 0 wrote in the copy's ~0.5 s in flight is lost
# with its host, and at these tiny steps that is many checkpoints.
r0_redone=$(steps_redone local 3)
netns_uncut 1
ok "rank 0's host cut, job folders node-local: resumed on h2 from its replica ${r0_resume}s after the cut, $r0_redone step(s) redone; finished"

echo "PASS: pollen launch on 3 namespace hosts; fault to first resumed step: ${kill_resume}s (rank killed), ${cut_resume}s (cable pulled), ${r0_resume}s (rank 0's host cut, from a replica); steps redone: $kill_redone, $cut_redone, $r0_redone"
