//! Getting a server's files in place before anything listens: node identity, certificate
//! authorities (created, loaded, or downloaded from the cluster when joining), the credentials
//! store, and this server's own leaf certificates with the right SANs.

use std::net::IpAddr;
use std::path::Path;

use super::ServerError;
use crate::bootstrap::BootstrapData;
use crate::clientaccess::ClusterAccess;
use crate::cluster::context::{NodeIdentity, serving_sans};
use crate::config::{NodeConfig, ServerConfig};
use crate::fsutil::{self, IoContext};
use crate::host::hostname;
use crate::paths::{AgentPaths, ServerPaths};
use crate::pki::{CertAuthority, LeafSpec, LeafUsage};
use crate::protocol::{self, ControlConfig};
use crate::token::{self, Credentials, JoinToken, Passwd, Secret};
use tokio_util::sync::CancellationToken;

/// Resolves node name and IPs: configured values, else the bind address, else the
/// default-route address.
pub fn node_identity(node: &NodeConfig, bind: Option<IpAddr>) -> Result<NodeIdentity, ServerError> {
    let name = node.node_name.clone().unwrap_or_else(hostname);
    crate::host::check_node_name(&name)?;
    let ips = crate::host::node_ips(&node.node_ips, bind.filter(|b| !b.is_unspecified()))?;
    Ok(NodeIdentity { name, ips })
}

/// The five CAs.
pub struct Authorities {
    pub server: CertAuthority,
    pub client: CertAuthority,
    pub etcd_server: CertAuthority,
    pub etcd_peer: CertAuthority,
}

/// Loads the CAs, creating missing ones (first server) when `create` is set.
pub fn authorities(paths: &ServerPaths, create: bool) -> Result<Authorities, ServerError> {
    let load = |pair: crate::paths::CertPair, prefix: &str| -> Result<CertAuthority, ServerError> {
        if create {
            Ok(CertAuthority::load_or_create(&pair, prefix)?.0)
        } else if pair.cert.exists() {
            Ok(CertAuthority::load(&pair)?)
        } else {
            Err(ServerError::IncompleteDataDir(pair.cert.clone()))
        }
    };
    let a = Authorities {
        server: load(paths.server_ca(), "rke2-server")?,
        client: load(paths.client_ca(), "rke2-client")?,
        etcd_server: load(paths.etcd_server_ca(), "etcd-server")?,
        etcd_peer: load(paths.etcd_peer_ca(), "etcd-peer")?,
    };
    load(paths.request_header_ca(), "rke2-request-header")?;
    if create {
        // A new cluster gets its kubelet serving CA with the others; older clusters get it
        // through the bootstrap data (crate::server::ensure_kubelet_ca).
        CertAuthority::load_or_create(&paths.kubelet_serving_ca(), "rke2-kubelet-serving")?;
    }
    Ok(a)
}

