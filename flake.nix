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

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.system}.rke2;
        # The same builtins-only evaluation tests tests/nix_eval.rs runs.
        eval = pkgs.runCommand "rke2-nix-eval" { nativeBuildInputs = [ pkgs.nix pkgs.jq ]; } ''
          for f in eval module-eval; do
            nix-instantiate --eval --strict --json --store dummy:// ${./nix}/tests/$f.nix > $f.json
            jq -e 'all(.[]; .expected == .actual)' $f.json > /dev/null \
              || { jq '.[] | select(.expected != .actual)' $f.json; exit 1; }
          done
          touch $out
        '';
        vm = import ./nix/tests/vm.nix { inherit pkgs; rke2Module = ./nix/module.nix; rke2Package = self.packages.${pkgs.system}.rke2; };
      });
    };
}
