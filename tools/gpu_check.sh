#!/usr/bin/env bash
# gpu_check.sh - the one script to run on a GPU machine. It needs no compiler or packages
# there: tools/gpu_bundle.sh packs a -DPOLLEN_CUDA=ON build made on a Debian machine with the
# runtime packages pollen links, and tools/gpu_env.sh unpacks it (CUDA, cuBLAS and NCCL are
# the GPU machine's own). Checks: every CUDA op against its CPU op, NCCL gradient sync under
# mpirun, the whole model's logits, loss and gradients on the GPU against the PyTorch
# references, a short training run on GPU and on CPU with the same loss curve, a checkpoint
# taken on the GPU resumed on the CPU, compute-sanitizer memcheck (tools/gpu_sanitize.sh);
# then pollen's and torch.compile'd PyTorch's training
# throughput on the same GPU in the same run (MobileNetV3-Small, 224, batch 128 and 256).
#   here:  cmake -S . -B build-cuda -DPOLLEN_CUDA=ON && cmake --build build-cuda -j
#          bash tools/gpu_bundle.sh build-cuda          # .gpu/bundle.tar.xz
#   there: bash tools/gpu_check.sh                      # logs and summary in $OUT or out/gpu
# Env: OUT (where logs go), SKIP_TORCH=1 (no PyTorch baseline), QUICK=1 (correctness only).
# Exit status: 0 when every check that could run passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${OUT:-out/gpu}
mkdir -p "$LOGS"
summary=()
failed=0
note() { summary+=("$1"); echo "== $1"; }

# step NAME TIMEOUT CMD...: runs CMD with its output in $LOGS/NAME.log; 77 counts as a skip.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$LOGS/$name.log"
  case $rc in
    0) note "PASS $name ($((SECONDS - t0)) s)" ;;
    77) note "SKIP $name: $(grep -m1 '^SKIP' "$LOGS/$name.log")" ;;
    124|137) note "FAIL $name: timed out after ${limit} s"; failed=1 ;;
    *) note "FAIL $name: exit $rc (log: $LOGS/$name.log)"; failed=1 ;;
  esac
  return $rc
}

echo "== machine"
{ nvidia-smi -L || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  grep PRETTY_NAME /etc/os-release; ldd --version | head -n 1; nproc; } 2>&1 | tee "$LOGS/machine.log"
# shellcheck source=tools/gpu_env.sh
source tools/gpu_env.sh || { note "FAIL bundle: .gpu/bundle.tar.xz missing (tools/gpu_bundle.sh)"; exit 1; }
ldd "$(command -v pollen)" | grep -E "not found|cudart|cublas|nccl" | tee -a "$LOGS/machine.log"

step test_device 60 test_device
step test_cuda_ops 300 test_cuda_ops
step test_nccl 240 env NCCL_CHECK="$(command -v nccl_check)" bash tests/cuda/test_nccl.sh
if pollen train --help 2>&1 | grep -q -- --device; then
  step gpu_engine 400 env POLLEN="$(command -v pollen)" POLLEN_SRC=. bash tests/cuda/test_gpu_engine.sh
  step sanitize 300 bash tools/gpu_sanitize.sh
else
  note "SKIP gpu_engine: this pollen has no --device yet"
fi

# pollen's training throughput (images/s, median of the timed steps; each step includes the
# batch's copy from page-locked host memory).
if [ "${QUICK:-0}" != 1 ]; then
  for b in 128 256; do
    for p in fp32 bf16; do
      profile=()
      [ "$b$p" = 256fp32 ] && profile=(--profile) # the per-layer table goes to the log (stderr)
      if step "pollen_mnv3s_b${b}_$p" 300 pollen bench --device cuda --precision "$p" --model mnv3-small \
          --size 224 --batch "$b" --mode train --steps 20 --warmup 5 --json "${profile[@]}"; then
        note "pollen mnv3-small train b$b $p: $(grep '^{' "$LOGS/pollen_mnv3s_b${b}_$p.log" | tail -n 1)"
      fi
    done
  done
fi

# PyTorch GPU baseline (images/s, median of the timed steps).
if [ "${SKIP_TORCH:-0}" = 1 ] || [ "${QUICK:-0}" = 1 ]; then
  note "SKIP torch baseline: SKIP_TORCH=1"
elif ! python3 -c 'import torch, torchvision, sys; sys.exit(0 if torch.cuda.is_available() else 3)' \
    >"$LOGS/torch_probe.log" 2>&1; then
  note "SKIP torch baseline: $(tail -n 1 "$LOGS/torch_probe.log" | cut -c1-120) (python3 with a CUDA torch + torchvision needed)"
else
  for b in 128 256; do
    if step "torch_mnv3s_b$b" 300 python3 tools/bench_torch.py --device cuda --amp --compile \
        --channels-last --model mnv3-small --size 224 --batch "$b" --mode train --steps 30 --warmup 10; then
      note "torch mnv3-small train b$b compile+amp: $(tail -n 1 "$LOGS/torch_mnv3s_b$b.log")"
    fi
  done
  # Like for like with pollen's fp32: eager PyTorch in float32, channels_last.
  if step torch_mnv3s_b256_fp32 200 python3 tools/bench_torch.py --device cuda --channels-last \
      --model mnv3-small --size 224 --batch 256 --mode train --steps 20 --warmup 5; then
    note "torch mnv3-small train b256 eager fp32: $(tail -n 1 "$LOGS/torch_mnv3s_b256_fp32.log")"
  fi
fi

echo
echo "==== gpu_check summary ($(date -u +%FT%TZ))"
printf '%s\n' "${summary[@]}" | tee "$LOGS/summary.txt"
exit $failed
