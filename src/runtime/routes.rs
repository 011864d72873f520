//! Host-gw routes between nodes (docs/pod-network.md): every node routes each other node's
//! `spec.podCIDR(s)` through that node's InternalIP, so pods on different nodes reach each
//! other by pod IP without an overlay. The routes carry their own routing protocol number
//! ([`ROUTE_PROTO`]), so this node only ever lists, changes or deletes routes it made; a route
//! the administrator (or another tool) owns for the same destination is left alone.
//!
//! The Node set comes from a list + watch of `/api/v1/nodes`; the routing table is changed
//! only when the wanted set changes (one `ip route` call per added or removed route), plus a
//! slow resync that puts back routes someone deleted. Routes stay when the daemon stops:
//! containers outlive the daemon, and so must the paths to their peers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::kubeclient::{Api, LineSplitter};

/// The `proto` of the routes this node makes (`ip route show proto 75`). Unassigned in
/// iproute2's `rt_protos`, and far from the daemons' usual numbers (zebra 11, bird 12,
/// dhcp 16, keepalived 18, babel 42, bgp 186, ...).
pub const ROUTE_PROTO: u8 = 75;
/// How often the routing table is re-read even when no Node changed.
const RESYNC: Duration = Duration::from_secs(60);
/// Wait before listing again after a failure or a closed watch.
const RETRY: Duration = Duration::from_secs(2);

/// One route: `dst` (a CIDR) via `gateway`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: String,
    pub gateway: IpAddr,
}

/// What routing needs from a Node: its pod CIDRs and InternalIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeNet {
    pub pod_cidrs: Vec<String>,
    pub internal_ips: Vec<IpAddr>,
}

impl NodeNet {
    pub fn from_node(node: &Value) -> NodeNet {
        let mut pod_cidrs: Vec<String> = node
            .pointer("/spec/podCIDRs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if pod_cidrs.is_empty()
            && let Some(c) = node.pointer("/spec/podCIDR").and_then(Value::as_str)
            && !c.is_empty()
        {
            pod_cidrs.push(c.to_string());
        }
        let internal_ips = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|a| a["type"] == "InternalIP")
                    .filter_map(|a| a["address"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        NodeNet {
            pod_cidrs,
            internal_ips,
        }
    }
}

fn is_v4_cidr(cidr: &str) -> Option<bool> {
    let (addr, _) = cidr.split_once('/')?;
    Some(addr.parse::<IpAddr>().ok()?.is_ipv4())
}

/// The routes this node wants: every other node's pod CIDRs via its InternalIP of the same
/// family. Nodes whose address is local to this host (several nodes sharing one network
/// namespace, as in loopback test clusters) need no route: their bridges are already here.
pub fn desired(
    nodes: &BTreeMap<String, NodeNet>,
    me: &str,
    is_local: impl Fn(IpAddr) -> bool,
) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (name, n) in nodes {
        if name == me {
            continue;
        }
        for cidr in &n.pod_cidrs {
            let Some(v4) = is_v4_cidr(cidr) else { continue };
            let Some(gw) = n.internal_ips.iter().find(|ip| ip.is_ipv4() == v4) else {
                continue;
            };
            if gw.is_loopback() || gw.is_unspecified() || is_local(*gw) {
                continue;
            }
            out.insert(Route {
                dst: cidr.clone(),
                gateway: *gw,
            });
        }
    }
    out
}

/// Routes in `ip -j route show proto N` output.
pub fn parse_routes(json: &str) -> Result<BTreeSet<Route>, String> {
    let v: Value = serde_json::from_str(if json.trim().is_empty() { "[]" } else { json })
        .map_err(|e| format!("ip -j route: {e}"))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            let gateway: IpAddr = r["gateway"].as_str()?.parse().ok()?;
            // `ip` prints host routes without a prefix length.
            let dst = if dst.contains('/') {
                dst.to_string()
            } else {
                format!("{dst}/{}", if gateway.is_ipv4() { 32 } else { 128 })
            };
            Some(Route { dst, gateway })
        })
        .collect())
}

/// The changes from `current` (this node's routes now) to `wanted`: (to delete, to add).
pub fn plan(current: &BTreeSet<Route>, wanted: &BTreeSet<Route>) -> (Vec<Route>, Vec<Route>) {
    (
        current.difference(wanted).cloned().collect(),
        wanted.difference(current).cloned().collect(),
    )
}

/// Whether `ip` is an address of this host (in this network namespace): binding to it works.
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

