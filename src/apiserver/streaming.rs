//! `pods/exec`, `pods/attach` and `pods/portforward`: authorised as `create` on the subresource
//! (whether the client upgrades with a WebSocket GET or a SPDY POST, as upstream does with
//! AuthorizePodWebsocketUpgradeCreatePermission), then handed to the pod's node through
//! crate::runtime::streaming, which forwards the upgrade to the kubelet API and splices the
//! connections. Nothing here parses a streaming protocol (docs/streaming.md).

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

use super::ApiState;
use super::ResourceRef;
use super::authz::{self, Attributes, User};
use super::status::ApiError;
use crate::runtime::streaming::{self, Session};
use crate::storage::Storage;

/// The session a request opens, when it names one of the session subresources.
pub fn session_of(r: &ResourceRef) -> Option<Session> {
    r.subresource.as_deref().and_then(Session::from_subresource)
}

/// Maps a kubelet-side failure to the API error the client sees.
pub fn kubelet_error(name: &str, code: u16, msg: String) -> ApiError {
    match code {
        400 => ApiError::BadRequest(msg),
        403 => ApiError::Forbidden(msg),
        404 => ApiError::NotFound {
            resource: "pods".into(),
            name: name.into(),
        },
        _ => ApiError::Internal(msg),
    }
}

/// Opens a session on the pod `r` names.
pub async fn handle(
    st: &ApiState,
    store: Storage,
    user: &User,
    r: &ResourceRef,
    session: Session,
    query: &super::query::Query,
    req: Request,
) -> Result<Response, ApiError> {
    if !(req.method() == Method::GET || req.method() == Method::POST) {
        return Err(ApiError::MethodNotAllowed);
    }
    let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
        return Err(ApiError::NoSuchResource);
    };
    authz::authorize(
        user,
        &Attributes {
            verb: "create",
            resource: r.info,
            subresource: Some(session.subresource()),
            namespace: Some(ns),
            name: Some(name),
        },
    )
    .map_err(|e| ApiError::Forbidden(e.0))?;
    let client = st.kubelet.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable("this server has no kubelet client certificate".into())
    })?;
    let pod = store.get(r.info, Some(ns), name).await?;
    if session != Session::PortForward {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            return Err(ApiError::BadRequest(format!(
                "cannot {} into a container in a completed pod; current phase is {phase}",
                session.subresource()
            )));
        }
    }
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let node = store.get(&crate::registry::NODES, None, node_name).await?;
    let pairs: Vec<(String, String)> = streaming::OPTION_PARAMS
        .iter()
        .flat_map(|k| query.all(k).iter().map(|v| (k.to_string(), v.clone())))
        .collect();
    let target = streaming::kubelet_target(session, &pod, &pairs).map_err(ApiError::BadRequest)?;
    streaming::proxy(client, &node, &target, req, st.cancel.clone())
        .await
        .map_err(|(code, msg)| kubelet_error(name, code, msg))
}
