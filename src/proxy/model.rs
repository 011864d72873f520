//! What the service proxy programs, read from Services and EndpointSlices: one
//! [`ServicePort`] per (service, port, cluster IP), with the ready endpoints of that port and
//! address family, those on this node (the slice endpoint's `nodeName`) marked, and the
//! service's traffic policies. Headless and ExternalName services have no cluster IP and are
//! skipped.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

/// `kubernetes.io/service-name`, the label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// A transport protocol a service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The Kubernetes spelling (`TCP`, the default when absent).
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The nftables keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One port of one service on one cluster IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name, or its number when unnamed (chain names need something).
    pub port_name: String,
    pub protocol: Proto,
    pub cluster_ip: IpAddr,
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity: Option<u32>,
    /// Ready endpoints of this port and family, sorted, without duplicates.
    pub endpoints: Vec<SocketAddr>,
    /// The subset of `endpoints` on this node (EndpointSlice `nodeName`), sorted.
    pub local_endpoints: Vec<SocketAddr>,
    /// The subset of `endpoints` named on another node, sorted: never a client on this node,
    /// so they need no hairpin masquerade here.
    pub remote_endpoints: Vec<SocketAddr>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes to `local_endpoints` only.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (NodePort and LoadBalancer services): NodePort traffic
    /// from outside the node and the cluster goes to `local_endpoints` only, unmasqueraded.
    pub external_local: bool,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Where an endpoint runs, from its slice's `nodeName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Here,
    Elsewhere,
    /// No `nodeName` (an endpoint outside the cluster, or a hand-made slice).
    Unknown,
}

/// Ready endpoints of every (namespace, service, port name, protocol), all families, each
/// with where it runs.
type EndpointIndex = BTreeMap<(String, String, String, Proto), BTreeMap<SocketAddr, Place>>;

fn index_slices(slices: &[Value], node_name: &str) -> EndpointIndex {
    let mut index = EndpointIndex::new();
    for slice in slices {
        let ns = str_at(slice, "/metadata/namespace");
        let Some(svc) = slice
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let ports = slice["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let endpoints = slice["endpoints"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in ports {
            let (Some(number), Some(proto)) = (
                port["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
                Proto::parse(port["protocol"].as_str()),
            ) else {
                continue;
            };
            let key = (
                ns.to_string(),
                svc.to_string(),
                port["name"].as_str().unwrap_or("").to_string(),
                proto,
            );
            let set = index.entry(key).or_default();
            // Upstream: a missing `ready` condition means ready; terminating endpoints are
            // written not ready by the endpoints controller, so they drop out here too.
            let ready = endpoints
                .iter()
                .filter(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)));
            for e in ready {
                let place = match e["nodeName"].as_str() {
                    Some(n) if n == node_name => Place::Here,
                    Some(_) => Place::Elsewhere,
                    None => Place::Unknown,
                };
                for a in e["addresses"].as_array().into_iter().flatten() {
                    if let Some(ip) = a.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                        let slot = set.entry(SocketAddr::new(ip, number)).or_insert(place);
                        if place == Place::Here {
                            *slot = place;
                        }
                    }
                }
            }
        }
    }
    index
}

