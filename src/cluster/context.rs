//! What every subsystem of a running server shares: validated config, node identity, paths,
//! the CAs, the credentials store, the runtime state and, once etcd is ready, the datastore.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use crate::config::ServerConfig;
use crate::daemon::Runtime;
use crate::datastore::StoreCell;
use crate::etcd::EtcdTls;
use crate::paths::{AgentPaths, ServerPaths};
use crate::pki::CertAuthority;
use crate::token::{Passwd, Secret};

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: String,
    /// Node IPs; the first is the primary (etcd, advertised API address).
    pub ips: Vec<IpAddr>,
}

impl NodeIdentity {
    pub fn primary_ip(&self) -> IpAddr {
        self.ips[0]
    }
}

/// SANs of the serving certificate (docs/protocol.md §4.3 plus the join address and bind address,
/// so every server answers on the fixed registration address).
pub fn serving_sans(config: &ServerConfig, node: &NodeIdentity) -> Vec<String> {
    let mut sans: Vec<String> = config.tls_san.clone();
    if let Some(server) = &config.node.server {
        sans.push(server.host.clone());
    }
    sans.extend(["127.0.0.1", "::1", "localhost"].map(String::from));
    sans.push(node.name.clone());
    if let Some((short, _)) = node.name.split_once('.') {
        sans.push(short.to_string());
    }
    sans.extend(node.ips.iter().map(|ip| ip.to_string()));
    if let Some(b) = config.bind_address.filter(|b| !b.is_unspecified()) {
        sans.push(b.to_string());
    }
    if let Some(a) = config.advertise_address {
        sans.push(a.to_string());
    }
    if let Some(svc) = crate::config::cidr_offset(&config.service_cidr, 1) {
        sans.push(svc.to_string());
    }
    for n in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        sans.push(n.to_string());
    }
    sans.push(format!("kubernetes.default.svc.{}", config.cluster_domain));
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.to_ascii_lowercase()));
    sans
}

/// Shared state of a running server.
pub struct ServerContext {
    pub config: ServerConfig,
    pub node: NodeIdentity,
    pub paths: ServerPaths,
    pub agent_paths: AgentPaths,
    pub server_ca: CertAuthority,
    pub client_ca: CertAuthority,
    /// Signs kubelet serving certificates only; set once the bootstrap data carries it.
    pub kubelet_ca: std::sync::OnceLock<CertAuthority>,
    /// PEM served on `/cacerts` (exactly the bytes of `server-ca.crt`, so its hash matches).
    pub server_ca_bundle: Vec<u8>,
    pub passwd: RwLock<Passwd>,
    /// The normalised server token password.
    pub server_password: RwLock<Secret>,
    pub runtime: Runtime,
    pub etcd_tls: EtcdTls,
    /// The local etcd member's client, once etcd runs.
    pub etcd: crate::etcd::EtcdCell,
    /// The datastore, once the local member is a ready voter (shared with the API server, which
    /// needs nothing else of this context).
    pub store: StoreCell,
    /// `store` as the subsystems that follow changes use it (controllers, the supervisor's
    /// node index): writes fenced, and watches of cached kinds served by `caches`, so they
    /// open no etcd watch of their own. Set together with `store` ([`ServerContext::set_store`]).
    pub watching: StoreCell,
    /// This server's API endpoint as other nodes reach it (`advertise-address` or node IP).
    pub apiserver_endpoint: SocketAddr,
    /// Cached cluster credentials record for supervisor authentication.
    pub credentials: crate::cluster::credentials::CredentialsCache,
    /// etcd snapshots of this server, once etcd is ready.
    pub snapshots: tokio::sync::OnceCell<Arc<crate::etcd::snapshot::Snapshotter>>,
    /// The encryption configuration applied to Secrets at rest (loaded before the store is).
    pub encryption: crate::secrets_encryption::Keyring,
    /// Held for a whole server-token rotation or catch-up on this server (read, transaction,
    /// file writes), so two never interleave here; other servers are excluded by the etcd
    /// transaction's guard.
    pub token_rotation: tokio::sync::Mutex<()>,
    /// This server's watch caches (crate::storage::watch_cache): the API server serves watches
    /// and `resourceVersion=0` lists from them, and the controllers their periodic scans.
    pub caches: Arc<crate::storage::watch_cache::WatchCaches>,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Shared handle.
pub type Ctx = Arc<ServerContext>;

impl ServerContext {
    /// Publishes the datastore once the local member is a ready voter: `store`, and
    /// `watching` on it. A second call changes nothing.
    pub fn set_store(&self, store: crate::datastore::Datastore) {
        let _ = self.watching.set(self.caches.serving_watches(&store));
        let _ = self.store.set(store);
    }

