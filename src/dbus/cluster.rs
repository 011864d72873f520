//! `io.rke2.Cluster1`: read-only properties describing this node and the cluster as it sees
//! them, read from the daemon's runtime state, with `PropertiesChanged` emitted when that state
//! changes. Servers and agents serve different property sets under the same interface name:
//! agents have no etcd, but report their load-balancer backends and their health.

use tokio::sync::watch;
use zbus::Connection;
use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::errors::BusError;
use super::{AGENT_PATH, SERVER_PATH, require_root};
use crate::cluster::admin::AdminError;
use crate::cluster::context::Ctx;
use crate::cluster::encryption_stages::{self as stages, EncryptionStatus};
use crate::daemon::{NodeState, Runtime};
use crate::etcd::snapshot::{SnapshotError, SnapshotInfo, Snapshotter};

/// Version reported by the `Version` property.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `io.rke2.Cluster1` of a server.
#[derive(Debug, Clone)]
pub struct ServerCluster {
    runtime: Runtime,
    /// The server's shared state, for snapshots and certificates; `None` only in the
    /// property notifier, which reads the runtime alone.
    ctx: Option<Ctx>,
}

impl ServerCluster {
    pub fn new(runtime: Runtime) -> Self {
        ServerCluster { runtime, ctx: None }
    }

    /// The interface served on the bus, with the snapshot methods.
    pub fn for_server(ctx: Ctx) -> Self {
        ServerCluster {
            runtime: ctx.runtime.clone(),
            ctx: Some(ctx),
        }
    }

    fn ctx(&self) -> Result<&Ctx, BusError> {
        self.ctx.as_ref().ok_or_else(|| AdminError::NotReady.into())
    }

    fn snapshots(&self) -> Result<&Snapshotter, BusError> {
        self.ctx
            .as_ref()
            .and_then(|c| c.snapshots.get())
            .map(|s| s.as_ref())
            .ok_or_else(|| AdminError::from(SnapshotError::NotReady).into())
    }
}

fn bus_err(e: SnapshotError) -> BusError {
    AdminError::from(e).into()
}

