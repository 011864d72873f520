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

use crate::daemon::Runtime;
use crate::server::admin::{self, AdminError};
use crate::server::context::Ctx;
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
        SERVER_NAME,
        move || {
            let ctx = connect_ctx.clone();
            async move {
                zbus::connection::Builder::system()
                    .name(SERVER_NAME)
                    .serve_at(
                        SERVER_PATH,
                        cluster::ServerCluster::new(ctx.runtime.clone()),
                    )
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
        AGENT_NAME,
        move || {
            let runtime = connect_runtime.clone();
            async move {
                zbus::connection::Builder::system()
                    .name(AGENT_NAME)
                    .serve_at(AGENT_PATH, cluster::AgentCluster::new(runtime))
                    .build()
                    .await
            }
        },
        move |conn| cluster::notify_agent_properties(runtime.clone(), conn),
        cancel,
    ));
}

/// Connects, serves until the connection is lost, and reconnects with backoff, until `cancel`.
/// The first failure in a row is a warning, the rest are debug lines, so a host without a system
/// bus gets one line rather than a stream.
async fn keep_on_bus<C, CF, R, RF>(
    name: &'static str,
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
            r = connect() => r,
        };
        match attempt {
            Ok(conn) => {
                tracing::info!(component = "dbus", "serving {name} on the system bus");
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
