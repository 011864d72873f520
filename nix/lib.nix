# Pure logic behind the NixOS module and the topology module: the table of config keys the
# daemon understands, validation of `settings`, rendering to the daemon's config.yaml, and the
# cluster topology -> per-host settings derivation. Builtins only (no nixpkgs), so it evaluates
# with a bare `nix-instantiate` and is tested for real in nix/tests/.
let
  inherit (builtins)
    all attrNames concatLists concatStringsSep elem elemAt filter foldl' genList head isAttrs
    isBool isFloat isInt isList isString length listToAttrs map match sort stringLength toJSON
    typeOf;

  # Mirror of src/config/spec.rs SETTINGS (key, roles, shape), in the same order so rendered
  # files read like `rke2 --help`. tests/nix_eval.rs compares the two, so they cannot drift.
  spec = [
    { key = "data-dir"; roles = "both"; shape = "scalar"; }
    { key = "token"; roles = "both"; shape = "scalar"; }
    { key = "token-file"; roles = "both"; shape = "scalar"; }
    { key = "server"; roles = "both"; shape = "scalar"; }
    { key = "node-name"; roles = "both"; shape = "scalar"; }
    { key = "node-ip"; roles = "both"; shape = "commaList"; }
    { key = "node-label"; roles = "both"; shape = "list"; }
    { key = "node-taint"; roles = "both"; shape = "list"; }
    { key = "node-heartbeat-interval"; roles = "both"; shape = "scalar"; }
    { key = "node-password-file"; roles = "agent"; shape = "scalar"; }
    { key = "agent-token"; roles = "server"; shape = "scalar"; }
    { key = "agent-token-file"; roles = "server"; shape = "scalar"; }
    { key = "tls-san"; roles = "server"; shape = "commaList"; }
    { key = "bind-address"; roles = "server"; shape = "scalar"; }
    { key = "advertise-address"; roles = "server"; shape = "scalar"; }
    { key = "supervisor-port"; roles = "server"; shape = "scalar"; }
    { key = "https-listen-port"; roles = "server"; shape = "scalar"; }
    { key = "etcd-client-port"; roles = "server"; shape = "scalar"; }
    { key = "etcd-peer-port"; roles = "server"; shape = "scalar"; }
    { key = "etcd-metrics-port"; roles = "server"; shape = "scalar"; }
    { key = "etcd-bin"; roles = "server"; shape = "scalar"; }
    { key = "etcd-arg"; roles = "server"; shape = "list"; }
    { key = "write-kubeconfig"; roles = "server"; shape = "scalar"; }
    { key = "write-kubeconfig-mode"; roles = "server"; shape = "scalar"; }
    { key = "cluster-cidr"; roles = "server"; shape = "scalar"; }
    { key = "service-cidr"; roles = "server"; shape = "scalar"; }
    { key = "service-node-port-range"; roles = "server"; shape = "scalar"; }
    { key = "cluster-dns"; roles = "server"; shape = "scalar"; }
    { key = "cluster-domain"; roles = "server"; shape = "scalar"; }
    { key = "node-monitor-grace-period"; roles = "server"; shape = "scalar"; }
    { key = "node-cidr-mask-size"; roles = "server"; shape = "scalar"; }
    { key = "event-ttl"; roles = "server"; shape = "scalar"; }
    { key = "watch-cache-max-events"; roles = "server"; shape = "scalar"; }
    { key = "cluster-reset"; roles = "server"; shape = "bool"; }
    { key = "cluster-reset-restore-path"; roles = "server"; shape = "scalar"; }
    { key = "etcd-disable-snapshots"; roles = "server"; shape = "bool"; }
    { key = "etcd-snapshot-name"; roles = "server"; shape = "scalar"; }
    { key = "etcd-snapshot-schedule-cron"; roles = "server"; shape = "scalar"; }
    { key = "etcd-snapshot-retention"; roles = "server"; shape = "scalar"; }
    { key = "etcd-snapshot-dir"; roles = "server"; shape = "scalar"; }
    { key = "etcd-snapshot-compress"; roles = "server"; shape = "bool"; }
    { key = "secrets-encryption"; roles = "server"; shape = "bool"; }
    { key = "secrets-encryption-provider"; roles = "server"; shape = "scalar"; }
    { key = "leaf-cert-validity"; roles = "server"; shape = "scalar"; }
    { key = "lb-server-port"; roles = "agent"; shape = "scalar"; }
    { key = "lb-bind-address"; roles = "agent"; shape = "scalar"; }
    { key = "container-runtime-endpoint"; roles = "both"; shape = "scalar"; }
    { key = "containerd-run-dir"; roles = "both"; shape = "scalar"; }
    { key = "private-registry"; roles = "both"; shape = "scalar"; }
    { key = "system-default-registry"; roles = "both"; shape = "scalar"; }
    { key = "pause-image"; roles = "both"; shape = "scalar"; }
    { key = "default-runtime"; roles = "both"; shape = "scalar"; }
    { key = "cni"; roles = "both"; shape = "scalar"; }
    { key = "log-format"; roles = "both"; shape = "scalar"; }
    { key = "debug"; roles = "both"; shape = "bool"; }
  ];

  specByKey = listToAttrs (map (s: { name = s.key; value = s; }) spec);
  specIndex = listToAttrs (genList (i: { name = (elemAt spec i).key; value = i; }) (length spec));
  knownKeys = map (s: s.key) spec;

  roleAccepts = role: key: let r = specByKey.${key}.roles; in r == "both" || r == role;

  # Keys that carry a secret or point at one. Inline secrets would land in the world-readable
  # Nix store; file keys would override the LoadCredential path the module passes in RKE2_*.
  secretKeys = {
    token = "tokenFile";
    "token-file" = "tokenFile";
    "agent-token" = "agentTokenFile";
    "agent-token-file" = "agentTokenFile";
  };

  # The daemon's default ports; the firewall and the socket-activation check read the
  # effective value from settings when one is set.
  defaultPorts = {
    "supervisor-port" = 9345;
    "https-listen-port" = 6443;
    "etcd-client-port" = 2379;
    "etcd-peer-port" = 2380;
    "etcd-metrics-port" = 2381;
  };

  quote = toJSON;
  joinNames = names: concatStringsSep ", " names;
  orNone = names: if names == [ ] then "none" else joinNames names;

  # --- settings values -------------------------------------------------------------------

  # `toString` on a path gives its absolute name without copying it into the store (string
  # interpolation would copy it).
  scalarString = v:
    if typeOf v == "path" then toString v
    else if isBool v then (if v then "true" else "false")
    else if isInt v || isFloat v then toJSON v
    else v;

  isScalar = v: isString v || isBool v || isInt v || isFloat v || typeOf v == "path";

  # Labels may be written as an attribute set; the daemon takes `key=value` strings.
  labelList = attrs: map (k: "${k}=${scalarString attrs.${k}}") (attrNames attrs);

  # Turns one user value into what the renderer takes: a scalar or a list of scalars.
  normalizeValue = key: v:
    if key == "node-label" && isAttrs v then labelList v
    else if typeOf v == "path" then toString v
    else v;

  # Errors in one `settings` attribute set. `where` names the option for the messages.
  # `tokenOptions` is where the token files belong instead (the module or the topology).
  settingsErrors = { where, settings, role ? null, tokenOptions ? "services.rke2" }:
    concatLists (map
      (key:
        let
          v = settings.${key};
          s = specByKey.${key};
          at = "${where}.${key}";
        in
        if v == null then [ ]
        else if match ".*\\+" key != null then
          [ "${where}: key ${quote key}: the `key+` append form is for hand-written drop-ins; in Nix, merge lists with the module system instead" ]
        else if !(specByKey ? ${key}) then
          [ "${where}: unknown key ${quote key}; rke2 understands: ${joinNames knownKeys}" ]
        else if secretKeys ? ${key} then
          [ "${at}: do not set ${key} in settings; use ${tokenOptions}.${secretKeys.${key}} (a path string, passed to the service with LoadCredential so the secret never enters the Nix store)" ]
        else if role != null && !(roleAccepts role key) then
          [ "${at}: only rke2 ${s.roles} uses this key, but this host's role is ${role}" ]
        else if s.shape == "bool" && !(isBool v) then
          [ "${at}: expected true or false, found ${typeOf v}" ]
        else if s.shape == "scalar" && !(isScalar v) then
          [ "${at}: expected a single value, found ${typeOf v}" ]
        else if (s.shape == "list" || s.shape == "commaList")
          && !(isScalar v || (isList v && all isScalar v) || (key == "node-label" && isAttrs v)) then
          [ "${at}: expected a list of strings${if key == "node-label" then " or an attribute set of labels" else ""}" ]
        else [ ])
      (attrNames settings));

  # Keys of `settings` that the other role would use: dropped from the rendered file (the
  # daemon would only warn about them) and reported as warnings by the module.
  otherRoleKeys = role: settings:
    filter (k: specByKey ? ${k} && settings.${k} != null && !(roleAccepts role k)) (attrNames settings);

  # The settings that go into `role`'s config.yaml: known keys for that role, nulls removed
  # (null is how a user unsets a derived value), values normalised.
  settingsFor = role: settings:
    listToAttrs (map (k: { name = k; value = normalizeValue k settings.${k}; })
      (filter (k: settings.${k} != null && specByKey ? ${k} && roleAccepts role k)
        (attrNames settings)));

  # --- YAML ------------------------------------------------------------------------------

  # One top-level key per line at column 0 (the daemon reports errors by the line of the
  # key); strings as JSON double-quoted scalars, which YAML reads verbatim, so no value can
  # be mistaken for a number, boolean, comment or nested structure.
  yamlScalar = v:
    if isBool v then (if v then "true" else "false")
    else if isInt v || isFloat v then toJSON v
    else quote (scalarString v);

  yamlKey = k: if match "[a-z0-9][a-z0-9.-]*" k != null then k else quote k;

  yamlEntry = k: v:
    if isList v then
      (if v == [ ] then "${yamlKey k}: []\n"
      else "${yamlKey k}:\n" + concatStringsSep "" (map (x: "  - ${yamlScalar x}\n") v))
    else "${yamlKey k}: ${yamlScalar v}\n";

  # Spec order first, then anything else by name (only reachable when rendering unchecked
  # settings).
  orderKeys = keys:
    let
      rank = k: if specIndex ? ${k} then specIndex.${k} else length spec;
    in
    sort (a: b: let ra = rank a; rb = rank b; in if ra == rb then a < b else ra < rb) keys;

  toYAML = settings:
    concatStringsSep "" (map (k: yamlEntry k settings.${k})
      (orderKeys (filter (k: settings.${k} != null) (attrNames settings))));

  header = "# Generated from the NixOS configuration (services.rke2); do not edit here.\n";

  # The config.yaml for `role`. Callers validate first (settingsErrors); this only filters.
  renderConfig = role: settings: header + toYAML (settingsFor role settings);

  # --- topology --------------------------------------------------------------------------

  # Fills what a topology written as a plain Nix/JSON value may leave out, so the functions
  # below see the same shape as the NixOS option's (whose submodules have these defaults).
  normalizeNode = n: {
    address = n.address or null;
    taints = n.taints or [ ];
    labels = n.labels or { };
    settings = n.settings or { };
  };

  normalizeCluster = c: {
    registrationAddress = c.registrationAddress or null;
    registrationPort = c.registrationPort or 9345;
    tokenFile = c.tokenFile or null;
    agentTokenFile = c.agentTokenFile or null;
    initServer = c.initServer or null;
    serverTaints = c.serverTaints or [ ];
    settings = c.settings or { };
    servers = builtins.mapAttrs (_: normalizeNode) (c.servers or { });
    agents = builtins.mapAttrs (_: normalizeNode) (c.agents or { });
  };

  # `attrNames` sorts, which is the documented choice of the first server.
  initServerOf = c:
    if c.initServer != null then c.initServer
    else if c.servers == { } then null
    else head (attrNames c.servers);

  # clusterErrors rejects brackets in registrationAddress, so any ':' means a bare IPv6 literal.
  bracketHost = h: if match ".*:.*" h != null then "[${h}]" else h;

  serverUrl = c: "https://${bracketHost c.registrationAddress}:${toString c.registrationPort}";

  # Kubernetes node names: lower-case RFC 1123 subdomains.
  validNodeName = n:
    stringLength n <= 253
    && match "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*" n != null;

  validTaint = t: isString t && match "[^=:]+(=[^:]*)?:(NoSchedule|PreferNoSchedule|NoExecute)" t != null;

  dedupe = xs: foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] xs;

  quorumMessage = names:
    let
      n = length names;
      q = n / 2 + 1;
      tolerated = n - q;
    in
    "services.rke2.cluster.servers lists ${toString n} servers (${joinNames names}), an even number of servers. "
    + "etcd only works while a majority (quorum) of servers is up: ${toString n} servers need ${toString q} up and so survive "
    + "${toString tolerated} failure${if tolerated == 1 then "" else "s"}, no more than ${toString (n - 1)} server${if n - 1 == 1 then "" else "s"} would, "
    + "so the extra server only adds one more machine that can fail. "
    + "Use an odd number of servers (1, 3, 5, ...).";

  isStringLike = v: isString v || typeOf v == "path";

  # Everything wrong with `cluster` as seen from host `hostName`, as assertion messages.
  # `hostNameFrom` says where the host name came from, for the not-in-topology message.
  clusterErrors = { cluster, hostName, hostNameFrom ? "networking.hostName" }:
    let
      c = normalizeCluster cluster;
      serverNames = attrNames c.servers;
      agentNames = attrNames c.agents;
      n = length serverNames;
      nodes = map (name: { inherit name; role = "server"; node = c.servers.${name}; where = "services.rke2.cluster.servers.${name}"; }) serverNames
        ++ map (name: { inherit name; role = "agent"; node = c.agents.${name}; where = "services.rke2.cluster.agents.${name}"; }) agentNames;
      addressed = filter (e: isString e.node.address && e.node.address != "") nodes;
      duplicateAddress = concatLists (map
        (a: let same = filter (b: b.node.address == a.node.address) addressed; in
          if length same > 1 && (head same).name == a.name && (head same).role == a.role
          then [ "services.rke2.cluster: ${joinNames (map (b: b.name) same)} share the address ${a.node.address}; every node needs its own address" ]
          else [ ])
        addressed);
      both = filter (name: c.agents ? ${name}) serverNames;
      init = initServerOf c;
    in
    (if !(isString c.registrationAddress) || c.registrationAddress == "" then
      [ "services.rke2.cluster.registrationAddress is not set: give the fixed registration address (DNS name or IP of the load balancer, VIP or round-robin name) that nodes join through" ]
    else if match "[^] /:@[]+|[0-9a-fA-F:.]+" c.registrationAddress == null then
      [ "services.rke2.cluster.registrationAddress ${quote c.registrationAddress} must be a bare DNS name or IP address (no scheme, port or path)" ]
    else [ ])
    ++ (if !(isStringLike c.tokenFile) || toString c.tokenFile == "" then
      [ "services.rke2.cluster.tokenFile is not set: every node except the first server needs the cluster token; give the path of a file holding it (e.g. \"/run/secrets/rke2-token\"), kept out of the Nix store" ]
    else [ ])
    ++ (if !(isInt c.registrationPort) || c.registrationPort < 1 || c.registrationPort > 65535 then
      [ "services.rke2.cluster.registrationPort must be a port number (1-65535)" ]
    else [ ])
    ++ (if n == 0 then
      [ "services.rke2.cluster.servers is empty: a cluster needs at least one server (an odd number: 1, 3, 5, ...)" ]
    else if n / 2 * 2 == n then [ (quorumMessage serverNames) ]
    else [ ])
    ++ (if c.initServer != null && !(c.servers ? ${c.initServer}) then
      [ "services.rke2.cluster.initServer is ${quote c.initServer}, which is not one of services.rke2.cluster.servers (${orNone serverNames})" ]
    else [ ])
    ++ map (name: "services.rke2.cluster: ${quote name} is listed both in servers and in agents; a node has one role") both
    ++ concatLists (map
      (e:
        (if !(validNodeName e.name) then
          [ "${e.where}: ${quote e.name} is not a valid node name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)" ]
        else [ ])
        ++ (if !(isString e.node.address) || e.node.address == "" then
          [ "${e.where}.address is not set: give the node's IP address (it becomes node-ip)" ]
        else [ ])
        ++ map (t: "${e.where}.taints: ${quote t} is not a taint; expected key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute")
          (filter (t: !(validTaint t)) e.node.taints)
        ++ (if !(isAttrs e.node.labels) then
          [ "${e.where}.labels must be an attribute set of label names to values" ]
        else [ ])
        ++ settingsErrors { where = "${e.where}.settings"; settings = e.node.settings; role = e.role; tokenOptions = "services.rke2.cluster"; })
      nodes)
    ++ map (t: "services.rke2.cluster.serverTaints: ${quote t} is not a taint; expected key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute")
      (filter (t: !(validTaint t)) c.serverTaints)
    ++ settingsErrors { where = "services.rke2.cluster.settings"; settings = c.settings; tokenOptions = "services.rke2.cluster"; }
    ++ duplicateAddress
    ++ (if !(c.servers ? ${hostName}) && !(c.agents ? ${hostName}) then
      [ "services.rke2.cluster: this host, ${quote hostName} (from ${hostNameFrom}), is not in the topology: it is neither one of services.rke2.cluster.servers (${orNone serverNames}) nor one of services.rke2.cluster.agents (${orNone agentNames}). Add it there, or set services.rke2.hostName to its name in the topology." ]
    else [ ]);

  # Non-fatal findings, as warning messages.
  clusterWarnings = { cluster }:
    let c = normalizeCluster cluster; in
    concatLists (map
      (opt:
        if typeOf c.${opt} == "path" then
          [ "services.rke2.cluster.${opt} is a path literal (${toString c.${opt}}); write it as a string (\"${toString c.${opt}}\") so the secret can never be copied into the world-readable Nix store" ]
        else [ ])
      [ "tokenFile" "agentTokenFile" ]);

  # What host `hostName` runs, derived from the shared topology. Call only when clusterErrors
  # is empty. `settings` holds no secrets: the token files are returned apart so the module
  # can pass them with LoadCredential (or hostConfigFile can add token-file for standalone use).
  hostConfig = { cluster, hostName }:
    let
      c = normalizeCluster cluster;
      isServer = c.servers ? ${hostName};
      role = if isServer then "server" else "agent";
      node = if isServer then c.servers.${hostName} else c.agents.${hostName};
      isInitServer = isServer && initServerOf c == hostName;
      taints = dedupe ((if isServer then c.serverTaints else [ ]) ++ node.taints);
      labels = labelList node.labels;
      derived =
        { "node-name" = hostName; "node-ip" = [ node.address ]; }
        // (if isInitServer then { } else { server = serverUrl c; })
        // (if isServer then { "tls-san" = [ c.registrationAddress ]; } else { })
        // (if taints == [ ] then { } else { "node-taint" = taints; })
        // (if labels == [ ] then { } else { "node-label" = labels; });
      str = v: if v == null then null else toString v;
    in
    {
      inherit role isInitServer;
      # Cluster-wide settings apply where the role uses them; the topology's derived values
      # override them; a node's own settings override both.
      settings = settingsFor role (c.settings // derived // node.settings);
      # Agents join with the agent token when the cluster has one, as RKE2 agents do.
      tokenFile =
        if isServer || c.agentTokenFile == null then str c.tokenFile else str c.agentTokenFile;
      agentTokenFile = if isServer then str c.agentTokenFile else null;
    };

  # A standalone config.yaml for `hostName` (tests, non-NixOS hosts): hostConfig's settings
  # plus token-file/agent-token-file pointing at the topology's token files. Fails with every
  # topology error when there are any.
  hostConfigFile = { cluster, hostName, withTokenFile ? true }:
    let
      errors = clusterErrors { inherit cluster hostName; hostNameFrom = "the hostName argument"; };
      h = hostConfig { inherit cluster hostName; };
      tokens =
        (if withTokenFile && h.tokenFile != null then { "token-file" = h.tokenFile; } else { })
        // (if withTokenFile && h.agentTokenFile != null then { "agent-token-file" = h.agentTokenFile; } else { });
      settings = h.settings // tokens;
    in
    if errors != [ ] then throw ("invalid rke2 topology:\n- " + concatStringsSep "\n- " errors)
    else {
      inherit (h) role isInitServer;
      inherit settings;
      yaml = renderConfig h.role settings;
    };

  # hostConfigFile for every node of the topology, by name.
  clusterConfigFiles = { cluster, withTokenFile ? true }:
    let c = normalizeCluster cluster; in
    listToAttrs (map (name: { inherit name; value = hostConfigFile { inherit cluster withTokenFile; hostName = name; }; })
      (attrNames c.servers ++ attrNames c.agents));

  # The other servers' addresses, from host `hostName`'s point of view: the only hosts etcd's
  # client, peer and metrics ports need to accept. Call only when clusterErrors is empty.
  peerServerAddresses = { cluster, hostName }:
    let c = normalizeCluster cluster; in
    map (n: c.servers.${n}.address) (filter (n: n != hostName) (attrNames c.servers));

  isIPv6 = a: match ".*:.*" a != null;

  # Firewall rules letting only `addresses` reach TCP `ports`, for both NixOS firewall
  # backends: nftables rules for networking.firewall.extraInputRules, and iptables/ip6tables
  # commands for networking.firewall.extraCommands (run into the nixos-fw chain, which the
  # firewall service rebuilds on every start, so nothing needs removing on stop).
  restrictedPortRules = { addresses, ports }:
    let
      v4 = filter (a: !(isIPv6 a)) addresses;
      v6 = filter isIPv6 addresses;
      portList = concatStringsSep ", " (map toString ports);
      portCsv = concatStringsSep "," (map toString ports);
      nft = family: addrs:
        if addrs == [ ] then [ ]
        else [ "${family} saddr { ${concatStringsSep ", " addrs} } tcp dport { ${portList} } accept" ];
      ipt = cmd: a: "${cmd} -A nixos-fw -p tcp -s ${a} -m multiport --dports ${portCsv} -j nixos-fw-accept";
    in
    {
      nftables = concatStringsSep "\n" (nft "ip" v4 ++ nft "ip6" v6);
      iptables = concatStringsSep "\n" (map (ipt "iptables") v4 ++ map (ipt "ip6tables") v6);
    };

  # settings as command-line arguments (`--key=value`, one per list element), for when the
  # daemon must read a config file the module does not write (nixpkgs' configPath): flags
  # outrank that file, as nixpkgs' module's flags do. Unescaped; see systemdArg.
  settingsFlags = role: settings:
    let
      s = settingsFor role settings;
      flag = k: v:
        if isBool v then [ (if v then "--${k}" else "--${k}=false") ]
        else if isList v then map (x: "--${k}=${scalarString x}") v
        else [ "--${k}=${scalarString v}" ];
    in
    concatLists (map (k: flag k s.${k}) (orderKeys (attrNames s)));

  # One argument of a systemd Exec line: double-quoted, with the characters systemd treats
  # specially inside quotes (backslash, quote) escaped and specifiers/variables (%, $) doubled.
  systemdArg = a:
    "\"" + builtins.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] a + "\"";

  # The effective port for a settings key (ints or numeric strings), for firewall rules.
  portOf = settings: key:
    let v = settings.${key} or null; in
    if v == null then defaultPorts.${key}
    else if isInt v then v
    else builtins.fromJSON (scalarString v);
in
{
  inherit spec knownKeys roleAccepts settingsErrors otherRoleKeys settingsFor toYAML renderConfig
    normalizeCluster initServerOf serverUrl clusterErrors clusterWarnings hostConfig
    hostConfigFile clusterConfigFiles defaultPorts portOf peerServerAddresses restrictedPortRules
    settingsFlags systemdArg;
}
