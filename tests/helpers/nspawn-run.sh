#!/bin/bash
# Boots the host's own OS with systemd as PID 1 under systemd-nspawn, for tests
# (docs/testing.md §2a). Usage: nspawn-run.sh <dir> <id> > boot.log 2>&1 &
#   <dir>/files/   is copied over the container's root before boot (binaries, units, config);
#   <id>           names this instance's cgroup, so parallel runs never share one.
# It joins /rke2-test-nspawn-<id> in the systemd and unified hierarchies (nspawn --keep-unit
# creates its payload/supervisor cgroups next to the caller's, and they must not land in the
# root), then runs nspawn-up.sh in a private mount namespace; it execs, so $! is nspawn's pid.
# Stop with nspawn-down.sh <pid> <id>.
set -e
DIR=$1 ID=$2
[ -n "$DIR" ] && [ -n "$ID" ] || { echo "usage: $0 <dir> <id>" >&2; exit 2; }
if [ -d /sys/fs/cgroup/unified ]; then hierarchies="systemd unified"; else hierarchies=""; fi
if [ -n "$hierarchies" ]; then
  for h in $hierarchies; do
    mkdir -p /sys/fs/cgroup/$h/rke2-test-nspawn-$ID
    echo $$ > /sys/fs/cgroup/$h/rke2-test-nspawn-$ID/cgroup.procs
  done
else # pure cgroup v2
  mkdir -p /sys/fs/cgroup/rke2-test-nspawn-$ID
  echo $$ > /sys/fs/cgroup/rke2-test-nspawn-$ID/cgroup.procs
fi
exec unshare --mount --propagation private "$(dirname "$0")/nspawn-up.sh" "$DIR"
