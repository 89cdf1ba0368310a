#!/bin/bash
# on_path.sh PATH COMMAND... - run a numerical test on one CPU kernel path (baseline, avx2,
# avx512) by POLLEN_KERNELS, so every path this machine has passes the op tests and the
# references (CMakeLists.txt registers NAME.PATH for each). Skips (77) a path this CPU cannot
# run, and the CPU's default path, which the plain test already ran.
set -euo pipefail
path=$1
shift
runs=$("$POLLEN" --version | sed -n 's/^CPU kernels: \([a-z0-9]*\) (this CPU runs:\(.*\))$/\1 |\2/p')
default=${runs%% |*}
supported=" ${runs#* |} "
if [ -z "$runs" ]; then
  echo "on_path.sh: could not read the kernel paths from '$POLLEN --version'" >&2
  exit 1
fi
if [[ "$supported" != *" $path "* ]]; then
  echo "SKIP: this CPU cannot run the $path kernels (it runs:$supported)"
  exit 77
fi
if [ "$path" = "$default" ]; then
  echo "SKIP: $path is this CPU's default kernel path: the plain test ran it"
  exit 77
fi
export POLLEN_KERNELS=$path
exec "$@"