/// Cluster facts as seen by this server, and its etcd snapshots. Every property but NodeName,
/// Role, Version and CertificateExpiry emits PropertiesChanged with its new value. Snapshot
/// errors: io.rke2.Error.{NotFound, InvalidArgument, AccessDenied, NotReady, Conflict, Failed};
/// SaveSnapshot, DeleteSnapshot and PruneSnapshots are root only.
#[interface(name = "io.rke2.Cluster1")]
impl ServerCluster {
    /// Saves an etcd snapshot of this server's member as <name>-<node>-<unix time> in the
    /// snapshot directory (name "" = "on-demand"); returns its path. The file appears only once
    /// it is complete and has passed etcd's integrity check.
    async fn save_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "SaveSnapshot").await?;
        let (_, path) = self.snapshots()?.save(&name).await.map_err(bus_err)?;
        Ok(path.display().to_string())
    }

    /// The snapshots in this server's snapshot directory, newest first: (name, node, size in
    /// bytes, created as unix seconds).
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, BusError> {
        self.snapshots()?.list().await.map_err(bus_err)
    }

    /// Deletes the snapshot with this name (as listed, with or without ".zip").
    async fn delete_snapshot(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        name: String,
    ) -> Result<(), BusError> {
        require_root(conn, &hdr, "DeleteSnapshot").await?;
        self.snapshots()?.delete(&name).await.map_err(bus_err)?;
        Ok(())
    }

    /// Deletes all but the newest `retention` snapshots named <prefix>-<this node>-* (prefix ""
    /// = etcd-snapshot-name, retention 0 = etcd-snapshot-retention); returns the deleted names.
    async fn prune_snapshots(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        prefix: String,
        retention: u32,
    ) -> Result<Vec<String>, BusError> {
        require_root(conn, &hdr, "PruneSnapshots").await?;
        self.snapshots()?
            .prune(&prefix, retention)
            .await
            .map_err(bus_err)
    }

    /// Secrets encryption at rest, as `rke2 secrets-encrypt status` shows it: (enabled, stage,
    /// every server on the current configuration, "All hashes match" or which server differs,
    /// keys as (active, type, name)).
    async fn get_encryption_status(&self) -> Result<EncryptionStatus, BusError> {
        Ok(stages::status(self.ctx()?)
            .await
            .map_err(AdminError::from)?)
    }

    /// Encrypts new Secret writes with the first key from now on (existing values change only
    /// with ReencryptSecrets); returns a confirmation.
    async fn enable_secrets_encryption(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "EnableSecretsEncryption").await?;
        Ok(stages::set_enabled(self.ctx()?, true)
            .await
            .map_err(AdminError::from)?)
    }

    /// Writes new Secrets in plain from now on (encrypted values stay readable); returns a
    /// confirmation.
    async fn disable_secrets_encryption(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "DisableSecretsEncryption").await?;
        Ok(stages::set_enabled(self.ctx()?, false)
            .await
            .map_err(AdminError::from)?)
    }

    /// Stage prepare: adds a new key every server can read, not yet used for writes. Needs
    /// stage start or reencrypt_finished and every server on the current configuration,
    /// unless `force`.
    async fn prepare_secrets_encryption(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "PrepareSecretsEncryption").await?;
        Ok(stages::prepare(self.ctx()?, force)
            .await
            .map_err(AdminError::from)?)
    }

    /// Stage rotate: the prepared key becomes the one writes use. Needs stage prepare (unless
    /// `force`).
    async fn rotate_secrets_encryption(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "RotateSecretsEncryption").await?;
        Ok(stages::rotate(self.ctx()?, force)
            .await
            .map_err(AdminError::from)?)
    }

    /// Stages reencrypt_request, reencrypt_active, reencrypt_finished: rewrites every Secret
    /// with the key writes use (in plain while disabled), then removes the other keys. Needs
    /// stage rotate (unless `force`); returns how many Secrets were rewritten.
    async fn reencrypt_secrets(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        force: bool,
    ) -> Result<String, BusError> {
        require_root(conn, &hdr, "ReencryptSecrets").await?;
        Ok(stages::reencrypt(self.ctx()?, force)
            .await
            .map_err(AdminError::from)?)
    }

    /// A snapshot was saved (on demand or scheduled): name, node, size, created, path.
    #[zbus(signal)]
    pub async fn snapshot_saved(
        emitter: &SignalEmitter<'_>,
        name: &str,
        node: &str,
        size: u64,
        created: i64,
        path: &str,
    ) -> zbus::Result<()>;

    /// Earliest expiry of this node's leaf certificates, unix seconds (0 if none is readable).
    #[zbus(property(emits_changed_signal = "false"))]
    fn certificate_expiry(&self) -> i64 {
        self.ctx
            .as_ref()
            .and_then(|c| crate::pki::rotate::earliest_leaf_expiry(&c.config.node.data_dir))
            .unwrap_or(0)
    }

    /// Name of this node.
    #[zbus(property(emits_changed_signal = "const"))]
    fn node_name(&self) -> String {
        self.runtime.node_name.clone()
    }

    /// "server".
    #[zbus(property(emits_changed_signal = "const"))]
    fn role(&self) -> String {
        self.runtime.role.to_string()
    }

    /// Whether the node has passed every readiness gate (as READY=1 to systemd).
    #[zbus(property)]
    fn ready(&self) -> bool {
        self.runtime.snapshot().ready
    }

    /// What the node is doing, in words (as STATUS= to systemd).
    #[zbus(property)]
    fn phase(&self) -> String {
        self.runtime.snapshot().phase
    }

    /// Number of voting etcd members.
    #[zbus(property)]
    fn server_count(&self) -> u32 {
        self.runtime.snapshot().server_count
    }

    /// Number of registered nodes.
    #[zbus(property)]
    fn node_count(&self) -> u32 {
        self.runtime.snapshot().node_count
    }

    /// etcd member names; learners carry a " (learner)" suffix.
    #[zbus(property)]
    fn etcd_members(&self) -> Vec<String> {
        self.runtime.snapshot().etcd_members
    }

    /// API endpoints (host:port) of the live servers.
    #[zbus(property)]
    fn apiserver_endpoints(&self) -> Vec<String> {
        self.runtime.snapshot().apiserver_endpoints
    }

    /// Version of rke2-rs.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        VERSION.to_string()
    }
}

