//! Node Events (leader only, watch-driven): `RegisteredNode` when a Node appears, `NodeReady` /
//! `NodeNotReady` when its Ready condition turns, `NodeNotSchedulable` / `NodeSchedulable` when
//! it is cordoned or uncordoned, `RemovingNode` when it is deleted, with upstream's reasons and
//! messages (upstream splits them between the kubelet and the node controller; here the server
//! sees every Node write). After a restart or a leader change the current facts are recorded
//! only where no such Event exists yet, so they are not counted twice.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::storage;
use crate::cluster::context::Ctx;
use crate::datastore::{Change, Stored};
use crate::events::{EventRecorder, EventType, ObjectRef};
use crate::registry::NODES;
use crate::storage::{ListOptions, decode};

/// Retry interval while the datastore or the watch is unavailable.
const RETRY: Duration = Duration::from_secs(2);

/// The facts of a Node the Events are about.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeState {
    reference: ObjectRef,
    ready: bool,
    unschedulable: bool,
}

fn state(kv: &Stored) -> Option<NodeState> {
    let node = decode(&NODES, kv).ok()?;
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    Some(NodeState {
        reference: ObjectRef::of(&NODES, &node),
        ready,
        unschedulable: node
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// `Node <name> status is now: <reason>` (the kubelet's wording).
fn status_event(n: &NodeState, reason: &'static str) -> (String, &'static str) {
    (
        format!("Node {} status is now: {reason}", n.reference.name),
        reason,
    )
}

fn ready_reason(n: &NodeState) -> &'static str {
    if n.ready { "NodeReady" } else { "NodeNotReady" }
}

fn schedulable_reason(n: &NodeState) -> &'static str {
    if n.unschedulable {
        "NodeNotSchedulable"
    } else {
        "NodeSchedulable"
    }
}

fn registered_message(n: &NodeState) -> String {
    format!(
        "Node {} event: Registered Node {} in Controller",
        n.reference.name, n.reference.name
    )
}

/// The Events of one change of a Node (`before` = None for a new Node).
async fn on_change(rec: &EventRecorder, before: Option<&NodeState>, after: &NodeState) {
    let new_object = before.is_none_or(|b| b.reference.uid != after.reference.uid);
    if new_object {
        rec.emit(
            &after.reference,
            EventType::Normal,
            "RegisteredNode",
            &registered_message(after),
        )
        .await;
    }
    if new_object && after.ready || before.is_some_and(|b| !new_object && b.ready != after.ready) {
        let (msg, reason) = status_event(after, ready_reason(after));
        rec.emit(&after.reference, EventType::Normal, reason, &msg)
            .await;
    }
    let was_unschedulable = before.is_some_and(|b| !new_object && b.unschedulable);
    if after.unschedulable != was_unschedulable {
        let (msg, reason) = status_event(after, schedulable_reason(after));
        rec.emit(&after.reference, EventType::Normal, reason, &msg)
            .await;
    }
}

/// The current facts of a Node, recorded where no matching Event exists.
async fn on_resync(rec: &EventRecorder, n: &NodeState) {
    let results = [
        rec.record_once(
            &n.reference,
            EventType::Normal,
            "RegisteredNode",
            &registered_message(n),
        )
        .await,
        {
            let (msg, reason) = status_event(n, ready_reason(n));
            rec.record_once(&n.reference, EventType::Normal, reason, &msg)
                .await
        },
    ];
    for r in results {
        if let Err(e) = r {
            tracing::debug!(component = "node-controller", node = %n.reference.name, "could not record an event: {e}");
        }
    }
}

/// Records on this server's Node that it renewed its certificates at start (`CertificateRenewed`,
/// from component `pki`); a failure is logged only.
pub async fn certificates_renewed(ctx: &Ctx) {
    let Some(store) = storage(ctx) else { return };
    let Ok(Some(node)) = store.get_opt(&NODES, None, &ctx.node.name).await else {
        return;
    };
    let rec = EventRecorder::new(
        ctx.store.clone(),
        "pki",
        &ctx.node.name,
        ctx.config.event_ttl,
    );
    rec.emit(
        &ObjectRef::of(&NODES, &node),
        EventType::Normal,
        "CertificateRenewed",
        &format!(
            "Node {} renewed its leaf certificates (expiring, or their names changed)",
            ctx.node.name
        ),
    )
    .await;
}

/// Runs until `cancel`.
pub async fn run(ctx: Ctx, mut is_leader: watch::Receiver<bool>, cancel: CancellationToken) {
    let rec = EventRecorder::new(
        ctx.store.clone(),
        "node-controller",
        &ctx.node.name,
        ctx.config.event_ttl,
    );
    loop {
        // Only the leader records.
        while !*is_leader.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = is_leader.changed() => if changed.is_err() { return },
            }
        }
        let Some(store) = storage(&ctx) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        let Ok(listed) = store
            .list_stored(&NODES, None, &ListOptions::default())
            .await
        else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        let Ok(mut stream) = store
            .datastore()
            .watch(&NODES.list_prefix(None), listed.resource_version + 1)
            .await
        else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        for n in listed.items.iter().filter_map(state) {
            on_resync(&rec, &n).await;
        }
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                changed = is_leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                m = stream.next() => m,
            };
            let Ok(Some((changes, _))) = msg else { break };
            for change in changes {
                match change {
                    Change::Put { kv, prev, created } => {
                        let Some(after) = state(&kv) else { continue };
                        let before = if created {
                            None
                        } else {
                            prev.as_ref().and_then(state)
                        };
                        on_change(&rec, before.as_ref(), &after).await;
                    }
                    Change::Delete {
                        prev: Some(prev), ..
                    } => {
                        if let Some(gone) = state(&prev) {
                            let name = &gone.reference.name;
                            rec.emit(
                                &gone.reference,
                                EventType::Normal,
                                "RemovingNode",
                                &format!("Node {name} event: Removing Node {name} from Controller"),
                            )
                            .await;
                        }
                    }
                    Change::Delete { .. } => {}
                }
            }
        }
    }
}
