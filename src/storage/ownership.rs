//! Owner references across objects: the kinds that may be dependents, and orphaning (the
//! `propagationPolicy: Orphan` half of garbage collection that runs in the API server before
//! the owner is deleted; the background half is `controllers::gc`).

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ListOptions, ObjectError, Storage};
use crate::registry::print::text;
use crate::registry::{JOBS, PODS, REPLICA_SETS, ResourceInfo};

/// The kinds whose objects may be dependents (what the workload controllers create).
pub const DEPENDENT_KINDS: &[&ResourceInfo] = &[&REPLICA_SETS, &JOBS, &PODS];

/// The finalizer upstream sets on an owner being deleted with `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// The ownerReferences of an object.
pub fn owner_refs(obj: &Value) -> &[Value] {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Marks an owner as being deleted with the `orphan` finalizer, so its controller stops
/// (and re-adopts nothing) while its dependents are orphaned; returns the marked object.
pub async fn mark_orphaning(
    store: &Storage,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
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
                && !f.iter().any(|x| x == ORPHAN_FINALIZER)
            {
                f.push(json!(ORPHAN_FINALIZER));
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
