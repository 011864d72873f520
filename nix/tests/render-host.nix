# Entry point for rendering per-host config.yaml files from a topology without NixOS, e.g. for
# the HA cluster test or a non-NixOS host. The topology is the value of services.rke2.cluster,
# given as a .nix or .json file or as a JSON string:
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/render-host.nix \
#     --argstr topologyFile /abs/cluster.nix --argstr hostName s2
#     -> { "role": "server", "isInitServer": false, "settings": {...}, "yaml": "..." }
#   ... --argstr topologyJson '{"registrationAddress": ...}'   (instead of topologyFile)
#   ... without hostName: { "<name>": { role, isInitServer, settings, yaml }, ... } for every node
#   ... --arg withTokenFile false: leave token-file out (the NixOS module passes it in RKE2_TOKEN_FILE)
#
# An invalid topology (even server count, unknown host, ...) fails with every problem listed.
{ topologyFile ? null, topologyJson ? null, hostName ? null, withTokenFile ? true }:
let
  lib = import ../lib.nix;
  file = toString topologyFile;
  cluster =
    if topologyJson != null then builtins.fromJSON topologyJson
    else if topologyFile == null then throw "render-host.nix: pass --argstr topologyFile <path> or --argstr topologyJson <json>"
    else if builtins.match ".*\\.json" file != null then builtins.fromJSON (builtins.readFile file)
    else import topologyFile;
in
if hostName == null then lib.clusterConfigFiles { inherit cluster withTokenFile; }
else lib.hostConfigFile { inherit cluster hostName withTokenFile; }
