#!/usr/bin/env bash
# test_status_job.sh - the status socket of REAL training jobs (not the fake one of
# test_status_cli.sh): a 1-rank job with --status-tcp, then a 2-rank job under mpirun.
# Every request type through the live socket, `pollen status` / `pollen ctl`, the TCP token
# and GET /metrics, owner-only access, 500 clients at once, stop -> exit 75 -> resume, and a
# stale socket left by kill -9. Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
CLIENT=$SRC/tests/status_client.py
command -v python3 >/dev/null || { echo "SKIP: python3 needed for the socket client"; exit 77; }
. "$SRC/tests/status_lib.sh" status-job
# run CMD...: sets $out (stdout+stderr) and $rc
run() { out=$("$@" 2>&1); rc=$?; }
# check JSON CODE: python asserts on o (the parsed JSON)
check() { python3 -c "import json,sys,math; o=json.loads(sys.argv[1]); $2" "$1" || fail "${3:-check}: $1"; }
req() { python3 "$CLIENT" req "$job" "$@"; }

"$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$tmp/data" --max-side 80 >/dev/null 2>&1 \
  || fail "pollen prepare"
# 90 training images, batch 8: 11 steps per epoch, epochs of a fraction of a second; the job
# runs until this test stops it (the timeout only guards against a hang).
TRAIN=(train --data "$tmp/data" --size 160 --batch 8 --width 0.35 --epochs 100000 --log-every 1 --threads 1 --loader-threads 1)
REAL_POLLEN=$(readlink -f "$POLLEN")

# start_job LOG NP [flags]: launches in the background (mpirun when NP > 1), sets job_pid
start_job() {
  local log=$1 np=$2; shift 2
  if [ "$np" = 1 ]; then
    timeout -k 5 300 "$POLLEN" "${TRAIN[@]}" --job "$job" "$@" >"$log" 2>&1 &
  else
    timeout -k 5 300 mpirun -np "$np" --oversubscribe "$POLLEN" "${TRAIN[@]}" --job "$job" "$@" >"$log" 2>&1 &
  fi
  job_pid=$!
}
# wait_training: polls `pollen status --json` (deadline 60 s) until the job says training
wait_training() {
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$job_pid" 2>/dev/null || fail "the job exited before answering on its socket"
    run "$POLLEN" status "$job" --json
    [ $rc = 0 ] && grep -q '"state":"training"' <<<"$out" && return 0
    sleep 0.1
  done
  fail "no 'training' answer from $job within 60 s: $out"
}
# wait_until SECS PYTHON_CONDITION_ON_o: polls the status reply
wait_until() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    st=$(req '{"cmd":"status"}') && python3 -c "import json,sys; o=json.loads(sys.argv[1]); sys.exit(0 if ($2) else 1)" "$st" && return 0
    sleep 0.1
  done
  fail "status never satisfied '$2' within $1 s: $st"
}
# rank_pids: pids of the processes running pollen on $job, sorted
rank_pids() {
  for p in $(pgrep -f -- "--job $job" 2>/dev/null); do
    [ "$(readlink -f /proc/$p/exe 2>/dev/null)" = "$REAL_POLLEN" ] && echo "$p"
  done | sort -n | tr '\n' ' '
}
# stop_job LOG: ctl stop, the job exits 75 within 60 s
stop_job() {
  run "$POLLEN" ctl "$job" stop
  [ $rc = 0 ] && grep -q "stop requested" <<<"$out" || fail "ctl stop: exit $rc: $out"
  local deadline=$((SECONDS + 60))
  while kill -0 "$job_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  kill -0 "$job_pid" 2>/dev/null && fail "the job did not stop within 60 s of 'pollen ctl stop'"
  wait "$job_pid"; local jrc=$?; job_pid=""
  [ $jrc = 75 ] || fail "after ctl stop the job should exit 75, got $jrc"
  grep -q "stop requested (status socket): checkpointing step" "$1" || fail "no stop line in $1"
}
newest_ckpts() { "$POLLEN" checkpoints --job "$job" --json; }

