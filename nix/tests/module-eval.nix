# Evaluation tests for nix/module.nix (with topology.nix and nixpkgs-compat.nix) as NixOS
# evaluates it: nixpkgs' real eval-config.nix and module list, which include nixpkgs' own
# services.rke2 and services.k3s (see nixos-harness.nix). Run by tests/nix_eval.rs for each
# nixpkgs layout:
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/module-eval.nix \
#     --argstr shared <.../nixos-eval> [--argstr nixos <nixos tree>] [--argstr lib <nixpkgs lib>]
# Same result shape as eval.nix: a list of { name, expected, actual }.
{ shared, nixos ? null, lib ? null }:
let
  h = import ./nixos-harness.nix { inherit shared nixos lib; };
  inherit (h) pkgs;
  l = h.lib;
  rke2Lib = import ../lib.nix;
  cluster = import ./cluster-3s2a.nix;

  eval = modules: (h.evalHost modules).config;
  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  # NixOS itself may warn about unrelated things; the cases look at ours.
  ours = builtins.filter (w: l.hasInfix "services.rke2" w);
  has = needle: builtins.any (m: builtins.match ".*${needle}.*" m != null);
  rke2Units = attrs: builtins.filter (l.hasPrefix "rke2") (builtins.attrNames attrs);
  rke2Env = env: l.filterAttrs (n: _: l.hasPrefix "RKE2_" n) env;
  yaml = c: c.environment.etc."rancher/rke2/config.yaml".text;

  # A host importing the shared topology, as in the README.
  member = hostName: extra: eval [
    { networking.hostName = hostName; services.rke2 = { enable = true; inherit cluster; }; }
    extra
  ];
  s1 = member "s1" { };
  s2 = member "s2" { services.rke2.openFirewall = true; };
  a1 = member "a1" { services.rke2.openFirewall = true; };
  summary = c: {
    inherit (c.services.rke2) role;
    assertions = failed c;
    warnings = ours c.warnings;
    services = rke2Units c.systemd.services;
    sockets = rke2Units c.systemd.sockets;
    firewall = c.networking.firewall.allowedTCPPorts;
  };
  case = name: expected: actual: { inherit name expected actual; };
  tokenEnv = { RKE2_TOKEN_FILE = "%d/token"; };
  etcdRules = rke2Lib.restrictedPortRules { addresses = [ "10.0.0.1" "10.0.0.3" ]; ports = [ 2379 2380 2381 ]; };

  # A configuration written for nixpkgs' services.rke2 (no `cluster`, no `settings`).
  nixpkgsAgent = {
    role = "agent";
    serverAddr = "https://rke2.example.internal:9345";
    tokenFile = "/run/secrets/rke2-token";
    nodeName = "worker-1";
    nodeIP = "10.0.0.21";
    nodeLabel = [ "tier=web" "zone=b" ];
    nodeTaint = [ "dedicated=web:NoSchedule" ];
    extraFlags = [ "--node-heartbeat-interval=5s" ];
  };
  nixpkgsServer = {
    serverAddr = "https://rke2.example.internal:9345";
    tokenFile = "/run/secrets/rke2-token";
    nodeName = "s9";
    nodeIP = "10.0.0.9";
    disable = [ "rke2-ingress-nginx" ];
    cni = "canal";
  };
  nixpkgsHost = opts: eval [ { networking.hostName = "n"; services.rke2 = { enable = true; } // opts; } ];

  # Every option whose feature rke2-rs lacks, set away from its default.
  allUnsupported = {
    disable = [ "rke2-metrics-server" ];
    cni = "cilium";
    cisHardening = true;
    selinux = true;
    nodeExternalIP = "203.0.113.9";
    manifests.app.content = { apiVersion = "v1"; kind = "Namespace"; metadata.name = "app"; };
    autoDeployCharts.nginx = { repo = "oci://registry.example/nginx"; version = "1.0.0"; };
    charts.local = pkgs.hello;
    containerdConfigTemplate = "{{ template \"base\" . }}";
    gracefulNodeShutdown.enable = true;
    extraKubeletConfig.podsPerCore = 3;
    extraKubeProxyConfig.mode = "nftables";
  };

  upstream = h.evalUpstream [ ];
  mine = h.evalHost [ ];
  declaredIn = opt: l.unique (map toString opt.declarations);
  isOurs = f: l.hasInfix "/nix/" f && !(l.hasInfix "/nixos/modules/" f);
in
[
  # --- replacing nixpkgs' module ----------------------------------------------------------
  (case "nixpkgs declares its own services.rke2 here (the module has something to replace)" true
    (upstream.options.services ? rke2 && upstream.options.services.rke2 ? serverAddr && !(upstream.options.services.rke2 ? cluster)))
  (case "every nixpkgs services.rke2 option is declared, by this repository's files only" [ ]
    (map (o: l.showOption o.loc) (builtins.filter
      (o: let m = l.attrByPath o.loc null mine.options; in
        m == null || !(l.isOption m) || !(builtins.all isOurs (declaredIn m)))
      (l.collect l.isOption upstream.options.services.rke2))))
  (case "services.k3s is still nixpkgs' and still works next to this module"
    { declaredByNixpkgs = true; unit = true; server = true; rke2 = [ "rke2-server" ]; }
    (let
      e = h.evalHost [ {
        services.k3s = { enable = true; role = "server"; package = pkgs.hello; };
        services.rke2.enable = true;
      } ];
      k = e.config.systemd.services.k3s;
    in {
      declaredByNixpkgs = builtins.all (f: l.hasInfix "/nixos/modules/services/cluster/" f) (declaredIn e.options.services.k3s.enable);
      unit = e.config.systemd.services ? k3s;
      server = l.hasInfix "k3s server" (toString k.serviceConfig.ExecStart);
      rke2 = rke2Units e.config.systemd.services;
    }))

  # --- a cluster from the shared topology -------------------------------------------------
  (case "s2: a joining server from the topology"
    {
      role = "server";
      assertions = [ ];
      warnings = [ ];
      services = [ "rke2-server" ];
      sockets = [ "rke2-server" "rke2-server-api" ];
      firewall = [ 6443 9345 ];
    }
    (summary s2))
  (case "s2: config.yaml is the lib rendering of its derived settings"
    (rke2Lib.renderConfig "server" (rke2Lib.hostConfig { inherit cluster; hostName = "s2"; }).settings)
    (yaml s2))
  (case "s2: token by LoadCredential, etcd by path, socket and service wanted, D-Bus policy installed"
    {
      environment = tokenEnv // { RKE2_ETCD_BIN = "${pkgs.etcd}/bin/etcd"; };
      LoadCredential = [ "token:/run/secrets/rke2-token" ];
      etcdOnPath = true;
      wantedBy = [ "multi-user.target" ];
      socketWantedBy = [ "sockets.target" ];
      apiSocketWantedBy = [ "sockets.target" ];
      restartTriggers = [ s2.environment.etc."rancher/rke2/config.yaml".source ];
      unitPackage = true;
      dbusPolicy = true;
    }
    (let s = s2.systemd.services.rke2-server; in {
      environment = rke2Env s.environment;
      etcdOnPath = builtins.elem pkgs.etcd s.path;
      inherit (s) wantedBy restartTriggers;
      inherit (s.serviceConfig) LoadCredential;
      socketWantedBy = s2.systemd.sockets.rke2-server.wantedBy;
      apiSocketWantedBy = s2.systemd.sockets.rke2-server-api.wantedBy;
      unitPackage = builtins.elem s2.services.rke2.package s2.systemd.packages;
      dbusPolicy = builtins.elem s2.services.rke2.package s2.services.dbus.packages;
    }))
  (case "s2: the rendered unit asserts the token file before LoadCredential can fail on it" [ true true true ]
    (let t = s2.systemd.units."rke2-server.service".text; in [
      (l.hasInfix "AssertFileNotEmpty=/run/secrets/rke2-token\n" t)
      (l.hasInfix "LoadCredential=token:/run/secrets/rke2-token\n" t)
      (l.hasInfix "Environment=\"RKE2_TOKEN_FILE=%d/token\"" t)
    ]))
  (case "s2: the sockets are enabled units of the real systemd module" [ true true ]
    (map (u: s2.systemd.units ? ${u} && s2.systemd.units.${u}.wantedBy == [ "sockets.target" ]) [ "rke2-server.socket" "rke2-server-api.socket" ]))
  (case "no secret and no store path of one in config.yaml or the unit" [ false false ]
    (map (s: has "rke2-token" [ s ]) [ (yaml s2) (builtins.toJSON (rke2Env s2.systemd.services.rke2-server.environment)) ]))
  (case "s1, the first server, has no server URL; s2 has one" [ false true ]
    (map (c: has "(^|\n)server: " [ (yaml c) ]) [ s1 s2 ]))
  (case "a1: an agent with its own unit, no socket, nothing opened"
    {
      role = "agent";
      assertions = [ ];
      warnings = [ ];
      services = [ "rke2-agent" ];
      sockets = [ ];
      firewall = [ ];
    }
    (summary a1))
  (case "a1: agent unit gets the token only"
    { environment = tokenEnv; LoadCredential = [ "token:/run/secrets/rke2-token" ]; }
    (let s = a1.systemd.services.rke2-agent; in { environment = rke2Env s.environment; inherit (s.serviceConfig) LoadCredential; }))
  (case "a1: config.yaml has no server-only keys"
    (rke2Lib.renderConfig "agent" (rke2Lib.hostConfig { inherit cluster; hostName = "a1"; }).settings)
    (yaml a1))
  (case "host settings override the topology key by key; null removes a key"
    { taint = [ "x=y:NoSchedule" ]; hasServer = false; ip = [ "10.0.0.2" ]; }
    (let c = member "s2" { services.rke2.settings = { node-taint = [ "x=y:NoSchedule" ]; server = null; }; }; in {
      taint = c.services.rke2.settings.node-taint;
      hasServer = has "(^|\n)server: " [ (yaml c) ];
      ip = c.services.rke2.settings.node-ip;
    }))
  (case "servers have kubectl on the unit's PATH, for <dataDir>/bin/kubectl"
    true
    (builtins.elem s1.services.rke2.kubectlPackage s1.systemd.services.rke2-server.path))
  (case "snapshots options render the etcd-snapshot settings; a key in settings wins"
    { cron = true; retention = true; dir = true; }
    (let y = yaml (member "s2" { services.rke2.snapshots = { schedule = "*/5 * * * *"; retention = 3; dir = "/srv/snap"; }; services.rke2.settings.etcd-snapshot-dir = "/srv/other"; }); in {
      cron = has "etcd-snapshot-schedule-cron: ['\"]?\\*/5 \\* \\* \\* \\*" [ y ];
      retention = has "etcd-snapshot-retention: ['\"]?3" [ y ];
      dir = has "etcd-snapshot-dir: ['\"]?/srv/other" [ y ];
    }))
  (case "extraFlags replace ExecStart after clearing the unit's, as written"
    [ "" "${s1.services.rke2.package}/bin/rke2 agent --debug --node-label a=b" ]
    (member "a1" { services.rke2.extraFlags = [ "--debug" "--node-label a=b" ]; }).systemd.services.rke2-agent.serviceConfig.ExecStart)

  # --- firewall ---------------------------------------------------------------------------
  (case "openFirewall, iptables backend: etcd only from the other servers (s1, s3), not from s2 itself"
    { rules = true; self = false; assertions = [ ]; }
    (let fw = s2.networking.firewall.extraCommands; in {
      rules = l.hasInfix etcdRules.iptables fw;
      self = l.hasInfix "10.0.0.2 " fw;
      assertions = failed s2;
    }))
  (case "openFirewall, nftables backend: etcd only from the other servers, nothing in extraCommands"
    { rules = etcdRules.nftables; commands = false; ports = [ 6443 9345 ]; assertions = [ ]; }
    (let c = member "s2" { services.rke2.openFirewall = true; networking.nftables.enable = true; }; in {
      rules = c.networking.firewall.extraInputRules;
      commands = l.hasInfix "2379" c.networking.firewall.extraCommands;
      ports = c.networking.firewall.allowedTCPPorts;
      assertions = failed c;
    }))
  (case "openFirewall without a topology: 9345/6443 only, etcd closed with a warning" [ [ 6443 9345 ] false true ]
    (let c = eval [ { services.rke2 = { enable = true; openFirewall = true; }; } ]; in [
      c.networking.firewall.allowedTCPPorts
      (l.hasInfix "2379" c.networking.firewall.extraCommands)
      (has "etcd's ports \\(2379, 2380, 2381\\) stay closed" c.warnings)
    ]))
  (case "a single-server topology opens no etcd port to anyone" false
    (let c = eval [ {
      networking.hostName = "s1";
      services.rke2 = { enable = true; openFirewall = true; cluster = cluster // { servers = { s1 = cluster.servers.s1; }; }; };
    } ]; in l.hasInfix "2379" c.networking.firewall.extraCommands))

  # --- assertions and warnings ------------------------------------------------------------
  (case "an even topology fails an assertion with the quorum rule" true
    (has "an even number of servers.*quorum" (failed (eval [
      { networking.hostName = "s1"; services.rke2 = { enable = true; cluster = cluster // { servers = cluster.servers // { s4 = { address = "10.0.0.4"; }; }; }; }; }
    ]))))
  (case "a host outside the topology fails with its name" true
    (has "this host, \"web9\" \\(from services.rke2.hostName, default networking.hostName\\), is not in the topology" (failed (member "web9" { }))))
  (case "services.rke2.hostName picks the entry" "agent"
    (member "web9" { services.rke2.hostName = "a1"; }).services.rke2.role)
  (case "a role contradicting the topology is named" true
    (has "services.rke2.role is \"server\", but services.rke2.cluster lists this host \\(a1\\) as an agent" (failed (member "a1" { services.rke2.role = "server"; }))))
  (case "an agent without topology needs server and token" [ true true ]
    (let f = failed (eval [ { services.rke2 = { enable = true; role = "agent"; }; } ]); in
      [ (has "settings.server \\(nixpkgs' name: serverAddr\\) is not set, but services.rke2.role is \"agent\"" f) (has "tokenFile is not set, but services.rke2.role is \"agent\"" f) ]))
  (case "a joining server needs a token" true
    (has "a server joining an existing cluster needs the cluster token"
      (failed (eval [ { services.rke2 = { enable = true; settings.server = "https://lb:9345"; }; } ]))))
  (case "a first server without topology or token is fine" [ ]
    (failed (eval [ { services.rke2.enable = true; } ])))
  (case "tokens in settings are refused" true
    (has "services.rke2.settings.token: do not set token in settings; use services.rke2.tokenFile"
      (failed (eval [ { services.rke2 = { enable = true; settings.token = "secret"; }; } ]))))
  (case "a path literal token file warns and stays a plain path" [ true [ "token:/run/secrets/rke2-token" ] [ "/run/secrets/rke2-token" ] ]
    (let c = eval [ { services.rke2 = { enable = true; role = "agent"; tokenFile = /run/secrets/rke2-token; settings.server = "https://lb:9345"; }; } ]; in
      [ (has "services.rke2.tokenFile is a path literal" c.warnings) c.systemd.services.rke2-agent.serviceConfig.LoadCredential c.systemd.services.rke2-agent.unitConfig.AssertFileNotEmpty ]))
  (case "server-only settings on an agent are dropped with a warning" [ true false ]
    (let c = eval [ { services.rke2 = { enable = true; role = "agent"; tokenFile = "/t"; settings = { server = "https://lb:9345"; tls-san = [ "x" ]; }; }; } ]; in
      [ (has "tls-san only apply to rke2 server" c.warnings) (has "tls-san" [ (yaml c) ]) ]))
  (case "non-default ports need socketActivation off; the firewall follows settings" [ true [ ] [ 6443 19345 ] ]
    (let
      on = eval [ { services.rke2 = { enable = true; settings.supervisor-port = 19345; }; } ];
      off = eval [ { services.rke2 = { enable = true; openFirewall = true; socketActivation = false; settings.supervisor-port = 19345; }; } ];
    in [
      (has "settings.supervisor-port: rke2-server.socket and rke2-server-api.socket listen" (failed on))
      (failed off)
      off.networking.firewall.allowedTCPPorts
    ]))
  (case "socketActivation off masks both packaged sockets" [ false false ]
    (let c = eval [ { services.rke2 = { enable = true; socketActivation = false; }; } ]; in
      [ c.systemd.sockets.rke2-server.enable c.systemd.sockets.rke2-server-api.enable ]))
  (case "disabled: nothing is set" { services = [ ]; etc = false; }
    (let c = eval [ { services.rke2.cluster = cluster; networking.hostName = "s1"; } ]; in
      { services = rke2Units c.systemd.services; etc = c.environment.etc ? "rancher/rke2/config.yaml"; }))

  # --- nixpkgs' options -------------------------------------------------------------------
  (case "nixpkgs-style agent: options become config.yaml keys, extraFlags the command line"
    {
      yaml = ''
        # Generated from the NixOS configuration (services.rke2); do not edit here.
        server: "https://rke2.example.internal:9345"
        node-name: "worker-1"
        node-ip: "10.0.0.21"
        node-label:
          - "tier=web"
          - "zone=b"
        node-taint:
          - "dedicated=web:NoSchedule"
      '';
      assertions = [ ];
      warnings = [ ];
      credential = [ "token:/run/secrets/rke2-token" ];
      execStart = [ "" "${pkgs.callPackage null { }}/bin/rke2 agent --node-heartbeat-interval=5s" ];
    }
    (let c = nixpkgsHost nixpkgsAgent; in {
      yaml = yaml c;
      assertions = failed c;
      warnings = ours c.warnings;
      credential = c.systemd.services.rke2-agent.serviceConfig.LoadCredential;
      execStart = c.systemd.services.rke2-agent.serviceConfig.ExecStart;
    }))
  (case "nixpkgs-style server: disable and cni evaluate, each named in a warning" [ true true [ ] ]
    (let c = nixpkgsHost nixpkgsServer; in [
      (has "services.rke2.disable is set, but has no effect" c.warnings)
      (has "services.rke2.cni is set, but has no effect" c.warnings)
      (failed c)
    ]))
  (case "every option without an rke2-rs feature warns by name, and only when set"
    {
      set = map (n: "services.rke2.${n} is set") [ "disable" "cni" "cisHardening" "selinux" "nodeExternalIP" "manifests" "autoDeployCharts" "charts" "containerdConfigTemplate" "gracefulNodeShutdown.enable" "extraKubeletConfig" "extraKubeProxyConfig" ];
      unset = [ ];
    }
    {
      set = map (w: builtins.head (l.splitString "," w)) (ours (nixpkgsHost allUnsupported).warnings);
      unset = ours (nixpkgsHost { }).warnings;
    })
  (case "a plain-text token works through the store, with a warning" [ true true false ]
    (let c = nixpkgsHost (nixpkgsAgent // { tokenFile = null; token = "K10plain::server:secret"; }); in [
      (has "services.rke2.token is a plain-text secret: it is written to the world-readable Nix store" c.warnings)
      (l.hasPrefix "token:/nix/store/" (builtins.head c.systemd.services.rke2-agent.serviceConfig.LoadCredential))
      (c.systemd.services.rke2-agent.unitConfig ? AssertFileNotEmpty)
    ]))
  (case "token and tokenFile together are refused" true
    (has "services.rke2.token and services.rke2.tokenFile are both set" (failed (nixpkgsHost (nixpkgsAgent // { token = "x"; })))))
  (case "debug, dataDir, environmentVars and environmentFile" [ true true "1" [ "/run/rke2.env" ] ]
    (let c = nixpkgsHost { debug = true; dataDir = "/srv/rke2"; environmentVars.RUST_BACKTRACE = "1"; environmentFile = "/run/rke2.env"; }; in [
      (has "(^|\n)debug: true\n" [ (yaml c) ])
      (has "(^|\n)data-dir: \"/srv/rke2\"\n" [ (yaml c) ])
      c.systemd.services.rke2-server.environment.RUST_BACKTRACE
      c.systemd.services.rke2-server.serviceConfig.EnvironmentFile
    ]))
  (case "configPath: the daemon reads that file, the module's settings go on the command line"
    { etc = false; execStart = [ "" "${pkgs.callPackage null { }}/bin/rke2 agent \"--config=/run/rke2/config.yaml\" \"--server=https://rke2.example.internal:9345\" \"--node-name=worker-1\" \"--node-ip=10.0.0.21\" \"--node-label=tier=web\" \"--node-label=zone=b\" \"--node-taint=dedicated=web:NoSchedule\" --node-heartbeat-interval=5s" ]; }
    (let c = nixpkgsHost (nixpkgsAgent // { configPath = "/run/rke2/config.yaml"; }); in {
      etc = c.environment.etc ? "rancher/rke2/config.yaml";
      execStart = c.systemd.services.rke2-agent.serviceConfig.ExecStart;
    }))
  (case "nixpkgs' old configPath default means the module's own file" true
    ((nixpkgsHost { configPath = "/etc/rancher/rke2/config.yaml"; }).environment.etc ? "rancher/rke2/config.yaml"))
  (case "extraFlags as one string, as current nixpkgs allows" [ "" "${pkgs.callPackage null { }}/bin/rke2 server --node-heartbeat-interval 5s --debug" ]
    (nixpkgsHost { extraFlags = "--node-heartbeat-interval 5s --debug"; }).systemd.services.rke2-server.serviceConfig.ExecStart)
  (case "nixpkgs options override the topology's derived values" [ "other" [ "10.9.9.9" ] ]
    (let c = member "s2" { services.rke2 = { nodeName = "other"; nodeIP = "10.9.9.9"; }; }; in
      [ c.services.rke2.settings.node-name [ c.services.rke2.settings.node-ip ] ]))
]
