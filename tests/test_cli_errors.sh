#!/usr/bin/env bash
# test_cli_errors.sh - errors at the edges say what happened, and no work is silently lost or
# faked: predict on a folder names it; predict never scores a damaged JPEG (the check prepare
# applies), scoring the other photos and exiting 1; `pollen checkpoints` shows a checkpoint of
# another model or other settings as not resumable, as train refuses it; a final save of the
# weights on a full disk names the cause and leaves no temporary file (root: a small tmpfs).
set -u
P=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:?set POLLEN_SRC to the source tree}
T=$(mktemp -d /tmp/pollen-test-clierr-XXXXXX)
full="$T/full"
trap 'mountpoint -q "$full" 2>/dev/null && umount "$full"; rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
seen=0 # ok WHAT: says WHAT passed when no check failed since the last ok
ok() { [ "$fails" = "$seen" ] && echo "ok: $*"; seen=$fails; }
# expect STATUS PATTERN -- command...: exit status, one "pollen:" line on stderr matching.
expect() {
  local want=$1 pat=$2; shift 3
  "$@" > "$T/out" 2> "$T/err"; local got=$?
  [ "$got" = "$want" ] || fail "'$*' exited $got, want $want: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "'$*' stderr lacks '$pat': $(cat "$T/err")"
  [ "$(grep -c '^pollen' "$T/err")" = 1 ] || fail "'$*' printed other than one error line: $(cat "$T/err")"
}

"$P" prepare --src "$SRC/tests/data/flowers_sample" --out "$T/d" --max-side 64 > /dev/null 2>&1 || { echo "FAIL: prepare"; exit 1; }
train() { "$P" train --data "$T/d" --size 32 --batch 8 --width 0.35 --epochs 1 --threads 2 "$@"; }
train --job "$T/a" --max-steps 2 > "$T/log" 2>&1 || { cat "$T/log"; echo "FAIL: training"; exit 1; }
W="$T/a/weights.safetensors"

# Flag errors exit 2 and leave nothing behind.
expect 2 "pollen: --status-tcp 127.0.0.1:99999: not \[HOST:\]PORT" -- train --job "$T/tcp" --status-tcp 127.0.0.1:99999
[ -e "$T/tcp" ] && fail "a bad --status-tcp left $T/tcp behind"
expect 2 "pollen: train: --status-token-file is the token of the TCP endpoint: give --status-tcp too" -- \
  train --job "$T/tok" --status-token-file /etc/hostname
[ -e "$T/tok" ] && fail "--status-token-file without --status-tcp left $T/tok behind"
expect 2 "pollen: train: --job DIR is required" -- train --job ""
expect 2 "pollen: --decoded-cache: '-5'" -- train --job "$T/dc" --decoded-cache -5
expect 2 "pollen: --loader-nice: '20' is not a whole number in \[0, 19\]" -- train --job "$T/dc" --loader-nice 20
[ -e "$T/dc" ] && fail "a bad --decoded-cache left $T/dc behind"
# --precision on the CPU: fp32, or bf16 where the CPU has AVX512_BF16 and the avx512 path runs.
expect 2 "pollen: --precision fp16: 'fp16' GEMMs run on a GPU only; on the CPU use fp32 or bf16" -- \
  train --job "$T/fp16" --device cpu --precision fp16
[ -e "$T/fp16" ] && fail "a refused --precision left $T/fp16 behind"
expect 2 "bf16 GEMMs run on the avx512 kernel path, not 'baseline'" -- \
  env POLLEN_KERNELS=baseline "$P" bench --precision bf16 --steps 1 --size 32 --batch 2
if grep -qw avx512_bf16 /proc/cpuinfo; then
  train --job "$T/bf16" --device cpu --precision bf16 --max-steps 2 > "$T/log" 2>&1 || fail "train --precision bf16: $(tail -n 3 "$T/log")"
  grep -q "GEMMs in bf16" "$T/log" || fail "train --precision bf16 did not say it ran bf16 GEMMs"
  "$P" bench --precision bf16 --steps 1 --size 32 --batch 2 --json | grep -q '"precision":"bf16"' || fail "bench --json does not report bf16"
