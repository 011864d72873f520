//! The D-Bus service (docs/architecture.md §4.4): `rke2 server` owns `io.rke2.Server` at
//! `/io/rke2/Server` with `io.rke2.Cluster1`, `io.rke2.Nodes1` and `io.rke2.Tokens1`; `rke2 agent`
//! owns `io.rke2.Agent` at `/io/rke2/Agent` with `io.rke2.Cluster1`. The connection goes to the
//! system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured, read by zbus) and runs on the daemon's tokio
//! runtime; the name is requested only after the objects are served. A missing or lost bus is
//! logged and retried with backoff and never stops the cluster. Mutating methods re-check the
//! caller's uid with `GetConnectionUnixUser`, whatever the bus policy says.

pub mod client;
pub mod cluster;
pub mod errors;
pub mod nodes;
pub mod tokens;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zbus::Connection;
use zbus::message::Header;

use crate::cluster::admin::{self, AdminError};
use crate::cluster::context::Ctx;
use crate::daemon::Runtime;
use errors::BusError;

/// Well-known name of a server.
pub const SERVER_NAME: &str = "io.rke2.Server";
/// Object path of a server.
pub const SERVER_PATH: &str = "/io/rke2/Server";
/// Well-known name of an agent.
pub const AGENT_NAME: &str = "io.rke2.Agent";
/// Object path of an agent.
pub const AGENT_PATH: &str = "/io/rke2/Agent";
/// First reconnection delay after the bus was unavailable.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest reconnection delay.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Starts the server's D-Bus service in the background. Never fails: without a bus the daemon
/// runs on and keeps trying.
pub fn spawn_server(ctx: Ctx, tracker: &TaskTracker, cancel: CancellationToken) {
    let runtime = ctx.runtime.clone();
    let connect_ctx = ctx.clone();
    tracker.spawn(keep_on_bus(
        BusNames::new(SERVER_NAME, &ctx.node.name),
        move || {
            let ctx = connect_ctx.clone();
            async move {
                zbus::connection::Builder::system()
                    .serve_at(SERVER_PATH, cluster::ServerCluster::for_server(ctx.clone()))
                    .serve_at(SERVER_PATH, nodes::Nodes::new(ctx.clone()))
                    .serve_at(SERVER_PATH, tokens::Tokens::new(ctx.clone()))
                    .build()
                    .await
            }
        },
        move |conn| {
            let (ctx, runtime) = (ctx.clone(), runtime.clone());
            async move {
                tokio::join!(
                    cluster::notify_server_properties(runtime, conn.clone()),
                    cluster::emit_snapshot_signals(ctx.clone(), conn.clone()),
                    nodes::emit_node_signals(ctx, conn),
                );
            }
        },
        cancel,
    ));
}

/// Starts the agent's D-Bus service in the background; like [`spawn_server`], never fails.
pub fn spawn_agent(runtime: Runtime, tracker: &TaskTracker, cancel: CancellationToken) {
    let connect_runtime = runtime.clone();
    tracker.spawn(keep_on_bus(
        BusNames::new(AGENT_NAME, &runtime.node_name),
        move || {
            let runtime = connect_runtime.clone();
            async move {
                zbus::connection::Builder::system()
                    .serve_at(AGENT_PATH, cluster::AgentCluster::new(runtime))
                    .build()
                    .await
            }
        },
        move |conn| cluster::notify_agent_properties(runtime.clone(), conn),
        cancel,
    ));
}

/// The per-node bus name of `node` under `base`: `io.rke2.Server.<node>`, the node name made a
/// valid bus name element (characters other than ASCII letters, digits and `_` become `_`, and a
/// leading digit gets a `_` in front), so several nodes on one bus are each addressable.
pub fn node_bus_name(base: &str, node: &str) -> String {
    let mut element: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if element.is_empty() || element.starts_with(|c: char| c.is_ascii_digit()) {
        element.insert(0, '_');
    }
    format!("{base}.{element}")
}

/// The names a daemon asks for: its own per-node name (never queued: it is this node's) and the
/// shared well-known name (queued: with several nodes on one bus the first keeps it, the next in
/// line gets it when the owner leaves).
struct BusNames {
    well_known: &'static str,
    node: String,
}

impl BusNames {
    fn new(well_known: &'static str, node: &str) -> BusNames {
        BusNames {
            well_known,
            node: node_bus_name(well_known, node),
        }
    }

