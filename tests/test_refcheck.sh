#!/usr/bin/env bash
# The engine against PyTorch: every committed reference (tests/ref/README.md) - logits, loss,
# every gradient, BN running statistics, and 10-step loss sequences for SGD and both RMSprop
# forms - within the documented tolerances.
set -euo pipefail
out=$("$POLLEN" refcheck "$POLLEN_SRC"/tests/ref/*.safetensors)
echo "$out" | tail -n 3
echo "$out" | grep -q "0 over tolerance"
n=$(echo "$out" | sed -n 's/^refcheck: \([0-9]*\) tensors checked.*/\1/p')
# 6 files: every gradient and BN statistic of three models plus the loss sequences.
[ "$n" -gt 600 ] || { echo "FAIL: only $n tensors checked"; exit 1; }
# A reference the engine must NOT match: a corrupted gradient is reported.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
/usr/bin/env python3 - "$POLLEN_SRC/tests/ref/mnv3-small-w0.25-s64-b4.safetensors" "$tmp/bad.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], 'rb').read())
n = struct.unpack('<Q', data[:8])[0]
h = json.loads(data[8:8 + n])
start, end = h['grad.features.0.0.weight']['data_offsets']
off = 8 + n + start
v = struct.unpack('<f', data[off:off + 4])[0]
data[off:off + 4] = struct.pack('<f', v * 1.5 + 1e-3)
open(sys.argv[2], 'wb').write(data)
PY
if "$POLLEN" refcheck "$tmp/bad.safetensors" > "$tmp/log" 2>&1; then
  echo "FAIL: a corrupted reference gradient was not detected"; exit 1
fi
grep -q "grad.features.0.0.weight.*FAIL" "$tmp/log"
echo "corrupted gradient detected"
