//! The nftables ruleset of the service proxy (docs/service-proxy.md), after kube-proxy's
//! nftables mode: one `inet` table per node, verdict maps keyed by `ip . proto . port` that
//! jump to one chain per service port, where one `dnat … numgen random mod N map` rule spreads
//! new connections over the endpoints (endpoint chains only for `sessionAffinity: ClientIP`,
//! with per-endpoint timeout sets), a set of endpoint addresses for hairpin masquerading, the
//! traffic policies `Local`, and sets of service ports without endpoints that are rejected. A
//! sync is one `nft -f -` transaction: the whole table the first time (or after a failure),
//! else only the difference to the last ruleset that was applied.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::model::ServicePort;

/// The packet mark bit asking `nat-postrouting` to masquerade (kube-proxy's bit).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The table of a node: `rke2-proxy-<node name>-<8 hex digits>`, the digits a hash (FNV-1a) of
/// the data directory, so nodes sharing one network namespace (test clusters on loopback
/// addresses, often with the same node names) each keep their own, and a node finds its table
/// again after a restart.
pub fn table_name(node: &str, data_dir: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = data_dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("rke2-proxy-{node}-{hash:08x}")
}

/// The fixed part of a node's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    /// The node's own addresses: NodePorts answer on these only.
    pub node_ips: Vec<IpAddr>,
    /// The cluster (pod) CIDRs: cluster-IP traffic from elsewhere is masqueraded. Without
    /// them every service connection is.
    pub cluster_cidrs: Vec<IpNet>,
}

/// The per-service part of the table, compared between syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name -> its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Set name -> its declaration body (the affinity sets).
    pub sets: BTreeMap<String, String>,
    /// (map or set, element key) -> verdict (`None` for set elements).
    pub elements: BTreeMap<(&'static str, String), Option<String>>,
}

fn family(ip: &IpAddr) -> (&'static str, char) {
    if ip.is_ipv4() {
        ("ip", '4')
    } else {
        ("ip6", '6')
    }
}

/// A chain-name-safe spelling of an address (nft identifiers have no `:`).
fn ident_ip(ip: &IpAddr) -> String {
    ip.to_string().replace(':', "-")
}

fn addr(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    }
}

fn port_id(p: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        p.namespace,
        p.name,
        p.protocol.nft(),
        p.port_name
    )
}

