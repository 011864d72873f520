//! etcd membership Events (leader only): `ETCDMemberAdded` when a voting member joins and
//! `ETCDMemberRemoved` when one leaves, about the Node of the server it belongs to. Membership
//! has no watch, so the member list is compared every few seconds; after a restart or a leader
//! change the current voters are recorded only where no such Event exists yet.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::storage;
use crate::cluster::context::Ctx;
use crate::events::{EventRecorder, EventType, ObjectRef};
use crate::registry::NODES;

/// How often the member list is compared.
const INTERVAL: Duration = Duration::from_secs(5);

/// The Node a member's server runs as, with its uid when the Node exists.
async fn node_ref(ctx: &Ctx, node: &str) -> ObjectRef {
    let stored = match storage(ctx) {
        Some(store) => store.get_opt(&NODES, None, node).await.ok().flatten(),
        None => None,
    };
    match stored {
        Some(n) => ObjectRef::of(&NODES, &n),
        None => ObjectRef {
            kind: NODES.kind.to_string(),
            api_version: NODES.api_version(),
            name: node.to_string(),
            namespace: None,
            uid: String::new(),
        },
    }
}

/// Runs until `cancel`.
pub async fn run(ctx: Ctx, is_leader: watch::Receiver<bool>, cancel: CancellationToken) {
    let rec = EventRecorder::new(
        ctx.store.clone(),
        "etcd",
        &ctx.node.name,
        ctx.config.event_ttl,
    );
    // Voting members by name (as etcd names them) → their node; None until the first list as
    // leader, which is recorded with `record_once`.
    let mut known: Option<BTreeMap<String, String>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        if !*is_leader.borrow() {
            known = None;
            continue;
        }
        let Some(client) = ctx.etcd.get() else {
            continue;
        };
        let Ok(members) = crate::etcd::member_list(client).await else {
            continue;
        };
        let voters: BTreeMap<String, String> = members
            .iter()
            .filter(|m| !m.is_learner && !m.name.is_empty())
            .map(|m| {
                (
                    m.name.clone(),
                    crate::etcd::node_of_member(&m.name).to_string(),
                )
            })
            .collect();
        let first = known.is_none();
        let before = known.take().unwrap_or_default();
        for (member, node) in voters.iter().filter(|(m, _)| !before.contains_key(*m)) {
            let about = node_ref(&ctx, node).await;
            let msg =
                format!("etcd member {member} of node {node} is a voting member of the cluster");
            let result = if first {
                rec.record_once(&about, EventType::Normal, "ETCDMemberAdded", &msg)
                    .await
            } else {
                rec.record(&about, EventType::Normal, "ETCDMemberAdded", &msg)
                    .await
            };
            if let Err(e) = result {
                tracing::debug!(component = "etcd", "could not record an event: {e}");
            }
        }
        for (member, node) in before.iter().filter(|(m, _)| !voters.contains_key(*m)) {
            let about = node_ref(&ctx, node).await;
            let msg = format!("etcd member {member} of node {node} was removed from the cluster");
            rec.emit(&about, EventType::Normal, "ETCDMemberRemoved", &msg)
                .await;
        }
        known = Some(voters);
    }
}
