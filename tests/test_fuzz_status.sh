#!/usr/bin/env bash
# test_fuzz_status.sh - runs the status request parser's fuzz target (tools/fuzz_status.sh)
# for about 30 s (FUZZ_SECONDS to change). Skips (77) without clang and libFuzzer.
set -uo pipefail
src=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
build=${POLLEN_BUILD:-$src/build}
cc=""
for c in clang clang-14; do command -v "$c" >/dev/null && { cc=$c; break; }; done
if [ -z "$cc" ]; then echo "SKIP: clang not installed (apt-get install clang-14 libclang-rt-14-dev)"; exit 77; fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){return 0;}\n' > "$probe/p.c"
if ! "$cc" -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null; then
  echo "SKIP: $cc cannot link libFuzzer (apt-get install libclang-rt-14-dev)"; exit 77
fi
FUZZ_OUT="$build/fuzz-status" CC="$cc" "$src/tools/fuzz_status.sh" "${FUZZ_SECONDS:-30}" 2>"$build/fuzz-status.log"
rc=$?
tail -n 12 "$build/fuzz-status.log"
[ $rc = 0 ] || { echo "FAIL: fuzzer exit $rc; see $build/fuzz-status.log and $build/fuzz-status/crash-*"; exit 1; }
echo "ok: fuzzed the status request parser for ${FUZZ_SECONDS:-30} s"
