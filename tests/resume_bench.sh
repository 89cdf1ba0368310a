#!/bin/bash
# resume_bench.sh - the figures of BENCHMARKS.md "Checkpoints in training": what a snapshot
# costs the training loop (median wall time per step, --ckpt-every 1 vs none), the size of a
# checkpoint, and the time from a relaunch to its first resumed step (vs a fresh start).
# The mean over --ckpt-every 5 spreads the cost of the snapshots that wait for the previous
# write over the steps between them. Not a test (no pass/fail). Usage: POLLEN=build/pollen tests/resume_bench.sh [REPS]
# Env: POLLEN_SRC (default: this checkout), BENCH_WIDTH (1.0), BENCH_SIZE (128),
# BENCH_BATCH (16), BENCH_THREADS (1).
set -u
: "${POLLEN:?set POLLEN to the pollen binary}"
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
reps=${1:-3}
W=${BENCH_WIDTH:-1.0} S=${BENCH_SIZE:-128} B=${BENCH_BATCH:-16} TH=${BENCH_THREADS:-1}
tmp=$(mktemp -d /tmp/pollen-bench-resume-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=$TH
"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side $((S + S / 4)) >/dev/null 2>&1 || { echo "prepare failed"; exit 1; }
flags=(--data "$tmp/data" --size "$S" --batch "$B" --width "$W" --log-every 1 --threads "$TH" --loader-threads "$TH")

# Step-to-step wall times from metrics.jsonl (elapsed_s; within an epoch, not the first step
# of a launch): they include whatever the loop spends on a snapshot after the step.
intervals() {
  python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("loss") is not None]
for a, b in zip(rows, rows[1:]):
    if a["epoch"] == b["epoch"] and b["step"] == a["step"] + 1 and a["step"] > 1:
        print(b["elapsed_s"] - a["elapsed_s"])' "$1"
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

: >"$tmp/none.txt"
: >"$tmp/every1.txt"
: >"$tmp/every5.txt"
for r in $(seq "$reps"); do
  for v in none every1 every5; do
    extra=()
    [ $v = every1 ] && extra=(--ckpt-every 1)
    [ $v = every5 ] && extra=(--ckpt-every 5)
    rm -rf "$tmp/job"
    "$POLLEN" train --job "$tmp/job" "${flags[@]}" --epochs 6 "${extra[@]}" >"$tmp/$v.$r.log" 2>&1 || { tail "$tmp/$v.$r.log"; exit 1; }
    intervals "$tmp/job/metrics.jsonl" >>"$tmp/$v.txt"
  done
done
ckfiles=("$tmp"/job/checkpoints/step-*.ckpt)
size=$(stat -c %s "${ckfiles[0]}")
mean() { awk '{s += $1} END {print s / NR}'; }
m0=$(median <"$tmp/none.txt") m1=$(median <"$tmp/every1.txt")
a0=$(mean <"$tmp/none.txt") a5=$(mean <"$tmp/every5.txt")
echo "model mnv3-small width $W, size $S, batch $B, $TH thread(s); $(getconf _NPROCESSORS_ONLN) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "step wall time, median of $(wc -l <"$tmp/none.txt") steps each: no checkpoints $(printf %.3f "$m0") s, --ckpt-every 1 $(printf %.3f "$m1") s (+$(echo "$m1 - $m0" | bc -l | xargs printf %.4f) s a snapshot)"
echo "step wall time, mean: no checkpoints $(printf %.4f "$a0") s, --ckpt-every 5 $(printf %.4f "$a5") s (+$(echo "($a5 - $a0) * 5" | bc -l | xargs printf %.4f) s a snapshot)"
echo "checkpoint file: $size bytes"

# Relaunch to the first resumed step, against a fresh start to its first step.
first_step_after() { # JOB LOG [flags]: seconds from launch to the first new metrics line
  local job=$1 log=$2 n0=0
  shift 2
  lines() { { wc -l <"$job/metrics.jsonl"; } 2>/dev/null || echo 0; }
  n0=$(lines)
  local t0
  t0=$(date +%s.%N)
  "$POLLEN" train --job "$job" "${flags[@]}" "$@" >"$log" 2>&1 &
  local pid=$!
  while [ "$(lines)" -le "$n0" ]; do sleep 0.005; done
  echo "$(date +%s.%N) - $t0" | bc -l
  wait $pid
}
: >"$tmp/fresh.txt"
: >"$tmp/resumed.txt"
for r in $(seq "$reps"); do
  rm -rf "$tmp/rj"
  first_step_after "$tmp/rj" "$tmp/fresh.log" --epochs 6 --max-steps 12 >>"$tmp/fresh.txt"
  first_step_after "$tmp/rj" "$tmp/resumed.log" --epochs 6 --max-steps 14 >>"$tmp/resumed.txt"
  grep -q "resuming from .*: step 12" "$tmp/resumed.log" || { tail "$tmp/resumed.log"; exit 1; }
done
echo "launch to first step, median of $reps: fresh start $(median <"$tmp/fresh.txt" | xargs printf %.2f) s, relaunch resuming from step 12 $(median <"$tmp/resumed.txt" | xargs printf %.2f) s"
