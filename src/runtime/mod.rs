//! The node's container runtime and pods (docs/workloads.md): every node, server or agent,
//! supervises its own containerd (or uses an existing one, `container-runtime-endpoint`),
//! imports the air-gap images in `<data-dir>/agent/images/`, writes its CNI config once the Node
//! has a `spec.podCIDR`, and runs the pods bound to it over the CRI like a kubelet
//! ([`kubelet`]). containerd is stopped last on shutdown, and its shims keep the containers
//! running, so a restarted daemon adopts its sandboxes instead of recreating them.

pub mod cni;
pub mod containerd;
pub mod cri;
pub mod dns_config;
pub mod images;
pub mod killall;
pub mod kubelet;
pub mod local_route;
pub mod logs;
pub mod podspec;
pub mod probes;
pub mod quantity;
pub mod registries;
pub mod routes;
pub mod streaming;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::runtime::{Cni, RuntimeConfig, normalize_image};

/// Runtime errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start containerd ({bin}): {source}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid private registry configuration {path}: {message}")]
    Registries { path: String, message: String },
    #[error("CRI: {0}")]
    Cri(String),
    #[error("default-runtime {name}: no such runtime on this node (found: {found})")]
    UnknownRuntime { name: String, found: String },
    #[error("containerd did not answer on {socket} within {waited:?}")]
    NotReady { socket: String, waited: Duration },
}

impl RuntimeError {
    pub fn io(path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Everything the node runtime needs from the node process.
#[derive(Debug, Clone)]
pub struct NodeRuntimeConfig {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub runtime: RuntimeConfig,
    /// The node's own addresses (status.hostIP).
    pub node_ips: Vec<std::net::IpAddr>,
    /// API access with the node's identity.
    pub api_url: String,
    pub ca_pem: String,
    pub identity_cert_pem: String,
    pub identity_key_pem: String,
    pub server_name: Option<String>,
    /// The kubelet API's certificate and client CA; `None` serves no kubelet API.
    pub kubelet_tls: Option<logs::KubeletTls>,
    /// The cluster's DNS server and domain for pods' resolv.conf (`None`: the node's own).
    pub cluster_dns: Option<dns_config::ClusterDns>,
}

/// Starts containerd (unless an endpoint is given), imports images and runs the pod loop until
/// `cancel`; containerd is stopped after the pod loop has ended.
pub fn spawn(cfg: NodeRuntimeConfig, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(async move {
        let node = cfg.node_name.clone();
        if let Err(e) = run(cfg, cancel).await {
            tracing::error!(component = "runtime", node = %node, "node runtime stopped: {e}");
        }
    });
}

async fn run(cfg: NodeRuntimeConfig, cancel: CancellationToken) -> Result<(), RuntimeError> {
    let layout = containerd::Layout::new(&cfg.data_dir, cfg.runtime.run_dir.as_deref());
    // containerd gets its own token: it must outlive the pod loop, so the last pod status
    // updates and stops still reach it during shutdown.
    let ctr_cancel = CancellationToken::new();
    // registries.yaml configures the containerd the node runs, as RKE2's does; an external
    // one (`container-runtime-endpoint`) keeps its own registry setup and gets no rewrites.
    let (socket, supervisor, registries) = match &cfg.runtime.endpoint {
        Some(sock) => (sock.clone(), None, registries::Registries::default()),
        None => {
            let registries = registries::Registries::load(&cfg.runtime.private_registry)?;
            containerd::write_config(&layout, &cfg.runtime, &registries)?;
            let ctr_cancel = ctr_cancel.clone();
            let layout2 = layout.clone();
            let handle =
                tokio::spawn(async move { containerd::supervise(layout2, ctr_cancel).await });
            (layout.socket(), Some(handle), registries)
        }
    };
    let api_tasks = TaskTracker::new();
    if cfg.runtime.cni == Cni::Bridge {
        let api = node_api(&cfg)?;
        api_tasks.spawn(routes::run(api, cfg.node_name.clone(), cancel.clone()));
    }
    let result = async {
        let cri = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            c = cri::Cri::wait_connect(&socket, Duration::from_secs(60)) => c?,
        };
        images::import_dir(&layout.images_dir(), &socket, &cancel).await;
        if let (Some(tls), Some(ip)) = (cfg.kubelet_tls.clone(), cfg.node_ips.first()) {
            let addr = std::net::SocketAddr::new(*ip, logs::KUBELET_PORT);
            if let Err(e) = logs::serve(addr, tls, cri.clone(), &api_tasks, cancel.clone()).await {
                tracing::error!(component = "kubelet", "{e}; container logs are not served");
            }
        }
        kubelet::Kubelet::new(cfg.clone(), layout.clone(), cri, registries)?
            .run(cancel.clone())
            .await;
        Ok(())
    }
    .await;
    api_tasks.close();
    api_tasks.wait().await;
    ctr_cancel.cancel();
    if let Some(h) = supervisor {
        let _ = h.await;
    }
    result
}

/// The API client with the node's identity, for the node runtime's own loops.
fn node_api(cfg: &NodeRuntimeConfig) -> Result<crate::kubeclient::Api, RuntimeError> {
    use crate::https::{ClientIdentity, HttpsClient, ServerTrust};
    let mut client = HttpsClient::new(
        &ServerTrust::Ca(cfg.ca_pem.clone()),
        Some(&ClientIdentity {
            cert_pem: cfg.identity_cert_pem.clone(),
            key_pem: cfg.identity_key_pem.clone(),
        }),
        Duration::from_secs(10),
    )
    .map_err(|e| RuntimeError::Cri(format!("API client: {e}")))?;
    if let Some(n) = &cfg.server_name {
        client = client.with_server_name(n);
    }
    Ok(crate::kubeclient::Api {
        client,
        base: cfg.api_url.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_normalised_like_docker() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(normalize_image("bb:1"), "docker.io/library/bb:1");
        assert_eq!(
            normalize_image("rancher/mirrored-pause:3.6"),
            "docker.io/rancher/mirrored-pause:3.6"
        );
        assert_eq!(
            normalize_image("reg.local:5000/x/y"),
            "reg.local:5000/x/y:latest"
        );
        assert_eq!(
            normalize_image("localhost/p@sha256:ab"),
            "localhost/p@sha256:ab"
        );
    }

    #[test]
    fn system_default_registry_prefixes_the_pause_image() {
        let mut c = RuntimeConfig::default();
        assert_eq!(c.pause_image(), "docker.io/rancher/mirrored-pause:3.6");
        c.system_default_registry = Some("reg.example:5000".into());
        assert_eq!(
            c.pause_image(),
            "reg.example:5000/rancher/mirrored-pause:3.6"
        );
        c.pause_image = "other.io/pause:1".into();
        assert_eq!(c.pause_image(), "other.io/pause:1");
        assert!(
            "weave"
                .parse::<Cni>()
                .unwrap_err()
                .contains("bridge or none")
        );
    }
}
