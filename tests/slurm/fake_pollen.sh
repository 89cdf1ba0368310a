#!/usr/bin/env bash
# fake_pollen.sh - stands in for `pollen train` where the real one is not built yet, so the
# SLURM requeue machinery (deploy/slurm/pollen.sbatch) can be tested on its own.
#
#   fake_pollen.sh train --job DIR [--steps N] [--step-time SECONDS]
#
# Behaves like pollen train as a scheduler sees it: a relaunch resumes from DIR's checkpoint
# (and logs "resuming from checkpoint at step K"), SIGUSR1/SIGTERM/SIGINT make it write a
# checkpoint and exit 75, it exits 0 when done. The "weights" (DIR/weights.txt) are a hash
# chain over the steps, so an interrupted and resumed run ends with the same file as an
# uninterrupted one only if no step was lost or repeated.
set -uo pipefail
[ "${1:-}" = train ] || { echo "fake_pollen: usage: fake_pollen.sh train --job DIR [--steps N] [--step-time S]" >&2; exit 2; }
shift
job="" steps=20 step_time=0.25
while [ $# -gt 0 ]; do
  case $1 in
    --job) job=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --step-time) step_time=$2; shift 2 ;;
    *) echo "fake_pollen: unknown flag '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$job" ] || { echo "fake_pollen: --job DIR is required" >&2; exit 2; }
mkdir -p "$job"

stop=""
trap 'stop=USR1' USR1
trap 'stop=TERM' TERM
trap 'stop=INT' INT

step=0 state=seed
if [ -f "$job/ckpt.txt" ]; then
  read -r step state <"$job/ckpt.txt"
  echo "fake_pollen: resuming from checkpoint at step $step"
else
  echo "fake_pollen: starting a new job in $job"
fi
save() { echo "$step $state" >"$job/ckpt.tmp" && mv "$job/ckpt.tmp" "$job/ckpt.txt"; }

while [ "$step" -lt "$steps" ]; do
  # Sleep in the background so a signal interrupts the wait at once, like a training step
  # that ends and then sees the stop flag.
  sleep "$step_time" & wait $! 2>/dev/null
  step=$((step + 1))
  state=$(printf '%s %s' "$state" "$step" | sha256sum | cut -c1-16)
  echo "fake_pollen: step $step/$steps" >"$job/progress.txt"
  if [ -n "$stop" ]; then
    save
    echo "fake_pollen: $stop received: checkpoint at step $step written, exiting 75 (preempted, resume me)"
    exit 75
  fi
done
save
echo "$state" >"$job/weights.txt"
echo "fake_pollen: finished $steps steps"
exit 0
