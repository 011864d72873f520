//! Owner references across objects: the kinds that may be owners and dependents, the deletion
//! finalizers of cascading deletion, and orphaning (the `propagationPolicy: Orphan` half of
//! garbage collection that runs in the API server before the owner is deleted; the background
//! and foreground halves are `controllers::gc`).

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ListOptions, ObjectError, Storage};
use crate::registry::print::text;
use crate::registry::{
    CONTROLLER_REVISIONS, CRON_JOBS, DAEMON_SETS, DEPLOYMENTS, JOBS, PODS, REPLICA_SETS,
    ResourceInfo,
};

/// The kinds whose objects may be dependents (what the workload controllers create).
pub const DEPENDENT_KINDS: &[&ResourceInfo] = &[&REPLICA_SETS, &JOBS, &PODS, &CONTROLLER_REVISIONS];

/// The kinds whose objects may own dependents (the workload controllers' kinds). Cascading
/// deletion of any other kind has nothing to cascade to.
pub const OWNER_KINDS: &[&ResourceInfo] =
    &[&DEPLOYMENTS, &REPLICA_SETS, &DAEMON_SETS, &JOBS, &CRON_JOBS];

/// The finalizer upstream sets on an owner being deleted with `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// The finalizer upstream sets on an owner being deleted with `propagationPolicy: Foreground`:
/// the garbage collector deletes its dependents and removes it once none that block
/// (`blockOwnerDeletion`) remain.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Whether `obj` is being deleted and waits on `finalizer`.
pub fn deleting_with(obj: &Value, finalizer: &str) -> bool {
    super::metadata::is_deleting(obj)
        && obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// Removes `finalizer` from an object; when it was the last one of an object being deleted,
/// the object goes (see `Storage::modify`). A missing object is fine: it is gone already.
pub async fn remove_finalizer(
    store: &Storage,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    finalizer: &str,
) -> Result<Option<Value>, ObjectError> {
    let result = store
        .modify(info, ns, name, None, |o| {
            if let Some(f) = o
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != finalizer);
            }
            Ok::<(), ObjectError>(())
        })
        .await;
    match result {
        Ok(obj) => Ok(Some(obj)),
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The ownerReferences of an object.
pub fn owner_refs(obj: &Value) -> &[Value] {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Marks an owner as being deleted with `finalizer` ([`ORPHAN_FINALIZER`] so its controller
/// stops, and re-adopts nothing, while its dependents are orphaned; [`FOREGROUND_FINALIZER`] so
/// it stays until its dependents are gone); returns the marked object.
pub async fn mark_deleting(
    store: &Storage,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    finalizer: &str,
) -> Result<Value, ObjectError> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    store
        .modify(info, ns, name, None, |o| {
            let meta = &mut o["metadata"];
            if meta["deletionTimestamp"].is_null() {
                meta["deletionTimestamp"] = json!(now);
            }
            let finalizers = meta
                .as_object_mut()
                .map(|m| m.entry("finalizers").or_insert(json!([])));
            if let Some(Value::Array(f)) = finalizers
                && !f.iter().any(|x| x == finalizer)
            {
                f.push(json!(finalizer));
            }
            Ok::<(), ObjectError>(())
        })
        .await
}

/// Removes the references to `owner` (by uid) from its dependents in its namespace, so that
/// deleting it with `propagationPolicy: Orphan` leaves them.
pub async fn orphan_dependents(store: &Storage, owner: &Value) -> Result<(), ObjectError> {
    let uid = text(owner, "/metadata/uid").to_string();
    let ns = owner.pointer("/metadata/namespace").and_then(Value::as_str);
    for info in DEPENDENT_KINDS {
        let page = store.list(info, ns, &ListOptions::default()).await?;
        for obj in &page.items {
            if !owner_refs(obj).iter().any(|r| r["uid"] == uid.as_str()) {
                continue;
            }
            let name = text(obj, "/metadata/name");
            let dep_ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
            let result = store
                .modify(info, dep_ns, name, None, |o| {
                    if let Some(refs) = o
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"] != uid.as_str());
                        if refs.is_empty() {
                            o["metadata"]
                                .as_object_mut()
                                .map(|m| m.remove("ownerReferences"));
                        }
                    }
                    Ok::<(), ObjectError>(())
                })
                .await;
            match result {
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
