#!/usr/bin/env bash
# Brings up a local HA cluster on loopback addresses, as root on Debian 12:
#   HAProxy as the fixed registration address   $net.100  (:9345 supervisor, :6443 API)
#   servers s1 s2 s3                            $net.1-3
#   agent a1                                    $net.11
# ($net is 127.0.100 unless RKE2_LOCAL_NET says otherwise), prints `kubectl get nodes` and how to
# reach each node, then watches the nodes until Ctrl-C or `scripts/local-cluster.sh down` (from
# any shell). No node is special: one that exits is reported at once with the end of its log and
# the others keep running. State lives in $RKE2_LOCAL_DIR (default /tmp/rke2-local); `clean`
# deletes it. Run with --help for the commands and settings.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${RKE2_LOCAL_DIR:-/tmp/rke2-local}"
net="${RKE2_LOCAL_NET:-127.0.100}"
lb="$net.100"
servers=(s1 s2 s3)
nodes=(s1 s2 s3 a1)
# Logs of this many previous runs are kept as <node>/log.1 (newest) .. log.N.
keep_logs=5
# Node agents renew their Lease this often; a node counts as up only with a Lease renewed within
# `fresh` seconds, so a Ready condition stored by an earlier run never counts.
heartbeat=2
fresh=10

usage() {
  cat <<USAGE
usage: scripts/local-cluster.sh [up|down|clean|--help]
  up      (default) start HAProxy, servers s1 s2 s3 and agent a1, wait until every node
          heartbeats, print how to reach them, then watch them until Ctrl-C or 'down'.
          Refuses to start while a cluster from $dir is still running.
  down    stop the cluster started from $dir, from any shell; the script that runs it
          in the foreground exits too. State is kept.
  clean   'down', then delete $dir.
  --help  this text.
Settings (environment):
  RKE2_LOCAL_DIR   state, logs and pid files (now: $dir)
  RKE2_LOCAL_NET   first three octets of the loopback addresses (now: $net)
  RKE2_LOCAL_BIN   an rke2 binary to use instead of installing dependencies and building one
USAGE
}

# The pid recorded for a part of the cluster, if that process is still the one we started (its
# command line names our state dir), so a recycled pid is never signalled.
marker() {
  case "$1" in
    script) echo "local-cluster.sh" ;;
    haproxy) echo "$dir/haproxy.cfg" ;;
    *) echo "$dir/$1/config.yaml" ;;
  esac
}
live_pid() {
  local pid
  pid=$(cat "$dir/pids/$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$(marker "$1")" || return 1
  echo "$pid"
}
running_parts() {
  local name pid out=""
  for name in script haproxy "${nodes[@]}"; do
    pid=$(live_pid "$name") && out="$out $name=$pid"
  done
  [ -n "$out" ] && echo "${out# }"
}

# Signals every part at once (each server stops its own etcd), waits up to 15 s, then kills
# what is left. Returns 1 when nothing was running.
stop_nodes() {
  local name pid pids=()
  for name in a1 s3 s2 s1 haproxy; do
    pid=$(live_pid "$name") || { rm -f "$dir/pids/$name"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
    rm -f "$dir/pids/$name"
  done
  [ "${#pids[@]}" -gt 0 ] || return 1
  for _ in $(seq 1 150); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

down() {
  local spid
  # The foreground script stops its own nodes when signalled; wait for it, then stop whatever
  # is left (nodes whose script was killed).
  if spid=$(live_pid script) && [ "$spid" != $$ ]; then
    kill -TERM "$spid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  fi
  stop_nodes || true
  rm -f "$dir/pids/script"
}

case "${1:-up}" in
  -h | --help | help) usage; exit 0 ;;
  down)
    if [ -z "$(running_parts)" ]; then echo "no local cluster is running from $dir"; exit 0; fi
    down
    echo "local cluster stopped (state kept in $dir; 'scripts/local-cluster.sh clean' removes it)"
    exit 0 ;;
  clean) down; rm -rf "$dir"; echo "local cluster stopped and $dir removed"; exit 0 ;;
  up) ;;
  *) usage >&2; exit 64 ;;
esac

mkdir -p "$dir/pids"
# A lock held for as long as this script or any process it started runs (they inherit the
# descriptor), so two `up`s cannot both start, even when the first one's pid files are gone.
exec 9>"$dir/lock"
parts=$(running_parts || true)
if ! flock -n 9 || [ -n "$parts" ]; then
  echo "a local cluster from $dir is already running (${parts:-its processes hold $dir/lock})." >&2
  echo "Stop it first with: scripts/local-cluster.sh down" >&2
  exit 1