else
  expect 2 "bf16 GEMMs need AVX512_BF16, which this CPU lacks; use fp32" -- train --job "$T/bf16" --device cpu --precision bf16
fi
ok "--precision on the CPU"
if command -v mpirun > /dev/null; then
  # Ranks launched with other flags: found before rank 0 freezes config.json.
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout -k 5 120 mpirun --oversubscribe \
    --mca odls_base_sigkill_timeout 0 -np 1 "$P" train --data "$T/d" --job "$T/ranks" --size 32 --batch 8 --lr 0.1 : \
    -np 1 "$P" train --data "$T/d" --job "$T/ranks" --size 32 --batch 8 --lr 0.2 > "$T/ranks.log" 2>&1
  rc=$?
  [ $rc = 2 ] || fail "ranks with other flags: exit $rc, want 2: $(tail -5 "$T/ranks.log")"
  grep -q "ranks disagree on the training flags" "$T/ranks.log" || fail "ranks with other flags: $(tail -5 "$T/ranks.log")"
  [ -e "$T/ranks/config.json" ] && fail "ranks with other flags left config.json behind"
fi
ok "flag errors (a bad --status-tcp, --job \"\", ranks with other flags) exit 2 and write nothing"
# A one-class model is refused as a flag error, not deep in model_init naming another command's flag.
expect 2 "pollen: --classes: '1' is not a whole number in \[2, 100000\]" -- "$P" bench ops --classes 1
ok "bench ops --classes 1 exits 2"

# predict on a folder: named as one, not an allocation of 2^63 bytes.
expect 1 "pollen: $T/d is a directory, not an image file" -- "$P" predict --weights "$W" --size 32 "$T/d"
grep -q "out of memory" "$T/err" && fail "predict on a folder talks of memory: $(cat "$T/err")"
ok "predict on a folder: $(cat "$T/err")"

