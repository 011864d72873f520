//! The ReplicaSet controller on the leading server, as upstream's: keeps `spec.replicas` pods
//! per ReplicaSet (created from the template with `generateName: <rs>-` and a controller
//! ownerReference with `blockOwnerDeletion`), adopts orphan pods its selector matches, deletes
//! the surplus (unscheduled, then not ready, then newest first) and reports
//! `replicas`/`fullyLabeledReplicas`/`readyReplicas`/`availableReplicas`/`observedGeneration`.
//! It is driven by watches on ReplicaSets and pods: every batch of changes triggers a sync of
//! the ReplicaSets (a failed watch lists again).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::driven;
use crate::datastore::StoreCell;
use crate::registry::print::text;
use crate::registry::workload::{labels_of, selector_is_empty, selector_matches};
use crate::registry::{PODS, REPLICA_SETS, ResourceInfo};
use crate::storage::pods;
use crate::storage::{ListOptions, ObjectError, Storage};

const COMPONENT: &str = "replicaset-controller";

pub use crate::storage::metadata::is_deleting;

/// The uid of the object's controller (the ownerReference with `controller: true`), if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == true)
        .and_then(|r| r["uid"].as_str())
}

/// A controller ownerReference to `owner`, as upstream's controllers set on what they create.
pub fn controller_ref(info: &ResourceInfo, owner: &Value) -> Value {
    json!({
        "apiVersion": info.api_version(),
        "kind": info.kind,
        "name": text(owner, "/metadata/name"),
        "uid": text(owner, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether a pod's `Ready` condition is `True`, and since when.
fn ready_since(pod: &Value) -> Option<Option<DateTime<Utc>>> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| {
            c["lastTransitionTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        })
}

/// Whether a pod counts as available: ready for at least `min_ready` seconds.
pub fn is_available(pod: &Value, min_ready: i64, now: DateTime<Utc>) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t + chrono::Duration::seconds(min_ready) <= now,
    }
}

pub fn is_ready(pod: &Value) -> bool {
    ready_since(pod).is_some()
}

/// A new pod of `owner` (of kind `info`) from its `spec.template`: `generateName: <owner>-`, a
/// controller reference.
pub fn pod_from_template(info: &ResourceInfo, owner: &Value) -> Value {
    let template = &owner["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["generateName"] = json!(format!("{}-", text(owner, "/metadata/name")));
    metadata["ownerReferences"] = json!([controller_ref(info, owner)]);
    if let Some(m) = metadata.as_object_mut() {
        for k in ["name", "uid", "resourceVersion", "creationTimestamp"] {
            m.remove(k);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
    })
}

/// The order surplus pods are deleted in (upstream `ActivePods` less-than): unscheduled before
/// scheduled, pending before running, not ready before ready, newest before oldest.
fn deletion_rank(pod: &Value) -> (bool, bool, bool, std::cmp::Reverse<String>) {
    (
        !text(pod, "/spec/nodeName").is_empty(),
        text(pod, "/status/phase") == "Running",
        is_ready(pod),
        std::cmp::Reverse(text(pod, "/metadata/creationTimestamp").to_string()),
    )
}

/// The status a ReplicaSet should report for its active pods.
fn status_for(rs: &Value, active: &[&Value], now: DateTime<Utc>) -> Value {
    let template_labels = labels_of(&rs["spec"]["template"]);
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let l = labels_of(p);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, min_ready, now))
        .count();
    let mut status = json!({
        "replicas": active.len(),
        "observedGeneration": rs["metadata"]["generation"].as_i64().unwrap_or(1),
    });
    // Zero counts are left out, as Go's `omitempty` writes them.
    for (k, n) in [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
    ] {
        if n > 0 {
            status[k] = json!(n);
        }
    }
    if let Some(c) = rs["status"].get("conditions") {
        status["conditions"] = c.clone();
    }
    status
}

/// Deletes one pod of a controller (gracefully, as the API would); a pod already gone is fine.
pub async fn delete_pod(store: &Storage, pod: &Value) -> Result<(), ObjectError> {
    let opts = pods::DeleteOptions {
        uid: Some(text(pod, "/metadata/uid").to_string()),
        ..Default::default()
    };
    match pods::delete(
        store,
        text(pod, "/metadata/namespace"),
        text(pod, "/metadata/name"),
        &opts,
    )
    .await
    {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `status` onto `obj` (of kind `info`) unless it already has it; the write is skipped
/// when the object was replaced meanwhile (another uid).
pub async fn write_status(
    store: &Storage,
    info: &ResourceInfo,
    obj: &Value,
    status: Value,
) -> Result<(), ObjectError> {
    if obj.get("status") == Some(&status) {
        return Ok(());
    }
    let uid = text(obj, "/metadata/uid");
    store
        .modify(
            info,
            Some(text(obj, "/metadata/namespace")),
            text(obj, "/metadata/name"),
            None,
            |current| {
                if text(current, "/metadata/uid") == uid {
                    current["status"] = status.clone();
                }
                Ok::<(), ObjectError>(())
            },
        )
        .await?;
    Ok(())
}

/// Syncs one ReplicaSet against the pods of its namespace.
pub async fn sync_one(
    store: &Storage,
    rs: &Value,
    pods_in_ns: &[Value],
) -> Result<(), ObjectError> {
    if is_deleting(rs) {
        return Ok(());
    }
    let ns = text(rs, "/metadata/namespace");
    let name = text(rs, "/metadata/name");
    let uid = text(rs, "/metadata/uid");
    let selector = &rs["spec"]["selector"];
    if selector_is_empty(selector) {
        return Ok(());
    }
    let mut active: Vec<Value> = Vec::new();
    for pod in pods_in_ns {
        if is_deleting(pod) {
            continue;
        }
        let phase = text(pod, "/status/phase");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        match controller_uid(pod) {
            Some(owner) if owner == uid => active.push(pod.clone()),
            Some(_) => {}
            None if selector_matches(selector, &labels_of(pod)) => {
                // Adopt the orphan (upstream's ControllerRefManager).
                let reference = controller_ref(&REPLICA_SETS, rs);
                let pod_name = text(pod, "/metadata/name");
                let adopted = store
                    .modify(&PODS, Some(ns), pod_name, None, |p| {
                        if controller_uid(p).is_some() || is_deleting(p) {
                            return Err(ObjectError::Conflict {
                                resource: PODS.qualified_name(),
                                name: pod_name.to_string(),
                            });
                        }
                        let refs = p["metadata"]
                            .as_object_mut()
                            .map(|m| m.entry("ownerReferences").or_insert(json!([])));
                        if let Some(Value::Array(refs)) = refs {
                            refs.push(reference.clone());
                        }
                        Ok(())
                    })
                    .await;
                match adopted {
                    Ok(p) => {
                        tracing::info!(component = COMPONENT, replicaset = %name, pod = %pod_name, "adopted pod");
                        active.push(p);
                    }
                    Err(e) => {
                        tracing::debug!(component = COMPONENT, pod = %pod_name, "adoption failed: {e}")
                    }
                }
            }
            None => {}
        }
    }
    let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
    if active.len() < want {
        for _ in active.len()..want {
            let created = store
                .create(&PODS, Some(ns), pod_from_template(&REPLICA_SETS, rs))
                .await?;
            tracing::debug!(component = COMPONENT, replicaset = %name, pod = %text(&created, "/metadata/name"), "created pod");
            active.push(created);
        }
    } else if active.len() > want {
        active.sort_by_key(deletion_rank);
        let surplus: Vec<Value> = active.drain(..active.len() - want).collect();
        for pod in &surplus {
            delete_pod(store, pod).await?;
        }
    }
    let refs: Vec<&Value> = active.iter().collect();
    let status = status_for(rs, &refs, Utc::now());
    write_status(store, &REPLICA_SETS, rs, status).await
}

/// Syncs every ReplicaSet; returns the revision the lists were read at.
pub async fn sync_all(store: &Storage) -> Result<i64, ObjectError> {
    let sets = store
        .list(&REPLICA_SETS, None, &ListOptions::default())
        .await?;
    // Every Pod write wakes this controller: without sets, reading (and decoding) every Pod
    // would find nothing to do.
    if sets.items.is_empty() {
        return Ok(sets.resource_version);
    }
    let all_pods = store.list(&PODS, None, &ListOptions::default()).await?;
    let by_ns = driven::by_namespace(&all_pods.items);
    for rs in &sets.items {
        let pods = by_ns
            .get(text(rs, "/metadata/namespace"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Err(e) = sync_one(store, rs, pods).await {
            tracing::debug!(component = COMPONENT, replicaset = %text(rs, "/metadata/name"), "sync failed: {e}");
        }
    }
    Ok(sets.resource_version.min(all_pods.resource_version))
}

/// Runs the controller while leading, until `cancel`.
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
        &[&REPLICA_SETS, &PODS],
        |store| async move { sync_all(&store).await },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store() -> Storage {
        Storage::new(crate::datastore::Datastore::from_impl(Arc::new(
            crate::datastore::memory::MemoryStore::default(),
        )))
    }

    fn rs(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
    }

    async fn pods_of(store: &Storage) -> Vec<Value> {
        store
            .list(&PODS, Some("default"), &ListOptions::default())
            .await
            .unwrap()
            .items
    }

    #[tokio::test]
    async fn without_replica_sets_pods_are_not_read() {
        let memory = Arc::new(crate::datastore::memory::MemoryStore::default());
        let store = Storage::new(crate::datastore::Datastore::from_impl(memory.clone()));
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        store.create(&PODS, Some("default"), pod).await.unwrap();
        memory.listed();
        sync_all(&store).await.unwrap();
        assert_eq!(
            memory.listed().into_keys().collect::<Vec<_>>(),
            [REPLICA_SETS.list_prefix(None)]
        );
        // With one, its pods are read (and the orphan adopted).
        store
            .create(&REPLICA_SETS, Some("default"), rs(1))
            .await
            .unwrap();
        memory.listed();
        sync_all(&store).await.unwrap();
        assert!(memory.listed().contains_key(&PODS.list_prefix(None)));
        assert_eq!(pods_of(&store).await.len(), 1);
    }

    #[tokio::test]
    async fn creates_adopts_deletes_and_reports() {
        let store = store();
        let orphan = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "orphan", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        store.create(&PODS, Some("default"), orphan).await.unwrap();
        let other = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "other", "namespace": "default", "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        store.create(&PODS, Some("default"), other).await.unwrap();
        let created = store
            .create(&REPLICA_SETS, Some("default"), rs(3))
            .await
            .unwrap();
        let uid = text(&created, "/metadata/uid").to_string();
        sync_all(&store).await.unwrap();

        let pods = pods_of(&store).await;
        let owned: Vec<&Value> = pods
            .iter()
            .filter(|p| controller_uid(p) == Some(uid.as_str()))
            .collect();
        assert_eq!(owned.len(), 3, "the orphan is adopted and two are created");
        assert!(owned.iter().any(|p| text(p, "/metadata/name") == "orphan"));
        let new = owned
            .iter()
            .find(|p| text(p, "/metadata/name") != "orphan")
            .unwrap();
        assert!(text(new, "/metadata/name").starts_with("web-"));
        assert_eq!(
            new["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
        assert_eq!(new["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(new["status"]["phase"], "Pending", "pod defaults applied");
        assert!(
            pods.iter()
                .any(|p| text(p, "/metadata/name") == "other" && controller_uid(p).is_none())
        );

        let current = store
            .get(&REPLICA_SETS, Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(current["status"]["replicas"], 3);
        assert_eq!(current["status"]["fullyLabeledReplicas"], 3);
        assert_eq!(current["status"]["observedGeneration"], 1);
        assert!(current["status"].get("readyReplicas").is_none());

        // A second pass changes nothing.
        sync_all(&store).await.unwrap();
        assert_eq!(pods_of(&store).await.len(), 4);

        // Scale down to one: two go.
        store
            .modify(&REPLICA_SETS, Some("default"), "web", None, |r| {
                r["spec"]["replicas"] = json!(1);
                Ok::<(), ObjectError>(())
            })
            .await
            .unwrap();
        sync_all(&store).await.unwrap();
        let pods = pods_of(&store).await;
        assert_eq!(
            pods.iter()
                .filter(|p| controller_uid(p) == Some(uid.as_str()))
                .count(),
            1
        );
        let current = store
            .get(&REPLICA_SETS, Some("default"), "web")
            .await
            .unwrap();
        assert_eq!(current["status"]["replicas"], 1);
    }

    #[test]
    fn availability_needs_min_ready_seconds() {
        let now = Utc::now();
        let at = (now - chrono::Duration::seconds(5)).to_rfc3339();
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}});
        assert!(is_available(&pod, 0, now));
        assert!(is_available(&pod, 5, now));
        assert!(!is_available(&pod, 10, now));
        assert!(!is_available(&json!({}), 0, now));
    }
}
