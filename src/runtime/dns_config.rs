//! A pod's `/etc/resolv.conf`, as the sandbox's CRI `DNSConfig` (docs/dns.md), by upstream's
//! kubelet rules: `ClusterFirst` (the default) gets the cluster DNS server, the search list
//! `<ns>.svc.<domain> svc.<domain> <domain>` followed by the node's, and `ndots:5`; `Default`,
//! and `ClusterFirst` on the host network, get the node's own resolv.conf; `None` gets only
//! `dnsConfig`, which every policy then extends (nameservers and searches appended, options
//! merged by name).

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;

use super::cri::v1;

/// The node's resolver configuration.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Upstream's limits: the resolver reads at most 3 nameservers and 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The cluster's DNS settings (`cluster-dns`, `cluster-domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub server: IpAddr,
    pub domain: String,
}

/// `nameserver`, `search`/`domain` and `options` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> v1::DnsConfig {
    let mut c = v1::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => c.servers.extend(words.next().map(str::to_string)),
            // The last search/domain line wins, as in glibc.
            Some("search" | "domain") => c.searches = words.map(str::to_string).collect(),
            Some("options") => c.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    c
}

fn option_name(o: &str) -> &str {
    o.split(':').next().unwrap_or(o)
}

/// The DNS config of `pod`'s sandbox, given the node's resolv.conf (`host`) and the cluster's
/// DNS settings (`None` when the cluster has none: `ClusterFirst` then behaves as `Default`).
pub fn for_pod(
    pod: &core::Pod,
    cluster: Option<&ClusterDns>,
    host: &v1::DnsConfig,
) -> v1::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => cluster,
        "ClusterFirst" if !host_network => cluster,
        _ => None,
    };
    let mut c = match (policy, cluster) {
        ("None", _) => v1::DnsConfig::default(),
        ("Default", _) | (_, None) => host.clone(),
        (_, Some(cluster)) => {
            let d = &cluster.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host.searches.iter().cloned());
            v1::DnsConfig {
                servers: vec![cluster.server.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(extra) = &spec.dns_config {
        c.servers
            .extend(extra.nameservers.iter().flatten().cloned());
        c.searches.extend(extra.searches.iter().flatten().cloned());
        for o in extra.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            c.options.retain(|x| option_name(x) != option_name(&text));
            c.options.push(text);
        }
    }
    let mut seen = std::collections::HashSet::new();
    c.searches.retain(|s| seen.insert(s.clone()));
    c.servers.truncate(MAX_NAMESERVERS);
    c.searches.truncate(MAX_SEARCHES);
    c
}

/// [`for_pod`] with the node's current `/etc/resolv.conf` (an unreadable one counts as empty).
pub async fn sandbox_dns(pod: &core::Pod, cluster: Option<&ClusterDns>) -> Option<v1::DnsConfig> {
    let host = tokio::fs::read_to_string(HOST_RESOLV_CONF)
        .await
        .unwrap_or_default();
    Some(for_pod(pod, cluster, &parse_resolv_conf(&host)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> core::Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    fn host() -> v1::DnsConfig {
        parse_resolv_conf(
            "# comment\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch example.net corp\noptions edns0 ndots:2\n",
        )
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            server: "10.43.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_gets_the_cluster_server_and_search_path() {
        let c = for_pod(&pod(json!({"containers": []})), Some(&cluster()), &host());
        assert_eq!(c.servers, ["10.43.0.10"]);
        assert_eq!(
            c.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.net",
                "corp"
            ]
        );
        assert_eq!(c.options, ["ndots:5"]);
        // On the host network ClusterFirst means the node's resolver, unless WithHostNet.
        let c = for_pod(
            &pod(json!({"hostNetwork": true})),
            Some(&cluster()),
            &host(),
        );
        assert_eq!(c, host());
        let c = for_pod(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            Some(&cluster()),
            &host(),
        );
        assert_eq!(c.servers, ["10.43.0.10"]);
    }

    #[test]
    fn default_and_none_policies_and_dns_config() {
        let c = for_pod(
            &pod(json!({"dnsPolicy": "Default"})),
            Some(&cluster()),
            &host(),
        );
        assert_eq!(c.servers, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(c.options, ["edns0", "ndots:2"]);
        let c = for_pod(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["192.0.2.53"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}})),
            Some(&cluster()),
            &host(),
        );
        assert_eq!(c.servers, ["192.0.2.53"]);
        assert_eq!(c.searches, ["a.example"]);
        assert_eq!(c.options, ["ndots:1", "rotate"]);
        // dnsConfig extends ClusterFirst: an option of the same name replaces the default.
        let c = for_pod(
            &pod(
                json!({"dnsConfig": {"nameservers": ["192.0.2.9", "192.0.2.10", "192.0.2.11"],
                                      "options": [{"name": "ndots", "value": "2"}]}}),
            ),
            Some(&cluster()),
            &host(),
        );
        assert_eq!(c.servers, ["10.43.0.10", "192.0.2.9", "192.0.2.10"]);
        assert_eq!(c.options, ["ndots:2"]);
        // A cluster without DNS: ClusterFirst falls back to the node's resolver.
        assert_eq!(for_pod(&pod(json!({})), None, &host()), host());
    }
}
