#!/usr/bin/env bash
# gpu_check.sh - the one script to run on a GPU machine (about 10 minutes): builds pollen with
# -DPOLLEN_CUDA=ON, runs the GPU checks (every CUDA op against its CPU op, --device selection,
# NCCL gradient sync under mpirun) and measures the PyTorch GPU baseline for BENCHMARKS.md
# (torch.compile'd MobileNetV3-Small, channels_last, bf16 autocast, batch 128 and 256).
#   bash tools/gpu_check.sh            # build dir: build-gpu; logs and summary in $OUT or out/gpu
# Env: BUILD (build dir), OUT (where logs go), JOBS, SKIP_TORCH=1 (no PyTorch baseline).
# Exit status: 0 when every check that could run passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
LOGS=${OUT:-out/gpu}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$LOGS"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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
  /usr/local/cuda/bin/nvcc --version | tail -n 2 || echo "nvcc: not found"
  nproc; } 2>&1 | tee "$LOGS/machine.log"

if step configure 300 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPOLLEN_CUDA=ON &&
   step build 480 cmake --build "$BUILD" -j "$JOBS" --target test_cuda_ops nccl_check test_device pollen; then
  step test_device 60 "$BUILD/test_device"
  step test_cuda_ops 300 "$BUILD/test_cuda_ops"
  step test_nccl 240 env NCCL_CHECK="$BUILD/nccl_check" bash tests/cuda/test_nccl.sh
else
  note "the build failed: missing dependencies? (deploy/install-deps.sh installs them)"
fi

# PyTorch GPU baseline (images/s, median of the timed steps).
if [ "${SKIP_TORCH:-0}" = 1 ]; then
  note "SKIP torch baseline: SKIP_TORCH=1"
elif ! python3 -c 'import torch, torchvision, sys; sys.exit(0 if torch.cuda.is_available() else 3)' \
    >"$LOGS/torch_probe.log" 2>&1; then
  note "SKIP torch baseline: $(tail -n 1 "$LOGS/torch_probe.log" | cut -c1-120) (python3 with a CUDA torch + torchvision needed)"
else
  for b in 128 256; do
    if step "torch_mnv3s_b$b" 300 python3 tools/bench_torch.py --device cuda --amp --compile \
        --channels-last --model mnv3-small --size 224 --batch "$b" --mode train --steps 30 --warmup 10; then
      note "torch mnv3-small train b$b: $(tail -n 1 "$LOGS/torch_mnv3s_b$b.log")"
    fi
  done
fi

echo
echo "==== gpu_check summary ($(date -u +%FT%TZ))"
printf '%s\n' "${summary[@]}" | tee "$LOGS/summary.txt"
exit $failed
