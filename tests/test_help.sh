#!/usr/bin/env bash
# test_help.sh - every command's --help matches what it accepts: each long flag a --help names
# is accepted by the command's getopt (no "unrecognized option"), and each long option of the
# command's getopt table (parsed from cli/*.c) is named in its --help.
# Env: POLLEN, POLLEN_SRC (set by ctest).
set -uo pipefail
P=${POLLEN:?set POLLEN to the pollen binary}
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
T=$(mktemp -d /tmp/pollen-help-XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
python3 - "$P" "$SRC" <<'PY'
import os, re, subprocess, sys
pollen, src = sys.argv[1], sys.argv[2]

def run(args):
    r = subprocess.run([pollen] + args, capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr

rc, top = run(["--help"])
assert rc == 0, top
commands = re.findall(r"^  ([a-z]+)  ", top.split("commands:", 1)[1], re.M)
assert {"train", "eval", "predict", "status", "export"} <= set(commands), commands

# The getopt table of each command: the `struct option` array in the function that runs it.
def tables():
    out = {}
    for name in sorted(os.listdir(os.path.join(src, "cli"))):
        if not name.endswith(".c"):
            continue
        text = open(os.path.join(src, "cli", name)).read()
        for m in re.finditer(r"^int ((?:cmd|bench)_\w+)\(int argc", text, re.M):
            body = text[m.end():]
            nxt = re.search(r"^\S.*\(", body, re.M)  # the next top-level definition
            body = body[:nxt.start()] if nxt else body
            t = re.search(r"struct option \w+\[\] = \{(.*?)\};", body, re.S)
            if t:
                out[m.group(1)] = set(re.findall(r'\{\s*"([a-z0-9-]+)"\s*,', t.group(1)))
    return out

table = tables()
checked, bad = 0, []
targets = [[c] for c in commands if c != "version"] + [["bench", "ops"], ["bench", "loader"]]
for cmd in targets:
    func = ("bench_" + cmd[1]) if len(cmd) == 2 else "cmd_" + cmd[0]
    rc, text = run(cmd + ["--help"])
    if rc != 0:
        bad.append(f"{' '.join(cmd)} --help exits {rc}")
        continue
    if func not in table:
        bad.append(f"no getopt table found for {func} in cli/*.c")
        continue
    shown = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))
    # pollen launch passes train's flags on after --: its help may name them (--job, --batch)
    passed_on = table["cmd_train"] - table[func] if cmd == ["launch"] else set()
    shown -= passed_on
    for flag in sorted(shown):
        checked += 1
        # a dummy value, then --help: an accepted flag never reaches "unrecognized option"
        rc, out = run(cmd + ["--" + flag, "1", "--help"])
        if "unrecognized option" in out or "unknown option" in out:
            bad.append(f"{' '.join(cmd)} --help shows --{flag}, which it does not accept: {out.strip()[:120]}")
        if flag not in table[func]:
            bad.append(f"{' '.join(cmd)} --help shows --{flag}, not in {func}'s getopt table")
    for flag in sorted(table[func] - shown):
        bad.append(f"{' '.join(cmd)} accepts --{flag} but its --help does not show it")
# A flag no command has is refused: the check above can fail.
rc, out = run(["export", "--no-such-flag", "1", "--help"])
assert "unrecognized option" in out and rc == 2, (rc, out)
if bad:
    print("FAIL:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"ok: {checked} flags of {len(targets)} commands' --help accepted, every getopt option documented")
PY
