#!/bin/bash
# bench_train.sh - images/s of `pollen train` across three namespace hosts (lib.sh), launched
# by pollen launch, with each host's link optionally rate-limited (tc tbf), for
# BENCHMARKS.md. Not a test: run it by hand, as root.
#
# usage: bench_train.sh [--rate RATE] [--pollen PATH] [--src PHOTOS] [--max-side S]
#                       [--threads T] -- [pollen train flags]
#   --rate RATE    per-link limit both ways, tc syntax (1gbit, 100mbit); default: none
#   --src PHOTOS   photo folder prepared on h1 only (default tests/data/flowers_sample)
# Prints the link speed measured h2 -> h1 (64 MB over TCP), the staging time, and the median
# and mean img/s of rank 0's log lines after the first 3.
set -u
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$SRC/tests/netns/lib.sh"
rate= pollen=$SRC/build/pollen photos=$SRC/tests/data/flowers_sample max_side=0 threads=1
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=$2; shift 2 ;;
    --pollen) pollen=$2; shift 2 ;;
    --src) photos=$2; shift 2 ;;
    --max-side) max_side=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "bench_train.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
pollen=$(realpath "$pollen") photos=$(realpath "$photos") # hosts start in their own folder
netns_available || { echo "bench_train.sh: needs root and ip netns ($NETNS_WHY)" >&2; exit 2; }
netns_trap
W=$(mktemp -d "${TMPDIR:-/tmp}/pollen-netns-bench.XXXXXX")
netns_create 3 "$W" || exit 1
if [ -n "$rate" ]; then
  for i in 1 2 3; do netns_rate_limit "$i" "$rate" || exit 1; done
fi
printf '%s slots=1\n' "$(netns_addr 1)" "$(netns_addr 2)" "$(netns_addr 3)" >"$W/h1/hostfile"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_no_tree_spawn=1

# Link check: 64 MB from h2 to h1 over one TCP connection.
netns_run 1 /usr/bin/python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5201)); s.listen(1); c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
' &
sleep 0.5
netns_run 2 /usr/bin/python3 -c '
import socket, time, sys
s = socket.create_connection((sys.argv[1], 5201)); buf = b"\0" * (1 << 20); t = time.time()
for _ in range(64): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); dt = time.time() - t
print("link h2 -> h1: %.0f Mbit/s (64 MB in %.2f s)" % (64 * 8 * 1.048576 / dt, dt))
' "$(netns_addr 1)"
wait

netns_run 1 "$pollen" prepare --src "$photos" --out "$W/node/data" --max-side "$max_side" >/dev/null 2>&1 ||
  { echo "bench_train.sh: pollen prepare failed" >&2; exit 1; }
echo "data on h1: $(du -sh "$W/h1/data" | cut -f1)"
out=$W/train.txt
netns_run 1 timeout -k 5 900 "$pollen" launch --hostfile hostfile --max-restarts 0 \
  --net "$NETNS_SUBNET.0/24" --threads "$threads" --mca plm_rsh_agent "$SRC/tests/netns/rsh-agent.sh" \
  --pollen "$pollen" -- --data "$W/node/data" --cache-dir "$W/node/cache" --job "$W/node/job" \
  --threads "$threads" "$@" >"$out" 2>&1
echo "pollen launch exit $?"
grep -E 'staging: sent' "$out" | sed 's/^/  /'
grep -Eo '[0-9.]+ img/s  comm [0-9.]+ ms' "$out" | tail -n +4 | sort -n | awk '
  { v[++n] = $1; s += $1; c += $4 }
  END {
    if (!n) { print "no img/s lines after the first 3"; exit 1 }
    m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    printf "img/s over %d log lines: median %.1f, mean %.1f; comm mean %.1f ms/step\n", n, m, s / n, c / n
  }'
