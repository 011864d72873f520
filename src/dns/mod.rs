//! Cluster DNS served by every node itself (docs/dns.md): the node watches Services and
//! EndpointSlices with its own identity, keeps the cluster's names in memory ([`records`]) and
//! answers on the `cluster-dns` address, port 53, UDP and TCP ([`server`], hickory-server),
//! which it makes a local address of the node (`runtime::local_route`) so its pods reach it
//! through their default route. Names outside the cluster domain are refused: nothing is
//! forwarded.

pub mod records;
pub mod server;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::https::ClientIdentity;
use crate::kubeclient::Api;
use crate::runtime::local_route;

/// The DNS port pods query.
pub const DNS_PORT: u16 = 53;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the node's DNS server needs from the node process.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// `cluster-dns`: the address pods query.
    pub cluster_dns: IpAddr,
    /// `cluster-domain`, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The node's data dir: names the node's own local route (see [`local_route::metric`]).
    pub data_dir: PathBuf,
    /// API access with the node's identity.
    pub api_url: String,
    pub ca_pem: String,
    pub identity_cert_pem: String,
    pub identity_key_pem: String,
    pub server_name: Option<String>,
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster-domain {domain:?}: {source}")]
    Domain {
        domain: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("API client: {0}")]
    Client(#[from] crate::https::TlsError),
    #[error("cannot serve DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts the DNS server of a node whose runtime config names the cluster's DNS settings.
pub fn spawn_for_node(
    node: &crate::runtime::NodeRuntimeConfig,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    let Some(cluster) = &node.cluster_dns else {
        return;
    };
    let cfg = DnsConfig {
        cluster_dns: cluster.server,
        cluster_domain: cluster.domain.clone(),
        data_dir: node.data_dir.clone(),
        api_url: node.api_url.clone(),
        ca_pem: node.ca_pem.clone(),
        identity_cert_pem: node.identity_cert_pem.clone(),
        identity_key_pem: node.identity_key_pem.clone(),
        server_name: node.server_name.clone(),
    };
    spawn(cfg, tracker, cancel);
}

/// Starts the node's DNS server in the background: it serves once both watches have listed,
/// and removes the node's local route when `cancel` fires. Failures are logged; pods then get
/// no cluster DNS but the node carries on.
pub fn spawn(cfg: DnsConfig, tracker: &TaskTracker, cancel: CancellationToken) {
    let tasks = tracker.clone();
    tracker.spawn(async move {
        if let Err(e) = run(cfg, &tasks, cancel).await {
            tracing::error!(component = "dns", "cluster DNS is not served: {e}");
        }
    });
}

fn api(cfg: &DnsConfig) -> Result<Api, DnsError> {
    let identity = ClientIdentity {
        cert_pem: cfg.identity_cert_pem.clone(),
        key_pem: cfg.identity_key_pem.clone(),
    };
    Ok(Api::new(
        &cfg.api_url,
        &cfg.ca_pem,
        identity,
        cfg.server_name.as_deref(),
        REQUEST_TIMEOUT,
    )?)
}

async fn run(
    cfg: DnsConfig,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    let records =
        records::Records::new(&cfg.cluster_domain).map_err(|source| DnsError::Domain {
            domain: cfg.cluster_domain.clone(),
            source,
        })?;
    let records = Arc::new(RwLock::new(records));
    let api = api(&cfg)?;
    let mut synced = Vec::new();
    for kind in [watch::SERVICES, watch::SLICES] {
        let (tx, rx) = tokio::sync::watch::channel(false);
        synced.push(rx);
        tasks.spawn(watch::follow(
            api.clone(),
            records.clone(),
            kind,
            tx,
            cancel.clone(),
        ));
    }
    // Answering before the lists arrive would deny names that exist.
    for rx in &mut synced {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = rx.wait_for(|v| *v) => if r.is_err() { return Ok(()) },
        }
    }
    let metric = local_route::metric(&cfg.data_dir);
    let agent_dir = cfg.data_dir.join("agent");
    if let Err(e) = local_route::record(&agent_dir, cfg.cluster_dns, metric) {
        tracing::warn!(
            component = "dns",
            "cannot record the local route in {}: {e}",
            agent_dir.join(local_route::ROUTE_FILE).display()
        );
    }
    if let Err(e) = local_route::add(cfg.cluster_dns, metric).await {
        tracing::warn!(
            component = "dns",
            "cannot make {} local: {e}",
            cfg.cluster_dns
        );
    }
    let addr = SocketAddr::new(cfg.cluster_dns, DNS_PORT);
    let served = server::serve(addr, records, cancel.clone())
        .map_err(|source| DnsError::Bind { addr, source });
    let served = match served {
        Ok(handle) => {
            tracing::info!(
                component = "dns",
                "serving cluster DNS for {} on {addr}",
                cfg.cluster_domain
            );
            // The server task ends at `cancel`, or on a socket error it logs.
            let _ = handle.await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    match local_route::remove(cfg.cluster_dns, metric).await {
        Ok(()) => local_route::forget(&agent_dir),
        Err(e) => tracing::warn!(
            component = "dns",
            "cannot remove the local route for {}: {e}",
            cfg.cluster_dns
        ),
    }
    served
}
