#!/usr/bin/env bash
# check_layers.sh [ROOT] - fails (exit 1, one line per offence) when a source file includes a
# header from a folder above its own. The layers, lowest first:
#   base/                      errors, allocation, logging, threads, RNG, hashing, time
#   ops/ (ops/cuda/), proto/   tensor kernels; formats (side by side: neither includes the other)
#   worker/                    the engine every rank runs
#   daemon/                    rank 0's coordinator, checkpoints, status server, signals
#   cli/                       the one binary
# daemon/ reaches worker/ only through daemon/driver.{h,c}, the one unit that wires the
# coordinator to the workers. CMake runs this before it compiles anything.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
declare -A allowed=(
  [base]="base"
  [ops]="base ops"
  [proto]="base proto"
  [worker]="base ops proto worker"
  [daemon]="base proto daemon"
  [cli]="base ops proto worker daemon cli"
)
driver="daemon/driver"
bad=0
for folder in base ops proto worker daemon cli; do
  [ -d "$root/$folder" ] || continue
  while IFS= read -r -d '' file; do
    rel=${file#"$root"/}
    ok=" ${allowed[$folder]} "
    [ "${rel%.[ch]}" = "$driver" ] && ok="$ok worker ops "
    while IFS=: read -r line target; do
      top=${target%%/*}
      [ "$top" = "$target" ] && continue       # a header beside this file, or a system one
      [ -n "${allowed[$top]+x}" ] || continue  # not one of pollen's folders (generated, ...)
      case "$ok" in *" $top "*) ;; *)
        echo "$rel:$line: includes \"$target\": $folder/ may include only from ${allowed[$folder]// /, }"
        bad=1 ;;
      esac
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" |
             sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1:\2/' || true)
  done < <(find "$root/$folder" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0)
done
if [ "$bad" != 0 ]; then
  echo "check_layers: a lower folder includes a higher one (see above); move the code or pass the data through proto/" >&2
  exit 1
fi