# live_checks NP: the request types against the running job
live_checks() {
  local np=$1 pids
  say "$np rank(s): status fields"
  # After an epoch end: a validation accuracy and a checkpoint exist.
  wait_until 60 'o["val_acc"] is not None and o["last_checkpoint"] is not None and o["state"]=="training" and o["loss"] is not None'
  check "$st" "
assert o['ok'] is True and o['v'] == 2 and o['cmd'] == 'status', 'head'
assert o['model'] == 'mnv3-small' and o['world_size'] == $np, 'model/world'
assert o['epochs'] == 100000 and o['total_steps'] == 11 * 100000, 'totals'
# Epochs count from 1, as the log does: the epoch of the last step done (11 steps an epoch).
assert o['epoch'] == (o['step'] - 1) // 11 + 1, 'epoch matches step'
assert 0 < o['step'] < o['total_steps'], 'step'
assert 0 < o['loss'] < 10 and 0 <= o['train_acc'] <= 1 and 0 <= o['val_acc'] <= 1, 'loss/acc'
assert 0 < o['lr'] <= 0.01 and o['images_per_s'] > 0 and o['eta_s'] > 0, 'lr/ips/eta'
assert 0 < o['uptime_s'] < 300 and abs(o['time'] - __import__('time').time()) < 5, 'uptime/time'
c = o['last_checkpoint']
assert 0 < c['step'] <= o['step'] and c['path'].startswith('$job/checkpoints/step-'), 'checkpoint'
assert c['path'].endswith('/step-%09d.ckpt' % c['step']), 'checkpoint file name'
" "status fields ($np ranks)"
  local up1 step1
  up1=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["uptime_s"])' "$st")
  step1=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["step"])' "$st")

  # The checkpoint named is the one written at the start of this epoch, not the one before:
  # a finished write is noticed within a step or two.
  wait_until 15 "o['state'] == 'training' and o['step'] >= 11 * (o['epoch'] - 1) + 4 and o['last_checkpoint']['step'] >= 11 * (o['epoch'] - 1)"

  say "$np rank(s): workers"
  pids=$(rank_pids)
  [ "$(wc -w <<<"$pids")" = "$np" ] || fail "expected $np pollen processes for $job, found '$pids'"
  wk=$(req '{"cmd":"workers"}')
  check "$wk" "
import time
w = o['workers']
assert o['ok'] is True and [x['rank'] for x in w] == list(range($np)), 'one row per rank'
assert sorted(x['pid'] for x in w) == [int(p) for p in '$pids'.split()], 'pids are the ranks'
assert all(x['host'] == '$(uname -n | cut -c1-63)' for x in w), 'host'
assert all(x['step_time_s'] > 0 and x['images_per_s'] > 0 for x in w), 'timings'
assert all(0 <= x['heartbeat_age_s'] < 10 and abs(x['last_heartbeat'] - time.time()) < 10 for x in w), 'heartbeat'
assert all(x['comm_exposed_s'] >= 0 for x in w), 'comm'
assert ($np == 1) <= all(x['comm_exposed_s'] == 0 for x in w), 'no comm on 1 rank'
" "workers ($np ranks)"
  run "$POLLEN" status "$job" --workers
  [ $rc = 0 ] || fail "status --workers: exit $rc: $out"
  grep -q "^job .*$job  (\(training\|evaluating\|checkpointing\))" <<<"$out" && grep -q "mnv3-small, $np worker" <<<"$out" \
    && grep -q "^checkpoint  step [0-9]*, $job/checkpoints/step-" <<<"$out" || fail "status summary: $out"
  for p in $pids; do
    grep -Eq "^ +[0-9]+  $(uname -n | cut -c1-20) +$p +[0-9.]+ +[0-9.]+ +[0-9.]+s ago +[0-9.]+$" <<<"$out" \
      || fail "no --workers row for pid $p: $out"
  done

  say "$np rank(s): metrics history"
  m1=$(req '{"cmd":"metrics","last":1000}')
  sleep 0.5
  m2=$(req '{"cmd":"metrics","last":1000}')
  check "$m2" "
