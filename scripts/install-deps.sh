#!/usr/bin/env bash
# Installs what rke2-rs needs on Debian 12, as root: etcd (the daemon runs the real etcd),
# protoc (the etcd client's build script needs it), HAProxy (the local cluster's fixed
# registration address), containerd + runc + the CNI plugins (every node runs its pods on them)
# and a Rust toolchain if none is installed.
# With --test it also installs what the test suite drives: dbus-daemon/busctl, systemd-nspawn,
# nix-instantiate, setpriv, iproute2, unzip, openssl, python3-venv (the Python client test) and
# python3-kubernetes (Debian's client), and for the pod tests umoci, skopeo and busybox-static
# (test images built offline), docker-registry (a loopback mirror) and nftables.
set -euo pipefail
packages=(etcd-server etcd-client protobuf-compiler haproxy curl ca-certificates gcc libc6-dev pkg-config
  containerd runc containernetworking-plugins iproute2 kmod zstd)
if [ "${1:-}" = "--test" ]; then
  packages+=(dbus systemd systemd-container nix-bin util-linux iproute2 jq unzip openssl python3-venv
    python3-kubernetes umoci skopeo busybox-static docker-registry nftables)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian installs and starts a default etcd on 127.0.0.1:2379 on systemd hosts; rke2-rs runs
# its own etcd, so keep the packaged service out of the way.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd.service >/dev/null 2>&1 || true
  # Likewise Debian's containerd service: each rke2 node starts its own containerd.
  systemctl disable --now containerd.service >/dev/null 2>&1 || true
fi
if ! command -v kubectl >/dev/null; then
  echo "kubectl not found: installing Debian's kubernetes-client (the tests expect kubectl 1.27 or newer)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi
if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "cargo is in $HOME/.cargo/bin; add it to PATH"
  else
    echo "installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  fi
fi
# The test command's quality gates need rustfmt and clippy (rustup's minimal profile has neither).
if [ "${1:-}" = "--test" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if command -v rustup >/dev/null; then
    for c in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >/dev/null
    done
  fi
fi
