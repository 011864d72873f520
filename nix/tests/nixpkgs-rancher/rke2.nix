# Test fixture (see default.nix): the rke2 half of nixpkgs' rancher module, an anonymous module
# imported by default.nix with mkRancherModule passed in.
{ config, lib, mkRancherModule, ... }:
let
  cfg = config.services.rke2;
  base = mkRancherModule {
    name = "rke2";
    serviceName = "rke2-${cfg.role}";
    extraBinFlags =
      lib.optional (cfg.cni != null) "--cni=${cfg.cni}"
      ++ lib.optional cfg.cisHardening "--profile=cis";
  };
in
{
  options.services.rke2 = base.options // {
    cni = lib.mkOption {
      type = lib.types.nullOr (lib.types.enum [ "none" "canal" "cilium" "calico" "flannel" ]);
      default = null;
      description = "CNI plugin to deploy.";
    };
    cisHardening = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "CIS hardening profile.";
    };
  };

  config = lib.mkIf cfg.enable (base.config // {
    warnings = base.config.warnings
      ++ lib.optional (cfg.role == "agent" && cfg.cni != null) "rke2: cni should not be set if role is 'agent'";
  });
}
