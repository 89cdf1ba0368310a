#!/usr/bin/env bash
# test_untrusted_names.sh - names from disk are untrusted text. Class folders and files whose
# names hold a newline, an ANSI escape or bytes that are not UTF-8: every line pollen prints
# shows them escaped (no forged "pollen: ..." line, no ESC byte reaches the terminal), and
# manifest.json and the --json output of prepare, eval and predict stay valid UTF-8 JSON. A
# class folder whose name is not UTF-8 is refused in one line naming it escaped.
set -u
P=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:?set POLLEN_SRC to the source tree}
command -v python3 >/dev/null || { echo "SKIP: needs python3 to parse the JSON"; exit 77; }
T=$(mktemp -d /tmp/pollen-test-names-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
seen=0 # ok WHAT: says WHAT passed when no check failed since the last ok
ok() { [ "$fails" = "$seen" ] && echo "ok: $*"; seen=$fails; }
S="$SRC/tests/data/flowers_sample"
ESC=$'\e'
NL=$'\n'
# clean FILE WHAT: no ESC byte, and no line that a name could have forged.
clean() {
  if grep -q "$ESC" "$1"; then fail "$2 holds a raw ESC byte: $(cat -v "$1")"; fi
  if grep -q '^pollen: fake' "$1"; then fail "$2 has a forged line: $(cat -v "$1")"; fi
}
# json_ok FILE WHAT [PYTHON]: FILE is strict UTF-8 holding one JSON value per line (or one
# document); PYTHON, given the parsed values as v, must hold.
json_ok() {
  python3 - "$1" "${3:-True}" <<'PY' || fail "$2 is not valid UTF-8 JSON: $(cat -v "$1")"
import json, sys
text = open(sys.argv[1], "rb").read().decode("utf-8")  # strict: raises on bytes that are not UTF-8
try:
    v = [json.loads(text)]
except ValueError:
    v = [json.loads(l) for l in text.splitlines() if l.strip()]
assert eval(sys.argv[2]), v
PY
}

# Classes with a newline and an ANSI escape in their names; files in them that are not
# photos, named to forge a log line or colour the terminal, and a photo whose name is not UTF-8.
mkdir -p "$T/src"
cp -r "$S/daisy" "$S/roses" "$T/src/"
cp -r "$S/tulips" "$T/src/new${NL}line"
cp -r "$S/sunflowers" "$T/src/red${ESC}[31mclass"
printf 'not a photo' > "$T/src/daisy/x${NL}pollen: fake error.jpg"
printf 'not a photo' > "$T/src/roses/${ESC}[2J${ESC}[31mred.jpg"
printf 'not a photo' > "$T/src/roses/bad"$'\xff\xfe'"name.jpg"
one=$(ls "$S/daisy"/*.jpg | head -1)
cp "$one" "$T/src/daisy/caf"$'\xe9'".jpg"   # Latin-1, not UTF-8: a usable photo all the same

"$P" prepare --src "$T/src" --out "$T/d" --max-side 64 --json > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 0 ] || fail "prepare exited $rc: $(cat -v "$T/err")"
clean "$T/err" "prepare's stderr"
clean "$T/out" "prepare's stdout"
grep -qF 'x\x0apollen: fake error.jpg' "$T/err" || fail "the newline name is not shown escaped: $(cat -v "$T/err")"
grep -qF '\x1b[2J\x1b[31mred.jpg' "$T/err" || fail "the ANSI name is not shown escaped: $(cat -v "$T/err")"
grep -qF 'bad\xff\xfename.jpg' "$T/err" || fail "the non-UTF-8 name is not shown escaped: $(cat -v "$T/err")"
[ "$(grep -c 'skipping' "$T/err")" = 3 ] || fail "expected 3 skipped files, one line each: $(cat -v "$T/err")"
json_ok "$T/out" "prepare --json" 'v[0]["skipped_corrupt"] == 3 and v[0]["train"] + v[0]["val"] == 81'
json_ok "$T/d/manifest.json" "manifest.json" \
  'v[0]["classes"] == ["daisy", "new\nline", "red\x1b[31mclass", "roses"]'
ok "prepare shows untrusted names escaped; manifest.json is UTF-8 JSON"

# Training and eval on those classes: the table escapes, --json stays valid.
"$P" train --data "$T/d" --job "$T/job" --size 32 --batch 8 --width 0.35 --epochs 1 --max-steps 2 \
  --threads 2 > "$T/train.log" 2>&1 || fail "training failed: $(tail -3 "$T/train.log" | cat -v)"
W="$T/job/weights.safetensors"
"$P" eval --weights "$W" --data "$T/d" --size 32 --json > "$T/out" 2> "$T/err" || fail "eval --json: $(cat -v "$T/err")"
clean "$T/out" "eval --json"
json_ok "$T/out" "eval --json" \
  '[c["name"] for c in v[0]["classes"]] == ["daisy", "new\nline", "red\x1b[31mclass", "roses"] and v[0]["images"] == 8'
"$P" eval --weights "$W" --data "$T/d" --size 32 > "$T/out" 2> "$T/err" || fail "eval: $(cat -v "$T/err")"
clean "$T/out" "eval's table"
grep -qF 'new\x0aline' "$T/out" && grep -qF 'red\x1b[31mclass' "$T/out" || fail "eval's table does not escape: $(cat -v "$T/out")"
ok "eval escapes class names in its table and writes valid JSON"

# predict: a photo whose name is not UTF-8, and the class names stored in the weights.
"$P" predict --weights "$W" --size 32 --top 4 --json "$T/src/daisy/caf"$'\xe9'".jpg" > "$T/out" 2> "$T/err" ||
  fail "predict --json: $(cat -v "$T/err")"
clean "$T/out" "predict --json"
json_ok "$T/out" "predict --json" 'v[0]["image"].endswith("caf\\xe9.jpg") and len(v[0]["top"]) == 4'
"$P" predict --weights "$W" --size 32 --top 4 "$T/src/daisy/caf"$'\xe9'".jpg" "$T/src/daisy/x${NL}pollen: fake error.jpg" \
  > "$T/out" 2> "$T/err"
[ $? = 1 ] || fail "predict with a non-photo should exit 1"
clean "$T/out" "predict's stdout"
clean "$T/err" "predict's stderr"
grep -qF 'caf\xe9.jpg' "$T/out" && grep -qF 'red\x1b[31mclass' "$T/out" || fail "predict does not escape: $(cat -v "$T/out")"
[ "$(wc -l < "$T/err")" = 1 ] || fail "predict's error is not one line: $(cat -v "$T/err")"
ok "predict escapes names and writes valid JSON"

# A class folder whose name is not UTF-8 is refused, named in escaped form.
mkdir -p "$T/src2"
cp -r "$S/daisy" "$T/src2/"
cp -r "$S/roses" "$T/src2/ros"$'\xe9'"s"
"$P" prepare --src "$T/src2" --out "$T/d2" > "$T/out" 2> "$T/err"
rc=$?
[ $rc = 1 ] || fail "a non-UTF-8 class folder: exit $rc, expected 1"
[ "$(wc -l < "$T/err")" = 1 ] && grep -qF 'class folder '"$T"'/src2/ros\xe9s' "$T/err" && grep -q 'not valid UTF-8.*rename' "$T/err" ||
  fail "a non-UTF-8 class folder is not refused in one clear line: $(cat -v "$T/err")"
[ -e "$T/d2/manifest.json" ] && fail "a refused preparation wrote a manifest"
ok "$(cat "$T/err")"

[ "$fails" = 0 ] && echo "all untrusted-name checks passed"
exit $((fails > 0))
