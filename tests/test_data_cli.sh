#!/usr/bin/env bash
# test_data_cli.sh - `pollen prepare` and the loader from the command line: every user error
# gives its one-line message and documented exit status (0 ok, 1 failed, 2 usage).
set -u
P=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-.}
T=$(mktemp -d /tmp/pollen-test-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect STATUS PATTERN -- command...: runs it, checks exit status and that stderr matches.
expect() {
  local want=$1 pat=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"; local got=$?
  [ "$got" = "$want" ] || fail "'$*' exited $got, want $want: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "'$*' stderr lacks '$pat': $(cat "$T/err")"
}

# A copy of the sample with a corrupt JPEG, a truncated JPEG, a non-image and a dangling link.
cp -r "$SRC/tests/data/flowers_sample" "$T/src"
printf 'not a jpeg at all' > "$T/src/daisy/garbage.jpg"
f=$(ls "$T/src/roses"/*.jpg | head -1)
head -c 2000 "$f" > "$T/src/roses/truncated.jpg"
echo hi > "$T/src/tulips/notes.txt"
ln -s /nonexistent/photo.jpg "$T/src/sunflowers/gone.jpg"

expect 0 "skipping .*garbage.jpg" -- "$P" prepare --src "$T/src" --out "$T/d" --shards 2 --json
grep -q "truncated.jpg" "$T/err" || fail "truncated JPEG not reported: $(cat "$T/err")"
grep -q "gone.jpg.*cannot open" "$T/err" || fail "unreadable file not reported"
grep -q '"train":90' "$T/out" && grep -q '"skipped_corrupt":2' "$T/out" && grep -q '"skipped_not_image":1' "$T/out" &&
  grep -q '"skipped_unreadable":1' "$T/out" || fail "prepare summary: $(cat "$T/out")"
"$P" prepare --src "$T/src" --out "$T/d" --shards 2 > "$T/out" 2>&1 || fail "rerun failed"
grep -q "already prepared" "$T/out" || fail "rerun is not a no-op: $(cat "$T/out")"
expect 1 "different settings (--seed 7 here, 42 there).*--force" -- "$P" prepare --src "$T/src" --out "$T/d" --shards 2 --seed 7
"$P" prepare --src "$T/src" --out "$T/d" --shards 3 --seed 7 --force --json > "$T/out" 2>/dev/null || fail "--force failed"
ls "$T/d"/train-*-of-00003.shard > /dev/null 2>&1 && ! ls "$T/d"/train-*-of-00002.shard > /dev/null 2>&1 || fail "--force left old shards"
"$P" bench loader --data "$T/d" --size 32 --batch 8 --threads 2 --json > "$T/out" 2>&1 || fail "bench-loader: $(cat "$T/out")"
grep -q '"images":90' "$T/out" || fail "loader read $(cat "$T/out")"
# Later epochs from the decoded-photo cache: one rate per epoch, the cache within its budget.
"$P" bench loader --data "$T/d" --size 32 --batch 8 --threads 2 --epochs 2 --decoded-cache 1 --auto-augment ta_wide \
  --random-erase 0.5 --json > "$T/out" 2>&1 || fail "bench-loader --epochs: $(cat "$T/out")"
python3 - "$T/out" <<'PY' || fail "bench loader --epochs 2: $(cat "$T/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert len(j["epochs_images_per_s"]) == 2 and j["images_per_s"] == j["epochs_images_per_s"][1], j
assert 0 < j["cached_photos"] < 90 and 0 < j["cached_mib"] <= 1, j
PY
expect 2 "--auto-augment: 'rand' is not ta_wide" -- "$P" bench loader --data "$T/d" --auto-augment rand
expect 2 "--decoded-cache" -- "$P" bench loader --data "$T/d" --decoded-cache -1

# Damaged shards: a flipped byte inside a record, then a truncated file.
shard=$(ls "$T/d"/train-00001-of-00003.shard)
cp "$shard" "$T/good.shard"
python3 - "$shard" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x20; open(p, "wb").write(b)
PY
expect 1 "train-00001-of-00003.shard: record [0-9]* (.*) is corrupt.*pollen prepare --force" -- \
  "$P" bench loader --data "$T/d" --size 32 --threads 2
expect 1 "train-00001-of-00003.shard does not match its checksum.*--force" -- "$P" prepare --src "$T/src" --out "$T/d" --shards 3 --seed 7
head -c 5000 "$T/good.shard" > "$shard"
expect 1 "train-00001-of-00003.shard is truncated.*pollen prepare --force" -- "$P" bench loader --data "$T/d" --size 32
printf 'XXXXXXXX' | dd of="$shard" conv=notrunc status=none
expect 1 "not a pollen shard file.*pollen prepare --force" -- "$P" bench loader --data "$T/d" --size 32
expect 1 "manifest.json.*pollen prepare" -- "$P" bench loader --data "$T" --size 32

# Empty class folder, bad --src, wrong flags.
mkdir -p "$T/empty/daisy" "$T/empty/roses"
cp "$SRC/tests/data/flowers_sample/daisy/"*.jpg "$T/empty/daisy/"
expect 1 "class folder .*roses has no JPEG or PNG images" -- "$P" prepare --src "$T/empty" --out "$T/e"
expect 2 "--src $T/nope: No such file" -- "$P" prepare --src "$T/nope" --out "$T/e"
expect 2 "neither class sub-folders nor" -- "$P" prepare --src "$T/empty/daisy" --out "$T/e"
expect 2 "invalid usage; see 'pollen prepare --help'" -- "$P" prepare --src "$T/src" --out "$T/e" --frobnicate
expect 2 "--val-fraction: '2' is not a number" -- "$P" prepare --src "$T/src" --out "$T/e" --val-fraction 2
expect 2 "needs --src" -- "$P" prepare --out "$T/e"

# TFRecord input: the fixture, and a corrupted copy.
"$P" prepare --src "$SRC/tests/data/flowers_sample.tfrecord" --out "$T/tf" --json > "$T/out" 2>&1 || fail "tfrecord prepare"
grep -q '"train":10' "$T/out" || fail "tfrecord: $(cat "$T/out")"
cp "$SRC/tests/data/flowers_sample.tfrecord" "$T/bad.tfrecord"
printf '\x00\x00' | dd of="$T/bad.tfrecord" bs=1 seek=30000 conv=notrunc status=none
expect 1 "bad.tfrecord: record [0-9]* is corrupt" -- "$P" prepare --src "$T/bad.tfrecord" --out "$T/tf2"

[ "$fails" = 0 ] && echo "all data CLI checks passed"
exit $((fails > 0))
