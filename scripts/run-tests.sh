#!/usr/bin/env bash
# Runs every test binary (unit tests, then the integration test files), several files at once.
# Integration tests mostly wait on processes (etcd elections, containerd, polling), so running
# RKE2_TEST_JOBS files side by side, each with RKE2_TEST_THREADS tests at a time, keeps a
# 2-core machine busy without overloading it. The longest files start first so the run is not
# left waiting on one of them at the end. Each file's output is printed whole when it finishes;
# the exit status is non-zero when any file failed, and the failed files are named last.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${RKE2_TEST_JOBS:-2}"
threads="${RKE2_TEST_THREADS:-3}"
# For local use: RKE2_TEST_ONLY="ha dbus" runs only those files (and no unit tests).
only="${RKE2_TEST_ONLY:-}"
# Longest first (measured on the 2-core CI machine); files not named here follow in name order.
long_first=(faults etcd_snapshots ha local_cluster dbus workloads_batch seed_scenario
  service_proxy pod_features workloads_apps workloads certificates exec scheduling
  secrets_encryption sd_notify nix_eval registry_mirror cluster_dns pod_network)

built="$(cargo test --locked --lib --bins --tests --no-run 2>&1)" || {
  echo "$built"
  exit 1
}
# "  Executable tests/ha.rs (target/debug/deps/ha-0123abcd)" -> "ha target/debug/deps/ha-0123abcd"
mapfile -t found < <(sed -n 's/^ *Executable \(unittests \)\{0,1\}\([^ ]*\) (\(.*\))$/\2 \3/p' <<<"$built")
declare -A bin_of=()
unit=()
for line in "${found[@]}"; do
  src="${line%% *}" bin="${line#* }"
  case "$src" in
    tests/*)
      name="${src#tests/}" name="${name%.rs}"
      [[ -z "$only" || " $only " == *" $name "* ]] && bin_of[$name]="$bin"
      ;;
    *) [[ -n "$only" ]] || unit+=("$bin") ;;
  esac
done
order=()
for name in "${long_first[@]}"; do
  [[ -n "${bin_of[$name]:-}" ]] && order+=("$name")
done
for name in $(printf '%s\n' "${!bin_of[@]}" | sort); do
  [[ " ${long_first[*]} " == *" $name "* ]] || order+=("$name")
done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
for bin in "${unit[@]}"; do
  echo "== unit tests: $bin"
  "$bin" --test-threads="$threads" || failed+=("$bin")
done

# A small job pool: start files while fewer than $jobs run; report each as it ends.
declare -A pid_of=()
report() {
  local name="$1" status="$2"
  echo "== tests/$name.rs ($status)"
  cat "$logs/$name.log"
  [[ "$status" == ok ]] || failed+=("tests/$name.rs")
}
wait_one() {
  local done_pid status name
  set +e
  wait -n -p done_pid "${pid_of[@]}"
  status=$?
  set -e
  for name in "${!pid_of[@]}"; do
    if [[ "${pid_of[$name]}" == "$done_pid" ]]; then
      unset "pid_of[$name]"
      if [[ $status -eq 0 ]]; then report "$name" ok; else report "$name" "failed: exit $status"; fi
    fi
  done
}
for name in "${order[@]}"; do
  while (( ${#pid_of[@]} >= jobs )); do wait_one; done
  "${bin_of[$name]}" --test-threads="$threads" >"$logs/$name.log" 2>&1 &
  pid_of[$name]=$!
done
while (( ${#pid_of[@]} > 0 )); do wait_one; done

if (( ${#failed[@]} > 0 )); then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
echo "== all tests passed"
