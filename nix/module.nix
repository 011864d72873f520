# NixOS module `services.rke2`: runs `rke2 server` or `rke2 agent` from the units shipped in
# systemd/ (socket activation for servers), installs the D-Bus policy from dbus/, renders
# `settings` to /etc/rancher/rke2/config.yaml and hands the token files to the service with
# LoadCredential so no secret enters the Nix store. Importing this file also imports the
# topology module (services.rke2.cluster) and nixpkgs-compat.nix, which replaces nixpkgs' own
# services.rke2 with this one (every nixpkgs option keeps its name, type and meaning). The logic
# lives in lib.nix (builtins only, tested with nix-instantiate); this file only wires it into
# NixOS options.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rke2;
  rke2Lib = import ./lib.nix;
  settingsType = import ./settings-type.nix { inherit lib; };

  isServer = cfg.role == "server";
  dataDir = cfg.settings."data-dir" or "/var/lib/rancher/rke2";
  # containerd (and ctr, for the image import), runc, iproute2 (rke2 killall), modprobe.
  runtimePath = [ cfg.containerdPackage cfg.runcPackage pkgs.iproute2 pkgs.kmod ];
  otherRole = if isServer then "agent" else "server";

  configText = rke2Lib.renderConfig cfg.role cfg.settings;
  settingsErrors = rke2Lib.settingsErrors { where = "services.rke2.settings"; settings = cfg.settings; };
  droppedKeys = rke2Lib.otherRoleKeys cfg.role cfg.settings;
  hasServerUrl = (cfg.settings.server or null) != null;
  port = rke2Lib.portOf cfg.settings;

  # Where each token comes from: a file on the host (kept out of the store: `toString` keeps a
  # path a plain file name, interpolating it would copy the secret into the store), or nixpkgs'
  # plain-text option, which can only be a file in the world-readable store (warned about).
  tokenSource = file: text: name:
    if file != null then toString file
    else if text != "" then "${pkgs.writeText name text}"
    else null;
  token = tokenSource cfg.tokenFile cfg.token "rke2-token";
  agentToken = if isServer then tokenSource cfg.agentTokenFile cfg.agentToken "rke2-agent-token" else null;

  credentials =
    lib.optional (token != null) "token:${token}"
    ++ lib.optional (agentToken != null) "agent-token:${agentToken}";

  # The daemon reads RKE2_<KEY>; %d is systemd's credentials directory. Environment values rank
  # below config.yaml, which is why settings may not name token files itself.
  tokenEnvironment =
    lib.optionalAttrs (token != null) { RKE2_TOKEN_FILE = "%d/token"; }
    // lib.optionalAttrs (agentToken != null) { RKE2_AGENT_TOKEN_FILE = "%d/agent-token"; };

  # Token files that must be on the host before the unit starts (the bootstrapping contract in
  # nix/README.md). LoadCredential= fails with a bare "243/CREDENTIALS" when one is missing and
  # runs before any ExecStartPre=, so the unit asserts them first: systemd then reports
  # "AssertFileNotEmpty=<path> was not met", naming the file.
  hostTokenFiles =
    lib.optional (cfg.tokenFile != null) (toString cfg.tokenFile)
    ++ lib.optional (isServer && cfg.agentTokenFile != null) (toString cfg.agentTokenFile);

  # nixpkgs' configPath: the daemon reads that file instead of ours, and every setting the
  # module has goes on the command line, which outranks the file (as nixpkgs' flags do).
  defaultConfigPath = "/etc/rancher/rke2/config.yaml";
  ownConfigFile = cfg.configPath == null || toString cfg.configPath == defaultConfigPath;
  configArgs = lib.optionals (!ownConfigFile)
    ([ "--config=${toString cfg.configPath}" ] ++ rke2Lib.settingsFlags cfg.role cfg.settings);

  # extraFlags go to systemd as written (a string or a list of strings, split into words the
  # way systemd splits ExecStart=), as in current nixpkgs.
  extraFlags = if builtins.isList cfg.extraFlags then cfg.extraFlags else [ cfg.extraFlags ];

  execStart = lib.optionalAttrs (configArgs != [ ] || extraFlags != [ ]) {
    # The empty entry clears the unit file's ExecStart before ours is added.
    ExecStart = [
      ""
      (lib.concatStringsSep " " ([ "${cfg.package}/bin/rke2 ${cfg.role}" ] ++ map rke2Lib.systemdArg configArgs ++ extraFlags))
    ];
  };

  unitDropIn = {
    wantedBy = [ "multi-user.target" ];
    restartTriggers = lib.optional ownConfigFile config.environment.etc."rancher/rke2/config.yaml".source;
    unitConfig = lib.optionalAttrs (hostTokenFiles != [ ]) { AssertFileNotEmpty = hostTokenFiles; };
    serviceConfig = { LoadCredential = credentials; }
      // execStart
      // lib.optionalAttrs (cfg.environmentFile != null) { EnvironmentFile = [ cfg.environmentFile ]; };
  };

  # openFirewall: etcd's client, peer and metrics ports only for the other servers, whose
  # addresses the topology knows; with either NixOS firewall backend.
  peers = cfg.peerServerAddresses;
  etcdPorts = map port [ "etcd-client-port" "etcd-peer-port" "etcd-metrics-port" ];
  etcdRules = rke2Lib.restrictedPortRules { addresses = if peers == null then [ ] else peers; ports = etcdPorts; };
  nftables = config.networking.nftables.enable;

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
  imports = [ ./topology.nix ./nixpkgs-compat.nix ];

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

    kubectlPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.kubectl;
      defaultText = lib.literalExpression "pkgs.kubectl";
      description = ''
        Servers: the kubectl a server links as <dataDir>/bin/kubectl at start, so RKE2's
        documented `/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml
        get nodes` works as written.
      '';
    };

    containerdPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.containerd;
      defaultText = lib.literalExpression "pkgs.containerd";
      description = "containerd (and its `ctr`), which every node runs as a supervised child for its pods.";
    };

    runcPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.runc;
      defaultText = lib.literalExpression "pkgs.runc";
      description = "runc, the OCI runtime containerd starts the containers with.";
    };

    cniPackage = lib.mkOption {
      type = lib.types.package;
      default = pkgs.cni-plugins;
      defaultText = lib.literalExpression "pkgs.cni-plugins";
      description = "The CNI plugins (bridge, host-local, loopback, portmap), linked as /opt/cni/bin.";
    };

    images = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
      description = ''
        Container image archives (docker-archive or OCI, `.tar`, `.tar.gz`, `.tar.zst`) to import
        at start, like RKE2's air-gap images: each is linked into <dataDir>/agent/images/.
      '';
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
        that join (settings.server set); a first server without one generates a token. The
        file must exist before the unit starts (see nix/README.md, token bootstrapping).
      '';
    };

    token = lib.mkOption {
      type = lib.types.str;
      default = "";
      description = ''
        The cluster token as plain text (nixpkgs compatibility). It is written to the
        world-readable Nix store, which evaluation warns about; prefer tokenFile.
      '';
    };

    agentToken = lib.mkOption {
      type = lib.types.str;
      default = "";
      description = "Servers only: the agent token as plain text (nixpkgs compatibility; lands in the world-readable Nix store, prefer agentTokenFile).";
    };

    agentTokenFile = lib.mkOption {
      type = lib.types.nullOr (lib.types.either lib.types.str lib.types.path);
      default = null;
      example = "/run/secrets/rke2-agent-token";
      description = "Servers only: path of a file holding the token agents join with (default: the server token).";
    };

    snapshots = {
      schedule = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "0 */6 * * *";
        description = "Servers: cron schedule of etcd snapshots (settings key etcd-snapshot-schedule-cron; the daemon's default is \"0 */12 * * *\").";
      };
      retention = lib.mkOption {
        type = lib.types.nullOr lib.types.ints.positive;
        default = null;
        example = 10;
        description = "Servers: how many scheduled snapshots each server keeps (settings key etcd-snapshot-retention; default 5).";
      };
      dir = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/var/backups/rke2";
        description = "Servers: where snapshots are written (settings key etcd-snapshot-dir; default <data-dir>/server/db/snapshots).";
      };
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Servers: open the supervisor (9345) and Kubernetes API (6443) ports to everyone, and
        etcd's client, peer and metrics ports (2379-2381) only to the other servers of
        services.rke2.cluster (nftables or iptables rules, whichever firewall backend the host
        uses), or the ports settings give instead. Without a topology the other servers are
        unknown and etcd's ports stay closed (with a warning). Agents listen only on loopback,
        so nothing is opened for them.
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
      type = lib.types.either lib.types.str (lib.types.listOf lib.types.str);
      default = [ ];
      example = [ "--debug" "--node-heartbeat-interval 5s" ];
      description = ''
        Extra command-line flags for `rke2 server` / `rke2 agent`; they override config.yaml.
        Written into ExecStart= as given (systemd splits them into words and expands %/$), as
        nixpkgs' module does.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # The snapshot convenience options are defaults of the settings they name, so a key set
    # in settings directly wins.
    services.rke2.settings = lib.mkIf isServer (lib.mapAttrs (_: lib.mkDefault) (lib.filterAttrs (_: v: v != null) {
      "etcd-snapshot-schedule-cron" = cfg.snapshots.schedule;
      "etcd-snapshot-retention" = if cfg.snapshots.retention == null then null else toString cfg.snapshots.retention;
      "etcd-snapshot-dir" = cfg.snapshots.dir;
    }));
    assertions =
      map (message: { assertion = false; inherit message; }) settingsErrors
      ++ [
        {
          assertion = isServer || hasServerUrl || !ownConfigFile;
          message = "services.rke2.settings.server (nixpkgs' name: serverAddr) is not set, but services.rke2.role is \"agent\": an agent registers through the cluster's fixed registration address, e.g. settings.server = \"https://rke2.example.internal:9345\" (or describe the cluster in services.rke2.cluster).";
        }
        {
          assertion = isServer || token != null || !ownConfigFile;
          message = "services.rke2.tokenFile is not set, but services.rke2.role is \"agent\": an agent needs the cluster's (agent) token to join. Give the path of a file holding it as a string, e.g. \"/run/secrets/rke2-token\".";
        }
        {
          assertion = !(isServer && hasServerUrl) || token != null || !ownConfigFile;
          message = "services.rke2.tokenFile is not set, but services.rke2.settings.server is: a server joining an existing cluster needs the cluster token. Give the path of a file holding it as a string, e.g. \"/run/secrets/rke2-token\".";
        }
        {
          assertion = isServer || (cfg.agentTokenFile == null && cfg.agentToken == "");
          message = "services.rke2.agentTokenFile / agentToken are only used by servers; on an agent, put the path of the agent token in services.rke2.tokenFile.";
        }
        {
          assertion = cfg.tokenFile == null || cfg.token == "";
          message = "services.rke2.token and services.rke2.tokenFile are both set; use one of them (tokenFile keeps the secret out of the Nix store).";
        }
        {
          assertion = cfg.agentTokenFile == null || cfg.agentToken == "";
          message = "services.rke2.agentToken and services.rke2.agentTokenFile are both set; use one of them (agentTokenFile keeps the secret out of the Nix store).";
        }
        {
          assertion = !(isServer && cfg.socketActivation) || socketPortMismatch == [ ];
          message = "services.rke2.settings.${lib.concatStringsSep " and " socketPortMismatch}: rke2-server.socket and rke2-server-api.socket listen on ports 9345 and 6443 of every address, and the server takes those sockets instead of binding its own; set services.rke2.socketActivation = false so rke2 binds what settings say.";
        }
      ];

    warnings =
      pathLiteralWarning "tokenFile" cfg.tokenFile
      ++ pathLiteralWarning "agentTokenFile" cfg.agentTokenFile
      ++ lib.optional (cfg.token != "")
        "services.rke2.token is a plain-text secret: it is written to the world-readable Nix store, readable by every user of this host. Put it in a file and set services.rke2.tokenFile instead."
      ++ lib.optional (isServer && cfg.agentToken != "")
        "services.rke2.agentToken is a plain-text secret: it is written to the world-readable Nix store, readable by every user of this host. Put it in a file and set services.rke2.agentTokenFile instead."
      ++ lib.optional (isServer && cfg.openFirewall && peers == null)
        "services.rke2.openFirewall opens only ${toString (port "supervisor-port")} and ${toString (port "https-listen-port")}: without services.rke2.cluster the other servers' addresses are unknown, so etcd's ports (${lib.concatMapStringsSep ", " toString etcdPorts}) stay closed. Describe the cluster in services.rke2.cluster, or open them for your servers in networking.firewall yourself."
      ++ lib.optional (droppedKeys != [ ])
        "services.rke2.settings: ${lib.concatStringsSep ", " droppedKeys} only apply to rke2 ${otherRole}; they are left out of this ${cfg.role}'s config.yaml.";

    environment.systemPackages = [ cfg.package ];
    environment.etc."rancher/rke2/config.yaml" = lib.mkIf ownConfigFile { text = configText; };

    services.dbus.packages = [ cfg.package ];

    # Pods: the CNI plugins where the node looks for them, and the air-gap images.
    systemd.tmpfiles.rules = [ "L+ /opt/cni/bin - - - - ${cfg.cniPackage}/bin" ]
      ++ map (img: "L+ ${dataDir}/agent/images/${img.name} - - - - ${img}") cfg.images;

    # The units come from the package (systemd/ in this repository); what follows becomes
    # NixOS drop-ins on top of them.
    systemd.packages = [ cfg.package ];

    systemd.services.rke2-server = lib.mkIf isServer (unitDropIn // {
      path = [ cfg.etcdPackage cfg.kubectlPackage ] ++ runtimePath;
      environment = cfg.environmentVars // { RKE2_ETCD_BIN = "${cfg.etcdPackage}/bin/etcd"; } // tokenEnvironment;
    });

    # Masked when off, so the packaged socket cannot hold the ports rke2 binds itself.
    # Two socket units: FileDescriptorName= names every fd of a unit alike, so 9345
    # ("supervisor") and 6443 ("apiserver") come from separate units (see systemd/).
    systemd.sockets.rke2-server = lib.mkIf isServer
      (if cfg.socketActivation then { wantedBy = [ "sockets.target" ]; } else { enable = false; });
    systemd.sockets.rke2-server-api = lib.mkIf isServer
      (if cfg.socketActivation then { wantedBy = [ "sockets.target" ]; } else { enable = false; });

    systemd.services.rke2-agent = lib.mkIf (!isServer) (unitDropIn // {
      path = runtimePath;
      environment = cfg.environmentVars // tokenEnvironment;
    });

    networking.firewall = lib.mkIf (isServer && cfg.openFirewall) (lib.mkMerge [
      { allowedTCPPorts = map port [ "supervisor-port" "https-listen-port" ]; }
      (lib.mkIf (etcdRules.nftables != "" && nftables) { extraInputRules = etcdRules.nftables; })
      (lib.mkIf (etcdRules.iptables != "" && !nftables) { extraCommands = etcdRules.iptables; })
    ]);
  };
}