/// Renders the per-service part for `ports`.
///
/// Service ports with endpoints get one chain, `svc-…` (the ClusterIP entry), and NodePorts one
/// more, `ext-…`; endpoints are spread by a single `dnat … to numgen random mod N map { … }`
/// rule. Endpoint chains exist only for `sessionAffinity: ClientIP`, where each endpoint must
/// record its clients. Few chains matter: `nft` lists every chain of the namespace before each
/// transaction that adds rules or verdict elements (docs/service-proxy.md, "Syncing").
pub fn render(spec: &TableSpec, ports: &[ServicePort]) -> Ruleset {
    let mut r = Ruleset::default();
    for p in ports {
        let (fam, v) = family(&p.cluster_ip);
        let id = format!("{}{v}", port_id(p));
        let key = format!("{} . {} . {}", p.cluster_ip, p.protocol.nft(), p.port);
        let node_port_key = p.node_port.map(|np| format!("{} . {np}", p.protocol.nft()));
        if p.endpoints.is_empty() {
            r.elements.insert((no_endpoints(v), key), None);
            if let Some(k) = node_port_key {
                r.elements.insert((no_endpoint_node_ports(v), k), None);
            }
            continue;
        }
        // An endpoint reaching itself through the service is masqueraded (nat-postrouting);
        // one on another node never sends from this one.
        for e in p
            .endpoints
            .iter()
            .filter(|e| p.remote_endpoints.binary_search(e).is_err())
        {
            r.elements
                .insert((hairpin(v), format!("{0} . {0}", e.ip())), None);
        }
        if let Some(timeout) = p.affinity {
            let addr_type = if p.cluster_ip.is_ipv4() {
                "ipv4_addr"
            } else {
                "ipv6_addr"
            };
            for e in &p.endpoints {
                let set = affinity_set(&id, e);
                r.sets.insert(
                    set.clone(),
                    format!("type {addr_type}; flags dynamic,timeout; timeout {timeout}s;"),
                );
                r.chains.insert(
                    endpoint_chain(&id, e),
                    vec![
                        format!("update @{set} {{ {fam} saddr }}"),
                        format!(
                            "meta l4proto {} dnat {fam} to {}:{}",
                            p.protocol.nft(),
                            addr(&e.ip()),
                            e.port()
                        ),
                    ],
                );
            }
        }
        let cidrs: Vec<String> = spec
            .cluster_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == p.cluster_ip.is_ipv4())
            .map(|c| c.to_string())
            .collect();
        let cidrs = (!cidrs.is_empty()).then(|| format!("{{ {} }}", cidrs.join(", ")));

        // ClusterIP: connections from outside the cluster CIDR are masqueraded so replies come
        // back through this node; `internalTrafficPolicy: Local` keeps to this node's endpoints
        // and drops when it has none, as kube-proxy does.
        let internal = if p.internal_local {
            &p.local_endpoints
        } else {
            &p.endpoints
        };
        if internal.is_empty() {
            r.elements
                .insert((cluster_ips(v), key), Some("drop".to_string()));
        } else {
            let svc_chain = format!("svc-{id}");
            let mut rules = vec![match &cidrs {
                Some(c) => format!("{fam} saddr != {c} jump mark-for-masquerade"),
                None => "jump mark-for-masquerade".to_string(),
            }];
            balance(&mut rules, p, &id, "", internal);
            r.chains.insert(svc_chain.clone(), rules);
            r.elements
                .insert((cluster_ips(v), key), Some(format!("goto {svc_chain}")));
        }

        // NodePort: masqueraded and spread over every endpoint; with `externalTrafficPolicy:
        // Local`, clients other than pods and this node keep their source address and reach
        // this node's endpoints only, dropped when there are none (kube-proxy's behaviour,
        // pods and the node itself still reach every endpoint).
        if let Some(k) = node_port_key {
            let ext = format!("ext-{id}");
            let mut rules = Vec::new();
            if p.external_local {
                rules.push("fib saddr type local jump mark-for-masquerade".to_string());
                balance(&mut rules, p, &id, "fib saddr type local ", &p.endpoints);
                if let Some(c) = &cidrs {
                    balance(
                        &mut rules,
                        p,
                        &id,
                        &format!("{fam} saddr {c} "),
                        &p.endpoints,
                    );
                }
                if p.local_endpoints.is_empty() {
                    rules.push("drop".to_string());
                } else {
                    balance(&mut rules, p, &id, "", &p.local_endpoints);
                }
            } else {
                rules.push("jump mark-for-masquerade".to_string());
                balance(&mut rules, p, &id, "", &p.endpoints);
            }
            r.chains.insert(ext.clone(), rules);
            r.elements
                .insert((node_ports(v), k), Some(format!("goto {ext}")));
        }
    }
    r
}

/// Appends the rules spreading new connections of `p` over `eps` (not empty), each starting
/// with `cond`: one `dnat` through a `numgen` map; with ClientIP affinity, first a lookup of
/// each endpoint's affinity set, then a `numgen` verdict map over the endpoint chains.
fn balance(rules: &mut Vec<String>, p: &ServicePort, id: &str, cond: &str, eps: &[SocketAddr]) {
    let (fam, _) = family(&p.cluster_ip);
    let n = eps.len();
    if p.affinity.is_some() {
        for e in eps {
            rules.push(format!(
                "{cond}{fam} saddr @{} goto {}",
                affinity_set(id, e),
                endpoint_chain(id, e)
            ));
        }
        let mut vmap = String::new();
        for (i, e) in eps.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(vmap, "{sep}{i} : goto {}", endpoint_chain(id, e));
        }
        rules.push(format!("{cond}numgen random mod {n} vmap {{ {vmap} }}"));
    } else {
        let mut map = String::new();
        for (i, e) in eps.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(map, "{sep}{i} : {} . {}", e.ip(), e.port());
        }
        rules.push(format!(
            "{cond}meta l4proto {} dnat {fam} addr . port to numgen random mod {n} map {{ {map} }}",
            p.protocol.nft()
        ));
    }
}

fn endpoint_chain(id: &str, e: &SocketAddr) -> String {
    format!("ep-{id}__{}/{}", ident_ip(&e.ip()), e.port())
}

