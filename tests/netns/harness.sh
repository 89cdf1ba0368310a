# harness.sh - what the multi-host tests (tests/test_netns_*.sh) share: three namespace hosts
# (lib.sh), Open MPI settings for them, `pollen launch` (the supervisor) run on h1, and "lose a
# host mid-run and time how long the launch takes to end". Source it from bash after setting
# SRC (and POLLEN, the binary that supervises; default SRC/build/pollen).

. "$SRC/tests/netns/lib.sh"

OUT=
skip() { echo "SKIP: $*"; exit 77; }
fail() {
  echo "FAIL: $*"
  [ -n "$OUT" ] && [ -r "$OUT" ] && { echo "--- last lines of $OUT:"; tail -n 40 "$OUT"; }
  exit 1
}
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# harness_setup: skips (77) where namespaces or Open MPI are missing, else makes h1..h3, their
# folder W (W/hI, seen on host I as W/node), the hostfile W/h1/hostfile, and sets the cleanup.
harness_setup() {
  T_START=$(now)
  netns_available || skip "needs root and ip netns ($NETNS_WHY)"
  local t
  for t in mpirun timeout awk; do command -v "$t" >/dev/null || skip "needs $t (Open MPI)"; done
  netns_trap
  W=$(mktemp -d "${TMPDIR:-/tmp}/pollen-netns.XXXXXX") || fail "mktemp"
  netns_create 3 "$W" || fail "could not create 3 namespace hosts"
  SUB=$NETNS_SUBNET.0/24
  AGENT=$SRC/tests/netns/rsh-agent.sh
  SUPERVISOR=$(realpath "${POLLEN:-$SRC/build/pollen}")
  [ -x "$SUPERVISOR" ] || skip "no pollen binary at $SUPERVISOR (set POLLEN)"
  mkdir -p "$W/bin" # outside every host folder: programs here are "installed" on all hosts
  printf '%s slots=1\n' "$(netns_addr 1)" "$(netns_addr 2)" "$(netns_addr 3)" >"$W/h1/hostfile"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # mpirun on h1 starts every daemon itself (a daemon on h2 starting h3's would run the agent
  # in a clean environment without NETNS_WORK).
  export OMPI_MCA_plm_rsh_no_tree_spawn=1
  # Ranks left waiting on a lost peer sleep instead of spinning on the machine's shared cores.
  export OMPI_MCA_mpi_yield_when_idle=1
  # Test speed only: when a job ends non-zero (every preemption does), mpirun otherwise waits
  # ~4 s (SIGTERM, then SIGKILL after this timeout) before it exits.
  export OMPI_MCA_odls_base_sigkill_timeout=0
}

ok() { echo "ok: $* [at $(since "$T_START")s]"; }

# launch ARGS...: `pollen launch` on host LAUNCH_HOST (default 1) over the test network, rank
# binary $PROGRAM (it runs `$PROGRAM train ...`); ARGS are pollen launch's, then -- and the
# train flags. LAUNCH_TIMEOUT (default 120) bounds the whole supervision.
launch() {
  local v exports=()
  # Ranks on h2 and h3 start in a clean environment, like over ssh: a sanitizer build's
  # settings must travel explicitly.
  for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; do
    [ -n "${!v:-}" ] && exports+=(--export "$v")
  done
  netns_run "${LAUNCH_HOST:-1}" timeout -k 5 "${LAUNCH_TIMEOUT:-120}" "$SUPERVISOR" launch --hostfile "${HOSTFILE:-hostfile}" \
    --net "$SUB" --probe-timeout 5 --mca plm_rsh_agent "$AGENT" --pollen "$PROGRAM" "${exports[@]}" "$@"
}

# wait_line FILE PATTERN PID [SECONDS]: until FILE has a line matching PATTERN (grep -E),
# while PID lives; fails the test otherwise.
wait_line() {
  local i n=$((${4:-30} * 10))
  for ((i = 0; i < n; i++)); do
    grep -Eq -- "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  grep -Eq -- "$2" "$1" || fail "no line matching '$2' in $1"
}

# lose_host HOW LIMIT READY -- LAUNCH_ARGS...: start a job through launch(), wait for a
# line matching READY, then lose h3 HOW (cut: its cable pulled; kill: its rank process killed,
# KILL_PATTERN names it), and require the launch to end non-zero within LIMIT seconds (give
# it --max-restarts 0: the supervisor then gives up at the first failure). Sets DETECT_SECS,
# DETECT_STATUS and OUT.
lose_host() {
  local how=$1 limit=$2 ready=$3 t0 bg
  shift 4
  OUT=$W/lost-$how-$RANDOM.txt
  : >"$OUT"
  launch "$@" >>"$OUT" 2>&1 &
  bg=$!
  wait_line "$OUT" "$ready" "$bg"
  t0=$(now)
  case $how in
    cut) netns_cut 3 ;;
    kill) netns_kill 3 KILL "$KILL_PATTERN" || fail "no process matching '$KILL_PATTERN' on h3 to kill" ;;
  esac
  wait "$bg"
  DETECT_STATUS=$?
  DETECT_SECS=$(since "$t0")
  [ "$DETECT_STATUS" != 0 ] || fail "job exited 0 with h3 lost ($how)"
  awk -v s="$DETECT_SECS" -v l="$limit" 'BEGIN { exit !(s <= l) }' ||
    fail "job took ${DETECT_SECS}s to end with h3 lost ($how), limit ${limit}s"
}

# After a cut: h3's own daemon must notice too and take its rank down (no orphan training on
# alone), then the cable goes back in for the next case.
expect_h3_empty_then_reconnect() {
  local i
  for ((i = 0; i < 20; i++)); do [ -z "$(netns_pids 3)" ] && break; sleep 0.5; done
  [ -z "$(netns_pids 3)" ] || fail "processes left on h3 10 s after the job ended: $(netns_pids 3 | tr '\n' ' ')"
  netns_uncut 3
  netns_wait_links || fail "h3 did not come back after its cable was plugged in again"
}
