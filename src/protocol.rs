//! The registration ("supervisor") API's wire contract, shared by the server that serves it
//! (`supervisor`) and the nodes that call it (`agent`, joining servers): routes, headers and the
//! configuration document. Both sides name these constants, so a rename cannot split them.
//! See docs/architecture.md for who calls which route when.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The CA bundle a joining node pins by the token's hash (no authentication).
pub const CACERTS: &str = "/cacerts";
/// Upload of new certificate authorities (`rke2 certificate rotate-ca`).
pub const CERT_CACERTS: &str = "/v1-rke2/cert/cacerts";
/// Liveness (no authentication).
pub const PING: &str = "/ping";
/// The etcd member list, for joining servers.
pub const DB_INFO: &str = "/db/info";
/// Whether the server's runtime core is ready.
pub const READYZ: &str = "/v1-rke2/readyz";
/// The [`ControlConfig`] document.
pub const CONFIG: &str = "/v1-rke2/config";
/// The API endpoints of every ready server (a JSON list of `host:port`).
pub const APISERVERS: &str = "/v1-rke2/apiservers";
/// The encrypted cluster bootstrap data, for joining servers.
pub const SERVER_BOOTSTRAP: &str = "/v1-rke2/server-bootstrap";
/// The client CA certificate.
pub const CLIENT_CA: &str = "/v1-rke2/client-ca.crt";
/// The server CA certificate.
pub const SERVER_CA: &str = "/v1-rke2/server-ca.crt";
/// A kubelet serving certificate for the calling node.
pub const SERVING_KUBELET: &str = "/v1-rke2/serving-kubelet.crt";
/// A kubelet client certificate (`system:node:<name>`) for the calling node.
pub const CLIENT_KUBELET: &str = "/v1-rke2/client-kubelet.crt";
/// Server token rotation (PUT).
pub const TOKEN: &str = "/v1-rke2/token";

/// The node name a certificate request is for.
pub const NODE_NAME_HEADER: &str = "rke2-Node-Name";
/// The node password that binds a node name to one machine.
pub const NODE_PASSWORD_HEADER: &str = "rke2-Node-Password";
/// The node's addresses (comma-separated) for its serving certificate.
pub const NODE_IP_HEADER: &str = "rke2-Node-IP";

/// `/v1-rke2/config` body (Go-style field names as RKE2 agents read them, plus ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlConfig {
    #[serde(rename = "SupervisorPort")]
    pub supervisor_port: u16,
    #[serde(rename = "HTTPSPort")]
    pub https_port: u16,
    #[serde(rename = "ClusterDomain")]
    pub cluster_domain: String,
    #[serde(rename = "ClusterDNS")]
    pub cluster_dns: String,
    #[serde(rename = "ServiceIPRange")]
    pub service_ip_range: String,
    #[serde(rename = "ClusterIPRange")]
    pub cluster_ip_range: String,
    /// The settings compared when a server joins.
    #[serde(rename = "CriticalControlArgs")]
    pub critical: BTreeMap<String, String>,
    /// Voting etcd members right now.
    #[serde(rename = "ServerCount")]
    pub server_count: u32,
}
