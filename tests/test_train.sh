#!/usr/bin/env bash
# pollen train in one process on the bundled sample: a loss that falls (the sample is
# overfitted: training accuracy above 90% within a bounded number of steps, which a broken
# backward cannot do), the job folder's contents, eval/predict/export/plot on the result, the
# frozen config, and the errors a user can cause.
set -euo pipefail
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
P="$POLLEN"
fail() { echo "FAIL: $*"; exit 1; }
expect_status() { # expect_status CODE PATTERN -- command...
  local want=$1 pattern=$2; shift 3
  set +e; out=$("$@" 2>&1); got=$?; set -e
  [ "$got" = "$want" ] || fail "'$*' exited $got, expected $want: $out"
  echo "$out" | grep -q -- "$pattern" || fail "'$*' did not say '$pattern': $out"
  [ "$(echo "$out" | grep -c '^pollen')" -le 1 ] || fail "'$*' printed more than one error line"
  echo "ok: exit $want, '$pattern'"
}

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 96 > /dev/null
args=(--data "$T/data" --job "$T/job" --size 64 --batch 16 --width 0.5 --epochs 16
      --no-augment --opt adam --lr 0.003 --dropout 0 --log-every 5 --threads 2)
timeout -k 5 300 "$P" train "${args[@]}" > "$T/log" 2>&1 || { cat "$T/log"; fail "training failed"; }
for f in config.json metrics.jsonl weights.safetensors checkpoints; do
  [ -e "$T/job/$f" ] || fail "job folder lacks $f"
done
# The last logged training accuracy (train mode, the last 5 steps).
acc=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r.get("train_acc") is not None]
print(train[-1]["train_acc"], train[0]["loss"], train[-1]["loss"])' "$T/job/metrics.jsonl")
read -r last_acc first_loss last_loss <<< "$acc"
echo "training accuracy $last_acc, loss $first_loss -> $last_loss"
python3 -c "import sys; sys.exit(0 if float('$last_acc') > 0.9 and float('$last_loss') < 0.5 * float('$first_loss') else 1)" \
  || fail "the sample was not overfitted (accuracy $last_acc, loss $first_loss -> $last_loss)"

# A relaunch of a finished job does nothing and says so.
expect_status 0 "already finished" -- "$P" train "${args[@]}"
# A relaunch with other job-defining settings is refused, naming the setting...
expect_status 1 "lr: frozen" -- "$P" train "${args[@]}" --lr 0.01
# ...unless --force-config.
"$P" train "${args[@]}" --lr 0.01 --force-config > "$T/log2" 2>&1 || { cat "$T/log2"; fail "--force-config refused"; }
grep -q "force-config" "$T/log2" || fail "--force-config did not say what it adopted"

# eval: accuracy, per-class precision/recall, confusion matrix; --json for scripts.
"$P" eval --job "$T/job" --split train --json > "$T/eval.json"
python3 - "$T/eval.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
n = e["images"]
assert n == sum(c["support"] for c in e["classes"]) and n >= 80, e
assert len(e["classes"]) == 5 and all(sum(c["confusion"]) == c["support"] for c in e["classes"]), e
assert abs(sum(c["confusion"][i] for i, c in enumerate(e["classes"])) / n - e["accuracy"]) < 1e-6, e
print("eval: accuracy", e["accuracy"], "on", e["images"], "training images")
PY
"$P" eval --job "$T/job" | grep -q "confusion (rows true" || fail "eval has no confusion matrix"

