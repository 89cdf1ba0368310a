#!/usr/bin/env bash
# A job's records and final weights tell the truth after the edges of a bad day:
#   - a finished job whose weights were deleted, damaged or left stale writes them again from
#     its final checkpoint on relaunch (the same weights hash), and a temporary weights file
#     left by a killed writer is removed
#   - after kill -9 and a relaunch, metrics.jsonl has every step once and in order
#   - checkpoints deleted while the records show finished epochs: refused, --start-over
#     trains again from step 0 with the records cut back
#   - a full disk under metrics.jsonl (root: a small tmpfs): one warning, training goes on,
#     and the relaunch drops the torn line
set -euo pipefail
T=$(mktemp -d)
cleanup() {
  pkill -9 -f "$T/" 2>/dev/null || true
  mountpoint -q "$T/tiny" 2>/dev/null && umount "$T/tiny"
  rm -rf "$T"
}
trap cleanup EXIT
P="$POLLEN"
fail() { echo "FAIL: $*"; exit 1; }
hash_of() { grep -o 'weights hash [0-9a-f]*' "$1" | tail -1 | awk '{print $3}'; }
"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 > /dev/null
args=(--data "$T/data" --size 64 --batch 16 --width 0.5 --threads 2 --log-every 1)

# -- final weights ---------------------------------------------------------------------
job="$T/done"
"$P" train --job "$job" "${args[@]}" --epochs 3 > "$T/done.log" 2>&1 || { cat "$T/done.log"; fail "training"; }
want=$(hash_of "$T/done.log")
[ -n "$want" ] || fail "no weights hash in the log"
cp "$job/weights.safetensors" "$T/final.safetensors"
relaunch_writes_weights() { # relaunch_writes_weights WHAT: the relaunch exits 0 with the same weights
  "$P" train --job "$job" "${args[@]}" --epochs 3 > "$T/re.log" 2>&1 || { cat "$T/re.log"; fail "$1: relaunch failed"; }
  grep -q "already finished" "$T/re.log" || fail "$1: the relaunch trained again"
  [ "$(hash_of "$T/re.log")" = "$want" ] || { cat "$T/re.log"; fail "$1: weights hash $(hash_of "$T/re.log"), want $want"; }
  cmp -s "$job/weights.safetensors" "$T/final.safetensors" || fail "$1: the rewritten file differs"
  echo "ok: $1: the relaunch writes the final weights again (hash $want)"
}
rm "$job/weights.safetensors"
touch "$job/weights.safetensors.tmp.99999"
relaunch_writes_weights "deleted weights"
ls "$job" | grep -q '\.tmp' && fail "a temporary weights file outlived the relaunch"
echo "ok: the killed writer's temporary file is gone"
head -c 1000 "$T/final.safetensors" > "$job/weights.safetensors"
relaunch_writes_weights "truncated weights"
# Stale: the weights a stop at step 7 left (a kill after the final checkpoint keeps them).
"$P" train --job "$T/stale" "${args[@]}" --epochs 3 --max-steps 7 > /dev/null 2>&1
cp "$T/stale/weights.safetensors" "$job/weights.safetensors"
relaunch_writes_weights "stale weights"

# -- kill -9 and relaunch: every step once ---------------------------------------------
job="$T/killed"
"$P" train --job "$job" "${args[@]}" --epochs 40 > "$T/k1.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ "$(ls "$job/checkpoints" 2>/dev/null | grep -c 'ckpt$')" -ge 2 ] && grep -q 'step 2/' <(tail -n 3 "$T/k1.log") && break
  sleep 0.05
done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
before=$(wc -l < "$job/metrics.jsonl")
"$P" train --job "$job" "${args[@]}" --epochs 40 > "$T/k2.log" 2>&1 || { cat "$T/k2.log"; fail "relaunch after kill -9"; }
grep -q "resuming from" "$T/k2.log" || fail "the relaunch did not resume"
python3 - "$job/metrics.jsonl" <<'PY' || fail "metrics.jsonl after kill -9 and a relaunch"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r["step"] for r in rows if r["loss"] is not None]
val = [r["epoch"] for r in rows if r["val_acc"] is not None]
assert train == list(range(1, 201)), "training steps not each once in order: %s" % train[:50]
assert val == list(range(1, 41)), "validations not each once in order: %s" % val
assert all(r["v"] == 2 and r["epoch"] == (r["step"] - 1) // 5 + 1 for r in rows), "epochs from 1, as the log counts"

print("ok: after kill -9 and a relaunch, metrics.jsonl has steps 1..200 once each, in order")
PY
echo "   ($before lines when killed)"

# -- checkpoints deleted, records kept -------------------------------------------------
rm -rf "$job/checkpoints"
set +e; out=$("$P" train --job "$job" "${args[@]}" --epochs 40 2>&1); rc=$?; set -e
[ $rc = 1 ] || fail "deleted checkpoints: exit $rc: $out"
grep -q "holds no checkpoint" <<<"$out" && grep -q -- "--start-over" <<<"$out" || fail "deleted checkpoints: $out"
[ "$(grep -c '^pollen' <<<"$out")" = 1 ] || fail "more than one error line: $out"
echo "ok: deleted checkpoints are refused: $(grep '^pollen' <<<"$out" | cut -c1-100)..."
"$P" train --job "$job" "${args[@]}" --epochs 2 --force-config --start-over > "$T/over.log" 2>&1 || { cat "$T/over.log"; fail "--start-over"; }
python3 -c '
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if json.loads(l)["loss"] is not None]
assert steps == list(range(1, 11)), steps' "$job/metrics.jsonl" || fail "--start-over: the records were not cut back"
echo "ok: --start-over trains from step 0 and the records start again"

# -- a full disk under metrics.jsonl ---------------------------------------------------
if [ "$(id -u)" != 0 ] || ! mkdir -p "$T/tiny" || ! mount -t tmpfs -o size=8k tmpfs "$T/tiny" 2>/dev/null; then
  echo "skipped the full-disk part: needs root (a small tmpfs)"
  exit 0
fi
job="$T/full"
mkdir -p "$job"
ln -s "$T/tiny/metrics.jsonl" "$job/metrics.jsonl"
"$P" train --job "$job" "${args[@]}" --epochs 12 > "$T/full.log" 2>&1 || { cat "$T/full.log"; fail "training with a full disk under the records"; }
n=$(grep -c "cannot write $job/metrics.jsonl" "$T/full.log" || true)
[ "$n" = 1 ] || { cat "$T/full.log"; fail "the full disk was reported $n times, not once"; }
grep -q "No space left" "$T/full.log" || fail "the warning does not name the cause"
echo "ok: a full disk under the records: one warning, the job finished"
rm "$job/metrics.jsonl"; cp "$T/tiny/metrics.jsonl" "$job/metrics.jsonl"   # the disk is replaced
"$P" train --job "$job" "${args[@]}" --epochs 12 > "$T/full2.log" 2>&1 || fail "relaunch after the full disk"
python3 -c '
import json, sys
for l in open(sys.argv[1]): json.loads(l)' "$job/metrics.jsonl" || fail "a torn line survived the relaunch"
echo "ok: the relaunch leaves no torn line"