fi

if [ -n "${RKE2_LOCAL_BIN:-}" ]; then
  bin="$RKE2_LOCAL_BIN"
else
  scripts/install-deps.sh
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release --locked
  bin="$PWD/target/release/rke2"
fi
echo $$ > "$dir/pids/script"

declare -A pid_of=() reported=()
helper=""
on_signal() {
  trap - EXIT INT TERM
  [ -n "$helper" ] && kill "$helper" 2>/dev/null
  echo
  stop_nodes || true
  rm -f "$dir/pids/script"
  echo "local cluster stopped (state kept in $dir; 'scripts/local-cluster.sh clean' removes it)"
  exit 0
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$helper" ] && kill "$helper" 2>/dev/null
  if stop_nodes; then echo "local cluster stopped (state kept in $dir)"; fi
  rm -f "$dir/pids/script"
  exit "$rc"
}
trap on_signal INT TERM
# Whatever ends this script (an error included) also stops the nodes it started.
trap on_exit EXIT

# Runs a command in the background and waits for it, so a signal interrupts the wait at once.
bg() {
  "$@" &
  helper=$!
  local rc=0
  wait "$helper" || rc=$?
  helper=""
  return "$rc"
}

rotate_log() {
  local log="$1" i
  [ -e "$log" ] || return 0
  for ((i = keep_logs - 1; i >= 1; i--)); do
    [ -e "$log.$i" ] && mv -f "$log.$i" "$log.$((i + 1))"
  done
  mv -f "$log" "$log.1"
}

# Reports every part that has exited since the last call, with the end of its log.
check_exits() {
  local name pid rc log
  for name in "${!pid_of[@]}"; do
    pid=${pid_of[$name]}
    [ -z "${reported[$name]:-}" ] || continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    reported[$name]=1
    rm -f "$dir/pids/$name"
    if [ "$name" = haproxy ]; then log="$dir/haproxy.log"; else log="$dir/$name/log"; fi
    echo "!! $name (pid $pid) exited with status $rc; last lines of $log:"
    tail -n 15 "$log" 2>/dev/null | sed 's/^/   | /'
  done
}
servers_alive() {
  local s
  for s in "${servers[@]}"; do [ -z "${reported[$s]:-}" ] && return 0; done
  return 1
}

start_node() {
  local name="$1" role="$2"
  rotate_log "$dir/$name/log"
  "$bin" "$role" --config "$dir/$name/config.yaml" > "$dir/$name/log" 2>&1 &
  pid_of[$name]=$!
  echo "${pid_of[$name]}" > "$dir/pids/$name"
}

cat > "$dir/haproxy.cfg" <<CFG
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  # A connection refused by a dead server is retried at once on another one, instead of three
  # times on the dead one, a second apart.
  retries 2
  option redispatch 1
CFG
for spec in "sup 9345 /ping" "api 6443 /readyz"; do
  set -- $spec
  {
    echo "frontend $1"; echo "  bind $lb:$2"; echo "  default_backend $1"
    echo "backend $1"; echo "  option httpchk GET $3"
    echo "  default-server inter 500ms fastinter 200ms fall 2 rise 1 check check-ssl verify none on-marked-down shutdown-sessions"
    for i in 1 2 3; do echo "  server s$i $net.$i:$2"; done
  } >> "$dir/haproxy.cfg"
done
rotate_log "$dir/haproxy.log"
haproxy -db -f "$dir/haproxy.cfg" > "$dir/haproxy.log" 2>&1 &
pid_of[haproxy]=$!
echo "${pid_of[haproxy]}" > "$dir/pids/haproxy"

# The join token. The first run starts s1 with a random password and then hands every other
# node the full K10<ca-hash>::server:<password> token s1 wrote, so no node trusts the CA on
# first use. Later runs take the newest server/token, which follows `rke2 token rotate`.
token_file="$dir/token"
newest=$(ls -t "$dir"/s?/data/server/token 2>/dev/null | head -n 1 || true)
if [ -n "$newest" ] && grep -q '^K10' "$newest"; then
  install -m 600 "$newest" "$token_file.tmp" && mv -f "$token_file.tmp" "$token_file"
