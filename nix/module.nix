# NixOS module `services.rke2`: runs `rke2 server` or `rke2 agent` from the units shipped in
# systemd/ (socket activation for servers), installs the D-Bus policy from dbus/, renders
# `settings` to /etc/rancher/rke2/config.yaml and hands the token files to the service with
# LoadCredential so no secret enters the Nix store. Importing this file also imports the
# topology module (services.rke2.cluster). The logic lives in lib.nix (builtins only, tested
# with nix-instantiate); this file only wires it into NixOS options.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rke2;
  rke2Lib = import ./lib.nix;
  settingsType = import ./settings-type.nix { inherit lib; };

  isServer = cfg.role == "server";
  otherRole = if isServer then "agent" else "server";

  configText = rke2Lib.renderConfig cfg.role cfg.settings;
  settingsErrors = rke2Lib.settingsErrors { where = "services.rke2.settings"; settings = cfg.settings; };
  droppedKeys = rke2Lib.otherRoleKeys cfg.role cfg.settings;
  hasServerUrl = (cfg.settings.server or null) != null;
  port = rke2Lib.portOf cfg.settings;

  # `toString` keeps a path a plain file name; interpolating a path would copy the secret into
  # the world-readable store.
  credentials =
    lib.optional (cfg.tokenFile != null) "token:${toString cfg.tokenFile}"
    ++ lib.optional (isServer && cfg.agentTokenFile != null) "agent-token:${toString cfg.agentTokenFile}";

  # The daemon reads RKE2_<KEY>; %d is systemd's credentials directory. Environment values rank
  # below config.yaml, which is why settings may not name token files itself.
  tokenEnvironment =
    lib.optionalAttrs (cfg.tokenFile != null) { RKE2_TOKEN_FILE = "%d/token"; }
    // lib.optionalAttrs (isServer && cfg.agentTokenFile != null) { RKE2_AGENT_TOKEN_FILE = "%d/agent-token"; };

  execStart = lib.optionalAttrs (cfg.extraFlags != [ ]) {
    # The empty entry clears the unit file's ExecStart before ours is added.
    ExecStart = [ "" "${cfg.package}/bin/rke2 ${cfg.role} ${lib.escapeShellArgs cfg.extraFlags}" ];
  };

  pathLiteralWarning = name: value:
    lib.optional (builtins.typeOf value == "path")
      "services.rke2.${name} is a path literal (${toString value}); write it as a string (\"${toString value}\") so the secret can never be copied into the world-readable Nix store.";

  # The ports of systemd/rke2-server.socket; the daemon takes those fds by name, so settings
  # must agree with them while socket activation is on.
  socketPorts = { "supervisor-port" = 9345; "https-listen-port" = 6443; };
  socketPortMismatch =
    lib.filter (k: port k != socketPorts.${k}) (lib.attrNames socketPorts)
    ++ lib.optional ((cfg.settings."bind-address" or null) != null) "bind-address";
