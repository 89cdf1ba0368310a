#!/bin/bash
# test_netns_mpi.sh - the multi-host harness proves itself: three hosts made of Linux network
# namespaces (tests/netns/lib.sh), Open MPI started on h1 reaching h2 and h3 through
# tests/netns/rsh-agent.sh, a small MPI program (tests/netns/mpi_ring.c) that all-reduces
# across them, `pollen launch`'s relaunch and give-up rules (with a stand-in for
# pollen's ranks), and the failure cases: a host's cable pulled, a host's rank killed; each must end
# the job non-zero within ~30 s, naming the lost rank.
#
# Needs root (network namespaces) and Open MPI with mpicc; skips (77) otherwise.
set -u
SRC=${POLLEN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
. "$SRC/tests/netns/harness.sh"
command -v mpicc >/dev/null || skip "needs mpicc (Open MPI)"
harness_setup
mpicc -O2 -std=c11 -o "$W/bin/mpi_ring" "$SRC/tests/netns/mpi_ring.c" || fail "mpicc tests/netns/mpi_ring.c"
RING=$W/bin/mpi_ring
PROGRAM=$SRC/tests/netns/fake_pollen.sh

# --- 1. the hosts are isolated as promised ----------------------------------------------------
ip -br addr | grep -q "$NETNS_SUBNET\." && fail "the test subnet leaked into the machine's own network"
[ -z "$(netns_run 2 ip route show default)" ] || fail "h2 has a default route"
[ "$(netns_run 2 hostname)" = h2 ] || fail "h2 does not have its own hostname"
[ "$(hostname)" != h2 ] || fail "the machine's own hostname changed"
echo data >"$W/h1/only-on-h1"
netns_run 1 test -e "$W/node/only-on-h1" || fail "h1 does not see its own folder at WORK/node"
netns_run 2 test -e "$W/node/only-on-h1" && fail "h2 sees h1's folder at WORK/node"
netns_run 2 test -e "$W/h1/only-on-h1" && fail "h2 sees h1's folder"
netns_reachable 2 3 || fail "h2 cannot reach h3"
netns_cut 3
netns_reachable 2 3 && fail "h2 still reaches h3 with h3's cable pulled"
netns_uncut 3
netns_wait_links || fail "h3 did not come back after its cable was plugged in again"
ok "3 isolated hosts h1..h3 on $SUB"

# --- 2. plain mpirun across the hosts: distinct hostnames, a correct all-reduce --------------
OUT=$W/ring.txt
netns_run 1 timeout -k 5 120 mpirun -np 3 --hostfile hostfile --map-by node \
  --mca plm_rsh_agent "$AGENT" --mca pml ob1 --mca btl tcp,self --mca osc ^ucx \
  --mca oob_tcp_if_include "$SUB" --mca btl_tcp_if_include "$SUB" \
  --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 4 --mca oob_tcp_keepalive_probes 3 \
  "$RING" >"$OUT" 2>&1 || fail "mpirun -np 3 mpi_ring exited $?"
for r in 0 1 2; do
  grep -q "rank $r of 3 on host h$((r + 1))\$" "$OUT" || fail "rank $r did not run on host h$((r + 1))"
done
grep -q "hosts distinct, allreduce sum 6 (want 6): ok" "$OUT" || fail "all-reduce across hosts"
ok "mpirun -np 3 across h1..h3, all-reduce correct"

# --- 3. pollen launch: relaunch after preemption (75) and after failures; give up on a
# failure that repeats at the same step, and when the restart budget is spent ---------------
OUT=$W/relaunch.txt
rm -f "$W"/h?/fake_pollen.launches
launch --threads 1 --backoff 1 --max-restarts 3 -- --job fake1 --batch 3 --preempt 2 >"$OUT" 2>&1
st=$?
[ "$st" = 0 ] || fail "pollen launch after 2 preemptions exited $st, want 0"
grep -q "pollen launch: launch 3:" "$OUT" && ! grep -q "pollen launch: launch 4:" "$OUT" || fail "pollen launch did not launch exactly 3 times"
for h in 1 2 3; do # each rank counted its launches in its own host's folder
  [ "$(cat "$W/h$h/fake_pollen.launches" 2>/dev/null)" = 3 ] || fail "host h$h did not run 3 launches in its own folder"
done
grep -q "rank 2 on h3 launch 3, threads 1" "$OUT" || fail "OMP_NUM_THREADS did not reach the rank on h3"
[ "$(grep -c '"decision":"relaunch"' "$W/h1/fake1/launch.jsonl")" = 2 ] && grep -q '"decision":"done"' "$W/h1/fake1/launch.jsonl" ||
  fail "launch.jsonl does not record 2 relaunches and the end: $(cat "$W/h1/fake1/launch.jsonl")"
OUT=$W/failed.txt
launch --backoff 0 -- --job fake2 --batch 3 --fail 3 >"$OUT" 2>&1
st=$?
[ "$st" = 1 ] || fail "pollen launch with pollen failing (3) at once exited $st, want 1"
grep -q "pollen launch: launch 3:" "$OUT" && ! grep -q "pollen launch: launch 4:" "$OUT" &&
  grep -q "giving up: 3 launches in a row failed before their first step" "$OUT" || fail "pollen launch did not give up after 3 failures at the same step"
OUT=$W/gaveup.txt
rm -f "$W"/h?/fake_pollen.launches
launch --backoff 0 --max-restarts 1 -- --job fake3 --batch 3 --preempt 5 >"$OUT" 2>&1
st=$?
[ "$st" = 1 ] || fail "pollen launch past --max-restarts exited $st, want 1"
grep -q "pollen launch: launch 2:" "$OUT" && ! grep -q "pollen launch: launch 3:" "$OUT" &&
  grep -q "giving up: the restart budget is spent (--max-restarts 1)" "$OUT" || fail "pollen launch --max-restarts 1 did not stop after 2 launches"
ok "pollen launch relaunches on 75 and on failures, gives up on a repeated failure and after --max-restarts"

# --- 4. a host lost mid-run: the job must end non-zero within ~30 s, naming the lost rank -----
# pollen launch's default keepalive (10,4,3) is what is measured here.
lose_host cut 40 "iteration 10\$" -- --max-restarts 0 -- --job fake4 --batch 3 --ring "$RING" 3000 100
grep -q "lost host $(netns_addr 3) (rank 2; Open MPI lost its daemon there)" "$OUT" ||
  fail "the output does not name rank 2 on $(netns_addr 3) as lost"
cut_secs=$DETECT_SECS
expect_h3_empty_then_reconnect
ok "cable of h3 pulled: job ended with status $DETECT_STATUS after ${cut_secs}s, rank 2 named"

KILL_PATTERN="^$RING "
lose_host kill 40 "iteration 10\$" -- --max-restarts 0 -- --job fake5 --batch 3 --ring "$RING" 3000 100
grep -q "process rank 2 with PID [0-9]* on node $(netns_addr 3) exited on signal 9" "$OUT" ||
  fail "the output does not name rank 2 on $(netns_addr 3) as killed"
ok "rank on h3 killed: job ended with status $DETECT_STATUS after ${DETECT_SECS}s, rank 2 named"
echo "PASS: netns hosts, mpirun across them, pollen launch relaunch rules, host loss detected in ${cut_secs}s (cable) / ${DETECT_SECS}s (kill)"