fn affinity_set(id: &str, e: &SocketAddr) -> String {
    format!("aff-{id}__{}/{}", ident_ip(&e.ip()), e.port())
}

fn cluster_ips(v: char) -> &'static str {
    if v == '4' {
        "cluster-ips4"
    } else {
        "cluster-ips6"
    }
}
fn node_ports(v: char) -> &'static str {
    if v == '4' {
        "node-ports4"
    } else {
        "node-ports6"
    }
}
fn no_endpoints(v: char) -> &'static str {
    if v == '4' {
        "no-endpoints4"
    } else {
        "no-endpoints6"
    }
}
fn hairpin(v: char) -> &'static str {
    if v == '4' { "hairpin4" } else { "hairpin6" }
}
fn no_endpoint_node_ports(v: char) -> &'static str {
    if v == '4' {
        "no-endpoint-node-ports4"
    } else {
        "no-endpoint-node-ports6"
    }
}

/// The fixed chains, maps and sets of the table (`table inet <name> { ... }`).
fn render_static(spec: &TableSpec, out: &mut String) {
    let t = &spec.name;
    let _ = writeln!(out, "table inet {t} {{");
    for v in ["4", "6"] {
        let a = if v == "4" { "ipv4_addr" } else { "ipv6_addr" };
        let _ = writeln!(out, "  set node-ips{v} {{ type {a}; }}");
        let _ = writeln!(
            out,
            "  map cluster-ips{v} {{ type {a} . inet_proto . inet_service : verdict; }}"
        );
        let _ = writeln!(
            out,
            "  map node-ports{v} {{ type inet_proto . inet_service : verdict; }}"
        );
        let _ = writeln!(
            out,
            "  set no-endpoints{v} {{ type {a} . inet_proto . inet_service; }}"
        );
        let _ = writeln!(
            out,
            "  set no-endpoint-node-ports{v} {{ type inet_proto . inet_service; }}"
        );
        let _ = writeln!(out, "  set hairpin{v} {{ type {a} . {a}; }}");
    }
    out.push_str(concat!(
        "  chain mark-for-masquerade { meta mark set meta mark | 0x4000; }\n",
        "  chain services {\n",
        "    ip daddr . meta l4proto . th dport vmap @cluster-ips4\n",
        "    ip6 daddr . meta l4proto . th dport vmap @cluster-ips6\n",
        "    ip daddr @node-ips4 meta l4proto . th dport vmap @node-ports4\n",
        "    ip6 daddr @node-ips6 meta l4proto . th dport vmap @node-ports6\n",
        "  }\n",
        "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n",
        "  chain nat-output { type nat hook output priority -100; policy accept; jump services; }\n",
        "  chain nat-postrouting {\n",
        "    type nat hook postrouting priority srcnat; policy accept;\n",
        "    ct status dnat ip saddr . ip daddr @hairpin4 jump mark-for-masquerade\n",
        "    ct status dnat ip6 saddr . ip6 daddr @hairpin6 jump mark-for-masquerade\n",
        "    meta mark & 0x4000 == 0 return\n",
        "    meta mark set meta mark ^ 0x4000\n",
        "    masquerade fully-random\n",
        "  }\n",
        "  chain reject-no-endpoints {\n",
        "    ip daddr . meta l4proto . th dport @no-endpoints4 reject\n",
        "    ip6 daddr . meta l4proto . th dport @no-endpoints6 reject\n",
        "    ip daddr @node-ips4 meta l4proto . th dport @no-endpoint-node-ports4 reject\n",
        "    ip6 daddr @node-ips6 meta l4proto . th dport @no-endpoint-node-ports6 reject\n",
        "  }\n",
        "  chain filter-input { type filter hook input priority -110; policy accept; ct state new jump reject-no-endpoints; }\n",
        "  chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump reject-no-endpoints; }\n",
        "  chain filter-output { type filter hook output priority -110; policy accept; ct state new jump reject-no-endpoints; }\n",
        "}\n",
    ));
    for ip in &spec.node_ips {
        let (_, v) = family(ip);
        let _ = writeln!(out, "add element inet {t} node-ips{v} {{ {ip} }}");
    }
}

