# One configuration written for nixpkgs' services.rke2 (options only: no `cluster`, no
# `settings`), evaluated twice through nixos-harness.nix: with nixpkgs' own module, and with
# this repository's module imported. tests/nix_eval.rs feeds both to the daemon's real flag and
# config loader and compares the effective settings:
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/compare-upstream.nix \
#     --argstr shared <.../nixos-eval> --argstr optionsJson '{"role": "agent", ...}' \
#     [--argstr nixos <nixos tree>] [--argstr lib <nixpkgs lib>]
{ shared, optionsJson, nixos ? null, lib ? null }:
let
  h = import ./nixos-harness.nix { inherit shared nixos lib; };
  l = h.lib;
  options = builtins.fromJSON optionsJson;
  role = options.role or "server";
  host = {
    networking.hostName = "n";
    # The same stand-in package for both; the tests look at the arguments after the binary.
    services.rke2 = { enable = true; package = h.pkgs.hello; } // options;
  };
  upstream = (h.evalUpstream [ host ]).config;
  ours = (h.evalHost [ host ]).config;
  unit = c: c.systemd.services."rke2-${role}";
in
{
  upstream = {
    execStart = toString (unit upstream).serviceConfig.ExecStart;
  };
  ours = {
    # null: the packaged unit's own `rke2 <role>`.
    execStart = let e = (unit ours).serviceConfig.ExecStart or null; in if e == null then null else l.last e;
    environment = l.filterAttrs (n: _: l.hasPrefix "RKE2_" n) (unit ours).environment;
    loadCredential = (unit ours).serviceConfig.LoadCredential;
    configYaml = if ours.environment.etc ? "rancher/rke2/config.yaml" then ours.environment.etc."rancher/rke2/config.yaml".text else null;
    warnings = builtins.filter (l.hasInfix "services.rke2") ours.warnings;
    assertions = map (a: a.message) (builtins.filter (a: !a.assertion) ours.assertions);
  };
}
