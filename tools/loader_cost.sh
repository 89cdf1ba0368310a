#!/bin/bash
# loader_cost.sh - what JPEG loading costs the whole job: `pollen train` (loader threads on
# the same cores as the step) against `pollen bench` (the step alone, on random images), with
# and without the decoded-photo cache, interleaved, medians of REPEATS rounds (issue 15's
# "whole-job speed: the loader under 10%").
#
#   DATA=/work/runs/flowers-t15 SIZE=224 BATCH=32 REPEATS=3 EPOCHS=6 tools/loader_cost.sh [TRAIN FLAGS...]
#
# Each round: `pollen bench --mode train`, then `pollen train --epochs EPOCHS` (default 6) with
# the default cache and with --decoded-cache 0; a training run's speed is the median of the
# images/s reports of its last epoch (the cache holds most photos from the first epoch on, and
# most of the scales their crops ask for a few epochs later). Extra flags go to both trains
# (default: the README recipe's augmentation, --auto-augment ta_wide --random-erase 0.1, with
# the SGD update `pollen bench` times, so that only the loader differs; AdamW and the weight
# EMA cost the step a few % more).
# Needs: POLLEN (default build/pollen), a folder made by `pollen prepare` at DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
POLLEN=${POLLEN:-$PWD/build/pollen}
DATA=${DATA:-/work/runs/flowers-t15}
SIZE=${SIZE:-224} BATCH=${BATCH:-32} REPEATS=${REPEATS:-3} EPOCHS=${EPOCHS:-6} THREADS=${THREADS:-$(nproc)}
[ -x "$POLLEN" ] || { echo "loader_cost: $POLLEN is not an executable pollen (set POLLEN)" >&2; exit 1; }
[ -f "$DATA/manifest.json" ] || { echo "loader_cost: no prepared data at $DATA (set DATA; see pollen prepare)" >&2; exit 1; }
[ $# -gt 0 ] || set -- --opt sgd --lr 0.01 --auto-augment ta_wide --random-erase 0.1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; flags: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "size $SIZE, batch $BATCH, $THREADS threads, epoch $EPOCHS of $EPOCHS timed, train flags: $*"

last_epoch_speed() { # metrics.jsonl: median images/s of epoch EPOCHS's reports
  python3 -c 'import json,statistics,sys
r=[json.loads(l) for l in open(sys.argv[1])]
v=[x["images_per_s"] for x in r if x.get("epoch")==int(sys.argv[2]) and x.get("images_per_s")]
print("%.1f" % statistics.median(v))' "$1" "$EPOCHS"
}
train_speed() { # job-name extra-flags...
  local job=$tmp/$1; shift
  rm -rf "$job"
  "$POLLEN" train --data "$DATA" --job "$job" --size "$SIZE" --batch "$BATCH" --epochs "$EPOCHS" --threads "$THREADS" \
    --log-every 5 --no-tensorboard --precise-bn 0 "$@" > "$job.log" 2>&1 || { tail -n 3 "$job.log" >&2; exit 1; }
  last_epoch_speed "$job/metrics.jsonl"
}
bench=() cached=() uncached=()
for r in $(seq "$REPEATS"); do
  bench+=("$("$POLLEN" bench --size "$SIZE" --batch "$BATCH" --mode train --threads "$THREADS" --steps 10 --json |
    python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["images_per_s"])')")
  cached+=("$(train_speed cached "$@")")
  uncached+=("$(train_speed uncached --decoded-cache 0 "$@")")
  echo "round $r: bench ${bench[-1]}, train ${cached[-1]} (cache), ${uncached[-1]} (--decoded-cache 0) images/s"
done
python3 - "${bench[*]}" "${cached[*]}" "${uncached[*]}" <<'PY'
import statistics, sys
b, c, u = (statistics.median(map(float, a.split())) for a in sys.argv[1:])
print(f"median: bench {b:.1f}, train {c:.1f} with the cache (loader costs {100 * (1 - c / b):.0f}%), "
      f"{u:.1f} without ({100 * (1 - u / b):.0f}%) images/s")
PY
