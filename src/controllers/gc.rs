//! The garbage collector on the leading server: a dependent (a ReplicaSet, a Job or a pod, the
//! kinds the workload controllers create) whose ownerReferences all name owners that are gone (no
//! object of that kind and name, or one with another uid) is deleted in the background, as
//! upstream's collector does for `propagationPolicy: Background`. An owner deleted with
//! `propagationPolicy: Foreground` waits, marked with the `foregroundDeletion` finalizer, while
//! this collector deletes its dependents (owners among them in the foreground too); once no
//! dependent with `blockOwnerDeletion` remains the finalizer goes, and with it the owner.
//! `Orphan` deletion is done by the API server before the owner goes (`storage::ownership`).
//! Watch-driven (see `driven`), by the changes that can make garbage or release an owner only:
//! deletions, new objects with owners, and updates of owners, deletion marks or finalizers.
//! Status updates, the bulk of all writes (kubelets report every pod), change none of these and
//! start no pass, which lists every dependent.

use serde_json::Value;
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use crate::datastore::{Change, StoreCell, Stored};
use crate::registry::print::text;
use crate::registry::{self, CRON_JOBS, DAEMON_SETS, DEPLOYMENTS, JOBS, PODS, ResourceInfo};
use crate::storage::metadata::is_deleting;
use crate::storage::ownership::{
    self, DEPENDENT_KINDS, FOREGROUND_FINALIZER, OWNER_KINDS, deleting_with, owner_refs,
};
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

