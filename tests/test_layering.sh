#!/usr/bin/env bash
# The folders' layering (tools/check_layers.sh, which CMake also runs before compiling): the
# tree as it is passes, and each kind of include against the grain in a copy of it fails,
# naming the file and the line.
set -euo pipefail
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
check="$POLLEN_SRC/tools/check_layers.sh"

out=$(bash "$check" "$POLLEN_SRC" 2>&1) || fail "the tree breaks its own layering: $out"
echo "ok: the tree keeps its layers"

for d in base ops proto worker daemon cli; do mkdir -p "$T/src/$d"; done
# expect_refused FILE INCLUDE: FILE in the copy includes INCLUDE, which it must not.
expect_refused() {
  rm -rf "$T/case" && cp -r "$T/src" "$T/case"
  printf '/* a test file */\n#include <stdio.h>\n#include "%s"\n' "$2" > "$T/case/$1"
  set +e; out=$(bash "$check" "$T/case" 2>&1); rc=$?; set -e
  [ $rc = 1 ] || fail "$1 including $2: exit $rc, expected 1: $out"
  grep -q "^$1:3: includes \"$2\"" <<<"$out" || fail "$1 including $2: not named with its line: $out"
  echo "ok: $1 may not include $2"
}
expect_allowed() {
  rm -rf "$T/case" && cp -r "$T/src" "$T/case"
  printf '#include "%s"\n' "$2" > "$T/case/$1"
  out=$(bash "$check" "$T/case" 2>&1) || fail "$1 including $2 was refused: $out"
  echo "ok: $1 may include $2"
}
expect_refused worker/trainer.c daemon/coordinator.h
expect_refused ops/conv2d.c worker/model.h
expect_refused ops/act.c proto/shard.h
expect_refused proto/shard.c worker/loader.h
expect_refused base/core.c ops/ops.h
expect_refused daemon/coordinator.c worker/worker.h
expect_refused worker/loader.h cli/cli.h
expect_allowed daemon/driver.c worker/worker.h
expect_allowed daemon/driver.h worker/collective.h
expect_allowed worker/worker.c proto/plan.h
expect_allowed cli/cmd_train.c daemon/driver.h
expect_allowed proto/shard.c proto/example.pb-c.h
