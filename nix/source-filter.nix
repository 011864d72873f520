# The package's source filter (builtins only, so tests/nix_eval.rs can run this very expression
# over the repository's file list): keeps every file Cargo reads to build and test the crate
# (manifest, lock file, build script, proto/ (the CRI definitions build.rs compiles), src/, tests/, benches/ and examples/ — Cargo.toml's
# [[bench]] targets must exist even for a plain `cargo build`) and the systemd/ and dbus/ files
# the package installs; leaves out nix/, docs, scripts and CI files, so editing those does not
# rebuild the binary.
{ root }:
let
  keep = [ "Cargo.toml" "Cargo.lock" "build.rs" "clippy.toml" "proto" "src" "tests" "benches" "examples" "systemd" "dbus" ];
  prefix = toString root + "/";
  prefixLength = builtins.stringLength prefix;
in
path: _type:
let
  p = toString path;
  rel = builtins.substring prefixLength (builtins.stringLength p - prefixLength) p;
in
builtins.substring 0 prefixLength p == prefix
&& builtins.any (k: rel == k || builtins.substring 0 (builtins.stringLength k + 1) rel == k + "/") keep
