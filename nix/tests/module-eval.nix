# Evaluation tests for nix/module.nix + nix/topology.nix, run by tests/nix_eval.rs with
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/module-eval.nix
# Without nixpkgs, the modules are evaluated by mini-modules.nix against stub declarations of
# the NixOS options they set. Same result shape as eval.nix: a list of { name, expected, actual }.
let
  mini = import ./mini-modules.nix;
  inherit (mini.lib) types mkOption;
  rke2Lib = import ../lib.nix;
  cluster = import ./cluster-3s2a.nix;

  fakePkg = name: { outPath = "/nix/store/00000000000000000000000000000000-${name}"; inherit name; };
  pkgs = {
    etcd = fakePkg "etcd";
    # module.nix's default package; never built here.
    callPackage = _fn: _args: fakePkg "rke2";
  };

  # The NixOS options module.nix and topology.nix define, declared loosely.
  nixosStub = {
    options = {
      assertions = mkOption { type = types.listOf types.anything; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule ({ config, ... }: {
          options.text = mkOption { type = types.str; };
          options.source = mkOption { type = types.str; default = "/nix/store/etc-${builtins.hashString "sha256" config.text}"; };
        }));
        default = { };
      };
      services.dbus.packages = mkOption { type = types.listOf types.package; default = [ ]; };
      systemd.packages = mkOption { type = types.listOf types.package; default = [ ]; };
      systemd.services = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.sockets = mkOption { type = types.attrsOf types.anything; default = { }; };
    };
  };

  eval = modules: (mini.evalModules { modules = [ nixosStub ../module.nix ] ++ modules; inherit pkgs; }).config;
  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  has = needle: builtins.any (m: builtins.match ".*${needle}.*" m != null);

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
    warnings = c.warnings;
    services = builtins.attrNames c.systemd.services;
    sockets = builtins.attrNames c.systemd.sockets;
    firewall = c.networking.firewall.allowedTCPPorts;
  };
  case = name: expected: actual: { inherit name expected actual; };
  tokenEnv = { RKE2_TOKEN_FILE = "%d/token"; };
in
[
  (case "s2: a joining server from the topology"
    {
      role = "server";
      assertions = [ ];
      warnings = [ ];
      services = [ "rke2-server" ];
      sockets = [ "rke2-server" "rke2-server-api" ];
      firewall = [ 9345 6443 2379 2380 2381 ];
    }
    (summary s2))
  (case "s2: config.yaml is the lib rendering of its derived settings"
    (rke2Lib.renderConfig "server" (rke2Lib.hostConfig { inherit cluster; hostName = "s2"; }).settings)
    s2.environment.etc."rancher/rke2/config.yaml".text)
  (case "s2: token by LoadCredential, etcd by path, socket and service wanted"
    {
      environment = tokenEnv // { RKE2_ETCD_BIN = "${pkgs.etcd}/bin/etcd"; };
      LoadCredential = [ "token:/run/secrets/rke2-token" ];
      path = [ pkgs.etcd ];
      wantedBy = [ "multi-user.target" ];
      socketWantedBy = [ "sockets.target" ];
      apiSocketWantedBy = [ "sockets.target" ];
      restartTriggers = [ s2.environment.etc."rancher/rke2/config.yaml".source ];
      packages = [ "rke2" ];
      dbus = [ "rke2" ];
    }
    (let s = s2.systemd.services.rke2-server; in {
      inherit (s) environment path wantedBy restartTriggers;
      inherit (s.serviceConfig) LoadCredential;
      socketWantedBy = s2.systemd.sockets.rke2-server.wantedBy;
      apiSocketWantedBy = s2.systemd.sockets.rke2-server-api.wantedBy;
      packages = map (p: p.name) s2.systemd.packages;
      dbus = map (p: p.name) s2.services.dbus.packages;
    }))
  (case "no secret and no store path of one in config.yaml or the unit" [ false false ]
    (map (s: has "rke2-token" [ s ]) [ s2.environment.etc."rancher/rke2/config.yaml".text (builtins.toJSON s2.systemd.services.rke2-server.environment) ]))
  (case "s1, the first server, has no server URL; s2 has one" [ false true ]
    (map (c: has "(^|\n)server: " [ c.environment.etc."rancher/rke2/config.yaml".text ]) [ s1 s2 ]))
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
    (let s = a1.systemd.services.rke2-agent; in { inherit (s) environment; inherit (s.serviceConfig) LoadCredential; }))
  (case "a1: config.yaml has no server-only keys"
    (rke2Lib.renderConfig "agent" (rke2Lib.hostConfig { inherit cluster; hostName = "a1"; }).settings)
    a1.environment.etc."rancher/rke2/config.yaml".text)
  (case "host settings override the topology key by key; null removes a key"
    { taint = [ "x=y:NoSchedule" ]; hasServer = false; ip = [ "10.0.0.2" ]; }
    (let c = member "s2" { services.rke2.settings = { node-taint = [ "x=y:NoSchedule" ]; server = null; }; }; in {
      taint = c.services.rke2.settings.node-taint;
      hasServer = has "(^|\n)server: " [ c.environment.etc."rancher/rke2/config.yaml".text ];
      ip = c.services.rke2.settings.node-ip;
    }))
  (case "extraFlags replace ExecStart after clearing the unit's"
    [ "" "${(fakePkg "rke2")}/bin/rke2 agent '--debug'" ]
    (member "a1" { services.rke2.extraFlags = [ "--debug" ]; }).systemd.services.rke2-agent.serviceConfig.ExecStart)

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
      [ (has "settings.server is not set, but services.rke2.role is \"agent\"" f) (has "tokenFile is not set, but services.rke2.role is \"agent\"" f) ]))
  (case "a joining server needs a token" true
    (has "a server joining an existing cluster needs the cluster token"
      (failed (eval [ { services.rke2 = { enable = true; settings.server = "https://lb:9345"; }; } ]))))
  (case "a first server without topology or token is fine" [ ]
    (failed (eval [ { services.rke2.enable = true; } ])))
  (case "tokens in settings are refused" true
    (has "services.rke2.settings.token: do not set token in settings; use services.rke2.tokenFile"
      (failed (eval [ { services.rke2 = { enable = true; settings.token = "secret"; }; } ]))))
  (case "a path literal token file warns and stays a plain path" [ true [ "token:/run/secrets/rke2-token" ] ]
    (let c = eval [ { services.rke2 = { enable = true; role = "agent"; tokenFile = /run/secrets/rke2-token; settings.server = "https://lb:9345"; }; } ]; in
      [ (has "services.rke2.tokenFile is a path literal" c.warnings) c.systemd.services.rke2-agent.serviceConfig.LoadCredential ]))
  (case "server-only settings on an agent are dropped with a warning" [ true false ]
    (let c = eval [ { services.rke2 = { enable = true; role = "agent"; tokenFile = "/t"; settings = { server = "https://lb:9345"; tls-san = [ "x" ]; }; }; } ]; in
      [ (has "tls-san only apply to rke2 server" c.warnings) (has "tls-san" [ c.environment.etc."rancher/rke2/config.yaml".text ]) ]))
  (case "non-default ports need socketActivation off" [ true [ ] [ 19345 6443 2379 2380 2381 ] ]
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
  (case "disabled: nothing is set" { services = [ ]; etc = [ ]; }
    (let c = eval [ { services.rke2.cluster = cluster; networking.hostName = "s1"; } ]; in
      { services = builtins.attrNames c.systemd.services; etc = builtins.attrNames c.environment.etc; }))
]
