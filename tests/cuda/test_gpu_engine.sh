#!/usr/bin/env bash
# test_gpu_engine.sh - the engine on a GPU, checked against the CPU engine and PyTorch:
#   1. pollen refcheck --device cuda on every committed PyTorch reference (logits, loss, every
#      gradient, BN statistics, 10-step optimizer loss sequences): the CPU's tolerances;
#   2. the same short training run on the GPU and on the CPU: the same per-step loss curve;
#   3. a job stopped on the GPU resumes on the CPU, and one stopped on the CPU resumes on the
#      GPU, each continuing the all-CPU run's curve (checkpoints hold the same content);
#   4. bf16 GEMMs train too (loss falls), and --device cuda says why when it cannot run.
# Env: POLLEN (the binary), POLLEN_SRC. Skips (77) without a GPU or in a build without CUDA.
set -euo pipefail
P=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-.}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

if ! why=$("$P" bench --device cuda --mode infer --batch 1 --size 32 --steps 1 --warmup 0 2>&1 >/dev/null); then
  echo "SKIP: no GPU for the engine: $why"
  exit 77
fi

echo "== 1. PyTorch references on the GPU"
rc=0
"$P" refcheck --device cuda "$SRC"/tests/ref/*.safetensors >"$T/ref.log" 2>&1 || rc=$?
grep -E "^refcheck|FAIL" "$T/ref.log" || true
grep -q "^refcheck on GPU" "$T/ref.log" || fail "refcheck did not run on the GPU"
grep -q ", 0 over tolerance" "$T/ref.log" && [ $rc = 0 ] \
  || fail "GPU engine differs from PyTorch beyond the CPU's tolerances (refcheck exit $rc)"

echo "== 2. one training run on GPU and CPU"
"$P" prepare --src "$SRC/tests/data/flowers_sample" --out "$T/data" --max-side 96 >/dev/null
base=(--data "$T/data" --size 64 --batch 16 --width 0.5 --epochs 3 --opt adam --lr 0.002
      --log-every 1)
"$P" train "${base[@]}" --job "$T/cpu" --device cpu >"$T/cpu.log" 2>&1 || { cat "$T/cpu.log"; fail "CPU run failed"; }
"$P" train "${base[@]}" --job "$T/gpu" --device cuda >"$T/gpu.log" 2>&1 || { cat "$T/gpu.log"; fail "GPU run failed"; }
grep -q "training on GPU" "$T/gpu.log" || fail "the GPU run did not say it trained on the GPU"

# compare A B FROM TOL: per-step losses of jobs A and B from step FROM on agree within TOL
# (relative), and the curve falls.
compare() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" "$4" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r.get("loss") is not None}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
start, tol = int(sys.argv[3]), float(sys.argv[4])
steps = sorted(s for s in a if s in b and s >= start)
assert len(steps) >= 5, f"too few common steps: {steps}"
worst = max(abs(a[s] - b[s]) / abs(b[s]) for s in steps)
print(f"steps {steps[0]}-{steps[-1]}: worst relative loss difference {worst:.2e} (tol {tol:g})")
for s in steps[:3] + steps[-2:]:
    print(f"  step {s}: {a[s]:.6f} vs {b[s]:.6f}")
sys.exit(0 if worst <= tol else 1)
PY
}
compare "$T/gpu" "$T/cpu" 1 2e-2 || fail "GPU loss curve differs from the CPU's"
python3 - "$T/gpu/metrics.jsonl" <<'PY' || fail "GPU validation accuracy missing"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
val = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
assert len(val) == 3, val
print("GPU validation accuracy per epoch:", val)
PY

# Evaluation and prediction on the GPU give the CPU's answers.
"$P" eval --job "$T/gpu" --device cuda --json >"$T/eval_gpu.json" || fail "eval --device cuda failed"
"$P" eval --job "$T/gpu" --device cpu --json >"$T/eval_cpu.json" || fail "eval --device cpu failed"
python3 - "$T/eval_gpu.json" "$T/eval_cpu.json" <<'PY' || fail "GPU evaluation differs from the CPU's"
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
print(f"eval: GPU accuracy {g['accuracy']:.4f} loss {g['loss']:.6f}; CPU {c['accuracy']:.4f} {c['loss']:.6f}")
sys.exit(0 if g["images"] == c["images"] and abs(g["loss"] - c["loss"]) <= 1e-4 * abs(c["loss"]) + 1e-6 else 1)
PY
photo=$(ls "$SRC"/tests/data/flowers_sample/daisy/*.jpg | head -n 1)
top_gpu=$("$P" predict --weights "$T/gpu/weights.safetensors" --size 64 --top 5 --json --device cuda "$photo") || fail "predict --device cuda failed"
top_cpu=$("$P" predict --weights "$T/gpu/weights.safetensors" --size 64 --top 5 --json --device cpu "$photo") || fail "predict --device cpu failed"
python3 - "$top_gpu" "$top_cpu" <<'PY' || fail "predict --device cuda gave other probabilities than the CPU"
import json, sys
g, c = ({t["class"]: t["probability"] for t in json.loads(a)["top"]} for a in sys.argv[1:3])
worst = max(abs(g[k] - c[k]) for k in c)
print(f"predict: {len(c)} class probabilities, GPU and CPU differ by at most {worst:.2e}")
sys.exit(0 if g.keys() == c.keys() and worst <= 1e-4 else 1)
PY

echo "== 3. stop on one device, resume on the other"
"$P" train "${base[@]}" --job "$T/g2c" --device cuda --max-steps 7 >"$T/g2c.log" 2>&1 || { cat "$T/g2c.log"; fail "GPU half failed"; }
"$P" train "${base[@]}" --job "$T/g2c" --device cpu >>"$T/g2c.log" 2>&1 || { cat "$T/g2c.log"; fail "CPU resume failed"; }
grep -q "resuming from" "$T/g2c.log" || fail "the CPU run did not resume the GPU's checkpoint"
compare "$T/g2c" "$T/cpu" 8 2e-2 || fail "after GPU -> CPU the curve left the CPU run's"
"$P" train "${base[@]}" --job "$T/c2g" --device cpu --max-steps 7 >"$T/c2g.log" 2>&1 || { cat "$T/c2g.log"; fail "CPU half failed"; }
"$P" train "${base[@]}" --job "$T/c2g" --device cuda >>"$T/c2g.log" 2>&1 || { cat "$T/c2g.log"; fail "GPU resume failed"; }
grep -q "resuming from" "$T/c2g.log" || fail "the GPU run did not resume the CPU's checkpoint"
compare "$T/c2g" "$T/cpu" 8 2e-2 || fail "after CPU -> GPU the curve left the CPU run's"

echo "== 4. bf16 GEMMs train like fp32 (overfitting the sample)"
fit=(--data "$T/data" --size 64 --batch 16 --width 0.5 --epochs 6 --no-augment --opt adam
     --lr 0.003 --dropout 0 --log-every 1 --device cuda)
"$P" train "${fit[@]}" --job "$T/fp32" >"$T/fp32.log" 2>&1 || { cat "$T/fp32.log"; fail "fp32 fit failed"; }
"$P" train "${fit[@]}" --job "$T/bf16" --precision bf16 >"$T/bf16.log" 2>&1 || { cat "$T/bf16.log"; fail "bf16 fit failed"; }
python3 - "$T/fp32/metrics.jsonl" "$T/bf16/metrics.jsonl" <<'PY' || fail "bf16 GEMMs did not train like fp32"
import json, sys
def losses(path):
    return [r["loss"] for r in map(json.loads, open(path)) if r.get("loss") is not None]
f, b = losses(sys.argv[1]), losses(sys.argv[2])
print(f"fp32: loss {f[0]:.4f} -> {f[-1]:.4f}; bf16: {b[0]:.4f} -> {b[-1]:.4f} ({len(b)} steps)")
ok = f[-1] < 0.8 * f[0] and b[-1] < 0.8 * b[0] and abs(b[-1] - f[-1]) <= 0.15 * f[-1]
sys.exit(0 if ok else 1)
PY
set +e
out=$(CUDA_VISIBLE_DEVICES= "$P" train "${base[@]}" --job "$T/none" --device cuda 2>&1)
rc=$?
set -e
[ "$rc" -ne 0 ] && echo "$out" | grep -q "no CUDA device visible" || fail "--device cuda without a visible GPU: exit $rc, $out"
echo "ok: --device cuda without a GPU: $(echo "$out" | tail -n 1)"
echo "PASS: GPU engine"
