# lib.sh - throwaway "hosts" for multi-host tests on one machine, made of Linux namespaces.
#
# Source it from bash (needs root, iproute2, util-linux unshare). Each host hI is a network
# namespace with one veth link "eth0" to a bridge that lives in its own "switch" namespace, an
# address NETNS_SUBNET.I/24, loopback up and no default route, so nothing in a test can reach
# or touch the machine's real network. Processes started with netns_run also get their own
# hostname (UTS namespace: Open MPI keys its session folders and MPI_Get_processor_name on it)
# and their own mount namespace in which host I's folder NETNS_WORK/hI also appears at
# NETNS_WORK/node (one path, a different folder on every host, like a local disk) and the other
# hosts' folders are hidden under empty read-only tmpfs: the hosts share one filesystem, yet
# data that must travel between hosts has to go over the network.
#
#   netns_available            0 if this machine can do it; else NETNS_WHY says why
#   netns_create N WORKDIR     make hosts h1..hN, the switch, WORKDIR/h1..hN, WORKDIR/netns.map
#   netns_trap                 clean up on every exit path (EXIT, INT, TERM, HUP)
#   netns_run I CMD...         run CMD on host I (its netns, hostname hI, cwd NETNS_WORK/node)
#   netns_addr I / netns_ns I / netns_dir I    host I's address / namespace / folder
#   netns_rate_limit I RATE    token-bucket limit both directions of host I's link (e.g. 1gbit)
#   netns_cut I / netns_uncut I   pull / plug host I's cable (its switch port down / up)
#   netns_reachable I J         0 when host J answers host I over the network
#   netns_kill I [SIGNAL [PATTERN]]   signal host I's processes (those whose command line
#                              matches the extended regex PATTERN, if given)
#   netns_cleanup              kill everything inside, delete the namespaces and WORKDIR
#
# Names are unique per run (NETNS_ID, default pollen-<pid>), so parallel tests never collide;
# the subnet may repeat between runs since each run's switch is its own namespace.

NETNS_ID=${NETNS_ID:-pollen-$$}
NETNS_SUBNET=${NETNS_SUBNET:-10.231.7}
NETNS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NETNS_N=0
NETNS_WORK=
NETNS_WHY=
NETNS_CLEANED=0

netns_ns() { echo "$NETNS_ID-h$1"; }
netns_addr() { echo "$NETNS_SUBNET.$1"; }
netns_dir() { echo "$NETNS_WORK/h$1"; }
netns_switch() { echo "$NETNS_ID-sw"; }

netns_available() {
  if [ "$(id -u)" != 0 ]; then NETNS_WHY="not root"; return 1; fi
  local t
  for t in ip tc unshare mountpoint; do
    command -v "$t" >/dev/null 2>&1 || { NETNS_WHY="no '$t' command"; return 1; }
  done
  local probe="$NETNS_ID-probe"
  if ! ip netns add "$probe" 2>/dev/null; then NETNS_WHY="'ip netns add' is not permitted here"; return 1; fi
  if ! ip netns exec "$probe" unshare --uts --mount --propagation private true 2>/dev/null; then
    ip netns del "$probe" 2>/dev/null
    NETNS_WHY="'unshare --uts --mount' is not permitted here"
    return 1
  fi
  ip netns del "$probe"
}

