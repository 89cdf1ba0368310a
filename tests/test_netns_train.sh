#!/bin/bash
# test_netns_train.sh - `pollen train` on three hosts made of network namespaces, launched by
# `pollen launch`: the prepared shards exist only in h1's folder and reach h2 and h3
# by staging into their --cache-dir; the job finishes with one set of weights; a preemption
# signal to one rank checkpoints the job, pollen launch relaunches it and it resumes; SIGTERM
# to pollen launch stops the job (75) and launching again resumes; a host's rank killed or
# its cable pulled ends a launch non-zero within ~30 s, naming rank 2.
#
# Needs root (network namespaces), Open MPI and a pollen with `train`; skips (77) otherwise.
set -u
SRC=${POLLEN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
. "$SRC/tests/netns/harness.sh"
POLLEN=${POLLEN:-$SRC/build/pollen}
[ -x "$POLLEN" ] || skip "no pollen binary at $POLLEN (set POLLEN)"
"$POLLEN" train --help >/dev/null 2>&1 || skip "this pollen has no train command"
POLLEN=$(realpath "$POLLEN") # hosts start in their own folders
harness_setup
PROGRAM=$POLLEN
A3=$(netns_addr 3)

# Shards only on h1: every host sees its own folder at W/node, so --data W/node/data exists
# on h1 alone, and --cache-dir W/node/cache is a different folder on each host.
OUT=$W/prepare.txt
netns_run 1 "$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$W/node/data" \
  --max-side 64 --shards 3 >"$OUT" 2>&1 || fail "pollen prepare on h1"
[ -e "$W/h2/data" ] || [ -e "$W/h3/data" ] && fail "shards outside h1's folder"
TRAIN=(--data "$W/node/data" --cache-dir "$W/node/cache" --model mnv3-small --width 0.35
  --size 64 --batch 6 --threads 1 --loader-threads 1 --log-every 1)

# --- 1. a whole run: staging, one set of weights, checkpoints where rank 0 runs, copies on h2
OUT=$W/train.txt
launch --threads 1 -- "${TRAIN[@]}" --job "$W/node/job" --epochs 1 >"$OUT" 2>&1
st=$?
grep -q "diverged" "$OUT" && fail "the ranks' weights diverged"
[ "$st" = 0 ] || fail "pollen train on 3 hosts exited $st"
grep -Eq "weights hash [0-9a-f]{16}" "$OUT" || fail "no weights hash logged"
for h in 2 3; do
  grep -q "rank $((h - 1)) (h$h) has the data in $W/node/cache/" "$OUT" || fail "rank $((h - 1)) did not stage into its cache"
  n=0
  for f in "$W"/h1/data/*; do
    g=$(echo "$W/h$h"/cache/*/"$(basename "$f")")
    cmp -s "$f" "$g" || fail "h$h's staged $(basename "$f") differs from h1's"
    n=$((n + 1))
  done
  [ "$n" -ge 4 ] || fail "only $n files in h1's prepared data"
