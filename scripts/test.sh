#!/usr/bin/env bash
# Runs the whole test suite on a Debian 12 machine, as root: installs what the tests need,
# builds every target once, then runs unit tests, integration tests (real binary, etcd,
# kubectl, HAProxy, dbus-daemon/busctl, systemd-socket-activate, systemd-nspawn) and the Nix
# evaluation tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
# Every tool is installed above, so a test that cannot run (e.g. systemd-nspawn) fails instead
# of skipping.
export RKE2_TEST_REQUIRE="${RKE2_TEST_REQUIRE:-1}"
# Quality gates first: a formatting or lint error fails the run before anything is tested
# (clippy.toml's bans, such as std::env::set_var, are enforced here).
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
# Benches are built above (so they keep compiling) but not run: they print figures, not verdicts.
exec scripts/run-tests.sh
