#!/bin/bash
# rsh-agent.sh HOST COMMAND... - Open MPI's remote shell for namespace hosts: mpirun runs it
# as `--mca plm_rsh_agent rsh-agent.sh` in place of ssh, to start its daemon on HOST.
#
# HOST is an address, hostname or index from NETNS_WORK/netns.map (written by lib.sh's
# netns_create). COMMAND is a shell command line, as ssh would get it. Like ssh it runs with a
# clean environment (PATH and HOME only), so what a job needs on other hosts must be exported
# with mpirun -x, exactly as on real machines.
set -u
die() { echo "rsh-agent.sh: $*" >&2; exit 255; }
# ssh-style options before the host (Open MPI adds none for a custom agent, but be lenient).
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
[ $# -ge 2 ] || die "usage: rsh-agent.sh HOST COMMAND..."
host=$1
shift
[ -n "${NETNS_WORK:-}" ] && [ -r "$NETNS_WORK/netns.map" ] ||
  die "NETNS_WORK/netns.map not found: run under tests/netns/lib.sh's netns_create"
idx= ns= n=0
while read -r i addr name hns; do
  n=$((n + 1))
  if [ "$host" = "$i" ] || [ "$host" = "$addr" ] || [ "$host" = "$name" ]; then idx=$i ns=$hns; fi
done <"$NETNS_WORK/netns.map"
[ -n "$idx" ] || die "host '$host' is not in $NETNS_WORK/netns.map"
# The same way in as lib.sh's netns_run: the host's network, its own hostname and mounts.
exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
  ip netns exec "$ns" unshare --uts --mount --propagation private \
  bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/enter.sh" "$idx" "$n" "$NETNS_WORK" /bin/sh -c "$*"
