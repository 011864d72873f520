#!/bin/bash
# Stops a container started by nspawn-run.sh and removes its cgroups.
# Usage: nspawn-down.sh <pid of nspawn-run.sh (= nspawn's pid, it execs)> <id>
NP=$1 ID=$2
# Running, and not a zombie: nspawn is usually the caller's child, reaped only later.
alive() { [ -r /proc/$NP/stat ] && [ "$(sed 's/.*) //' /proc/$NP/stat | cut -d' ' -f1)" != Z ]; }
if alive; then
  kill -TERM "$NP"                                # nspawn turns SIGTERM into an orderly halt
  for i in $(seq 1 100); do alive || break; sleep 0.1; done
  alive && kill -KILL "$NP"
  for i in $(seq 1 50); do alive || break; sleep 0.1; done
fi
for d in /sys/fs/cgroup/systemd/rke2-test-nspawn-$ID /sys/fs/cgroup/unified/rke2-test-nspawn-$ID \
         /sys/fs/cgroup/rke2-test-nspawn-$ID; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rmdir /run/systemd/nspawn 2>/dev/null   # empty mount point left on the host fs by nspawn-up.sh
true