elif [ ! -s "$token_file" ]; then
  (umask 077; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token_file.tmp")
  mv -f "$token_file.tmp" "$token_file"
fi

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
    echo "node-heartbeat-interval: ${heartbeat}s"
    [ "$i" = 1 ] || echo "server: https://$lb:9345"
  } > "$dir/s$i/config.yaml"
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
node-heartbeat-interval: ${heartbeat}s
CFG

start_node s1 server
if ! grep -q '^K10' "$token_file"; then
  until [ -s "$dir/s1/data/server/token" ]; do
    check_exits
    [ -z "${reported[s1]:-}" ] || { echo "s1 could not create the cluster; see $dir/s1/log" >&2; exit 1; }
    sleep 0.1
  done
  install -m 600 "$dir/s1/data/server/token" "$token_file.tmp" && mv -f "$token_file.tmp" "$token_file"
fi
start_node s2 server
start_node s3 server
start_node a1 agent

kubeconfig="$dir/kubeconfig.yaml"
kc=(timeout 15 kubectl --kubeconfig "$kubeconfig" --cache-dir "$dir/.kube-cache" --request-timeout=10s)
echo "waiting for 3 servers and 1 agent to heartbeat (logs: $dir/<node>/log)..."
start=$(date +%s)
last_note=$start
while :; do
  check_exits
  servers_alive || { echo "every server has exited; see the logs above and in $dir" >&2; exit 1; }
  if [ ! -s "$kubeconfig" ]; then
    # The admin kubeconfig of any server, pointed at the fixed registration address.
    for s in "${servers[@]}"; do
      [ -s "$dir/$s/rke2.yaml" ] || continue
      sed "s#server: https://.*:6443#server: https://$lb:6443#" "$dir/$s/rke2.yaml" > "$kubeconfig.tmp"
      chmod 600 "$kubeconfig.tmp" && mv -f "$kubeconfig.tmp" "$kubeconfig"
      break
    done
  fi
  waiting=()
  if [ -s "$kubeconfig" ]; then
    leases=$(mktemp)
    bg "${kc[@]}" get leases -n kube-node-lease \
      -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.renewTime}{"\n"}{end}' \
      > "$leases" 2>/dev/null || true
    now=$(date +%s)
    for n in "${nodes[@]}"; do
      [ -z "${reported[$n]:-}" ] || continue
      renew=$(awk -v n="$n" '$1 == n { print $2 }' "$leases")
      t=$(date -d "$renew" +%s 2>/dev/null || echo 0)
      [ $((now - t)) -le "$fresh" ] || waiting+=("$n")
    done
    rm -f "$leases"
  else
    for n in "${nodes[@]}"; do [ -z "${reported[$n]:-}" ] && waiting+=("$n"); done
  fi
  [ "${#waiting[@]}" -eq 0 ] && break
  if [ $(($(date +%s) - last_note)) -ge 15 ]; then
    last_note=$(date +%s)
    echo "still waiting for ${waiting[*]} after $((last_note - start)) s (logs: $dir/<node>/log)"
  fi
  sleep 0.5
done

bg "${kc[@]}" get nodes -o wide || true
gone=()
for n in "${nodes[@]}"; do [ -z "${reported[$n]:-}" ] || gone+=("$n"); done
cat <<INFO

Local rke2-rs cluster is up.
  kubeconfig (via the registration address): $kubeconfig
      kubectl --kubeconfig $kubeconfig get nodes
  join token:        $token_file
  registration:      https://$lb:9345  (supervisor)   https://$lb:6443  (Kubernetes API)
  servers:           s1 $net.1   s2 $net.2   s3 $net.3   (each: :9345, :6443, etcd :2379)
  agent:             a1 $net.11  (client-side load balancer on $net.11:6444 and :6443)
  logs:              $dir/<node>/log (earlier runs: log.1 .. log.$keep_logs)
Stop with Ctrl-C, or from any shell: scripts/local-cluster.sh down
INFO
[ "${#gone[@]}" -eq 0 ] || echo "Not running: ${gone[*]} (see the messages above)"

# Watch every part until all have exited. `wait -n` returns as soon as a child exits or a
# signal arrives, so a node's exit is reported at once and Ctrl-C or `down` acts at once.
while :; do
  alive=0
  for name in "${!pid_of[@]}"; do [ -z "${reported[$name]:-}" ] && alive=1; done
  [ "$alive" = 1 ] || break
  wait -n 2>/dev/null || true
  check_exits
done
echo "every node of the local cluster has exited"
exit 1
