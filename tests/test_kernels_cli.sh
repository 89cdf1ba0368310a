#!/usr/bin/env bash
# test_kernels_cli.sh - the CPU kernel paths seen from the command line: --version names the
# path that runs and those this CPU can run, and whether bf16 GEMMs can; `pollen bench` and `bench ops` run the path
# --kernels or POLLEN_KERNELS asks for and say so (human and --json); an unknown path, or one
# this CPU lacks, is a one-line error naming it, exit 2 for the flag.
set -u
P=${POLLEN:?set POLLEN to the pollen binary}
T=$(mktemp -d /tmp/pollen-test-kernels-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

line=$("$P" --version | grep '^CPU kernels: ')
runs=$(printf '%s\n' "$line" | sed -n 's/^CPU kernels: [a-z0-9]* (this CPU runs:\(.*\))$/\1/p')
active=$(printf '%s\n' "$line" | sed -n 's/^CPU kernels: \([a-z0-9]*\) .*/\1/p')
[ -n "$runs" ] || fail "--version lacks the kernel paths: $line"
case " $runs " in *" baseline "*) ;; *) fail "baseline is not among the paths: $runs" ;; esac
case " $runs " in *" $active "*) ;; *) fail "the active path $active is not one this CPU runs: $runs" ;; esac
# The default is the best path the CPU runs: the last one listed.
[ "$active" = "${runs##* }" ] || fail "default path $active is not the best of:$runs"
echo "ok: --version: $line"
# bf16 GEMMs: --version says whether they run here, as the CPU's flags and the path decide.
bf16=$("$P" --version | grep '^bf16 GEMMs: ')
if grep -qw avx512_bf16 /proc/cpuinfo && [ "$active" = avx512 ]; then
  [ "$bf16" = "bf16 GEMMs: available (--precision bf16)" ] || fail "--version on an AVX512_BF16 CPU: $bf16"
  lower=$(POLLEN_KERNELS=avx2 "$P" --version | grep '^bf16 GEMMs: ')
  case "$lower" in "bf16 GEMMs: not here (bf16 GEMMs run on the avx512 kernel path, not 'avx2'"*) ;;
    *) fail "--version on the avx2 path: $lower" ;; esac
else
  case "$bf16" in "bf16 GEMMs: not here ("*) ;; *) fail "--version without AVX512_BF16: $bf16" ;; esac
fi
echo "ok: --version: $bf16"

bench() { "$P" bench --model mnv3-small --width 0.35 --size 64 --batch 2 --steps 1 --warmup 0 --threads 2 "$@"; }
for path in $runs; do
  out=$(bench --kernels "$path" --mode train --json) || fail "bench --kernels $path failed"
  printf '%s\n' "$out" | grep -q "\"kernels\":\"$path\"" || fail "bench --kernels $path --json: $out"
  out=$(POLLEN_KERNELS=$path bench --mode infer) || fail "POLLEN_KERNELS=$path bench failed"
  printf '%s\n' "$out" | grep -q "$path kernels" || fail "POLLEN_KERNELS=$path bench says: $out"
  out=$("$P" bench ops --kernels "$path" --size 32 --batch 1 --reps 1 --json) || fail "bench ops --kernels $path failed"
  printf '%s\n' "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["kernels"] == sys.argv[1], d["kernels"]
assert d["peak_gflops"] > 0.5, d["peak_gflops"]' "$path" || fail "bench ops --kernels $path: kernels or peak wrong"
done
echo "ok: bench and bench ops run and name each path: $runs"

# expect STATUS PATTERN command...: the exit status and one "pollen:" line matching.
expect() {
  local want=$1 pat=$2; shift 2
  "$@" > "$T/out" 2> "$T/err"; local got=$?
  [ "$got" = "$want" ] || fail "'$*' exited $got, want $want: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "'$*' stderr lacks '$pat': $(cat "$T/err")"
  [ "$(grep -c . "$T/err")" = 1 ] || fail "'$*' printed more than one line: $(cat "$T/err")"
}
expect 2 "pollen: --kernels: unknown kernel path 'avx9'; use baseline, avx2 or avx512" bench --kernels avx9
expect 2 "unknown kernel path" "$P" bench ops --kernels sse --size 32 --batch 1 --reps 1
expect 1 "pollen: POLLEN_KERNELS: unknown kernel path 'fast'" env POLLEN_KERNELS=fast "$P" --version
for path in avx2 avx512; do
  case " $runs " in *" $path "*) continue ;; esac
  expect 2 "kernel path '$path' needs .*, which this CPU lacks" bench --kernels "$path"
  expect 1 "POLLEN_KERNELS: kernel path '$path' needs" env POLLEN_KERNELS=$path "$P" --version
done
echo "ok: unknown and unsupported paths are one-line errors"

[ "$fails" = 0 ] || exit 1
echo "all kernel path CLI checks passed"