    /// The current server password.
    pub fn server_password(&self) -> Secret {
        self.server_password
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The credentials store (a copy).
    pub fn passwd(&self) -> Passwd {
        self.passwd
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The CA hash that goes into full tokens.
    pub fn ca_hash(&self) -> String {
        crate::token::ca_hash(&self.server_ca_bundle)
    }
}

/// A complete server context for unit tests of the subsystems that take one (supervisor,
/// controllers, D-Bus): fresh CAs in `dir`, the server password `server-pw`, the agent password
/// `agent-pw`, node `s1` at 127.0.0.2, and `store` as the datastore (none: etcd not ready).
#[cfg(test)]
pub fn test_context(dir: &std::path::Path, store: Option<crate::datastore::Datastore>) -> Ctx {
    use crate::token::{AGENT_GROUP, SERVER_GROUP};
    let file = dir.join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "token: server-pw\nnode-ip: 127.0.0.2\nnode-name: s1\ndata-dir: {}\n",
            dir.display()
        ),
    )
    .expect("config file");
    let config = crate::config::load_server(&crate::config::ConfigSources {
        config_file: Some(file),
        ..Default::default()
    })
    .expect("test config")
    .config;
    let paths = ServerPaths::new(dir);
    crate::fsutil::ensure_private_dir(&paths.tls()).expect("tls dir");
    let (server_ca, _) =
        CertAuthority::load_or_create(&paths.server_ca(), "rke2-server").expect("server CA");
    let (client_ca, _) =
        CertAuthority::load_or_create(&paths.client_ca(), "rke2-client").expect("client CA");
    let mut passwd = Passwd::default();
    passwd.set("server", Secret::new("server-pw"), SERVER_GROUP);
    passwd.set("node", Secret::new("agent-pw"), AGENT_GROUP);
    let ctx = Arc::new(ServerContext {
        config,
        node: NodeIdentity {
            name: "s1".into(),
            ips: vec![IpAddr::from([127, 0, 0, 2])],
        },
        paths,
        agent_paths: AgentPaths::new(dir),
        server_ca_bundle: server_ca.cert_pem.clone().into_bytes(),
        server_ca,
        client_ca,
        kubelet_ca: std::sync::OnceLock::new(),
        passwd: RwLock::new(passwd),
        server_password: RwLock::new(Secret::new("server-pw")),
        runtime: Runtime::new("s1", "server"),
        etcd_tls: EtcdTls::from_pem(String::new(), String::new(), String::new()),
        etcd: Default::default(),
        store: Default::default(),
        watching: Default::default(),
        apiserver_endpoint: SocketAddr::from(([127, 0, 0, 2], 6443)),
        credentials: Default::default(),
        snapshots: tokio::sync::OnceCell::new(),
        token_rotation: Default::default(),
        encryption: Default::default(),
        caches: Arc::new(crate::storage::watch_cache::WatchCaches::new(
            tokio_util::sync::CancellationToken::new(),
            Default::default(),
        )),
    });
    if let Some(store) = store {
        ctx.set_store(store);
    }
    ctx
}
