# Makes services.rke2 a drop-in for nixpkgs' own module of that name: replaces nixpkgs' module
# (both layouts, see nix/README.md "Replacing nixpkgs' services.rke2"), declares every option
# nixpkgs' services.rke2 has that module.nix does not (same names, types and meaning), maps
# those the daemon implements onto `settings` / the unit, and warns, by name, about those whose
# feature rke2-rs does not have. Imported by module.nix.
{ config, lib, pkgs, modulesPath, ... }:
let
  cfg = config.services.rke2;
  inherit (lib) mkOption types;

  # --- replacing nixpkgs' module ----------------------------------------------------------

  # Older nixpkgs: one file of its own, disabled by its path (relative to modulesPath).
  oldLayout = "services/cluster/rke2/default.nix";

  # Current nixpkgs: rancher/default.nix declares the options k3s and rke2 share and imports
  # `(import ./k3s.nix args)` and `(import ./rke2.nix args)`: anonymous modules, which the
  # module system keys as "<rancher/default.nix>:anon-<position>". Disabling default.nix would
  # take services.k3s with it, so only the import that declares services.rke2 is disabled; its
  # position is found by looking, not assumed, so a reordering upstream cannot disable k3s.
  rancherDefault = "${modulesPath}/services/cluster/rancher/default.nix";
  rancherImports =
    (import rancherDefault { inherit config lib pkgs; }).imports or [ ];
  declaresRke2 = m: builtins.isAttrs m && (m.options.services or { }) ? rke2;
  rke2Positions = lib.filter (n: declaresRke2 (builtins.elemAt rancherImports (n - 1)))
    (lib.range 1 (builtins.length rancherImports));
  rancherLayout =
    if !(builtins.pathExists rancherDefault) then [ ]
    else if rke2Positions == [ ] then
      throw "rke2-rs (nix/nixpkgs-compat.nix): ${rancherDefault} exists but none of its imports declares services.rke2, so nixpkgs' own services.rke2 cannot be replaced; this nixpkgs layout is not supported yet (see nix/README.md)."
    else map (n: { key = "${rancherDefault}:anon-${toString n}"; }) rke2Positions;

  # --- options whose feature rke2-rs does not have ----------------------------------------

  # Each is accepted with nixpkgs' type so an existing configuration evaluates, and warned
  # about by name whenever it is set to anything but its default.
  unsupported = [
    { name = "disable"; set = cfg.disable != [ ]; why = "rke2-rs deploys no packaged components (ingress, metrics-server, CNI charts), so there is nothing to disable"; }
    { name = "cni"; set = cfg.cni != null; why = "rke2-rs deploys no CNI plugin"; }
    { name = "cisHardening"; set = cfg.cisHardening; why = "rke2-rs has no CIS profile (no sysctls, users or --profile are set)"; }
    { name = "selinux"; set = cfg.selinux; why = "rke2-rs runs no containerd to configure for SELinux"; }
    { name = "nodeExternalIP"; set = cfg.nodeExternalIP != null; why = "rke2-rs has no node-external-ip setting yet"; }
    { name = "manifests"; set = cfg.manifests != { }; why = "rke2-rs has no manifest auto-deployer"; }
    { name = "autoDeployCharts"; set = cfg.autoDeployCharts != { }; why = "rke2-rs has no Helm controller"; }
    { name = "charts"; set = cfg.charts != { }; why = "rke2-rs has no Helm controller to serve charts to"; }
    { name = "containerdConfigTemplate"; set = cfg.containerdConfigTemplate != null; why = "rke2-rs runs no containerd"; }
    { name = "gracefulNodeShutdown.enable"; set = cfg.gracefulNodeShutdown.enable; why = "rke2-rs runs no kubelet"; }
    { name = "extraKubeletConfig"; set = cfg.extraKubeletConfig != { }; why = "rke2-rs runs no kubelet"; }
    { name = "extraKubeProxyConfig"; set = cfg.extraKubeProxyConfig != { }; why = "rke2-rs runs no kube-proxy"; }
  ];

  defaultDataDir = "/var/lib/rancher/rke2";
  defaultConfigPath = "/etc/rancher/rke2/config.yaml";

  # nixpkgs' options that map onto config.yaml keys. Normal priority: they override what the
  # topology derives (mkDefault), and meet a host's own `settings` of the same key as any two
  # definitions do (lists concatenate, differing scalars are reported as a conflict).
  mappedSettings = lib.mkMerge [
    (lib.mkIf (cfg.serverAddr != "") { server = cfg.serverAddr; })
    (lib.mkIf (cfg.nodeName != null) { node-name = cfg.nodeName; })
    (lib.mkIf (cfg.nodeIP != null) { node-ip = cfg.nodeIP; })
    (lib.mkIf (cfg.nodeLabel != [ ]) { node-label = cfg.nodeLabel; })
    (lib.mkIf (cfg.nodeTaint != [ ]) { node-taint = cfg.nodeTaint; })
    (lib.mkIf cfg.debug { debug = true; })
    # toString: a path literal must stay a file name, not be copied into the store.
    (lib.mkIf (toString cfg.dataDir != defaultDataDir) { data-dir = toString cfg.dataDir; })
  ];

  # Options only the kubelet would use: nixpkgs' names, types and defaults, no effect here.
  kubeletOnly = type: default: mkOption {
    inherit type default;
    description = "nixpkgs compatibility; no effect in rke2-rs (no kubelet).";
  };
  gracefulNodeShutdownOptions = {
    enable = lib.mkEnableOption "graceful node shutdown (nixpkgs compatibility; rke2-rs runs no kubelet and warns when this is on)";
    shutdownGracePeriod = kubeletOnly types.nonEmptyStr "30s";
    shutdownGracePeriodCriticalPods = kubeletOnly types.nonEmptyStr "10s";
  };

  unsupportedNote = "Accepted for compatibility with nixpkgs' services.rke2; rke2-rs does not have this feature yet, so setting it only produces a warning.";
  unsupportedOption = type: default: mkOption { inherit type default; description = unsupportedNote; };
