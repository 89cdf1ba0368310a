# shellcheck shell=bash disable=SC2034 # (variables used by the test files)
# resume_lib.sh - helpers shared by tests/test_resume*.sh: real `pollen train` runs on the
# bundled sample (80 px, width 0.35: ~5 ms a step), started, watched and signalled by the
# tests. Sourced, not run. Env: POLLEN (binary), POLLEN_SRC (source tree).
set -u
: "${POLLEN:?set POLLEN to the pollen binary}" "${POLLEN_SRC:?set POLLEN_SRC to the source tree}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# Open MPI's "no network" noise on containers; transport choice does not affect results.
export OMPI_MCA_btl_base_warn_component_unused=0

tmp=$(mktemp -d /tmp/pollen-test-resume-XXXXXX)
resume_cleanup_hooks=()
resume_cleanup() {
  local h
  for h in "${resume_cleanup_hooks[@]}"; do eval "$h"; done
  # Anything still running from a background start (a failed case) must not outlive us.
  [ -n "${bg_pid:-}" ] && kill -9 -- "-$bg_pid" 2>/dev/null
  if [ -n "${POLLEN_RESUME_KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap resume_cleanup EXIT
trap 'exit 1' INT TERM

n_fail=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; n_fail=$((n_fail + 1)); }
skip() { echo "SKIP: $*"; }
# Ends the file: 1 if any case failed, else 0.
finish() { [ "$n_fail" = 0 ] && { echo "all cases passed"; exit 0; }; echo "$n_fail case(s) failed"; exit 1; }
# Shows the tail of a log under a failure.
show() { echo "---- $1 (last ${2:-15} lines)"; tail -n "${2:-15}" "$1" | sed 's/^/    /'; }

LIMIT=${POLLEN_RESUME_LIMIT:-120} # seconds for one run, far above the ~1 s it takes
have_mpi=0
command -v mpirun >/dev/null && have_mpi=1

# The sample, prepared once: 90 training, 10 validation images at most 80 px.
"$POLLEN" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 80 \
  >"$tmp/prepare.log" 2>&1 || { show "$tmp/prepare.log"; echo "FAIL: pollen prepare"; exit 1; }
# EPOCHS (set before sourcing; default 3) of 11 steps each.
EPOCHS=${EPOCHS:-3}
TOTAL=$((11 * EPOCHS))
FLAGS=(--data "$tmp/data" --size 64 --batch 8 --width 0.35 --epochs "$EPOCHS" --log-every 1 --threads 1 --loader-threads 1)
MPI=(mpirun --oversubscribe --mca odls_base_sigkill_timeout 0)

# train NP JOB LOG [flags...]: a run to its end (NP 1: no mpirun). Returns its exit status.
train() {
  local np=$1 job=$2 log=$3
  shift 3
  if [ "$np" = 1 ]; then
    timeout -k 5 "$LIMIT" "$POLLEN" train --job "$job" "${FLAGS[@]}" "$@" >"$log" 2>&1
  else
    timeout -k 5 "$LIMIT" "${MPI[@]}" -np "$np" "$POLLEN" train --job "$job" "${FLAGS[@]}" "$@" >"$log" 2>&1
  fi
}
# start NP JOB LOG [flags...]: the same in the background; bg_pid is timeout's pid, and
# timeout runs in its own process group with everything below it.
start() {
  local np=$1 job=$2 log=$3
  shift 3
  if [ "$np" = 1 ]; then
    timeout -k 5 "$LIMIT" "$POLLEN" train --job "$job" "${FLAGS[@]}" "$@" >"$log" 2>&1 &
  else
    timeout -k 5 "$LIMIT" "${MPI[@]}" -np "$np" "$POLLEN" train --job "$job" "${FLAGS[@]}" "$@" >"$log" 2>&1 &
  fi
  bg_pid=$!
}
# bg_wait: the background run's exit status (and forgets it).
bg_wait() {
  local rc
  # (bash's "Killed" notice for a SIGKILLed run is expected here, not worth printing)
  { wait "$bg_pid"; } 2>/dev/null
  rc=$?
  bg_pid=
  return $rc
}
main_pid() { pgrep -P "$bg_pid" | head -1; } # pollen (1 rank) or mpirun
# rank_pid R: the pid of rank R of the background mpirun run.
rank_pid() {
  local p
  for p in $(pgrep -P "$(main_pid)"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && { echo "$p"; return 0; }
  done
  return 1
}

# last_step JOB: the newest step in JOB/metrics.jsonl (0 when none yet).
last_step() { read_step "$1"; echo "$step"; }
# read_step JOB: the same into $step, with builtins only: the polling below must not lose
# steps (a few ms each) to forks.
read_step() {
  local line last=
  step=0
  [ -f "$1/metrics.jsonl" ] || return 0
  while IFS= read -r line; do [ -n "$line" ] && last=$line; done <"$1/metrics.jsonl"
  case $last in *'"step":'*) last=${last#*'"step":'}; step=${last%%[!0-9]*} ;; esac
  [ -n "$step" ] || step=0
}
# wait_step JOB N: until the background run has logged step N; 1 if it ended first. Sets
# run_pid (pollen, or mpirun) first, so that a signal can follow the step at once.
wait_step() {
  local deadline=$((SECONDS + LIMIT))
  run_pid=
  while [ -z "$run_pid" ]; do
    run_pid=$(main_pid)
    kill -0 "$bg_pid" 2>/dev/null || return 1
    [ $SECONDS -lt $deadline ] || return 1
  done
  while read_step "$1" && [ "$step" -lt "$2" ]; do
    kill -0 "$bg_pid" 2>/dev/null || return 1
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.002
  done
}
# Values from a log.
weights_hash() { grep -o 'weights hash [0-9a-f]*' "$1" | tail -1 | awk '{print $3}'; }
param_hash() { grep -o 'parameter hash [0-9a-f]*' "$1" | tail -1 | awk '{print $3}'; }
stop_step() { grep -o 'checkpointing step [0-9]*' "$1" | tail -1 | awk '{print $3}'; }
resumed_step() { grep -o 'resuming from [^ ]*: step [0-9]*' "$1" | tail -1 | awk '{print $NF}'; }

# same_as REF_JOB REF_LOG JOB LOG WHAT: PASS when the final weights are byte-identical and
# the logged hashes agree, else FAIL.
same_as() {
  local a=$1/weights.safetensors b=$3/weights.safetensors
  if [ ! -s "$b" ]; then fail "$5: no $b"; return 1; fi
  if ! cmp -s "$a" "$b"; then fail "$5: weights differ from the uninterrupted run ($a vs $b)"; return 1; fi
  local ha hb pa pb
  ha=$(weights_hash "$2") hb=$(weights_hash "$4") pa=$(param_hash "$2") pb=$(param_hash "$4")
  if [ -z "$ha" ] || [ "$ha" != "$hb" ]; then fail "$5: logged weights hash '$hb', uninterrupted '$ha'"; return 1; fi
  if [ "$pa" != "$pb" ]; then fail "$5: logged parameter hash '$pb', uninterrupted '$pa'"; return 1; fi
  pass "$5: weights byte-identical to the uninterrupted run (weights hash $hb${pb:+, parameter hash $pb})"
}

# stop_and_resume NAME SIGNAL [NP]: starts job NAME, asks it to stop once step STOP_AT is
# logged, checks exit 75 and the stop message, keeps a copy of the stopped job folder
# (NAME.stopped), relaunches and checks exit 0, the resume step and the final weights.
stop_and_resume() {
  local name=$1 sig=$2 np=${3:-1} job=$tmp/$1 ref=$tmp/A target=
  [ "$np" = 1 ] || ref=$tmp/M # the 2-rank reference, made by the caller
  start "$np" "$job" "$job.log"
  # A rank's pid is looked up early, not between the step and the signal.
  if [ "$sig" = rank1-TERM ] && wait_step "$job" 1; then target=$(rank_pid 1); fi
  if ! wait_step "$job" "$STOP_AT"; then
    bg_wait
    show "$job.log"
    fail "$name: the run ended (or stalled) before step $STOP_AT was logged"
    return 1
  fi
  local what
  case $sig in
  ctl) what="pollen ctl stop"
    "$POLLEN" ctl "$job" stop >"$job.ctl" 2>&1 || { local e=$?; cat "$job.ctl"; fail "$name: pollen ctl stop: exit $e"; } ;;
  mpirun-USR1) what="SIGUSR1 to mpirun"; kill -USR1 "$run_pid" ;;
  rank1-TERM) what="SIGTERM to rank 1 only"; kill -TERM "$target" ;;
  *) what="SIG$sig"; kill -"$sig" "$run_pid" ;;
  esac
  local seen
  seen=$(last_step "$job")
  bg_wait
  local rc=$?
  if [ $rc != 75 ]; then show "$job.log"; fail "$name: stopped by $what: exit $rc, want 75"; return 1; fi
  local s
  s=$(stop_step "$job.log")
  if [ -z "$s" ] || [ "$s" -lt "$STOP_AT" ] || [ "$s" -ge "$TOTAL" ]; then
    show "$job.log"; fail "$name: no 'checkpointing step N' with $STOP_AT <= N < $TOTAL in the log"; return 1
  fi
  local want=SIG${sig#*-}
  [ "$sig" = ctl ] && want="status socket"
  grep -q "stop requested ($want)" "$job.log" || { show "$job.log"; fail "$name: the log does not say '$want' stopped it"; return 1; }
  pass "$name: $what (sent as step $seen was logged) stopped the job at step $s (epoch $((s / 11 + 1)), step $((s % 11)) of 11) with exit 75"
  cp -a "$job" "$job.stopped"

  train "$np" "$job" "$job.2.log"
  rc=$?
  if [ $rc != 0 ]; then show "$job.2.log"; fail "$name: relaunch: exit $rc"; return 1; fi
  local r
  r=$(resumed_step "$job.2.log")
  if [ "$r" != "$s" ]; then show "$job.2.log"; fail "$name: relaunch resumed at step '${r}', want $s"; return 1; fi
  grep -q "finished: $TOTAL steps" "$job.2.log" || { show "$job.2.log"; fail "$name: relaunch did not finish $TOTAL steps"; return 1; }
  same_as "$ref" "$ref.log" "$job" "$job.2.log" "$name: resumed from step $r"
}