# Namespaces of earlier runs killed too hard for their trap (SIGKILL): default-named ones whose
# process is gone. Processes still inside are killed first, so nothing keeps their network.
netns_sweep_stale() {
  local ns pid p
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^pollen-[0-9]+-(h[0-9]+|sw|probe)$'); do
    pid=${ns#pollen-}
    pid=${pid%%-*}
    [ "$pid" != $$ ] && ! kill -0 "$pid" 2>/dev/null || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  return 0
}

# netns_create N WORKDIR: on any failure it cleans up what it made and returns 1.
netns_create() {
  local n=$1 work=$2 i sw
  netns_sweep_stale
  NETNS_N=$n
  NETNS_WORK=$(mkdir -p "$work" && cd "$work" && pwd) || return 1
  sw=$(netns_switch)
  {
    mkdir -p "$NETNS_WORK/node" && ip netns add "$sw" &&
      ip -n "$sw" link set lo up &&
      ip -n "$sw" link add br0 type bridge &&
      ip -n "$sw" link set br0 up
  } || { netns_cleanup; return 1; }
  : >"$NETNS_WORK/netns.map"
  printf '127.0.0.1 localhost\n' >"$NETNS_WORK/hosts"
  for ((i = 1; i <= n; i++)); do
    {
      ip netns add "$(netns_ns "$i")" &&
        ip link add eth0 netns "$(netns_ns "$i")" type veth peer name "p$i" netns "$sw" &&
        ip -n "$sw" link set "p$i" master br0 up &&
        ip -n "$(netns_ns "$i")" link set lo up &&
        ip -n "$(netns_ns "$i")" addr add "$(netns_addr "$i")/24" dev eth0 &&
        ip -n "$(netns_ns "$i")" link set eth0 up &&
        mkdir -p "$(netns_dir "$i")"
    } || { netns_cleanup; return 1; }
    # One line per host: index, address, hostname, namespace (read by rsh-agent.sh).
    printf '%d %s h%d %s\n' "$i" "$(netns_addr "$i")" "$i" "$(netns_ns "$i")" >>"$NETNS_WORK/netns.map"
    printf '%s h%d\n' "$(netns_addr "$i")" "$i" >>"$NETNS_WORK/hosts"
  done
  export NETNS_ID NETNS_SUBNET NETNS_N NETNS_WORK
  netns_wait_links
}

# netns_reachable FROM TO: 0 when host TO answers on the network from host FROM. A TCP connect
# to a closed port is the probe (no ping needed): "refused" is an answer from TO's kernel.
netns_reachable() {
  local out
  out=$(ip netns exec "$(netns_ns "$1")" timeout 2 bash -c \
    "exec 3<>/dev/tcp/$(netns_addr "$2")/9" 2>&1) && return 0
  case $out in *refused*) return 0 ;; *) return 1 ;; esac
}

# Links take a moment to come up; wait until every host answers host 1 so tests never race
# the setup.
netns_wait_links() {
  local i t
  for ((i = 2; i <= NETNS_N; i++)); do
    for ((t = 0; t < 50; t++)); do
      netns_reachable 1 "$i" && break
      sleep 0.1
    done
    [ "$t" -lt 50 ] || { echo "netns: host h$i does not answer from h1" >&2; return 1; }
  done
}

netns_trap() {
  trap 'netns_cleanup' EXIT
  trap 'netns_cleanup; exit 130' INT
  trap 'netns_cleanup; exit 143' TERM
  trap 'netns_cleanup; exit 129' HUP
}

# netns_run I CMD...: CMD replaces the shell, so its exit status is CMD's.
netns_run() {
  local i=$1
  shift
  [ "$i" -ge 1 ] && [ "$i" -le "$NETNS_N" ] || { echo "netns_run: no host $i (1..$NETNS_N)" >&2; return 2; }
  ip netns exec "$(netns_ns "$i")" unshare --uts --mount --propagation private \
    bash "$NETNS_LIB/enter.sh" "$i" "$NETNS_N" "$NETNS_WORK" "$@"
}

# netns_rate_limit I RATE [BURST]: both directions, so a transfer either way sees RATE.
netns_rate_limit() {
  local i=$1 rate=$2 burst=${3:-256kb}
  tc -n "$(netns_switch)" qdisc replace dev "p$i" root tbf rate "$rate" burst "$burst" latency 50ms &&
    tc -n "$(netns_ns "$i")" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 50ms
}

# Pulling the cable at the switch: the other hosts get no signal at all (no RST, no FIN), as
# when a machine loses power or its switch port dies; only timeouts can notice.
netns_cut() { ip -n "$(netns_switch)" link set "p$1" down; }
netns_uncut() { ip -n "$(netns_switch)" link set "p$1" up; }

netns_pids() { ip netns pids "$(netns_ns "$1")" 2>/dev/null; }

netns_kill() {
  local i=$1 sig=${2:-KILL} pattern=${3:-} pid n=0
  for pid in $(netns_pids "$i"); do
    if [ -n "$pattern" ]; then
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq -- "$pattern" || continue
    fi
    kill "-$sig" "$pid" 2>/dev/null && n=$((n + 1))
  done
  [ "$n" -gt 0 ]
}

# Safe to call more than once and from any point of netns_create.
netns_cleanup() {
  [ "$NETNS_CLEANED" = 1 ] && return 0
  NETNS_CLEANED=1
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NETNS_ID-(h[0-9]+|sw)\$"); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NETNS_ID-(h[0-9]+|sw)\$"); do
    ip netns del "$ns" 2>/dev/null
  done
  if [ -n "$NETNS_WORK" ] && [ -d "$NETNS_WORK" ] && [ "${NETNS_KEEP:-0}" != 1 ]; then
    rm -rf -- "$NETNS_WORK"
  fi
  return 0
}