in
{
  disabledModules = [ oldLayout ] ++ rancherLayout;

  options.services.rke2 = {
    serverAddr = mkOption {
      type = types.str;
      default = "";
      example = "https://rke2.example.internal:9345";
      description = "nixpkgs' name for settings.server: the server (registration address) to join through.";
    };

    nodeName = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "nixpkgs' name for settings.node-name.";
    };

    nodeIP = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "nixpkgs' name for settings.node-ip (IPv4/IPv6 addresses, comma-separated).";
    };

    nodeLabel = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "nixpkgs' name for settings.node-label (key=value strings).";
    };

    nodeTaint = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "nixpkgs' name for settings.node-taint (key=value:Effect strings).";
    };

    debug = mkOption {
      type = types.bool;
      default = false;
      description = "nixpkgs' name for settings.debug.";
    };

    dataDir = mkOption {
      type = types.either types.str types.path;
      default = defaultDataDir;
      description = "nixpkgs' name for settings.data-dir.";
    };

    configPath = mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      example = "/run/rke2/config.yaml";
      description = ''
        A config file the daemon reads instead of the one this module writes (for a file made
        at boot). As in nixpkgs, the module's settings are then passed as command-line flags,
        which take precedence over that file. `"${defaultConfigPath}"` (nixpkgs' old default)
        means the module's own file.
      '';
    };

    environmentVars = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { RUST_LOG = "info"; };
      description = "Environment variables for the rke2 service (RKE2_<KEY> variables rank below config.yaml and flags).";
    };

    environmentFile = mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      description = "An EnvironmentFile= for the rke2 service (systemd.exec(5) format), read at start, so it may hold secrets.";
    };

    disable = unsupportedOption (types.listOf types.str) [ ];

    cni = unsupportedOption (types.nullOr (types.enum [ "none" "canal" "cilium" "calico" "flannel" ])) null;

    cisHardening = unsupportedOption types.bool false;

    selinux = unsupportedOption types.bool false;

    nodeExternalIP = unsupportedOption (types.nullOr types.str) null;

    # nixpkgs types manifests and autoDeployCharts as submodules (content, fetch options); any
    # value those accept is accepted here and never evaluated further.
    manifests = unsupportedOption (types.attrsOf types.anything) { };

    autoDeployCharts = unsupportedOption (types.attrsOf types.anything) { };

    charts = unsupportedOption (types.attrsOf (types.either types.path types.package)) { };

    containerdConfigTemplate = unsupportedOption (types.nullOr types.str) null;

    gracefulNodeShutdown = gracefulNodeShutdownOptions;

    extraKubeletConfig = unsupportedOption (types.attrsOf types.anything) { };

    extraKubeProxyConfig = unsupportedOption (types.attrsOf types.anything) { };
  };

  config = lib.mkIf cfg.enable {
    services.rke2.settings = mappedSettings;

    warnings = map
      (u: "services.rke2.${u.name} is set, but has no effect: ${u.why}. The option is accepted only so that configurations written for nixpkgs' services.rke2 evaluate.")
      (lib.filter (u: u.set) unsupported);
  };
}