/// Makes sure every leaf certificate this server uses exists and is current (issued by the
/// current CAs, with the right names, not within its renewal window); returns whether any was
/// (re)issued. Run at start and periodically while running (crate::server::cert_renewal).
pub fn leaf_certificates(
    config: &ServerConfig,
    node: &NodeIdentity,
    paths: &ServerPaths,
    agent_paths: &AgentPaths,
    cas: &Authorities,
) -> Result<bool, ServerError> {
    // A server that had certificates before and regenerates any now renewed them.
    let had_certificates = paths.serving().cert.exists();
    let validity = config.leaf_cert_validity;
    let sans = serving_sans(config, node);
    let mut etcd_sans: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        node.name.clone(),
    ];
    etcd_sans.extend(node.ips.iter().map(|ip| ip.to_string()));
    let etcd_leaf = |cn: &str, sans: Vec<String>| LeafSpec {
        common_name: cn.into(),
        organizations: vec![],
        sans,
        usage: LeafUsage::ServerAndClient,
        validity,
    };
    let regenerated = [
        cas.server.ensure_leaf(
            &paths.serving(),
            &LeafSpec::server("kube-apiserver", sans).valid_for(validity),
        )?,
        cas.client.ensure_leaf(
            &paths.client_admin(),
            &LeafSpec::client("system:admin", &["system:masters"]).valid_for(validity),
        )?,
        cas.client.ensure_leaf(
            &paths.client_supervisor(),
            &LeafSpec::client("system:rke2-supervisor", &["system:masters"]).valid_for(validity),
        )?,
        cas.etcd_server.ensure_leaf(
            &paths.etcd_client(),
            &LeafSpec::client("etcd-client", &[]).valid_for(validity),
        )?,
        cas.etcd_server.ensure_leaf(
            &paths.etcd_server(),
            &etcd_leaf("etcd-server", etcd_sans.clone()),
        )?,
        cas.etcd_peer
            .ensure_leaf(&paths.etcd_peer(), &etcd_leaf("etcd-peer", etcd_sans))?,
        cas.client.ensure_leaf(
            &agent_paths.client_kubelet(),
            &LeafSpec::client(&format!("system:node:{}", node.name), &["system:nodes"])
                .valid_for(validity),
        )?,
    ];
    let renewed = regenerated.iter().any(|r| *r);
    if renewed {
        tracing::info!(component = "pki", node = %node.name, "generated or renewed leaf certificates");
    }
    for (src, dst) in [
        (paths.server_ca().cert, agent_paths.server_ca()),
        (paths.client_ca().cert, agent_paths.client_ca()),
    ] {
        let bytes = std::fs::read(&src).at(&src)?;
        if std::fs::read(&dst).ok().as_deref() != Some(bytes.as_slice()) {
            fsutil::write_atomic_mkdir(&dst, &bytes, fsutil::PUBLIC_FILE_MODE).at(&dst)?;
        }
    }
    Ok(had_certificates && renewed)
}

/// The password part of `agent-token` (which may be a full token).
pub fn agent_password(config: &ServerConfig) -> Result<Option<Secret>, ServerError> {
    match &config.agent_token {
        None => Ok(None),
        Some(t) if t.expose().starts_with("K10") => match JoinToken::parse(t.expose())?.credentials
        {
            Credentials::Basic { password, .. } => Ok(Some(password)),
            Credentials::Bootstrap { .. } => Err(ServerError::AgentTokenIsBootstrapToken),
        },
        Some(t) => Ok(Some(t.clone())),
    }
}

/// Builds the credentials store of a first server.
pub fn initial_passwd(
    existing: Option<Passwd>,
    server_pw: Secret,
    agent_pw: Option<Secret>,
) -> Passwd {
    let mut p = existing.unwrap_or_default();
    p.set("server", server_pw.clone(), token::SERVER_GROUP);
    p.set("node", agent_pw.unwrap_or(server_pw), token::AGENT_GROUP);
    p
}

/// What a joining server learned from the cluster.
pub struct JoinDownload {
    pub access: ClusterAccess,
    pub password: Secret,
}

