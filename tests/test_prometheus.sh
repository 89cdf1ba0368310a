#!/usr/bin/env bash
# test_prometheus.sh - GET /metrics of a real job by Prometheus' own checker: two scrapes a
# second apart each pass `promtool check metrics` silently, the counters grow, the step-time
# histogram counts every step, the series set does not change, and /healthz answers without a
# token; the token is the one --status-token-file names; the restarts of pollen launch's
# record (POLLEN_LAUNCH) are pollen_restarts_total. Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
command -v promtool >/dev/null || { echo "SKIP: promtool (Debian's prometheus package) needed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 needed for the HTTP client"; exit 77; }
. "$SRC/tests/status_lib.sh" prometheus
job=$tmp/job
# get PATH [TOKEN]: prints the HTTP status, then the body (loopback only)
get() {
  python3 - "$port" "$1" "${2:-}" <<'PY'
import sys, urllib.request, urllib.error
port, path, token = sys.argv[1:4]
req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path))
if token:
    req.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write("%d\n%s" % (code, body.decode()))
PY
}
# value NAME SCRAPE: the sample's value
value() { awk -v n="$1" '$1 == n { print $2 }' <<<"$2"; }

"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 64 >/dev/null 2>&1 \
  || fail "pollen prepare"
# The token from a file, as a Kubernetes Secret mounted in the pod gives it (deploy/kubernetes).
secret=promtest-token_0123456789abcdef
printf '%s\n' "$secret" >"$tmp/secret"
# Started as `pollen launch` starts a rank: its record of the launch in POLLEN_LAUNCH.
launch_record='{"v":1,"attempt":3,"restarts":2,"hosts":["localhost"],"world":1,"ranks_per_node":1,"excluded":["h9"],"start_time":1796000000,"end_time":null,"resumed_step":null,"last_step":null,"exit_status":null,"outcome":"running","reason":"","decision":"","decision_reason":"","last_failure":{"reason":"lost host h9 (rank 1)","exit_status":1,"step":12,"time":1795999990,"down_s":7.5}}'
POLLEN_LAUNCH=$launch_record timeout -k 5 300 "$POLLEN" train --data "$tmp/data" --job "$job" --size 64 --batch 16 --width 0.5 \
  --epochs 5000 --threads 2 --status-tcp 127.0.0.1:0 --status-token-file "$tmp/secret" >"$tmp/job.log" 2>&1 &
job_pid=$!
deadline=$((SECONDS + 60))
until grep -q "TCP port [0-9]" "$tmp/job.log" 2>/dev/null && [ -s "$job/status.token" ]; do
  kill -0 "$job_pid" 2>/dev/null || fail "the job exited before its status server started"
  [ $SECONDS -lt $deadline ] || fail "no TCP port logged within 60 s"
  sleep 0.1
done
port=$(sed -n 's/.*TCP port \([0-9]*\).*/\1/p' "$tmp/job.log" | head -1)
token=$(cat "$job/status.token")
[ "$token" = "$secret" ] || fail "status.token is not the --status-token-file token: $token"

out=$(get /healthz)
[ "$out" = $'200\nok' ] || fail "GET /healthz without a token: $out"
[ "$(get /metrics | head -1)" = 401 ] || fail "GET /metrics without a token should be 401"

# scrape: the body of one scrape, after promtool passed it silently; waits for a first step
scrape() {
  local out body lint
  out=$(get /metrics "$token")
  [ "$(head -1 <<<"$out")" = 200 ] || fail "GET /metrics: $out"
  body=$(tail -n +2 <<<"$out")
  lint=$(promtool check metrics <<<"$body" 2>&1) || fail "promtool check metrics: $lint"
  [ -z "$lint" ] || fail "promtool check metrics said: $lint"
  printf '%s\n' "$body"
}
deadline=$((SECONDS + 60))
while :; do
  s1=$(scrape) || exit 1
  [ "$(value pollen_steps_total "$s1")" != 0 ] && break
  [ $SECONDS -lt $deadline ] || fail "no step within 60 s"
  sleep 0.2
done
sleep 1
s2=$(scrape) || exit 1

for m in pollen_steps_total pollen_images_total pollen_step_seconds_count; do
  a=$(value $m "$s1") b=$(value $m "$s2")
  python3 -c "import sys; sys.exit(not float(sys.argv[2]) > float(sys.argv[1]) > 0)" "$a" "$b" \
    || fail "$m did not grow: $a then $b"
done
for s in "$s1" "$s2"; do
  [ "$(value pollen_step_seconds_count "$s")" = "$(value pollen_steps_total "$s")" ] \
    || fail "the histogram's _count is not the steps done"
  [ "$(value 'pollen_step_seconds_bucket{le="+Inf"}' "$s")" = "$(value pollen_step_seconds_count "$s")" ] \
    || fail "the +Inf bucket is not _count"
  [ "$(grep -c '^pollen_state{' <<<"$s")" = 7 ] && [ "$(grep '^pollen_state{' <<<"$s" | awk '{t += $2} END {print t}')" = 1 ] \
    || fail "pollen_state: one state at 1 among 7: $(grep '^pollen_state' <<<"$s")"
done
python3 -c "import sys, time; t = float(sys.argv[1]); sys.exit(not abs(time.time() - t) < 60)" \
  "$(value pollen_last_step_timestamp_seconds "$s2")" || fail "pollen_last_step_timestamp_seconds is not recent"
[ "$(value pollen_restarts_total "$s2")" = 2 ] || fail "pollen_restarts_total is not the launch record's 2 restarts"
series() { grep -v '^#' <<<"$1" | sed 's/ [^ ]*$//' | sort; }
[ "$(series "$s1")" = "$(series "$s2")" ] || fail "the series set changed: $(diff <(series "$s1") <(series "$s2"))"

"$POLLEN" ctl "$job" stop >/dev/null 2>&1 || fail "pollen ctl stop"
wait "$job_pid"
rc=$?
job_pid=""
[ $rc = 75 ] || fail "the stopped job exited $rc, not 75"
echo "PASS: two scrapes pass promtool; counters grow, the histogram counts each step, the series stay"
