//! The agent's client-side load balancer (docs/protocol.md §7): a local TCP (L4) failover proxy in
//! front of the servers' supervisor port (9345) or API port (6443). This file owns the backend
//! list and each backend's health, the choice of backend for every new client connection, the
//! closing of connections whose backend failed or was removed, and the RKE2-compatible state
//! file `<data-dir>/agent/etc/<name>.json` that carries the learned server list across restarts.
//!
//! Deliberate difference from RKE2 (docs/architecture.md §2): backends are actively health-checked
//! by a caller-supplied check every `health_interval` (default 500 ms), and a backend that fails a
//! check or a dial is skipped at once and its connections are closed, so clients reconnect through
//! a live server in well under a second. The state machine is smaller than RKE2's eight states: see
//! [`BackendHealth`] and the preference order on [`LoadBalancer`].

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::fsutil;

/// Name of the load balancer in front of the servers' supervisor port; also its state file name.
pub const SUPERVISOR_LB_NAME: &str = "rke2-agent-load-balancer";
/// Name of the load balancer in front of the servers' API port; also its state file name.
pub const APISERVER_LB_NAME: &str = "rke2-api-server-agent-load-balancer";
/// Default time between two health checks of one backend: 500 ms.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Default limit for one backend dial (and one health check): 2 s. RKE2 uses 10 s; we keep it
/// short because a dial that hangs delays the client until the next backend is tried, and 2 s
/// still covers one lost SYN (retransmitted after 1 s).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Listen backlog of the local socket.
const LISTEN_BACKLOG: u32 = 1024;

/// Health check supplied by the caller: given a backend's `host:port`, resolves to whether it is
/// healthy. It should bound its own time; the load balancer also counts a check that has not
/// answered within the configured `dial_timeout` as failed.
pub type HealthCheck = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

/// A health check that only opens (and drops) a TCP connection within `timeout`. Good for tests
/// and benchmarks; the agent should pass a protocol-level check (tunnel status, `/ping`).
pub fn tcp_health_check(timeout: Duration) -> HealthCheck {
    Arc::new(move |address: String| {
        Box::pin(async move {
            matches!(
                tokio::time::timeout(timeout, TcpStream::connect(address.as_str())).await,
                Ok(Ok(_))
            )
        })
    })
}

/// Path of a load balancer's state file: `<data-dir>/agent/etc/<name>.json`, as RKE2 names it.
pub fn state_file_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join("agent")
        .join("etc")
        .join(format!("{name}.json"))
}

/// What the load balancer knows about one backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendHealth {
    /// Newly added; no health check has answered yet.
    Unchecked,
    /// The last health check passed.
    Healthy,
    /// Failed before, and one health check has passed since; one more makes it healthy. The
    /// extra check keeps a flapping server from being picked again at once.
    Recovering,
    /// The last health check or dial failed.
    Failed,
}

impl BackendHealth {
    /// Lower-case name, for logs, status and D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendHealth::Unchecked => "unchecked",
            BackendHealth::Healthy => "healthy",
            BackendHealth::Recovering => "recovering",
            BackendHealth::Failed => "failed",
        }
    }

    /// The state after a health check answered `ok`. A failure always means `Failed`; a success
    /// makes a failed backend `Recovering` and anything else `Healthy`.
    pub fn after_check(self, ok: bool) -> BackendHealth {
        match (self, ok) {
            (_, false) => BackendHealth::Failed,
            (BackendHealth::Failed, true) => BackendHealth::Recovering,
            (
                BackendHealth::Unchecked | BackendHealth::Recovering | BackendHealth::Healthy,
                true,
            ) => BackendHealth::Healthy,
        }
    }
}

