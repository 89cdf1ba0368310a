#!/usr/bin/env bash
# test_ema_resume.sh - a job with a weight EMA (--ema-decay) stopped and relaunched ends with
# the same weights, bit for bit, as one that ran through (the EMA and its update count are
# in every checkpoint); its checkpoints hold ema.params; the EMA is what it validates and
# exports (the export differs from the same job without EMA, and `pollen export` of the
# final checkpoint evaluates as the job's weights do). Env: POLLEN, POLLEN_SRC (ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
tmp=$(mktemp -d /tmp/pollen-test-ema-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
hash_of() { sed -n 's/.*weights written to .* (weights hash \([0-9a-f]*\)).*/\1/p' "$1" | tail -n 1; }

"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 64 >/dev/null 2>&1 || fail "prepare"
# 5 steps an epoch; EMA updates every 2 batches, restarted in the first epoch's LR warm-up.
args=(--data "$tmp/data" --size 64 --batch 16 --width 0.5 --threads 2 --epochs 4 --warmup-epochs 1
  --ema-decay 0.8 --ema-every 2)

"$POLLEN" train --job "$tmp/through" "${args[@]}" >"$tmp/through.log" 2>&1 || fail "uninterrupted run: $(tail -3 "$tmp/through.log")"
grep -q "moving average (decay 0.8, updated every 2 steps" "$tmp/through.log" || fail "the log does not say the EMA is used"
"$POLLEN" train --job "$tmp/stopped" "${args[@]}" --max-steps 8 >"$tmp/stop1.log" 2>&1 || fail "first launch (to step 8)"
"$POLLEN" train --job "$tmp/stopped" "${args[@]}" >"$tmp/stop2.log" 2>&1 || fail "relaunch: $(tail -3 "$tmp/stop2.log")"
grep -q "resuming from .*step 8" "$tmp/stop2.log" || fail "the relaunch did not resume at step 8"
a=$(hash_of "$tmp/through.log")
b=$(hash_of "$tmp/stop2.log")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "weights after stop and relaunch ($b) differ from the uninterrupted run's ($a)"
echo "ok: stopped at step 8 and relaunched: weights hash $b, as the uninterrupted run"

"$POLLEN" checkpoints --job "$tmp/through" --json | python3 -c '
import json, sys
v = json.load(sys.stdin)
assert v and all(c["valid"] for c in v), v' || fail "checkpoints do not verify"
grep -c "ema.params" "$tmp"/through/checkpoints/*.ckpt >/dev/null || fail "no ema.params section in the checkpoints"

"$POLLEN" train --job "$tmp/plain" "${args[@]:0:12}" >"$tmp/plain.log" 2>&1 || fail "run without EMA"
[ "$(hash_of "$tmp/plain.log")" != "$a" ] || fail "the export is the same with and without an EMA: the EMA is not what is exported"

"$POLLEN" export --job "$tmp/through" --out "$tmp/exported.safetensors" >/dev/null || fail "pollen export"
x=$("$POLLEN" eval --weights "$tmp/through/weights.safetensors" --data "$tmp/data" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
y=$("$POLLEN" eval --weights "$tmp/exported.safetensors" --data "$tmp/data" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
[ "$x" = "$y" ] || fail "pollen export of the final checkpoint evaluates to $y, the job's weights to $x"
echo "ok: EMA in every checkpoint, exported and validated; pollen export agrees (accuracy $x)"
