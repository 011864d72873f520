//! The service proxy every node runs (docs/service-proxy.md): it watches Services and
//! EndpointSlices through the node's API identity and programs the node's nftables table so
//! ClusterIP and NodePort connections reach ready endpoints ([`nft`]). Each sync is one atomic
//! `nft` transaction; only the difference to the last applied ruleset is sent, and the whole
//! table is replaced at start and after any failure. A clean shutdown deletes the table (no rule
//! outlives the node's knowledge of the services); after a crash `rke2 killall` removes it.

pub mod model;
pub mod nft;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kubeclient::Api;

const SERVICES: &str = "/api/v1/services";
const ENDPOINT_SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// A full re-list even without watch events (a missed event cannot last longer).
const RESYNC: Duration = Duration::from_secs(30);
/// Events arriving this close together are applied in one sync.
const COALESCE: Duration = Duration::from_millis(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The file under `<data-dir>/agent/` naming the node's table, for `rke2 killall`.
pub const TABLE_FILE: &str = "proxy-table";

/// What the proxy needs from the node process.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub node_ips: Vec<IpAddr>,
    pub cluster_cidrs: Vec<IpNet>,
    /// The cluster DNS address: answered by the nodes themselves (crate::dns), never proxied.
    pub cluster_dns: Option<IpAddr>,
    pub api_url: String,
    pub ca_pem: String,
    pub identity_cert_pem: String,
    pub identity_key_pem: String,
    pub server_name: Option<String>,
}

impl ProxyConfig {
    /// The proxy of the node whose runtime is `rt`, with the cluster CIDRs in `cidrs`
    /// (comma-separated, as the configuration documents spell them; unparsable ones skipped).
    pub fn for_node(
        rt: &crate::runtime::NodeRuntimeConfig,
        cidrs: &str,
        cluster_dns: &str,
    ) -> ProxyConfig {
        ProxyConfig {
            node_name: rt.node_name.clone(),
            data_dir: rt.data_dir.clone(),
            node_ips: rt.node_ips.clone(),
            cluster_cidrs: cidrs
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect(),
            cluster_dns: cluster_dns.parse().ok(),
            api_url: rt.api_url.clone(),
            ca_pem: rt.ca_pem.clone(),
            identity_cert_pem: rt.identity_cert_pem.clone(),
            identity_key_pem: rt.identity_key_pem.clone(),
            server_name: rt.server_name.clone(),
        }
    }
}

/// Runs the proxy until `cancel`.
pub fn spawn(cfg: ProxyConfig, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        if let Err(e) = run(cfg, cancel).await {
            tracing::error!(component = "proxy", "service proxy stopped: {e}");
        }
    });
}

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("API client: {0}")]
    Client(#[source] crate::https::TlsError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

async fn run(cfg: ProxyConfig, cancel: CancellationToken) -> Result<(), ProxyError> {
    let api = Api::new(
        &cfg.api_url,
        &cfg.ca_pem,
        crate::https::ClientIdentity {
            cert_pem: cfg.identity_cert_pem.clone(),
            key_pem: cfg.identity_key_pem.clone(),
        },
        cfg.server_name.as_deref(),
        REQUEST_TIMEOUT,
    )
    .map_err(ProxyError::Client)?;
    let spec = nft::TableSpec {
        name: nft::table_name(&cfg.node_name, &cfg.data_dir),
        node_ips: cfg.node_ips.clone(),
        cluster_cidrs: cfg.cluster_cidrs.clone(),
    };
    let agent_dir = cfg.data_dir.join("agent");
    crate::fsutil::write_atomic_mkdir(&agent_dir.join(TABLE_FILE), spec.name.as_bytes(), 0o644)
        .map_err(|source| ProxyError::Io {
            path: agent_dir.join(TABLE_FILE).display().to_string(),
            source,
        })?;
    let wake = Arc::new(Notify::new());
    let watches = TaskTracker::new();
    for path in [SERVICES, ENDPOINT_SLICES] {
        let (api, wake, cancel) = (api.clone(), wake.clone(), cancel.clone());
        watches.spawn(async move {
            api.wake_on_watch(&format!("{path}?watch=true"), &wake, &cancel)
                .await
        });
    }
    let mut applied: Option<nft::Ruleset> = None;
    loop {
        match list(&api).await {
            Ok((services, slices)) => {
                let mut ports = model::service_ports(&services, &slices, &cfg.node_name);
                ports.retain(|p| Some(p.cluster_ip) != cfg.cluster_dns);
                applied = sync(&spec, applied.take(), nft::render(&spec, &ports)).await;
            }
            Err(e) => tracing::debug!(component = "proxy", "listing services: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(COALESCE) => {}
                }
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
    watches.close();
    watches.wait().await;
    if let Err(e) = nft::delete_table(&spec.name).await {
        tracing::warn!(component = "proxy", table = %spec.name, "removing the table: {e}");
    }
    Ok(())
}

/// Applies `new` over `applied` (the whole table when `None`); returns what is now applied,
/// `None` after a failure so the next sync replaces the whole table.
pub async fn sync(
    spec: &nft::TableSpec,
    applied: Option<nft::Ruleset>,
    new: nft::Ruleset,
) -> Option<nft::Ruleset> {
    let script = match &applied {
        Some(old) => nft::diff_script(spec, old, &new),
        None => nft::full_script(spec, &new),
    };
    if script.is_empty() {
        return Some(new);
    }
    match nft::apply(&script).await {
        Ok(()) => Some(new),
        Err(e) => {
            tracing::warn!(component = "proxy", table = %spec.name, "nftables sync failed: {e}");
            None
        }
    }
}

async fn get_items(api: &Api, path: &str) -> Result<Vec<Value>, String> {
    let r = api
        .call(http::Method::GET, path, None, None)
        .await
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(format!("GET {path}: {} {}", r.status, r.error_message()));
    }
    let mut v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    match v["items"].take() {
        Value::Array(items) => Ok(items),
        _ => Ok(Vec::new()),
    }
}

async fn list(api: &Api) -> Result<(Vec<Value>, Vec<Value>), String> {
    let (services, slices) =
        tokio::join!(get_items(api, SERVICES), get_items(api, ENDPOINT_SLICES));
    Ok((services?, slices?))
}