a = json.loads('''$m1''')['points']; b = o['points']
assert o['ok'] is True and len(b) >= len(a) >= 5, 'points'
assert b[-1]['step'] > a[-1]['step'], 'history grows'
assert [p['step'] for p in b] == sorted(p['step'] for p in b), 'oldest first'
assert any(p['val_acc'] is not None for p in b), 'epoch-end points carry val_acc'
assert all(p['epoch'] == (p['step'] - 1) // 11 + 1 for p in b), 'epoch numbering (from 1)'
" "metrics ($np ranks)"
  check "$(req '{"cmd":"metrics","last":3}')" "assert len(o['points']) == 3" "metrics last 3"

  say "$np rank(s): subscribe at 0.2 s"
  # Subscribe early in an epoch: 8 pushes span 1.6 s, and a validation (2-3 s under ASan)
  # filling all of them would leave the step where it was.
  wait_until 30 "o['state'] == 'training' and 1 <= o['step'] % 11 <= 5"
  sub=$(python3 "$CLIENT" subscribe "$job" 0.2 8) || fail "subscribe: $sub"
  check "$sub" "
g = o['gaps']
assert o['ack']['ok'] is True and o['ack']['interval'] == 0.2, 'ack'
assert o['pushes'] == 8, 'all pushes are status pushes'
assert all(0.05 < x < 0.6 for x in g) and 0.15 < sum(g) / len(g) < 0.3, 'interval'
assert o['steps'] == sorted(o['steps']) and o['steps'][-1] > o['steps'][0], 'steps advance'
assert o['bytes_after_unsubscribe'] == 0, 'no pushes after unsubscribe'
assert all(l is not None and ips > 0 for _, l, ips in o['figures']), 'loss and images/s shown in every state'
" "subscribe ($np ranks)"

  check "$(req '{"cmd":"status"}')" "assert o['uptime_s'] > $up1 and o['step'] > $step1" "uptime and step advance"

  say "$np rank(s): ctl checkpoint"
  local got="" try
  for try in 1 2 3; do
    before=$(req '{"cmd":"status"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
    run "$POLLEN" ctl "$job" checkpoint
    [ $rc = 0 ] && grep -q "checkpoint requested" <<<"$out" || fail "ctl checkpoint: exit $rc: $out"
    # A mid-epoch checkpoint (epoch-end ones have sample_in_epoch 0); the request may land on
    # an epoch's last step (1 in 11), then ask again.
    local deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ] && [ -z "$got" ]; do
      got=$(newest_ckpts | python3 -c "
import json, sys
c = [c for c in json.load(sys.stdin) if c['valid'] and c['step'] > $before and c['sample_in_epoch'] != 0]
print(c[0]['step'] if c else '')")
      [ -n "$got" ] || sleep 0.05
    done
    [ -n "$got" ] && break
  done
  [ -n "$got" ] || fail "no mid-epoch checkpoint appeared after 'pollen ctl checkpoint' (3 tries)"
  [ $((got % 11)) != 0 ] || fail "checkpoint $got is at an epoch end"
  wait_until 5 "o['state'] in ('training', 'evaluating') and o['step'] > $got + 2"
}

# ===================== 1 rank, with TCP =====================
job=$tmp/job1
mkdir -p "$job"
start_job "$tmp/job1.log" 1 --status-tcp 127.0.0.1:0
wait_training
grep -q "status: 'pollen status $job' ($job/status.sock) and TCP port [0-9]" "$tmp/job1.log" \
  || fail "the start-up log does not say where status is served"
[ "$(grep -c 'TCP port' "$tmp/job1.log")" = 1 ] || fail "the TCP port is logged more than once"
live_checks 1

say "TCP: token required"
port=$(sed -n 's/.*and TCP port \([0-9]*\) .*/\1/p' "$tmp/job1.log" | head -1)
token=$(cat "$job/status.token")
[ -n "$port" ] && [ ${#token} = 32 ] || fail "port '$port' or token '$token'"
[ "$(stat -c %a "$job/status.token")" = 600 ] && [ "$(stat -c %a "$job/status.sock")" = 600 ] \
  || fail "status.token / status.sock are not mode 600"
check "$(python3 "$CLIENT" tcp "$port" - '{"cmd":"status"}')" "assert o['ok'] is False and o['code'] == 'auth_required'" "TCP without token"
check "$(python3 "$CLIENT" tcp "$port" 0123456789abcdef0123456789abcdef '{"cmd":"status"}' 2>/dev/null | head -1)" \
  "assert o['ok'] is False and o['code'] == 'auth_failed'" "TCP wrong token"
out=$(python3 "$CLIENT" tcp "$port" "$token" '{"cmd":"status"}' '{"cmd":"workers"}') || fail "TCP right token: $out"
check "$(sed -n 2p <<<"$out")" "assert o['ok'] is True and o['state'] in ('training', 'evaluating', 'checkpointing') and o['world_size'] == 1" "TCP status"
check "$(sed -n 3p <<<"$out")" "assert o['ok'] is True and len(o['workers']) == 1" "TCP workers"
[ "$(python3 "$CLIENT" http "$port" - | head -1)" = 401 ] || fail "GET /metrics without a token should be 401"
[ "$(python3 "$CLIENT" http "$port" 0123456789abcdef0123456789abcdef | head -1)" = 401 ] || fail "GET /metrics with a wrong token should be 401"
prom=$(python3 "$CLIENT" http "$port" "$token")
[ "$(head -1 <<<"$prom")" = 200 ] || fail "GET /metrics with the token: $prom"
for m in pollen_loss pollen_val_accuracy pollen_images_per_second; do
  grep -q "^# TYPE $m gauge" <<<"$prom" && grep -Eq "^$m [0-9]" <<<"$prom" || fail "Prometheus $m: $prom"
done
for m in pollen_steps_total pollen_images_total; do
  grep -q "^# TYPE $m counter" <<<"$prom" && grep -Eq "^$m [0-9]" <<<"$prom" || fail "Prometheus $m: $prom"
done
grep -Eq '^pollen_worker_[a-z_]+\{rank="0",host="[^"]+"\} [0-9]' <<<"$prom" || fail "per-rank Prometheus series: $prom"
if command -v curl >/dev/null; then
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
  [ "$code" = 401 ] || fail "curl without token: $code"
  curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" | grep -q '^pollen_steps_total ' \
    || fail "curl with the token"
fi

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  say "another user cannot connect"
  chmod 755 "$tmp"  # so that only the socket's own mode keeps them out
  run setpriv --reuid=65534 --regid=65534 --clear-groups "$REAL_POLLEN" status "$job"
  [ $rc = 1 ] && grep -q "permission denied" <<<"$out" || fail "uid nobody: exit $rc: $out"
  run setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c \
    "import socket; socket.socket(socket.AF_UNIX).connect('$job/status.sock')"
  [ $rc != 0 ] && grep -q PermissionError <<<"$out" || fail "uid nobody connected to the socket: $out"
  chmod 700 "$tmp"
fi

say "500 clients at once"
many=$(python3 "$CLIENT" many "$job" 500) || fail "500 clients: $many"
check "$many" "assert o['answered_ok'] == 500 and o['all_s'] < 20" "500 clients"
s500=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["steps"][1])' "$many")
wait_until 20 "o['step'] > $s500 + 5"

say "stop -> exit 75 -> not running"
stop_job "$tmp/job1.log"
stopped=$(sed -n 's/.*stop requested (status socket): checkpointing step \([0-9]*\).*/\1/p' "$tmp/job1.log")
[ ! -e "$job/status.sock" ] && [ ! -e "$job/status.token" ] || fail "socket or token left after a clean stop"
run "$POLLEN" status "$job"
[ $rc = 3 ] && grep -q "job not running" <<<"$out" && grep -q "^last metrics  step $stopped," <<<"$out" \
  && grep -q "step-0*$stopped.ckpt" <<<"$out" && grep -Eq "^last val acc  [0-9.]+% at step [0-9]+ \(end of epoch [0-9]+\)" <<<"$out" \
  || fail "status after stop: exit $rc: $out"
run "$POLLEN" status "$job" --json
check "$out" "assert o['running'] is False and o['last_metrics']['step'] == $stopped and o['checkpoints'][0]['name'] == 'step-%09d.ckpt' % $stopped
assert o['last_validation']['step'] % 11 == 0 and o['last_validation']['step'] < $stopped" "status --json after stop"
run "$POLLEN" ctl "$job" checkpoint; [ $rc = 3 ] || fail "ctl on a stopped job: exit $rc"

say "relaunch resumes; kill -9 leaves a stale socket that the next launch replaces"
start_job "$tmp/job1b.log" 1
wait_training
grep -q "resuming from .*step-0*$stopped.ckpt: step $stopped" "$tmp/job1b.log" || fail "did not resume from step $stopped"
wait_until 30 "o['step'] > $stopped"
[ ! -e "$job/status.token" ] || fail "a token file without --status-tcp"
victim=$(rank_pids)
kill -9 $victim; wait "$job_pid" 2>/dev/null; job_pid=""
[ -S "$job/status.sock" ] || fail "kill -9 should leave the socket file behind"
run "$POLLEN" status "$job"; [ $rc = 3 ] || fail "stale socket: exit $rc: $out"
start_job "$tmp/job1c.log" 1
wait_training
grep -q "replaced stale socket" "$tmp/job1c.log" || fail "no 'replaced stale socket' line"
stop_job "$tmp/job1c.log"

# ===================== 2 ranks under mpirun =====================
if ! command -v mpirun >/dev/null; then
  echo "SKIP part: no mpirun; 2-rank checks skipped"
  echo "ok: status socket of live jobs (1 rank)"
  exit 0
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
job=$tmp/job2
mkdir -p "$job"
start_job "$tmp/job2.log" 2
wait_training
live_checks 2
stop_job "$tmp/job2.log"
run "$POLLEN" status "$job"; [ $rc = 3 ] || fail "2 ranks after stop: exit $rc: $out"
echo "ok: status socket of live jobs (1 and 2 ranks)"
