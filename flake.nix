# Flake wiring only; everything lives under nix/. Nix without flakes can use the files
# directly: `pkgs.callPackage ./nix/package.nix { }`, `imports = [ ./nix/module.nix ]`.
{
  description = "rke2-rs: RKE2-style highly available Kubernetes server/agent for systemd and NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      lib = import ./nix/lib.nix;

      packages = forAllSystems (pkgs: rec {
        rke2 = pkgs.callPackage ./nix/package.nix { };
        default = rke2;
      });

      nixosModules.default = ./nix/module.nix;
      nixosModules.rke2 = ./nix/module.nix;

      checks = forAllSystems (pkgs:
        let
          # A host of the test topology as a NixOS user builds it: nixpkgs' own module list
          # (whose services.rke2 this module replaces) plus this module, nothing else.
          host = name: nixpkgs.lib.nixosSystem {
            inherit (pkgs) system;
            modules = [
              self.nixosModules.default
              {
                networking.hostName = name;
                services.rke2 = { enable = true; openFirewall = true; cluster = import ./nix/tests/cluster-3s2a.nix; };
                fileSystems."/" = { device = "/dev/vda"; fsType = "ext4"; };
                boot.loader.grub.device = "nodev";
                system.stateVersion = "25.11";
              }
            ];
          };
        in
        {
          package = self.packages.${pkgs.system}.rke2;
          # The builtins-only evaluation cases tests/nix_eval.rs also runs.
          eval = pkgs.runCommand "rke2-nix-eval" { nativeBuildInputs = [ pkgs.nix pkgs.jq ]; } ''
            nix-instantiate --eval --strict --json --store dummy:// ${./nix}/tests/eval.nix > eval.json
            jq -e 'all(.[]; .expected == .actual)' eval.json > /dev/null \
              || { jq '.[] | select(.expected != .actual)' eval.json; exit 1; }
            touch $out
          '';
          # Whole systems evaluated against this flake's nixpkgs (the current rancher layout):
          # the file names every host's system derivation, so evaluating the check evaluates
          # them (without building three systems).
          nixos = pkgs.writeText "rke2-nixos-systems" (pkgs.lib.concatMapStringsSep "\n"
            (name: "${name} ${builtins.unsafeDiscardStringContext (host name).config.system.build.toplevel.drvPath}")
            [ "s1" "s2" "a1" ]);
          vm = import ./nix/tests/vm.nix { inherit pkgs; rke2Module = ./nix/module.nix; rke2Package = self.packages.${pkgs.system}.rke2; };
        });
    };
}
