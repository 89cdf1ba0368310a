#!/usr/bin/env bash
# Distributed training on one machine with Open MPI: N ranks average the same gradient as one
# process over the same micro-batches (overlap on and off), replicas stay bit-identical, a
# training job runs on 2 and 3 ranks, and a rank that dies or hangs ends the job fast with a
# message naming it.
set -euo pipefail
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed (apt-get install openmpi-bin)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
T=$(mktemp -d)
trap 'pkill -KILL -f "$T/" 2>/dev/null || true; rm -rf "$T"' EXIT
P="$POLLEN"
fail() { echo "FAIL: $*"; exit 1; }
MPIRUN=(timeout -k 5 240 mpirun --mca odls_base_sigkill_timeout 0 --mca mpi_yield_when_idle 1)

for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$POLLEN_BUILD/mpi_grads" > "$T/grads$n" 2>&1 || { cat "$T/grads$n"; fail "gradients differ on $n ranks"; }
  tail -n 2 "$T/grads$n"
done

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 80 > /dev/null
common=(--data "$T/data" --size 48 --width 0.35 --epochs 2 --threads 1 --log-every 5)
for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$P" train "${common[@]}" --job "$T/job$n" --batch 12 > "$T/log$n" 2>&1 \
    || { cat "$T/log$n"; fail "training on $n ranks failed"; }
  grep -q "all $n ranks hold identical weights" "$T/log$n" || fail "no replica check on $n ranks"
  grep -q "finished" "$T/log$n" || fail "$n ranks did not finish"
  echo "ok: $n ranks trained to identical weights"
done
# Overlap off gives the same weights as overlap on (all-reduce order does not change sums).
"${MPIRUN[@]}" -np 2 "$P" train "${common[@]}" --job "$T/job2b" --batch 12 --no-overlap > "$T/log2b" 2>&1 || fail "--no-overlap failed"
h1=$(grep -o "parameter hash [0-9a-f]*" "$T/log2"); h2=$(grep -o "parameter hash [0-9a-f]*" "$T/log2b")
[ "$h1" = "$h2" ] || fail "overlap changed the result: $h1 vs $h2"
echo "ok: overlap on and off give identical weights ($h1)"

# A rank that dies: the job ends non-zero within about 30 s, naming the rank.
long=(--data "$T/data" --size 48 --width 0.35 --epochs 1000 --threads 1 --batch 8 --stall-timeout 10)
"${MPIRUN[@]}" -np 2 "$P" train "${long[@]}" --job "$T/dead" > "$T/dead.log" 2>&1 &
launcher=$!
for _ in $(seq 200); do grep -q "step" "$T/dead.log" 2>/dev/null && break; sleep 0.2; done
victim=$(pgrep -f "pollen train .*--job $T/dead" | sort -n | tail -1)
start=$(date +%s)
kill -KILL "$victim"
set +e; wait $launcher; status=$?; set -e
took=$(( $(date +%s) - start ))
[ "$status" != 0 ] || fail "the job exited 0 after a rank was killed"
[ "$took" -le 30 ] || fail "the job took ${took}s to notice a dead rank"
grep -Eiq "rank [0-9]+.*(exited|killed|signal)|process rank [0-9]+" "$T/dead.log" || { tail "$T/dead.log"; fail "no message names the dead rank"; }
echo "ok: a killed rank ended the job in ${took}s (exit $status): $(grep -Eio 'process rank [0-9]+ with PID [0-9]+ on node [^ ]+' "$T/dead.log" | head -1)"

# A rank that hangs (stopped): the stall detector ends the job and names it.
"${MPIRUN[@]}" -np 2 "$P" train "${long[@]}" --job "$T/hung" > "$T/hung.log" 2>&1 &
launcher=$!
for _ in $(seq 200); do grep -q "step" "$T/hung.log" 2>/dev/null && break; sleep 0.2; done
pids=$(pgrep -f "pollen train .*--job $T/hung" | sort -n)
victim=$(echo "$pids" | tail -1)
start=$(date +%s)
kill -STOP "$victim"
set +e; wait $launcher; status=$?; set -e
took=$(( $(date +%s) - start ))
kill -KILL "$victim" 2>/dev/null || true
[ "$status" != 0 ] || fail "the job exited 0 with a hung rank"
[ "$took" -le 40 ] || fail "the job took ${took}s to notice a hung rank"
grep -q "rank 1 on .* does not answer" "$T/hung.log" || { tail "$T/hung.log"; fail "the hung rank is not named"; }
echo "ok: a hung rank ended the job in ${took}s: $(grep -o 'rank 1 on .* does not answer' "$T/hung.log" | head -1)"
echo "PASS"
