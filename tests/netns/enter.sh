# enter.sh I N WORK CMD... - the last step into host I, run by netns_run (lib.sh) and
# rsh-agent.sh already inside host I's network, UTS and private mount namespaces.
# Gives the host its name and its own /etc/hosts, puts its folder WORK/hI at WORK/node, hides
# the other hosts' folders, and runs CMD in WORK/node.
set -eu
i=$1 n=$2 work=$3
shift 3
hostname "h$i"
cd / # the caller's folder may be a mount undone below
# A launcher may itself run inside another host's mount namespace (mpirun on h1 starting the
# daemon for h2), which hides or replaces folders: uncover everything, then set this host up.
for d in "$work/node" "$work"/h*; do
  while mountpoint -q "$d"; do umount "$d"; done
done
# WORK/node is this host's own folder, at the same path on every host like a local disk.
mount --bind "$work/h$i" "$work/node"
for ((j = 1; j <= n; j++)); do
  [ "$j" = "$i" ] || mount -t tmpfs -o ro,size=4k,mode=0555 netns-hidden "$work/h$j"
done
# Host names resolve to the test subnet only inside the test.
if ! mountpoint -q /etc/hosts || ! grep -q " h$i\$" /etc/hosts; then
  mount --bind "$work/hosts" /etc/hosts
fi
cd "$work/node"
exec "$@"
