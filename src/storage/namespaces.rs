//! Namespace lifecycle as upstream runs it (docs/namespaces.md): a namespace carries the
//! `kubernetes` finalizer from its creation; DELETE only marks it (`deletionTimestamp`,
//! `status.phase: Terminating`); the namespace controller (crate::controllers::namespace) runs
//! [`finalize`]: it removes the contents, records the deletion conditions, removes the finalizer
//! and deletes the namespace for good. The API server's DELETE and the controller share this
//! code, so it lives below both. Admission (nothing new while terminating) is the API server's.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ObjectError, Storage, check_uid};
use crate::registry::{NAMESPACES, RESOURCES, ResourceInfo};

/// The finalizer the namespace controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// Whether a namespace is being deleted.
pub fn is_terminating(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// `spec.finalizers` of a namespace.
pub fn finalizers(ns: &Value) -> Vec<String> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// DELETE of namespace `name`, as upstream's namespace storage does it: the first DELETE marks
/// it Terminating (answering the marked namespace); later ones answer it unchanged while
/// finalizers remain; once none remain the namespace is deleted (and whatever is still stored
/// in it, so nothing is orphaned when someone cleared the finalizers by hand).
pub async fn delete(
    store: &Storage,
    name: &str,
    uid: Option<&str>,
    resource_version: Option<i64>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Value, ObjectError> {
    let current = store.get(&NAMESPACES, None, name).await?;
    if !is_terminating(&current) {
        let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        return store
            .modify_with(&NAMESPACES, None, name, resource_version, dry_run, |ns| {
                check_uid(&NAMESPACES, name, ns, uid)?;
                if !is_terminating(ns) {
                    ns["metadata"]["deletionTimestamp"] = json!(stamp);
                }
                if !ns.get("status").is_some_and(Value::is_object) {
                    ns["status"] = json!({});
                }
                ns["status"]["phase"] = json!("Terminating");
                Ok(())
            })
            .await;
    }
    check_uid(&NAMESPACES, name, &current, uid)?;
    let has_metadata_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if !finalizers(&current).is_empty() || has_metadata_finalizers {
        return Ok(current);
    }
    let deleted = store
        .delete_with(&NAMESPACES, None, name, uid, resource_version, dry_run)
        .await?;
    if !dry_run {
        delete_contents(store, name).await?;
    }
    Ok(deleted)
}

/// The namespaced stored kinds, one per etcd prefix (versions of a kind share one).
fn namespaced_kinds() -> Vec<&'static ResourceInfo> {
    let mut out: Vec<&'static ResourceInfo> = Vec::new();
    for info in RESOURCES.iter().filter(|r| r.namespaced && r.is_stored()) {
        if !out.iter().any(|o| o.etcd_prefix == info.etcd_prefix) {
            out.push(info);
        }
    }
    out
}

/// Removes everything stored in namespace `ns`, kind by kind (watchers see each DELETED).
pub async fn delete_contents(store: &Storage, ns: &str) -> Result<(), ObjectError> {
    // Its Services' addresses and node ports are free again.
    for svc in store
        .list(&crate::registry::SERVICES, Some(ns), &Default::default())
        .await?
        .items
    {
        super::services::release(store, &svc).await;
    }
    for info in namespaced_kinds() {
        store
            .datastore()
            .delete_prefix(&info.list_prefix(Some(ns)))
            .await?;
    }
    Ok(())
}

/// How many objects of each namespaced kind are still stored in `ns` (kinds with none left out).
pub async fn remaining_contents(
    store: &Storage,
    ns: &str,
) -> Result<Vec<(&'static str, i64)>, ObjectError> {
    let mut out = Vec::new();
    for info in namespaced_kinds() {
        let n = store.datastore().count(&info.list_prefix(Some(ns))).await?;
        if n > 0 {
            out.push((info.plural, n));
        }
    }
    Ok(out)
}

/// The deletion conditions upstream's namespace controller records, for content that is all
/// gone (`remaining` empty) or not yet.
pub fn deletion_conditions(remaining: &[(&str, i64)], now: DateTime<Utc>) -> Value {
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let cond = |kind: &str, status: &str, reason: &str, message: String| json!({"type": kind, "status": status, "lastTransitionTime": stamp, "reason": reason, "message": message});
    let content = if remaining.is_empty() {
        cond(
            "NamespaceContentRemaining",
            "False",
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let what: Vec<String> = remaining
            .iter()
            .map(|(plural, n)| format!("{plural} has {n} resource instances"))
            .collect();
        cond(
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", what.join(", ")),
        )
    };
    json!([
        cond(
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".into()
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into()
        ),
        cond(
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into()
        ),
        content,
        cond(
            "NamespaceFinalizersRemaining",
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into()
        ),
    ])
}

/// Sets the deletion conditions on a terminating namespace, keeping each condition's
/// `lastTransitionTime` while its status does not change.
pub async fn record_conditions(
    store: &Storage,
    name: &str,
    remaining: &[(&str, i64)],
    now: DateTime<Utc>,
) -> Result<(), ObjectError> {
    let fresh = deletion_conditions(remaining, now);
    store
        .modify(&NAMESPACES, None, name, None, |ns| {
            let old = ns
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut next = fresh.as_array().cloned().unwrap_or_default();
            for c in &mut next {
                if let Some(prev) = old.iter().find(|o| o["type"] == c["type"])
                    && prev["status"] == c["status"]
                    && prev["reason"] == c["reason"]
                    && prev["message"] == c["message"]
                {
                    *c = prev.clone();
                }
            }
            ns["status"]["conditions"] = Value::Array(next);
            Ok::<(), ObjectError>(())
        })
        .await?;
    Ok(())
}

/// Removes the `kubernetes` finalizer, as the `finalize` subresource would. Only the finalizer
/// list changes and the kept finalizers were validated when they were written, so the
/// subresource's metadata carry-over and name checks have nothing to reject here.
pub async fn remove_kubernetes_finalizer(
    store: &Storage,
    name: &str,
) -> Result<Value, ObjectError> {
    store
        .modify(&NAMESPACES, None, name, None, |current| {
            let kept: Vec<String> = finalizers(current)
                .into_iter()
                .filter(|f| f != KUBERNETES_FINALIZER)
                .collect();
            current["spec"]["finalizers"] = json!(kept);
            Ok(())
        })
        .await
}

/// One round for namespace `name`: `Ok(true)` when nothing is left to do for this controller
/// (the namespace is gone, not terminating, or waits only on others' finalizers), `Ok(false)`
/// when content remains and the round must be retried.
pub async fn finalize(store: &Storage, name: &str) -> Result<bool, ObjectError> {
    let Some(ns) = store.get_opt(&NAMESPACES, None, name).await? else {
        return Ok(true);
    };
    if !is_terminating(&ns) {
        return Ok(true);
    }
    let mut fins = finalizers(&ns);
    if fins.iter().any(|f| f == KUBERNETES_FINALIZER) {
        delete_contents(store, name).await?;
        // Objects whose create raced the Terminating mark may have landed after the delete.
        let remaining = remaining_contents(store, name).await?;
        record_conditions(store, name, &remaining, Utc::now()).await?;
        if !remaining.is_empty() {
            return Ok(false);
        }
        let finalized = remove_kubernetes_finalizer(store, name).await?;
        fins = finalizers(&finalized);
        tracing::info!(component = "namespace-controller", namespace = %name, "namespace content deleted; finalized");
    }
    if !fins.is_empty() {
        return Ok(true);
    }
    let uid = ns.pointer("/metadata/uid").and_then(Value::as_str);
    match delete(store, name, uid, None, false, Utc::now()).await {
        Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains() {
        let now = Utc::now();
        let done = deletion_conditions(&[], now);
        assert_eq!(done.as_array().unwrap().len(), 5);
        assert!(
            done.as_array()
                .unwrap()
                .iter()
                .all(|c| c["status"] == "False")
        );
        let left = deletion_conditions(&[("configmaps", 2)], now);
        let c = &left[3];
        assert_eq!(c["type"], "NamespaceContentRemaining");
        assert_eq!(c["status"], "True");
        assert_eq!(
            c["message"],
            "Some resources are remaining: configmaps has 2 resource instances"
        );
    }

    #[test]
    fn each_stored_prefix_is_cleaned_once() {
        let kinds = namespaced_kinds();
        let events = kinds
            .iter()
            .filter(|k| k.etcd_prefix == "/registry/events")
            .count();
        assert_eq!(events, 1);
        assert!(kinds.iter().any(|k| k.plural == "configmaps"));
    }

    #[test]
    fn terminating_and_finalizers() {
        let ns = json!({"metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"finalizers": ["kubernetes", "example.com/x"]}});
        assert!(is_terminating(&ns));
        assert_eq!(finalizers(&ns), ["kubernetes", "example.com/x"]);
        assert!(!is_terminating(&json!({"metadata": {"name": "x"}})));
    }
}