async fn ip(args: &[String]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// This node's routes now (both families).
async fn current_routes() -> Result<BTreeSet<Route>, String> {
    let mut all = BTreeSet::new();
    for family in ["-4", "-6"] {
        let args = [
            family,
            "-j",
            "route",
            "show",
            "proto",
            &ROUTE_PROTO.to_string(),
        ]
        .map(str::to_string);
        all.extend(parse_routes(&ip(&args).await?)?);
    }
    Ok(all)
}

fn route_args(op: &str, r: &Route) -> Vec<String> {
    [
        "route",
        op,
        &r.dst,
        "via",
        &r.gateway.to_string(),
        "proto",
        &ROUTE_PROTO.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Makes this node's routes match `wanted`; true when every change went through.
async fn apply(wanted: &BTreeSet<Route>, node: &str) -> bool {
    let current = match current_routes().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(component = "routes", node, "{e}");
            return false;
        }
    };
    let (remove, add) = plan(&current, wanted);
    let mut ok = true;
    for r in &remove {
        match ip(&route_args("del", r)).await {
            Ok(_) => tracing::info!(
                component = "routes",
                node,
                "removed route {} via {}",
                r.dst,
                r.gateway
            ),
            Err(e) => {
                ok = false;
                tracing::warn!(component = "routes", node, "{e}");
            }
        }
    }
    for r in &add {
        // `add`, never `replace`: a route to the same destination that is not ours stays.
        match ip(&route_args("add", r)).await {
            Ok(_) => tracing::info!(
                component = "routes",
                node,
                "route {} via {}",
                r.dst,
                r.gateway
            ),
            Err(e) => {
                ok = false;
                tracing::warn!(
                    component = "routes",
                    node,
                    "cannot route pod network {} via {}: {e}",
                    r.dst,
                    r.gateway
                );
            }
        }
    }
    ok
}

/// The Node set, kept by list + watch.
struct Nodes {
    api: Api,
    nodes: BTreeMap<String, NodeNet>,
    /// Whether a pod CIDR or InternalIP changed since the last sync: most Node writes
    /// (status heartbeats, conditions, images) change neither, and recomputing the routes
    /// for thousands of nodes on each would cost more than the write.
    changed: bool,
}

impl Nodes {
    /// Lists every Node; returns the list's resourceVersion.
    async fn list(&mut self) -> Result<String, String> {
        let r = self
            .api
            .call(http::Method::GET, "/api/v1/nodes", None, None)
            .await
            .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("list nodes: {} {}", r.status, r.error_message()));
        }
        let list: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        self.nodes = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                let name = n.pointer("/metadata/name")?.as_str()?;
                Some((name.to_string(), NodeNet::from_node(n)))
            })
            .collect();
        Ok(list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string())
    }

    /// Applies one watch event line; false when the watch must start over (an ERROR event,
    /// e.g. 410 Gone).
    fn event(&mut self, line: &[u8]) -> bool {
        let Ok(ev) = serde_json::from_slice::<Value>(line) else {
            return false;
        };
        let Some(name) = ev.pointer("/object/metadata/name").and_then(Value::as_str) else {
            return ev["type"] == "BOOKMARK";
        };
        match ev["type"].as_str() {
            Some("ADDED" | "MODIFIED") => {
                let net = NodeNet::from_node(&ev["object"]);
                if self.nodes.get(name) != Some(&net) {
                    self.nodes.insert(name.to_string(), net);
                    self.changed = true;
                }
                true
            }
            Some("DELETED") => {
                self.changed |= self.nodes.remove(name).is_some();
                true
            }
            Some("BOOKMARK") => true,
            _ => false,
        }
    }
}

