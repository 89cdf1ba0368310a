#!/usr/bin/env bash
# test_deploy_lint.sh - checks the deploy recipes that cannot run here (Kubernetes, Docker):
#   1. YAML: yamllint -s with deploy/kubernetes/.yamllint, or else a parse with PyYAML;
#   2. the manifests' required structure (PyYAML): MPIJob v2beta1 with one launcher and
#      workers, slotsPerWorker, the PVC mounted at /work in both and defined in pvc.yaml
#      (ReadWriteMany), the launcher's pollen launch, the workers' preStop checkpoint;
#   3. `bash -n` on every deploy and test shell script and on the launcher's embedded script;
#   4. the Dockerfile: Debian 12 base, runs deploy/install-deps.sh, entrypoint pollen, and
#      installs none of install-deps.sh's packages on its own, so the two never drift;
#   5. the sbatch script's scheduler directives;
#   6. monitoring: the launcher passes --status-tcp 0.0.0.0:9100, the workers expose port 9100
#      as "metrics", podmonitor.yaml scrapes that port's /metrics with a Bearer token, and
#      deploy/grafana/pollen-dashboard.json is JSON (python3 -m json.tool) whose queries
#      name only metrics pollen exposes;
#   7. the launcher's liveness probe, run against local stand-ins for worker 0's /healthz
#      (passes on 200 and when nothing listens, fails on 503), and the status token Secret:
#      mounted in the workers, named by --status-token-file, the one podmonitor.yaml reads.
# Parts whose tool is missing are skipped with a note; the test skips (77) only if no YAML
# check at all was possible. Env: POLLEN_SRC (source tree).
set -uo pipefail
SRC=${POLLEN_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$SRC" || exit 1
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
manifests=(deploy/kubernetes/mpijob.yaml deploy/kubernetes/pvc.yaml deploy/kubernetes/podmonitor.yaml)

# A python3 with PyYAML (the pyenv one may lack it; Debian's python3-yaml is in /usr/bin).
py=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import yaml' 2>/dev/null; then py=$p; break; fi
done

# ---- 1. YAML syntax and style
yaml_checked=0
if command -v yamllint >/dev/null 2>&1; then
  yamllint -s -c deploy/kubernetes/.yamllint "${manifests[@]}" deploy/kubernetes/.yamllint \
    || fail "yamllint found problems in deploy/kubernetes"
  yaml_checked=1
  echo "checked: yamllint -s (default rules, 100 columns) on ${manifests[*]}"
elif [ -n "$py" ]; then
  "$py" -c 'import sys, yaml
for f in sys.argv[1:]:
    list(yaml.safe_load_all(open(f)))' "${manifests[@]}" || fail "YAML does not parse"
  yaml_checked=1
  echo "checked: YAML parses (PyYAML; yamllint not installed)"
else
  echo "note: neither yamllint nor PyYAML installed: YAML syntax not checked"
fi

# ---- 2. structure of the manifests
launcher_script=$(mktemp)
trap 'rm -f "$launcher_script"' EXIT
if [ -n "$py" ]; then
  "$py" - "$launcher_script" <<'EOF' || fail "the Kubernetes manifests lack required structure (above)"
import sys, yaml
errors = []
def need(cond, what):
    if not cond:
        errors.append(what)
def get(d, *path):
    for k in path:
        if isinstance(d, dict) and k in d:
            d = d[k]
        elif isinstance(d, list) and isinstance(k, int) and k < len(d):
            d = d[k]
        else:
            return None
    return d

pvcs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/pvc.yaml")) if d]
need(len(pvcs) == 1 and pvcs[0].get("kind") == "PersistentVolumeClaim" and pvcs[0].get("apiVersion") == "v1",
     "pvc.yaml: one v1 PersistentVolumeClaim")
pvc = pvcs[0] if pvcs else {}
claim = get(pvc, "metadata", "name")
need("ReadWriteMany" in (get(pvc, "spec", "accessModes") or []), "pvc.yaml: accessModes ReadWriteMany (every worker mounts it)")
need(get(pvc, "spec", "resources", "requests", "storage"), "pvc.yaml: spec.resources.requests.storage")

jobs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/mpijob.yaml")) if d]
need(len(jobs) == 1, "mpijob.yaml: exactly one document")
job = jobs[0] if jobs else {}
need(job.get("apiVersion") == "kubeflow.org/v2beta1", "mpijob.yaml: apiVersion kubeflow.org/v2beta1")
need(job.get("kind") == "MPIJob", "mpijob.yaml: kind MPIJob")
need(get(job, "metadata", "name"), "mpijob.yaml: metadata.name")
spw = get(job, "spec", "slotsPerWorker")
need(isinstance(spw, int) and spw >= 1, "mpijob.yaml: spec.slotsPerWorker >= 1")
specs = get(job, "spec", "mpiReplicaSpecs") or {}
need(set(specs) == {"Launcher", "Worker"}, "mpijob.yaml: mpiReplicaSpecs has Launcher and Worker")
need(get(specs, "Launcher", "replicas") == 1, "mpijob.yaml: one Launcher replica")
w = get(specs, "Worker", "replicas")
need(isinstance(w, int) and w >= 1, "mpijob.yaml: Worker replicas >= 1")
for role in ("Launcher", "Worker"):
    pod = get(specs, role, "template", "spec") or {}
    c = get(pod, "containers", 0) or {}
    need(c.get("image"), f"{role}: container image")
    need(get(c, "resources", "requests", "cpu") and get(c, "resources", "limits", "memory"),
         f"{role}: resources (cpu request, memory limit)")
    mounts = {m.get("name"): m.get("mountPath") for m in c.get("volumeMounts") or []}
    vols = {v.get("name"): get(v, "persistentVolumeClaim", "claimName") for v in pod.get("volumes") or []}
    need(any(mounts.get(n) == "/work" and vols.get(n) == claim for n in mounts),
         f"{role}: the PVC '{claim}' from pvc.yaml mounted at /work")
    if role == "Worker":
        need("sshd" in " ".join(c.get("command") or []), "Worker: runs sshd (the launcher's mpirun uses ssh)")
        pre = " ".join(get(c, "lifecycle", "preStop", "exec", "command") or [])
        need("USR1" in pre and "pollen" in pre, "Worker: preStop hook that sends USR1 to pollen")
        need({"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in (c.get("ports") or []),
             "Worker: containerPort 9100 named metrics (rank 0 runs on worker 0)")
    else:
        script = "\n".join(c.get("args") or [])
        need("pollen launch" in script and "--hostfile /etc/mpi/hostfile" in script and "--job" in script,
             "Launcher: runs pollen launch --hostfile /etc/mpi/hostfile ... -- ... --job (the supervisor relaunches)")
        need("--status-tcp 0.0.0.0:9100" in script, "Launcher: pollen train --status-tcp 0.0.0.0:9100")
        open(sys.argv[1], "w").write(script)
mons = [d for d in yaml.safe_load_all(open("deploy/kubernetes/podmonitor.yaml")) if d]
mon = mons[0] if len(mons) == 1 else {}
need(mon.get("kind") == "PodMonitor" and mon.get("apiVersion") == "monitoring.coreos.com/v1",
     "podmonitor.yaml: one monitoring.coreos.com/v1 PodMonitor")
need(get(mon, "spec", "selector", "matchLabels", "role") == "worker", "podmonitor.yaml: selects the worker pods")
ep = get(mon, "spec", "podMetricsEndpoints", 0) or {}
need(ep.get("port") == "metrics" and ep.get("path") == "/metrics", "podmonitor.yaml: port metrics, path /metrics")
need(get(ep, "authorization", "type") == "Bearer" and get(ep, "authorization", "credentials", "key"),
     "podmonitor.yaml: Bearer authorization from a secret")
for e in errors:
    print("  missing:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
  echo "checked: MPIJob/PVC structure (kind, apiVersion, replicas, slots, PVC mounts, pollen launch, preStop, metrics port, PodMonitor)"
else
  echo "note: PyYAML not installed: manifest structure not checked"
fi

# ---- 3. shell syntax
n=0
while IFS= read -r f; do
  bash -n "$f" || fail "bash -n $f"
  n=$((n + 1))
done < <(find deploy tests/slurm -type f \( -name '*.sh' -o -name '*.sbatch' \); ls tests/test_*.sh)
if [ -s "$launcher_script" ]; then
  bash -n "$launcher_script" || fail "bash -n on the launcher script in mpijob.yaml"
  n=$((n + 1))
fi
echo "checked: bash -n on $n scripts (deploy/, tests/slurm/, tests/test_*.sh, the MPIJob launcher)"
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -S warning deploy/slurm/pollen.sbatch deploy/install-deps.sh tests/slurm/*.sh \
    || fail "shellcheck warnings in the deploy scripts"
  echo "checked: shellcheck -S warning"
fi

# ---- 4. Dockerfile against install-deps.sh
df=deploy/docker/Dockerfile
# install-deps.sh's package list: the words of its packages=( ... ) array, comments removed.
deps=$(sed -n '/^packages=(/,/^)/p' deploy/install-deps.sh | sed 's/#.*//; s/packages=(//; s/)//' | tr -s ' \t' '\n\n' | sed '/^$/d' | sort -u)
[ "$(echo "$deps" | wc -l)" -ge 5 ] || fail "could not read the package list of deploy/install-deps.sh"
grep -Eq '^FROM debian:bookworm(\s|$)' "$df" || fail "$df: base image is not debian:bookworm"
grep -Eq '^COPY deploy/install-deps.sh ' "$df" || fail "$df: does not copy deploy/install-deps.sh"
grep -Eq '^RUN bash [^ ]*install-deps.sh' "$df" || fail "$df: does not run install-deps.sh"
grep -Eq '^ENTRYPOINT \["pollen"\]' "$df" || fail "$df: entrypoint is not pollen"
# Packages the Dockerfile installs by itself (words after 'apt-get install' up to '&&').
extra=$(sed ':a; /\\$/ { N; s/\\\n//; ba }' "$df" | grep -o 'apt-get install[^&;]*' \
  | sed 's/apt-get install//' | tr -s ' \t' '\n\n' | grep -v '^-' | sed '/^$/d' | sort -u)
dup=$(comm -12 <(echo "$deps") <(echo "$extra"))
[ -z "$dup" ] || fail "$df installs packages that belong in deploy/install-deps.sh only: $dup"
echo "checked: $df (debian:bookworm, runs install-deps.sh with its $(echo "$deps" | wc -l) packages, entrypoint pollen; its own extras: $(echo $extra))"

# ---- 5. the sbatch script's directives
sb=deploy/slurm/pollen.sbatch
for d in '--requeue' '--signal=B:USR1@' '--open-mode=append' '--nodes=' '--ntasks-per-node=' '--cpus-per-task=' '--time='; do
  grep -q -- "^#SBATCH $d" "$sb" || fail "$sb: no '#SBATCH $d' line"
done
grep -q 'scontrol requeue "\$SLURM_JOB_ID"' "$sb" || fail "$sb: never requeues itself"
echo "checked: $sb directives (--requeue, --signal=B:USR1@, --open-mode=append, sizes, time) and its requeue"

# ---- 6. the Grafana dashboard
dash=deploy/grafana/pollen-dashboard.json
if python3 -m json.tool "$dash" >/dev/null; then
  # Every pollen_* name a query uses must be one the exposition writes (histograms: _bucket).
  exposed=$(grep -o '"pollen_[a-z_]*"' proto/status_proto.c | tr -d '"' | sort -u)
  used=$(grep -o 'pollen_[a-z_]*' "$dash" | sed 's/_bucket$//' | sort -u)
  unknown=$(comm -23 <(echo "$used") <(echo "$exposed"))
  [ -z "$unknown" ] || fail "$dash queries metrics pollen does not expose: $unknown"
  echo "checked: $dash (json.tool; its $(echo "$used" | wc -l) metric names are exposed)"
else
  fail "$dash is not valid JSON"
fi

# ---- 7. the launcher's liveness probe and the status token Secret
if [ -n "$py" ]; then
  "$py" - <<'EOF' || fail "the liveness probe or the status token Secret (above)"
import re, subprocess, threading, yaml
from http.server import BaseHTTPRequestHandler, HTTPServer
job = yaml.safe_load(open("deploy/kubernetes/mpijob.yaml"))
spec = job["spec"]["mpiReplicaSpecs"]
launcher = spec["Launcher"]["template"]["spec"]["containers"][0]
worker = spec["Worker"]["template"]["spec"]
probe = launcher["livenessProbe"]["exec"]["command"]
script = " ".join(launcher["args"])
# The token: a Secret mounted in the workers (rank 0 runs there), named by --status-token-file.
m = re.search(r"--status-token-file (\S+)", script)
assert m, "the launcher's pollen train has no --status-token-file"
mounts = {v["name"]: v["mountPath"] for v in worker["containers"][0]["volumeMounts"]}
secrets = {v["name"]: v["secret"]["secretName"] for v in worker["volumes"] if "secret" in v}
assert any(m.group(1).startswith(mounts[n] + "/") for n in secrets if n in mounts), \
    "--status-token-file %s is not in a Secret mounted in the workers" % m.group(1)
pm = yaml.safe_load(open("deploy/kubernetes/podmonitor.yaml"))
cred = pm["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"]["name"]
assert cred in secrets.values(), "podmonitor.yaml reads Secret %s, the workers mount %s" % (cred, secrets)

# The probe, pointed at a local stand-in for worker 0: passes on 200 and when nothing
# listens, fails on 503 (no step for twice --stall-timeout).
def run(port):
    cmd = [a.replace("pollen-flowers-worker-0.pollen-flowers-worker", "127.0.0.1").replace("9100", str(port))
           for a in probe]
    return subprocess.run(cmd, timeout=20).returncode
def serve(code):
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(code if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b"x\n")
        def log_message(self, *a):
            pass
    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
for code in (200, 503):
    srv = serve(code)
    got = run(srv.server_address[1])
    srv.shutdown()
    srv.server_close()
    assert (got == 0) == (code == 200), "probe exit %d against a %d /healthz" % (got, code)
free = serve(200)
port = free.server_address[1]
free.shutdown()
free.server_close()
assert run(port) == 0, "the probe fails when nothing listens (a job starting or between launches)"
print("checked: liveness probe (200 and nothing listening pass, 503 fails); token Secret mounted, named, scraped")
EOF
else
  echo "note: PyYAML not installed: liveness probe not run"
fi

if [ "$failures" -gt 0 ]; then echo "FAIL: $failures problem(s)"; exit 1; fi
if [ "$yaml_checked" = 0 ]; then echo "SKIP: no YAML checker installed (apt-get install yamllint)"; exit 77; fi
echo "ok: deploy recipes pass every check available here"