# predict on a truncated JPEG: refused like prepare refuses it, never scored.
photo=$(ls "$SRC"/tests/data/flowers_sample/roses/*.jpg | head -1)
head -c 2000 "$photo" > "$T/truncated.jpg"
expect 1 "pollen: $T/truncated.jpg: JPEG is damaged or truncated" -- "$P" predict --weights "$W" --size 32 "$T/truncated.jpg"
[ -s "$T/out" ] && fail "a truncated JPEG was scored: $(cat "$T/out")"
# With other photos: the damaged one skipped with its line, the rest scored, exit 1.
expect 1 "truncated.jpg: JPEG is damaged" -- "$P" predict --weights "$W" --size 32 --json "$T/truncated.jpg" "$photo"
grep -q "truncated.jpg" "$T/out" && fail "the truncated JPEG is in the output: $(cat "$T/out")"
grep -qF "\"image\":\"$photo\"" "$T/out" || fail "the intact photo was not scored: $(cat "$T/out")"
"$P" predict --help | grep -q "damaged or truncated" || fail "predict --help does not say what happens to a damaged photo"
# prepare applies the same check to the same file.
mkdir -p "$T/src/a" "$T/src/b"
cp "$SRC"/tests/data/flowers_sample/daisy/*.jpg "$T/src/a/"
cp "$SRC"/tests/data/flowers_sample/roses/*.jpg "$T/src/b/"
cp "$T/truncated.jpg" "$T/src/b/"
"$P" prepare --src "$T/src" --out "$T/d2" > /dev/null 2> "$T/err" || fail "prepare with a truncated photo: $(cat "$T/err")"
grep -q "skipping .*truncated.jpg: JPEG is damaged or truncated" "$T/err" || fail "prepare did not refuse it alike: $(cat "$T/err")"
ok "predict refuses a truncated JPEG as prepare does, and scores the rest"

# A checkpoint of another model and one of other settings in the job: listed as valid but
# not resumable, and train refuses the job as the listing says.
train --job "$T/b" --max-steps 4 --model mnv3-large > "$T/log" 2>&1 || { cat "$T/log"; fail "training mnv3-large"; }
train --job "$T/c" --max-steps 3 --lr 0.5 > "$T/log" 2>&1 || { cat "$T/log"; fail "training with --lr 0.5"; }
cp "$T/b/checkpoints/step-000000004.ckpt" "$T/c/checkpoints/step-000000003.ckpt" "$T/a/checkpoints/"
out=$("$P" checkpoints --job "$T/a") || fail "checkpoints: exit $?"
echo "$out"
echo "$out" | grep -Eq "^ +4 .*valid, but of another model \(mnv3-large; this job is mnv3-small\): not resumable$" ||
  fail "step 4 (mnv3-large) not shown as another model's"
echo "$out" | grep -Eq "^ +3 .*valid, but of other settings \(config hash [0-9a-f]+; this job's is [0-9a-f]+\): not resumable without --force-config$" ||
  fail "step 3 (--lr 0.5) not shown as other settings'"
echo "$out" | grep -Eq "^ +2 .*  valid$" || fail "step 2 (the job's own) not plainly valid"
echo "$out" | grep -q "pollen train refuses to resume this job: its newest valid checkpoint (step 4)" || fail "no word on what train will do"
if command -v python3 > /dev/null; then
  "$P" checkpoints --job "$T/a" --json | python3 -c '
import json, sys
v = json.load(sys.stdin)
assert [c["step"] for c in v] == [4, 3, 2] and all(c["valid"] for c in v), v
assert [c["resumable"] for c in v] == [False, False, True], v
assert "another model" in v[0]["reason"] and "other settings" in v[1]["reason"] and "reason" not in v[2], v
' || fail "checkpoints --json does not mark the foreign ones"
fi
expect 1 "step-000000004.ckpt was saved by model 'mnv3-large'" -- train --job "$T/a" --max-steps 6
# export (any settings of the job's model will do) names the one thing that differs.
out=$("$P" export --job "$T/a" --out "$T/x.safetensors" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "step-000000004.ckpt was saved by model 'mnv3-large', but this job is model 'mnv3-small'" <<<"$out" ||
  fail "export of a job whose newest checkpoint is another model's: exit $rc: $out"
grep -q "config hash" <<<"$out" && fail "export's refusal quotes config hashes that do not differ: $out"
ok "checkpoints lists another model's and other settings' checkpoints as not resumable"

# The final weights on a full disk (a 512 KiB tmpfs: smaller than the weights).
if [ "$(id -u)" != 0 ]; then
  echo "skip: the full-disk weights save needs root to mount a tmpfs"
elif ! { mkdir -p "$full" && mount -t tmpfs -o size=512k tmpfs "$full"; } 2>/dev/null; then
  echo "skip: cannot mount a tmpfs here"
else
  train --job "$full/job" --max-steps 2 > "$T/out" 2> "$T/err"
  rc=$?
  [ $rc = 1 ] || fail "a weights save on a full disk exited $rc, want 1"
  last=$(grep '^pollen' "$T/err")
  grep -q "^pollen: cannot write $full/job/weights.safetensors: no space left on the device" <<< "$last" ||
    fail "the full disk is not named as the cause: $(cat "$T/err")"
  grep -q "directory exists and is writable" "$T/err" && fail "a full disk is blamed on the directory: $last"
  [ -z "$(find "$full/job" -name "*.tmp*")" ] || fail "a temporary file outlived the failed save: $(find "$full/job")"
  ok "full disk: $last"
fi

[ "$fails" = 0 ] && echo "all CLI error checks passed"
exit $((fails > 0))
