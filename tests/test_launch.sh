#!/usr/bin/env bash
# test_launch.sh - `pollen launch` on this machine alone (the multi-host cases are
# test_netns_launch.sh): its flag errors, --dry-run's Open MPI settings and command, --daemon
# (pid file, log, record), one supervisor per job, and train flags that pollen train rejects
# (given up at once, not relaunched). Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
POLLEN=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
command -v mpirun >/dev/null || { echo "SKIP: needs Open MPI's mpirun"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
FAKE=$SRC/tests/netns/fake_pollen.sh

# expect_usage MESSAGE ARGS...: exit 2 and MESSAGE on stderr
expect_usage() {
  local want=$1 out rc
  shift
  out=$("$POLLEN" launch "$@" 2>&1 >/dev/null)
  rc=$?
  [ $rc = 2 ] || fail "pollen launch $*: exit $rc, want 2 ($out)"
  grep -qF -- "$want" <<<"$out" || fail "pollen launch $*: '$out' does not say '$want'"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "pollen launch $*: more than one line: $out"
}
expect_usage "name the hosts with --hostfile FILE or --hosts LIST" -- --job "$tmp/j"
expect_usage "name the hosts with --hostfile FILE or --hosts LIST" --hosts a --hostfile f -- --job "$tmp/j"
expect_usage "must name the job (--job DIR)" --hosts a -- --epochs 1
expect_usage "--keepalive: '10,4' is not T,I,P" --hosts a --keepalive 10,4 -- --job "$tmp/j"
expect_usage "--mca plm_rsh_agent needs a VALUE" --hosts a --mca plm_rsh_agent -- --job "$tmp/j"
expect_usage "--ranks-per-node: '0' is not a whole number" --hosts a --ranks-per-node 0 -- --job "$tmp/j"
expect_usage "'train' is not a launch option; pollen train flags go after --" --hosts a train --job "$tmp/j"
expect_usage "--pollen: '$tmp/nope' is not an executable file" --hosts a --pollen "$tmp/nope" -- --job "$tmp/j"
out=$("$POLLEN" launch --hosts a --bogus -- --job "$tmp/j" 2>&1)
[ $? = 2 ] && grep -q "unrecognized option '--bogus'" <<<"$out" || fail "an unknown flag: $out"
echo "ok: flag errors are one line and exit 2"

out=$("$POLLEN" launch --hosts n1,n2 --ranks-per-node 2 --threads 3 --net 10.1.0.0/24 --keepalive 7,2,5 \
  --mca btl_tcp_links 2 --export MY_VAR --dry-run -- --job "$tmp/j" --batch 8 --epochs 1) || fail "--dry-run exit $?"
for want in OMPI_MCA_oob_tcp_keepalive_time=7 OMPI_MCA_oob_tcp_keepalive_intvl=2 OMPI_MCA_oob_tcp_keepalive_probes=5 \
  OMPI_MCA_btl_tcp_if_include=10.1.0.0/24 OMPI_MCA_oob_tcp_if_include=10.1.0.0/24 OMP_NUM_THREADS=3 \
  OMPI_MCA_orte_abort_on_non_zero_status=1; do
  grep -qx "$want" <<<"$out" || fail "--dry-run does not set $want: $out"
done
cmd=$(tail -n 1 <<<"$out")
for want in "-np 4 " "--host n1:2,n2:2 " "--map-by ppr:2:node:pe=3 --bind-to core" "-x POLLEN_LAUNCH" "-x MY_VAR" \
  "--mca btl_tcp_links 2" " train --job $tmp/j --batch 8 --epochs 1"; do
  grep -qF -- "$want" <<<"$cmd" || fail "--dry-run's command lacks '$want': $cmd"
done
[ ! -e "$tmp/j" ] || fail "--dry-run created the job folder"
echo "ok: --dry-run: keepalive, network, threads, K ranks per host bound to T cores, the record passed on"

# --daemon: the caller returns at once; the supervisor runs the job to its end.
out=$("$POLLEN" launch --hosts localhost --backoff 0 --pollen "$FAKE" --daemon -- --job "$tmp/d" --batch 1 --fail 0) ||
  fail "--daemon exited $?"
grep -q "supervising in the background, pid [0-9]*; log $tmp/d/launch.log" <<<"$out" || fail "--daemon said: $out"
pid=$(cat "$tmp/d/launch.pid") || fail "no launch.pid"
for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the detached supervisor (pid $pid) did not finish within 30 s"
grep -q "pollen launch: finished (launch 1, 0 restart(s))" "$tmp/d/launch.log" || fail "launch.log: $(cat "$tmp/d/launch.log")"
[ ! -e "$tmp/d/launch.pid" ] || fail "launch.pid outlived the supervisor"
grep -q '"attempt":1,.*"outcome":"finished",.*"decision":"done"' "$tmp/d/launch.jsonl" || fail "launch.jsonl: $(cat "$tmp/d/launch.jsonl")"
echo "ok: --daemon: returns at once, pid file, the job's output in launch.log, the launch in launch.jsonl"

# One supervisor per job folder.
mkdir -p "$tmp/l"
exec 9>"$tmp/l/launch.lock"
flock 9
out=$("$POLLEN" launch --hosts localhost --pollen "$FAKE" -- --job "$tmp/l" --fail 0 2>&1)
rc=$?
exec 9>&-
[ $rc = 1 ] && grep -q "another pollen launch supervises $tmp/l" <<<"$out" || fail "a second supervisor: exit $rc, $out"
echo "ok: a second supervisor of the same job is refused"

# Flags pollen train rejects: the first launch shows why, and nothing is relaunched.
out=$("$POLLEN" launch --hosts localhost --backoff 0 -- --job "$tmp/u" --no-such-flag 2>&1)
rc=$?
[ $rc = 1 ] && grep -q "giving up: pollen train rejected its arguments (exit 2" <<<"$out" &&
  ! grep -q "pollen launch: launch 2:" <<<"$out" || fail "train flags rejected: exit $rc, $out"
# A host that cannot run the probe is named with Open MPI's words.
out=$("$POLLEN" launch --hosts localhost --mpirun false -- --job "$tmp/p" 2>&1)
rc=$?
[ $rc = 1 ] && grep -q "host localhost excluded from this launch: the probe failed (exit 1)" <<<"$out" &&
  grep -q "giving up: 0 of 1 host(s) answer, fewer than --min-hosts 1" <<<"$out" || fail "no host answers: exit $rc, $out"
echo "PASS: pollen launch's flags, dry run, daemon, lock and give-ups"
