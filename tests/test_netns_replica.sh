#!/bin/bash
# test_netns_replica.sh - checkpoints that survive the loss of any one host, with node-local
# job folders and no shared storage (daemon/replica.h), on three namespace hosts:
#   a. a 3-host run (--job W/node/job: a different disk on every host) leaves byte-identical
#      copies of h1's (rank 0's) newest checkpoint and its config.json on h2 (rank 1, the
#      first rank on another host), and nothing on h3;
#   b. h1's job folder deleted (its disk lost), the job launched again on h3 and h2 only
#      (rank 0 on h3, which has no checkpoint): it resumes from h2's replica, finishes, and its
#      weights are those of an uninterrupted 3-rank run, bit for bit;
#   c. a damaged newest replica is skipped with a message and the older one resumes the job,
#      again to the same weights;
#   d. --replicas 0 copies nothing;
#   e. relaunched with rank 0 on h2, the replica's host: it resumes from its own folder;
#   f. a job folder shared by the hosts is recognised (token file) and nothing is copied.
# Needs root (network namespaces), Open MPI and a pollen with `train`; skips (77) otherwise.
set -u
SRC=${POLLEN_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
. "$SRC/tests/netns/harness.sh"
POLLEN=${POLLEN:-$SRC/build/pollen}
[ -x "$POLLEN" ] || skip "no pollen binary at $POLLEN (set POLLEN)"
"$POLLEN" train --help 2>/dev/null | grep -q -- --replicas || skip "this pollen has no train --replicas"
POLLEN=$(realpath "$POLLEN") # hosts start in their own folders
harness_setup
A1=$(netns_addr 1) A2=$(netns_addr 2) A3=$(netns_addr 3)
# The hosts left after h1 is lost: rank 0 on h3 (no checkpoint there), ranks 1 and 2 on h2.
printf '%s slots=1\n%s slots=2\n' "$A3" "$A2" >"$W/h1/hostfile-h3h2"

OUT=$W/prepare.txt
netns_run 1 "$POLLEN" prepare --src "$SRC/tests/data/flowers_sample" --out "$W/node/data" \
  --max-side 64 --shards 3 >"$OUT" 2>&1 || fail "pollen prepare on h1"
TRAIN=(--data "$W/node/data" --cache-dir "$W/node/cache" --model mnv3-small --width 0.35
  --size 64 --batch 6 --threads 1 --loader-threads 1 --log-every 1 --epochs 2 --ckpt-every 2 --keep 2)

# pollen train on 3 ranks: mpirun on h1 with hostfile HOSTFILE (in h1's folder).
train() {
  local hostfile=$1 v exports=()
  shift
  # Ranks on other hosts start in a clean environment: a sanitizer build's settings travel.
  for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS OMPI_MCA_mca_base_component_disable_dlclose; do
    [ -n "${!v:-}" ] && exports+=(-x "$v")
  done
  netns_run 1 timeout -k 5 120 mpirun --hostfile "$hostfile" --mca plm_rsh_agent "$AGENT" \
    --mca btl self,vader,tcp --mca pml ob1 --mca btl_tcp_if_include "$SUB" \
    --mca oob_tcp_if_include "$SUB" "${exports[@]}" -np 3 "$POLLEN" train "${TRAIN[@]}" "$@"
}
hash_of() { grep -Eo 'weights hash [0-9a-f]{16}' "$1" | tail -n 1 | awk '{print $3}'; }
newest() { ls "$1" 2>/dev/null | grep -E '^step-[0-9]+\.ckpt$' | sort | tail -n 1; }
flip_byte() { perl -e 'open F, "+<", $ARGV[0] or die; seek F, $ARGV[1], 0; read F, $b, 1;
  seek F, $ARGV[1], 0; print F chr(ord($b) ^ 0x5a); close F' "$1" "$2"; }

# --- the reference: uninterrupted, 3 ranks --------------------------------------------------
OUT=$W/ref.txt
train hostfile --job "$W/node/ref" >"$OUT" 2>&1 || fail "the uninterrupted run exited $?"
REF=$(hash_of "$OUT")
[ -n "$REF" ] || fail "no weights hash in the uninterrupted run"
grep -q "checkpoints are copied to rank 1 (h2)" "$OUT" || fail "rank 0 did not say where checkpoints are copied"
ok "uninterrupted 3-rank run: weights hash $REF"

# --- a. replicas on h2 only ------------------------------------------------------------------
OUT=$W/a.txt
train hostfile --job "$W/node/job" --max-steps 9 >"$OUT" 2>&1 || fail "the first part exited $?"
last=$(newest "$W/h1/job/checkpoints")
[ "$last" = step-000000009.ckpt ] || fail "h1's newest checkpoint is '$last', want step 9's"
cmp "$W/h1/job/checkpoints/$last" "$W/h2/job/checkpoints/$last" || fail "h2's copy of $last differs from h1's (or is missing)"
cmp "$W/h1/job/config.json" "$W/h2/job/config.json" || fail "h2's config.json differs from h1's (or is missing)"
[ -s "$W/h2/job/metrics.jsonl" ] || fail "no metrics.jsonl copied to h2"
n=$(ls "$W/h2/job/checkpoints" | grep -cE '^step-[0-9]+\.ckpt$')
[ "$n" -le 2 ] || fail "h2 keeps $n replicas, --keep 2"
ls "$W/h2/job/checkpoints" | grep -q '\.tmp$' && fail "a .tmp file left on h2"
[ -z "$(ls -A "$W/h3/job/checkpoints" 2>/dev/null)" ] || fail "h3 holds checkpoints: only h2 should hold replicas"
grep -Eq "rank 1 replica of checkpoint step 9 installed .*s after rank 0 \(h1\) wrote it" "$OUT" ||
  fail "rank 1 did not log the installed replica of step 9"
ok "h2 holds h1's $last byte for byte, config.json and metrics.jsonl; h3 holds nothing"

# --- b. h1's disk lost: resume on h3 + h2 from h2's replica ---------------------------------
rm -rf "$W/h1/job"
for h in 2 3; do cp -a "$W/h1/data" "$W/h$h/data"; done # the data is not what this tests
OUT=$W/b.txt
train hostfile-h3h2 --job "$W/node/job" >"$OUT" 2>&1 || fail "the relaunch on h3 and h2 exited $?"
grep -q "resuming from a replica: step 9 from rank 1 (h2)" "$OUT" || fail "no 'resuming from a replica: step 9 from rank 1 (h2)'"
grep -q "resuming from $W/node/job/checkpoints/step-000000009.ckpt" "$OUT" || fail "rank 0 did not resume from step 9"
grep -q "diverged" "$OUT" && fail "the ranks' weights diverged"
got=$(hash_of "$OUT")
[ "$got" = "$REF" ] || fail "weights hash $got after the resume from the replica, uninterrupted $REF"
cmp -s "$W/h3/job/config.json" "$W/h2/job/config.json" || fail "h3 did not get h2's config.json"
ok "h1 lost: resumed on h3 from h2's replica of step 9, finished with the uninterrupted weights ($got)"

# --- c. a damaged newest replica: the older one is used -------------------------------------
OUT=$W/c1.txt
train hostfile --job "$W/node/jobc" --max-steps 9 >"$OUT" 2>&1 || fail "the first part of c exited $?"
# The older replica is whichever one the copies got to (a newer checkpoint written while one
# is on its way replaces the one still waiting).
old=$(ls "$W/h2/jobc/checkpoints" | grep -E '^step-[0-9]+\.ckpt$' | sort | head -n 1)
[ "$(newest "$W/h2/jobc/checkpoints")" = step-000000009.ckpt ] && [ "$old" != step-000000009.ckpt ] ||
  fail "h2 does not hold step 9's replica and an older one ($(ls "$W/h2/jobc/checkpoints" | tr '\n' ' '))"
old=$((10#$(echo "$old" | tr -dc 0-9)))
flip_byte "$W/h2/jobc/checkpoints/step-000000009.ckpt" 5000
rm -rf "$W/h1/jobc"
OUT=$W/c2.txt
train hostfile-h3h2 --job "$W/node/jobc" >"$OUT" 2>&1 || fail "the relaunch with a damaged replica exited $?"
grep -Eq "rank 1 warning: .*step-000000009\.ckpt does not verify \(.*CRC mismatch.*\): skipped for an older checkpoint" "$OUT" ||
  fail "rank 1 did not report the damaged replica of step 9"
grep -q "resuming from a replica: step $old from rank 1 (h2)" "$OUT" || fail "did not resume from h2's replica of step $old"
got=$(hash_of "$OUT")
[ "$got" = "$REF" ] || fail "weights hash $got after the resume from step $old, uninterrupted $REF"
ok "the damaged replica of step 9 skipped with a message; resumed from step $old, same weights"

# --- e. h1 lost, rank 0 on h2, which holds the replica: it resumes from its own folder ------
printf '%s slots=2\n%s slots=1\n' "$A2" "$A3" >"$W/h1/hostfile-h2h3"
OUT=$W/e1.txt
train hostfile --job "$W/node/jobe" --max-steps 9 >"$OUT" 2>&1 || fail "the first part of e exited $?"
rm -rf "$W/h1/jobe"
OUT=$W/e2.txt
train hostfile-h2h3 --job "$W/node/jobe" >"$OUT" 2>&1 || fail "the relaunch with rank 0 on h2 exited $?"
grep -q "resuming from $W/node/jobe/checkpoints/step-000000009.ckpt" "$OUT" || fail "rank 0 on h2 did not resume from step 9"
grep -q "resuming from a replica" "$OUT" && fail "rank 0 on h2 holds step 9 itself: nothing should travel"
got=$(hash_of "$OUT")
[ "$got" = "$REF" ] || fail "weights hash $got after the resume on h2, uninterrupted $REF"
grep -q "checkpoints are copied to rank 2 (h3)" "$OUT" || fail "with rank 0 on h2, the copies should go to rank 2 (h3)"
ok "h1 lost, rank 0 on h2: resumed from its own replica of step 9, same weights; copies now go to h3"

# --- d. --replicas 0 ---------------------------------------------------------------------------
OUT=$W/d.txt
train hostfile --job "$W/node/jobd" --max-steps 4 --replicas 0 >"$OUT" 2>&1 || fail "--replicas 0 exited $?"
grep -q "checkpoints are not copied to another host (--replicas 0)" "$OUT" || fail "no --replicas 0 line"
[ -z "$(ls -A "$W/h2/jobd/checkpoints" 2>/dev/null)" ] || fail "--replicas 0 copied checkpoints to h2"
ok "--replicas 0: nothing copied"

# --- f. a shared job folder (W/shared is one folder every host sees): nothing is copied -------
mkdir -p "$W/shared"
OUT=$W/f.txt
train hostfile --job "$W/shared/job" --max-steps 4 >"$OUT" 2>&1 || fail "the run in a shared folder exited $?"
grep -q "checkpoints: $W/shared/job is one folder shared with rank 1 (h2), so none is copied" "$OUT" ||
  fail "the shared folder was not recognised"
grep -q "replica of checkpoint" "$OUT" && fail "a checkpoint was copied into the shared folder onto itself"
[ "$(newest "$W/shared/job/checkpoints")" = step-000000004.ckpt ] || fail "no checkpoint of step 4 in the shared folder"
ok "a shared job folder is recognised by its token: nothing copied"
echo "PASS: checkpoints replicated to another host survive the loss of rank 0's disk"
