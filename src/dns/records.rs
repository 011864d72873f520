//! The cluster DNS data and its answers, pure and in memory (docs/dns.md): Services and
//! EndpointSlices as the node's watches last saw them, and the answer to one question about a
//! name, following upstream's DNS specification for Kubernetes:
//! `<svc>.<ns>.svc.<domain>` (ClusterIPs, or the ready endpoints of a headless Service, or a
//! CNAME for an ExternalName Service), `<endpoint>.<svc>.<ns>.svc.<domain>` for headless
//! Services, `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV, `<a-b-c-d>.<ns>.pod.<domain>`; every
//! other name in the cluster domain is NXDOMAIN and names outside it are REFUSED.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

/// TTL of every answer, in seconds (upstream CoreDNS's default for the cluster zone): short,
/// so a changed Service is seen within seconds.
pub const TTL: u32 = 5;

/// The label naming the Service an EndpointSlice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port a Service (or its endpoints) serves, for SRV records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    /// The port's name, lower case; unnamed ports have no SRV record.
    name: String,
    /// `tcp`, `udp` or `sctp`.
    protocol: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Service {
    cluster_ips: Vec<IpAddr>,
    headless: bool,
    external_name: Option<Name>,
    publish_not_ready: bool,
    ports: Vec<Port>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    addresses: Vec<IpAddr>,
    ready: bool,
    hostname: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Slice {
    endpoints: Vec<Endpoint>,
    ports: Vec<Port>,
}

/// What the server sends back for one question.
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    /// The zone's SOA on negative answers (NXDOMAIN and no data), so resolvers cache them
    /// for [`TTL`] seconds only.
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn code(code: ResponseCode) -> Answer {
        Answer {
            code,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// The cluster's names, kept current by the watches.
#[derive(Debug, Clone)]
pub struct Records {
    domain: Name,
    /// (namespace, name) → Service.
    services: HashMap<(String, String), Service>,
    /// (namespace, service) → slice name → slice.
    slices: HashMap<(String, String), BTreeMap<String, Slice>>,
    /// (namespace, slice name) → service, to drop a slice whose label changed.
    slice_owner: HashMap<(String, String), String>,
    /// Bumped at every change; the SOA serial.
    serial: u32,
}

fn port_of(name: Option<&str>, protocol: Option<&str>, port: Option<i32>) -> Option<Port> {
    Some(Port {
        name: name.unwrap_or_default().to_ascii_lowercase(),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port: u16::try_from(port?).ok()?,
    })
}

/// `10.1.2.3` → `10-1-2-3`, `fd00::1` → `fd00--1`: how an address is spelled as one label.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`].
fn undashed(label: &str) -> Option<IpAddr> {
    label
        .replace('-', ".")
        .parse()
        .ok()
        .or_else(|| label.replace('-', ":").parse().ok())
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Records {
    /// Empty records for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Result<Records, hickory_proto::ProtoError> {
        let mut domain = Name::from_ascii(domain)?.to_lowercase();
        domain.set_fqdn(true);
        Ok(Records {
            domain,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            serial: 1,
        })
    }

    fn changed(&mut self) {
        self.serial = self.serial.wrapping_add(1).max(1);
    }

    /// Adds or replaces a Service.
    pub fn put_service(&mut self, svc: &core::Service) {
        let spec = svc.spec.clone().unwrap_or_default();
        let ips: Vec<String> = match spec.cluster_ips.clone() {
            Some(list) if !list.is_empty() => list,
            _ => spec.cluster_ip.clone().into_iter().collect(),
        };
        let headless = ips.iter().any(|i| i == "None");
        let external_name = (spec.type_.as_deref() == Some("ExternalName"))
            .then_some(spec.external_name.as_deref())
            .flatten()
            .and_then(|n| Name::from_ascii(n).ok())
            .map(|mut n| {
                n.set_fqdn(true);
                n
            });
        let entry = Service {
            cluster_ips: ips.iter().filter_map(|i| i.parse().ok()).collect(),
            headless,
            external_name,
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| port_of(p.name.as_deref(), p.protocol.as_deref(), Some(p.port)))
                .collect(),
        };
        self.services.insert(key(&svc.metadata), entry);
        self.changed();
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
        self.changed();
    }

    /// Adds or replaces an EndpointSlice (filed under the Service its label names).
    pub fn put_slice(&mut self, slice: &discovery::EndpointSlice) {
        let (ns, name) = key(&slice.metadata);
        self.delete_slice(&ns, &name);
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            return;
        };
        let entry = Slice {
            endpoints: slice
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    // Upstream: an unset `ready` means ready.
                    ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                    hostname: e.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
                })
                .collect(),
            ports: slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| port_of(p.name.as_deref(), p.protocol.as_deref(), p.port))
                .collect(),
        };
        self.slice_owner
            .insert((ns.clone(), name.clone()), service.clone());
        self.slices
            .entry((ns, service))
            .or_default()
            .insert(name, entry);
        self.changed();
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let k = (namespace.to_string(), name.to_string());
        if let Some(service) = self.slice_owner.remove(&k) {
            let owner = (k.0, service);
            if let Some(m) = self.slices.get_mut(&owner) {
                m.remove(name);
                if m.is_empty() {
                    self.slices.remove(&owner);
                }
            }
            self.changed();
        }
    }

    /// Replaces everything with a fresh list (after a relist).
    pub fn reset_services(&mut self, list: &[core::Service]) {
        self.services.clear();
        for s in list {
            self.put_service(s);
        }
        self.changed();
    }

    /// Replaces every EndpointSlice with a fresh list (after a relist).
    pub fn reset_slices(&mut self, list: &[discovery::EndpointSlice]) {
        self.slices.clear();
        self.slice_owner.clear();
        for s in list {
            self.put_slice(s);
        }
        self.changed();
    }

    /// The cluster domain, fully qualified and lower case.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    fn soa(&self) -> Record {
        let name = |s: &str| {
            Name::from_ascii(s)
                .and_then(|n| n.append_domain(&self.domain))
                .unwrap_or_else(|_| self.domain.clone())
        };
        Record::from_rdata(
            self.domain.clone(),
            TTL,
            RData::SOA(SOA::new(
                name("ns.dns"),
                name("hostmaster"),
                self.serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        )
    }

    fn no_data(&self) -> Answer {
        Answer {
            authority: vec![self.soa()],
            ..Answer::code(ResponseCode::NoError)
        }
    }

    fn nx_domain(&self) -> Answer {
        Answer {
            authority: vec![self.soa()],
            ..Answer::code(ResponseCode::NXDomain)
        }
    }

    /// The answer to the question `(qname, qtype)`.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let qname = qname.to_lowercase();
        let mut fqdn = qname.clone();
        fqdn.set_fqdn(true);
        if !self.domain.zone_of(&fqdn) {
            return Answer::code(ResponseCode::Refused);
        }
        let extra = usize::from(fqdn.num_labels() - self.domain.num_labels());
        let labels: Vec<String> = fqdn
            .iter()
            .take(extra)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        match l.as_slice() {
            [] if qtype == RecordType::SOA => Answer {
                answers: vec![self.soa()],
                ..Answer::code(ResponseCode::NoError)
            },
            [] | ["svc"] | ["pod"] => self.no_data(),
            [ns, "svc"] => {
                if self.services.keys().any(|(n, _)| n == ns) {
                    self.no_data()
                } else {
                    self.nx_domain()
                }
            }
            [_, "pod"] => self.no_data(),
            [ip, _, "pod"] => match undashed(ip) {
                Some(ip) => self.addresses(&fqdn, qtype, &[ip]),
                None => self.nx_domain(),
            },
            [svc, ns, "svc"] => self.service(&fqdn, qtype, ns, svc),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv_by_port(&fqdn, qtype, ns, svc, &port[1..], &proto[1..])
            }
            [proto, svc, ns, "svc"] if proto.starts_with('_') => {
                // `_tcp.<svc>...` exists as an empty non-terminal when a port uses the protocol.
                match self.services.get(&(ns.to_string(), svc.to_string())) {
                    Some(s) if s.ports.iter().any(|p| p.protocol == proto[1..]) => self.no_data(),
                    _ => self.nx_domain(),
                }
            }
            [endpoint, svc, ns, "svc"] => self.endpoint(&fqdn, qtype, ns, svc, endpoint),
            _ => self.nx_domain(),
        }
    }

    /// A/AAAA records of `name` for those of `ips` in the asked family.
    fn address_records(name: &Name, qtype: RecordType, ips: &[IpAddr]) -> Vec<Record> {
        ips.iter()
            .filter_map(|ip| match (qtype, ip) {
                (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(A(*v4))),
                (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(name.clone(), TTL, rdata))
            .collect()
    }

    fn addresses(&self, name: &Name, qtype: RecordType, ips: &[IpAddr]) -> Answer {
        let answers = Self::address_records(name, qtype, ips);
        if answers.is_empty() {
            return self.no_data();
        }
        Answer {
            answers,
            ..Answer::code(ResponseCode::NoError)
        }
    }

    /// The endpoints a headless Service's names resolve to: ready ones (or all with
    /// `publishNotReadyAddresses`), each with its label under the Service name.
    fn endpoints(&self, ns: &str, svc: &str, service: &Service) -> Vec<(String, Vec<IpAddr>)> {
        let mut out: Vec<(String, Vec<IpAddr>)> = Vec::new();
        let Some(slices) = self.slices.get(&(ns.to_string(), svc.to_string())) else {
            return out;
        };
        for e in slices.values().flat_map(|s| &s.endpoints) {
            if !(e.ready || service.publish_not_ready) || e.addresses.is_empty() {
                continue;
            }
            let label = e
                .hostname
                .clone()
                .unwrap_or_else(|| dashed(&e.addresses[0]));
            if !out.iter().any(|(l, _)| *l == label) {
                out.push((label, e.addresses.clone()));
            }
        }
        out
    }

    fn service(&self, fqdn: &Name, qtype: RecordType, ns: &str, svc: &str) -> Answer {
        let Some(service) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return self.nx_domain();
        };
        if let Some(target) = &service.external_name {
            return Answer {
                answers: vec![Record::from_rdata(
                    fqdn.clone(),
                    TTL,
                    RData::CNAME(CNAME(target.clone())),
                )],
                ..Answer::code(ResponseCode::NoError)
            };
        }
        match qtype {
            RecordType::A | RecordType::AAAA if service.headless => {
                let ips: Vec<IpAddr> = self
                    .endpoints(ns, svc, service)
                    .into_iter()
                    .flat_map(|(_, a)| a)
                    .collect();
                self.addresses(fqdn, qtype, &ips)
            }
            RecordType::A | RecordType::AAAA => self.addresses(fqdn, qtype, &service.cluster_ips),
            RecordType::SRV => {
                let ports: Vec<Port> = service
                    .ports
                    .iter()
                    .filter(|p| !p.name.is_empty())
                    .cloned()
                    .collect();
                self.srv(fqdn, ns, svc, service, &ports)
            }
            _ => self.no_data(),
        }
    }

    /// SRV records for `ports` of a Service: its own name as target (with its ClusterIPs as
    /// additional records), or each ready endpoint's name for a headless Service.
    fn srv(&self, owner: &Name, ns: &str, svc: &str, service: &Service, ports: &[Port]) -> Answer {
        let svc_name = match Name::from_labels([svc, ns, "svc"]) {
            Ok(n) => n
                .append_domain(&self.domain)
                .unwrap_or_else(|_| owner.clone()),
            Err(_) => return self.nx_domain(),
        };
        let targets: Vec<(Name, Vec<IpAddr>)> = if service.headless {
            self.endpoints(ns, svc, service)
                .into_iter()
                .filter_map(|(label, ips)| {
                    Some((
                        Name::from_labels([label.as_str()])
                            .ok()?
                            .append_domain(&svc_name)
                            .ok()?,
                        ips,
                    ))
                })
                .collect()
        } else {
            vec![(svc_name, service.cluster_ips.clone())]
        };
        let weight = u16::try_from(100 / targets.len().max(1))
            .unwrap_or(1)
            .max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (target, ips) in &targets {
            for p in ports {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, p.port, target.clone())),
                ));
            }
            for t in [RecordType::A, RecordType::AAAA] {
                additionals.extend(Self::address_records(target, t, ips));
            }
        }
        if answers.is_empty() {
            return self.no_data();
        }
        Answer {
            answers,
            additionals,
            ..Answer::code(ResponseCode::NoError)
        }
    }

    fn srv_by_port(
        &self,
        fqdn: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
    ) -> Answer {
        let Some(service) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return self.nx_domain();
        };
        // A headless Service's ports are its endpoints' (target ports), as upstream's.
        let mut ports: Vec<Port> = if service.headless {
            self.slices
                .get(&(ns.to_string(), svc.to_string()))
                .into_iter()
                .flat_map(|m| m.values().flat_map(|s| s.ports.clone()))
                .collect()
        } else {
            service.ports.clone()
        };
        ports.retain(|p| p.name == port && p.protocol == proto);
        ports.dedup();
        if ports.is_empty() {
            return self.nx_domain();
        }
        if qtype != RecordType::SRV {
            return self.no_data();
        }
        self.srv(fqdn, ns, svc, service, &ports)
    }

    fn endpoint(&self, fqdn: &Name, qtype: RecordType, ns: &str, svc: &str, label: &str) -> Answer {
        let Some(service) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return self.nx_domain();
        };
        if !service.headless {
            return self.nx_domain();
        }
        match self
            .endpoints(ns, svc, service)
            .into_iter()
            .find(|(l, _)| l == label)
        {
            Some((_, ips)) => self.addresses(fqdn, qtype, &ips),
            None => self.nx_domain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> core::Service {
        serde_json::from_value(v).unwrap()
    }

    fn records() -> Records {
        let mut r = Records::new("cluster.local").unwrap();
        r.put_service(&svc(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "198.19.0.20", "clusterIPs": ["198.19.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                               {"port": 8080, "protocol": "TCP"}]}
        })));
        r.put_service(&svc(json!({
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        })));
        r.put_service(&svc(json!({
            "metadata": {"name": "v6", "namespace": "default"},
            "spec": {"clusterIPs": ["fd00:43::14"]}
        })));
        r.put_service(&svc(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        })));
        let slice: discovery::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "db-abc", "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.0.5"], "conditions": {"ready": true}},
                {"addresses": ["198.18.0.6"], "conditions": {"ready": false}},
                {"addresses": ["198.18.0.7"], "hostname": "db-0"}
            ],
            "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}]
        }))
        .unwrap();
        r.put_slice(&slice);
        r
    }

    fn ask(r: &Records, name: &str, t: RecordType) -> Answer {
        r.answer(&Name::from_ascii(name).unwrap(), t)
    }

    fn rdatas(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_services_answer_a_and_aaaa_by_family() {
        let r = records();
        let a = ask(&r, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(rdatas(&a), ["198.19.0.20"]);
        // Case does not matter, and the name without the final dot is the same name.
        let a = ask(&r, "WEB.Default.svc.cluster.local", RecordType::A);
        assert_eq!(rdatas(&a), ["198.19.0.20"]);
        // No AAAA for an IPv4 service: no data, with the SOA for negative caching.
        let a = ask(&r, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authority[0].record_type(), RecordType::SOA);
        let a = ask(&r, "v6.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), ["fd00:43::14"]);
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_their_names() {
        let r = records();
        let a = ask(&r, "db.apps.svc.cluster.local.", RecordType::A);
        let mut got = rdatas(&a);
        got.sort();
        assert_eq!(
            got,
            ["198.18.0.5", "198.18.0.7"],
            "not-ready 198.18.0.6 left out"
        );
        let a = ask(&r, "198-18-0-5.db.apps.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), ["198.18.0.5"]);
        let a = ask(&r, "db-0.db.apps.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), ["198.18.0.7"]);
        let a = ask(&r, "198-18-0-6.db.apps.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NXDomain);
        // publishNotReadyAddresses includes the others.
        let mut r = r;
        r.put_service(&svc(json!({
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}
        })));
        assert_eq!(
            ask(&r, "db.apps.svc.cluster.local.", RecordType::A)
                .answers
                .len(),
            3
        );
    }

    #[test]
    fn srv_records_name_the_port_and_target() {
        let r = records();
        let a = ask(
            &r,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(rdatas(&a), ["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(a.additionals[0].data.to_string(), "198.19.0.20");
        // Unknown port or protocol: no such name.
        for n in [
            "_https._tcp.web.default.svc.cluster.local.",
            "_http._udp.web.default.svc.cluster.local.",
        ] {
            assert_eq!(
                ask(&r, n, RecordType::SRV).code,
                ResponseCode::NXDomain,
                "{n}"
            );
        }
        // The service name's own SRV lists its named ports.
        let a = ask(&r, "web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(rdatas(&a), ["0 100 80 web.default.svc.cluster.local."]);
        // Headless: one record per ready endpoint, on the endpoint's port.
        let a = ask(&r, "_pg._tcp.db.apps.svc.cluster.local.", RecordType::SRV);
        let mut got = rdatas(&a);
        got.sort();
        assert_eq!(
            got,
            [
                "0 50 15432 198-18-0-5.db.apps.svc.cluster.local.",
                "0 50 15432 db-0.db.apps.svc.cluster.local."
            ]
        );
        assert_eq!(a.additionals.len(), 2);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_outside_names_refused() {
        let r = records();
        for n in [
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "a.b.c.d.e.f.cluster.local.",
            "web.default.cluster.local.",
        ] {
            let a = ask(&r, n, RecordType::A);
            assert_eq!(a.code, ResponseCode::NXDomain, "{n}");
            assert_eq!(a.authority.len(), 1, "{n}: SOA");
        }
        for n in ["example.org.", "cluster.local.example.org.", "local."] {
            assert_eq!(ask(&r, n, RecordType::A).code, ResponseCode::Refused, "{n}");
        }
        // The zone itself and existing namespaces are names without data.
        for n in [
            "cluster.local.",
            "svc.cluster.local.",
            "default.svc.cluster.local.",
        ] {
            let a = ask(&r, n, RecordType::A);
            assert_eq!(a.code, ResponseCode::NoError, "{n}");
            assert!(a.answers.is_empty(), "{n}");
        }
        let a = ask(&r, "cluster.local.", RecordType::SOA);
        assert_eq!(a.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn pods_external_names_and_deletions() {
        let mut r = records();
        let a = ask(&r, "198-18-3-4.default.pod.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), ["198.18.3.4"]);
        let a = ask(&r, "fd00--7.default.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), ["fd00::7"]);
        let a = ask(&r, "x-y.default.pod.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NXDomain);
        let a = ask(&r, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), ["example.org."]);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        r.delete_service("default", "web");
        let a = ask(&r, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NXDomain);
        r.delete_slice("apps", "db-abc");
        let a = ask(&r, "db.apps.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert!(a.answers.is_empty());
    }
}