# predict: top-k with class names, probabilities summing to at most 1.
photo=$(ls "$POLLEN_SRC"/tests/data/flowers_sample/roses/*.jpg | head -1)
"$P" predict --weights "$T/job/weights.safetensors" --size 64 --top 5 --json "$photo" > "$T/pred.json"
python3 - "$T/pred.json" <<'PY'
import json, sys
p = json.loads(open(sys.argv[1]).readline())
names = {t["class"] for t in p["top"]}
assert names == {"daisy", "dandelion", "roses", "sunflowers", "tulips"}, names
probs = [t["probability"] for t in p["top"]]
assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4, probs
print("predict:", p["top"][0])
PY

# export: the newest checkpoint as safetensors; it evaluates like the job's own weights.
"$P" export --job "$T/job" --out "$T/exported.safetensors" > /dev/null
a=$("$P" eval --job "$T/job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
b=$("$P" eval --weights "$T/exported.safetensors" --data "$T/data" --size 64 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
[ "$a" = "$b" ] || fail "exported weights evaluate to $b, the job's to $a"
echo "export: same validation accuracy ($a)"
# The checkpoint records the class count: with the data folder gone, export still writes the
# same tensors (only the class names, which live in the manifest, are missing).
mv "$T/data" "$T/data.away"
"$P" export --job "$T/job" --out "$T/exported-nodata.safetensors" > /dev/null || fail "export without the data folder"
mv "$T/data.away" "$T/data"
c=$("$P" eval --weights "$T/exported-nodata.safetensors" --data "$T/data" --size 64 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
[ "$c" = "$a" ] || fail "export without the data evaluates to $c, the job's to $a"
echo "export without the data folder: same validation accuracy"
# ...and, where PyTorch is installed, load into torchvision with strict=True.
if /usr/bin/python3 -c 'import torchvision' 2>/dev/null; then
  /usr/bin/python3 "$POLLEN_SRC/tools/load_check.py" --weights "$T/exported.safetensors" \
    --input "$POLLEN_SRC/tests/ref/mnv3-small-w0.25-s64-b4.safetensors" > "$T/torch.json" \
    || fail "torchvision refused the exported weights"
  "$P" predict --weights "$T/exported.safetensors" --tensor "$POLLEN_SRC/tests/ref/mnv3-small-w0.25-s64-b4.safetensors" > "$T/pollen.json"
  python3 - "$T/torch.json" "$T/pollen.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["logits"]; p = json.load(open(sys.argv[2]))["logits"]
scale = max(abs(v) for row in t for v in row)
err = max(abs(a - b) for ra, rb in zip(t, p) for a, b in zip(ra, rb)) / scale
assert len(t) == len(p) == 4 and err < 1e-4, (err, t, p)
print("export: torchvision load_state_dict(strict=True) accepts it; same eval logits (max rel err %.1e)" % err)
PY
fi

"$P" plot --job "$T/job" --out "$T/curves.svg" > /dev/null
grep -q "<polyline" "$T/curves.svg" || fail "plot drew no curve"
"$P" checkpoints --job "$T/job" | grep -q valid || fail "no valid checkpoint listed"

# Errors a user can cause: one clear line and the documented status.
expect_status 2 "unknown model" -- "$P" train --job "$T/x" --model resnet
expect_status 2 "is required" -- "$P" train --data "$T/data"
expect_status 2 "not a whole number" -- "$P" train --job "$T/x" --batch many
expect_status 2 "is not cpu, cuda or auto" -- "$P" train --job "$T/x" --device gpu
expect_status 2 "is not fp32, tf32, bf16 or fp16" -- "$P" train --job "$T/x" --precision fp8
expect_status 2 "is not cpu, cuda or auto" -- "$P" eval --job "$T/job" --device tpu
expect_status 2 "is not cpu, cuda or auto" -- "$P" predict --weights "$T/job/weights.safetensors" --device tpu x.jpg
expect_status 2 "images or --tensor FILE, not both" -- "$P" predict --weights "$T/job/weights.safetensors" --tensor t.safetensors x.jpg
# Without a GPU (or CUDA in this build) --device cuda says which, and trains nothing.
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_status 1 "--device cuda: " -- "$P" train --data "$T/data" --job "$T/nogpu" --device cuda
  expect_status 1 "--device cuda: " -- "$P" eval --job "$T/job" --device cuda
fi
"$P" eval --job "$T/job" --device cpu --json | grep -q '"accuracy"' || fail "eval --device cpu"
# --max-steps only stops the job: the LR schedule (cosine) still spans all epochs, so a job
# stopped by it and launched again without it ends with the weights of one uninterrupted run.
short=(--data "$T/data" --size 32 --batch 16 --width 0.25 --epochs 2 --threads 2)
"$P" train "${short[@]}" --job "$T/whole" > "$T/whole.log" 2>&1 || { cat "$T/whole.log"; fail "short run failed"; }
"$P" train "${short[@]}" --job "$T/split" --max-steps 3 > "$T/split.log" 2>&1 || { cat "$T/split.log"; fail "--max-steps run failed"; }
"$P" train "${short[@]}" --job "$T/split" >> "$T/split.log" 2>&1 || { cat "$T/split.log"; fail "continued run failed"; }
hash_of() { grep -o 'weights hash [0-9a-f]*' "$1" | tail -n 1; }
[ -n "$(hash_of "$T/whole.log")" ] && [ "$(hash_of "$T/whole.log")" = "$(hash_of "$T/split.log")" ] ||
  fail "stopped by --max-steps and continued: $(hash_of "$T/split.log"), uninterrupted: $(hash_of "$T/whole.log")"
echo "ok: --max-steps then a relaunch gives the uninterrupted run's weights ($(hash_of "$T/whole.log"))"
# Knobs of memory and speed, not of the result: kept activations instead of recomputed ones,
# every photo decoded afresh each epoch instead of from the decoded-photo cache, decode threads
# at nice 19.
"$P" train "${short[@]}" --job "$T/knobs" --keep-activations --decoded-cache 0 --loader-nice 19 > "$T/knobs.log" 2>&1 ||
  { cat "$T/knobs.log"; fail "--keep-activations --decoded-cache 0 --loader-nice 19 run failed"; }
[ "$(hash_of "$T/knobs.log")" = "$(hash_of "$T/whole.log")" ] ||
  fail "--keep-activations --decoded-cache 0 changed the weights: $(hash_of "$T/knobs.log") vs $(hash_of "$T/whole.log")"
echo "ok: --keep-activations --decoded-cache 0 --loader-nice 19 train the same weights"
# Batches decoded on the compute threads between steps instead of by decode threads.
"$P" train "${short[@]}" --job "$T/inline" --loader-inline > "$T/inline.log" 2>&1 || { cat "$T/inline.log"; fail "--loader-inline run failed"; }
[ "$(hash_of "$T/inline.log")" = "$(hash_of "$T/whole.log")" ] ||
  fail "--loader-inline changed the weights: $(hash_of "$T/inline.log") vs $(hash_of "$T/whole.log")"
echo "ok: --loader-inline trains the same weights"

expect_status 1 "no such folder" -- "$P" train --job "$T/x" --data "$T/missing"
expect_status 1 "fewer than one global batch" -- "$P" train --job "$T/y" --data "$T/data" --batch 1000
expect_status 1 "not a readable JPEG" -- "$P" predict --weights "$T/job/weights.safetensors" "$POLLEN_SRC/README.md"
expect_status 1 "cannot read" -- "$P" predict --weights "$T/job/weights.safetensors" "$T/none.jpg"
echo "PASS"
