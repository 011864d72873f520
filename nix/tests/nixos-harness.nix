# Evaluates NixOS hosts with nixpkgs' real module system (lib/eval-config.nix and the whole
# module list, including nixpkgs' own services.rke2 and services.k3s), for the evaluation tests
# in this folder. `nixos` is a nixpkgs nixos/ tree (the shared one has the older
# services/cluster/rke2 layout; tests/nix_eval.rs builds a copy with the current rancher
# layout), `lib` a nixpkgs lib; packages are the fake derivations of stub-pkgs.nix, so only
# option values and unit texts can be evaluated, never built.
# `nixos` and `lib` may be null: the shared tree's own.
{ shared, nixos ? null, lib ? null }:
let
  nixosTree = if nixos != null then nixos else "${shared}/nixpkgs/nixos";
  nixpkgsLib = import (if lib != null then lib else "${shared}/nixpkgs/lib");
  pkgs = import "${shared}/stub-pkgs.nix" { lib = nixpkgsLib; };
  # Real nixpkgs has kubectl (the module's default for kubectlPackage); the stub set fakes only
  # what NixOS's own modules force, so hosts get a stand-in of their own.
  stub = name: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; };
  kubectl = pkgs.kubectl or (stub "kubectl");
  # The same for the container runtime packages the module puts on the units' PATH.
  runtimePackages = {
    containerdPackage = pkgs.containerd or (stub "containerd");
    runcPackage = pkgs.runc or (stub "runc");
    cniPackage = pkgs.cni-plugins or (stub "cni-plugins");
  };

  # What every host needs to evaluate at all.
  base = {
    fileSystems."/" = { device = "/dev/vda"; fsType = "ext4"; };
    boot.loader.grub.device = "nodev";
    system.stateVersion = "24.11";
  };

  # The whole evaluation (config and options).
  evalWith = extraModules: modules:
    import "${nixosTree}/lib/eval-config.nix" {
      system = "x86_64-linux";
      lib = nixpkgsLib;
      inherit pkgs;
      modules = [ base ] ++ extraModules ++ modules;
    };
in
{
  lib = nixpkgsLib;
  inherit pkgs;
  nixos = nixosTree;
  # A host importing this repository's module, as a user's configuration does.
  evalHost = evalWith [ ../module.nix { services.rke2 = { kubectlPackage = kubectl; } // runtimePackages; } ];
  inherit kubectl;
  # A host with nixpkgs' own modules only (what a configuration did before switching).
  evalUpstream = evalWith [ ];
}
