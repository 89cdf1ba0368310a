#!/bin/bash
# test_ckpt_cli.sh - `pollen checkpoints`: the table and --json list every checkpoint of a job
# with its validity (the newest one corrupted by test_ckpt --make-job), and bad usage fails
# with one clear line.
set -u
: "${POLLEN:?set POLLEN to the pollen binary}" "${POLLEN_BUILD:?set POLLEN_BUILD to the build dir}"
tmp=$(mktemp -d /tmp/pollen-test-ckptcli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$POLLEN_BUILD/test_ckpt" --make-job "$tmp/job" 2>/dev/null || fail "could not make the sample job"

out=$("$POLLEN" checkpoints --job "$tmp/job") || fail "exit $? listing a job"
echo "$out"
[ "$(echo "$out" | grep -c 'valid$')" = 2 ] || fail "expected 2 valid rows"
echo "$out" | grep -Eq "^ +300 .*INVALID: section 'weights' CRC mismatch \(file corrupt\)$" || fail "step 300 not INVALID with its reason"
# EPOCH counts from 1 as the log does: 0-based epoch 28, 400 samples in, is the log's 29th.
echo "$out" | grep -Eq "^ +200 +29 .*valid$" || fail "step 200 row (epoch 29) missing"
echo "$out" | grep -Eq "^ +100 +15 .*valid$" || fail "step 100 row (epoch 15) missing"
# Newest first.
[ "$(echo "$out" | awk 'NR>1 {print $1}' | tr '\n' ' ')" = "300 200 100 " ] || fail "not newest first"

json=$("$POLLEN" checkpoints --job "$tmp/job" --json) || fail "exit $? with --json"
[ "$(echo "$json" | grep -c '"valid":[[:space:]]*true')" = 2 ] || fail "--json: expected 2 valid"
[ "$(echo "$json" | grep -c '"valid":[[:space:]]*false')" = 1 ] || fail "--json: expected 1 invalid"
echo "$json" | grep -q '"step":[[:space:]]*300' || fail "--json: step 300 missing"
echo "$json" | grep -q '"size":[[:space:]]*[1-9]' || fail "--json: sizes missing"
if command -v python3 >/dev/null; then
  echo "$json" | python3 -c 'import json,sys; v=json.load(sys.stdin); assert [c["step"] for c in v]==[300,200,100] and [c["valid"] for c in v]==[False,True,True], v; assert [c["epoch"] for c in v[1:]]==[29,15], "--json epochs count from 1 as the table: %s" % v' \
    || fail "--json is not the expected JSON"
fi

mkdir "$tmp/empty"
"$POLLEN" checkpoints --job "$tmp/empty" | grep -q "no checkpoints in" || fail "empty job not reported"
[ "$("$POLLEN" checkpoints --job "$tmp/empty" --json | tr -d '[:space:]')" = "[]" ] || fail "empty --json is not []"

err=$("$POLLEN" checkpoints --job "$tmp/missing" 2>&1); rc=$?
[ $rc = 1 ] && [ "$(echo "$err" | wc -l)" = 1 ] && echo "$err" | grep -q "no such job directory" || fail "missing job: rc $rc: $err"
"$POLLEN" checkpoints >/dev/null 2>&1; [ $? = 2 ] || fail "no --job should be a usage error"
"$POLLEN" checkpoints --job "$tmp/job" --bogus >/dev/null 2>&1; [ $? = 2 ] || fail "unknown flag should be a usage error"
"$POLLEN" checkpoints --help | grep -q -- "--json" || fail "--help"
echo "ok pollen checkpoints"
