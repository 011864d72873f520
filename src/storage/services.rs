//! Service admission (docs/services.md): upstream's Service defaults, ClusterIPs from
//! `service-cidr` and node ports from `service-node-port-range`. Each allocation is one key
//! created only when absent (`/registry/ranges/serviceips/<ip>`,
//! `/registry/ranges/servicenodeports/<port>`, the value naming the owning Service), so two
//! servers can never hand out the same address or port; deleting the Service releases them.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{ObjectError, Storage};
use crate::datastore::Cas;
use crate::registry::{FieldCause, SERVICES};

/// Allocated ClusterIPs, one key per address.
pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
/// Allocated node ports, one key per port.
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Addresses network+1 ..= network+LOW_BAND are handed out only on request while the rest of
/// the range has room: they hold the `kubernetes` service (+1) and cluster DNS (+10), as
/// upstream keeps its lower band for static allocation.
const LOW_BAND: u128 = 16;

/// The ranges services are allocated from (`service-cidr`, `service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    pub cidr: IpNet,
    pub node_ports: (u16, u16),
    /// `cluster-dns`: every node answers on it itself (docs/dns.md), so no Service may take it.
    pub cluster_dns: Option<IpAddr>,
}

impl ServiceRanges {
    /// The daemon's defaults (10.43.0.0/16, 30000-32767).
    pub fn defaults() -> ServiceRanges {
        ServiceRanges {
            cidr: "10.43.0.0/16".parse().expect("valid CIDR"),
            node_ports: (30000, 32767),
            cluster_dns: "10.43.0.10".parse().ok(),
        }
    }

    fn family(&self) -> &'static str {
        match self.cidr {
            IpNet::V4(_) => "IPv4",
            IpNet::V6(_) => "IPv6",
        }
    }

    /// Number of addresses of the range (capped: an IPv6 /64 is plenty as 2^64).
    fn size(&self) -> u128 {
        let bits = u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len()).min(64);
        1u128 << bits
    }

    fn at(&self, offset: u128) -> IpAddr {
        match self.cidr.network() {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n) + offset as u32).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n) + offset).into()),
        }
    }

    /// Usable offsets in the order dynamic allocation tries them: the upper band, then the
    /// lower band. The network address (and IPv4's broadcast address) are never used.
    fn dynamic_order(&self) -> impl Iterator<Item = u128> {
        let last = match self.cidr {
            IpNet::V4(_) => self.size().saturating_sub(2),
            IpNet::V6(_) => self.size().saturating_sub(1),
        };
        let low = LOW_BAND.min(last / 2);
        (low + 1..=last).chain(1..=low)
    }

    /// Whether `ip` may be requested: inside the range, not its network (or broadcast) address.
    fn allocatable(&self, ip: IpAddr) -> bool {
        if !self.cidr.contains(&ip) || ip == self.cidr.network() {
            return false;
        }
        !matches!(self.cidr, IpNet::V4(_)) || ip != self.cidr.broadcast()
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn invalid(name: &str, field: String, message: String) -> ObjectError {
    ObjectError::Invalid {
        kind: SERVICES.kind.to_string(),
        name: name.to_string(),
        causes: vec![FieldCause { field, message }],
    }
}

/// Whether a Service of this type gets node ports.
fn wants_node_ports(svc: &Value) -> bool {
    matches!(text(svc, "/spec/type"), "NodePort" | "LoadBalancer")
}

/// Upstream's Service defaults (`SetDefaults_Service` and the create strategy).
pub fn apply_defaults(svc: &mut Value, ranges: &ServiceRanges) {
    if !svc["spec"].is_object() {
        svc["spec"] = json!({});
    }
    let spec = &mut svc["spec"];
    if spec["type"].as_str().is_none_or(str::is_empty) {
        spec["type"] = json!("ClusterIP");
    }
    let external_name = spec["type"] == "ExternalName";
    if spec["sessionAffinity"].as_str().is_none_or(str::is_empty) {
        spec["sessionAffinity"] = json!("None");
    }
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].as_str().is_none_or(str::is_empty) {
                p["protocol"] = json!("TCP");
            }
            let unset = match &p["targetPort"] {
                Value::Null => true,
                Value::Number(n) => n.as_i64() == Some(0),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if unset {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if external_name {
        return;
    }
    if spec["internalTrafficPolicy"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"))
        && spec["externalTrafficPolicy"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if spec["type"] == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"].is_null() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    if spec["ipFamilies"].as_array().is_none_or(Vec::is_empty) {
        spec["ipFamilies"] = json!([ranges.family()]);
    }
    if spec["ipFamilyPolicy"].as_str().is_none_or(str::is_empty) {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
}

/// What the Service asked for: its requested ClusterIP (`None` when it asked for none).
fn requested_cluster_ip(svc: &Value) -> &str {
    match text(svc, "/spec/clusterIP") {
        "" => svc
            .pointer("/spec/clusterIPs/0")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        ip => ip,
    }
}

/// The owner recorded in an allocation key.
fn owner(ns: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"namespace": ns, "name": name})).expect("JSON serialises")
}

/// Keys taken so far by one admission, released again if it fails.
struct Held<'a> {
    store: &'a Storage,
    keys: Vec<String>,
    owner: Vec<u8>,
}

