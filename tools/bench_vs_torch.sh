#!/bin/bash
# bench_vs_torch.sh - pollen against PyTorch on this CPU, for BENCHMARKS.md "Engine versus
# PyTorch". MobileNetV3-Small (width 1.0, 5 classes), batch 32, 2 threads:
#   training (forward + backward + SGD step) at 224 and 128, inference at 224;
#   PyTorch default (NCHW), channels_last, and channels_last with jemalloc (LD_PRELOAD),
#   and `pollen bench ... --json` when the binary has it (skipped if it fails).
# Each variant runs REPEATS times, interleaved so machine noise hits all alike; the table
# shows the median over runs of each run's median step, the best run (on a shared machine
# other load only ever slows a run down, so the best is the least disturbed), and ratios of
# medians to PyTorch default.
#
#   tools/bench_vs_torch.sh                # POLLEN=path/to/pollen, default build/pollen
#   REPEATS=5 TORCH_ONLY=1 tools/bench_vs_torch.sh   (also TRAIN_STEPS, INFER_STEPS, THREADS, BATCH)
#   ISA=avx2 tools/bench_vs_torch.sh      # both sides limited to AVX2: pollen --kernels avx2,
#                                          # PyTorch ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
#   BF16=1 tools/bench_vs_torch.sh        # also pollen --precision bf16 and PyTorch's bfloat16
#                                          # autocast (channels_last + jemalloc + --amp)
# The output starts with lscpu's model and vector flags, and ends with pollen's ratio to the
# fastest PyTorch variant of each configuration.
# Raw results (one JSON per run) go to $BENCH_OUT (default /tmp/bench_vs_torch.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-2}
BATCH=${BATCH:-32}
POLLEN=${POLLEN:-build/pollen}
OUTF=${BENCH_OUT:-/tmp/bench_vs_torch.jsonl}
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
: > "$OUTF"
ISA=${ISA:-}
torch_env=()
pollen_kernels=()
if [ -n "$ISA" ]; then
  [ "$ISA" = avx2 ] || { echo "bench_vs_torch: ISA=$ISA: only avx2 is supported" >&2; exit 1; }
  torch_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2)
  pollen_kernels=(--kernels avx2)
fi
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'); flags: $(grep -o 'avx[^ ]*\|fma\|amx[^ ]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "limits: ${ISA:-none} (PyTorch env: ${torch_env[*]:-none}; pollen: ${pollen_kernels[*]:-best path})"

if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
  echo "bench_vs_torch: /usr/bin/python3 lacks torch/torchvision (apt-get install python3-torchvision)" >&2
  exit 1
fi
have_jemalloc=1
[ -f "$JEMALLOC" ] || { have_jemalloc=0; echo "note: $JEMALLOC missing (apt-get install libjemalloc2); skipping that variant" >&2; }

# Tag each JSON line with config + variant so the summary can group them.
record() { # config variant json
  $PY -c 'import json,sys; d=json.loads(sys.argv[3]); d["config"]=sys.argv[1]; d["variant"]=sys.argv[2]; print(json.dumps(d))' "$1" "$2" "$3" >> "$OUTF"
}

pollen_ok=0
if [ -z "${TORCH_ONLY:-}" ] && [ -x "$POLLEN" ]; then pollen_ok=1; fi
[ "$pollen_ok" = 1 ] || echo "note: pollen not run (POLLEN=$POLLEN not executable or TORCH_ONLY set)" >&2

run_pollen() { # config mode size [variant precision]
  local out variant=${4:-pollen}
  local extra=(--precision "${5:-fp32}")
  [ "$2" = infer ] && extra+=(--mode infer)
  if out=$("$POLLEN" bench --model mnv3-small --size "$3" --batch "$BATCH" --threads "$THREADS" "${extra[@]}" "${pollen_kernels[@]}" --json 2>/dev/null); then
    local line
    line=$(printf '%s\n' "$out" | grep '^{' | tail -1)
    if [ -n "$line" ] && $PY -c 'import json,sys; json.loads(sys.argv[1])' "$line" 2>/dev/null; then
      record "$1" "$variant" "$line"
      return
    fi
  fi
  echo "note: 'pollen bench' failed or printed no JSON for $1; pollen skipped there" >&2
}

