#!/usr/bin/env bash
# test_status_edges.sh - the status socket of a real 1-rank job at the edges (issue 18):
# status.sock and status.token removed when the job dies after the server started and after
# a normal stop; bursts of 1500 clients that connect and close (Unix socket and loopback
# TCP, under a soft limit of 1024 open files), each followed by a real request that must be
# answered; HTTP methods other than GET answered 405; an empty token refused as auth_failed.
# Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
CLIENT=$SRC/tests/status_client.py
command -v python3 >/dev/null || { echo "SKIP: python3 needed for the socket client"; exit 77; }
. "$SRC/tests/status_lib.sh" status-edges
check() { python3 -c "import json,sys; o=json.loads(sys.argv[1]); $2" "$1" || fail "${3:-check}: $1"; }
no_files() { # no_files JOB WHEN: neither status.sock nor status.token is left
  [ -e "$1/status.sock" ] && fail "$2: $1/status.sock left behind"
  [ -e "$1/status.token" ] && fail "$2: $1/status.token left behind"
  return 0
}

"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 80 >/dev/null 2>&1 \
  || fail "pollen prepare"
TRAIN=(train --data "$tmp/data" --size 160 --batch 8 --width 0.35 --log-every 1 --threads 1 --loader-threads 1 --status-tcp 0)

say "a job that dies after its status server started removes status.sock and status.token"
# A checkpoint that does not verify is found after the server is up, and is fatal (exit 1).
job=$tmp/dead
mkdir -p "$job/checkpoints"
head -c 4096 /dev/urandom >"$job/checkpoints/step-000000011.ckpt"
timeout -k 5 120 "$POLLEN" "${TRAIN[@]}" --epochs 2 --job "$job" >"$tmp/dead.log" 2>&1
rc=$?
[ $rc = 1 ] || fail "a job with only a corrupt checkpoint should exit 1, got $rc"
grep -q "TCP port [0-9]" "$tmp/dead.log" || fail "the job died before its status server started"
no_files "$job" "after the job died"

say "bursts of departed clients, under a soft limit of 1024 open files"
job=$tmp/live
# The server lifts the soft limit (up to the hard one) so that the cap, not EMFILE, decides.
(ulimit -Sn 1024 2>/dev/null; exec timeout -k 5 300 "$POLLEN" "${TRAIN[@]}" --epochs 100000 --job "$job") \
  >"$tmp/live.log" 2>&1 &
job_pid=$!
deadline=$((SECONDS + 60))
until [ -S "$job/status.sock" ] && grep -q "TCP port [0-9]" "$tmp/live.log" 2>/dev/null; do
  kill -0 "$job_pid" 2>/dev/null || fail "the job exited before serving"
  [ $SECONDS -lt $deadline ] || fail "no status socket within 60 s"
  sleep 0.1
done
port=$(sed -n 's/.*and TCP port \([0-9]*\) .*/\1/p' "$tmp/live.log" | head -1)
token=$(cat "$job/status.token")
[ -n "$port" ] && [ ${#token} = 32 ] || fail "port '$port' or token '$token'"
for round in 1 2 3; do
  b=$(python3 "$CLIENT" burst "$job" 1500) || fail "Unix burst $round: $b"
  st=$(python3 "$CLIENT" req "$job" '{"cmd":"status"}') || fail "no answer after Unix burst $round: $st"
  check "$st" "assert o['ok'] is True and o['cmd'] == 'status'" "status after Unix burst $round ($b)"
  b=$(python3 "$CLIENT" burst "tcp:$port" 1500) || fail "TCP burst $round: $b"
  st=$(python3 "$CLIENT" tcp "$port" "$token" '{"cmd":"status"}' | tail -1) || fail "no TCP answer after burst $round"
  check "$st" "assert o['ok'] is True and o['cmd'] == 'status'" "status after TCP burst $round ($b)"
done
# The departed clients are let go: the job holds few descriptors afterwards.
sleep 0.5
n_fd=$(ls "/proc/$job_pid/fd" 2>/dev/null | wc -l)
pollen_pid=$(pgrep -P "$job_pid" | head -1)
[ -n "$pollen_pid" ] && n_fd=$(ls "/proc/$pollen_pid/fd" 2>/dev/null | wc -l)
[ "$n_fd" -lt 200 ] || fail "the job holds $n_fd descriptors after the bursts"

say "HTTP methods other than GET: 405 with Allow: GET"
for m in POST HEAD PUT DELETE OPTIONS PATCH; do
  r=$(python3 "$CLIENT" method "$port" "$token" "$m") || fail "$m /metrics: $r"
  check "$r" "assert o['status_line'] == 'HTTP/1.1 405 Method Not Allowed' and o['allow'] == 'GET', 'head'
assert (o['body_bytes'] == 0) == ('$m' == 'HEAD'), 'HEAD answers the head alone'" "$m /metrics"
done
[ "$(python3 "$CLIENT" http "$port" "$token" | head -1)" = 200 ] || fail "GET /metrics after the 405s"

say "an empty token is a failed auth"
r=$(python3 "$CLIENT" tcp "$port" "" '{"cmd":"status"}' 2>/dev/null | head -1)
check "$r" "assert o['ok'] is False and o['code'] == 'auth_failed'" "empty token"

say "a normal stop removes status.sock and status.token"
out=$("$POLLEN" ctl "$job" stop 2>&1) || fail "ctl stop: $out"
deadline=$((SECONDS + 60))
while kill -0 "$job_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
wait "$job_pid"
rc=$?
job_pid=""
[ $rc = 75 ] || fail "after ctl stop the job should exit 75, got $rc"
no_files "$job" "after the stop"
echo "PASS"