/// Every service port the proxy of node `node_name` programs, sorted.
pub fn service_ports(services: &[Value], slices: &[Value], node_name: &str) -> Vec<ServicePort> {
    let index = index_slices(slices, node_name);
    let mut out = Vec::new();
    for svc in services {
        let ns = str_at(svc, "/metadata/namespace");
        let name = str_at(svc, "/metadata/name");
        let spec = &svc["spec"];
        if spec["type"].as_str() == Some("ExternalName") {
            continue;
        }
        let mut ips: Vec<IpAddr> = spec["clusterIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str()?.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = spec["clusterIP"].as_str().and_then(|i| i.parse().ok())
        {
            ips.push(ip);
        }
        let affinity = (spec["sessionAffinity"].as_str() == Some("ClientIP")).then(|| {
            spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let internal_local = spec["internalTrafficPolicy"].as_str() == Some("Local");
        // Upstream allows `Local` on NodePort and LoadBalancer services only.
        let external_local = spec["externalTrafficPolicy"].as_str() == Some("Local")
            && matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
        for port in spec["ports"].as_array().into_iter().flatten() {
            let (Some(number), Some(proto)) = (
                port["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
                Proto::parse(port["protocol"].as_str()),
            ) else {
                continue;
            };
            let pname = port["name"].as_str().unwrap_or("").to_string();
            let node_port = port["nodePort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            let all = index.get(&(ns.to_string(), name.to_string(), pname.clone(), proto));
            for ip in &ips {
                let family = || {
                    all.into_iter()
                        .flatten()
                        .filter(|(e, _)| e.is_ipv4() == ip.is_ipv4())
                };
                let endpoints = family().map(|(e, _)| *e).collect();
                let placed = |want: Place| {
                    family()
                        .filter(move |(_, p)| **p == want)
                        .map(|(e, _)| *e)
                        .collect()
                };
                let (local_endpoints, remote_endpoints) =
                    (placed(Place::Here), placed(Place::Elsewhere));
                out.push(ServicePort {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port_name: if pname.is_empty() {
                        number.to_string()
                    } else {
                        pname.clone()
                    },
                    protocol: proto,
                    cluster_ip: *ip,
                    port: number,
                    node_port,
                    affinity,
                    endpoints,
                    local_endpoints,
                    remote_endpoints,
                    internal_local,
                    external_local,
                });
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec})
    }

    fn slice(endpoints: Value, ports: Value) -> Value {
        json!({"metadata": {"namespace": "ns", "name": "web-x",
                            "labels": {SERVICE_NAME_LABEL: "web"}},
               "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
    }

    #[test]
    fn only_ready_endpoints_of_the_matching_port_and_family_are_kept() {
        let services = [svc(json!({
            "clusterIP": "198.19.0.10", "clusterIPs": ["198.19.0.10", "fd00::10"],
            "type": "NodePort", "sessionAffinity": "ClientIP",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP"}]}))];
        let slices = [slice(
            json!([
                {"addresses": ["198.18.0.2"], "conditions": {"ready": true}},
                {"addresses": ["198.18.0.3"], "conditions": {"ready": false}},
                {"addresses": ["198.18.0.4"]},
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                   {"name": "other", "port": 9, "protocol": "TCP"}]),
        )];
        let ports = service_ports(&services, &slices, "n1");
        let http: Vec<_> = ports.iter().filter(|p| p.port == 80).collect();
        assert_eq!(http.len(), 2, "one per cluster IP");
        let v4 = http.iter().find(|p| p.cluster_ip.is_ipv4()).unwrap();
        assert_eq!(
            v4.endpoints,
            vec![
                "198.18.0.2:8080".parse().unwrap(),
                "198.18.0.4:8080".parse().unwrap()
            ]
        );
        assert_eq!(v4.node_port, Some(30080));
        assert_eq!(v4.affinity, Some(DEFAULT_AFFINITY_SECONDS));
        let v6 = http.iter().find(|p| p.cluster_ip.is_ipv6()).unwrap();
        assert!(v6.endpoints.is_empty(), "IPv4 endpoints never serve IPv6");
        let dns = ports.iter().find(|p| p.port == 53).unwrap();
        assert_eq!(dns.protocol, Proto::Udp);
        assert!(dns.endpoints.is_empty(), "no slice port named dns");
    }

    #[test]
    fn endpoints_on_this_node_and_traffic_policies_are_read() {
        let services = [
            svc(json!({"clusterIP": "198.19.0.10", "type": "NodePort",
                       "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                       "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})),
            // `externalTrafficPolicy` means nothing without a NodePort or load balancer.
            json!({"metadata": {"namespace": "ns", "name": "plain"},
                   "spec": {"clusterIP": "198.19.0.11", "externalTrafficPolicy": "Local",
                            "ports": [{"name": "http", "port": 80}]}}),
        ];
        let slices = [slice(
            json!([
                {"addresses": ["198.18.0.2"], "nodeName": "n1"},
                {"addresses": ["198.18.0.3"], "nodeName": "n2"},
                {"addresses": ["198.18.0.4"]},
            ]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        )];
        let ports = service_ports(&services, &slices, "n1");
        let web = ports.iter().find(|p| p.name == "web").unwrap();
        assert_eq!(web.endpoints.len(), 3);
        assert_eq!(
            web.local_endpoints,
            vec!["198.18.0.2:8080".parse().unwrap()]
        );
        assert!(web.internal_local && web.external_local);
        let plain = ports.iter().find(|p| p.name == "plain").unwrap();
        assert!(!plain.internal_local && !plain.external_local);
        let elsewhere = service_ports(&services, &slices, "n3");
        assert!(elsewhere[0].local_endpoints.is_empty());
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let services = [
            svc(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
            svc(
                json!({"type": "ExternalName", "externalName": "x.example", "ports": [{"port": 80}]}),
            ),
        ];
        assert!(service_ports(&services, &[], "n1").is_empty());
    }
}
