# status_lib.sh - the set-up of the tests that run a live job and talk to its status server.
# Sourced as `. status_lib.sh NAME`: makes $tmp (/tmp/pollen-NAME-XXXXXX, removed at exit),
# $job_pid (the job, stopped at exit while set), fail (says why, shows the tail of every log
# in $tmp, exits 1) and say.
tmp=$(mktemp -d "/tmp/pollen-$1-XXXXXX")
job_pid=""
cleanup() {
  if [ -n "$job_pid" ]; then kill -TERM "$job_pid" 2>/dev/null; sleep 1; kill -KILL "$job_pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for l in "$tmp"/*.log; do [ -f "$l" ] && { echo "--- tail of $l"; tail -15 "$l"; }; done
  exit 1
}
say() { echo "-- $*"; }
