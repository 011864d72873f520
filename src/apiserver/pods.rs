//! Pod-specific API operations: the `binding` subresource (how the scheduler and anyone with
//! the right assign a pod to a node), the `eviction` subresource (policy/v1 Eviction, what
//! `kubectl drain` posts) and graceful deletion (docs/scheduling.md). The scheduler and the
//! taint manager call the same functions the HTTP handlers do.

use serde_json::{Value, json};

use axum::http::StatusCode;
use axum::response::Response;

use super::json as json_response;
use super::status::ApiError;
use crate::storage::Storage;
fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

use crate::registry::{NODES, PODS};
pub use crate::storage::pods::{
    DEFAULT_GRACE_SECONDS, DeleteOptions, Deleted, bind, delete, set_condition,
};

/// policy/v1 Eviction of pod `ns/name`: a deletion with the eviction's `deleteOptions`.
/// PodDisruptionBudgets are not served, so no budget ever refuses an eviction.
pub async fn evict(store: &Storage, ns: &str, name: &str, body: &Value) -> Result<(), ApiError> {
    let opts = delete_options(body.get("deleteOptions").unwrap_or(&Value::Null), None)?;
    delete(store, ns, name, &opts).await?;
    Ok(())
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
        if text(body, "/target/name").is_empty() {
            return Err(ApiError::invalid(
                "Binding",
                name,
                "target.name",
                "Required value",
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
        assert_eq!(
            e.to_string(),
            "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"n1\""
        );
        assert_eq!(ApiError::from(e).code(), 409);
        add_pod(&s, "q", "").await;
        let e = bind(&s, "default", "q", "n1", Some("another-uid"))
            .await
            .unwrap_err();
        assert_eq!(ApiError::from(e).code(), 409);
        assert_eq!(
            bind(&s, "default", "nope", "n1", None)
                .await
                .map_err(ApiError::from)
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
