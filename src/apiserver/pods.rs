//! Pod-specific API operations: the `binding` subresource (how the scheduler and anyone with
//! the right assign a pod to a node), the `eviction` subresource (policy/v1 Eviction, what
//! `kubectl drain` posts) and graceful deletion (docs/scheduling.md). The scheduler and the
//! taint manager call the same functions the HTTP handlers do.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use axum::http::StatusCode;
use axum::response::Response;

use super::json as json_response;
use super::status::ApiError;
use super::storage::Storage;
use crate::registry::{NODES, PODS};

/// Upstream's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn binding_conflict(name: &str, message: String) -> ApiError {
    ApiError::ConflictWith {
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
) -> Result<Value, ApiError> {
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            name,
            "target.name",
            "Required value",
        ));
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
async fn node_runs_pods(store: &Storage, node: &str) -> Result<bool, ApiError> {
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
) -> Result<Deleted, ApiError> {
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
                return Err(ApiError::ConflictWith {
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

/// policy/v1 Eviction of pod `ns/name`: a deletion with the eviction's `deleteOptions`.
/// PodDisruptionBudgets are not served, so no budget ever refuses an eviction.
pub async fn evict(store: &Storage, ns: &str, name: &str, body: &Value) -> Result<(), ApiError> {
    let opts = delete_options(body.get("deleteOptions").unwrap_or(&Value::Null), None)?;
    delete(store, ns, name, &opts).await.map(|_| ())
}

/// POST of a pod subresource: `binding` (a v1 Binding naming the node in `target`) or
/// `eviction` (a policy/v1 Eviction). Both answer 201 with a success Status, as upstream.
///
/// `node` is the caller's node name when a node identity calls: whatever RBAC grants nodes on
/// pods, a node never binds, and evicts only pods bound to itself (upstream's node authorizer
/// and NodeRestriction).
pub async fn create_subresource(
    store: &Storage,
    node: Option<&str>,
    ns: &str,
    name: &str,
    subresource: &str,
    body: &Value,
    dry_run: bool,
) -> Result<Response, ApiError> {
    if let Some(node) = node {
        if subresource == "binding" {
            return Err(ApiError::Forbidden(format!(
                "pods \"{name}\" is forbidden: User \"system:node:{node}\" cannot create resource \"pods/binding\" in API group \"\" in the namespace \"{ns}\""
            )));
        }
        let pod = store.get(&PODS, Some(ns), name).await?;
        if text(&pod, "/spec/nodeName") != node {
            return Err(ApiError::Forbidden(format!(
                "node \"{node}\" can only evict pods with spec.nodeName set to itself"
            )));
        }
    }
    let body_name = text(body, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::BadRequest(format!(
            "name in URL does not match name in {} object: {name} != {body_name}",
            text(body, "/kind")
        )));
    }
    if dry_run {
        store.get(&PODS, Some(ns), name).await?;
    } else if subresource == "binding" {
        let kind = text(body, "/target/kind");
        if !(kind.is_empty() || kind == NODES.kind) {
            return Err(ApiError::invalid(
                "Binding",
                name,
                "target.kind",
                format!("Unsupported value: \"{kind}\": supported values: \"Node\""),
            ));
        }
        let uid = body.pointer("/metadata/uid").and_then(Value::as_str);
        bind(store, ns, name, text(body, "/target/name"), uid).await?;
    } else {
        evict(store, ns, name, body).await?;
    }
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(
        StatusCode::CREATED,
        &status,
        "application/json",
    ))
}

/// Reads DeleteOptions (preconditions, grace period) from a body (possibly null) and the
/// `gracePeriodSeconds` query value; every DELETE goes through this.
pub fn delete_options(body: &Value, query_grace: Option<&str>) -> Result<DeleteOptions, ApiError> {
    let grace = match body.get("gracePeriodSeconds") {
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .ok_or_else(|| ApiError::BadRequest(format!("invalid gracePeriodSeconds {n}")))?,
        ),
        _ => match query_grace.filter(|g| !g.is_empty()) {
            Some(g) => Some(g.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!("invalid value for gracePeriodSeconds: {g:?}"))
            })?),
            None => None,
        },
    };
    let rv = match body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!("invalid resourceVersion precondition \"{s}\""))
        })?),
        None => None,
    };
    Ok(DeleteOptions {
        grace_seconds: grace,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: rv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{Datastore, memory::MemoryStore};
    use crate::registry::NAMESPACES;

    async fn store() -> Storage {
        let s = Storage::new(Datastore::from_impl(std::sync::Arc::new(
            MemoryStore::default(),
        )));
        s.create(&NAMESPACES, None, json!({"metadata": {"name": "default"}}))
            .await
            .unwrap();
        s
    }

    async fn add_pod(s: &Storage, name: &str, node: &str) {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}], "terminationGracePeriodSeconds": 20});
        if !node.is_empty() {
            spec["nodeName"] = json!(node);
        }
        s.create(
            &PODS,
            Some("default"),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": {"phase": "Running"}}),
        )
        .await
        .unwrap();
    }

    async fn add_node(s: &Storage, name: &str, runtime: bool, ready: bool) {
        let mut status =
            json!({"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]});
        if runtime {
            status["nodeInfo"] = json!({"containerRuntimeVersion": "containerd://1.6.20"});
        }
        s.create(&NODES, None, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status}))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn binding_sets_node_once() {
        let s = store().await;
        add_pod(&s, "p", "").await;
        let bound = bind(&s, "default", "p", "n1", None).await.unwrap();
        assert_eq!(bound["spec"]["nodeName"], "n1");
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(bound["status"]["conditions"][0]["status"], "True");
        let e = bind(&s, "default", "p", "n2", None).await.unwrap_err();
        assert_eq!(e.code(), 409);
        assert_eq!(
            e.to_string(),
            "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"n1\""
        );
        add_pod(&s, "q", "").await;
        let e = bind(&s, "default", "q", "n1", Some("another-uid"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 409);
        assert_eq!(
            bind(&s, "default", "nope", "n1", None)
                .await
                .unwrap_err()
                .code(),
            404
        );
    }

    #[tokio::test]
    async fn graceful_deletion_only_where_a_runtime_finishes_it() {
        let s = store().await;
        add_node(&s, "live", true, true).await;
        add_node(&s, "bare", false, true).await;
        add_node(&s, "down", true, false).await;
        for (pod, node) in [
            ("unbound", ""),
            ("on-live", "live"),
            ("on-bare", "bare"),
            ("on-down", "down"),
            ("on-gone", "gone"),
        ] {
            add_pod(&s, pod, node).await;
        }
        let d = DeleteOptions::default();
        for pod in ["unbound", "on-bare", "on-down", "on-gone"] {
            assert!(
                matches!(
                    delete(&s, "default", pod, &d).await.unwrap(),
                    Deleted::Gone(_)
                ),
                "{pod}"
            );
            assert!(
                s.get_opt(&PODS, Some("default"), pod)
                    .await
                    .unwrap()
                    .is_none(),
                "{pod}"
            );
        }
        let Deleted::Terminating(p) = delete(&s, "default", "on-live", &d).await.unwrap() else {
            panic!("graceful deletion expected")
        };
        assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 20);
        assert!(p["metadata"]["deletionTimestamp"].is_string());
        // A longer period does not extend it; a shorter one shortens it; zero deletes.
        let longer = DeleteOptions {
            grace_seconds: Some(60),
            ..d.clone()
        };
        let Deleted::Terminating(p) = delete(&s, "default", "on-live", &longer).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 20);
        let shorter = DeleteOptions {
            grace_seconds: Some(5),
            ..d.clone()
        };
        let Deleted::Terminating(p) = delete(&s, "default", "on-live", &shorter).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 5);
        let now = DeleteOptions {
            grace_seconds: Some(0),
            ..d
        };
        assert!(matches!(
            delete(&s, "default", "on-live", &now).await.unwrap(),
            Deleted::Gone(_)
        ));
    }

    #[tokio::test]
    async fn nodes_never_bind_and_evict_only_their_own_pods() {
        let s = store().await;
        add_pod(&s, "mine", "n1").await;
        add_pod(&s, "theirs", "n2").await;
        add_pod(&s, "pending", "").await;
        let binding = json!({"target": {"name": "n1"}});
        let e = create_subresource(
            &s,
            Some("n1"),
            "default",
            "pending",
            "binding",
            &binding,
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), 403, "{e}");
        assert_eq!(node_of_pod(&s, "pending").await, "");
        let e = create_subresource(
            &s,
            Some("n1"),
            "default",
            "theirs",
            "eviction",
            &json!({}),
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node \"n1\" can only evict pods with spec.nodeName set to itself"
        );
        assert!(
            s.get_opt(&PODS, Some("default"), "theirs")
                .await
                .unwrap()
                .is_some()
        );
        let ok = create_subresource(
            &s,
            Some("n1"),
            "default",
            "mine",
            "eviction",
            &json!({}),
            false,
        )
        .await
        .unwrap();
        assert_eq!(ok.status(), StatusCode::CREATED);
        assert!(
            s.get_opt(&PODS, Some("default"), "mine")
                .await
                .unwrap()
                .is_none()
        );
        // An administrator (no node identity) binds.
        create_subresource(&s, None, "default", "pending", "binding", &binding, false)
            .await
            .unwrap();
        assert_eq!(node_of_pod(&s, "pending").await, "n1");
    }

    async fn node_of_pod(s: &Storage, name: &str) -> String {
        let p = s.get(&PODS, Some("default"), name).await.unwrap();
        text(&p, "/spec/nodeName").to_string()
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let o = delete_options(
            &json!({"gracePeriodSeconds": 7, "preconditions": {"uid": "u"}}),
            Some("3"),
        )
        .unwrap();
        assert_eq!(o.grace_seconds, Some(7));
        assert_eq!(o.uid.as_deref(), Some("u"));
        assert_eq!(
            delete_options(&Value::Null, Some("3"))
                .unwrap()
                .grace_seconds,
            Some(3)
        );
        assert_eq!(
            delete_options(&Value::Null, Some("x")).unwrap_err().code(),
            400
        );
    }
}