/// Emits `SnapshotSaved` for every snapshot this server saves, until emitting fails.
pub async fn emit_snapshot_signals(ctx: Ctx, conn: Connection) {
    let Ok(emitter) = SignalEmitter::new(&conn, SERVER_PATH) else {
        return;
    };
    let Some(snapshots) = ctx.snapshots.get().cloned() else {
        return;
    };
    let mut rx = snapshots.subscribe();
    loop {
        match rx.recv().await {
            Ok(s) => {
                let path = snapshots.dir().join(&s.name).display().to_string();
                let sent = ServerCluster::snapshot_saved(
                    &emitter, &s.name, &s.node, s.size, s.created, &path,
                )
                .await;
                if sent.is_err() {
                    return;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// `io.rke2.Cluster1` of an agent.
#[derive(Debug, Clone)]
pub struct AgentCluster {
    runtime: Runtime,
}

impl AgentCluster {
    pub fn new(runtime: Runtime) -> Self {
        AgentCluster { runtime }
    }
}

/// Cluster facts as seen by this agent. Every property but NodeName, Role and Version emits
/// PropertiesChanged with its new value.
#[interface(name = "io.rke2.Cluster1")]
impl AgentCluster {
    /// Name of this node.
    #[zbus(property(emits_changed_signal = "const"))]
    fn node_name(&self) -> String {
        self.runtime.node_name.clone()
    }

    /// "agent".
    #[zbus(property(emits_changed_signal = "const"))]
    fn role(&self) -> String {
        self.runtime.role.to_string()
    }

    /// Whether the node has joined and registered (as READY=1 to systemd).
    #[zbus(property)]
    fn ready(&self) -> bool {
        self.runtime.snapshot().ready
    }

    /// What the node is doing, in words (as STATUS= to systemd).
    #[zbus(property)]
    fn phase(&self) -> String {
        self.runtime.snapshot().phase
    }

    /// API endpoints (host:port) of the servers, as last fetched.
    #[zbus(property)]
    fn apiserver_endpoints(&self) -> Vec<String> {
        self.runtime.snapshot().apiserver_endpoints
    }

    /// The API load balancer's backends and their health: (address, state).
    #[zbus(property)]
    fn load_balancer_backends(&self) -> Vec<(String, String)> {
        self.runtime.snapshot().lb_backends
    }

    /// Version of rke2-rs.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        VERSION.to_string()
    }
}

/// Waits for the next state change; `None` once the runtime is gone.
async fn next_change(rx: &mut watch::Receiver<NodeState>) -> Option<NodeState> {
    rx.changed().await.ok()?;
    Some(rx.borrow_and_update().clone())
}

/// Emits PropertiesChanged for the server properties whose value changed, until emitting fails
/// (connection lost) or the runtime ends.
pub async fn notify_server_properties(runtime: Runtime, conn: Connection) {
    let Ok(emitter) = SignalEmitter::new(&conn, SERVER_PATH) else {
        return;
    };
    let iface = ServerCluster::new(runtime.clone());
    let mut rx = runtime.subscribe();
    let mut seen = rx.borrow_and_update().clone();
    while let Some(now) = next_change(&mut rx).await {
        let result = async {
            if now.ready != seen.ready {
                iface.ready_changed(&emitter).await?;
            }
            if now.phase != seen.phase {
                iface.phase_changed(&emitter).await?;
            }
            if now.server_count != seen.server_count {
                iface.server_count_changed(&emitter).await?;
            }
            if now.node_count != seen.node_count {
                iface.node_count_changed(&emitter).await?;
            }
            if now.etcd_members != seen.etcd_members {
                iface.etcd_members_changed(&emitter).await?;
            }
            if now.apiserver_endpoints != seen.apiserver_endpoints {
                iface.apiserver_endpoints_changed(&emitter).await?;
            }
            zbus::Result::Ok(())
        }
        .await;
        if result.is_err() {
            return;
        }
        seen = now;
    }
}

/// Emits PropertiesChanged for the agent properties whose value changed.
pub async fn notify_agent_properties(runtime: Runtime, conn: Connection) {
    let Ok(emitter) = SignalEmitter::new(&conn, AGENT_PATH) else {
        return;
    };
    let iface = AgentCluster::new(runtime.clone());
    let mut rx = runtime.subscribe();
    let mut seen = rx.borrow_and_update().clone();
    while let Some(now) = next_change(&mut rx).await {
        let result = async {
            if now.ready != seen.ready {
                iface.ready_changed(&emitter).await?;
            }
            if now.phase != seen.phase {
                iface.phase_changed(&emitter).await?;
            }
            if now.apiserver_endpoints != seen.apiserver_endpoints {
                iface.apiserver_endpoints_changed(&emitter).await?;
            }
            if now.lb_backends != seen.lb_backends {
                iface.load_balancer_backends_changed(&emitter).await?;
            }
            zbus::Result::Ok(())
        }
        .await;
        if result.is_err() {
            return;
        }
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use zbus::connection::Builder;

    /// The agent's Cluster1 over a peer-to-peer connection (no bus): properties read the
    /// runtime state, and a state change is announced with PropertiesChanged.
    #[tokio::test]
    async fn agent_properties_and_changes_without_a_bus() {
        let runtime = Runtime::new("a1", "agent");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = Builder::unix_stream(a)
            .server(zbus::Guid::generate())
            .p2p()
            .serve_at(AGENT_PATH, AgentCluster::new(runtime.clone()))
            .build();
        let client = Builder::unix_stream(b).p2p().build();
        let (server, client) = tokio::try_join!(server, client).unwrap();
        let props = zbus::fdo::PropertiesProxy::builder(&client)
            .destination(super::super::AGENT_NAME)
            .path(AGENT_PATH)
            .build()
            .await
            .unwrap();
        let iface = zbus::names::InterfaceName::from_static_str_unchecked("io.rke2.Cluster1");
        let all = props.get_all(iface.clone()).await.unwrap();
        let mut names: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "ApiserverEndpoints",
                "LoadBalancerBackends",
                "NodeName",
                "Phase",
                "Ready",
                "Role",
                "Version"
            ]
        );
        let name: String = props
            .get(iface.clone(), "NodeName")
            .await
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(name, "a1");

        let mut messages = zbus::MessageStream::from(&client);
        let notifier = tokio::spawn(notify_agent_properties(runtime.clone(), server.clone()));
        // Give the notifier its subscription before changing the state.
        tokio::task::yield_now().await;
        runtime.update(|s| s.lb_backends = vec![("10.0.0.1:6443".into(), "healthy".into())]);
        let changed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(Ok(m)) = messages.next().await {
                let h = m.header();
                if h.member()
                    .is_some_and(|n| n.as_str() == "PropertiesChanged")
                {
                    let (i, changed, _): (
                        String,
                        std::collections::HashMap<String, zbus::OwnedVariant>,
                        Vec<String>,
                    ) = m.body().deserialize().unwrap();
                    if i == "io.rke2.Cluster1" {
                        return changed.into_keys().collect::<Vec<_>>();
                    }
                }
            }
            vec![]
        })
        .await
        .unwrap();
        assert_eq!(changed, vec!["LoadBalancerBackends".to_string()]);
        notifier.abort();
    }
}
