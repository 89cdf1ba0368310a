# tests/slurm/lib.sh - a private, single-node SLURM for tests, started from a temporary folder.
# shellcheck shell=bash
#
# Source it, then: slurm_start DIR (as root; DIR empty and private to this test), run sbatch/
# squeue/scontrol (SLURM_CONF is exported), and slurm_stop from an EXIT trap. Everything it
# makes lives under DIR: its own munged (own key and socket, so a system munged is untouched),
# slurm.conf, state, spool, pid and log files, and ports picked from DIR's test pid, so two
# runs or a real cluster on the same machine do not clash. Not for: production setups (see
# deploy/README.md); this cluster trusts root and schedules only cores.
#
# Settings that make requeue tests fast: JobRequeue=1 (batch jobs may be requeued),
# AuthInfo cred_expire=5 (a requeued job waits about cred_expire+1 s before it may start
# again; Slurm 22.05 logs "cred_expire=N invalid" below 5 and silently uses 120),
# sched_interval=1 and KillWait=10 (pollen's checkpoint after TERM must fit in it).

slurm_pids=()
SLURM_TEST_DIR=""
# The daemons live in /usr/sbin, which a non-login PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

# slurm_wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds; on timeout
# prints what it waited for and returns 1.
slurm_wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      echo "timed out after ${limit}s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

slurm_have_tools() {
  local t
  for t in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$t" >/dev/null 2>&1 || { echo "$t"; return 1; }
  done
}

# Prints the daemons' logs (the first thing to read when the cluster misbehaves).
slurm_dump_logs() {
  local f
  for f in "$SLURM_TEST_DIR"/log/*.log; do
    [ -f "$f" ] || continue
    echo "---- $f (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
}

_slurm_node_idle() {
  [ "$(sinfo -h -n "$SLURM_TEST_NODE" -o %T 2>/dev/null)" = idle ]
}

slurm_start() {
  local dir=$1
  SLURM_TEST_DIR=$dir
  SLURM_TEST_NODE=$(hostname -s)
  mkdir -p "$dir"/{munge,state,spool,log,run}
  # munged refuses keys, sockets and logs that its own user does not own, folders that others
  # may write into, and a socket folder that clients cannot traverse: so the munge folder
  # belongs to munge, mode 755, and every folder above it gets o+x (mktemp -d makes 0700).
  local up
  up=$(cd "$dir" && pwd)
  while [ "$up" != / ]; do chmod go+x "$up"; up=$(dirname "$up"); done
  chown munge:munge "$dir/munge"
  chmod 755 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chown munge:munge "$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  local sock=$dir/munge/munge.socket
  # munged forks into the background itself; its pid file says which process to stop.
  runuser -u munge -- munged --key-file="$dir/munge/munge.key" --socket="$sock" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" || { echo "munged failed to start:" >&2; cat "$dir/munge/munged.log" >&2; return 1; }
  slurm_wait_for 10 "munged's pid file" test -s "$dir/munge/munged.pid" || return 1
  slurm_pids+=("$(cat "$dir/munge/munged.pid")")
  slurm_wait_for 10 "munged's socket" test -S "$sock" || return 1

  # Ports from this shell's pid: distinct for concurrent runs, clear of the standard 6817/6818.
  local base=$((20000 + ($$ % 20000) * 2))
  local mem_mb
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >"$dir/slurm.conf" <<EOF
ClusterName=pollentest
SlurmctldHost=$SLURM_TEST_NODE(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$SLURM_TEST_NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$SLURM_TEST_NODE Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  # Keep a job's environment clean of a SLURM job this test itself may be running inside.
  unset SLURM_JOB_ID SLURM_JOBID SLURM_NODELIST SLURM_JOB_NODELIST

  # -D: stay in the foreground so $! is the daemon; -i: ignore state from an older run.
  slurmctld -D -i -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  slurm_pids+=($!)
  slurmd -D -f "$SLURM_CONF" -N "$SLURM_TEST_NODE" >"$dir/log/slurmd.out" 2>&1 &
  slurm_pids+=($!)
  if ! slurm_wait_for 60 "node $SLURM_TEST_NODE idle in sinfo" _slurm_node_idle; then
    sinfo >&2 || true
    slurm_dump_logs
    return 1
  fi
}

# The pids of slurmstepd processes of this cluster: they detach from slurmd, so they are
# found by their open log file under SLURM_TEST_DIR (never by name alone).
_slurm_stepd_pids() {
  local p fd
  [ -n "$SLURM_TEST_DIR" ] || return 0
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
    for fd in "$p"/fd/*; do
      case $(readlink "$fd" 2>/dev/null) in
        "$SLURM_TEST_DIR"/*) echo "${p#/proc/}"; break ;;
      esac
    done
  done
}

_slurm_queue_empty() { [ -z "$(squeue -h -o %A 2>/dev/null)" ]; }

# Stops what slurm_start started: cancels the cluster's jobs (a step daemon left without its
# slurmd waits forever), then the step daemons still there and the daemons, by pid, newest
# first; each gets TERM, then KILL after 5 s.
slurm_stop() {
  local i pid ids stepds
  if [ -n "${SLURM_CONF:-}" ] && [ ${#slurm_pids[@]} -gt 0 ]; then
    ids=$(squeue -h -o %A 2>/dev/null)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086  # one job id per word
      scancel $ids 2>/dev/null
      slurm_wait_for 20 "the jobs to end" _slurm_queue_empty
    fi
  fi
  mapfile -t stepds < <(_slurm_stepd_pids)
  slurm_pids+=("${stepds[@]}")
  for ((i = ${#slurm_pids[@]} - 1; i >= 0; i--)); do
    pid=${slurm_pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  slurm_pids=()
}

# slurm_job_field JOBID FIELD: one field of `scontrol show job` (JobState, Restarts, ...).
slurm_job_field() {
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