impl Held<'_> {
    async fn take(&mut self, key: String) -> Result<bool, ObjectError> {
        match self
            .store
            .datastore()
            .create(&key, self.owner.clone())
            .await?
        {
            Cas::Written(_) => {
                self.keys.push(key);
                Ok(true)
            }
            Cas::Conflict(_) => Ok(false),
        }
    }

    async fn release(self) {
        for key in &self.keys {
            release_key(self.store, key, &self.owner).await;
        }
    }
}

/// Deletes `key` if it is still held by `owner` (never another Service's allocation).
async fn release_key(store: &Storage, key: &str, owner: &[u8]) {
    if let Ok((Some(kv), _)) = store.datastore().get(key).await
        && kv.value == owner
    {
        let _ = store.datastore().delete(key, Some(kv.mod_revision)).await;
    }
}

/// Keys under `prefix` already taken.
async fn taken(store: &Storage, prefix: &str) -> Result<HashSet<String>, ObjectError> {
    let page = store.datastore().list(prefix, None, 0, 0).await?;
    Ok(page.items.into_iter().map(|kv| kv.key).collect())
}

/// Allocates the ClusterIP and node ports `svc` needs (defaults applied), writing them into it.
async fn allocate(
    held: &mut Held<'_>,
    ranges: &ServiceRanges,
    svc: &mut Value,
) -> Result<(), ObjectError> {
    let name = text(svc, "/metadata/name").to_string();
    if text(svc, "/spec/type") != "ExternalName" {
        let requested = requested_cluster_ip(svc).to_string();
        let ip = match requested.as_str() {
            "None" => "None".to_string(),
            "" => allocate_ip(held, ranges, &name).await?,
            want => {
                let ip: IpAddr = want.parse().map_err(|_| {
                    invalid(
                        &name,
                        "spec.clusterIPs[0]".into(),
                        format!("Invalid value: \"{want}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
                    )
                })?;
                let failed = |why: String| {
                    invalid(
                        &name,
                        "spec.clusterIPs".into(),
                        format!(
                            "Invalid value: []string{{\"{want}\"}}: failed to allocate IP {want}: {why}"
                        ),
                    )
                };
                if Some(ip) == ranges.cluster_dns {
                    return Err(failed(
                        "the provided IP is the cluster DNS address (cluster-dns), which every node serves itself".into(),
                    ));
                }
                if !ranges.allocatable(ip) {
                    return Err(failed(format!(
                        "the provided IP ({want}) is not in the valid range. The range of valid IPs is {}",
                        ranges.cidr
                    )));
                }
                if !held.take(format!("{IP_PREFIX}{ip}")).await? {
                    return Err(failed("provided IP is already allocated".into()));
                }
                ip.to_string()
            }
        };
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
    }
    if wants_node_ports(svc) {
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let port = allocate_node_port(held, ranges, &name, i, &svc["spec"]["ports"][i]).await?;
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    Ok(())
}

async fn allocate_ip(
    held: &mut Held<'_>,
    ranges: &ServiceRanges,
    name: &str,
) -> Result<String, ObjectError> {
    let used = taken(held.store, IP_PREFIX).await?;
    for offset in ranges.dynamic_order() {
        let ip = ranges.at(offset);
        if Some(ip) == ranges.cluster_dns {
            continue;
        }
        let key = format!("{IP_PREFIX}{ip}");
        // Another server may take a free address between the list and the create: try the next.
        if !used.contains(&key) && held.take(key).await? {
            return Ok(ip.to_string());
        }
    }
    Err(invalid(
        name,
        "spec.clusterIPs".into(),
        format!(
            "Internal error: failed to allocate a serviceIP: range is full ({})",
            ranges.cidr
        ),
    ))
}

async fn allocate_node_port(
    held: &mut Held<'_>,
    ranges: &ServiceRanges,
    name: &str,
    index: usize,
    port: &Value,
) -> Result<u16, ObjectError> {
    let field = format!("spec.ports[{index}].nodePort");
    let (lo, hi) = ranges.node_ports;
    match port["nodePort"].as_i64().filter(|p| *p != 0) {
        Some(want) => {
            let fail =
                |why: String| invalid(name, field.clone(), format!("Invalid value: {want}: {why}"));
            let Some(p) = u16::try_from(want).ok().filter(|p| (lo..=hi).contains(p)) else {
                return Err(fail(format!(
                    "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                )));
            };
            if !held.take(format!("{PORT_PREFIX}{p}")).await? {
                return Err(fail("provided port is already allocated".into()));
            }
            Ok(p)
        }
        None => {
            let used = taken(held.store, PORT_PREFIX).await?;
            for p in lo..=hi {
                let key = format!("{PORT_PREFIX}{p}");
                if !used.contains(&key) && held.take(key).await? {
                    return Ok(p);
                }
            }
            Err(invalid(
                name,
                field,
                format!("Internal error: failed to allocate a nodePort: range is full ({lo}-{hi})"),
            ))
        }
    }
}

/// Creates Service `ns/<name>`: defaults, allocations, then the object; allocations are
/// released again when the object cannot be written.
pub async fn create(
    store: &Storage,
    ranges: &ServiceRanges,
    ns: &str,
    mut svc: Value,
) -> Result<Value, ObjectError> {
    let name = text(&svc, "/metadata/name").to_string();
    // Checked first so a repeated create is a 409, not an "already allocated" 422.
    if !name.is_empty() && store.get_opt(&SERVICES, Some(ns), &name).await?.is_some() {
        return Err(ObjectError::AlreadyExists {
            resource: SERVICES.qualified_name(),
            name,
        });
    }
    apply_defaults(&mut svc, ranges);
    let mut held = Held {
        store,
        keys: Vec::new(),
        owner: owner(ns, &name),
    };
    if let Err(e) = allocate(&mut held, ranges, &mut svc).await {
        held.release().await;
        return Err(e);
    }
    match store.create(&SERVICES, Some(ns), svc).await {
        Ok(created) => Ok(created),
        Err(e) => {
            held.release().await;
            Err(e)
        }
    }
}

/// Releases the ClusterIP and node ports of a deleted Service.
pub async fn release(store: &Storage, svc: &Value) {
    let owner = owner(
        text(svc, "/metadata/namespace"),
        text(svc, "/metadata/name"),
    );
    let ips = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| ip.parse::<IpAddr>().is_ok());
    for ip in ips {
        release_key(store, &format!("{IP_PREFIX}{ip}"), &owner).await;
    }
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .filter(|p| *p > 0);
    for port in ports {
        release_key(store, &format!("{PORT_PREFIX}{port}"), &owner).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::Datastore;
    use crate::datastore::memory::MemoryStore;

    fn store() -> Storage {
        Storage::new(Datastore::from_impl(MemoryStore::new()))
    }

    fn ranges() -> ServiceRanges {
        ServiceRanges {
            cidr: "198.19.0.0/16".parse().unwrap(),
            node_ports: (30000, 30002),
            cluster_dns: "198.19.0.10".parse().ok(),
        }
    }

    fn svc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    }

    fn cause(e: ObjectError) -> String {
        match e {
            ObjectError::Invalid { causes, .. } => {
                format!("{}: {}", causes[0].field, causes[0].message)
            }
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[tokio::test]
    async fn allocates_unique_ips_above_the_low_band_and_defaults() {
        let (s, r) = (store(), ranges());
        let a = create(
            &s,
            &r,
            "default",
            svc("a", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
        let b = create(
            &s,
            &r,
            "default",
            svc("b", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
        assert_eq!(a["spec"]["clusterIP"], "198.19.0.17");
        assert_eq!(a["spec"]["clusterIPs"], json!(["198.19.0.17"]));
        assert_eq!(b["spec"]["clusterIP"], "198.19.0.18");
        assert_eq!(a["spec"]["type"], "ClusterIP");
        assert_eq!(a["spec"]["sessionAffinity"], "None");
        assert_eq!(a["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(a["spec"]["ports"][0]["protocol"], "TCP");
    }

    /// The cluster DNS address is never handed out, even when the rest of the range is full,
    /// and asking for it names why.
    #[tokio::test]
    async fn the_cluster_dns_address_is_never_allocated() {
        let s = store();
        let r = ServiceRanges {
            cidr: "198.19.0.0/28".parse().unwrap(),
            ..ranges()
        };
        let e = create(
            &s,
            &r,
            "default",
            svc("dns", json!({"clusterIP": "198.19.0.10"})),
        )
        .await
        .unwrap_err();
        assert!(cause(e).contains("cluster DNS address (cluster-dns)"));
        // .1 ..= .14 minus .10: 13 services fit, the 14th finds the range full.
        let mut ips = HashSet::new();
        for i in 0..13 {
            let v = create(&s, &r, "default", svc(&format!("s{i}"), json!({})))
                .await
                .unwrap();
            ips.insert(v["spec"]["clusterIP"].as_str().unwrap().to_string());
        }
        assert_eq!(ips.len(), 13);
        assert!(!ips.contains("198.19.0.10"), "{ips:?}");
        let e = create(&s, &r, "default", svc("full", json!({})))
            .await
            .unwrap_err();
        assert!(cause(e).contains("range is full"));
    }

    #[tokio::test]
    async fn requested_ips_are_honoured_once_and_checked_against_the_range() {
        let (s, r) = (store(), ranges());
        let a = create(
            &s,
            &r,
            "default",
            svc("a", json!({"clusterIP": "198.19.0.11"})),
        )
        .await
        .unwrap();
        assert_eq!(a["spec"]["clusterIPs"], json!(["198.19.0.11"]));
        let e = create(&s, &r, "ns2", svc("b", json!({"clusterIP": "198.19.0.11"})))
            .await
            .unwrap_err();
        assert!(cause(e).contains("provided IP is already allocated"));
        let e = create(
            &s,
            &r,
            "default",
            svc("c", json!({"clusterIP": "10.0.0.1"})),
        )
        .await
        .unwrap_err();
        assert!(cause(e).contains("is not in the valid range"), "");
        let e = create(
            &s,
            &r,
            "default",
            svc("d", json!({"clusterIP": "198.19.0.0"})),
        )
        .await
        .unwrap_err();
        assert!(cause(e).contains("is not in the valid range"));
        // Headless: no address taken.
        let h = create(&s, &r, "default", svc("h", json!({"clusterIP": "None"})))
            .await
            .unwrap();
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(taken(&s, IP_PREFIX).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn release_frees_the_ip_and_ports_for_reuse() {
        let (s, r) = (store(), ranges());
        let a = create(
            &s,
            &r,
            "default",
            svc("a", json!({"type": "NodePort", "clusterIP": "198.19.0.20", "ports": [{"port": 80}, {"port": 81, "nodePort": 30002}]})),
        )
        .await
        .unwrap();
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30002);
        assert_eq!(a["spec"]["externalTrafficPolicy"], "Cluster");
        let e = create(
            &s,
            &r,
            "default",
            svc(
                "b",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30002}]}),
            ),
        )
        .await
        .unwrap_err();
        assert!(cause(e).contains("provided port is already allocated"));
        // The failed create gave back the address it had taken.
        assert_eq!(taken(&s, IP_PREFIX).await.unwrap().len(), 1);
        let e = create(
            &s,
            &r,
            "default",
            svc(
                "c",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
            ),
        )
        .await
        .unwrap_err();
        assert!(cause(e).contains("The range of valid ports is 30000-30002"));
        let deleted = s
            .delete(&SERVICES, Some("default"), "a", None, None)
            .await
            .unwrap();
        release(&s, &deleted).await;
        assert!(taken(&s, IP_PREFIX).await.unwrap().is_empty());
        assert!(taken(&s, PORT_PREFIX).await.unwrap().is_empty());
        create(
            &s,
            &r,
            "x",
            svc("again", json!({"clusterIP": "198.19.0.20"})),
        )
        .await
        .unwrap();
    }

    /// Concurrent admissions (as on several servers sharing one store) never share an address
    /// or a port: each key is created only once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_get_distinct_addresses_and_ports() {
        let s = store();
        let r = ServiceRanges {
            node_ports: (30000, 30099),
            ..ranges()
        };
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (s, r) = (s.clone(), r);
                tokio::spawn(async move {
                    let body = svc(
                        &format!("s{i}"),
                        json!({"type": "NodePort", "ports": [{"port": 80}]}),
                    );
                    create(&s, &r, "default", body).await.unwrap()
                })
            })
            .collect();
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for t in tasks {
            let v = t.await.unwrap();
            assert!(ips.insert(v["spec"]["clusterIP"].as_str().unwrap().to_string()));
            assert!(ports.insert(v["spec"]["ports"][0]["nodePort"].as_i64().unwrap()));
        }
        assert_eq!(taken(&s, IP_PREFIX).await.unwrap().len(), 40);
    }

    #[tokio::test]
    async fn a_repeated_create_is_already_exists_and_keeps_the_allocation() {
        let (s, r) = (store(), ranges());
        let body = svc("k", json!({"clusterIP": "198.19.0.1"}));
        create(&s, &r, "default", body.clone()).await.unwrap();
        let e = create(&s, &r, "default", body).await.unwrap_err();
        assert!(matches!(e, ObjectError::AlreadyExists { .. }), "{e}");
        assert_eq!(taken(&s, IP_PREFIX).await.unwrap().len(), 1);
    }
}
