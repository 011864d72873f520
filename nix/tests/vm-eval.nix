# Evaluates the VM test (vm-test.nix) through nixpkgs' real testing framework
# (nixos/lib/testing: evalTest, the nodes/driver/network modules, qemu-vm.nix per node) without
# running it (no KVM here), and checks every node's configuration: the topology gives each its
# role, and nothing fails or warns. Run by tests/nix_eval.rs like module-eval.nix:
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/vm-eval.nix --argstr shared <...>
{ shared, nixos ? null, lib ? null }:
let
  h = import ./nixos-harness.nix { inherit shared nixos lib; };
  l = h.lib;
  testing = import "${h.nixos}/lib/testing" { lib = l; };
  # The few attributes the test instrumentation reads that stub-pkgs.nix has no fake for.
  pkgs = h.pkgs // {
    inherit (h) kubectl;
    qemu_test = h.pkgs.qemu_test // { ga = h.pkgs.qemu_test; };
    writers = h.pkgs.writers // { writeNginxConfig = h.pkgs.writeText; };
    nginxStable = let n = h.pkgs.nginxStable // { modules = [ ]; override = _: n; }; in n;
  };
  test = testing.evalTest {
    imports = [ (import ./vm-test.nix { }) ];
    hostPkgs = pkgs;
    node.pkgs = pkgs;
  };
  inherit (test.config) nodes;
  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  rke2Units = attrs: builtins.filter (l.hasPrefix "rke2") (builtins.attrNames attrs);
  node = name: let c = nodes.${name}; in {
    role = if c.services.rke2.enable then c.services.rke2.role else null;
    assertions = failed c;
    warnings = builtins.filter (l.hasInfix "rke2") c.warnings;
    services = rke2Units c.systemd.services;
    address = c.networking.primaryIPAddress;
  };
  case = name: expected: actual: { inherit name expected actual; };
  server = address: { role = "server"; assertions = [ ]; warnings = [ ]; services = [ "rke2-server" ]; inherit address; };
  etcdFrom = rke2Lib: addresses: (rke2Lib.restrictedPortRules { inherit addresses; ports = [ 2379 2380 2381 ]; }).iptables;
  rke2Lib = import ../lib.nix;
in
[
  (case "the framework knows the test's nodes" [ "a1" "lb" "s1" "s2" "s3" ] (builtins.attrNames nodes))
  (case "s1, s2, s3 are servers, with nothing failing or warning" [ (server "192.168.1.11") (server "192.168.1.12") (server "192.168.1.13") ]
    (map node [ "s1" "s2" "s3" ]))
  (case "a1 is an agent" { role = "agent"; assertions = [ ]; warnings = [ ]; services = [ "rke2-agent" ]; address = "192.168.1.21"; } (node "a1"))
  (case "the load balancer runs no rke2" { role = null; assertions = [ ]; warnings = [ ]; services = [ ]; address = "192.168.1.10"; } (node "lb"))
  (case "s1 is the first server (no server URL); a1 joins through the registration address" [ false true ]
    (map (n: l.hasInfix "server: \"https://rke2.test:9345\"" nodes.${n}.environment.etc."rancher/rke2/config.yaml".text) [ "s1" "a1" ]))
  (case "s2 lets only s1 and s3 reach etcd" true
    (l.hasInfix (etcdFrom rke2Lib [ "192.168.1.11" "192.168.1.13" ]) nodes.s2.networking.firewall.extraCommands))
  (case "the token file every node needs is provided before boot" [ true true true true ]
    (map (n: nodes.${n}.environment.etc ? "rke2/token") [ "s1" "s2" "s3" "a1" ]))
  (case "the test script is the framework's, with the kubectl checks" true
    (l.hasInfix "four Ready nodes" test.config.testScript))
]
