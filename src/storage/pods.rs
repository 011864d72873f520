//! Pod operations on stored objects that the API server, the scheduler and the taint manager
//! share: binding a pod to a node and upstream's graceful deletion (docs/scheduling.md). They
//! know no HTTP: the API server maps their [`ObjectError`] to a Status like any other.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{ObjectError, Storage};
use crate::registry::{NODES, PODS};

/// Upstream's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn binding_conflict(name: &str, message: String) -> ObjectError {
    ObjectError::ConflictWith {
        resource: "pods/binding".into(),
        name: name.to_string(),
        message,
    }
}

/// Assigns pod `ns/name` to `node`: sets `spec.nodeName` and `PodScheduled=True`, refusing
/// (409, upstream's wording) a pod that is already assigned or being deleted. With `uid`, the
/// pod must still be that one (the scheduler binds what it decided on, not a namesake).
pub async fn bind(
    store: &Storage,
    ns: &str,
    name: &str,
    node: &str,
    uid: Option<&str>,
) -> Result<Value, ObjectError> {
    if node.is_empty() {
        return Err(ObjectError::BadRequest(format!(
            "binding of pod {name}: the target node name is empty"
        )));
    }
    store
        .modify(&PODS, Some(ns), name, None, |pod| {
            if let Some(uid) = uid
                && text(pod, "/metadata/uid") != uid
            {
                return Err(binding_conflict(
                    name,
                    format!("pod {name} was replaced (uid {uid} is gone)"),
                ));
            }
            if pod
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return Err(binding_conflict(
                    name,
                    format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let current = text(pod, "/spec/nodeName");
            if !current.is_empty() {
                return Err(binding_conflict(
                    name,
                    format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            set_condition(
                pod,
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null}),
            );
            Ok(())
        })
        .await
}

/// Sets one `status.conditions` entry by type, keeping `lastTransitionTime` when the status
/// does not change (as upstream's condition helpers do).
pub fn set_condition(pod: &mut Value, mut condition: Value) {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let mut conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kind = condition["type"].clone();
    let previous = conditions.iter().position(|c| c["type"] == kind);
    let transition = match previous {
        Some(i) if conditions[i]["status"] == condition["status"] => {
            conditions[i]["lastTransitionTime"].clone()
        }
        _ => json!(now),
    };
    condition["lastTransitionTime"] = transition;
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    pod["status"]["conditions"] = Value::Array(conditions);
}

/// The options of a deletion (of any kind; the grace period matters for pods only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds` (query or body); `None` = the pod's own period.
    pub grace_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<i64>,
}

/// Whether `node` can finish a graceful deletion: it exists, is Ready and reports a container
/// runtime. Otherwise nothing would ever complete it, so the pod is deleted at once.
async fn node_runs_pods(store: &Storage, node: &str) -> Result<bool, ObjectError> {
    let Some(node) = store.get_opt(&NODES, None, node).await? else {
        return Ok(false);
    };
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    Ok(ready && !text(&node, "/status/nodeInfo/containerRuntimeVersion").is_empty())
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The object is gone (its last state).
    Gone(Value),
    /// Marked for graceful deletion; the node's runtime removes it.
    Terminating(Value),
}

/// Upstream's pod deletion: an unbound or finished pod, a zero grace period, or a pod whose
/// node cannot finish it is deleted at once; otherwise `deletionTimestamp` is set to now + the
/// grace period (`gracePeriodSeconds`, else `spec.terminationGracePeriodSeconds`, else 30 s)
/// and `deletionGracePeriodSeconds` records it. A second deletion may only shorten it.
pub async fn delete(
    store: &Storage,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ObjectError> {
    let pod = store.get(&PODS, Some(ns), name).await?;
    let node = text(&pod, "/spec/nodeName").to_string();
    let phase = text(&pod, "/status/phase");
    // Negative periods mean "as short as possible but graceful" upstream: 1 s.
    let grace = opts
        .grace_seconds
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let grace = if grace < 0 { 1 } else { grace };
    let immediate = node.is_empty()
        || phase == "Succeeded"
        || phase == "Failed"
        || grace == 0
        || !node_runs_pods(store, &node).await?;
    if immediate {
        let gone = store
            .delete(
                &PODS,
                Some(ns),
                name,
                opts.uid.as_deref(),
                opts.resource_version,
            )
            .await?;
        return Ok(Deleted::Gone(gone));
    }
    let deadline = Utc::now() + chrono::Duration::seconds(grace);
    let updated = store
        .modify(&PODS, Some(ns), name, opts.resource_version, |pod| {
            if let Some(uid) = &opts.uid
                && text(pod, "/metadata/uid") != uid
            {
                return Err(ObjectError::ConflictWith {
                    resource: PODS.qualified_name(),
                    name: name.to_string(),
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        text(pod, "/metadata/uid")
                    ),
                });
            }
            let current = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if current.is_some_and(|c| c <= grace) {
                return Ok(());
            }
            let meta = &mut pod["metadata"];
            meta["deletionTimestamp"] = json!(deadline.to_rfc3339_opts(SecondsFormat::Secs, true));
            meta["deletionGracePeriodSeconds"] = json!(grace);
            Ok(())
        })
        .await?;
    Ok(Deleted::Terminating(updated))
}
