#!/bin/bash
# make_references.sh - regenerates every committed PyTorch reference in tests/ref/
# (format and tolerances: tests/ref/README.md). Needs Debian's python3-torch and
# python3-torchvision for /usr/bin/python3. Deterministic: same torch version, same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
MR=tools/make_reference.py
OUT=tests/ref
mkdir -p "$OUT"

# One forward + backward per architecture: logits, loss, every gradient, BN running stats.
$PY $MR --model mnv3-small --width 0.25 --size 64 --batch 4 --seed 1 --out $OUT/mnv3-small-w0.25-s64-b4.safetensors
$PY $MR --model mnv3-large --width 0.25 --size 64 --batch 2 --seed 2 --out $OUT/mnv3-large-w0.25-s64-b2.safetensors
$PY $MR --model mnv2       --width 0.25 --size 64 --batch 2 --seed 3 --out $OUT/mnv2-w0.25-s64-b2.safetensors

# Ten training steps on one batch per optimizer (lean: no grad.*/after.*, which the files
# above already cover); the optimizer's hyperparameters are in each file's metadata.
for opt in sgd rmsprop rmsprop-tf; do
  $PY $MR --model mnv3-small --width 0.25 --size 32 --batch 4 --seed 4 --steps 10 --opt $opt \
    --lean --out $OUT/mnv3-small-w0.25-s32-b4-$opt-10steps.safetensors
done
du -ch $OUT/*.safetensors | tail -1
