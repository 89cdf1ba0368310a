#!/bin/bash
# launch.sh - start `pollen train` on several machines with Open MPI, and start it again
# after a preemption until it finishes or fails for real.
#
# usage: launch.sh --hostfile FILE [options] -- [pollen train flags]
#
# Exit status: pollen's final one. 0 = finished; 75 = still preempted after --max-retries
# relaunches, or this script was itself stopped (SIGTERM/SIGINT/SIGHUP: every rank is asked
# to checkpoint and exit 75; start launch.sh again to resume); anything else = failed, do not
# retry. See README.md beside this file.
set -u

usage() {
  cat <<'EOF'
usage: launch.sh --hostfile FILE [options] -- [pollen train flags]

  --hostfile FILE       Open MPI hostfile, one machine a line (see hostfile.example); read
                        again before every relaunch, so a hook may replace lost machines
  --np N                ranks in all (default: ranks-per-node x machines in the hostfile)
  --ranks-per-node K    ranks on each machine (default 1: one rank per machine, all its cores)
  --threads T           cores per rank = OMP_NUM_THREADS (default: physical cores of this
                        machine / K; machines are assumed alike)
  --net CIDR|IFACE      the network MPI uses, e.g. 10.1.0.0/24 or eth1 (default: Open MPI
                        picks; name it on any machine with more than one network)
  --keepalive T,I,P     seconds idle before probing a silent machine, seconds between probes,
                        probes lost before giving up (default 10,4,3: a dead machine or cable
                        ends the job in about 25 s instead of Open MPI's ~8 min)
  --max-retries R       relaunches after preemption (exit 75) before giving up (default 10)
  --backoff S           seconds before the first relaunch, doubled each time up to 300 (default 10)
  --pollen PATH         the pollen binary, same path on every machine (default: pollen in PATH)
  --mca KEY VALUE       extra Open MPI parameter (repeatable); wins over the defaults
  --export NAME         pass environment variable NAME to every rank (repeatable)
  --dry-run             print the environment and mpirun command, run nothing
  --help                this text
EOF
}

say() { echo "launch.sh: $*" >&2; }
die() { say "$*"; exit 2; }

hostfile=${POLLEN_HOSTFILE:-} np= per_node=1 threads= net= keepalive=10,4,3 max_retries=10
backoff=10 pollen= dry=0
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --hostfile) hostfile=${2-}; shift 2 || die "--hostfile needs a file" ;;
    --np) np=${2-}; shift 2 || die "--np needs a number" ;;
    --ranks-per-node) per_node=${2-}; shift 2 || die "--ranks-per-node needs a number" ;;
    --threads) threads=${2-}; shift 2 || die "--threads needs a number" ;;
    --net) net=${2-}; shift 2 || die "--net needs a subnet or interface" ;;
    --keepalive) keepalive=${2-}; shift 2 || die "--keepalive needs T,I,P" ;;
    --max-retries) max_retries=${2-}; shift 2 || die "--max-retries needs a number" ;;
    --backoff) backoff=${2-}; shift 2 || die "--backoff needs seconds" ;;
    --pollen) pollen=${2-}; shift 2 || die "--pollen needs a path" ;;
    --mca) [ $# -ge 3 ] || die "--mca needs KEY VALUE"; extra+=(--mca "$2" "$3"); shift 3 ;;
    --export) [ $# -ge 2 ] || die "--export needs a variable name"; extra+=(-x "$2"); shift 2 ;;
    --dry-run) dry=1; shift ;;
    --help | -h) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (pollen train flags go after --); see launch.sh --help" ;;
  esac
done

