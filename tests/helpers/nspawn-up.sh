#!/bin/bash
# Runs inside nspawn-run.sh's private mount namespace: overlay of the host root (read-only lower
# layer, tmpfs upper), the test's files copied on top, host units that must not start masked,
# then systemd-nspawn with systemd as PID 1 and a private network (lo only). Every mount lives
# in this namespace and disappears when nspawn exits; nothing on the host is modified.
set -e
B=$1
mkdir -p $B/hostroot $B/ovl $B/root
mount --bind / $B/hostroot        # non-recursive: only the root fs, none of /proc,/sys,/dev,/tmp...
mount -t tmpfs -o mode=755 tmpfs $B/ovl   # upper/work must not be inside the lower fs
mkdir -p $B/ovl/upper $B/ovl/work
mount -t overlay overlay -o lowerdir=$B/hostroot,upperdir=$B/ovl/upper,workdir=$B/ovl/work $B/root
# The host's /run is on disk here; keep nspawn's scratch space off it.
mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn
R=$B/root
# Host units that basic.target could still pull in, or that the tests' own units could.
for u in systemd-timesyncd.service systemd-pstore.service apt-daily.timer apt-daily-upgrade.timer \
         man-db.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer nix-daemon.socket \
         etcd.service etcd2.service; do
  ln -sf /dev/null $R/etc/systemd/system/$u
done
cp -a $B/files/. $R/
: > $R/etc/machine-id                       # empty -> transient machine id
exec systemd-nspawn -D $R -b --private-network --register=no --keep-unit --console=read-only \
  systemd.unit=basic.target