done
# Rank 0 writes the checkpoints; rank 1 (h2, the first rank on another host) holds copies
# (tests/test_netns_replica.sh); h3 none.
[ -z "$(ls -A "$W/h3/job/checkpoints" 2>/dev/null | grep -v '^\.')" ] || fail "h3 holds checkpoints: only rank 0 writes them, rank 1 copies"
ls "$W"/h2/job/checkpoints/*.ckpt >/dev/null 2>&1 || fail "no replica in h2's job folder"
ls "$W"/h1/job/checkpoints/* >/dev/null 2>&1 || fail "no checkpoint in h1's job folder"
ok "3-host run finished; shards staged to h2, h3 byte for byte; $(grep -Eo 'weights hash [0-9a-f]+' "$OUT" | tail -n 1)"

# --- 2. preempted (SIGUSR1 to rank 1 only): all checkpoint, exit 75, relaunch, resume --------
OUT=$W/preempt.txt
: >"$OUT"
launch --threads 1 --backoff 1 --max-restarts 2 -- "${TRAIN[@]}" --job "$W/node/job2" --epochs 4 >>"$OUT" 2>&1 &
bg=$!
wait_line "$OUT" "step 5/" "$bg"
netns_kill 2 USR1 "pollen train" || fail "no pollen on h2 to signal"
wait "$bg"
st=$?
[ "$st" = 0 ] || fail "preempted and relaunched job exited $st, want 0"
grep -q "preempted (exit 75, last step seen: [0-9]*); relaunching" "$OUT" || fail "pollen launch did not see exit 75 after SIGUSR1"
grep -q "pollen launch: launch 2:" "$OUT" && ! grep -q "pollen launch: launch 3:" "$OUT" || fail "not exactly one relaunch"
grep -q "resuming from" "$OUT" || fail "the relaunch did not resume from the checkpoint"
grep -q "diverged" "$OUT" && fail "the ranks' weights diverged after resuming"
ok "SIGUSR1 on h2: checkpoint, exit 75, relaunched by pollen launch, resumed, finished"

# --- 3. the whole job stopped (SIGTERM to pollen launch): exit 75, then a new launch resumes
OUT=$W/stop.txt
: >"$OUT"
launch --threads 1 --backoff 1 -- "${TRAIN[@]}" --job "$W/node/job5" --epochs 4 >>"$OUT" 2>&1 &
bg=$!
wait_line "$OUT" "step 5/" "$bg"
netns_kill 1 TERM "^[^ ]*pollen launch " || fail "no pollen launch on h1 to signal"
wait "$bg"
st=$?
[ "$st" = 75 ] || fail "pollen launch stopped by SIGTERM exited $st, want 75"
grep -q "stopped by a signal; every rank saved its state" "$OUT" && ! grep -q "pollen launch: launch 2:" "$OUT" ||
  fail "pollen launch did not stop cleanly without relaunching"
# The stop's checkpoint reached h2 before the ranks exited 75.
last=$(ls "$W/h1/job5/checkpoints" | grep -E '^step-[0-9]+\.ckpt$' | sort | tail -n 1)
[ -n "$last" ] && cmp -s "$W/h1/job5/checkpoints/$last" "$W/h2/job5/checkpoints/$last" ||
  fail "h2 holds no copy of the stop checkpoint ${last:-(none on h1)}"
launch --threads 1 -- "${TRAIN[@]}" --job "$W/node/job5" --epochs 4 >>"$OUT" 2>&1 ||
  fail "launching again after the stop exited $?"
grep -q "resuming from" "$OUT" || fail "the new launch did not resume from the stop checkpoint"
ok "SIGTERM to pollen launch: every rank checkpointed, exit 75, its copy on h2; launched again, resumed, finished"

# --- 4. hosts lost mid-run ------------------------------------------------------------------
KILL_PATTERN="pollen train"
lose_host kill 30 "step 5/" -- --threads 1 --max-restarts 0 -- "${TRAIN[@]}" --job "$W/node/job3" --epochs 50
grep -q "process rank 2 with PID [0-9]* on node $A3 exited on signal 9" "$OUT" ||
  fail "the output does not name rank 2 on $A3 as killed"
kill_secs=$DETECT_SECS
ok "pollen on h3 killed: job ended with status $DETECT_STATUS after ${kill_secs}s, rank 2 named"

lose_host cut 40 "step 5/" -- --threads 1 --max-restarts 0 -- "${TRAIN[@]}" --job "$W/node/job4" --epochs 50
grep -Eq "lost host $A3 \(rank 2; Open MPI lost its daemon there\)|no message from rank 2 \(h3\)" "$OUT" ||
  fail "the output does not name rank 2 on $A3 as lost"
cut_secs=$DETECT_SECS
expect_h3_empty_then_reconnect
ok "cable of h3 pulled: job ended with status $DETECT_STATUS after ${cut_secs}s, rank 2 named"
echo "PASS: pollen train on 3 namespace hosts; host loss ends the job in ${kill_secs}s (kill) / ${cut_secs}s (cable)"
