#!/usr/bin/env bash
# JOB/tensorboard as an independent reader sees it: Debian's python3-protobuf, with a module
# that protoc generates here from TensorBoard's published event schema (not from pollen's
# proto/tf_event.proto), and a CRC32C of its own.
#   - a job killed with -9 after a checkpoint (a torn record added to its file) and relaunched
#     to the end: every file starts with file_version, every CRC is right, each train/* step
#     appears once and in order across the files, val/accuracy once per epoch, the values are
#     metrics.jsonl's
#   - the checker fails on the files a writer that does not cut would leave (duplicates)
#   - a fresh start (--start-over) cuts the leftover files to nothing
#   - --no-tensorboard writes no file
set -euo pipefail
py=""
for c in python3 /usr/bin/python3; do
  if command -v "$c" > /dev/null && "$c" -c 'import google.protobuf' 2> /dev/null; then py=$c; break; fi
done
[ -n "$py" ] || { echo "SKIP: no python3 with google.protobuf (Debian: apt-get install python3-protobuf)"; exit 77; }
command -v protoc > /dev/null || { echo "SKIP: no protoc (Debian: apt-get install protobuf-compiler)"; exit 77; }
T=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
P="$POLLEN"
fail() { echo "FAIL: $*"; exit 1; }

# TensorBoard's tensorboard/compat/proto/event.proto and summary.proto, the messages and
# fields a scalar uses, numbers and oneofs as published (members of other files' types left
# out).
mkdir -p "$T/schema" "$T/py"
cat > "$T/schema/tb_published.proto" <<'EOF'
syntax = "proto3";
package tensorboard;
message Summary {
  message Value {
    string node_name = 7;
    string tag = 1;
    oneof value {
      float simple_value = 2;
      bytes obsolete_old_style_histogram = 3;
    }
  }
  repeated Value value = 1;
}
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    bytes graph_def = 4;
    Summary summary = 5;
    bytes meta_graph_def = 9;
  }
}
EOF
protoc -I "$T/schema" --python_out="$T/py" "$T/schema/tb_published.proto" || fail "protoc"
cat > "$T/check.py" <<'EOF'
"""check.py PYDIR TBDIR METRICS EPOCHS: the events files of TBDIR against METRICS."""
import glob, json, math, os, struct, sys
sys.path.insert(0, sys.argv[1])
import tb_published_pb2 as pb

def crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t
TABLE = crc_table()

def masked_crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = TABLE[(c ^ x) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

def records(path):
    data = open(path, "rb").read()
    off = 0
    while off < len(data):
        assert off + 12 <= len(data), "%s: torn length at byte %d" % (path, off)
        n, lcrc = struct.unpack_from("<QI", data, off)
        assert masked_crc32c(data[off:off + 8]) == lcrc, "%s: length CRC at byte %d" % (path, off)
        assert off + 16 + n <= len(data), "%s: torn record at byte %d" % (path, off)
        body = data[off + 12:off + 12 + n]
        assert masked_crc32c(body) == struct.unpack_from("<I", data, off + 12 + n)[0], \
            "%s: data CRC at byte %d" % (path, off)
        yield body
        off += 16 + n

pydir, tbdir, metrics, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# TensorBoard reads the files whose names contain "tfevents", in name order.
files = sorted(f for f in glob.glob(os.path.join(tbdir, "*")) if "tfevents" in os.path.basename(f))
assert files, "no events file in %s" % tbdir
points = {}
for f in files:
    events = [pb.Event.FromString(b) for b in records(f)]
    assert events and events[0].WhichOneof("what") == "file_version" and \
        events[0].file_version == "brain.Event:2", "%s does not start with file_version" % f
    for e in events[1:]:
        assert e.WhichOneof("what") == "summary", "%s: a %s event" % (f, e.WhichOneof("what"))
        for v in e.summary.value:
            assert v.WhichOneof("value") == "simple_value", "%s: %s is no scalar" % (f, v.tag)
            points.setdefault(v.tag, []).append((e.step, v.simple_value))

rows = [json.loads(l) for l in open(metrics)]
train = [r for r in rows if r["loss"] is not None]
val = [r for r in rows if r["val_acc"] is not None]
want_tags = {"train/loss", "train/accuracy", "train/lr", "train/images_per_s", "train/comm_exposed_ms", "val/accuracy"}
assert set(points) == want_tags, "tags %s" % sorted(points)
steps = [s for s, _ in points["train/loss"]]
assert steps == list(range(1, len(steps) + 1)) and steps == [r["step"] for r in train], \
    "train/loss steps not each once in order: %s" % steps
assert len([s for s, _ in points["val/accuracy"]]) == epochs, "val/accuracy %d times, not %d" % (
    len(points["val/accuracy"]), epochs)

def same(tag, rs, key, scale=1.0):
    got = points[tag]
    assert [s for s, _ in got] == [r["step"] for r in rs], "%s steps differ from metrics.jsonl" % tag
    for (s, v), r in zip(got, rs):
        w = r[key] * scale  # metrics.jsonl has 6 significant digits, the event a float32
        assert math.isclose(v, w, rel_tol=2e-5, abs_tol=1e-6 * scale), "%s at step %d: %r, metrics %r" % (tag, s, v, w)

same("train/loss", train, "loss")
same("train/accuracy", train, "train_acc")
same("train/lr", train, "lr")
same("train/images_per_s", train, "images_per_s")
same("train/comm_exposed_ms", train, "comm_exposed_s", 1e3)
same("val/accuracy", val, "val_acc")
print("ok: %d files, steps 1..%d once each in order, %d validations, values equal metrics.jsonl's" % (
    len(files), steps[-1], epochs))
EOF
check() { "$py" "$T/check.py" "$T/py" "$1/tensorboard" "$1/metrics.jsonl" "$2"; }

"$P" prepare --src "$POLLEN_SRC/tests/data/flowers_sample" --out "$T/data" --max-side 64 > /dev/null
args=(--data "$T/data" --size 64 --batch 16 --width 0.5 --threads 2 --log-every 1)

# -- kill -9 after a checkpoint (two steps past it: their events were written), relaunch ------
job="$T/job"
"$P" train --job "$job" "${args[@]}" --epochs 6 > "$T/k1.log" 2>&1 &
pid=$!
"$py" - "$pid" "$job" <<'EOF' || { cat "$T/k1.log"; fail "the job ended before it could be killed past a checkpoint"; }
import json, os, re, signal, sys, time
pid, job = int(sys.argv[1]), sys.argv[2]
end = time.time() + 300
while time.time() < end:
    try:
        ckpts = [int(m.group(1)) for m in map(re.compile(r"step-(\d+)\.ckpt$").match, os.listdir(job + "/checkpoints")) if m]
        last = json.loads(open(job + "/metrics.jsonl").read().splitlines()[-1])["step"]
    except (OSError, ValueError, IndexError):
        ckpts, last = [], 0
    if ckpts and last >= max(ckpts) + 2:
        os.kill(pid, signal.SIGKILL)
        sys.exit(0)
    try:
        if open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] == "Z": sys.exit(1)
    except OSError:
        sys.exit(1)
    time.sleep(0.002)
