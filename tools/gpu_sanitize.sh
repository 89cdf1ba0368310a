#!/usr/bin/env bash
# gpu_sanitize.sh - the GPU engine under NVIDIA's compute-sanitizer (memcheck): every kernel's
# loads and stores checked for out-of-bounds and misaligned accesses, and every CUDA call for
# errors, on small shapes: the PyTorch references of the three models (forward, backward, the
# SGD and RMSprop updates) and a training and inference benchmark step.
#   bash tools/gpu_sanitize.sh        # after tools/gpu_env.sh, or with pollen on PATH
# Exit status: 0 clean, 1 an error reported, 77 no GPU or no compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[ -x "$CS" ] || { echo "SKIP: no compute-sanitizer (CUDA toolkit)"; exit 77; }
pollen bench --device cuda --mode infer --batch 1 --size 32 --steps 1 --warmup 0 >/dev/null 2>&1 ||
  { echo "SKIP: no GPU for the engine"; exit 77; }
failed=0
run() {
  echo "== $*"
  if ! "$CS" --tool memcheck --error-exitcode 1 --print-limit 20 "$@" >/tmp/sanitize.log 2>&1; then
    tail -n 30 /tmp/sanitize.log
    failed=1
  fi
  grep -E "ERROR SUMMARY|refcheck:" /tmp/sanitize.log
}
run pollen refcheck --device cuda tests/ref/mnv3-small-w0.25-s64-b4.safetensors \
  tests/ref/mnv3-large-w0.25-s64-b2.safetensors tests/ref/mnv2-w0.25-s64-b2.safetensors \
  tests/ref/mnv3-small-w0.25-s32-b4-sgd-10steps.safetensors \
  tests/ref/mnv3-small-w0.25-s32-b4-rmsprop-tf-10steps.safetensors
run pollen bench --device cuda --batch 3 --size 64 --steps 2 --warmup 1 --precision bf16
[ "$failed" = 0 ] && echo "PASS: compute-sanitizer memcheck clean" || echo "FAIL: compute-sanitizer found errors"
exit $failed
