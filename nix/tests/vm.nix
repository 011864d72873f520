# NixOS VM test (needs nixpkgs and KVM; run as the flake's checks.<system>.vm, or
# `nix-build nix/tests/vm.nix`): the test module in vm-test.nix, run by nixpkgs' testers.
# It checks that `kubectl get nodes` shows four Ready nodes, and that the cluster still answers
# through the registration address with one server stopped.
{ pkgs ? import <nixpkgs> { }
, rke2Module ? ../module.nix
, rke2Package ? pkgs.callPackage ../package.nix { }
}:
pkgs.testers.runNixOSTest (import ./vm-test.nix { inherit rke2Module rke2Package; })
