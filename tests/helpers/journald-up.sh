#!/bin/bash
# A stand-alone systemd-journald for tests (docs/testing.md §4a), without systemd as PID 1.
# Usage: unshare --mount --propagation private journald-up.sh <dir> &
# In this private mount namespace /run/systemd/journal is <dir>/run, so its sockets appear on
# the host at <dir>/run/{socket,stdout,dev-log}; the journal files live on a tmpfs visible only
# here: read them with  journalctl -D /proc/<pid>/root/run/log/journal.  A daemon entered into
# this namespace (nsenter -t <pid> -m) logs to this journald through the fixed socket path.
set -e
J=$1
mount -t tmpfs -o mode=755 tmpfs /run/systemd        # hides the host's /run/systemd, here only
mkdir /run/systemd/journal
mount --bind $J/run /run/systemd/journal
mkdir -p /run/log
mount -t tmpfs -o mode=755 tmpfs /run/log            # journald refuses to remove runtime journals on a disk fs
cat > $J/journald.conf <<'CONF'
[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitBurst=0
CONF
mount --bind $J/journald.conf /etc/systemd/journald.conf
exec /lib/systemd/systemd-journald
