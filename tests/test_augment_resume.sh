#!/usr/bin/env bash
# test_augment_resume.sh - the stronger augmentations (TrivialAugmentWide, RandomErasing,
# mixup and CutMix) and stochastic depth (--drop-path) keep pollen's resume exact: a job stopped at step 8 and relaunched ends
# with the same weights, bit for bit, as one that ran through, on one rank and on two; and
# they change training (the weights differ from the same job without them); the decoded-photo
# cache changes nothing. Env: POLLEN,
# POLLEN_SRC (set by ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
tmp=$(mktemp -d /tmp/pollen-test-augment-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
hash_of() { sed -n 's/.*weights written to .*weights.safetensors (weights hash \([0-9a-f]*\)).*/\1/p' "$1" | tail -n 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 64 >/dev/null 2>&1 || fail "prepare"
base=(--data "$tmp/data" --size 64 --batch 16 --width 0.5 --threads 1 --epochs 3)
aug=(--auto-augment ta_wide --random-erase 0.25 --mixup-alpha 0.2 --cutmix-alpha 1.0 --drop-path 0.3)
# run RANKS JOB LOG ARGS...: pollen train on RANKS ranks (mpirun for 2)
run() {
  local ranks=$1 job=$2 log=$3
  shift 3
  if [ "$ranks" = 1 ]; then "$POLLEN" train --job "$job" "$@" >"$log" 2>&1
  else mpirun -np 2 --bind-to none "$POLLEN" train --job "$job" "$@" >"$log" 2>&1; fi
}
for ranks in 1 2; do
  [ "$ranks" = 2 ] && ! command -v mpirun >/dev/null && { echo "note: no mpirun, the 2-rank case skipped"; break; }
  run "$ranks" "$tmp/through$ranks" "$tmp/through$ranks.log" "${base[@]}" "${aug[@]}" || fail "$ranks rank(s): uninterrupted run: $(tail -3 "$tmp/through$ranks.log")"
  run "$ranks" "$tmp/stopped$ranks" "$tmp/stop$ranks.log" "${base[@]}" "${aug[@]}" --max-steps 8 || fail "$ranks rank(s): first launch"
  run "$ranks" "$tmp/stopped$ranks" "$tmp/resume$ranks.log" "${base[@]}" "${aug[@]}" || fail "$ranks rank(s): relaunch: $(tail -3 "$tmp/resume$ranks.log")"
  grep -q "resuming from .*step 8" "$tmp/resume$ranks.log" || fail "$ranks rank(s): the relaunch did not resume at step 8"
  a=$(hash_of "$tmp/through$ranks.log") b=$(hash_of "$tmp/resume$ranks.log")
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "$ranks rank(s): weights after stop and relaunch ($b) differ from the uninterrupted run's ($a)"
  echo "ok: $ranks rank(s), every augmentation on: stopped at step 8 and relaunched, weights hash $b as the uninterrupted run"
done
# The decoded-photo cache (on by default, its photos from epoch 1 feeding epochs 2 and 3) is not
# part of the definition: without it, the same weights.
run 1 "$tmp/nocache" "$tmp/nocache.log" "${base[@]}" "${aug[@]}" --decoded-cache 0 || fail "run with --decoded-cache 0"
[ "$(hash_of "$tmp/nocache.log")" = "$(hash_of "$tmp/through1.log")" ] ||
  fail "--decoded-cache 0 changed the weights ($(hash_of "$tmp/nocache.log") vs $(hash_of "$tmp/through1.log"))"
echo "ok: --decoded-cache 0 trains the same weights as the default cache"
run 1 "$tmp/plain" "$tmp/plain.log" "${base[@]}" || fail "run without the augmentations"
[ "$(hash_of "$tmp/plain.log")" != "$(hash_of "$tmp/through1.log")" ] || fail "the augmentations did not change training"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["mixup_alpha"] == 0.2 and c["cutmix_alpha"] == 1.0 and c["auto_augment"] == "ta_wide", c' \
  "$tmp/through1/config.json" || fail "config.json does not record the augmentations"
echo "PASS: augmentations are part of the job's definition and keep its resume exact"
