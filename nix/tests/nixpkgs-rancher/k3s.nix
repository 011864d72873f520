# Test fixture (see default.nix): the k3s half of nixpkgs' rancher module. Its only job in the
# tests is to prove services.k3s survives replacing services.rke2.
{ config, lib, mkRancherModule, ... }:
let
  cfg = config.services.k3s;
  base = mkRancherModule {
    name = "k3s";
    extraBinFlags = lib.optional cfg.clusterInit "--cluster-init";
  };
in
{
  options.services.k3s = base.options // {
    clusterInit = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Initialize HA cluster using an embedded etcd datastore.";
    };
  };

  config = lib.mkIf cfg.enable base.config;
}
