#!/usr/bin/env bash
# test_status_ended.sh - `pollen status` on a job that is not running tells how its last launch
# ended (JOB/outcome.json, proto/outcome.h): finished with the final figures, stopped (75),
# failed with the error line, killed (SIGKILL: the record still says "running"), and none.
# Every one exits 3. Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
P=${POLLEN:?set POLLEN to the pollen binary}
T=$(mktemp -d /tmp/pollen-status-ended-XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() { out=$("$@" 2>&1); rc=$?; }
# jq-like check: pyassert JSON EXPR
pyassert() { python3 -c 'import json,sys; o=json.loads(sys.argv[1]); assert eval(sys.argv[2]), o' "$1" "$2" \
  || fail "$2: $1"; }

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 >/dev/null \
  || fail "prepare"
args=(--data "$T/data" --size 64 --batch 16 --width 0.5 --threads 2 --no-augment)

# --- finished: the final and best validation accuracy, as the records have them ---
timeout -k 5 300 "$P" train "${args[@]}" --job "$T/fin" --epochs 2 >"$T/fin.log" 2>&1 \
  || { cat "$T/fin.log"; fail "training failed"; }
run "$P" status "$T/fin"
[ $rc = 3 ] || fail "finished job: exit $rc, want 3: $out"
grep -q "job not running" <<<"$out" || fail "finished: no 'job not running': $out"
grep -Eq "^ended +finished \(exit 0\) at step [0-9]+ \(epoch 2\), 2 epochs done" <<<"$out" || fail "finished line: $out"
run "$P" status "$T/fin" --json
[ $rc = 3 ] || fail "finished --json: exit $rc"
pyassert "$out" 'o["running"] is False and o["code"] == "not_running" and o["state"] == "finished"'
pyassert "$out" 'o["outcome"]["exit_status"] == 0 and o["outcome"]["step"] == o["last_metrics"]["step"]'
pyassert "$out" 'o["outcome"]["epoch"] == 2 == o["outcome"]["epochs_done"] == o["last_metrics"]["epoch"]'
pyassert "$out" 'abs(o["outcome"]["val_acc"] - o["last_validation"]["val_acc"]) < 1e-5'
pyassert "$out" 'o["outcome"]["best_val_acc"] >= o["outcome"]["val_acc"] and o["outcome"]["time"] >= o["outcome"]["start_time"] > 0'
# A relaunch of the finished job (it rewrites the weights) still reads as finished.
timeout -k 5 120 "$P" train "${args[@]}" --job "$T/fin" --epochs 2 >/dev/null 2>&1 || fail "relaunch of a finished job"
run "$P" status "$T/fin" --json
pyassert "$out" 'o["state"] == "finished"'

# --- a long job: answers while it runs ---
start_long() { # start_long JOB: a long run in the background, $pid, until status answers "training"
  "$P" train "${args[@]}" --job "$1" --epochs 500 >"$1.log" 2>&1 & pid=$!
  for _ in $(seq 600); do
    "$P" status "$1" --json 2>/dev/null | grep -q '"state":"training"' && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$1.log"; fail "the long job ended early"; }
    sleep 0.05
  done
  fail "the long job never answered 'training'"
}

# --- stopped (ctl stop): exit 75 and "stopped" ---
start_long "$T/stop"
run "$P" ctl "$T/stop" stop; [ $rc = 0 ] || fail "ctl stop: $out"
wait "$pid"; jrc=$?; pid=""
[ $jrc = 75 ] || fail "stopped job exited $jrc, want 75"
run "$P" status "$T/stop"
[ $rc = 3 ] && grep -Eq "^ended +stopped \(exit 75\) at step [0-9]+" <<<"$out" \
  && grep -q "run the same command again to resume" <<<"$out" || fail "stopped: exit $rc: $out"
grep -q "finished" <<<"$out" && fail "a stopped job reads as finished: $out"

# --- failed: every checkpoint damaged, the relaunch dies; status shows its one line ---
for f in "$T/stop"/checkpoints/*.ckpt; do printf 'garbage' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null; done
run timeout -k 5 120 "$P" train "${args[@]}" --job "$T/stop" --epochs 500
[ $rc = 1 ] || fail "relaunch with damaged checkpoints: exit $rc, want 1: $out"
err=$(grep '^pollen: ' <<<"$out" | tail -1 | sed 's/^pollen: //')
run "$P" status "$T/stop" --json
[ $rc = 3 ] || fail "failed --json: exit $rc"
pyassert "$out" 'o["state"] == "failed" and o["outcome"]["exit_status"] == 1'
python3 -c 'import json,sys; o=json.loads(sys.argv[1]); assert o["outcome"]["message"] == sys.argv[2], (o, sys.argv[2])' \
  "$out" "$err" || fail "the failure's message is not the error line '$err': $out"
run "$P" status "$T/stop"
grep -Eq "^ended +failed \(exit 1\)" <<<"$out" && grep -qF "error         $err" <<<"$out" || fail "failed: $out"

# --- killed: SIGKILL leaves "running" and a stale socket ---
start_long "$T/kill"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
run "$P" status "$T/kill"
[ $rc = 3 ] && grep -q "^ended         killed or crashed" <<<"$out" || fail "killed: exit $rc: $out"
grep -q "finished" <<<"$out" && fail "a killed job reads as finished: $out"
run "$P" status "$T/kill" --json
pyassert "$out" 'o["state"] == "killed" and o["outcome"]["state"] == "running"'

# --- none, and an unreadable record ---
mkdir "$T/empty"
run "$P" status "$T/empty" --json
pyassert "$out" 'o["state"] == "none" and o["outcome"] is None'
# A version-1 record (before epochs counted from 1 everywhere): its "epoch" was the count done.
echo '{"v":1,"state":"stopped","exit_status":75,"step":40,"epoch":3,"val_acc":0.5,"best_val_acc":0.5,"message":"","start_time":1,"time":2}' \
  > "$T/empty/outcome.json"
run "$P" status "$T/empty" --json
pyassert "$out" 'o["state"] == "stopped" and o["outcome"]["epochs_done"] == 3 and o["outcome"]["epoch"] is None'
run "$P" status "$T/empty"
grep -Eq "^ended +stopped \(exit 75\) at step 40, 3 epochs done" <<<"$out" || fail "version-1 record: $out"
echo '{"v":9,"state":"finished"}' > "$T/empty/outcome.json"
run "$P" status "$T/empty" --json
[ $rc = 3 ] && grep -q "newer than this pollen reads" <<<"$out" || fail "a newer record: exit $rc: $out"
echo "ok: pollen status tells finished, stopped, failed and killed jobs apart"
