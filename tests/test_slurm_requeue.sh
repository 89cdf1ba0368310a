#!/usr/bin/env bash
# test_slurm_requeue.sh - deploy/slurm/pollen.sbatch on a real, private, single-node SLURM:
# the job is stopped mid-run twice, once by SLURM (`scontrol requeue`: TERM to every process,
# SLURM requeues) and once by the time-limit warning (USR1 to the batch script, which passes
# it on and requeues the job itself after pollen's exit 75). It must come back both times,
# resume from its checkpoint (the log says so), finish with status 0, and end with the same
# weights as an uninterrupted run of the same command.
#
# The workload is `pollen train` on the bundled sample when the binary supports checkpoints
# (`pollen train --help` lists --ckpt-every), else tests/slurm/fake_pollen.sh, a stand-in
# with the same exit statuses and resume behaviour. Needs root, slurm-wlm and munge.
# Env: POLLEN (binary), POLLEN_SRC (source tree); POLLEN_SLURM_DEADLINE (seconds, default 300).
set -uo pipefail
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
POLLEN=${POLLEN:-$SRC/build/pollen}
# shellcheck source=tests/slurm/lib.sh
source "$SRC/tests/slurm/lib.sh"

if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root to run munged and slurmd"; exit 77; fi
if ! missing=$(slurm_have_tools); then
  echo "SKIP: $missing not installed (apt-get install slurm-wlm munge)"; exit 77
fi
if ! id munge >/dev/null 2>&1; then echo "SKIP: no munge user (apt-get install munge)"; exit 77; fi

fail() { echo "FAIL: $*" >&2; [ -n "${log:-}" ] && [ -f "$log" ] && { echo "---- job log" >&2; cat "$log" >&2; }; slurm_dump_logs; exit 1; }

tmp=$(mktemp -d /tmp/pollen-slurm.XXXXXX)
cleanup() {
  # Jobs first (their processes are not children of this script), then the daemons.
  if [ -n "${SLURM_CONF:-}" ] && [ -n "${jobid:-}" ]; then
    scancel "$jobid" 2>/dev/null
    slurm_wait_for 15 "job $jobid to end" _job_gone
  fi
  slurm_stop
  [ -n "${POLLEN_SLURM_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

deadline=$((SECONDS + ${POLLEN_SLURM_DEADLINE:-300}))
left() { local l=$((deadline - SECONDS)); ((l > 0)) && echo "$l" || echo 1; }
# wait_until WHAT CMD...: slurm_wait_for bounded by the test's own deadline.
wait_until() { local what=$1; shift; slurm_wait_for "$(left)" "$what" "$@" || fail "timed out waiting for $what"; }

# ---- the workload: same command for the reference run and the SLURM job, only --job differs
if "$POLLEN" train --help 2>/dev/null | grep -q -- '--ckpt-every'; then
  mode=pollen
  bin=$POLLEN
  "$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --shards 2 >"$tmp/prepare.log" 2>&1 \
    || { cat "$tmp/prepare.log"; fail "pollen prepare failed"; }
  train_args=(--data "$tmp/data" --model mnv3-small --width 0.35 --size 64 --batch 8 --epochs 2 --ckpt-every 1 --threads 1)
  weights=weights.safetensors
  resumed_re='resum'
  # Progress for the "mid-run" waits: a checkpoint written into the job folder.
  progress() { compgen -G "$1/ckpt*" >/dev/null || compgen -G "$1/checkpoints/*" >/dev/null; }
else
  mode=fake
  # A copy with its execute bit set, whatever the checkout did with file modes.
  bin=$tmp/fake_pollen.sh
  install -m 755 "$SRC/tests/slurm/fake_pollen.sh" "$bin"
  train_args=(--steps 40 --step-time 0.25)
  weights=weights.txt
  resumed_re='resuming from checkpoint'
  progress() { [ -f "$1/progress.txt" ]; }
  echo "note: 'pollen train' has no --ckpt-every yet: testing the requeue machinery with tests/slurm/fake_pollen.sh"
fi

t0=$SECONDS
OMP_NUM_THREADS=1 "$bin" train "${train_args[@]}" --job "$tmp/ref" >"$tmp/ref.log" 2>&1 \
  || { cat "$tmp/ref.log"; fail "the uninterrupted reference run failed"; }
[ -s "$tmp/ref/$weights" ] || fail "the reference run left no $weights"
echo "reference run ($mode): $((SECONDS - t0)) s"

# ---- SLURM
t0=$SECONDS
slurm_start "$tmp/slurm" || fail "could not start the private SLURM"
echo "SLURM up in $((SECONDS - t0)) s"

log=$tmp/job.log
job=$tmp/job
# Progress counters of the job: restarts and finished steps (for the "mid-run" waits).
_job_gone() { [ -z "$(squeue -h -j "$jobid" 2>/dev/null)" ]; }
_running_restart() {
  [ "$(slurm_job_field "$jobid" JobState)" = RUNNING ] && [ "$(slurm_job_field "$jobid" Restarts)" = "$1" ]
}
_log_count_ge() { [ "$(grep -c -- "$1" "$log" 2>/dev/null)" -ge "$2" ]; }
_state_is() { [ "$(slurm_job_field "$jobid" JobState)" = "$1" ]; }

jobid=$(POLLEN_BIN=$bin POLLEN_LAUNCHER=${POLLEN_SLURM_LAUNCHER:-srun} \
  sbatch --parsable --output="$log" --cpus-per-task=1 --time=10 \
  "$SRC/deploy/slurm/pollen.sbatch" "${train_args[@]}" --job "$job") || fail "sbatch failed"
jobid=${jobid%%;*}
echo "submitted job $jobid"

# 1. SLURM stops the job itself: every process gets TERM, SLURM requeues it.
wait_until "job $jobid running" _running_restart 0
wait_until "job $jobid to make progress" progress "$job"
t1=$SECONDS
scontrol requeue "$jobid" || fail "scontrol requeue $jobid failed"
wait_until "pollen to exit after the requeue" _log_count_ge 'pollen exited with status' 1
wait_until "job $jobid running again (restart 1)" _running_restart 1
echo "requeue -> running again: $((SECONDS - t1)) s"
wait_until "the restarted job to resume" _log_count_ge "$resumed_re" 1

# 2. The time-limit warning: USR1 to the batch script only, as --signal=B:USR1@GRACE sends it.
#    The script must pass it on, see exit 75, and requeue the job itself.
t1=$SECONDS
scancel --signal=USR1 --batch "$jobid" || fail "scancel --signal=USR1 --batch $jobid failed"
wait_until "the batch script to requeue the job" _log_count_ge 'requeueing to resume' 1
wait_until "job $jobid running again (restart 2)" _running_restart 2
echo "USR1 -> running again: $((SECONDS - t1)) s"
wait_until "the second restart to resume" _log_count_ge "$resumed_re" 2

wait_until "job $jobid to complete" _state_is COMPLETED
exit_code=$(slurm_job_field "$jobid" ExitCode)
[ "$exit_code" = 0:0 ] || fail "job $jobid ended with ExitCode=$exit_code, want 0:0"
grep -q 'pollen exited with status 0' "$log" || fail "the log does not show pollen finishing with status 0"
[ -s "$job/$weights" ] || fail "the SLURM job left no $weights"
if ! cmp -s "$tmp/ref/$weights" "$job/$weights"; then
  fail "weights after two requeues differ from the uninterrupted run ($tmp/ref/$weights vs $job/$weights)"
fi
echo "ok: job $jobid ($mode) requeued by SLURM and by its own script, resumed twice, same $weights as the uninterrupted run"
