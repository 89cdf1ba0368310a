#!/usr/bin/env bash
# bench_status_live.sh - what the status socket costs a live training job (BENCHMARKS.md,
# "Status socket"): images/s of mnv3-small width 1.0, size 128, global batch 16, --threads 2,
# OMP_WAIT_POLICY=passive, STEPS steps, with CLIENTS clients polling `status` at HZ versus
# none. Runs alternate (none, polled, polled, none, ...) so that the load other users put on
# the machine hits both alike. Per run: the median of the per-step images/s in metrics.jsonl
# (first 5 steps and epoch-end points left out), the job's CPU seconds, and the CPU seconds
# of its status thread (named pollen-status). Also the status latency the clients saw.
#   usage: POLLEN=build/pollen tests/bench_status_live.sh [PAIRS [STEPS [CLIENTS [HZ]]]]
set -euo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=$(cd "$(dirname "$0")/.." && pwd)
PAIRS=${1:-5} STEPS=${2:-40} CLIENTS=${3:-100} HZ=${4:-10}
REAL=$(readlink -f "$POLLEN")
tmp=$(mktemp -d /tmp/pollen-bench-status-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 160 >/dev/null 2>&1
export OMP_WAIT_POLICY=passive

# The status thread's CPU seconds, sampled until process $1 ends.
thread_cpu() {
  python3 -c '
import glob, os, sys, time
pid, last, hz = sys.argv[1], 0.0, os.sysconf("SC_CLK_TCK")
while os.path.exists("/proc/%s" % pid):
    for t in glob.glob("/proc/%s/task/*" % pid):
        try:
            if open(t + "/comm").read().strip() == "pollen-status":
                f = open(t + "/stat").read().rsplit(")", 1)[1].split()
                last = (int(f[11]) + int(f[12])) / hz
        except OSError:
            pass
    time.sleep(0.05)
print(last)' "$1"
}

# run_one KIND N: prints "KIND median_images_per_s job_cpu_s thread_cpu_s steps [load json]"
run_one() {
  local kind=$1 job=$tmp/job-$1-$2 load="" tpid="" p
  /usr/bin/time -f "%U %S" -o "$job.cpu" "$POLLEN" train --data "$tmp/data" \
    --job "$job" --model mnv3-small --width 1.0 --size 128 --batch 16 --threads 2 \
    --max-steps "$STEPS" --epochs 1000 --log-every 1 >"$job.log" 2>&1 &
  local pid=$!
  until "$POLLEN" status "$job" >/dev/null 2>&1; do
    kill -0 $pid 2>/dev/null || { echo "job ended before its socket answered" >&2; tail "$job.log" >&2; exit 1; }
    sleep 0.02
  done
  for p in $(pgrep -P $pid); do [ "$(readlink -f /proc/$p/exe)" = "$REAL" ] && tpid=$p; done
  thread_cpu "$tpid" >"$job.thread" &
  local sampler=$!
  if [ "$kind" = polled ]; then
    python3 "$SRC/tests/status_client.py" load "$job" "$CLIENTS" "$HZ" 600 >"$job.load" &
    load=$!
  fi
  wait $pid || { echo "training failed:" >&2; tail "$job.log" >&2; exit 1; }
  wait $sampler
  [ -z "$load" ] || wait "$load"
  python3 -c '
import json, statistics, sys, os
pts = [json.loads(l) for l in open(sys.argv[1])]
ips = [p["images_per_s"] for p in pts if p.get("loss") is not None and p["step"] > 5]
cpu = sum(float(x) for x in open(sys.argv[3]).read().split()[-2:])
thread = float(open(sys.argv[4]).read())
extra = open(sys.argv[5]).read().strip() if os.path.exists(sys.argv[5]) else ""
print(sys.argv[2], round(statistics.median(ips), 2), round(cpu, 2), thread, len(ips), extra)
' "$job/metrics.jsonl" "$kind" "$job.cpu" "$job.thread" "$job.load"
}

res=$tmp/results
# none, polled, polled, none, ...: interleaved, and neither always goes first.
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then order="none polled"; else order="polled none"; fi
  for kind in $order; do run_one "$kind" "$i" | tee -a "$res"; done
done
python3 -c '
import json, statistics, sys
runs, lat = {"none": [], "polled": []}, []
for line in open(sys.argv[1]):
    kind, med, cpu, thread, n, *extra = line.split(" ", 5)
    runs[kind].append((float(med), float(cpu), float(thread)))
    if extra and extra[0].strip():
        lat.append(json.loads(extra[0]))
med = lambda kind, i: statistics.median(r[i] for r in runs[kind])
mn, mp = med("none", 0), med("polled", 0)
print("none   images/s per run:", [r[0] for r in runs["none"]], "median", mn)
print("polled images/s per run:", [r[0] for r in runs["polled"]], "median", mp)
print("ratio polled/none: %.4f" % (mp / mn))
print("job CPU s per run (median): none %.2f, polled %.2f (ratio %.4f)" % (
      med("none", 1), med("polled", 1), med("polled", 1) / med("none", 1)))
print("status thread CPU s per run (median): none %.3f, polled %.3f = %.2f%% of the polled job CPU" % (
      med("none", 2), med("polled", 2), 100 * med("polled", 2) / med("polled", 1)))
print("status latency over %d polled runs: median of medians %.3f ms, median p99 %.3f ms, max %.3f ms; "
      "requests/s %.0f, errors %d, client CPU %.0f%% of a core" % (
      len(lat), statistics.median(l["median_ms"] for l in lat), statistics.median(l["p99_ms"] for l in lat),
      max(l["max_ms"] for l in lat), statistics.median(l["rate"] for l in lat), sum(l["errors"] for l in lat),
      100 * statistics.median(l["client_cpu_s"] / l["wall_s"] for l in lat)))
' "$res"
