#!/bin/bash
# bench_replica.sh - what checkpoint replication (daemon/replica.h) costs a 3-host job on
# namespace hosts (lib.sh) with node-local job folders: rank 0's step time with --replicas 1
# and 0 (median, and mean over the steps right after a checkpoint), how long a checkpoint
# takes to reach the replica (rank 1's "installed ... N s after" lines) and each side's peak
# memory. Not a test: run it by hand, as root.
#
# usage: bench_replica.sh [--rate RATE] [--pollen PATH] [--runs N] -- [pollen train flags]
#   --rate RATE    per-link limit both ways, tc syntax (1gbit, 100mbit); default: none
#   --runs N       runs of each setting, alternated (default 2)
set -u
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$SRC/tests/netns/lib.sh"
rate= pollen=$SRC/build/pollen runs=2
while [ $# -gt 0 ]; do
  case $1 in
    --rate) rate=$2; shift 2 ;;
    --pollen) pollen=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "bench_replica.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
pollen=$(realpath "$pollen")
netns_available || { echo "bench_replica.sh: needs root and ip netns ($NETNS_WHY)" >&2; exit 2; }
netns_trap
W=$(mktemp -d "${TMPDIR:-/tmp}/pollen-netns-bench.XXXXXX")
netns_create 3 "$W" || exit 1
if [ -n "$rate" ]; then
  for i in 1 2 3; do netns_rate_limit "$i" "$rate" || exit 1; done
fi
printf '%s slots=1\n' "$(netns_addr 1)" "$(netns_addr 2)" "$(netns_addr 3)" >"$W/h1/hostfile"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_no_tree_spawn=1
SUB=$NETNS_SUBNET.0/24
netns_run 1 "$pollen" prepare --src "$SRC/tests/data/flowers_sample" --out "$W/node/data" --max-side 64 \
  >/dev/null 2>&1 || { echo "bench_replica.sh: pollen prepare failed" >&2; exit 1; }
for ((run = 1; run <= runs; run++)); do
  for rep in 1 0; do
    out=$W/train-$rep-$run.txt
    netns_run 1 timeout -k 5 900 mpirun --hostfile hostfile --mca plm_rsh_agent "$SRC/tests/netns/rsh-agent.sh" \
      --mca btl self,vader,tcp --mca pml ob1 --mca btl_tcp_if_include "$SUB" --mca oob_tcp_if_include "$SUB" \
      -np 3 bash -c 'exec /usr/bin/time -f "peak-rss rank $OMPI_COMM_WORLD_RANK %M KB" "$0" "$@"' "$pollen" train --data "$W/node/data" --cache-dir "$W/node/cache" \
      --job "$W/node/job-$rep-$run" --log-every 1 --replicas "$rep" "$@" >"$out" 2>&1 ||
      { echo "bench_replica.sh: run exited $? (see $out)"; tail -n 20 "$out"; exit 1; }
    # Rank 0's step times (global batch / img/s of each step's line, the first 3 left out),
    # the mean over the steps right after a checkpoint, the replica's lag, peak memory.
    med=$(awk '/rank 0 .* ranks x batch/ { for (i = 1; i <= NF; i++) if ($i == "ranks") B = $(i - 1) * $(i + 3) }
      /rank 0 epoch .* step .* img\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "img/s") if (++n > 3) print B / $i }' "$out" |
      sort -n | awk '{ v[++k] = $1; t += $1 } END { printf "%d steps, step time median %.1f ms mean %.1f ms", k, 1e3 * (k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2), 1e3 * t / k }')
    rest=$(awk '
      /rank 0 .* ranks x batch/ { for (i = 1; i <= NF; i++) if ($i == "ranks") B = $(i - 1) * $(i + 3) }
      /rank 0 epoch .* step .* img\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "img/s") ips = $i
        if (++n > 3 && after) { m += B / ips; c++ } after = 0 }
      /rank 0 checkpoint step [0-9]+ saved/ { after = 1 }
      /replica of checkpoint step .* installed/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "s" && $(i + 2) == "after") { lag += $i; nl++; if ($i > maxlag) maxlag = $i } }
      /installed in .*checkpoints \(/ { mb = $0; sub(/.*checkpoints \(/, "", mb); sub(/ MB.*/, "", mb) }
      /^peak-rss rank/ { rss[$3] = $4 }
      END {
        printf "after a checkpoint mean %.1f ms (%d)", c ? 1e3 * m / c : 0, c
        if (nl) printf "; %d replicas of %s MB, lag mean %.2f s max %.2f s", nl, mb, lag / nl, maxlag
        printf "; peak RSS (MB) rank 0 %.0f, rank 1 %.0f, rank 2 %.0f", rss[0] / 1024, rss[1] / 1024, rss[2] / 1024
      }' "$out")
    echo "--replicas $rep run $run: $med, $rest"
  done
done
