//! The node agent of a server node: the same agent an `rke2 agent` runs, configured from the
//! server's own context and talking to this server's API.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ServerError;
use super::prepare::read_pem;
use crate::agent::node_agent::{NodeAgent, NodeAgentConfig};
use crate::cluster::context::Ctx;

/// Starts the node agent of a server node, talking to this server's own API.
pub fn spawn_for_server(
    ctx: Ctx,
    api: SocketAddr,
    identity: std::sync::Arc<crate::https::CertSlot>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<watch::Receiver<bool>, ServerError> {
    let kubelet = ctx.agent_paths.client_kubelet();
    // Role labels, etcd facts and node-labels a kubelet may not set are written by the server
    // itself (crate::controllers::server_node_metadata), never with the node identity.
    let labels = ctx
        .config
        .node
        .node_labels
        .iter()
        .filter(|l| crate::validation::node_may_set_label(&l.key))
        .cloned()
        .collect();
    let annotations = BTreeMap::from([
        ("rke2.io/hostname".to_string(), ctx.node.name.clone()),
        (
            "rke2.io/internal-ip".to_string(),
            ctx.node
                .ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    let cfg = NodeAgentConfig {
        node_name: ctx.node.name.clone(),
        api_url: format!("https://{api}"),
        ca_pem: String::from_utf8_lossy(&ctx.server_ca_bundle).into_owned(),
        identity_cert_pem: read_pem(&kubelet.cert)?,
        identity_key_pem: read_pem(&kubelet.key)?,
        identity_slot: Some(identity),
        server_name: Some(crate::agent::API_SERVER_NAME.into()),
        labels,
        taints: ctx.config.node.node_taints.clone(),
        annotations,
        addresses: ctx.node.ips.clone(),
        heartbeat_interval: ctx.config.node.heartbeat_interval,
    };
    let agent = NodeAgent::new(cfg)?;
    let (tx, rx) = watch::channel(false);
    let ticker = ctx
        .runtime
        .liveness("node-agent", ctx.config.node.heartbeat_interval);
    tracker.spawn(agent.run(tx, ticker, cancel));
    Ok(rx)
}

/// Starts the node runtime of a server node, talking to this server's own API with the node's
/// kubelet identity.
pub fn spawn_runtime_for_server(
    ctx: &Ctx,
    api: std::net::SocketAddr,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let kubelet = ctx.agent_paths.client_kubelet();
    let runtime_cfg = crate::runtime::NodeRuntimeConfig {
        node_name: ctx.node.name.clone(),
        data_dir: ctx.config.node.data_dir.clone(),
        runtime: ctx.config.node.runtime.clone(),
        node_ips: ctx.node.ips.clone(),
        api_url: format!("https://{api}"),
        ca_pem: String::from_utf8_lossy(&ctx.server_ca_bundle).into_owned(),
        identity_cert_pem: read_pem(&kubelet.cert)?,
        identity_key_pem: read_pem(&kubelet.key)?,
        server_name: Some(crate::agent::API_SERVER_NAME.into()),
        kubelet_tls: server_kubelet_tls(ctx),
        cluster_dns: Some(crate::runtime::dns_config::ClusterDns {
            server: ctx.config.cluster_dns,
            domain: ctx.config.cluster_domain.clone(),
        }),
    };
    crate::dns::spawn_for_node(&runtime_cfg, tracker, cancel.clone());
    let proxy_cfg = crate::proxy::ProxyConfig::for_node(
        &runtime_cfg,
        &ctx.config.cluster_cidr.to_string(),
        &ctx.config.cluster_dns.to_string(),
    );
    crate::proxy::spawn(proxy_cfg, tracker, cancel.clone());
    crate::runtime::spawn(runtime_cfg, tracker, cancel);
    Ok(())
}

/// A server's kubelet serving certificate, issued in memory from the kubelet serving CA (agents
/// get theirs from the supervisor); `None` while that CA is not loaded.
fn server_kubelet_tls(ctx: &Ctx) -> Option<crate::runtime::logs::KubeletTls> {
    let ca = ctx.kubelet_ca.get()?;
    let spec = crate::pki::LeafSpec::server(&ctx.node.name, vec![ctx.node.name.clone()]);
    let (cert_pem, key_pem) = ca
        .issue_with_new_key(&spec)
        .map_err(|e| tracing::warn!(component = "kubelet", "kubelet serving certificate: {e}"))
        .ok()?;
    Some(crate::runtime::logs::KubeletTls {
        cert_pem,
        key_pem,
        client_ca_pem: ctx.client_ca.cert_pem.clone(),
    })
}
