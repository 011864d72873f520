#!/usr/bin/env bash
# Brings up a local HA cluster on loopback addresses, as root on Debian 12:
#   HAProxy as the fixed registration address   127.0.100.100  (:9345 supervisor, :6443 API)
#   servers s1 s2 s3                            127.0.100.1-3
#   agent a1                                    127.0.100.11
# prints `kubectl get nodes` and how to reach each node, then waits; Ctrl-C (or
# `scripts/local-cluster.sh down` from another shell) stops everything and removes nothing but
# the processes. State lives in $RKE2_LOCAL_DIR (default /tmp/rke2-local); `clean` deletes it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${RKE2_LOCAL_DIR:-/tmp/rke2-local}"
net="${RKE2_LOCAL_NET:-127.0.100}"
lb="$net.100"

stop_all() {
  [ -d "$dir/pids" ] || return 0
  local pids=()
  # Signal everything at once (agent first), then wait: each node stops its own etcd cleanly.
  for name in a1 s3 s2 s1 haproxy; do
    f="$dir/pids/$name"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for _ in $(seq 1 150); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  echo "local cluster stopped (state kept in $dir; 'scripts/local-cluster.sh clean' removes it)"
}

case "${1:-up}" in
  down) stop_all; exit 0 ;;
  clean) stop_all; rm -rf "$dir"; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|down|clean]" >&2; exit 64 ;;
esac

scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
bin="$PWD/target/release/rke2"
mkdir -p "$dir/pids"
token_file="$dir/token"
[ -s "$token_file" ] || { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token_file"; chmod 600 "$token_file"; }

cat > "$dir/haproxy.cfg" <<CFG
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
CFG
for spec in "sup 9345 /ping" "api 6443 /readyz"; do
  set -- $spec
  {
    echo "frontend $1"; echo "  bind $lb:$2"; echo "  default_backend $1"
    echo "backend $1"; echo "  option httpchk GET $3"
    echo "  default-server inter 500ms fall 2 rise 1 check check-ssl verify none"
    for i in 1 2 3; do echo "  server s$i $net.$i:$2"; done
  } >> "$dir/haproxy.cfg"
done

trap 'echo; stop_all; exit 0' INT TERM
# Whatever ends this script (an error included) also stops the nodes it started.
trap stop_all EXIT
haproxy -db -f "$dir/haproxy.cfg" > "$dir/haproxy.log" 2>&1 &
echo $! > "$dir/pids/haproxy"

for i in 1 2 3; do
  mkdir -p "$dir/s$i"
  {
    echo "node-name: s$i"
    echo "node-ip: $net.$i"
    echo "bind-address: $net.$i"
    echo "data-dir: $dir/s$i/data"
    echo "write-kubeconfig: $dir/s$i/rke2.yaml"
    echo "token-file: $token_file"
    echo "tls-san: [$lb]"
    [ "$i" = 1 ] || echo "server: https://$lb:9345"
  } > "$dir/s$i/config.yaml"
  "$bin" server --config "$dir/s$i/config.yaml" > "$dir/s$i/log" 2>&1 &
  echo $! > "$dir/pids/s$i"
done
mkdir -p "$dir/a1"
cat > "$dir/a1/config.yaml" <<CFG
node-name: a1
node-ip: $net.11
server: https://$lb:9345
token-file: $token_file
data-dir: $dir/a1/data
lb-bind-address: $net.11
node-password-file: $dir/a1/node-password
node-label: [tier=demo]
CFG
"$bin" agent --config "$dir/a1/config.yaml" > "$dir/a1/log" 2>&1 &
echo $! > "$dir/pids/a1"

# The admin kubeconfig, pointed at the fixed registration address.
for _ in $(seq 1 600); do [ -s "$dir/s1/rke2.yaml" ] && break; sleep 0.1; done
sed "s#server: https://.*:6443#server: https://$lb:6443#" "$dir/s1/rke2.yaml" > "$dir/kubeconfig.yaml"
chmod 600 "$dir/kubeconfig.yaml"
# Bounded: a call must never outlive a server that is still starting, or Ctrl-C would wait
# for it (bash runs the trap only once the foreground command ends).
kc=(timeout 15 kubectl --kubeconfig "$dir/kubeconfig.yaml" --cache-dir "$dir/.kube-cache" --request-timeout=10s)
echo "waiting for 3 servers and 1 agent to be Ready..."
for _ in $(seq 1 240); do
  # Failures are expected while servers start; they must not end the script (set -e).
  ready=$({ "${kc[@]}" get nodes --no-headers 2>/dev/null || true; } | awk '$2 ~ /^Ready/' | wc -l)
  [ "$ready" -ge 4 ] && break
  sleep 0.5
done
"${kc[@]}" get nodes -o wide || true
cat <<INFO

Local rke2-rs cluster is up.
  kubeconfig (via the registration address): $dir/kubeconfig.yaml
      kubectl --kubeconfig $dir/kubeconfig.yaml get nodes
  join token:        $dir/s1/data/server/token
  registration:      https://$lb:9345  (supervisor)   https://$lb:6443  (Kubernetes API)
  servers:           s1 $net.1   s2 $net.2   s3 $net.3   (each: :9345, :6443, etcd :2379)
  agent:             a1 $net.11  (client-side load balancer on $net.11:6444 and :6443)
  logs:              $dir/<node>/log
Stop with Ctrl-C, or: scripts/local-cluster.sh down
INFO
# `wait` returns as soon as a signal arrives, so the trap runs at once.
while kill -0 "$(cat "$dir/pids/s1" 2>/dev/null || echo 0)" 2>/dev/null; do wait -n || true; done