/// Deletes the dependents of owners being deleted in the foreground, and lets go of each such
/// owner whose blocking dependents are gone.
async fn collect_foreground(store: &Storage) -> Result<(), ObjectError> {
    for owner_info in OWNER_KINDS {
        let owners = store
            .list(owner_info, None, &ListOptions::default())
            .await?;
        for owner in &owners.items {
            if !deleting_with(owner, FOREGROUND_FINALIZER) {
                continue;
            }
            let uid = text(owner, "/metadata/uid");
            let ns = owner.pointer("/metadata/namespace").and_then(Value::as_str);
            let mut blocked = false;
            for info in DEPENDENT_KINDS {
                let page = store.list(info, ns, &ListOptions::default()).await?;
                for dep in &page.items {
                    let Some(reference) = owner_refs(dep).iter().find(|r| r["uid"] == uid) else {
                        continue;
                    };
                    blocked |= reference["blockOwnerDeletion"] == true;
                    if is_deleting(dep) {
                        continue;
                    }
                    if OWNER_KINDS.contains(info) {
                        ownership::mark_deleting(
                            store,
                            info,
                            dep.pointer("/metadata/namespace").and_then(Value::as_str),
                            text(dep, "/metadata/name"),
                            FOREGROUND_FINALIZER,
                        )
                        .await
                        .map(|_| ())
                        .or_else(|e| match e {
                            ObjectError::NotFound { .. } => Ok(()),
                            e => Err(e),
                        })?;
                    } else {
                        delete(store, info, dep).await?;
                    }
                }
            }
            if !blocked {
                ownership::remove_finalizer(
                    store,
                    owner_info,
                    ns,
                    text(owner, "/metadata/name"),
                    FOREGROUND_FINALIZER,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// One collection pass; returns the revision the lists were read at.
pub async fn collect(store: &Storage) -> Result<i64, ObjectError> {
    collect_foreground(store).await?;
    let mut rev = i64::MAX;
    for info in DEPENDENT_KINDS {
        let page = store.list(info, None, &ListOptions::default()).await?;
        rev = rev.min(page.resource_version);
        for obj in &page.items {
            let refs = owner_refs(obj);
            if refs.is_empty() || is_deleting(obj) {
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

/// The parts of an object's metadata that decide what is garbage.
#[derive(serde::Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
struct Lineage {
    #[serde(default)]
    owner_references: Option<Vec<Value>>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
    #[serde(default)]
    finalizers: Option<Vec<String>>,
}

impl Lineage {
    fn of(kv: &Stored) -> Option<Lineage> {
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(default)]
            metadata: Lineage,
        }
        serde_json::from_slice::<Head>(&kv.value)
            .ok()
            .map(|h| h.metadata)
    }

    fn has_owners(&self) -> bool {
        self.owner_references
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    }
}

/// Whether `change` can make garbage or release an owner waiting in the foreground. Anything
/// the collector cannot read counts, so no change is missed for want of a parse.
fn lineage_changed(change: &Change) -> bool {
    match change {
        Change::Delete { .. } => true,
        Change::Put {
            kv, prev, created, ..
        } => {
            let Some(now) = Lineage::of(kv) else {
                return true;
            };
            if *created {
                return now.has_owners();
            }
            prev.as_ref()
                .and_then(Lineage::of)
                .is_none_or(|before| before != now)
        }
    }
}

/// Runs the collector while leading, until `cancel`.
pub async fn run(
    cell: StoreCell,
    is_leader: tokio_watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    driven::run_filtered(
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
        driven::RESYNC,
        lineage_changed,
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

    fn put(value: Value, prev: Option<Value>) -> Change {
        let stored = |v: &Value| Stored {
            key: "/registry/pods/default/p".into(),
            value: serde_json::to_vec(v).unwrap().into(),
            mod_revision: 2,
            create_revision: 1,
        };
        Change::Put {
            kv: stored(&value),
            created: prev.is_none(),
            prev: prev.as_ref().map(stored),
        }
    }

    #[test]
    fn only_owner_deletion_and_finalizer_changes_start_a_pass() {
        let bare = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}});
        let mut running = bare.clone();
        running["status"]["phase"] = json!("Running");
        let mut owned = bare.clone();
        owned["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet", "uid": "u1"}]);
        let mut owned_running = owned.clone();
        owned_running["status"]["phase"] = json!("Running");
        let mut deleting = owned.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-03T00:00:00Z");
        let mut finalized = bare.clone();
        finalized["metadata"]["finalizers"] = json!(["foregroundDeletion"]);

        assert!(
            !lineage_changed(&put(bare.clone(), None)),
            "a new pod without owners"
        );
        assert!(
            lineage_changed(&put(owned.clone(), None)),
            "a new pod with owners"
        );
        assert!(
            !lineage_changed(&put(running, Some(bare.clone()))),
            "a status update"
        );
        assert!(
            !lineage_changed(&put(owned_running, Some(owned.clone()))),
            "a status update of an owned pod"
        );
        assert!(
            lineage_changed(&put(bare.clone(), Some(owned.clone()))),
            "orphaned"
        );
        assert!(
            lineage_changed(&put(deleting, Some(owned.clone()))),
            "being deleted"
        );
        assert!(
            lineage_changed(&put(finalized, Some(bare.clone()))),
            "a finalizer"
        );
        let Change::Put { kv, .. } = put(bare.clone(), None) else {
            unreachable!()
        };
        let compacted = Change::Put {
            kv: kv.clone(),
            prev: None,
            created: false,
        };
        assert!(
            lineage_changed(&compacted),
            "an update whose old value is gone"
        );
        let garbled = Change::Put {
            kv: Stored {
                value: b"{not json".to_vec().into(),
                ..kv
            },
            prev: None,
            created: true,
        };
        assert!(lineage_changed(&garbled), "what cannot be read counts");
        let deleted = Change::Delete {
            key: "/registry/pods/default/p".into(),
            prev: None,
            revision: 3,
        };
        assert!(lineage_changed(&deleted));
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

    #[tokio::test]
    async fn foreground_deletion_removes_dependents_first_then_the_owner() {
        let store = store();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "default"}, "spec": {}});
        let owner = store
            .create(&DEPLOYMENTS, Some("default"), d)
            .await
            .unwrap();
        let mut rs = rs_owned_by(&owner, "web-1");
        rs["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = json!(true);
        let rs = store
            .create(&REPLICA_SETS, Some("default"), rs)
            .await
            .unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1-a", "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-1", "uid": text(&rs, "/metadata/uid"),
                    "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [{"name": "c", "image": "bb:1"}]}});
        store.create(&PODS, Some("default"), pod).await.unwrap();
        ownership::mark_deleting(
            &store,
            &DEPLOYMENTS,
            Some("default"),
            "web",
            FOREGROUND_FINALIZER,
        )
        .await
        .unwrap();
        let exists = |info: &'static ResourceInfo, name: &'static str| {
            let store = store.clone();
            async move {
                store
                    .get_opt(info, Some("default"), name)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        // First pass: the ReplicaSet is marked for foreground deletion, the owner waits on it.
        collect(&store).await.unwrap();
        assert!(exists(&DEPLOYMENTS, "web").await);
        let marked = store
            .get(&REPLICA_SETS, Some("default"), "web-1")
            .await
            .unwrap();
        assert!(deleting_with(&marked, FOREGROUND_FINALIZER));
        // Then the pod goes, then the ReplicaSet, then the Deployment; each pass makes progress.
        for _ in 0..4 {
            collect(&store).await.unwrap();
        }
        assert!(!exists(&PODS, "web-1-a").await);
        assert!(!exists(&REPLICA_SETS, "web-1").await);
        assert!(!exists(&DEPLOYMENTS, "web").await);
    }
}
