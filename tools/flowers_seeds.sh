#!/bin/bash
# flowers_seeds.sh - one training recipe on the shared flower photos for several seeds, scored
# on the held-out test split, for BENCHMARKS.md (issue 16's "3 seeds, mean and spread").
#
#   tools/flowers_seeds.sh [RECIPE FLAGS...]
#   SEEDS="1 2 3" PARALLEL=1 OUT=/work/runs/seeds EVAL_SIZE=192 tools/flowers_seeds.sh --width 1.5 ...
#
# Prepares ../shared/data/flower_photos once (15% test by content hash, VAL_FRACTION validation,
# default 0.15; the test split does not depend on it), then
# trains `pollen train --data DATA --job OUT/seedS --seed S RECIPE` for each seed: one after
# the other on all cores, or with PARALLEL=1 all at once with one compute and one loader thread
# each (as many seeds as cores: the time per run is then about cores x the time alone). Each
# run is scored with `pollen eval --split test --tta flip --size EVAL_SIZE` (default: the
# training size; a comma-separated list for multi-scale TTA, e.g. EVAL_SIZE=230,269,307), for
# the final and the best-validation weights. Prints one row per seed and
# the mean and spread (max - min) of the test accuracy; a seed already trained (OUT/seedS.seconds
# exists) is scored again, not retrained.
# Needs: POLLEN (default build/pollen), the photos at PHOTOS (default ../shared/data/flower_photos).
set -euo pipefail
cd "$(dirname "$0")/.."
POLLEN=${POLLEN:-$PWD/build/pollen}
PHOTOS=${PHOTOS:-../shared/data/flower_photos}
OUT=${OUT:-/tmp/pollen-seeds}
DATA=${DATA:-$OUT/flowers-t15}
SEEDS=${SEEDS:-1 2 3}
VAL_FRACTION=${VAL_FRACTION:-0.15}
[ -x "$POLLEN" ] || { echo "flowers_seeds: $POLLEN is not an executable pollen (set POLLEN)" >&2; exit 1; }
[ -d "$PHOTOS" ] || { echo "flowers_seeds: no photos at $PHOTOS (set PHOTOS)" >&2; exit 1; }
[ $# -gt 0 ] || set -- --size 128 --batch 64 --epochs 200 --opt adamw --lr 0.003 --weight-decay 0.05 \
  --warmup-epochs 5 --label-smoothing 0.1 --auto-augment ta_wide --random-erase 0.1 --ema-decay 0.99 --ema-every 4
mkdir -p "$OUT"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; flags: $(grep -o 'avx[^ ]*\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "recipe: $*"
"$POLLEN" prepare --src "$PHOTOS" --out "$DATA" --max-side 256 --val-fraction "$VAL_FRACTION" --test-fraction 0.15 > /dev/null

train_seed() { # seed threads|all RECIPE...
  local s=$1 th=$2; shift 2
  local job=$OUT/seed$s t0 threads=()
  [ -f "$job.seconds" ] && return 0 # trained before: only scored again
  [ "$th" != all ] && threads=(--threads "$th" --loader-threads "$th")
  t0=$(date +%s)
  "$POLLEN" train --data "$DATA" --job "$job" --seed "$s" "${threads[@]}" "$@" > "$job.log" 2>&1 ||
    { echo "flowers_seeds: seed $s failed: $(tail -n 2 "$job.log")" >&2; return 1; }
  echo $(($(date +%s) - t0)) > "$job.seconds"
}
if [ -n "${PARALLEL:-}" ]; then
  pids=()
  for s in $SEEDS; do train_seed "$s" 1 "$@" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
else
  for s in $SEEDS; do train_seed "$s" all "$@"; done
fi

score() { # job extra-flags...: test accuracy
  local job=$1; shift
  local size=()
  [ -n "${EVAL_SIZE:-}" ] && size=(--size "$EVAL_SIZE")
  "$POLLEN" eval --job "$job" --split test --tta flip "${size[@]}" "$@" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])'
}
echo "| seed | test top-1 (final, flip TTA${EVAL_SIZE:+, at $EVAL_SIZE px}) | test top-1 (best validation) | last validation | seconds |"
echo "|---|---|---|---|---|"
accs=()
for s in $SEEDS; do
  job=$OUT/seed$s
  final=$(score "$job") best=$(score "$job" --best)
  val=$(grep -o 'validation accuracy [0-9.]*' "$job.log" | tail -n 1 | awk '{print $3}')
  echo "| $s | $final | $best | ${val:-?} | $(cat "$job.seconds" 2>/dev/null || echo ?) |"
  accs+=("$final")
done
python3 -c 'import statistics,sys; a=[float(x) for x in sys.argv[1:]]; print(f"test top-1 over {len(a)} seeds: mean {statistics.mean(a):.4f}, spread {max(a)-min(a):.4f} (min {min(a):.4f}, max {max(a):.4f})")' "${accs[@]}"
