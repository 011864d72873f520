//! The garbage collector on the leading server: a dependent (a ReplicaSet, a Job or a pod, the
//! kinds the workload controllers create) whose ownerReferences all name owners that are gone (no
//! object of that kind and name, or one with another uid) is deleted in the background, as
//! upstream's collector does for `propagationPolicy: Background`. `Orphan` deletion is done
//! by the API server before the owner goes (`storage::ownership`). Watch-driven (see
//! `driven`).

use serde_json::Value;
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use crate::datastore::StoreCell;
use crate::registry::print::text;
use crate::registry::{self, CRON_JOBS, DAEMON_SETS, DEPLOYMENTS, JOBS, PODS, ResourceInfo};
use crate::storage::ownership::{DEPENDENT_KINDS, owner_refs};
use crate::storage::pods;
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "garbage-collector";

/// Whether the owner a reference names still exists (same uid). Unknown kinds count as
/// existing, so nothing is deleted for an owner this server cannot look up.
async fn owner_exists(store: &Storage, ns: &str, reference: &Value) -> Result<bool, ObjectError> {
    let Some(info) =
        registry::lookup_kind(text(reference, "/apiVersion"), text(reference, "/kind"))
    else {
        return Ok(true);
    };
    let owner_ns = info.namespaced.then_some(ns);
    let owner = store
        .get_opt(info, owner_ns, text(reference, "/name"))
        .await?;
    Ok(owner.is_some_and(|o| text(&o, "/metadata/uid") == text(reference, "/uid")))
}

/// Deletes one dependent.
async fn delete(store: &Storage, info: &ResourceInfo, obj: &Value) -> Result<(), ObjectError> {
    let ns = text(obj, "/metadata/namespace");
    let name = text(obj, "/metadata/name");
    let uid = text(obj, "/metadata/uid").to_string();
    let result = if *info == PODS {
        let opts = pods::DeleteOptions {
            uid: Some(uid),
            ..Default::default()
        };
        pods::delete(store, ns, name, &opts).await.map(|_| ())
    } else {
        store
            .delete(info, Some(ns), name, Some(&uid), None)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) | Err(ObjectError::NotFound { .. }) => {
            tracing::info!(
                component = COMPONENT,
                kind = info.kind,
                namespace = ns,
                name,
                "deleted dependent whose owner is gone"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One collection pass; returns the revision the lists were read at.
pub async fn collect(store: &Storage) -> Result<i64, ObjectError> {
    let mut rev = i64::MAX;
    for info in DEPENDENT_KINDS {
        let page = store.list(info, None, &ListOptions::default()).await?;
        rev = rev.min(page.resource_version);
        for obj in &page.items {
            let refs = owner_refs(obj);
            if refs.is_empty()
                || obj
                    .pointer("/metadata/deletionTimestamp")
                    .is_some_and(|t| !t.is_null())
            {
                continue;
            }
            let ns = text(obj, "/metadata/namespace");
            let mut alive = false;
            for r in refs {
                if owner_exists(store, ns, r).await? {
                    alive = true;
                    break;
                }
            }
            if !alive {
                delete(store, info, obj).await?;
            }
        }
    }
    Ok(rev)
}

/// Runs the collector while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    driven::run(
        cell,
        is_leader,
        cancel,
        COMPONENT,
        &[
            &DEPLOYMENTS,
            DEPENDENT_KINDS[0],
            &PODS,
            &DAEMON_SETS,
            &JOBS,
            &CRON_JOBS,
        ],
        |store| async move { collect(&store).await },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::REPLICA_SETS;
    use crate::storage::ownership::orphan_dependents;
    use serde_json::json;
    use std::sync::Arc;

    fn store() -> Storage {
        Storage::new(crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        )))
    }

    fn rs_owned_by(owner: &Value, name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": name, "namespace": "default",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": text(owner, "/metadata/name"),
                                "uid": text(owner, "/metadata/uid"), "controller": true}]},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}}}})
    }

    #[tokio::test]
    async fn dependents_of_gone_owners_are_deleted_others_kept() {
        let store = store();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "default"}, "spec": {}});
        let owner = store
            .create(&DEPLOYMENTS, Some("default"), d.clone())
            .await
            .unwrap();
        store
            .create(&REPLICA_SETS, Some("default"), rs_owned_by(&owner, "live"))
            .await
            .unwrap();
        // Same name, other uid: the owner it names is gone.
        let mut stale = owner.clone();
        stale["metadata"]["uid"] = json!("not-the-uid");
        store
            .create(&REPLICA_SETS, Some("default"), rs_owned_by(&stale, "stale"))
            .await
            .unwrap();
        collect(&store).await.unwrap();
        assert!(
            store
                .get_opt(&REPLICA_SETS, Some("default"), "live")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .get_opt(&REPLICA_SETS, Some("default"), "stale")
                .await
                .unwrap()
                .is_none()
        );

        // Orphaned dependents lose the reference and survive their owner.
        orphan_dependents(&store, &owner).await.unwrap();
        store
            .delete(&DEPLOYMENTS, Some("default"), "web", None, None)
            .await
            .unwrap();
        collect(&store).await.unwrap();
        let live = store
            .get(&REPLICA_SETS, Some("default"), "live")
            .await
            .unwrap();
        assert!(live["metadata"].get("ownerReferences").is_none());
    }
}