fn element(out: &mut String, verb: &str, t: &str, set: &str, key: &str, value: Option<&str>) {
    match value {
        Some(v) => {
            let _ = writeln!(out, "{verb} element inet {t} {set} {{ {key} : {v} }}");
        }
        None => {
            let _ = writeln!(out, "{verb} element inet {t} {set} {{ {key} }}");
        }
    }
}

fn fill_chain(out: &mut String, t: &str, chain: &str, rules: &[String]) {
    for rule in rules {
        let _ = writeln!(out, "add rule inet {t} {chain} {rule}");
    }
}

/// The whole table: created empty if missing, deleted and declared again, so the transaction
/// replaces whatever was there (a previous run's rules included).
pub fn full_script(spec: &TableSpec, r: &Ruleset) -> String {
    let t = &spec.name;
    let mut out = format!("add table inet {t}\ndelete table inet {t}\n");
    render_static(spec, &mut out);
    for (set, body) in &r.sets {
        let _ = writeln!(out, "add set inet {t} {set} {{ {body} }}");
    }
    for chain in r.chains.keys() {
        let _ = writeln!(out, "add chain inet {t} {chain}");
    }
    for (chain, rules) in &r.chains {
        fill_chain(&mut out, t, chain, rules);
    }
    for ((set, key), value) in &r.elements {
        element(&mut out, "add", t, set, key, value.as_deref());
    }
    out
}

/// The transaction turning `old` (applied) into `new`; empty when nothing changed.
pub fn diff_script(spec: &TableSpec, old: &Ruleset, new: &Ruleset) -> String {
    let t = &spec.name;
    let mut out = String::new();
    for (set, body) in &new.sets {
        if old.sets.get(set) != Some(body) {
            if old.sets.contains_key(set) {
                // A changed timeout: the set is re-created below once nothing refers to it.
                continue;
            }
            let _ = writeln!(out, "add set inet {t} {set} {{ {body} }}");
        }
    }
    for chain in new.chains.keys() {
        if !old.chains.contains_key(chain) {
            let _ = writeln!(out, "add chain inet {t} {chain}");
        }
    }
    for (chain, rules) in &new.chains {
        match old.chains.get(chain) {
            Some(o) if o == rules => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain inet {t} {chain}");
                fill_chain(&mut out, t, chain, rules);
            }
            None => fill_chain(&mut out, t, chain, rules),
        }
    }
    for (k, value) in &old.elements {
        if new.elements.get(k) != Some(value) {
            element(&mut out, "delete", t, k.0, &k.1, None);
        }
    }
    for (k, value) in &new.elements {
        if old.elements.get(k) != Some(value) {
            element(&mut out, "add", t, k.0, &k.1, value.as_deref());
        }
    }
    // Chains and sets that went away: emptied first so no rule refers to them any more.
    let gone: BTreeSet<&String> = old
        .chains
        .keys()
        .filter(|c| !new.chains.contains_key(*c))
        .collect();
    for chain in &gone {
        let _ = writeln!(out, "flush chain inet {t} {chain}");
    }
    for chain in &gone {
        let _ = writeln!(out, "delete chain inet {t} {chain}");
    }
    for (set, body) in &old.sets {
        if new.sets.get(set) != Some(body) {
            let _ = writeln!(out, "delete set inet {t} {set}");
        }
    }
    out
}

/// Errors applying a transaction.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the transaction: {0}")]
    Refused(String),
}

/// Feeds `script` to one `nft -f -`: one atomic transaction.
pub async fn apply(script: &str) -> Result<(), NftError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(NftError::Spawn)?;
    let mut stdin = child.stdin.take().expect("piped");
    let write = async {
        let r = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        r
    };
    let (written, out) = tokio::join!(write, child.wait_with_output());
    let out = out.map_err(NftError::Spawn)?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(NftError::Refused(
            msg.lines().take(6).collect::<Vec<_>>().join("\n"),
        ));
    }
    written.map_err(NftError::Spawn)
}