impl fmt::Display for BackendHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend as reported by [`LoadBalancer::backends`] and [`LoadBalancer::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// `host:port`.
    pub address: String,
    pub health: BackendHealth,
    /// The backend the last new connection went to; new connections stick to it while it is
    /// the best choice, so the agent's connections converge on one server.
    pub active: bool,
    /// The default server (the configured `server` address) while it is not in the learned list:
    /// used only when no learned backend is usable, and not written to the state file.
    pub last_resort: bool,
}

/// Sort key for picking a backend; lower is tried first. Tiers: healthy, recovering, unchecked,
/// the default server (last resort) unless it failed, failed backends, a failed default server.
/// Within a tier the active backend comes first; ties keep the configured order.
fn preference_key(health: BackendHealth, last_resort: bool, active: bool) -> (u8, bool) {
    let tier = match (health, last_resort) {
        (BackendHealth::Healthy, false) => 0,
        (BackendHealth::Recovering, false) => 1,
        (BackendHealth::Unchecked, false) => 2,
        (BackendHealth::Healthy | BackendHealth::Recovering | BackendHealth::Unchecked, true) => 3,
        // Failed backends are still tried last, so a cluster whose health check is wrong (or
        // flaky) keeps working as long as a server accepts connections.
        (BackendHealth::Failed, false) => 4,
        (BackendHealth::Failed, true) => 5,
    };
    (tier, !active)
}

/// Whether `s` is `host:port` with a non-zero port; IPv6 hosts must be bracketed.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && !host
                    .chars()
                    .any(|c| c == ':' || c == '/' || c == '[' || c == ']' || c.is_whitespace())
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Settings of one load balancer.
#[derive(Debug, Clone)]
pub struct LoadBalancerConfig {
    /// Name for logs and the state file, e.g. [`SUPERVISOR_LB_NAME`].
    pub name: String,
    /// Local listen address, e.g. `127.0.0.1:6444`; port 0 picks a free port.
    pub bind: SocketAddr,
    /// `host:port` of the configured `server` (the default server): the first backend, and the
    /// last resort once servers are learned. Never removed.
    pub default_server: String,
    /// State file (see [`state_file_path`]); `None` keeps nothing across restarts.
    pub state_file: Option<PathBuf>,
    /// Time between two health checks of one backend; default [`DEFAULT_HEALTH_INTERVAL`].
    pub health_interval: Duration,
    /// Limit for one backend dial and one health check; default [`DEFAULT_DIAL_TIMEOUT`].
    pub dial_timeout: Duration,
}

impl LoadBalancerConfig {
    /// A config with the default timings and no state file.
    pub fn new(
        name: impl Into<String>,
        bind: SocketAddr,
        default_server: impl Into<String>,
    ) -> Self {
        LoadBalancerConfig {
            name: name.into(),
            bind,
            default_server: default_server.into(),
            state_file: None,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
        }
    }
}

/// Errors from starting a load balancer. Once started, nothing fails: I/O errors are logged.
#[derive(Debug, thiserror::Error)]
pub enum LoadBalancerError {
    #[error("load balancer {lb}: invalid default server address {address:?}, expected host:port")]
    InvalidServerAddress { lb: String, address: String },
    #[error("load balancer {lb}: {setting} must be greater than zero")]
    ZeroDuration { lb: String, setting: &'static str },
    #[error("load balancer {lb}: cannot listen on {addr}: {source}")]
    Bind {
        lb: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// State file

/// RKE2's state file. Go writes `null` for an empty address list, so both are accepted.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    #[serde(rename = "ServerURL")]
    server_url: String,
    #[serde(rename = "ServerAddresses", default)]
    server_addresses: Option<Vec<String>>,
}

/// The `ServerURL` recorded for a default server.
fn server_url(default_server: &str) -> String {
    format!("https://{default_server}")
}

/// What a state file's contents mean for a load balancer whose default server is `default_server`.
#[derive(Debug, PartialEq, Eq)]
enum SavedState {
    /// Written for this default server: load these addresses.
    Servers(Vec<String>),
    /// Written for another default server (the `server` setting changed): start afresh.
    OtherServer(String),
    /// Not parseable: start afresh.
    Corrupt(String),
}

fn decode_state(text: &str, default_server: &str) -> SavedState {
    match serde_json::from_str::<StateFile>(text) {
        Ok(f) if f.server_url == server_url(default_server) => {
            SavedState::Servers(f.server_addresses.unwrap_or_default())
        }
        Ok(f) => SavedState::OtherServer(f.server_url),
        Err(e) => SavedState::Corrupt(e.to_string()),
    }
}

fn encode_state(default_server: &str, servers: &[String]) -> serde_json::Result<Vec<u8>> {
    // Indented like RKE2's json.MarshalIndent, so the file reads the same for operators.
    serde_json::to_vec_pretty(&StateFile {
        server_url: server_url(default_server),
        server_addresses: Some(servers.to_vec()),
    })
}

/// Reads the state file at start. Returns the servers to load; rewrites the file (for this
/// default server, no servers) when it is missing, unreadable, corrupt or for another server.
async fn load_state(lb: &str, path: &Path, default_server: &str) -> Vec<String> {
    let reason = match tokio::fs::read_to_string(path).await {
        Ok(text) => match decode_state(&text, default_server) {
            SavedState::Servers(servers) => {
                info!(component = "loadbalancer", lb, path = %path.display(), servers = ?servers,
                    "loaded servers from state file");
                return servers;
            }
            SavedState::OtherServer(url) => {
                info!(component = "loadbalancer", lb, path = %path.display(), saved_url = %url,
                    "state file is for another server URL; rewriting it");
                "other server"
            }
            SavedState::Corrupt(error) => {
                warn!(component = "loadbalancer", lb, path = %path.display(), %error,
                    "ignoring corrupt state file; rewriting it");
                "corrupt"
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => "missing",
        Err(error) => {
            warn!(component = "loadbalancer", lb, path = %path.display(), %error,
                "cannot read state file; rewriting it");
            "unreadable"
        }
    };
    debug!(component = "loadbalancer", lb, path = %path.display(), reason,
        "writing fresh state file");
    save_state(lb, path, default_server, Vec::new()).await;
    Vec::new()
}

/// Writes the state file atomically (temp file + rename, mode 0600); failures are logged only:
/// losing the list costs a slower start next time, not a broken agent.
async fn save_state(lb: &str, path: &Path, default_server: &str, servers: Vec<String>) {
    let bytes = match encode_state(default_server, &servers) {
        Ok(b) => b,
        Err(error) => {
            warn!(component = "loadbalancer", lb, %error, "cannot encode state file");
            return;
        }
    };
    let target = path.to_path_buf();
    let written = tokio::task::spawn_blocking(move || {
        fsutil::write_atomic_mkdir(&target, &bytes, fsutil::SECRET_FILE_MODE)
    })
    .await;
    match written {
        Ok(Ok(())) => {
            debug!(component = "loadbalancer", lb, path = %path.display(), servers = ?servers,
                "saved state file")
        }
        Ok(Err(error)) => {
            warn!(component = "loadbalancer", lb, path = %path.display(), %error,
                "cannot write state file")
        }
        Err(error) => {
            warn!(component = "loadbalancer", lb, path = %path.display(), %error,
                "state file writer failed")
        }
    }
}

/// Saves every new server list, one write at a time and always the latest, so two quick updates
/// never race on the temp file or land out of order. A pending list is flushed on cancellation.
async fn persist_loop(
    lb: String,
    path: PathBuf,
    default_server: String,
    mut servers: watch::Receiver<Vec<String>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            changed = servers.changed() => {
                if changed.is_err() {
                    return;
                }
                let list = servers.borrow_and_update().clone();
                save_state(&lb, &path, &default_server, list).await;
            }
            _ = cancel.cancelled() => {
                if servers.has_changed().unwrap_or(false) {
                    let list = servers.borrow_and_update().clone();
                    save_state(&lb, &path, &default_server, list).await;
                }
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backends and shared state

struct Backend {
    /// Unique per load balancer, so late results for a removed (or removed and re-added) backend
    /// are recognised and dropped.
    id: u64,
    address: String,
    health: BackendHealth,
    last_resort: bool,
    /// Cancelled when the backend is removed or the load balancer stops: ends its health loop
    /// and, through `connections`, every connection to it.
    lifetime: CancellationToken,
    /// Shared by the connections proxied to this backend; cancelled (and replaced) to close them.
    connections: CancellationToken,
    /// Number of open proxied connections, for logs.
    open: Arc<AtomicUsize>,
}

impl Backend {
    /// Closes every connection proxied to this backend; returns how many were open.
    fn close_connections(&mut self) -> usize {
        self.connections.cancel();
        self.connections = self.lifetime.child_token();
        self.open.load(Ordering::Relaxed)
    }
}

struct State {
    /// Learned servers in the order given, then the default server if it is not among them.
    backends: Vec<Backend>,
    /// Id of the backend the last new connection went to.
    active: Option<u64>,
}

impl State {
    /// Indices of the backends in the order a new connection tries them.
    fn preference_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.backends.len()).collect();
        // Stable sort: ties keep the configured order.
        order.sort_by_key(|&i| {
            let b = &self.backends[i];
            preference_key(b.health, b.last_resort, self.active == Some(b.id))
        });
        order
    }

    fn snapshot(&self) -> Vec<BackendStatus> {
        self.preference_order()
            .into_iter()
            .map(|i| {
                let b = &self.backends[i];
                BackendStatus {
                    address: b.address.clone(),
                    health: b.health,
                    active: self.active == Some(b.id),
                    last_resort: b.last_resort,
                }
            })
            .collect()
    }
}

/// Held by a proxied connection: where to hear "close now", and the backend's open count.
struct ConnectionGuard {
    close: CancellationToken,
    open: Arc<AtomicUsize>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    name: String,
    default_server: String,
    local_addr: SocketAddr,
    health_interval: Duration,
    dial_timeout: Duration,
    health: HealthCheck,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// `update` is synchronous and may be called from any thread; new health loops go here.
    runtime: Handle,
    next_id: AtomicU64,
    state: Mutex<State>,
    status: watch::Sender<Vec<BackendStatus>>,
    /// Learned server list, watched by the state file writer.
    persisted: watch::Sender<Vec<String>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The lock is never held across an await or a panic-prone call; recover rather than
        // propagate a poison panic into the proxy.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, st: &State) {
        let snapshot = st.snapshot();
        self.status.send_if_modified(|current| {
            if *current == snapshot {
                false
            } else {
                *current = snapshot;
                true
            }
        });
    }

    fn new_backend(&self, address: String, last_resort: bool) -> Backend {
        let lifetime = self.cancel.child_token();
        Backend {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            address,
            health: BackendHealth::Unchecked,
            last_resort,
            connections: lifetime.child_token(),
            lifetime,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Moves backend `id` to `health`; entering `Failed` closes its connections and ends its
    /// time as the active backend.
    fn set_health(&self, st: &mut State, id: u64, health: BackendHealth, reason: &str) {
        let Some(b) = st.backends.iter_mut().find(|b| b.id == id) else {
            return;
        };
        let previous = b.health;
        if previous == health {
            return;
        }
        b.health = health;
        if health == BackendHealth::Failed {
            let closed = b.close_connections();
            warn!(component = "loadbalancer", lb = %self.name, backend = %b.address,
                from = %previous, reason, closed_connections = closed,
                "backend failed; closing its connections");
            if st.active == Some(id) {
                st.active = None;
            }
        } else {
            info!(component = "loadbalancer", lb = %self.name, backend = %b.address,
                from = %previous, to = %health, "backend health changed");
        }
        self.publish(st);
    }

    /// Replaces the learned server list; see [`LoadBalancer::update`].
    fn set_servers(self: &Arc<Self>, servers: Vec<String>) {
        let mut wanted: Vec<String> = Vec::with_capacity(servers.len());
        for server in servers {
            let server = server.trim().to_string();
            if !is_host_port(&server) {
                warn!(component = "loadbalancer", lb = %self.name, backend = %server,
                    "ignoring invalid server address, expected host:port");
            } else if !wanted.contains(&server) {
                wanted.push(server);
            }
        }

        let mut added = Vec::new();
        {
            let mut st = self.state();
            let mut previous = std::mem::take(&mut st.backends);
            let mut take = |address: &str| {
                previous
                    .iter()
                    .position(|b| b.address == address)
                    .map(|i| previous.remove(i))
            };
            let mut next = Vec::with_capacity(wanted.len() + 1);
            for address in &wanted {
                match take(address) {
                    Some(mut b) => {
                        b.last_resort = false;
                        next.push(b);
                    }
                    None => {
                        let b = self.new_backend(address.clone(), false);
                        added.push((b.id, b.address.clone(), b.lifetime.clone()));
                        next.push(b);
                    }
                }
            }
            // The default server stays as the last resort: a fixed registration address
            // usually keeps working when every learned address is stale.
            if !wanted.contains(&self.default_server) {
                match take(&self.default_server) {
                    Some(mut b) => {
                        b.last_resort = true;
                        next.push(b);
                    }
                    None => {
                        let b = self.new_backend(self.default_server.clone(), true);
                        added.push((b.id, b.address.clone(), b.lifetime.clone()));
                        next.push(b);
                    }
                }
            }
            for b in previous {
                // Cancelling the lifetime stops its health loop and closes its connections.
                b.lifetime.cancel();
                if st.active == Some(b.id) {
                    st.active = None;
                }
                info!(component = "loadbalancer", lb = %self.name, backend = %b.address,
                    closed_connections = b.open.load(Ordering::Relaxed), "backend removed");
            }
            st.backends = next;
            self.publish(&st);
        }
        for (id, address, stop) in added {
            info!(component = "loadbalancer", lb = %self.name, backend = %address, "backend added");
            let shared = Arc::clone(self);
            self.tracker
                .spawn_on(shared.health_loop(id, address, stop), &self.runtime);
        }
        self.persisted.send_if_modified(|current| {
            if *current == wanted {
                false
            } else {
                *current = wanted;
                true
            }
        });
    }

    /// Checks one backend every `health_interval` until it is removed or the balancer stops.
    async fn health_loop(self: Arc<Self>, id: u64, address: String, stop: CancellationToken) {
        loop {
            let check = tokio::time::timeout(self.dial_timeout, (self.health)(address.clone()));
            let ok = tokio::select! {
                _ = stop.cancelled() => return,
                result = check => result.unwrap_or(false),
            };
            {
                let mut st = self.state();
                let Some(current) = st.backends.iter().find(|b| b.id == id).map(|b| b.health)
                else {
                    return;
                };
                self.set_health(&mut st, id, current.after_check(ok), "health check failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.health_interval) => {}
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, peer)) => {
                    let shared = Arc::clone(&self);
                    self.tracker.spawn(shared.serve(client, peer));
                }
                Err(error) => {
                    warn!(component = "loadbalancer", lb = %self.name, %error, "accept failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            }
        }
        info!(component = "loadbalancer", lb = %self.name, listen = %self.local_addr,
            "load balancer stopped");
    }

    /// Dials backends in preference order and proxies `client` to the first that answers.
    async fn serve(self: Arc<Self>, client: TcpStream, peer: SocketAddr) {
        let candidates: Vec<(u64, String)> = {
            let st = self.state();
            st.preference_order()
                .into_iter()
                .map(|i| (st.backends[i].id, st.backends[i].address.clone()))
                .collect()
        };
        for (id, address) in candidates {
            let dial =
                tokio::time::timeout(self.dial_timeout, TcpStream::connect(address.as_str()));
            let dialed = tokio::select! {
                _ = self.cancel.cancelled() => return,
                dialed = dial => dialed,
            };
            let server = match dialed {
                Ok(Ok(server)) => server,
                Ok(Err(error)) => {
                    self.dial_failed(id, &address, &error.to_string());
                    continue;
                }
                Err(_) => {
                    self.dial_failed(id, &address, "dial timed out");
                    continue;
                }
            };
            let Some(guard) = self.register(id) else {
                debug!(component = "loadbalancer", lb = %self.name, backend = %address,
                    "backend removed while dialing; trying the next");
                continue;
            };
            self.proxy(client, server, guard, &address, peer).await;
            return;
        }
        warn!(component = "loadbalancer", lb = %self.name, client = %peer, "all servers failed");
    }

    fn dial_failed(&self, id: u64, address: &str, error: &str) {
        debug!(component = "loadbalancer", lb = %self.name, backend = %address, %error,
            "dial failed");
        let mut st = self.state();
        self.set_health(&mut st, id, BackendHealth::Failed, error);
    }

    /// Records a new connection to backend `id` and makes it the active backend. `None` when the
    /// backend was removed meanwhile.
    fn register(&self, id: u64) -> Option<ConnectionGuard> {
        let mut st = self.state();
        let b = st.backends.iter().find(|b| b.id == id)?;
        b.open.fetch_add(1, Ordering::Relaxed);
        let guard = ConnectionGuard {
            close: b.connections.clone(),
            open: Arc::clone(&b.open),
        };
        if st.active != Some(id) {
            info!(component = "loadbalancer", lb = %self.name, backend = %b.address,
                "new connections now go to this backend");
            st.active = Some(id);
            self.publish(&st);
        }
        Some(guard)
    }

    async fn proxy(
        &self,
        mut client: TcpStream,
        mut server: TcpStream,
        guard: ConnectionGuard,
        address: &str,
        peer: SocketAddr,
    ) {
        // Small request/response exchanges (TLS handshakes, API calls) should not wait for Nagle.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        debug!(component = "loadbalancer", lb = %self.name, backend = %address, client = %peer,
            "proxying connection");
        tokio::select! {
            // Dropping both streams on return closes them, which makes the client reconnect.
            _ = guard.close.cancelled() => {
                debug!(component = "loadbalancer", lb = %self.name, backend = %address,
                    client = %peer, "closing connection");
            }
            copied = tokio::io::copy_bidirectional(&mut client, &mut server) => match copied {
                Ok((up, down)) => debug!(component = "loadbalancer", lb = %self.name,
                    backend = %address, client = %peer, bytes_up = up, bytes_down = down,
                    "connection finished"),
                Err(error) => debug!(component = "loadbalancer", lb = %self.name,
                    backend = %address, client = %peer, %error, "connection ended with error"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public handle

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets a restarted agent listen again while connections of its previous run are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A running load balancer. Cheap to clone; every clone drives the same balancer. It runs until
/// the cancellation token given to [`LoadBalancer::start`] is cancelled (dropping the handles does
/// not stop it), which closes the listener and every proxied connection.
///
/// A new client connection is proxied to the first backend, in this order, that accepts a TCP
/// connection within `dial_timeout`: healthy backends (the active one first, so connections
/// converge on one server), recovering, unchecked, the default server while it is only the last
/// resort, and finally failed backends. A failed dial marks the backend failed and tries the
/// next; when none answers the client connection is closed (`all servers failed`).
#[derive(Clone)]
pub struct LoadBalancer {
    shared: Arc<Shared>,
}

impl fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("name", &self.shared.name)
            .field("local_addr", &self.shared.local_addr)
            .field("default_server", &self.shared.default_server)
            .finish_non_exhaustive()
    }
}

impl LoadBalancer {
    /// Binds the listener, loads the state file (servers saved for this default server are the
    /// initial backends; otherwise the file is rewritten), and spawns the accept loop and one
    /// health loop per backend on the current tokio runtime.
    pub async fn start(
        cfg: LoadBalancerConfig,
        health: HealthCheck,
        cancel: CancellationToken,
    ) -> Result<LoadBalancer, LoadBalancerError> {
        let lb = cfg.name;
        if !is_host_port(&cfg.default_server) {
            return Err(LoadBalancerError::InvalidServerAddress {
                lb,
                address: cfg.default_server,
            });
        }
        for (setting, value) in [
            ("health_interval", cfg.health_interval),
            ("dial_timeout", cfg.dial_timeout),
        ] {
            if value.is_zero() {
                return Err(LoadBalancerError::ZeroDuration { lb, setting });
            }
        }
        let bind_error = |source| LoadBalancerError::Bind {
            lb: lb.clone(),
            addr: cfg.bind,
            source,
        };
        let listener = bind(cfg.bind).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let saved = match &cfg.state_file {
            Some(path) => load_state(&lb, path, &cfg.default_server).await,
            None => Vec::new(),
        };
        let (status, _) = watch::channel(Vec::new());
        let (persisted, persisted_rx) = watch::channel(saved.clone());
        let shared = Arc::new(Shared {
            name: lb,
            default_server: cfg.default_server,
            local_addr,
            health_interval: cfg.health_interval,
            dial_timeout: cfg.dial_timeout,
            health,
            cancel,
            tracker: TaskTracker::new(),
            runtime: Handle::current(),
            next_id: AtomicU64::new(0),
            state: Mutex::new(State {
                backends: Vec::new(),
                active: None,
            }),
            status,
            persisted,
        });
        // Adds the default server too; saves only if the saved list needed cleaning up.
        shared.set_servers(saved);
        if let Some(path) = cfg.state_file {
            shared.tracker.spawn(persist_loop(
                shared.name.clone(),
                path,
                shared.default_server.clone(),
                persisted_rx,
                shared.cancel.clone(),
            ));
        }
        shared
            .tracker
            .spawn(Arc::clone(&shared).accept_loop(listener));
        info!(component = "loadbalancer", lb = %shared.name, listen = %local_addr,
            default_server = %shared.default_server, "load balancer started");
        Ok(LoadBalancer { shared })
    }

    /// The balancer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address the balancer listens on (with the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Replaces the learned servers (`host:port`; invalid entries are logged and skipped,
    /// duplicates dropped). Known backends keep their health; new ones start unchecked and are
    /// checked at once; removed ones have their connections closed. The default server is never
    /// removed: when not in `servers` it stays as the last resort. The list is saved to the state
    /// file when it changed.
    pub fn update(&self, servers: Vec<String>) {
        self.shared.set_servers(servers);
    }

    /// Every backend, in the order a new connection would try them.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.shared.status.borrow().clone()
    }

    /// Like [`LoadBalancer::backends`], notified whenever a backend is added or removed or its
    /// health, active or last-resort flag changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<BackendStatus>> {
        self.shared.status.subscribe()
    }

    /// Resolves once the balancer has stopped: the token was cancelled and every task (accept
    /// loop, health loops, connections, state file writer) has finished.
    pub async fn stopped(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::task::JoinHandle;

    /// Upper bound for anything a test waits for; far above what a passing run needs.
    const WAIT: Duration = Duration::from_secs(3);
    const INTERVAL: Duration = Duration::from_millis(50);

    // --- pure logic ----------------------------------------------------------------------

    #[test]
    fn health_transitions() {
        use BackendHealth::*;
        assert_eq!(Unchecked.after_check(true), Healthy);
        assert_eq!(Unchecked.after_check(false), Failed);
        assert_eq!(Healthy.after_check(true), Healthy);
        assert_eq!(Healthy.after_check(false), Failed);
        assert_eq!(Failed.after_check(true), Recovering);
        assert_eq!(Failed.after_check(false), Failed);
        assert_eq!(Recovering.after_check(true), Healthy);
        assert_eq!(Recovering.after_check(false), Failed);
    }

    #[test]
    fn preference_order_follows_tiers_then_active() {
        use BackendHealth::*;
        // (label, health, last_resort, active), in configured order.
        let backends = [
            ("failed", Failed, false, false),
            ("default", Healthy, true, false),
            ("unchecked", Unchecked, false, false),
            ("healthy", Healthy, false, false),
            ("recovering", Recovering, false, false),
            ("healthy-active", Healthy, false, true),
            ("failed-default", Failed, true, false),
        ];
        let mut order: Vec<_> = backends.iter().collect();
        order.sort_by_key(|(_, h, lr, a)| preference_key(*h, *lr, *a));
        let labels: Vec<_> = order.iter().map(|(l, ..)| *l).collect();
        assert_eq!(
            labels,
            [
                "healthy-active",
                "healthy",
                "recovering",
                "unchecked",
                "default",
                "failed",
                "failed-default"
            ]
        );
        // Being active never lifts a backend above a better tier.
        assert!(preference_key(Healthy, false, false) < preference_key(Recovering, false, true));
        assert!(preference_key(Unchecked, false, false) < preference_key(Healthy, true, true));
    }

    #[test]
    fn host_port_validation() {
        for ok in [
            "10.0.0.1:9345",
            "server-1.example:6443",
            "[fd00::1]:9345",
            "[::1]:1",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.1",
            ":9345",
            "host:",
            "host:0",
            "host:65536",
            "::1:9345",
            "a b:1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn state_file_decoding() {
        let d = "rke2.example:9345";
        // What k3s/RKE2 writeConfig (json.MarshalIndent(lb, "", "  ")) writes.
        let rke2 = r#"{
  "ServerURL": "https://rke2.example:9345",
  "ServerAddresses": [
    "10.0.0.1:9345",
    "10.0.0.2:9345"
  ]
}"#;
        assert_eq!(
            decode_state(rke2, d),
            SavedState::Servers(vec!["10.0.0.1:9345".into(), "10.0.0.2:9345".into()])
        );
        let go_nil = r#"{"ServerURL":"https://rke2.example:9345","ServerAddresses":null}"#;
        assert_eq!(decode_state(go_nil, d), SavedState::Servers(vec![]));
        let other =
            r#"{"ServerURL":"https://old.example:9345","ServerAddresses":["10.0.0.1:9345"]}"#;
        assert_eq!(
            decode_state(other, d),
            SavedState::OtherServer("https://old.example:9345".into())
        );
        assert!(matches!(
            decode_state("{not json", d),
            SavedState::Corrupt(_)
        ));
        let encoded = encode_state(d, &["10.0.0.1:9345".into(), "10.0.0.2:9345".into()]).unwrap();
        assert_eq!(String::from_utf8(encoded).unwrap(), rke2);
    }

    // --- helpers -------------------------------------------------------------------------

    /// A backend server: greets each connection with `<name>\n`, then echoes.
    struct TestServer {
        addr: String,
        accept: Option<JoinHandle<()>>,
    }

    impl TestServer {
        async fn start(name: &str) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let greeting = format!("{name}\n");
            let accept = tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let greeting = greeting.clone();
                    // Connections live in their own tasks, so they outlive the listener.
                    tokio::spawn(async move {
                        if conn.write_all(greeting.as_bytes()).await.is_err() {
                            return;
                        }
                        let (mut r, mut w) = conn.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
            TestServer {
                addr,
                accept: Some(accept),
            }
        }

        /// Closes the listening socket (new connections are refused); accepted ones stay open.
        async fn stop_listening(&mut self) {
            if let Some(accept) = self.accept.take() {
                accept.abort();
                let _ = accept.await;
            }
        }
    }

    /// An address nothing listens on.
    async fn dead_addr() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// A client connection through the balancer.
    struct Client(BufReader<TcpStream>);

    impl Client {
        async fn connect(lb: &LoadBalancer) -> Client {
            Client(BufReader::new(
                TcpStream::connect(lb.local_addr()).await.unwrap(),
            ))
        }

        /// The name of the backend it reached; `None` when the balancer closed it.
        async fn greeting(&mut self) -> Option<String> {
            let mut line = String::new();
            match tokio::time::timeout(WAIT, self.0.read_line(&mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => None,
                Ok(Ok(_)) => Some(line.trim_end().to_string()),
                Err(_) => panic!("no greeting within {WAIT:?}"),
            }
        }

        async fn echo(&mut self, msg: &str) -> String {
            self.0.get_mut().write_all(msg.as_bytes()).await.unwrap();
            let mut buf = vec![0; msg.len()];
            tokio::time::timeout(WAIT, self.0.read_exact(&mut buf))
                .await
                .expect("echo timed out")
                .unwrap();
            String::from_utf8(buf).unwrap()
        }

        /// Whether the connection is closed (EOF or error) within `limit`.
        async fn closed_within(&mut self, limit: Duration) -> bool {
            let deadline = tokio::time::Instant::now() + limit;
            let mut buf = [0u8; 64];
            loop {
                match tokio::time::timeout_at(deadline, self.0.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        }
    }

    /// The backend a fresh connection reaches.
    async fn route(lb: &LoadBalancer) -> Option<String> {
        Client::connect(lb).await.greeting().await
    }

    /// A health check the test controls: addresses marked down fail, everything else passes.
    #[derive(Clone, Default)]
    struct Switch(Arc<Mutex<HashSet<String>>>);

    impl Switch {
        fn set(&self, addr: &str, up: bool) {
            let mut down = self.0.lock().unwrap();
            if up {
                down.remove(addr);
            } else {
                down.insert(addr.to_string());
            }
        }

        fn check(&self) -> HealthCheck {
            let down = Arc::clone(&self.0);
            Arc::new(move |addr: String| {
                let ok = !down.lock().unwrap().contains(&addr);
                Box::pin(async move { ok })
            })
        }
    }

    fn config(default_server: &str) -> LoadBalancerConfig {
        LoadBalancerConfig {
            health_interval: INTERVAL,
            dial_timeout: Duration::from_secs(1),
            ..LoadBalancerConfig::new("test-lb", "127.0.0.1:0".parse().unwrap(), default_server)
        }
    }

    async fn start(
        cfg: LoadBalancerConfig,
        health: HealthCheck,
    ) -> (LoadBalancer, CancellationToken) {
        let cancel = CancellationToken::new();
        let lb = LoadBalancer::start(cfg, health, cancel.clone())
            .await
            .unwrap();
        (lb, cancel)
    }

    /// Waits until `pred` holds for the published backend list.
    async fn wait_until(
        lb: &LoadBalancer,
        what: &str,
        mut pred: impl FnMut(&[BackendStatus]) -> bool,
    ) {
        let mut rx = lb.subscribe();
        match tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s))).await {
            Ok(Ok(_)) => {}
            _ => panic!("timed out waiting for {what}: {:?}", lb.backends()),
        }
    }

    fn health_of(backends: &[BackendStatus], addr: &str) -> Option<BackendHealth> {
        backends
            .iter()
            .find(|b| b.address == addr)
            .map(|b| b.health)
    }

    fn all_healthy(addrs: &[&str]) -> impl FnMut(&[BackendStatus]) -> bool {
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        move |s| {
            addrs
                .iter()
                .all(|a| health_of(s, a) == Some(BackendHealth::Healthy))
        }
    }

    async fn stop(lb: LoadBalancer, cancel: CancellationToken) {
        cancel.cancel();
        tokio::time::timeout(WAIT, lb.stopped())
            .await
            .expect("balancer did not stop");
    }

    // --- behaviour -----------------------------------------------------------------------

    #[tokio::test]
    async fn proxies_to_the_default_server() {
        let d = TestServer::start("D").await;
        let (lb, cancel) = start(config(&d.addr), Switch::default().check()).await;
        let mut c = Client::connect(&lb).await;
        assert_eq!(c.greeting().await.as_deref(), Some("D"));
        assert_eq!(
            c.echo("hello through the balancer").await,
            "hello through the balancer"
        );
        assert_eq!(lb.backends().len(), 1);
        assert!(lb.backends()[0].last_resort);
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn closed_backend_fails_over_and_its_connections_close() {
        let mut a = TestServer::start("A").await;
        let b = TestServer::start("B").await;
        let (lb, cancel) = start(config(&dead_addr().await), tcp_health_check(WAIT)).await;
        lb.update(vec![a.addr.clone(), b.addr.clone()]);
        wait_until(&lb, "A and B healthy", all_healthy(&[&a.addr, &b.addr])).await;

        let mut c = Client::connect(&lb).await;
        assert_eq!(c.greeting().await.as_deref(), Some("A"));
        let failed_at = Instant::now();
        a.stop_listening().await;
        // The health check notices within an interval and the open connection is closed.
        assert!(
            c.closed_within(WAIT).await,
            "connection to the failed backend stayed open"
        );
        let took = failed_at.elapsed();
        assert!(took < Duration::from_secs(1), "failover took {took:?}");
        assert_eq!(
            health_of(&lb.backends(), &a.addr),
            Some(BackendHealth::Failed)
        );
        assert_eq!(route(&lb).await.as_deref(), Some("B"));
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn failed_dial_skips_backend_at_once() {
        // The health check passes everything and runs only once, so only the dial can notice.
        let mut a = TestServer::start("A").await;
        let b = TestServer::start("B").await;
        let cfg = LoadBalancerConfig {
            health_interval: Duration::from_secs(3600),
            ..config(&dead_addr().await)
        };
        let (lb, cancel) = start(cfg, Switch::default().check()).await;
        lb.update(vec![a.addr.clone(), b.addr.clone()]);
        wait_until(&lb, "A and B healthy", all_healthy(&[&a.addr, &b.addr])).await;
        let mut old = Client::connect(&lb).await;
        assert_eq!(old.greeting().await.as_deref(), Some("A"));

        a.stop_listening().await;
        assert_eq!(route(&lb).await.as_deref(), Some("B"));
        assert_eq!(
            health_of(&lb.backends(), &a.addr),
            Some(BackendHealth::Failed)
        );
        assert!(old.closed_within(WAIT).await, "connection to A stayed open");
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn connections_stay_on_the_active_backend() {
        let a = TestServer::start("A").await;
        let b = TestServer::start("B").await;
        let c = TestServer::start("C").await;
        let switch = Switch::default();
        let (lb, cancel) = start(config(&dead_addr().await), switch.check()).await;
        lb.update(vec![a.addr.clone(), b.addr.clone(), c.addr.clone()]);
        wait_until(
            &lb,
            "all healthy",
            all_healthy(&[&a.addr, &b.addr, &c.addr]),
        )
        .await;

        let mut on_a = Client::connect(&lb).await;
        assert_eq!(on_a.greeting().await.as_deref(), Some("A"));
        for _ in 0..3 {
            assert_eq!(route(&lb).await.as_deref(), Some("A"));
        }

        switch.set(&a.addr, false);
        assert!(
            on_a.closed_within(WAIT).await,
            "connection to failed A stayed open"
        );
        assert_eq!(route(&lb).await.as_deref(), Some("B"));

        // A comes back (via Recovering) but B stays in use.
        switch.set(&a.addr, true);
        wait_until(&lb, "A healthy again", all_healthy(&[&a.addr])).await;
        for _ in 0..3 {
            assert_eq!(route(&lb).await.as_deref(), Some("B"));
        }
        // Reordering the learned list does not move connections either.
        lb.update(vec![c.addr.clone(), a.addr.clone(), b.addr.clone()]);
        assert_eq!(route(&lb).await.as_deref(), Some("B"));
        let first = &lb.backends()[0];
        assert_eq!(
            (first.address.as_str(), first.active),
            (b.addr.as_str(), true)
        );
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn default_server_is_only_the_last_resort() {
        let d = TestServer::start("D").await;
        let a = TestServer::start("A").await;
        let switch = Switch::default();
        let (lb, cancel) = start(config(&d.addr), switch.check()).await;
        lb.update(vec![a.addr.clone()]);
        wait_until(&lb, "A and D healthy", all_healthy(&[&a.addr, &d.addr])).await;
        assert_eq!(route(&lb).await.as_deref(), Some("A"));
        let last = lb.backends().pop().unwrap();
        assert_eq!(
            (last.address.as_str(), last.last_resort),
            (d.addr.as_str(), true)
        );

        switch.set(&a.addr, false);
        wait_until(&lb, "A failed", |s| {
            health_of(s, &a.addr) == Some(BackendHealth::Failed)
        })
        .await;
        assert_eq!(route(&lb).await.as_deref(), Some("D"));

        // Once A is healthy again it wins over the default, even though D is the active one.
        switch.set(&a.addr, true);
        wait_until(&lb, "A healthy again", all_healthy(&[&a.addr])).await;
        assert_eq!(route(&lb).await.as_deref(), Some("A"));
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn failed_backends_are_still_tried_last() {
        // A health check that fails everything must not take a working cluster down.
        let a = TestServer::start("A").await;
        let d = dead_addr().await;
        let switch = Switch::default();
        switch.set(&a.addr, false);
        switch.set(&d, false);
        let (lb, cancel) = start(config(&d), switch.check()).await;
        lb.update(vec![a.addr.clone()]);
        wait_until(&lb, "everything failed", |s| {
            s.iter().all(|b| b.health == BackendHealth::Failed)
        })
        .await;
        let mut c = Client::connect(&lb).await;
        assert_eq!(c.greeting().await.as_deref(), Some("A"));
        assert_eq!(c.echo("still works").await, "still works");
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn client_is_closed_when_all_servers_fail() {
        let d = dead_addr().await;
        let (lb, cancel) = start(config(&d), tcp_health_check(WAIT)).await;
        lb.update(vec![dead_addr().await]);
        assert_eq!(route(&lb).await, None);
        wait_until(&lb, "both failed", |s| {
            s.len() == 2 && s.iter().all(|b| b.health == BackendHealth::Failed)
        })
        .await;
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn update_replaces_backends_and_closes_removed_ones() {
        let a = TestServer::start("A").await;
        let b = TestServer::start("B").await;
        let c = TestServer::start("C").await;
        let d = dead_addr().await;
        let (lb, cancel) = start(config(&d), Switch::default().check()).await;
        lb.update(vec![a.addr.clone(), b.addr.clone()]);
        wait_until(&lb, "A and B healthy", all_healthy(&[&a.addr, &b.addr])).await;
        let mut on_a = Client::connect(&lb).await;
        assert_eq!(on_a.greeting().await.as_deref(), Some("A"));

        lb.update(vec![
            b.addr.clone(),
            c.addr.clone(),
            " ".into(),
            "no-port".into(),
            b.addr.clone(),
        ]);
        assert!(
            on_a.closed_within(WAIT).await,
            "connection to removed A stayed open"
        );
        let addrs: Vec<_> = lb.backends().into_iter().map(|s| s.address).collect();
        assert_eq!(addrs, [b.addr.clone(), c.addr.clone(), d.clone()]);
        assert_eq!(route(&lb).await.as_deref(), Some("B"));

        // The default server is never removed.
        lb.update(vec![]);
        let left = lb.backends();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].address.as_str(), left[0].last_resort),
            (d.as_str(), true)
        );
        // ... and a listed default server is an ordinary backend.
        lb.update(vec![d.clone()]);
        assert!(!lb.backends()[0].last_resort);
        stop(lb, cancel).await;
    }

    async fn read_state(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&tokio::fs::read(path).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_file_path(dir.path(), SUPERVISOR_LB_NAME);
        let d = dead_addr().await;
        let (s1, s2) = (dead_addr().await, dead_addr().await);
        let cfg = || LoadBalancerConfig {
            state_file: Some(path.clone()),
            ..config(&d)
        };
        let url = format!("https://{d}");

        let (lb, cancel) = start(cfg(), Switch::default().check()).await;
        // A missing file is written at start, parent directories included.
        assert_eq!(
            read_state(&path).await,
            serde_json::json!({"ServerURL": url, "ServerAddresses": []})
        );
        lb.update(vec![s1.clone(), s2.clone()]);
        let want = serde_json::json!({"ServerURL": url, "ServerAddresses": [s1, s2]});
        let deadline = Instant::now() + WAIT;
        while read_state(&path).await != want {
            assert!(
                Instant::now() < deadline,
                "state file not saved: {}",
                read_state(&path).await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        stop(lb, cancel).await;

        // A restart with the same default server loads the saved servers.
        let (lb, cancel) = start(cfg(), Switch::default().check()).await;
        let addrs: Vec<_> = lb
            .backends()
            .into_iter()
            .map(|s| (s.address, s.last_resort))
            .collect();
        assert_eq!(
            addrs,
            [(s1.clone(), false), (s2.clone(), false), (d.clone(), true)]
        );
        assert_eq!(read_state(&path).await, want);
        stop(lb, cancel).await;
    }

    #[tokio::test]
    async fn state_file_for_another_server_or_corrupt_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.json");
        let d = dead_addr().await;
        let fresh = serde_json::json!({"ServerURL": format!("https://{d}"), "ServerAddresses": []});
        for previous in [
            r#"{"ServerURL":"https://old.example:9345","ServerAddresses":["127.0.0.1:1"]}"#,
            "{ corrupt",
        ] {
            std::fs::write(&path, previous).unwrap();
            let cfg = LoadBalancerConfig {
                state_file: Some(path.clone()),
                ..config(&d)
            };
            let (lb, cancel) = start(cfg, Switch::default().check()).await;
            let addrs: Vec<_> = lb.backends().into_iter().map(|s| s.address).collect();
            assert_eq!(addrs, std::slice::from_ref(&d), "after {previous}");
            assert_eq!(read_state(&path).await, fresh, "after {previous}");
            stop(lb, cancel).await;
        }
    }

    #[tokio::test]
    async fn cancel_stops_everything() {
        let a = TestServer::start("A").await;
        let (lb, cancel) = start(config(&a.addr), Switch::default().check()).await;
        let mut c = Client::connect(&lb).await;
        assert_eq!(c.greeting().await.as_deref(), Some("A"));
        let addr = lb.local_addr();
        stop(lb, cancel).await;
        assert!(
            c.closed_within(WAIT).await,
            "proxied connection survived cancellation"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open"
        );
    }

    #[tokio::test]
    async fn start_rejects_bad_settings() {
        let cancel = CancellationToken::new();
        let check = Switch::default().check();
        let err = LoadBalancer::start(config("no-port"), check.clone(), cancel.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoadBalancerError::InvalidServerAddress { .. }),
            "{err}"
        );
        let zero = LoadBalancerConfig {
            health_interval: Duration::ZERO,
            ..config("127.0.0.1:1")
        };
        let err = LoadBalancer::start(zero, check.clone(), cancel.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LoadBalancerError::ZeroDuration { .. }),
            "{err}"
        );
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let busy = LoadBalancerConfig {
            bind: taken.local_addr().unwrap(),
            ..config("127.0.0.1:1")
        };
        let err = LoadBalancer::start(busy, check, cancel).await.unwrap_err();
        assert!(matches!(err, LoadBalancerError::Bind { .. }), "{err}");
    }
}