in
{
  imports = [ ./topology.nix ];

  options.services.rke2 = {
    enable = lib.mkEnableOption "rke2, an RKE2-style highly available Kubernetes server or agent";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The rke2 package (binary, systemd units and D-Bus policy).";
    };

    etcdPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.etcd;
      defaultText = lib.literalExpression "pkgs.etcd";
      description = "etcd, which `rke2 server` runs as a supervised child process.";
    };

    role = lib.mkOption {
      type = lib.types.enum [ "server" "agent" ];
      default = "server";
      description = ''
        Whether this host runs `rke2 server` (etcd member and API server) or `rke2 agent`.
        Derived from services.rke2.cluster when a topology is given.
      '';
    };

    settings = lib.mkOption {
      type = settingsType;
      default = { };
      example = lib.literalExpression ''
        {
          server = "https://rke2.example.internal:9345";
          tls-san = [ "rke2.example.internal" ];
          node-label = [ "tier=web" ];
          node-taint = [ "dedicated=web:NoSchedule" ];
        }
      '';
      description = ''
        Contents of /etc/rancher/rke2/config.yaml, with the daemon's key names (see
        `rke2 server --help`). Lists are YAML lists; `null` leaves a key out (useful to unset a
        value derived from services.rke2.cluster). Keys the other role uses are left out with
        a warning. Tokens are not settings: use tokenFile / agentTokenFile.
      '';
    };

    tokenFile = lib.mkOption {
      type = lib.types.nullOr (lib.types.either lib.types.str lib.types.path);
      default = null;
      example = "/run/secrets/rke2-token";
      description = ''
        Path of a file holding the cluster token (for agents: the agent token if the cluster
        has one). Passed to the service with LoadCredential and never copied into the Nix
        store; write it as a string, not a path literal. Required for agents and for servers
        that join (settings.server set); a first server without one generates a token.
      '';
    };

    agentTokenFile = lib.mkOption {
      type = lib.types.nullOr (lib.types.either lib.types.str lib.types.path);
      default = null;
      example = "/run/secrets/rke2-agent-token";
      description = "Servers only: path of a file holding the token agents join with (default: the server token).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Servers: open the supervisor (9345), Kubernetes API (6443) and etcd client, peer and
        metrics (2379-2381) ports, or the ports settings give instead. Agents listen only on
        loopback, so nothing is opened for them.
      '';
    };

    socketActivation = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Servers: start rke2-server.socket, which holds the supervisor (9345) and API (6443)
        listeners on all addresses while the server restarts. Turn it off to let rke2 bind
        non-default ports or a bind-address itself.
      '';
    };

    extraFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--debug" ];
      description = "Extra command-line flags for `rke2 server` / `rke2 agent`; they override config.yaml.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      map (message: { assertion = false; inherit message; }) settingsErrors
      ++ [
        {
          assertion = isServer || hasServerUrl;
          message = "services.rke2.settings.server is not set, but services.rke2.role is \"agent\": an agent registers through the cluster's fixed registration address, e.g. settings.server = \"https://rke2.example.internal:9345\" (or describe the cluster in services.rke2.cluster).";
        }
        {
          assertion = isServer || cfg.tokenFile != null;
          message = "services.rke2.tokenFile is not set, but services.rke2.role is \"agent\": an agent needs the cluster's (agent) token to join. Give the path of a file holding it as a string, e.g. \"/run/secrets/rke2-token\".";
        }
        {
          assertion = !(isServer && hasServerUrl) || cfg.tokenFile != null;
          message = "services.rke2.tokenFile is not set, but services.rke2.settings.server is: a server joining an existing cluster needs the cluster token. Give the path of a file holding it as a string, e.g. \"/run/secrets/rke2-token\".";
        }
        {
          assertion = isServer || cfg.agentTokenFile == null;
          message = "services.rke2.agentTokenFile is only used by servers; on an agent, put the path of the agent token in services.rke2.tokenFile.";
        }
        {
          assertion = !(isServer && cfg.socketActivation) || socketPortMismatch == [ ];
          message = "services.rke2.settings.${lib.concatStringsSep " and " socketPortMismatch}: rke2-server.socket and rke2-server-api.socket listen on ports 9345 and 6443 of every address, and the server takes those sockets instead of binding its own; set services.rke2.socketActivation = false so rke2 binds what settings say.";
        }
      ];

    warnings =
      pathLiteralWarning "tokenFile" cfg.tokenFile
      ++ pathLiteralWarning "agentTokenFile" cfg.agentTokenFile
      ++ lib.optional (droppedKeys != [ ])
        "services.rke2.settings: ${lib.concatStringsSep ", " droppedKeys} only apply to rke2 ${otherRole}; they are left out of this ${cfg.role}'s config.yaml.";

    environment.systemPackages = [ cfg.package ];
    environment.etc."rancher/rke2/config.yaml".text = configText;

    services.dbus.packages = [ cfg.package ];

    # The units come from the package (systemd/ in this repository); what follows becomes
    # NixOS drop-ins on top of them.
    systemd.packages = [ cfg.package ];

    systemd.services.rke2-server = lib.mkIf isServer {
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ config.environment.etc."rancher/rke2/config.yaml".source ];
      path = [ cfg.etcdPackage ];
      environment = { RKE2_ETCD_BIN = "${cfg.etcdPackage}/bin/etcd"; } // tokenEnvironment;
      serviceConfig = { LoadCredential = credentials; } // execStart;
    };

    # Masked when off, so the packaged socket cannot hold the ports rke2 binds itself.
    # Two socket units: FileDescriptorName= names every fd of a unit alike, so 9345
    # ("supervisor") and 6443 ("apiserver") come from separate units (see systemd/).
    systemd.sockets.rke2-server = lib.mkIf isServer
      (if cfg.socketActivation then { wantedBy = [ "sockets.target" ]; } else { enable = false; });
    systemd.sockets.rke2-server-api = lib.mkIf isServer
      (if cfg.socketActivation then { wantedBy = [ "sockets.target" ]; } else { enable = false; });

    systemd.services.rke2-agent = lib.mkIf (!isServer) {
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ config.environment.etc."rancher/rke2/config.yaml".source ];
      environment = tokenEnvironment;
      serviceConfig = { LoadCredential = credentials; } // execStart;
    };

    networking.firewall = lib.mkIf (isServer && cfg.openFirewall) {
      allowedTCPPorts = map port [
        "supervisor-port"
        "https-listen-port"
        "etcd-client-port"
        "etcd-peer-port"
        "etcd-metrics-port"
      ];
    };
  };
}