    /// Requests both names on `conn` and logs, truthfully, which ones this daemon got.
    async fn request(&self, conn: &Connection) -> zbus::Result<()> {
        use zbus::fdo::{RequestNameFlags, RequestNameReply};
        match conn
            .request_name_with_flags(self.node.as_str(), RequestNameFlags::DO_NOT_QUEUE)
            .await
        {
            Ok(_) => {}
            Err(zbus::Error::NameTaken) => tracing::warn!(
                component = "dbus",
                "{} is owned by another daemon on this bus (two nodes with one name?)",
                self.node
            ),
            Err(e) => return Err(e),
        }
        let reply = conn
            .request_name_with_flags(self.well_known, RequestNameFlags::empty())
            .await?;
        match reply {
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => tracing::info!(
                component = "dbus",
                "serving {} and {} on the system bus",
                self.well_known,
                self.node
            ),
            RequestNameReply::InQueue | RequestNameReply::Exists => tracing::info!(
                component = "dbus",
                "{} is owned by another node on this bus; serving {} only (queued for {})",
                self.well_known,
                self.node,
                self.well_known
            ),
        }
        Ok(())
    }
}

/// Connects, serves until the connection is lost, and reconnects with backoff, until `cancel`.
/// The first failure in a row is a warning, the rest are debug lines, so a host without a system
/// bus gets one line rather than a stream.
async fn keep_on_bus<C, CF, R, RF>(
    names: BusNames,
    mut connect: C,
    mut run: R,
    cancel: CancellationToken,
) where
    C: FnMut() -> CF,
    CF: Future<Output = zbus::Result<Connection>>,
    R: FnMut(Connection) -> RF,
    RF: Future<Output = ()>,
{
    let mut delay = RETRY_MIN;
    let mut failing = false;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                let conn = connect().await?;
                names.request(&conn).await?;
                let acquired = zbus::fdo::DBusProxy::new(&conn)
                    .await?
                    .receive_name_acquired()
                    .await?;
                Ok::<_, zbus::Error>((conn, acquired))
            } => r,
        };
        let name = names.well_known;
        match attempt {
            Ok((conn, mut acquired)) => {
                failing = false;
                delay = RETRY_MIN;
                // `run` emits signals; it only ends when emitting fails, so the connection's own
                // closed notification decides when to reconnect.
                let signals = run(conn.clone());
                tokio::pin!(signals);
                let mut signals_done = false;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = conn.closed() => break,
                        _ = &mut signals, if !signals_done => signals_done = true,
                        Some(sig) = futures_util::StreamExt::next(&mut acquired) => {
                            if sig.args().is_ok_and(|a| a.name.as_str() == name) {
                                tracing::info!(component = "dbus", "{name} acquired: its owner left, this node serves it now");
                            }
                        }
                    }
                }
                tracing::warn!(
                    component = "dbus",
                    "lost the system bus connection; {name} is unavailable until it reconnects"
                );
            }
            Err(e) if !failing => {
                tracing::warn!(
                    component = "dbus",
                    "cannot serve {name} on the system bus ({e}); the node keeps running and retries in the background"
                );
                failing = true;
            }
            Err(e) => tracing::debug!(component = "dbus", "{name}: still no system bus: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// The uid of the process that sent a method call, asked from the bus
/// (`org.freedesktop.DBus.GetConnectionUnixUser`). Nothing is cached: unique names are never
/// reused, but asking each time keeps the check obviously right.
async fn caller_uid(conn: &Connection, hdr: &Header<'_>) -> Result<u32, String> {
    let sender = hdr
        .sender()
        .ok_or_else(|| "the call carries no sender".to_string())?;
    let proxy = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| e.to_string())?;
    proxy
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| e.to_string())
}

/// Refuses a mutating call unless the caller is root. Fails closed when the uid is unknown.
pub(crate) async fn require_root(
    conn: &Connection,
    hdr: &Header<'_>,
    operation: &str,
) -> Result<u32, BusError> {
    let uid = caller_uid(conn, hdr).await.map_err(|e| {
        BusError::from(AdminError::AccessDenied(format!(
            "{operation}: cannot determine the caller's uid ({e})"
        )))
    })?;
    admin::authorize_mutation(uid, operation).map_err(|e| {
        tracing::warn!(
            component = "dbus",
            uid,
            "refused {operation} from a non-root caller"
        );
        BusError::from(e)
    })?;
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_bus_names_are_valid_elements() {
        assert_eq!(node_bus_name(SERVER_NAME, "s2"), "io.rke2.Server.s2");
        assert_eq!(
            node_bus_name(AGENT_NAME, "node-1.example"),
            "io.rke2.Agent.node_1_example"
        );
        assert_eq!(node_bus_name(SERVER_NAME, "1a"), "io.rke2.Server._1a");
        for name in ["s2", "node-1.example", "1a", ""] {
            let n = node_bus_name(SERVER_NAME, name);
            assert!(
                zbus::names::WellKnownName::try_from(n.as_str()).is_ok(),
                "{n}"
            );
        }
    }
}