sys.exit(1)
EOF
wait "$pid" 2> /dev/null || true
pid=""
cp -r "$job/tensorboard" "$T/killed"
cp "$job/metrics.jsonl" "$T/k1.metrics"
# A record torn by a crash in the middle of a write: the relaunch drops it.
for f in "$job/tensorboard"/*tfevents*; do printf '\x20\x00\x00\x00\x00\x00\x00\x00torn' >> "$f"; done
"$P" train --job "$job" "${args[@]}" --epochs 6 > "$T/k2.log" 2>&1 || { cat "$T/k2.log"; fail "relaunch after kill -9"; }
grep -q "resuming from" "$T/k2.log" || fail "the relaunch did not resume"
grep -q "tensorboard: [0-9]* events after step" "$T/k2.log" || fail "the relaunch cut no events: $(cat "$T/k2.log")"
check "$job" 6 || fail "the events after kill -9 and a relaunch"
[ "$(ls "$job/tensorboard" | grep -c tfevents)" = 2 ] || fail "not one events file per launch: $(ls "$job/tensorboard")"
echo "   (killed after $(grep -c '"loss":[0-9]' <<<"$(cat "$T/k1.metrics")") training lines, resumed at" \
  "$(grep -o 'resuming from [^:]*: step [0-9]*' "$T/k2.log" | grep -o '[0-9]*$'))"

# -- what a writer that did not cut would leave: the killed launch's whole file beside them ----
mkdir "$T/dup"
cp "$job/metrics.jsonl" "$T/dup/"
cp -r "$job/tensorboard" "$T/dup/tensorboard"
for f in "$T/killed"/*tfevents*; do cp "$f" "$T/dup/tensorboard/$(basename "$f").uncut"; done
if out=$(check "$T/dup" 6 2>&1); then fail "the checker passed duplicated steps: $out"; fi
grep -q "not each once in order" <<<"$out" || fail "the checker failed otherwise on duplicates: $out"
echo "ok: the checker fails on duplicated steps ($(tail -n1 <<<"$out" | cut -c1-90)...)"

# -- --no-tensorboard: a relaunch of the finished job writes no file ---------------------------
before=$(ls "$job/tensorboard")
"$P" train --job "$job" "${args[@]}" --epochs 6 --no-tensorboard > "$T/re.log" 2>&1 || { cat "$T/re.log"; fail "--no-tensorboard"; }
grep -q "already finished" "$T/re.log" || fail "--no-tensorboard: the relaunch trained again"
[ "$(ls "$job/tensorboard")" = "$before" ] || fail "--no-tensorboard wrote an events file"
echo "ok: --no-tensorboard writes no events file"

# -- a fresh start cuts the leftover files to nothing --------------------------------------
rm -rf "$job/checkpoints"
"$P" train --job "$job" "${args[@]}" --epochs 1 --force-config --start-over > "$T/over.log" 2>&1 ||
  { cat "$T/over.log"; fail "--start-over"; }
check "$job" 1 || fail "the events after a fresh start"
[ "$(ls "$job/tensorboard" | grep -c tfevents)" = 1 ] || fail "leftover events files: $(ls "$job/tensorboard")"
echo "ok: a fresh start leaves only its own events file"
