# Evaluation tests for nix/lib.nix, run by tests/nix_eval.rs with
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/eval.nix
# The result is a list of { name, expected, actual }; the Rust test fails on any case whose two
# values differ and prints both. Builtins only: no nixpkgs here.
let
  lib = import ../lib.nix;
  cluster = import ./cluster-3s2a.nix;
  host = hostName: lib.hostConfig { inherit cluster hostName; };
  errorsFor = c: hostName: lib.clusterErrors { cluster = c; inherit hostName; };
  has = needle: hay: builtins.match ".*${needle}.*" hay != null;
  anyHas = needle: msgs: builtins.any (has needle) msgs;
  evenCluster = cluster // {
    servers = cluster.servers // { s4 = { address = "10.0.0.4"; }; };
  };
  case = name: expected: actual: { inherit name expected actual; };
in
[
  # --- the 3-server + 2-agent topology, host by host --------------------------------------
  (case "s1 is the first server: no server URL" {
    role = "server";
    isInitServer = true;
    tokenFile = "/run/secrets/rke2-token";
    agentTokenFile = null;
    settings = {
      "node-name" = "s1";
      "node-ip" = [ "10.0.0.1" ];
      "tls-san" = [ "rke2.example.internal" ];
      "cluster-cidr" = "10.42.0.0/16";
      "node-monitor-grace-period" = "40s";
    };
  } (host "s1"))
  (case "s2 joins through the registration address" {
    role = "server";
    isInitServer = false;
    tokenFile = "/run/secrets/rke2-token";
    agentTokenFile = null;
    settings = {
      "node-name" = "s2";
      "node-ip" = [ "10.0.0.2" ];
      server = "https://rke2.example.internal:9345";
      "tls-san" = [ "rke2.example.internal" ];
      "cluster-cidr" = "10.42.0.0/16";
      "node-monitor-grace-period" = "40s";
    };
  } (host "s2"))
  (case "s3 carries its dedicated control-plane taint" {
    role = "server";
    isInitServer = false;
    tokenFile = "/run/secrets/rke2-token";
    agentTokenFile = null;
    settings = {
      "node-name" = "s3";
      "node-ip" = [ "10.0.0.3" ];
      server = "https://rke2.example.internal:9345";
      "tls-san" = [ "rke2.example.internal" ];
      "node-taint" = [ "CriticalAddonsOnly=true:NoExecute" ];
      "cluster-cidr" = "10.42.0.0/16";
      "node-monitor-grace-period" = "40s";
    };
  } (host "s3"))
  (case "a1 is an agent with labels and taints, and no server-only keys" {
    role = "agent";
    isInitServer = false;
    tokenFile = "/run/secrets/rke2-token";
    agentTokenFile = null;
    settings = {
      "node-name" = "a1";
      "node-ip" = [ "10.0.0.11" ];
      server = "https://rke2.example.internal:9345";
      "node-label" = [ "tier=web" ];
      "node-taint" = [ "dedicated=web:NoSchedule" ];
    };
  } (host "a1"))
  (case "a2 labels are sorted key=value strings" {
    role = "agent";
    isInitServer = false;
    tokenFile = "/run/secrets/rke2-token";
    agentTokenFile = null;
    settings = {
      "node-name" = "a2";
      "node-ip" = [ "10.0.0.12" ];
      server = "https://rke2.example.internal:9345";
      "node-label" = [ "example.com/zone=b" "tier=batch" ];
    };
  } (host "a2"))
  (case "the fixture topology is valid for every host" [ [ ] [ ] [ ] [ ] [ ] ]
    (map (errorsFor cluster) [ "s1" "s2" "s3" "a1" "a2" ]))
  (case "s2 rendered YAML: one key per line, spec order, no token" ''
    # Generated from the NixOS configuration (services.rke2); do not edit here.
    server: "https://rke2.example.internal:9345"
    node-name: "s2"
    node-ip:
      - "10.0.0.2"
    tls-san:
      - "rke2.example.internal"
    cluster-cidr: "10.42.0.0/16"
    node-monitor-grace-period: "40s"
  '' (lib.renderConfig "server" (host "s2").settings))
  (case "standalone file adds token-file" "/run/secrets/rke2-token"
    (lib.hostConfigFile { inherit cluster; hostName = "a1"; }).settings."token-file")
  (case "withTokenFile = false leaves token-file out" false
    ((lib.hostConfigFile { inherit cluster; hostName = "a1"; withTokenFile = false; }).settings ? "token-file"))
  (case "clusterConfigFiles renders every node" [ "a1" "a2" "s1" "s2" "s3" ]
    (builtins.attrNames (lib.clusterConfigFiles { inherit cluster; })))

  # --- topology variations ----------------------------------------------------------------
  (case "initServer picks another first server" { s1 = false; s2 = true; }
    (let c = cluster // { initServer = "s2"; }; in {
      s1 = (lib.hostConfig { cluster = c; hostName = "s1"; }).isInitServer;
      s2 = (lib.hostConfig { cluster = c; hostName = "s2"; }).isInitServer;
    }))
  (case "initServer moves the server URL to the old first server"
    { s1 = "https://rke2.example.internal:9345"; s2 = null; }
    (let c = cluster // { initServer = "s2"; }; in {
      s1 = (lib.hostConfig { cluster = c; hostName = "s1"; }).settings.server or null;
      s2 = (lib.hostConfig { cluster = c; hostName = "s2"; }).settings.server or null;
    }))
  (case "agents join with the agent token when there is one"
    { a1 = "/run/secrets/agent-token"; s2 = "/run/secrets/rke2-token"; s2agent = "/run/secrets/agent-token"; a1agent = null; }
    (let c = cluster // { agentTokenFile = "/run/secrets/agent-token"; }; in {
      a1 = (lib.hostConfig { cluster = c; hostName = "a1"; }).tokenFile;
      a1agent = (lib.hostConfig { cluster = c; hostName = "a1"; }).agentTokenFile;
      s2 = (lib.hostConfig { cluster = c; hostName = "s2"; }).tokenFile;
      s2agent = (lib.hostConfig { cluster = c; hostName = "s2"; }).agentTokenFile;
    }))
  (case "serverTaints reach every server once, never agents"
    { s1 = [ "CriticalAddonsOnly=true:NoExecute" ]; s3 = [ "CriticalAddonsOnly=true:NoExecute" ]; a2 = null; }
    (let c = cluster // { serverTaints = [ "CriticalAddonsOnly=true:NoExecute" ]; }; in {
      s1 = (lib.hostConfig { cluster = c; hostName = "s1"; }).settings."node-taint";
      s3 = (lib.hostConfig { cluster = c; hostName = "s3"; }).settings."node-taint";
      a2 = (lib.hostConfig { cluster = c; hostName = "a2"; }).settings."node-taint" or null;
    }))
  (case "IPv6 registration address is bracketed, port configurable" "https://[fd00::1]:19345"
    (lib.hostConfig { cluster = cluster // { registrationAddress = "fd00::1"; registrationPort = 19345; }; hostName = "a1"; }).settings.server)
  (case "node settings override derived values; null removes one"
    { bind = "10.0.0.2"; name = false; }
    (let c = cluster // { servers = cluster.servers // { s2 = { address = "10.0.0.2"; settings = { "bind-address" = "10.0.0.2"; "node-name" = null; }; }; }; }; in
      let s = (lib.hostConfig { cluster = c; hostName = "s2"; }).settings; in
      { bind = s."bind-address"; name = s ? "node-name"; }))
  (case "a JSON topology (no optional fields) gives the same settings" (host "a1").settings
    (lib.hostConfig { cluster = builtins.fromJSON (builtins.toJSON (removeAttrs cluster [ "settings" ])); hostName = "a1"; }).settings)

  # --- rejected topologies ----------------------------------------------------------------
  (case "an even number of servers fails with the quorum rule" true
    (anyHas "4 servers \\(s1, s2, s3, s4\\), an even number of servers.*majority \\(quorum\\).*survive 1 failure.*odd number" (errorsFor evenCluster "s1")))
  (case "two servers survive no failure" true
    (anyHas "2 servers need 2 up and so survive 0 failures, no more than 1 server would"
      (errorsFor (cluster // { servers = { inherit (cluster.servers) s1 s2; }; }) "s1")))
  (case "an even topology cannot be rendered" false
    (builtins.tryEval (lib.hostConfigFile { cluster = evenCluster; hostName = "s1"; }).yaml).success)
  (case "a host outside the topology is named" true
    (anyHas "this host, \"web9\" \\(from networking.hostName\\), is not in the topology.*s1, s2, s3.*a1, a2" (errorsFor cluster "web9")))
  (case "no servers at all" true
    (anyHas "servers is empty" (errorsFor (cluster // { servers = { }; }) "a1")))
  (case "unknown initServer" true
    (anyHas "initServer is \"s9\", which is not one of" (errorsFor (cluster // { initServer = "s9"; }) "s1")))
  (case "missing token file and registration address" [ true true ]
    (let e = errorsFor (removeAttrs cluster [ "tokenFile" "registrationAddress" ]) "s1"; in
      [ (anyHas "tokenFile is not set" e) (anyHas "registrationAddress is not set" e) ]))
  (case "registration address must be bare" true
    (anyHas "must be a bare DNS name" (errorsFor (cluster // { registrationAddress = "https://lb:9345"; }) "s1")))
  (case "duplicate addresses, duplicate names, bad taints, bad node names" [ true true true true true ]
    (let
      e = errorsFor (cluster // {
        servers = cluster.servers // { S4 = { address = "10.0.0.1"; }; s5 = { address = "10.0.0.5"; taints = [ "nope" ]; }; };
        agents = cluster.agents // { s1 = { address = "10.0.0.99"; }; };
      }) "s1";
    in [
      (anyHas "S4, s1 share the address 10.0.0.1" e)
      (anyHas "\"s1\" is listed both in servers and in agents" e)
      (anyHas "servers.s5.taints: \"nope\" is not a taint" e)
      (anyHas "\"S4\" is not a valid node name" e)
      (anyHas "5 servers" e == false)
    ]))
  (case "settings checks: unknown key, secrets, role, shape" [ true true true true true true ]
    (let
      e = errorsFor (cluster // {
        settings = { "cluster-cidr" = "10.42.0.0/16"; "no-such-key" = 1; token = "x"; "tls-san+" = [ "a" ]; };
        agents = cluster.agents // { a1 = { address = "10.0.0.11"; settings = { "tls-san" = [ "x" ]; "data-dir" = [ "a" "b" ]; }; }; };
      }) "s1";
    in [
      (anyHas "cluster.settings: unknown key \"no-such-key\"; rke2 understands: data-dir, token" e)
      (anyHas "cluster.settings.token: do not set token in settings; use services.rke2.cluster.tokenFile" e)
      (anyHas "append form" e)
      (anyHas "agents.a1.settings.tls-san: only rke2 server uses this key, but this host's role is agent" e)
      (anyHas "agents.a1.settings.data-dir: expected a single value, found list" e)
      (builtins.length e == 5)
    ]))
  (case "a path literal token file is a warning" true
    (anyHas "tokenFile is a path literal"
      (lib.clusterWarnings { cluster = cluster // { tokenFile = /run/secrets/rke2-token; }; })))
  (case "a string token file is not" [ ]
    (lib.clusterWarnings { inherit cluster; }))

  # --- rendering and settings helpers -----------------------------------------------------
  (case "YAML scalars are quoted safely, lists one item per line" ''
    # Generated from the NixOS configuration (services.rke2); do not edit here.
    data-dir: "/var/lib/x: y # not a comment"
    node-name: "yes"
    node-label:
      - "a=\"q\""
      - "b=line\nbreak"
    node-taint: []
    supervisor-port: 19345
    etcd-arg:
      - "heartbeat-interval=50"
    debug: false
  '' (lib.renderConfig "server" {
    debug = false;
    "supervisor-port" = 19345;
    "node-name" = "yes";
    "data-dir" = "/var/lib/x: y # not a comment";
    "node-label" = [ "a=\"q\"" "b=line\nbreak" ];
    "node-taint" = [ ];
    "etcd-arg" = [ "heartbeat-interval=50" ];
    "lb-server-port" = 7000;
    "write-kubeconfig" = null;
  }))
  (case "agent rendering drops server-only keys, labels may be an attribute set"
    { "node-label" = [ "a=1" "b=2" ]; "lb-server-port" = 7000; }
    (lib.settingsFor "agent" { "node-label" = { b = "2"; a = 1; }; "lb-server-port" = 7000; "tls-san" = [ "x" ]; }))
  (case "otherRoleKeys names what a role ignores" [ "cluster-cidr" "tls-san" ]
    (lib.otherRoleKeys "agent" { "tls-san" = [ ]; "cluster-cidr" = "x"; debug = true; "node-ip" = "1.2.3.4"; }))
  (case "portOf reads ints, numeric strings and defaults" [ 9345 16443 2400 ]
    (map (lib.portOf { "https-listen-port" = "16443"; "etcd-client-port" = 2400; })
      [ "supervisor-port" "https-listen-port" "etcd-client-port" ]))

  # --- firewall and command-line rendering -------------------------------------------------
  (case "the other servers' addresses, as seen from s2" [ "10.0.0.1" "10.0.0.3" ]
    (lib.peerServerAddresses { inherit cluster; hostName = "s2"; }))
  (case "etcd rules for both firewall backends, IPv4 and IPv6 apart"
    {
      nftables = "ip saddr { 10.0.0.1, 10.0.0.3 } tcp dport { 2379, 2380, 2381 } accept\nip6 saddr { fd00::2 } tcp dport { 2379, 2380, 2381 } accept";
      iptables = "iptables -A nixos-fw -p tcp -s 10.0.0.1 -m multiport --dports 2379,2380,2381 -j nixos-fw-accept\n"
        + "iptables -A nixos-fw -p tcp -s 10.0.0.3 -m multiport --dports 2379,2380,2381 -j nixos-fw-accept\n"
        + "ip6tables -A nixos-fw -p tcp -s fd00::2 -m multiport --dports 2379,2380,2381 -j nixos-fw-accept";
    }
    (lib.restrictedPortRules { addresses = [ "10.0.0.1" "fd00::2" "10.0.0.3" ]; ports = [ 2379 2380 2381 ]; }))
  (case "no peers, no rules" { nftables = ""; iptables = ""; }
    (lib.restrictedPortRules { addresses = [ ]; ports = [ 2379 ]; }))
  (case "settings as flags: spec order, one flag per list element, booleans bare"
    [ "--server=https://lb:9345" "--node-label=a=b" "--node-label=c=d" "--tls-san=x" "--debug" ]
    (lib.settingsFlags "server" { debug = true; "tls-san" = [ "x" ]; "node-label" = [ "a=b" "c=d" ]; server = "https://lb:9345"; "lb-server-port" = 1; }))
  (case "a systemd argument: quoted, quotes and backslashes escaped, % and $ doubled"
    "\"--node-label=a=\\\"b\\\" c\\\\d 100%% $$HOME\""
    (lib.systemdArg "--node-label=a=\"b\" c\\d 100% $HOME"))
]
