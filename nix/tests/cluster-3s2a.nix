# Test fixture: the 3-server + 2-agent topology of the README, written exactly as a user's
# shared `cluster.nix` would be (the value of services.rke2.cluster).
{
  registrationAddress = "rke2.example.internal";
  tokenFile = "/run/secrets/rke2-token";
  servers = {
    s1 = { address = "10.0.0.1"; };
    s2 = { address = "10.0.0.2"; };
    s3 = {
      address = "10.0.0.3";
      taints = [ "CriticalAddonsOnly=true:NoExecute" ];
    };
  };
  agents = {
    a1 = {
      address = "10.0.0.11";
      labels = { tier = "web"; };
      taints = [ "dedicated=web:NoSchedule" ];
    };
    a2 = {
      address = "10.0.0.12";
      labels = { tier = "batch"; "example.com/zone" = "b"; };
    };
  };
  # Cluster-wide settings: server-only keys reach servers only.
  settings = {
    cluster-cidr = "10.42.0.0/16";
    node-monitor-grace-period = "40s";
  };
}