/// Keeps this node's host-gw routes until `cancel`.
pub(crate) async fn run(api: Api, node: String, cancel: CancellationToken) {
    let mut state = Nodes {
        api,
        nodes: BTreeMap::new(),
        changed: false,
    };
    let mut applied: Option<BTreeSet<Route>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let rv = tokio::select! {
            _ = cancel.cancelled() => return,
            r = state.list() => r,
        };
        let rv = match rv {
            Ok(rv) => rv,
            Err(e) => {
                tracing::debug!(component = "routes", node = %node, "{e}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        sync(&state, &node, &mut applied, false).await;
        let url = format!(
            "{}/api/v1/nodes?watch=true&resourceVersion={rv}",
            state.api.base
        );
        let headers = [("accept", "application/json".to_string())];
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            s = state.api.client.stream(http::Method::GET, &url, &headers) => s,
        };
        if let Ok((200, mut body)) = stream {
            let mut lines = LineSplitter::default();
            'watch: loop {
                let frame = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = resync.tick() => {
                        sync(&state, &node, &mut applied, true).await;
                        continue;
                    }
                    f = body.frame() => f,
                };
                let Some(Ok(frame)) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                lines.push(&data);
                while let Some(line) = lines.next_line() {
                    let ok = match line {
                        Ok(line) => state.event(line),
                        Err(e) => {
                            tracing::warn!(component = "routes", node = %node, "{e}");
                            false
                        }
                    };
                    if !ok {
                        break 'watch;
                    }
                }
                if std::mem::take(&mut state.changed) {
                    sync(&state, &node, &mut applied, false).await;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Applies the wanted routes when they changed since the last apply, or always with `force`
/// (the resync). A change the kernel refused (a gateway not on this node's link) is retried by
/// the resync, not at every Node heartbeat.
async fn sync(state: &Nodes, node: &str, applied: &mut Option<BTreeSet<Route>>, force: bool) {
    let wanted = desired(&state.nodes, node, is_local_address);
    if !force && applied.as_ref() == Some(&wanted) {
        return;
    }
    if !apply(&wanted, node).await {
        tracing::debug!(component = "routes", node, "retrying in {RESYNC:?}");
    }
    *applied = Some(wanted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(cidrs: &[&str], ips: &[&str]) -> Value {
        json!({
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
            "status": {"addresses": ips.iter().map(|a| json!({"type": "InternalIP", "address": a}))
                .chain([json!({"type": "Hostname", "address": "h"})]).collect::<Vec<_>>()},
        })
    }

    #[test]
    fn other_nodes_pod_cidrs_are_routed_via_their_internal_ip_of_the_same_family() {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "a".to_string(),
            NodeNet::from_node(&node(&["198.18.128.0/24"], &["198.18.0.1"])),
        );
        nodes.insert(
            "b".to_string(),
            NodeNet::from_node(&node(
                &["198.18.129.0/24", "fd00:10::/64"],
                &["198.18.0.2", "fd00::2"],
            )),
        );
        // No podCIDR yet, a loopback node and one sharing this host: no route.
        nodes.insert("c".into(), NodeNet::from_node(&node(&[], &["198.18.0.3"])));
        nodes.insert(
            "d".into(),
            NodeNet::from_node(&node(&["198.18.131.0/24"], &["127.0.0.4"])),
        );
        nodes.insert(
            "e".into(),
            NodeNet::from_node(&node(&["198.18.132.0/24"], &["198.18.0.5"])),
        );
        let local: IpAddr = "198.18.0.5".parse().unwrap();
        let got = desired(&nodes, "a", |ip| ip == local);
        let want: BTreeSet<Route> = [
            ("198.18.129.0/24", "198.18.0.2"),
            ("fd00:10::/64", "fd00::2"),
        ]
        .iter()
        .map(|(d, g)| Route {
            dst: d.to_string(),
            gateway: g.parse().unwrap(),
        })
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn only_changed_routes_are_touched() {
        let r = |d: &str, g: &str| Route {
            dst: d.into(),
            gateway: g.parse().unwrap(),
        };
        let current = parse_routes(
            r#"[{"dst":"198.18.129.0/24","gateway":"198.18.0.2","dev":"eth0","protocol":"75","flags":[]},
                {"dst":"198.18.130.0/24","gateway":"198.18.0.3","dev":"eth0","protocol":"75","flags":[]},
                {"dst":"198.18.7.7","gateway":"198.18.0.3","dev":"eth0","protocol":"75","flags":[]}]"#,
        )
        .unwrap();
        assert!(current.contains(&r("198.18.7.7/32", "198.18.0.3")));
        let wanted: BTreeSet<Route> = [
            r("198.18.129.0/24", "198.18.0.2"),
            r("198.18.130.0/24", "198.18.0.4"),
        ]
        .into();
        let (del, add) = plan(&current, &wanted);
        assert_eq!(
            del,
            [
                r("198.18.130.0/24", "198.18.0.3"),
                r("198.18.7.7/32", "198.18.0.3")
            ]
        );
        assert_eq!(add, [r("198.18.130.0/24", "198.18.0.4")]);
        assert!(parse_routes("").unwrap().is_empty());
        assert!(parse_routes("not json").is_err());
    }

    #[test]
    fn watch_events_update_the_node_set() {
        let api = Api {
            client: crate::https::HttpsClient::new(
                &crate::https::ServerTrust::InsecureForCaFetch,
                None,
                Duration::from_secs(1),
            )
            .unwrap(),
            base: "https://127.0.0.1:1".into(),
        };
        let mut s = Nodes {
            api,
            nodes: BTreeMap::new(),
            changed: false,
        };
        let mut obj = node(&["198.18.129.0/24"], &["198.18.0.2"]);
        obj["metadata"] = json!({"name": "b"});
        let line =
            |t: &str, obj: &Value| serde_json::to_vec(&json!({"type": t, "object": obj})).unwrap();
        assert!(s.event(&line("ADDED", &obj)));
        assert_eq!(s.nodes["b"].pod_cidrs, ["198.18.129.0/24"]);
        assert!(std::mem::take(&mut s.changed));
        // A status write that leaves the pod CIDRs and addresses alone changes no route.
        obj["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert!(s.event(&line("MODIFIED", &obj)));
        assert!(!s.changed);
        assert!(s.event(&line("DELETED", &obj)));
        assert!(s.changed);
        assert!(s.nodes.is_empty());
        assert!(!s.event(br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#));
        assert!(s.event(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#));
    }
}
