#!/usr/bin/env bash
# test_demo.sh - the README's first command, as a new user runs it (its pollen train and
# pollen predict, taken from the README itself): the validation accuracy ends clearly above
# chance (5 classes: 0.2), thanks to precise BN (--precise-bn auto, the default), and predict
# names a class; the best validation's weights are kept and `eval/export --best` take them. Then the same training with --precise-bn 0: every exported tensor but the BN
# running statistics is byte-identical (precise BN changes what evaluation sees, never the
# training), and its accuracy is the old near-chance one. Env: POLLEN, POLLEN_SRC (ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
tmp=$(mktemp -d /tmp/pollen-test-demo-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# The README's first command, from "./build/pollen train" on; jobs/sample becomes a temp folder.
line=$(grep -m1 -E '^bash deploy/install-deps.sh && .*pollen train' "$SRC/README.md") || fail "no first command in README.md"
train=$(grep -oE '\./build/pollen train [^&]*' <<<"$line" | sed 's/ *$//')
predict=$(grep -oE '\./build/pollen predict [^&]*' <<<"$line" | sed 's/ *$//')
[ -n "$train" ] && [ -n "$predict" ] || fail "the README's first command should train, then predict: $line"
run_readme() { # COMMAND: the README's words, with our binary and job folder
  local cmd=${1//.\/build\/pollen/$POLLEN}
  cmd=${cmd//jobs\/sample/$tmp/sample}
  (cd "$SRC" && eval "$cmd")
}

run_readme "$train" >"$tmp/train.log" 2>&1 || { tail -20 "$tmp/train.log"; fail "the README's train command failed"; }
final=$(sed -n 's/.*finished: .* validation accuracy \([0-9.]*\).*/\1/p' "$tmp/train.log")
[ -n "$final" ] || fail "no final validation accuracy in the log"
awk -v a="$final" 'BEGIN { exit !(a >= 0.4) }' || fail "demo's final validation accuracy $final: not clearly above chance (0.2)"
grep -q "precise BN" "$tmp/train.log" || fail "the log does not say evaluation uses precise BN"
run_readme "$predict" >"$tmp/predict.txt" 2>&1 || { cat "$tmp/predict.txt"; fail "the README's predict command failed"; }
grep -Eq '(daisy|dandelion|roses|sunflowers|tulips) +[0-9.]+%' "$tmp/predict.txt" || fail "predict printed no class: $(cat "$tmp/predict.txt")"
echo "ok: README demo: final validation accuracy $final (chance 0.2); predict: $(grep -m1 '%' "$tmp/predict.txt" | tr -s ' ')"

# The best validation's weights, kept beside the final ones: they evaluate to the best recorded.
best=$(sed -n 's/.*finished: .* (best \([0-9.]*\)).*/\1/p' "$tmp/train.log")
[ -s "$tmp/sample/weights-best.safetensors" ] || fail "no weights-best.safetensors"
got=$("$POLLEN" eval --job "$tmp/sample" --best --json | python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["accuracy"])')
[ "$got" = "$best" ] || fail "eval --best gives $got, the job's best validation was $best"
"$POLLEN" export --job "$tmp/sample" --best --out "$tmp/best.safetensors" >/dev/null || fail "export --best"
cmp -s "$tmp/best.safetensors" "$tmp/sample/weights-best.safetensors" || fail "export --best is not the best weights"
"$POLLEN" eval --weights "$tmp/best.safetensors" --best >/dev/null 2>&1; [ $? = 2 ] || fail "eval --best without --job should be a usage error"
echo "ok: best weights kept (validation $best): eval --best agrees, export --best copies them"

# Without precise BN: the same training, BN statistics as the run left them.
args=${train#./build/pollen train }
args=${args//jobs\/sample/$tmp/plain}
(cd "$SRC" && eval "\"$POLLEN\" train $args --precise-bn 0") >"$tmp/plain.log" 2>&1 || fail "--precise-bn 0 run failed"
plain=$(sed -n 's/.*finished: .* validation accuracy \([0-9.]*\).*/\1/p' "$tmp/plain.log")
python3 - "$tmp/sample/weights.safetensors" "$tmp/plain/weights.safetensors" <<'PY' || fail "exports differ beyond the BN statistics"
import json, struct, sys
def tensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    head.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in head.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == b.keys(), "tensor names differ"
stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
assert stats and all(a[k] != b[k] for k in stats), "precise BN left some BN statistics as trained"
same = [k for k in a if k not in stats and not k.endswith("num_batches_tracked")]
diff = [k for k in same if a[k] != b[k]]
assert not diff, "tensors other than BN statistics differ: %s" % diff[:5]
print("ok: %d tensors byte-identical with and without precise BN; its %d BN statistics differ" % (len(same), len(stats)))
PY
echo "ok: with --precise-bn 0 the same weights, and validation accuracy $plain"