/// Joins through `server_url`: CA check against the token hash, comparison of the settings
/// every server must share, and download of the bootstrap data into this server's files.
pub async fn download_cluster_files(
    config: &ServerConfig,
    paths: &ServerPaths,
    runtime: &crate::daemon::Runtime,
    cancel: &CancellationToken,
) -> Result<JoinDownload, ServerError> {
    // Retries while the cluster is unreachable; refusals (wrong token, CA hash) end the join.
    async fn attempt<T, F, Fut>(
        cancel: &CancellationToken,
        what: &str,
        f: F,
    ) -> Result<T, ServerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::clientaccess::AccessError>>,
    {
        match crate::clientaccess::retry(cancel, what, f).await {
            Some(r) => Ok(r?),
            None => Err(ServerError::Cancelled),
        }
    }
    let url = config
        .node
        .server
        .as_ref()
        .expect("join requires server")
        .url();
    let raw_token = config
        .node
        .token
        .as_ref()
        .expect("validated: token with server");
    let token = JoinToken::parse(raw_token.expose())?;
    let password = match &token.credentials {
        Credentials::Basic { password, .. } => password.clone(),
        Credentials::Bootstrap { .. } => {
            return Err(ServerError::BootstrapTokenCannotJoin);
        }
    };
    runtime.set_phase(format!("checking the cluster CA at {url}"));
    let access = attempt(cancel, "cluster CA check", || {
        ClusterAccess::connect(&url, &token, "server", None)
    })
    .await?;
    // Our own CA files, if a previous attempt wrote them, must be the cluster's.
    if let Some(local) =
        fsutil::read_optional(&paths.server_ca().cert).at(&paths.server_ca().cert)?
        && token::ca_hash(local.as_bytes()) != access.ca_hash
    {
        return Err(ServerError::ForeignCluster {
            ca_file: paths.server_ca().cert,
            local_hash: token::ca_hash(local.as_bytes()),
            remote_hash: access.ca_hash.clone(),
            data_dir: paths.root.clone(),
        });
    }
    runtime.set_phase("comparing cluster configuration");
    let node_token = match agent_password(config)? {
        Some(apw) => JoinToken {
            ca_hash: token.ca_hash.clone(),
            credentials: Credentials::Basic {
                username: "node".into(),
                password: apw,
            },
        },
        None => token.clone(),
    };
    let node_access = attempt(cancel, "cluster CA check", || {
        ClusterAccess::connect(&url, &node_token, "node", None)
    })
    .await?;
    let remote: ControlConfig = attempt(cancel, "reading the cluster configuration", || {
        node_access.get_json(protocol::CONFIG)
    })
    .await?;
    let ours = crate::supervisor::critical_settings(config);
    let mismatched: Vec<String> = ours
        .iter()
        .filter(|(k, v)| remote.critical.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k} (this server: {v}, cluster: {})",
                remote
                    .critical
                    .get(k)
                    .map(String::as_str)
                    .unwrap_or("<unset>")
            )
        })
        .collect();
    if !mismatched.is_empty() {
        return Err(ServerError::ConfigMismatch(mismatched));
    }
    if remote.https_port != config.https_listen_port
        || remote.supervisor_port != config.supervisor_port
    {
        tracing::warn!(
            component = "server",
            "this server's ports (supervisor {}, API {}) differ from the cluster's ({}, {}); \
             agents will use the cluster's ports",
            config.supervisor_port,
            config.https_listen_port,
            remote.supervisor_port,
            remote.https_port
        );
    }
    runtime.set_phase("downloading bootstrap data");
    let resp = attempt(cancel, "downloading bootstrap data", || {
        access.get(protocol::SERVER_BOOTSTRAP)
    })
    .await?;
    let data = BootstrapData::from_json(&resp.body)?;
    data.write(paths)?;
    tracing::info!(
        component = "server",
        "wrote cluster CA material and credentials from the bootstrap data"
    );
    Ok(JoinDownload { access, password })
}

/// Reads a PEM file into a string.
pub fn read_pem(path: &Path) -> Result<String, ServerError> {
    Ok(std::fs::read_to_string(path).at(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSources, load_server};

    #[test]
    fn sans_include_defaults_join_host_and_dedupe() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.yaml");
        std::fs::write(
            &p,
            "token: x\nserver: https://lb.example:9345\ntls-san: [lb.example, 10.9.9.9]\nnode-ip: 127.0.1.2\n",
        )
        .unwrap();
        let c = load_server(&ConfigSources {
            config_file: Some(p),
            ..Default::default()
        })
        .unwrap()
        .config;
        let node = node_identity(&c.node, None).unwrap();
        let sans = serving_sans(
            &c,
            &NodeIdentity {
                name: "s2".into(),
                ips: node.ips,
            },
        );
        assert_eq!(sans.iter().filter(|s| *s == "lb.example").count(), 1);
        for want in [
            "10.9.9.9",
            "127.0.0.1",
            "localhost",
            "s2",
            "127.0.1.2",
            "10.43.0.1",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(sans.contains(&want.to_string()), "missing {want}: {sans:?}");
        }
    }
}
