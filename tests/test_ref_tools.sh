#!/bin/bash
# test_ref_tools.sh - the PyTorch reference tools: make_reference.py writes files that load
# back bit-identical (it verifies itself), optimizer runs lower the loss, load_check.py reproduces
# the reference logits from a state_dict-only file and rejects a broken one, and the committed
# tests/ref/ files are exactly what tools/make_references.sh produces.
set -euo pipefail
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks torch/torchvision (apt-get install python3-torchvision)"
  exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$SRC"

$PY tools/make_reference.py --model mnv3-small --width 0.25 --size 32 --batch 2 --seed 5 \
  --steps 4 --opt rmsprop-tf --out "$T/ref.safetensors" >/dev/null
$PY - "$T" <<'PY'
import sys, torch, torchvision
sys.path.insert(0, "tools")
import st_io
d = sys.argv[1]
t, m = st_io.load(f"{d}/ref.safetensors")
sd = torchvision.models.mobilenet_v3_small(width_mult=0.25, num_classes=5).state_dict()
for k, v in sd.items():
    assert k in t and t[k].shape == v.shape and t[k].dtype == v.dtype, k
    if not k.endswith("num_batches_tracked"):
        assert f"after.{k}" in t or f"grad.{k}" in t, k
assert t["loss_seq"].shape == (4,) and t["loss_seq"][0] == t["loss"][0], "loss_seq[0] is loss"
assert t["loss_seq"][-1] < t["loss_seq"][0], "4 RMSprop steps must lower the loss"
assert m["opt"] == "rmsprop-tf" and m["eps"] == "1e-07" and m["classes"] == "5"
st_io.save(f"{d}/export.safetensors", {k: t[k] for k in sd}, {"model": "mnv3-small", "width": "0.25"})
broken = {k: t[k] for k in sd if k != "features.1.block.0.0.weight"}
st_io.save(f"{d}/broken.safetensors", broken, {"model": "mnv3-small", "width": "0.25"})
PY

$PY tools/load_check.py --weights "$T/export.safetensors" --input "$T/ref.safetensors" --train \
  > "$T/logits.json"
$PY - "$T" <<'PY'
import json, sys, torch
sys.path.insert(0, "tools")
import st_io
d = sys.argv[1]
got = torch.tensor(json.load(open(f"{d}/logits.json"))["logits"])
want = st_io.load(f"{d}/ref.safetensors")[0]["logits"]
err = ((got - want).abs().max() / want.abs().max()).item()
assert err < 1e-6, f"load_check logits differ from the reference by {err}"
PY

if $PY tools/load_check.py --weights "$T/broken.safetensors" --size 32 2> "$T/err"; then
  echo "FAIL: load_check accepted an export missing a tensor"; exit 1
fi
grep -q "features.1.block.0.0.weight" "$T/err" || { echo "FAIL: message does not name the tensor"; cat "$T/err"; exit 1; }
[ "$(wc -l < "$T/err")" -eq 1 ] || { echo "FAIL: error is not one line"; exit 1; }

# The committed references are reproducible from the script (same torch version only): the
# same tensors, names and metadata, and values equal to float rounding. Not bit for bit: torch
# picks its kernels by the CPU, so another CPU rounds differently (a Zen 5 EPYC: 1e-6 of each
# tensor's largest value).
REF=tests/ref/mnv3-small-w0.25-s64-b4.safetensors
if [ -f "$REF" ]; then
  ver=$($PY -c 'import torch; print(torch.__version__)')
  if grep -aq "\"torch_version\":\"$ver\"" "$REF"; then
    cmd=$(grep -- "--out \$OUT/$(basename "$REF")" tools/make_references.sh | sed "s#\$PY #$PY #; s#\$MR #tools/make_reference.py #; s#\$OUT/#$T/#")
    eval "$cmd" >/dev/null
    $PY - "$REF" "$T/$(basename "$REF")" <<'PY' || { echo "FAIL: $REF differs from tools/make_references.sh output"; exit 1; }
import sys
sys.path.insert(0, "tools")
import st_io
(a, ma), (b, mb) = st_io.load(sys.argv[1]), st_io.load(sys.argv[2])
assert ma == mb, f"metadata differ: {ma} vs {mb}"
assert sorted(a) == sorted(b), f"tensor names differ: {sorted(set(a) ^ set(b))}"
for k in a:
    x, y = a[k].double(), b[k].double()
    assert x.shape == y.shape and a[k].dtype == b[k].dtype, f"{k}: shape or dtype differ"
    tol = 1e-5 * x.abs().max().item() + 1e-7
    err = (x - y).abs().max().item() if x.numel() else 0.0
    assert err <= tol, f"{k}: differs by {err:.3g} (tolerance {tol:.3g})"
PY
  else
    echo "note: torch $ver differs from the one that made $REF; reproducibility not checked"
  fi
fi
echo "reference tools: all checks passed"
