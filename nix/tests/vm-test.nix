# The NixOS VM test of nix/tests/vm.nix as a test module for nixpkgs' testing framework
# (nixos/lib/testing): three servers and one agent behind a fixed registration address (an
# nginx TCP load balancer), all importing the same topology value. vm.nix runs it (needs KVM);
# vm-eval.nix only evaluates it, through the framework, to check every node's configuration.
{ rke2Module ? ../module.nix
, rke2Package ? null # null: the module's default package
}:
{ pkgs, ... }:
let
  lbAddress = "192.168.1.10";
  registrationName = "rke2.test";

  # The shared topology, exactly as users write it once for every host.
  cluster = {
    registrationAddress = registrationName;
    tokenFile = "/etc/rke2/token";
    servers = {
      s1 = { address = "192.168.1.11"; };
      s2 = { address = "192.168.1.12"; };
      s3 = { address = "192.168.1.13"; };
    };
    agents = {
      a1 = { address = "192.168.1.21"; labels = { tier = "web"; }; };
    };
  };

  addressOf = name: (cluster.servers // cluster.agents).${name}.address;

  common = { lib, ... }: {
    virtualisation.memorySize = 1536;
    virtualisation.vlans = [ 1 ];
    networking.hosts.${lbAddress} = [ registrationName ];
    networking.firewall.enable = true;
  };

  # Each node sets its own address; the test driver's automatic ones would not match the
  # topology.
  pinAddress = name: address: { lib, ... }: {
    networking.primaryIPAddress = lib.mkForce address;
    networking.interfaces.eth1.ipv4.addresses = lib.mkForce [ { inherit address; prefixLength = 24; } ];
  };

  rke2Node = name: { lib, ... }: {
    imports = [ rke2Module common (pinAddress name (addressOf name)) ];
    services.rke2 = {
      enable = true;
      openFirewall = true;
      inherit cluster;
    } // lib.optionalAttrs (rke2Package != null) { package = rke2Package; };
    # A test token, shipped as a file like a secrets manager would (never in settings).
    environment.etc."rke2/token" = { text = "rke2-vm-test-token"; mode = "0600"; };
    environment.systemPackages = [ pkgs.kubectl ];
  };

  upstreams = port: pkgs.lib.concatMapStrings (s: "server ${s.address}:${toString port} max_fails=1 fail_timeout=2s;\n")
    (builtins.attrValues cluster.servers);
in
{
  name = "rke2-ha";

  nodes = {
    lb = { ... }: {
      imports = [ common (pinAddress "lb" lbAddress) ];
      networking.firewall.allowedTCPPorts = [ 9345 6443 ];
      services.nginx = {
        enable = true;
        streamConfig = ''
          upstream supervisor { ${upstreams 9345} }
          upstream apiserver { ${upstreams 6443} }
          server { listen 9345; proxy_pass supervisor; }
          server { listen 6443; proxy_pass apiserver; }
        '';
      };
    };
    s1 = rke2Node "s1";
    s2 = rke2Node "s2";
    s3 = rke2Node "s3";
    a1 = rke2Node "a1";
  };

  testScript = ''
    kubeconfig = "/etc/rancher/rke2/rke2.yaml"

    def kubectl(machine, args, server=None):
        # Through the registration address when asked (its name is in every serving cert's SANs).
        flag = f" --server https://${registrationName}:6443" if server else ""
        return machine.succeed(f"kubectl --kubeconfig {kubeconfig}{flag} {args}")

    start_all()
    lb.wait_for_unit("nginx.service")

    # Type=notify: active only once etcd, the API and the D-Bus name are ready.
    s1.wait_for_unit("rke2-server.service")
    for s in (s2, s3):
        s.wait_for_unit("rke2-server.service")
    a1.wait_for_unit("rke2-agent.service")

    with subtest("four Ready nodes"):
        s1.wait_until_succeeds(
            "test $(kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes --no-headers"
            " | awk '$2 == \"Ready\"' | wc -l) -eq 4",
            timeout=300,
        )
        print(kubectl(s1, "get nodes -o wide"))

    with subtest("labels and roles come from the topology"):
        kubectl(s1, "get node a1 -l tier=web -o name")

    with subtest("one server stopped, the cluster still answers through the registration address"):
        s1.succeed("systemctl stop rke2-server.service rke2-server.socket")
        s2.wait_until_succeeds(
            "kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml --server https://${registrationName}:6443 get nodes",
            timeout=120,
        )
        kubectl(s3, "get nodes", server=True)
        kubectl(s2, "create configmap still-writable --from-literal=ok=yes", server=True)
  '';
}
