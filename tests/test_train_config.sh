#!/usr/bin/env bash
# test_train_config.sh - `pollen train --config FILE`: a job's config.json defines a new job,
# and flags on the command line (before or after --config) override its values; a missing or
# broken file is one line. Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
P=${POLLEN:?set POLLEN to the pollen binary}
T=$(mktemp -d /tmp/pollen-train-config-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { out=$("$@" 2>&1); rc=$?; }

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 >/dev/null || fail "prepare"
run timeout -k 5 300 "$P" train --data "$T/data" --job "$T/a" --size 64 --batch 16 --width 0.5 --epochs 1 \
  --opt adam --lr 0.002 --eps 0.001 --threads 2 --no-augment
[ $rc = 0 ] || fail "job a: $out"
# No --data: the file's data folder. --epochs after --config and --lr before it both override.
run timeout -k 5 300 "$P" train --lr 0.004 --config "$T/a/config.json" --job "$T/b" --epochs 2 --threads 2
[ $rc = 0 ] || fail "job b from a's config: exit $rc: $out"
python3 - "$T/a/config.json" "$T/b/config.json" <<'PY' || fail "b's config is not a's with the overrides"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert b["epochs"] == 2 and b["lr"] == 0.004, b
assert b["eps"] == 0.001 and b["opt"] == "adam" and b["size"] == 64 and b["augment"] == 0, b
diff = {k for k in a if a[k] != b.get(k)}
assert diff == {"epochs", "lr"}, diff
PY
grep -q '"val_acc"' "$T/b/metrics.jsonl" || fail "job b trained no epoch"
# The augmentations (and stochastic depth) added after config version 1 froze: absent at their defaults (so older
# jobs keep their config hash), recorded when set, and read back through --config.
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit("auto_augment" in c or "random_erase" in c or "crop_scale" in c or "drop_path" in c)' \
  "$T/a/config.json" || fail "a job without the new augmentations records them"
run timeout -k 5 300 "$P" train --data "$T/data" --job "$T/aug" --size 64 --batch 16 --width 0.5 --epochs 1 \
  --threads 2 --auto-augment ta_wide --random-erase 0.25 --crop-scale 0.3 --drop-path 0.2
[ $rc = 0 ] || fail "train with --auto-augment ta_wide --random-erase 0.25 --crop-scale 0.3 --drop-path 0.2: $out"
grep -q "stochastic depth: [0-9]* residual branches .*--drop-path 0.2" <<<"$out" || fail "the log does not say stochastic depth is on: $out"
run timeout -k 5 300 "$P" train --config "$T/aug/config.json" --job "$T/aug2" --epochs 1 --threads 2
python3 - "$T/aug/config.json" "$T/aug2/config.json" <<'PY' || fail "the augmentations are not recorded or not read back"
import json, sys
for p in sys.argv[1:]:
    c = json.load(open(p))
    assert c["auto_augment"] == "ta_wide" and c["random_erase"] == 0.25 and c["crop_scale"] == 0.3, c
    assert c["drop_path"] == 0.2, c
PY
run timeout -k 5 300 "$P" train --data "$T/data" --job "$T/aug" --size 64 --batch 16 --width 0.5 --epochs 1 --threads 2 --auto-augment ta_wide --random-erase 0.5 --crop-scale 0.3
[ $rc != 0 ] && grep -q "random_erase" <<<"$out" || fail "a resume with another --random-erase was not refused: $out"
run "$P" train --data "$T/data" --job "$T/cs" --crop-scale 0
[ $rc = 2 ] && [ "$(grep -c '^pollen: --crop-scale' <<<"$out")" = 1 ] || fail "--crop-scale 0 not refused in one line: exit $rc: $out"
run "$P" train --data "$T/data" --job "$T/dp" --drop-path 1
[ $rc = 2 ] && [ "$(grep -c '^pollen: --drop-path' <<<"$out")" = 1 ] || fail "--drop-path 1 not refused in one line: exit $rc: $out"
# Errors: one line each.
run "$P" train --config "$T/none.json" --job "$T/c"
[ $rc = 2 ] && [ "$(grep -c '^pollen: --config .*none.json: no such file' <<<"$out")" = 1 ] || fail "missing file: exit $rc: $out"
echo '{"version":1,' > "$T/bad.json"
run "$P" train --config "$T/bad.json" --job "$T/c"
[ $rc = 1 ] && [ "$(grep -c '^pollen: .*bad.json is not valid JSON' <<<"$out")" = 1 ] || fail "broken file: exit $rc: $out"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["size"]=7; json.dump(c, open(sys.argv[2], "w"))' \
  "$T/a/config.json" "$T/small.json" || fail "test setup"
run "$P" train --config "$T/small.json" --job "$T/c"
[ $rc = 2 ] && grep -q "out of range" <<<"$out" || fail "out-of-range value: exit $rc: $out"
[ ! -e "$T/c" ] || fail "a refused --config left $T/c behind"
echo "ok: train --config FILE, flags override it"