/// Deletes the table (absent is fine).
pub async fn delete_table(name: &str) -> Result<(), NftError> {
    apply(&format!(
        "add table inet {name}\ndelete table inet {name}\n"
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{DEFAULT_AFFINITY_SECONDS, Proto};

    fn spec(name: &str) -> TableSpec {
        TableSpec {
            name: name.into(),
            node_ips: vec!["127.0.0.9".parse().unwrap()],
            cluster_cidrs: vec!["198.18.0.0/16".parse().unwrap()],
        }
    }

    fn port(name: &str, ip: &str, endpoints: &[&str]) -> ServicePort {
        ServicePort {
            namespace: "ns".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Proto::Tcp,
            cluster_ip: ip.parse().unwrap(),
            port: 80,
            node_port: None,
            affinity: None,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
            local_endpoints: Vec::new(),
            remote_endpoints: Vec::new(),
            internal_local: false,
            external_local: false,
        }
    }

    #[test]
    fn table_names_differ_per_data_dir_and_are_nft_identifiers() {
        let a = table_name("s1", std::path::Path::new("/tmp/a/data"));
        assert_ne!(a, table_name("s1", std::path::Path::new("/tmp/b/data")));
        assert_eq!(a, table_name("s1", std::path::Path::new("/tmp/a/data")));
        assert!(a.starts_with("rke2-proxy-s1-") && a.len() == "rke2-proxy-s1-".len() + 8);
    }

    #[test]
    fn a_service_chain_dnats_to_a_random_endpoint_in_one_rule() {
        let r = render(
            &spec("t"),
            &[port(
                "web",
                "198.19.0.10",
                &["198.18.0.2:8080", "198.18.0.3:8080"],
            )],
        );
        let svc = "svc-ns/web/tcp/http4";
        assert_eq!(
            r.elements[&("cluster-ips4", "198.19.0.10 . tcp . 80".to_string())],
            Some(format!("goto {svc}"))
        );
        assert_eq!(
            r.chains[svc],
            vec![
                "ip saddr != { 198.18.0.0/16 } jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat ip addr . port to numgen random mod 2 \
                 map { 0 : 198.18.0.2 . 8080, 1 : 198.18.0.3 . 8080 }"
                    .to_string()
            ]
        );
        // Hairpin traffic (an endpoint reaching itself) is masqueraded in nat-postrouting.
        for ep in ["198.18.0.2", "198.18.0.3"] {
            assert!(
                r.elements
                    .contains_key(&("hairpin4", format!("{ep} . {ep}")))
            );
        }
        assert_eq!(r.chains.len(), 1, "no chain per endpoint");
        assert!(r.sets.is_empty());
    }

    #[test]
    fn no_endpoints_are_rejected_and_node_ports_masquerade() {
        let mut empty = port("empty", "198.19.0.11", &[]);
        empty.node_port = Some(30001);
        let mut np = port("np", "fd00::12", &["[fd00:1::2]:80"]);
        np.node_port = Some(30002);
        let r = render(&spec("t"), &[empty, np]);
        assert_eq!(
            r.elements[&("no-endpoints4", "198.19.0.11 . tcp . 80".to_string())],
            None
        );
        assert_eq!(
            r.elements[&("no-endpoint-node-ports4", "tcp . 30001".to_string())],
            None
        );
        assert_eq!(
            r.elements[&("node-ports6", "tcp . 30002".to_string())],
            Some("goto ext-ns/np/tcp/http6".to_string())
        );
        assert_eq!(
            r.chains["ext-ns/np/tcp/http6"],
            vec![
                "jump mark-for-masquerade",
                "meta l4proto tcp dnat ip6 addr . port to numgen random mod 1 map { 0 : fd00:1::2 . 80 }"
            ]
        );
        // No IPv6 cluster CIDR given: every IPv6 service connection is masqueraded.
        assert_eq!(
            r.chains["svc-ns/np/tcp/http6"][0],
            "jump mark-for-masquerade"
        );
    }

    #[test]
    fn client_ip_affinity_remembers_the_endpoint_per_source() {
        let mut p = port("sticky", "198.19.0.13", &["198.18.0.2:80"]);
        p.affinity = Some(DEFAULT_AFFINITY_SECONDS);
        let r = render(&spec("t"), &[p]);
        let set = "aff-ns/sticky/tcp/http4__198.18.0.2/80";
        assert_eq!(
            r.sets[set],
            "type ipv4_addr; flags dynamic,timeout; timeout 10800s;"
        );
        let ep = "ep-ns/sticky/tcp/http4__198.18.0.2/80";
        let svc = &r.chains["svc-ns/sticky/tcp/http4"];
        assert_eq!(svc[1], format!("ip saddr @{set} goto {ep}"));
        assert_eq!(
            svc[2],
            format!("numgen random mod 1 vmap {{ 0 : goto {ep} }}")
        );
        assert_eq!(
            r.chains[ep],
            vec![
                format!("update @{set} {{ ip saddr }}"),
                "meta l4proto tcp dnat ip to 198.18.0.2:80".to_string()
            ]
        );
    }

    /// A NodePort service with endpoints 198.18.0.2:80 and .3:80, `local` on this node.
    fn one_of_two_local(name: &str, ip: &str, local: &str, node_port: u16) -> ServicePort {
        let mut p = port(name, ip, &["198.18.0.2:80", "198.18.0.3:80"]);
        p.local_endpoints = vec![local.parse().unwrap()];
        p.node_port = Some(node_port);
        p
    }

    #[test]
    fn endpoints_on_other_nodes_need_no_hairpin_element() {
        let mut p = one_of_two_local("hp", "198.19.0.17", "198.18.0.2:80", 30017);
        p.remote_endpoints = vec!["198.18.0.3:80".parse().unwrap()];
        let r = render(&spec("t"), &[p]);
        let hairpin: Vec<_> = r.elements.keys().filter(|k| k.0 == "hairpin4").collect();
        assert_eq!(
            hairpin,
            vec![&("hairpin4", "198.18.0.2 . 198.18.0.2".to_string())]
        );
    }

    #[test]
    fn internal_traffic_policy_local_keeps_to_local_endpoints_or_drops() {
        let mut p = one_of_two_local("itp", "198.19.0.14", "198.18.0.3:80", 30014);
        p.internal_local = true;
        let r = render(&spec("t"), std::slice::from_ref(&p));
        assert_eq!(
            r.chains["svc-ns/itp/tcp/http4"][1],
            "meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 198.18.0.3 . 80 }"
        );
        // External traffic (externalTrafficPolicy: Cluster) still reaches every endpoint.
        assert!(r.chains["ext-ns/itp/tcp/http4"][1].contains("mod 2"));
        p.local_endpoints.clear();
        let r = render(&spec("t"), &[p]);
        assert_eq!(
            r.elements[&("cluster-ips4", "198.19.0.14 . tcp . 80".to_string())],
            Some("drop".to_string()),
            "no local endpoint: dropped, not rejected"
        );
        assert!(!r.chains.contains_key("svc-ns/itp/tcp/http4"));
        assert!(
            !r.elements
                .contains_key(&("no-endpoints4", "198.19.0.14 . tcp . 80".to_string()))
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_source_and_local_endpoints() {
        let mut p = one_of_two_local("etp", "198.19.0.15", "198.18.0.2:80", 30015);
        p.external_local = true;
        let r = render(&spec("t"), std::slice::from_ref(&p));
        let all = "meta l4proto tcp dnat ip addr . port to numgen random mod 2 \
                   map { 0 : 198.18.0.2 . 80, 1 : 198.18.0.3 . 80 }";
        let local = "meta l4proto tcp dnat ip addr . port to numgen random mod 1 map { 0 : 198.18.0.2 . 80 }";
        assert_eq!(
            r.chains["ext-ns/etp/tcp/http4"],
            vec![
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local {all}"),
                format!("ip saddr {{ 198.18.0.0/16 }} {all}"),
                local.to_string(),
            ],
            "only the node's own and pods' connections are masqueraded or leave the node"
        );
        assert!(
            r.elements
                .contains_key(&("hairpin4", "198.18.0.3 . 198.18.0.3".to_string())),
            "an endpoint of unknown place may be a client here"
        );
        // ClusterIP traffic is not affected by the external policy.
        assert!(r.chains["svc-ns/etp/tcp/http4"][1].contains("mod 2"));
        p.local_endpoints.clear();
        let r = render(&spec("t"), &[p]);
        assert_eq!(r.chains["ext-ns/etp/tcp/http4"].last().unwrap(), "drop");
    }

    #[test]
    fn a_diff_touches_only_what_changed_and_removes_what_went_away() {
        let s = spec("t");
        let mut sticky = port("a", "198.19.0.1", &["198.18.0.2:80", "198.18.0.3:80"]);
        sticky.affinity = Some(60);
        let old = render(
            &s,
            &[sticky.clone(), port("b", "198.19.0.2", &["198.18.0.4:80"])],
        );
        assert_eq!(diff_script(&s, &old, &old), "");
        sticky.endpoints.pop();
        let new = render(&s, &[sticky]);
        let script = diff_script(&s, &old, &new);
        let lines: Vec<&str> = script.lines().collect();
        assert!(lines.contains(&"flush chain inet t svc-ns/a/tcp/http4"));
        assert!(lines.contains(&"delete chain inet t ep-ns/a/tcp/http4__198.18.0.3/80"));
        assert!(lines.contains(&"delete set inet t aff-ns/a/tcp/http4__198.18.0.3/80"));
        assert!(lines.contains(&"delete chain inet t svc-ns/b/tcp/http4"));
        assert!(lines.contains(&"delete element inet t cluster-ips4 { 198.19.0.2 . tcp . 80 }"));
        assert!(lines.contains(&"delete element inet t hairpin4 { 198.18.0.4 . 198.18.0.4 }"));
        assert!(
            !lines.iter().any(
                |l| l.contains("chain inet t ep-ns/a/tcp/http4__198.18.0.2/80")
                    || l.starts_with("add rule inet t ep-ns/a/tcp/http4__198.18.0.2/80")
            ),
            "the unchanged endpoint chain is left alone: {script}"
        );
        // Deleting comes after every flush that referred to the chain.
        let last_flush = lines.iter().rposition(|l| l.starts_with("flush")).unwrap();
        let first_delete = lines
            .iter()
            .position(|l| l.starts_with("delete chain"))
            .unwrap();
        assert!(last_flush < first_delete, "{script}");
    }

    fn list_table(name: &str) -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "inet", name])
            .output()
            .expect("nft is installed (apt-get install nftables)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The scripts are accepted by the real nft, and an applied diff leaves the same table as a
    /// full replace would.
    #[tokio::test]
    async fn real_nft_accepts_full_and_incremental_transactions() {
        let name = format!("rke2-unit-{}", std::process::id());
        let s = spec(&name);
        let mut sticky = port("sticky", "198.19.0.13", &["198.18.0.2:80"]);
        sticky.affinity = Some(60);
        sticky.node_port = Some(30013);
        let mut udp = port("udp", "fd00::14", &["[fd00:1::2]:53"]);
        udp.protocol = Proto::Udp;
        let mut local = port("local", "198.19.0.15", &["198.18.0.4:80", "198.18.0.5:80"]);
        (local.internal_local, local.external_local) = (true, true);
        local.local_endpoints = vec!["198.18.0.5:80".parse().unwrap()];
        local.node_port = Some(30015);
        let mut drop = local.clone();
        (drop.name, drop.cluster_ip, drop.node_port) =
            ("drop".into(), "198.19.0.16".parse().unwrap(), Some(30016));
        drop.local_endpoints.clear();
        let before = render(
            &s,
            &[
                port("a", "198.19.0.1", &["198.18.0.2:80", "198.18.0.3:80"]),
                port("none", "198.19.0.2", &[]),
                sticky,
                udp,
                local,
                drop,
            ],
        );
        let after = render(&s, &[port("a", "198.19.0.1", &["198.18.0.3:80"])]);
        let result = async {
            apply(&full_script(&s, &before)).await?;
            let listed = list_table(&name);
            apply(&diff_script(&s, &before, &after)).await?;
            let diffed = list_table(&name);
            apply(&full_script(&s, &after)).await?;
            Ok::<_, NftError>((listed, diffed, list_table(&name)))
        }
        .await;
        delete_table(&name).await.unwrap();
        let (listed, diffed, full) = result.unwrap();
        assert!(
            listed.contains("aff-ns/sticky/tcp/http4__198.18.0.2/80"),
            "{listed}"
        );
        assert!(listed.contains("30013"), "{listed}");
        assert!(
            listed.contains("198.19.0.16 . tcp . 80 : drop"),
            "internalTrafficPolicy Local without local endpoints: {listed}"
        );
        assert!(
            listed.contains("fib saddr type local jump mark-for-masquerade"),
            "{listed}"
        );
        assert_eq!(diffed, full);
        assert!(
            !full.contains("198.19.0.13") && !full.contains("sticky"),
            "{full}"
        );
        assert!(list_table(&name).is_empty(), "the table is gone");
    }
}
