//! `rke2 agent` and what agents share with servers. An agent joins through its client-side load
//! balancer (docs/protocol.md §10.1): CA check against the token hash, the cluster's settings, node
//! password and certificate signing requests, then the server list for the load balancers and
//! finally the node agent, which reaches the API only through the local load balancer.

pub mod loadbalancer;
pub mod node_agent;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clientaccess::{AccessError, ClusterAccess};
use crate::config::AgentConfig;
use crate::daemon::Runtime;
use crate::fsutil::{self, IoContext, PathError};
use crate::https::{HttpsClient, ServerTrust};
use crate::kubeconfig::Kubeconfig;
use crate::paths::AgentPaths;
use crate::protocol::{
    self, ControlConfig, NODE_IP_HEADER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER,
};
use crate::token::{JoinToken, TokenError};
use loadbalancer::{HealthCheck, LoadBalancer, LoadBalancerConfig};

/// How often the server list is refreshed.
const APISERVERS_REFRESH: Duration = Duration::from_secs(5);
/// Name agents and kubeconfigs verify the API (and supervisor) certificate against: agents dial
/// local load-balancer addresses, which are not in the servers' certificates, while this name
/// always is. No kubelet certificate can hold it: such node names are refused
/// (crate::supervisor::certs::reserved_node_name) and kubelet certificates come from their own
/// CA anyway (docs/security.md).
pub const API_SERVER_NAME: &str = "kubernetes";
const SERVER_NAME: &str = API_SERVER_NAME;

/// Agent errors.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    NodeIdentity(#[from] crate::host::NodeIdentityError),
    #[error("node agent: {0}")]
    NodeAgent(#[from] node_agent::NodeAgentError),
    #[error("node agent stopped")]
    NodeAgentStopped,
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    #[error(
        "Node password rejected, duplicate hostname or contents of '{file}' may not match server node-passwd entry, \
         try enabling a unique node name with node-name, or delete the existing node {node} first"
    )]
    NodePasswordRejected { file: String, node: String },
    #[error(
        "the server refused the token (HTTP {status}) for {}s, after the grace servers get while they start: {message}; check token/token-file",
        crate::clientaccess::REFUSAL_GRACE.as_secs()
    )]
    TokenRejected { status: u16, message: String },
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    LoadBalancer(#[from] loadbalancer::LoadBalancerError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("shut down before the agent was ready")]
    Cancelled,
}

/// Turns a refused join request into the agent error users see.
fn refusal(e: AccessError) -> AgentError {
    match e {
        AccessError::Status {
            status, message, ..
        } if status == 401 || status == 403 => AgentError::TokenRejected { status, message },
        other => AgentError::Access(other),
    }
}

/// Reads or creates the node password file (32 hex characters, 0600).
pub fn ensure_node_password(path: &Path) -> Result<String, PathError> {
    if let Some(existing) = fsutil::read_optional(path).at(path)? {
        let t = existing.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    if let Some(dir) = path.parent() {
        fsutil::ensure_dir(dir, 0o755).at(dir)?;
    }
    let pw = crate::token::random_hex(16);
    fsutil::write_atomic(path, format!("{pw}\n").as_bytes(), fsutil::SECRET_FILE_MODE).at(path)?;
    Ok(pw)
}

/// A health check that GETs `path` over TLS and expects 200, trusting the cluster CA once it is
/// known (plain TCP connect before that).
fn https_health(ca: Arc<RwLock<Option<String>>>, path: &'static str) -> HealthCheck {
    Arc::new(move |addr: String| {
        let ca = ca.read().map(|g| g.clone()).unwrap_or(None);
        async move {
            let timeout = Duration::from_millis(800);
            match ca {
                None => matches!(
                    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await,
                    Ok(Ok(_))
                ),
                Some(ca) => {
                    let Ok(client) = HttpsClient::new(&ServerTrust::Ca(ca), None, timeout) else {
                        return false;
                    };
                    let client = client.with_server_name(SERVER_NAME);
                    matches!(
                        client.request(http::Method::GET, &format!("https://{addr}{path}"), &[], None).await,
                        Ok(r) if r.status == 200
                    )
                }
            }
        }
        .boxed()
    })
}

fn with_port(addr: &str, port: u16) -> Option<String> {
    let sa: SocketAddr = addr.parse().ok()?;
    Some(SocketAddr::new(sa.ip(), port).to_string())
}

/// Runs an agent until `cancel`. A shutdown asked for while the agent is still registering is a
/// clean stop, not a failure: it returns `Ok` so the unit does not end up "failed".
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    let tracker = TaskTracker::new();
    let name = config
        .node
        .node_name
        .clone()
        .unwrap_or_else(crate::host::hostname);
    let runtime = Runtime::new(&name, "agent");
    // STOPPING=1 as soon as shutdown begins, before the node agent and load balancers stop.
    tracker.spawn(crate::daemon::stopping_on_cancel(
        runtime.clone(),
        cancel.clone(),
    ));
    let result = run_inner(&config, &name, runtime.clone(), &tracker, cancel.clone()).await;
    runtime.stopping();
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    match result {
        Err(AgentError::Cancelled) => {
            tracing::info!(component = "agent", "{}", AgentError::Cancelled);
            Ok(())
        }
        other => other,
    }
}

