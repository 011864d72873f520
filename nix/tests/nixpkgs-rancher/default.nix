# Test fixture: the STRUCTURE of current nixpkgs' nixos/modules/services/cluster/rancher/
# (rke2 and k3s from one shared module), rewritten for the tests from upstream's layout, not
# copied: default.nix defines `mkRancherModule` (the options k3s and rke2 share and the unit
# whose ExecStart passes them as flags) and imports rke2.nix and k3s.nix as anonymous modules,
# `(import ./rke2.nix args)`, passing mkRancherModule explicitly. Options and flags follow
# upstream's names, types, defaults and flag spelling, which is what the tests compare
# against; the manifest/chart machinery is reduced to its option types. tests/nix_eval.rs
# places these files at <modules>/services/cluster/rancher/ in a copy of the NixOS tree.
{ config, lib, pkgs, ... }:
let
  mkRancherModule =
    { name, serviceName ? name, extraBinFlags ? [ ] }:
    let
      cfg = config.services.${name};
      t = lib.types;
      opt = type: default: description: lib.mkOption { inherit type default description; };
    in
    {
      options = {
        enable = lib.mkEnableOption name;
        package = lib.mkPackageOption pkgs name { };
        role = opt (t.enum [ "server" "agent" ]) "server" "Whether ${name} runs as a server or an agent.";
        serverAddr = opt t.str "" "The ${name} server to join through.";
        token = opt t.str "" "The token, in the world-readable store.";
        tokenFile = opt (t.nullOr t.path) null "File holding the token.";
        agentToken = opt t.str "" "The agent token, in the world-readable store.";
        agentTokenFile = opt (t.nullOr t.path) null "File holding the agent token.";
        extraFlags = opt (t.either t.str (t.listOf t.str)) [ ] "Extra flags, as written.";
        environmentFile = opt (t.nullOr t.path) null "An EnvironmentFile for the service.";
        configPath = opt (t.nullOr t.path) null "A config file the binary reads (--config).";
        disable = opt (t.listOf t.str) [ ] "Components not to deploy.";
        nodeName = opt (t.nullOr t.str) null "Node name.";
        nodeLabel = opt (t.listOf t.str) [ ] "Node labels.";
        nodeTaint = opt (t.listOf t.str) [ ] "Node taints.";
        nodeIP = opt (t.nullOr t.str) null "Node addresses.";
        nodeExternalIP = opt (t.nullOr t.str) null "External node addresses.";
        selinux = opt t.bool false "SELinux in containerd.";
        manifests = opt (t.attrsOf t.anything) { } "Auto-deployed manifests.";
        containerdConfigTemplate = opt (t.nullOr t.str) null "containerd config template.";
        images = opt (t.listOf t.package) [ ] "Images to import.";
        gracefulNodeShutdown = {
          enable = lib.mkEnableOption "graceful node shutdown";
          shutdownGracePeriod = opt t.nonEmptyStr "30s" "Grace period.";
          shutdownGracePeriodCriticalPods = opt t.nonEmptyStr "10s" "Grace period of critical pods.";
        };
        extraKubeletConfig = opt (t.attrsOf t.anything) { } "Extra kubelet configuration.";
        extraKubeProxyConfig = opt (t.attrsOf t.anything) { } "Extra kube-proxy configuration.";
        autoDeployCharts = opt (t.attrsOf t.anything) { } "Helm charts to deploy.";
        charts = opt (t.attrsOf (t.either t.path t.package)) { } "Packaged Helm charts to serve.";
      };

      config = {
        warnings =
          lib.optional (cfg.role == "agent" && cfg.configPath == null && cfg.serverAddr == "")
            "${name}: serverAddr or configPath (with 'server' key) should be set if role is 'agent'"
          ++ lib.optional (cfg.role == "agent" && cfg.configPath == null && cfg.tokenFile == null && cfg.token == "")
            "${name}: token, tokenFile or configPath (with 'token' or 'token-file' keys) should be set if role is 'agent'";

        environment.systemPackages = [ cfg.package ];

        systemd.services.${serviceName} = {
          description = "${name} service";
          wantedBy = [ "multi-user.target" ];
          serviceConfig = {
            Type = if cfg.role == "agent" then "exec" else "notify";
            EnvironmentFile = cfg.environmentFile;
            # Upstream's spelling: some flags as `--key value`, others as `--key=value`,
            # joined by a line continuation, unescaped.
            ExecStart = lib.concatStringsSep " \\\n " (
              [ "${cfg.package}/bin/${name} ${cfg.role}" ]
              ++ lib.optional (cfg.serverAddr != "") "--server ${cfg.serverAddr}"
              ++ lib.optional (cfg.token != "") "--token ${cfg.token}"
              ++ lib.optional (cfg.tokenFile != null) "--token-file ${cfg.tokenFile}"
              ++ lib.optional (cfg.agentToken != "") "--agent-token ${cfg.agentToken}"
              ++ lib.optional (cfg.agentTokenFile != null) "--agent-token-file ${cfg.agentTokenFile}"
              ++ lib.optional (cfg.configPath != null) "--config ${cfg.configPath}"
              ++ map (d: "--disable=${d}") cfg.disable
              ++ lib.optional (cfg.nodeName != null) "--node-name=${cfg.nodeName}"
              ++ map (l: "--node-label=${l}") cfg.nodeLabel
              ++ map (x: "--node-taint=${x}") cfg.nodeTaint
              ++ lib.optional (cfg.nodeIP != null) "--node-ip=${cfg.nodeIP}"
              ++ lib.optional (cfg.nodeExternalIP != null) "--node-external-ip=${cfg.nodeExternalIP}"
              ++ lib.optional cfg.selinux "--selinux"
              ++ extraBinFlags
              ++ lib.flatten cfg.extraFlags
            );
          };
        };
      };
    };
in
{
  imports =
    let args = { inherit config lib mkRancherModule; }; in
    [
      (import ./k3s.nix args)
      (import ./rke2.nix args)
    ];
}
