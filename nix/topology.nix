# Topology module `services.rke2.cluster`: the whole cluster declared once (registration
# address, token files, servers and agents with addresses, taints, labels), imported unchanged
# by every host. Each host finds itself by name and derives its role, `server` URL (none for
# the first server), tls-san, node-ip, taints, labels and token files. Imported by module.nix;
# the derivation and validation are lib.nix's hostConfig / clusterErrors.
{ config, lib, ... }:
let
  cfg = config.services.rke2;
  rke2Lib = import ./lib.nix;
  settingsType = import ./settings-type.nix { inherit lib; };
  inherit (lib) types;

  secretPath = types.either types.str types.path;

  nodeOptions = { name, ... }: {
    options = {
      # Required, but null by default so a missing value is reported by clusterErrors' message
      # rather than a bare "used but not defined".
      address = lib.mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.0.0.1";
        description = "IP address of node ${name}; becomes its node-ip.";
      };
      taints = lib.mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "CriticalAddonsOnly=true:NoExecute" ];
        description = "Taints (key=value:Effect) the node registers with (node-taint).";
      };
      labels = lib.mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = { tier = "web"; };
        description = "Labels the node registers with (node-label).";
      };
      settings = lib.mkOption {
        type = settingsType;
        default = { };
        description = "Extra config.yaml settings for this node only; they override derived and cluster-wide ones.";
      };
    };
  };

  clusterOptions = {
    options = {
      registrationAddress = lib.mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "rke2.example.internal";
        description = ''
          DNS name or IP of the fixed registration address (load balancer, VIP or round-robin
          DNS in front of the servers' 9345 and 6443). Joining nodes use
          https://<registrationAddress>:<registrationPort>; servers add it to tls-san.
        '';
      };
      registrationPort = lib.mkOption {
        type = types.port;
        default = 9345;
        description = "Supervisor port behind the registration address.";
      };
      tokenFile = lib.mkOption {
        type = types.nullOr secretPath;
        default = null;
        example = "/run/secrets/rke2-token";
        description = "Path (a string, kept out of the Nix store) of the file holding the cluster token on every host.";
      };
      agentTokenFile = lib.mkOption {
        type = types.nullOr secretPath;
        default = null;
        description = "Path of the file holding the agent token, if agents use their own; servers get it as agent-token, agents join with it.";
      };
      initServer = lib.mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The server that starts the cluster (no `server` URL). Default: the first server name in sorted order.";
      };
      serverTaints = lib.mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "CriticalAddonsOnly=true:NoExecute" ];
        description = "Taints every server registers with, e.g. for a dedicated control plane.";
      };
      settings = lib.mkOption {
        type = settingsType;
        default = { };
        example = { cluster-cidr = "10.42.0.0/16"; };
        description = "config.yaml settings for every node; keys a role does not use are left out of its file.";
      };
      servers = lib.mkOption {
        type = types.attrsOf (types.submodule nodeOptions);
        default = { };
        description = "Servers by host name. Keep their number odd (etcd quorum).";
      };
      agents = lib.mkOption {
        type = types.attrsOf (types.submodule nodeOptions);
        default = { };
        description = "Agents by host name.";
      };
    };
  };

  enabled = cfg.enable && cfg.cluster != null;
  errors = rke2Lib.clusterErrors {
    cluster = cfg.cluster;
    hostName = cfg.hostName;
    hostNameFrom = "services.rke2.hostName, default networking.hostName";
  };
  # Only derived from a valid topology: an invalid one must surface as assertion messages,
  # not as an evaluation error from a missing attribute.
  valid = enabled && errors == [ ];
  host = rke2Lib.hostConfig { cluster = cfg.cluster; hostName = cfg.hostName; };
in
{
  options.services.rke2 = {
    cluster = lib.mkOption {
      type = types.nullOr (types.submodule clusterOptions);
      default = null;
      description = ''
        The whole cluster, declared once and imported unchanged by every host
        (`services.rke2.cluster = import ./cluster.nix;`). Each host derives its role and
        settings from its entry, found by services.rke2.hostName.
      '';
    };

    peerServerAddresses = lib.mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      internal = true;
      description = "The other servers' addresses from services.rke2.cluster (null without a topology); openFirewall lets only them reach etcd.";
    };

    hostName = lib.mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "The name of this host in services.rke2.cluster.servers / agents.";
    };
  };

  config = lib.mkIf enabled {
    assertions =
      map (message: { assertion = false; inherit message; }) errors
      ++ lib.optional valid {
        assertion = cfg.role == host.role;
        message = "services.rke2.role is \"${cfg.role}\", but services.rke2.cluster lists this host (${cfg.hostName}) as ${if host.role == "server" then "a server" else "an agent"}; leave role unset when using a topology.";
      };

    warnings = rke2Lib.clusterWarnings { cluster = cfg.cluster; };

    # mkDefault: the host's own services.rke2.* definitions still win, key by key.
    services.rke2 = lib.mkIf valid {
      role = lib.mkDefault host.role;
      settings = lib.mapAttrs (_: lib.mkDefault) host.settings;
      tokenFile = lib.mkDefault host.tokenFile;
      agentTokenFile = lib.mkDefault host.agentTokenFile;
      peerServerAddresses = lib.mkIf (host.role == "server")
        (rke2Lib.peerServerAddresses { cluster = cfg.cluster; hostName = cfg.hostName; });
    };
  };
}
