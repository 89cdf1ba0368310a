#!/usr/bin/env bash
# fuzz_status.sh - builds the status request parser's libFuzzer target with clang
# (ASan + UBSan) and runs it for a bounded time over the committed seed corpus.
#   tools/fuzz_status.sh [SECONDS]    default 60
# Env: FUZZ_OUT (work folder, default build-fuzz/), CC (default: clang, else clang-14).
# New interesting inputs land in $FUZZ_OUT/corpus (the committed corpus is left as it is;
# copy a useful find into tests/fuzz/corpus_status/ by hand). A crash leaves its input in
# $FUZZ_OUT/crash-* and makes this script fail. Needs clang and libclang-rt-14-dev (Debian).
set -euo pipefail
secs=${1:-60}
src=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$src/build-fuzz}
cc=${CC:-}
if [ -z "$cc" ]; then
  for c in clang clang-14; do command -v "$c" >/dev/null && { cc=$c; break; }; done
fi
[ -n "$cc" ] || { echo "fuzz_status: clang not found; apt-get install clang-14 libclang-rt-14-dev" >&2; exit 2; }
mkdir -p "$out/corpus"
# cJSON stays uninstrumented (Debian's build); the parser, the launch record it shows and the
# target are.
"$cc" -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I"$src" \
  "$src/tests/fuzz/fuzz_status_request.c" "$src/proto/status_proto.c" "$src/proto/launch_record.c" \
  $(pkg-config --cflags --libs libcjson) -lm -o "$out/fuzz_status_request"
"$out/fuzz_status_request" -max_total_time="$secs" -max_len=70000 -timeout=10 \
  -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$out/" \
  "$out/corpus" "$src/tests/fuzz/corpus_status"