async fn run_inner(
    config: &AgentConfig,
    name: &str,
    runtime: Runtime,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    crate::host::check_node_name(name)?;
    let ips = crate::host::node_ips(&config.node.node_ips, None)?;
    let paths = AgentPaths::new(&config.node.data_dir);
    for dir in [config.node.data_dir.as_path(), paths.root.as_path()] {
        fsutil::ensure_private_dir(dir).at(dir)?;
    }
    let password = ensure_node_password(&config.node_password_file)?;
    let server = config
        .node
        .server
        .clone()
        .expect("validated: agents have a server");
    let token = JoinToken::parse(config.node.token.as_ref().expect("validated").expose())?;

    // Supervisor load balancer, seeded with the configured server.
    let ca: Arc<RwLock<Option<String>>> = Arc::new(RwLock::new(None));
    let sup_lb = LoadBalancer::start(
        LoadBalancerConfig {
            name: "rke2-agent-load-balancer".into(),
            bind: SocketAddr::new(config.lb_bind_address, config.lb_server_port),
            default_server: server.authority(),
            state_file: Some(paths.lb_state()),
            health_interval: Duration::from_millis(500),
            dial_timeout: Duration::from_secs(2),
        },
        https_health(ca.clone(), protocol::PING),
        cancel.clone(),
    )
    .await?;
    let sup_url = format!("https://{}", sup_lb.local_addr());

    runtime.set_phase(format!(
        "checking the cluster CA through {sup_url} (server {})",
        server.url()
    ));
    let access = retry(&cancel, "cluster CA check", || {
        ClusterAccess::connect(&sup_url, &token, "node", Some(SERVER_NAME))
    })
    .await?;
    let ca_pem = String::from_utf8_lossy(&access.ca_bundle).into_owned();
    *ca.write().unwrap_or_else(|p| p.into_inner()) = Some(ca_pem.clone());

    runtime.set_phase("reading the cluster configuration");
    let control: ControlConfig = retry(&cancel, "reading the cluster configuration", || {
        access.get_json(protocol::CONFIG)
    })
    .await?;

    // API load balancer: lb-server-port - 1, to the servers' API port.
    let api_lb = LoadBalancer::start(
        LoadBalancerConfig {
            name: "rke2-api-server-agent-load-balancer".into(),
            bind: SocketAddr::new(config.lb_bind_address, config.lb_server_port - 1),
            default_server: crate::config::ServerUrl {
                host: server.host.clone(),
                port: control.https_port,
            }
            .authority(),
            state_file: Some(
                paths
                    .root
                    .join("etc")
                    .join("rke2-api-server-agent-load-balancer.json"),
            ),
            health_interval: Duration::from_millis(500),
            dial_timeout: Duration::from_secs(2),
        },
        https_health(ca.clone(), "/readyz"),
        cancel.clone(),
    )
    .await?;

    runtime.set_phase("requesting node certificates");
    let certs = match request_node_certificates(&access, name, &password, &ips, &cancel).await {
        Err(AgentError::NodePasswordRejected { node, .. }) => {
            return Err(AgentError::NodePasswordRejected {
                file: config.node_password_file.display().to_string(),
                node,
            });
        }
        other => other?,
    };
    let issued = [
        (
            paths.serving_kubelet(),
            certs.serving_cert_pem,
            certs.serving_key_pem,
        ),
        (
            paths.client_kubelet(),
            certs.client_cert_pem,
            certs.client_key_pem,
        ),
    ];
    for (pair, cert, key) in &issued {
        fsutil::write_atomic_mkdir(&pair.key, key.as_bytes(), fsutil::SECRET_FILE_MODE)
            .at(&pair.key)?;
        fsutil::write_atomic_mkdir(&pair.cert, cert.as_bytes(), fsutil::PUBLIC_FILE_MODE)
            .at(&pair.cert)?;
    }
    let client_ca = certs.client_ca_pem;
    fsutil::write_atomic(
        &paths.server_ca(),
        ca_pem.as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
    )
    .at(&paths.server_ca())?;
    fsutil::write_atomic(
        &paths.client_ca(),
        client_ca.as_bytes(),
        fsutil::PUBLIC_FILE_MODE,
    )
    .at(&paths.client_ca())?;
    let (cert_pem, key_pem) = (issued[1].1.clone(), issued[1].2.clone());
    let api_url = format!("https://{}", api_lb.local_addr());
    Kubeconfig {
        server_url: &api_url,
        ca_pem: &ca_pem,
        client_cert_pem: &cert_pem,
        client_key_pem: &key_pem,
        name: "default",
        tls_server_name: Some(SERVER_NAME),
    }
    .write(&paths.kubelet_kubeconfig(), fsutil::SECRET_FILE_MODE)?;
    tracing::info!(component = "agent", node = %name, "node certificates written to {}", paths.root.display());

    // Keep both load balancers' server lists fresh.
    {
        let (access, sup_lb, api_lb, cancel, runtime) = (
            access.clone(),
            sup_lb.clone(),
            api_lb.clone(),
            cancel.clone(),
            runtime.clone(),
        );
        let sup_port = server.port;
        tracker.spawn(async move {
            loop {
                if let Ok(list) = access.get_json::<Vec<String>>(protocol::APISERVERS).await
                    && !list.is_empty()
                {
                    api_lb.update(list.clone());
                    sup_lb.update(list.iter().filter_map(|a| with_port(a, sup_port)).collect());
                    runtime.update(|s| s.apiserver_endpoints = list);
                }
                runtime.update(|s| {
                    s.lb_backends = api_lb
                        .backends()
                        .into_iter()
                        .map(|b| (b.address, b.health.to_string()))
                        .collect()
                });
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(APISERVERS_REFRESH) => {}
                }
            }
        });
    }

    runtime.set_phase("registering node");
    let runtime_cfg = crate::runtime::NodeRuntimeConfig {
        node_name: name.to_string(),
        data_dir: config.node.data_dir.clone(),
        runtime: config.node.runtime.clone(),
        node_ips: ips.clone(),
        api_url: api_url.clone(),
        ca_pem: ca_pem.clone(),
        identity_cert_pem: cert_pem.clone(),
        identity_key_pem: key_pem.clone(),
        server_name: Some(SERVER_NAME.into()),
        kubelet_tls: Some(crate::runtime::logs::KubeletTls {
            cert_pem: issued[0].1.clone(),
            key_pem: issued[0].2.clone(),
            client_ca_pem: client_ca.clone(),
        }),
        cluster_dns: control.cluster_dns.parse().ok().map(|server| {
            crate::runtime::dns_config::ClusterDns {
                server,
                domain: control.cluster_domain.clone(),
            }
        }),
    };
    let agent = node_agent::NodeAgent::new(node_agent::NodeAgentConfig {
        node_name: name.to_string(),
        api_url: api_url.clone(),
        ca_pem: ca_pem.clone(),
        identity_cert_pem: cert_pem,
        identity_key_pem: key_pem,
        identity_slot: None,
        server_name: Some(SERVER_NAME.into()),
        labels: config.node.node_labels.clone(),
        taints: config.node.node_taints.clone(),
        annotations: [
            ("rke2.io/hostname".to_string(), name.to_string()),
            (
                "rke2.io/internal-ip".to_string(),
                ips.iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
        .into_iter()
        .collect(),
        addresses: ips.clone(),
        heartbeat_interval: config.node.heartbeat_interval,
    })?;
    let (tx, mut registered) = tokio::sync::watch::channel(false);
    let ticker = runtime.liveness("node-agent", config.node.heartbeat_interval);
    tracker.spawn(agent.run(tx, ticker, cancel.clone()));
    tracker.spawn(crate::daemon::run_watchdog(runtime.clone(), cancel.clone()));
    tokio::select! {
        _ = cancel.cancelled() => return Err(AgentError::Cancelled),
        r = registered.wait_for(|v| *v) => { r.map_err(|_| AgentError::NodeAgentStopped)?; }
    }
    crate::dns::spawn_for_node(&runtime_cfg, tracker, cancel.clone());
    let proxy_cfg = crate::proxy::ProxyConfig::for_node(
        &runtime_cfg,
        &control.cluster_ip_range,
        &control.cluster_dns,
    );
    crate::proxy::spawn(proxy_cfg, tracker, cancel.clone());
    crate::runtime::spawn(runtime_cfg, tracker, cancel.clone());
    runtime.set_ready(format!("ready: joined through {}", server.url()));
    crate::dbus::spawn_agent(runtime.clone(), tracker, cancel.clone());
    cancel.cancelled().await;
    Ok(())
}

/// What a node gets when it registers: its kubelet serving and client certificates (with their
/// new keys) and the CA that signs kubelet client certificates.
#[derive(Debug, Clone)]
pub struct NodeCertificates {
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub client_ca_pem: String,
}

/// Registers node `name` with the supervisor behind `access` (docs/protocol.md §10.1): a
/// certificate signing request each for the kubelet serving and client certificates, sent with
/// the node password (which the server checks or stores) and the node's addresses, retried with
/// backoff while the cluster is unreachable or starting. Used by `rke2 agent` and by the
/// hollow-node bench (benches/scale.rs), which registers thousands of nodes this way. A refused
/// password comes back as [`AgentError::NodePasswordRejected`] with `file` empty: only the
/// caller knows where the password came from.
pub async fn request_node_certificates(
    access: &ClusterAccess,
    name: &str,
    password: &str,
    ips: &[IpAddr],
    cancel: &CancellationToken,
) -> Result<NodeCertificates, AgentError> {
    let ip_list = ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let headers = [
        (NODE_NAME_HEADER, name.to_string()),
        (NODE_PASSWORD_HEADER, password.to_string()),
        (NODE_IP_HEADER, ip_list),
    ];
    let mut issued = Vec::new();
    for route in [protocol::SERVING_KUBELET, protocol::CLIENT_KUBELET] {
        let (key_pem, csr) = crate::pki::new_key_and_csr()?;
        let resp = match crate::clientaccess::retry(cancel, "certificate request", || {
            access.request(http::Method::POST, route, &headers, Some(csr.clone()))
        })
        .await
        {
            None => return Err(AgentError::Cancelled),
            Some(Ok(r)) => r,
            // 403 on the certificate routes means the node password did not match.
            Some(Err(AccessError::Status { status: 403, .. })) => {
                return Err(AgentError::NodePasswordRejected {
                    file: String::new(),
                    node: name.to_string(),
                });
            }
            Some(Err(e)) => return Err(refusal(e)),
        };
        issued.push((resp.text(), key_pem));
    }
    let client_ca_pem = retry(cancel, "reading the client CA", || {
        access.get(protocol::CLIENT_CA)
    })
    .await?
    .text();
    let [
        (serving_cert_pem, serving_key_pem),
        (client_cert_pem, client_key_pem),
    ]: [(String, String); 2] = issued.try_into().expect("two certificates requested");
    Ok(NodeCertificates {
        serving_cert_pem,
        serving_key_pem,
        client_cert_pem,
        client_key_pem,
        client_ca_pem,
    })
}

/// Retries `f` while the cluster is unreachable or still starting (see
/// [`crate::clientaccess::retry_decision`]); a CA mismatch or a lasting refusal ends the agent.
async fn retry<T, F, Fut>(cancel: &CancellationToken, what: &str, f: F) -> Result<T, AgentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AccessError>>,
{
    match crate::clientaccess::retry(cancel, what, f).await {
        None => Err(AgentError::Cancelled),
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(refusal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_password_is_created_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/node/password");
        let a = ensure_node_password(&p).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(ensure_node_password(&p).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