for rep in $(seq 1 "$REPEATS"); do
  for cfg in train-224 train-128 infer-224; do
    mode=${cfg%-*}
    size=${cfg#*-}
    if [ "$mode" = train ]; then steps=${TRAIN_STEPS:-6}; warm=2; else steps=${INFER_STEPS:-10}; warm=3; fi
    common=(tools/bench_torch.py --model mnv3-small --size "$size" --batch "$BATCH" --threads "$THREADS" --mode "$mode" --steps "$steps" --warmup "$warm")
    echo "run $rep/$REPEATS: $cfg" >&2
    record "$cfg" "torch" "$(env "${torch_env[@]}" $PY "${common[@]}")"
    record "$cfg" "torch-cl" "$(env "${torch_env[@]}" $PY "${common[@]}" --channels-last)"
    if [ "$have_jemalloc" = 1 ]; then
      record "$cfg" "torch-cl-jemalloc" "$(env "${torch_env[@]}" LD_PRELOAD=$JEMALLOC $PY "${common[@]}" --channels-last)"
    fi
    if [ "$pollen_ok" = 1 ]; then run_pollen "$cfg" "$mode" "$size"; fi
    if [ -n "${BF16:-}" ]; then
      record "$cfg" "torch-cl-jemalloc-amp" "$(env "${torch_env[@]}" LD_PRELOAD=$JEMALLOC $PY "${common[@]}" --channels-last --amp)"
      if [ "$pollen_ok" = 1 ]; then run_pollen "$cfg" "$mode" "$size" pollen-bf16 bf16; fi
    fi
  done
done

$PY - "$OUTF" "$REPEATS" "$THREADS" "$BATCH" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = {"torch": "PyTorch (NCHW)", "torch-cl": "PyTorch channels_last",
         "torch-cl-jemalloc": "PyTorch channels_last + jemalloc", "pollen": "pollen",
         "torch-cl-jemalloc-amp": "PyTorch channels_last + jemalloc, bf16 autocast",
         "pollen-bf16": "pollen --precision bf16"}
torch_v = next((r["torch_version"] for r in rows if "torch_version" in r), "?")
print(f"MobileNetV3-Small 1.0, 5 classes, batch {sys.argv[4]}, {sys.argv[3]} threads, "
      f"PyTorch {torch_v}; median of {sys.argv[2]} runs (each the median of its timed steps)\n")
print("| config | engine | images/s (median) | best run | worst run | peak RSS MiB | vs PyTorch NCHW (median / best) |")
print("|---|---|---:|---:|---:|---:|---:|")
for cfg in ["train-224", "train-128", "infer-224"]:
    base = None
    for v in ["torch", "torch-cl", "torch-cl-jemalloc", "pollen", "torch-cl-jemalloc-amp", "pollen-bf16"]:
        rs = [r for r in rows if r["config"] == cfg and r["variant"] == v]
        ips = [r.get("images_per_s") or r.get("img_per_s") or r.get("images_per_sec") for r in rs]
        ips = [x for x in ips if x]
        if not ips:
            continue
        med, best = statistics.median(ips), max(ips)
        rss = [r.get("peak_rss_mib") for r in rs if r.get("peak_rss_mib")]
        if v == "torch":
            base = (med, best)
        ratio = f"{med / base[0]:.2f}x / {best / base[1]:.2f}x" if base else "-"
        rss_s = f"{statistics.median(rss):.0f}" if rss else "-"
        print(f"| {cfg} | {names[v]} | {med:.1f} | {best:.1f} | {min(ips):.1f} | {rss_s} | {ratio} |")
print()
def med_of(cfg, v, key):
    vals = [r.get(key) for r in rows if r["config"] == cfg and r["variant"] == v and r.get(key)]
    return statistics.median(vals) if vals else None
for cfg in ["train-224", "train-128", "infer-224"]:
    p = med_of(cfg, "pollen", "images_per_s")
    t = {v: med_of(cfg, v, "images_per_s") for v in ["torch", "torch-cl", "torch-cl-jemalloc"]}
    t = {v: x for v, x in t.items() if x}
    if not p or not t:
        continue
    v = max(t, key=t.get)
    rp, rt = med_of(cfg, "pollen", "peak_rss_mib"), med_of(cfg, v, "peak_rss_mib")
    mem = f"; peak RSS {rp / rt:.2f}x" if rp and rt else ""
    print(f"{cfg}: pollen / fastest PyTorch ({names[v]}) = {p / t[v]:.2f}x (medians){mem}")
    pb, ta = med_of(cfg, "pollen-bf16", "images_per_s"), med_of(cfg, "torch-cl-jemalloc-amp", "images_per_s")
    if pb:
        print(f"{cfg}: pollen bf16 / fastest PyTorch float32 = {pb / t[v]:.2f}x; pollen bf16 / pollen = {pb / p:.2f}x"
              + (f"; pollen bf16 / PyTorch bf16 autocast = {pb / ta:.2f}x" if ta else ""))
PY
