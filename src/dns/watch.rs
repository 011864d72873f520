//! Keeps the [`Records`] current: for Services and EndpointSlices, a list and then a watch from
//! the list's resourceVersion through the node's API client, each event applied as it arrives;
//! a broken or expired watch lists again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::records::Records;
use crate::kubeclient::Api;

/// Pause before listing again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// One kind the records follow.
#[derive(Clone, Copy)]
pub(crate) struct Kind {
    path: &'static str,
    reset: fn(&mut Records, &[Value]),
    put: fn(&mut Records, &Value),
    delete: fn(&mut Records, &str, &str),
}

fn typed<T: DeserializeOwned>(items: &[Value]) -> Vec<T> {
    items
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// Services.
pub(crate) const SERVICES: Kind = Kind {
    path: "/api/v1/services",
    reset: |r, items| r.reset_services(&typed::<core::Service>(items)),
    put: |r, v| {
        if let Ok(s) = serde_json::from_value::<core::Service>(v.clone()) {
            r.put_service(&s)
        }
    },
    delete: Records::delete_service,
};

/// EndpointSlices.
pub(crate) const SLICES: Kind = Kind {
    path: "/apis/discovery.k8s.io/v1/endpointslices",
    reset: |r, items| r.reset_slices(&typed::<discovery::EndpointSlice>(items)),
    put: |r, v| {
        if let Ok(s) = serde_json::from_value::<discovery::EndpointSlice>(v.clone()) {
            r.put_slice(&s)
        }
    },
    delete: Records::delete_slice,
};

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Applies one watch event (its type and object); `false` when the watch must start over (an
/// ERROR event such as 410 Gone).
fn apply(records: &RwLock<Records>, kind: Kind, event_type: &str, object: &Value) -> bool {
    let mut r = records.write().unwrap_or_else(|p| p.into_inner());
    match event_type {
        "ADDED" | "MODIFIED" => (kind.put)(&mut r, object),
        "DELETED" => (kind.delete)(
            &mut r,
            text(object, "/metadata/namespace"),
            text(object, "/metadata/name"),
        ),
        "BOOKMARK" => {}
        _ => return false,
    }
    true
}

/// Lists `kind` into the records and returns the list's resourceVersion.
async fn list(api: &Api, records: &RwLock<Records>, kind: Kind) -> Result<String, String> {
    let r = api
        .call(http::Method::GET, kind.path, None, None)
        .await
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(format!(
            "GET {}: {} {}",
            kind.path,
            r.status,
            r.error_message()
        ));
    }
    let list: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    (kind.reset)(
        &mut records.write().unwrap_or_else(|p| p.into_inner()),
        &items,
    );
    Ok(text(&list, "/metadata/resourceVersion").to_string())
}

/// Streams the watch from `rv`, applying events, until it ends or `cancel`.
async fn stream(
    api: &Api,
    records: &RwLock<Records>,
    kind: Kind,
    rv: &str,
    cancel: &CancellationToken,
) {
    let path = format!(
        "{}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}",
        kind.path
    );
    api.stream_events(&path, cancel, |event_type, object| {
        apply(records, kind, event_type, &object)
    })
    .await;
}

/// Follows `kind` until `cancel`; `synced` turns true after the first successful list.
pub(crate) async fn follow(
    api: Api,
    records: Arc<RwLock<Records>>,
    kind: Kind,
    synced: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        match list(&api, &records, kind).await {
            Ok(rv) => {
                synced.send_replace(true);
                stream(&api, &records, kind, &rv, &cancel).await;
            }
            Err(e) => {
                tracing::debug!(component = "dns", "listing {}: {e}", kind.path);
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RecordType};
    use serde_json::json;

    #[test]
    fn watch_events_update_the_records() {
        let records = RwLock::new(Records::new("cluster.local").unwrap());
        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
                         "spec": {"clusterIP": "198.19.0.20"}});
        assert!(apply(&records, SERVICES, "ADDED", &svc));
        let name = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
        let count =
            |r: &RwLock<Records>| r.read().unwrap().answer(&name, RecordType::A).answers.len();
        assert_eq!(count(&records), 1);
        assert!(apply(&records, SERVICES, "BOOKMARK", &json!({})));
        assert!(apply(&records, SERVICES, "DELETED", &svc));
        assert_eq!(count(&records), 0);
        assert!(!apply(&records, SERVICES, "ERROR", &json!({"code": 410})));
    }
}
