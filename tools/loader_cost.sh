#!/bin/bash
# loader_cost.sh - what JPEG loading costs the whole job: `pollen train` (loader threads on
# the same cores as the step) against `pollen bench` (the step alone, on random images), for
# a few ways of running the loader, interleaved, medians of REPEATS rounds (issue 15's
# "whole-job speed: the loader under 10%").
#
#   DATA=/work/runs/flowers-t15 SIZE=224 BATCH=32 REPEATS=3 EPOCHS=6 tools/loader_cost.sh [TRAIN FLAGS...]
#   VARIANTS="--loader-inline;--loader-nice 19" SIZE=128 BATCH=64 tools/loader_cost.sh
#
# Each round: `pollen bench --mode train`, then `pollen train --epochs EPOCHS` (default 6) with
# the default loader and with each of VARIANTS (';'-separated flag sets; default
# "--decoded-cache 0"); a training run's speed is the median of the images/s reports of its
# last epoch (the cache holds most photos from the first epoch on, and most of the scales
# their crops ask for a few epochs later). Extra flags go to every train (default: the README
# recipe's augmentation, --auto-augment ta_wide --random-erase 0.1, with the SGD update `pollen
# bench` times, so that only the loader differs; AdamW and the weight EMA cost the step a few
# % more).
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
IFS=';' read -r -a variants <<< "${VARIANTS:---decoded-cache 0}"
speeds=() # speeds[v]: the speeds of column v, space-separated (0: bench, 1: the default loader, 2...: VARIANTS)
for r in $(seq "$REPEATS"); do
  line="round $r:"
  b=$("$POLLEN" bench --size "$SIZE" --batch "$BATCH" --mode train --threads "$THREADS" --steps 10 --json |
    python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["images_per_s"])')
  speeds[0]+="$b " line+=" bench $b,"
  t=$(train_speed default "$@")
  speeds[1]+="$t " line+=" train $t (default loader)"
  for v in "${!variants[@]}"; do
    read -r -a flags <<< "${variants[$v]}"
    t=$(train_speed "variant$v" "${flags[@]}" "$@")
    speeds[$((v + 2))]+="$t " line+=", $t (${variants[$v]})"
  done
  echo "$line images/s"
done
python3 - "default loader" "${variants[@]}" -- "${speeds[@]}" <<'PY'
import statistics, sys
args = sys.argv[1:]
names, cols = args[:args.index("--")], args[args.index("--") + 1:]
med = [statistics.median(map(float, c.split())) for c in cols]
print(f"median: bench {med[0]:.1f}; " + "; ".join(
    f"train {m:.1f} with {n} (loader costs {100 * (1 - m / med[0]):.1f}%)" for n, m in zip(names, med[1:])) + " images/s")
PY
