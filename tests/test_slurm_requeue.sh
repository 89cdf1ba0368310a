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
# Env: POLLEN (binary), POLLEN_SRC (source tree); POLLEN_SLURM_DEADLINE (seconds, default
# 300); POLLEN_SLURM_LAUNCHER (srun, the default, or mpirun); POLLEN_SLURM_WORKLOAD=fake
# (use the stand-in even where pollen train exists); POLLEN_SLURM_KEEP=1 (keep the folder).
set -uo pipefail
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
POLLEN=${POLLEN:-$SRC/build/pollen}
# The job runs in SLURM's idea of the working folder: give it an absolute path.
[ -x "$POLLEN" ] && POLLEN=$(realpath "$POLLEN")
# shellcheck source=tests/slurm/lib.sh
source "$SRC/tests/slurm/lib.sh"

if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root to run munged and slurmd"; exit 77; fi
if ! missing=$(slurm_have_tools); then
  echo "SKIP: $missing not installed (apt-get install slurm-wlm munge)"; exit 77
fi
if ! id munge >/dev/null 2>&1; then echo "SKIP: no munge user (apt-get install munge)"; exit 77; fi

fail() { echo "FAIL: $*" >&2; [ -n "${log:-}" ] && [ -f "$log" ] && { echo "---- job log" >&2; cat "$log" >&2; }; slurm_dump_logs; exit 1; }

tmp=$(mktemp -d /tmp/pollen-slurm.XXXXXX)
refpid=""
cleanup() {
  [ -n "$refpid" ] && kill "$refpid" 2>/dev/null && wait "$refpid" 2>/dev/null
  slurm_stop   # cancels the job if it still runs, then stops the daemons
  [ -n "${POLLEN_SLURM_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

deadline=$((SECONDS + ${POLLEN_SLURM_DEADLINE:-300}))
left() { local l=$((deadline - SECONDS)); ((l > 0)) && echo "$l" || echo 1; }
# wait_until WHAT CMD...: slurm_wait_for, at most 90 s (ASan's whole training takes ~20 s)
# and never past the test's deadline.
wait_until() {
  local what=$1 limit; shift
  limit=$(left); ((limit > 90)) && limit=90
  slurm_wait_for "$limit" "$what" "$@" || fail "timed out waiting for $what"
}
t0=$SECONDS

# ---- the workload: same command for the reference run and the SLURM job, only --job differs
if [ "${POLLEN_SLURM_WORKLOAD:-}" != fake ] && "$POLLEN" train --help 2>/dev/null | grep -q -- '--ckpt-every'; then
  mode=pollen
  bin=$POLLEN
  "$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --shards 2 >"$tmp/prepare.log" 2>&1 \
    || { cat "$tmp/prepare.log"; fail "pollen prepare failed"; }
  # 440 steps of 8 images at 64 px on one core (about 3 s; 15 s under ASan), checkpoints
  # every 5 steps: long enough to be stopped twice mid-run, short enough for CI.
  train_args=(--data "$tmp/data" --model mnv3-small --width 0.35 --size 64 --batch 8 --epochs 40
    --ckpt-every 5 --log-every 50 --threads 1 --loader-threads 1)
  weights=weights.safetensors
  resumed_re='resuming from .*checkpoints/step-'
  # Progress for the "mid-run" waits: a checkpoint written into the job folder.
  progress() { compgen -G "$1/checkpoints/step-*.ckpt" >/dev/null; }
else
  mode=fake
  # A copy with its execute bit set, whatever the checkout did with file modes.
  bin=$tmp/fake_pollen.sh
  install -m 755 "$SRC/tests/slurm/fake_pollen.sh" "$bin"
  train_args=(--steps 40 --step-time 0.25)
  weights=weights.txt
  resumed_re='resuming from checkpoint'
  progress() { [ -f "$1/progress.txt" ]; }
  echo "note: testing the requeue machinery with tests/slurm/fake_pollen.sh (pollen train without --ckpt-every, or POLLEN_SLURM_WORKLOAD=fake)"
fi

# The uninterrupted reference run, on the second core while the SLURM job uses the first.
OMP_NUM_THREADS=1 "$bin" train "${train_args[@]}" --job "$tmp/ref" >"$tmp/ref.log" 2>&1 &
refpid=$!

# ---- SLURM
t1=$SECONDS
slurm_start "$tmp/slurm" || fail "could not start the private SLURM"
echo "SLURM up in $((SECONDS - t1)) s"

log=$tmp/job.log
job=$tmp/job
# Conditions to poll for.
_running_restart() {
  [ "$(slurm_job_field "$jobid" JobState)" = RUNNING ] && [ "$(slurm_job_field "$jobid" Restarts)" = "$1" ]
}
_log_count_ge() { [ "$(grep -c -- "$1" "$log" 2>/dev/null)" -ge "$2" ]; }
_ref_done() { ! kill -0 "$refpid" 2>/dev/null; }
_state_is() { [ "$(slurm_job_field "$jobid" JobState)" = "$1" ]; }

jobid=$(POLLEN_BIN=$bin POLLEN_LAUNCHER=${POLLEN_SLURM_LAUNCHER:-srun} \
  sbatch --parsable --output="$log" --cpus-per-task=1 --time=10 \
  "$SRC/deploy/slurm/pollen.sbatch" "${train_args[@]}" --job "$job") || fail "sbatch failed"
jobid=${jobid%%;*}
echo "submitted job $jobid ($((SECONDS - t0)) s since start)"

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
wait_until "the reference run to end" _ref_done
wait "$refpid" || { cat "$tmp/ref.log"; fail "the uninterrupted reference run failed"; }
refpid=""
[ -s "$tmp/ref/$weights" ] || fail "the reference run left no $weights"
if ! cmp -s "$tmp/ref/$weights" "$job/$weights"; then
  fail "weights after two requeues differ from the uninterrupted run ($tmp/ref/$weights vs $job/$weights)"
fi
echo "ok: job $jobid ($mode) requeued by SLURM and by its own script, resumed twice, same $weights as the uninterrupted run ($((SECONDS - t0)) s in all)"
