# The rke2 package: the `rke2` binary built from this repository with buildRustPackage
# (dependencies pinned by Cargo.lock), plus the files that integrate it with the host, installed
# where NixOS looks for them: systemd/ units in lib/systemd/system (their ExecStart pointed at
# this package) and the dbus/ policy in share/dbus-1/system.d.
{ lib, rustPlatform, protobuf }:
let
  src = ../.;
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = "rke2";
  inherit (cargoToml.package) version;

  # Only what the build reads (nix/source-filter.nix, tested by tests/nix_eval.rs).
  src = lib.cleanSourceWith {
    inherit src;
    name = "rke2-source";
    filter = import ./source-filter.nix { root = src; };
  };

  cargoLock.lockFile = ../Cargo.lock;

  # etcd-client's build script compiles etcd's protobuf definitions, ours the CRI's (proto/).
  nativeBuildInputs = [ protobuf ];

  # Unit tests only: the integration tests in tests/ need etcd, kubectl, network namespaces
  # or Nix itself, none of which the build sandbox has.
  cargoTestFlags = [ "--lib" "--bins" ];

  postInstall = ''
    install -Dm644 -t $out/lib/systemd/system systemd/*.service systemd/*.socket
    for unit in $out/lib/systemd/system/*.service; do
      substituteInPlace "$unit" --replace-fail /usr/local/bin/rke2 $out/bin/rke2
    done
    install -Dm644 -t $out/share/dbus-1/system.d dbus/*.conf
  '';

  meta = {
    description = cargoToml.package.description;
    license = lib.licenses.asl20;
    mainProgram = "rke2";
    platforms = lib.platforms.linux;
  };
}
