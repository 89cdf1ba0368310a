#!/usr/bin/env bash
# test_inference_meta.sh - the weights carry what inference needs: image_size, normalization and
# class_names in the safetensors __metadata__ (train's and export's); predict and eval default
# to that size without --size; predict scores PNG photos as well as JPEG.
# Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
P=${POLLEN:?set POLLEN to the pollen binary}
T=$(mktemp -d /tmp/pollen-inference-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { out=$("$@" 2>&1); rc=$?; }

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 >/dev/null || fail "prepare"
timeout -k 5 300 "$P" train --data "$T/data" --job "$T/job" --size 64 --batch 16 --width 0.5 --epochs 2 \
  --threads 2 >"$T/log" 2>&1 || { cat "$T/log"; fail "training failed"; }
W=$T/job/weights.safetensors
run "$P" export --job "$T/job" --out "$T/exported.safetensors"; [ $rc = 0 ] || fail "export: $out"

# --- the metadata, as another framework would read it ---
meta() { python3 - "$1" "$T/data/manifest.json" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
assert meta["image_size"] == "64", meta
norm = json.loads(meta["normalization"])
assert norm["range"] == [-1, 1] and norm["formula"] == "x/127.5-1" and norm["channels"] == "RGB", norm
names = json.loads(meta["class_names"])
manifest = json.load(open(sys.argv[2]))
want = manifest.get("classes") or manifest.get("class_names")
assert names == want and len(names) == int(meta["classes"]), (names, want)
PY
}
meta "$W" || fail "metadata of the trained weights"
meta "$T/exported.safetensors" || fail "metadata of the exported weights"

# --- predict and eval default to the recorded size ---
photo=$(find "$POLLEN_SRC/tests/data/flowers_sample" -name '*.jpg' | sort | head -1)
run "$P" predict --weights "$W" --json "$photo"; [ $rc = 0 ] || fail "predict: $out"; dflt=$out
run "$P" predict --weights "$W" --json --size 64 "$photo"; [ "$out" = "$dflt" ] || fail "predict without --size is not --size 64: $dflt / $out"
run "$P" predict --weights "$W" --json --size 224 "$photo"; [ "$out" != "$dflt" ] || fail "--size 224 scores the same as 64: $out"
run "$P" eval --weights "$W" --data "$T/data" --json; [ $rc = 0 ] || fail "eval: $out"; edflt=$out
grep -q "\"image_size\":64," <<<"$out" || fail "eval without --size does not evaluate at 64: $out"
run "$P" eval --weights "$W" --data "$T/data" --json --size 64; [ "$out" = "$edflt" ] || fail "eval without --size is not --size 64"
run "$P" eval --weights "$W" --data "$T/data" --json --size 128; grep -q "\"image_size\":128," <<<"$out" || fail "eval --size 128: $out"
# Flip TTA: the mean of each image's and its mirror's probabilities changes the loss, the same
# way every time.
run "$P" eval --weights "$W" --data "$T/data" --json --tta flip; [ $rc = 0 ] || fail "eval --tta flip: $out"; etta=$out
grep -q '"tta":"flip"' <<<"$etta" && grep -q '"tta":"none"' <<<"$edflt" || fail "eval --json does not name the TTA: $etta"
loss() { grep -o '"loss":[0-9.]*' <<<"$1"; }
[ "$(loss "$etta")" != "$(loss "$edflt")" ] || fail "flip TTA left the loss as it was: $(loss "$etta")"
run "$P" eval --weights "$W" --data "$T/data" --json --tta flip; [ "$out" = "$etta" ] || fail "flip TTA is not deterministic"
run "$P" eval --weights "$W" --data "$T/data" --tta sideways; [ $rc = 2 ] && grep -q "not flip or none" <<<"$out" || fail "--tta sideways: $out"
# Multi-scale TTA: the mean of the probabilities at each size. One size twice is that size;
# two sizes score each image by the mean of its two probabilities, so the loss is at most
# the mean of the two sizes' losses (-log is convex) and, for sizes that disagree, below it.
acc() { grep -o '"accuracy":[0-9.]*' <<<"$1" | cut -d: -f2; }
run "$P" eval --weights "$W" --data "$T/data" --json --size 64,64; [ $rc = 0 ] || fail "eval --size 64,64: $out"
[ "$(loss "$out")" = "$(loss "$edflt")" ] && [ "$(acc "$out")" = "$(acc "$edflt")" ] || fail "--size 64,64 is not --size 64: $out / $edflt"
run "$P" eval --weights "$W" --data "$T/data" --json --size 96; e96=$out
for tta in none flip; do
  run "$P" eval --weights "$W" --data "$T/data" --json --size 64 --tta $tta; a=$out
  run "$P" eval --weights "$W" --data "$T/data" --json --size 96 --tta $tta; b=$out
  run "$P" eval --weights "$W" --data "$T/data" --json --size 64,96 --tta $tta; [ $rc = 0 ] || fail "eval --size 64,96: $out"
  grep -q '"image_sizes":\[64,96\]' <<<"$out" || fail "eval --json does not list the sizes: $out"
  python3 -c 'import sys; a, b, m = (float(x.split(":")[1]) for x in sys.argv[1:]); sys.exit(not (m < (a + b) / 2 - 1e-6 and m not in (a, b)))' \
    "$(loss "$a")" "$(loss "$b")" "$(loss "$out")" || fail "--size 64,96 --tta $tta: loss $(loss "$out") not below the mean of $(loss "$a") and $(loss "$b")"
done
run "$P" eval --weights "$W" --data "$T/data" --size 64,96; grep -q "at 64+96 px" <<<"$out" || fail "eval names the sizes: $out"
for bad in 64, 64,x ,64 64,96,64,96,64,96,64,96,64 64,16; do
  run "$P" eval --weights "$W" --data "$T/data" --size "$bad"
  [ $rc = 2 ] && [ "$(grep -c '^pollen: --size' <<<"$out")" = 1 ] || fail "eval --size $bad: exit $rc: $out"
  run "$P" predict --weights "$W" --size "$bad" "$photo"
  [ $rc = 2 ] && [ "$(grep -c '^pollen: --size' <<<"$out")" = 1 ] || fail "predict --size $bad: exit $rc: $out"
done
# predict takes the same TTA: one size twice is that size; two sizes give each class the mean
# of its two probabilities; flip changes them.
top_all=(--top 5 --json)
run "$P" predict --weights "$W" "${top_all[@]}" --size 64,64 "$photo"; [ "$out" = "$("$P" predict --weights "$W" "${top_all[@]}" "$photo")" ] ||
  fail "predict --size 64,64 is not --size 64: $out"
p64=$("$P" predict --weights "$W" "${top_all[@]}" --size 64 "$photo") p96=$("$P" predict --weights "$W" "${top_all[@]}" --size 96 "$photo")
run "$P" predict --weights "$W" "${top_all[@]}" --size 64,96 "$photo"; [ $rc = 0 ] || fail "predict --size 64,96: $out"
python3 - "$p64" "$p96" "$out" <<'PY' || fail "predict --size 64,96 is not the mean of 64's and 96's probabilities: $out"
import json, sys
a, b, m = ({c["index"]: c["probability"] for c in json.loads(t)["top"]} for t in sys.argv[1:])
assert len(m) == 5 and all(abs(m[k] - (a[k] + b[k]) / 2) <= 2e-6 for k in m), (a, b, m)
PY
run "$P" predict --weights "$W" "${top_all[@]}" --tta flip "$photo"; [ $rc = 0 ] && [ "$out" != "$p64" ] || fail "predict --tta flip: $out"
run "$P" predict --weights "$W" --tta upside-down "$photo"; [ $rc = 2 ] && grep -q "not flip or none" <<<"$out" || fail "predict --tta upside-down: $out"

# --- PNG photos: scored (also under another name), a damaged one refused in one line ---
python3 - "$T/photo.png" <<'PY'
import struct, sys, zlib
w, h = 80, 60
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 3 % 256, y * 4 % 256, (x + y) % 256)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
run "$P" predict --weights "$W" --json --top 5 "$T/photo.png"; [ $rc = 0 ] || fail "predict on a PNG: exit $rc: $out"
python3 -c 'import json,sys; o=json.loads(sys.argv[1]); p=[c["probability"] for c in o["top"]]; assert len(p)==5 and abs(sum(p)-1)<1e-3, o' "$out" \
  || fail "PNG predictions: $out"
png=$out
cp "$T/photo.png" "$T/named.jpg"
run "$P" predict --weights "$W" --json --top 5 "$T/named.jpg"; [ "${out//named.jpg/photo.png}" = "$png" ] || fail "a PNG named .jpg: $out"
head -c 100 "$T/photo.png" > "$T/cut.png"
run "$P" predict --weights "$W" "$T/cut.png" "$photo"
[ $rc = 1 ] && [ "$(grep -c '^pollen: .*cut.png' <<<"$out")" = 1 ] && grep -q "not scored" <<<"$out" || fail "a truncated PNG: exit $rc: $out"
echo "ok: weights carry image_size, normalization and class names; predict/eval use them; PNG scored"