is_count() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le 100000 ]; }
[ -n "$hostfile" ] || die "--hostfile is required (see hostfile.example beside launch.sh)"
[ -r "$hostfile" ] || die "cannot read hostfile '$hostfile'"
is_count "$per_node" 1 || die "--ranks-per-node: '$per_node' is not a whole number >= 1"
[[ $keepalive =~ ^([0-9]+),([0-9]+),([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 1 ] &&
  [ "${BASH_REMATCH[2]}" -ge 1 ] && [ "${BASH_REMATCH[3]}" -ge 1 ] ||
  die "--keepalive: '$keepalive' is not T,I,P (three whole numbers >= 1, e.g. 10,4,3)"
ka_time=${BASH_REMATCH[1]} ka_intvl=${BASH_REMATCH[2]} ka_probes=${BASH_REMATCH[3]}
is_count "$max_retries" 0 || die "--max-retries: '$max_retries' is not a whole number >= 0"
is_count "$backoff" 0 || die "--backoff: '$backoff' is not a whole number of seconds"
if [ -z "$pollen" ]; then
  pollen=$(command -v pollen) || die "no pollen in PATH; name the binary with --pollen PATH"
fi
[ -x "$pollen" ] || die "--pollen: '$pollen' is not an executable file"
mpirun=${MPIRUN:-mpirun}
command -v "$mpirun" >/dev/null || die "no '$mpirun' in PATH: install Open MPI (deploy/install-deps.sh)"

# Machines in the hostfile: lines that are not blank or comments.
hosts=$(grep -cEv '^[[:space:]]*(#|$)' "$hostfile")
[ "$hosts" -ge 1 ] || die "hostfile '$hostfile' names no machine"
[ -n "$np" ] || np=$((hosts * per_node))
is_count "$np" 1 || die "--np: '$np' is not a whole number >= 1"
if [ -z "$threads" ]; then
  # Physical cores, not hardware threads: Open MPI's pe=T counts cores, and two busy threads
  # on one core's hyperthreads run slower than one.
  cores=$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
  [ "$cores" -ge 1 ] 2>/dev/null || cores=$(nproc)
  threads=$((cores / per_node))
  [ "$threads" -ge 1 ] || threads=1
fi
is_count "$threads" 1 || die "--threads: '$threads' is not a whole number >= 1"

# Open MPI parameters through the environment: the command line (--mca) wins over them, and
# mpirun passes OMPI_MCA_* on to the daemons it starts on the other machines.
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}                 # TCP path; for InfiniBand see README
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp}      # vader: ranks on one machine
export OMPI_MCA_osc=${OMPI_MCA_osc:-^ucx}
if [ -n "$net" ]; then
  # Both the launch/control channel (oob) and the data channel (btl) on the chosen network.
  export OMPI_MCA_oob_tcp_if_include=$net OMPI_MCA_btl_tcp_if_include=$net
fi
# A machine that vanishes without closing its sockets (power, cable, kernel panic) is only
# noticed by TCP keepalive on mpirun's control connection to it; Open MPI's default is 300 s
# idle + 9 probes x 20 s. Keepalives are answered by the kernel, so a busy machine never
# trips them.
export OMPI_MCA_oob_tcp_keepalive_time=$ka_time OMPI_MCA_oob_tcp_keepalive_intvl=$ka_intvl \
  OMPI_MCA_oob_tcp_keepalive_probes=$ka_probes
export OMPI_MCA_orte_abort_on_non_zero_status=1
# One OpenMP pool per rank, pinned to the rank's own cores: OpenBLAS is the OpenMP build and
# shares it, so BLAS threads never fight pollen's threads or another rank's.
export OMP_NUM_THREADS=$threads OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_PLACES=${OMP_PLACES:-cores}

# ppr:K:node:pe=T: K ranks per machine, each bound to T whole cores of its own.
cmd=("$mpirun" -np "$np" --hostfile "$hostfile" --map-by "ppr:$per_node:node:pe=$threads"
  --bind-to core --display-map
  -x OMP_NUM_THREADS -x OMP_PROC_BIND -x OMP_PLACES
  "${extra[@]}" "$pollen" train "$@")

if [ "$dry" = 1 ]; then
  env | grep -E '^(OMPI_MCA_|OMP_)' | sort
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

# A signal to this script is a preemption of the whole job: do not relaunch, and pass it on
# as SIGUSR1, which mpirun forwards to every rank as is (pollen: checkpoint at the next step,
# exit 75). SIGTERM itself would make mpirun kill the ranks a second later, checkpoint or not.
# A second signal stops the job at once. mpirun runs in its own session (setsid) so that a
# signal sent to this script's whole process group (Ctrl-C) reaches it only through here.
stopping=0
child=
on_signal() {
  stopping=$((stopping + 1))
  [ -n "$child" ] || return 0
  if [ "$stopping" = 1 ]; then
    say "got SIG$1: asking every rank to checkpoint and stop (again to stop at once)"
    kill -USR1 "$child" 2>/dev/null
  else
    kill -TERM "$child" 2>/dev/null
  fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP

# Passes mpirun's stderr through and, when mpirun reports a machine lost (cable, power,
# crash: it names only the machine), adds which ranks ran there. ppr mapping places ranks
# machine by machine in hostfile order: machine j (from 0) holds ranks j*K .. j*K+K-1.
name_lost_ranks() {
  local line node j first ranks
  local -a names
  # Ctrl-C reaches this filter too; mpirun must keep its stderr until it exits.
  trap '' INT TERM HUP
  mapfile -t names < <(grep -Ev '^[[:space:]]*(#|$)' "$hostfile" | awk '{sub(/^.*@/, "", $1); print $1}')
  while IFS= read -r line; do
    printf '%s\n' "$line" >&2
    [[ $line =~ Remote\ daemon:.*\ on\ node\ ([^[:space:]]+) ]] || continue
    node=${BASH_REMATCH[1]}
    for j in "${!names[@]}"; do
      [ "${names[$j]}" = "$node" ] || continue
      first=$((j * per_node))
      if [ "$per_node" = 1 ]; then ranks="rank $first"; else ranks="ranks $first..$((first + per_node - 1))"; fi
      say "lost machine $node (hostfile entry $((j + 1))): $ranks gone"
    done
  done
}

attempt=0
delay=$backoff
while :; do
  attempt=$((attempt + 1))
  say "attempt $attempt: $np ranks on $hosts machine(s), $threads thread(s) each"
  setsid "${cmd[@]}" 2> >(name_lost_ranks) &
  child=$!
  wait "$child"
  status=$?
  # wait returns early when a trapped signal arrives; wait again for mpirun's own status.
  while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
  done
  child=
  wait # for name_lost_ranks to print its last lines
  case $status in
    0) say "finished"; exit 0 ;;
    75)
      if [ "$stopping" -gt 0 ]; then say "stopped by a signal; pollen saved its state (exit 75)"; exit 75; fi
      if [ "$attempt" -gt "$max_retries" ]; then
        say "preempted again after $max_retries relaunch(es); giving up (exit 75)"
        exit 75
      fi
      say "preempted (exit 75); relaunching in $delay s"
      sleep "$delay" &
      child=$!
      wait "$child"
      child=
      if [ "$stopping" -gt 0 ]; then say "stopped by a signal while waiting to relaunch"; exit 75; fi
      delay=$((delay * 2 > 300 ? 300 : delay * 2))
      ;;
    *) say "failed (exit $status); not relaunching"; exit "$status" ;;
  esac
done
