//! Watch (docs/kubernetes-api.md §A.6): newline-delimited JSON events over a chunked response, fed
//! by an etcd watch. `resourceVersion` unset or `0` starts with synthetic ADDED events for the
//! current objects; `resourceVersion=N` resumes with the changes after N, or sends a 410
//! `Expired` ERROR event once N has been compacted. Selector transitions become ADDED/DELETED
//! like upstream; BOOKMARK events are sent only when the client asks for them.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::handlers::list_options;
use super::query::Query;
use super::status::ApiError;
use super::{ApiState, protobuf, table};
use crate::datastore::{Change, DatastoreError};
use crate::registry::ResourceInfo;
use crate::storage::{self, ListOptions, Storage};

/// Default watch duration when the client gives no `timeoutSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Interval of BOOKMARK events (only with `allowWatchBookmarks=true`).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);

struct Encoder {
    info: &'static ResourceInfo,
    wants_table: bool,
    /// Length-prefixed protobuf `WatchEvent` frames instead of JSON lines.
    protobuf: bool,
}

impl Encoder {
    fn event(&self, kind: &str, obj: &Value) -> Bytes {
        if self.protobuf {
            match protobuf::watch_frame(self.info, kind, obj) {
                Ok(frame) => return frame,
                Err(e) => {
                    // Not expected for stored objects; the client gets the reason in-band.
                    tracing::warn!(component = "apiserver", "watch event not encodable: {e}");
                    let status = e.to_status();
                    return protobuf::watch_frame(self.info, "ERROR", &status).unwrap_or_default();
                }
            }
        }
        let object = if self.wants_table && kind != "ERROR" && kind != "BOOKMARK" {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            table::table(self.info, std::slice::from_ref(obj), &rv, None, Utc::now())
        } else {
            obj.clone()
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).expect("serialises");
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rev: i64) -> Bytes {
        self.event(
            "BOOKMARK",
            &json!({
                "kind": self.info.kind,
                "apiVersion": self.info.api_version(),
                "metadata": {"resourceVersion": rev.to_string()},
            }),
        )
    }
}

fn matches(opts: &ListOptions, v: &Value) -> bool {
    opts.label_selector
        .as_ref()
        .is_none_or(|s| s.matches_object(v))
        && opts.field_selector.as_ref().is_none_or(|s| s.matches(v))
}

/// Starts a watch response.
pub async fn serve(
    st: &ApiState,
    store: Storage,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
    wants_table: bool,
    encoding: protobuf::Encoding,
) -> Result<Response, ApiError> {
    let opts = list_options(info, query)?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = match query.non_negative("timeoutSeconds")? {
        // Upstream treats 0 as "no timeout given".
        Some(t) if t > 0 => Duration::from_secs(t as u64),
        _ => DEFAULT_TIMEOUT,
    };
    let requested: Option<i64> = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion \"{s}\"")))?,
        ),
    };
    let use_protobuf =
        !wants_table && encoding == protobuf::Encoding::Protobuf && info.protobuf.is_some();
    let enc = Encoder {
        info,
        wants_table,
        protobuf: use_protobuf,
    };
    let filtered = opts.label_selector.is_some() || opts.field_selector.is_some();
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    // Initial state for watches that do not resume from a revision.
    let start = match requested {
        Some(rv) => rv + 1,
        None => {
            let list = store
                .list(
                    info,
                    ns,
                    &ListOptions {
                        limit: 0,
                        continue_token: None,
                        ..opts.clone()
                    },
                )
                .await?;
            for item in &list.items {
                let _ = tx.send(enc.event("ADDED", item)).await;
            }
            list.resource_version + 1
        }
    };
    let prefix = info.list_prefix(ns);
    let mut stream = match store.datastore().watch(&prefix, start).await {
        Ok(s) => s,
        Err(e) => return Err(e.into()),
    };
    let cancel = st.cancel.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_rev = start - 1;
        let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark_timer.tick().await;
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark_timer.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(last_rev)).await.is_err() { return; }
                    continue;
                }
                m = stream.next() => m,
            };
            let (changes, rev) = match msg {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(DatastoreError::Compacted {
                    requested,
                    compacted,
                }) => {
                    let err = ApiError::Expired {
                        requested: requested - 1,
                        oldest: compacted,
                    };
                    let _ = tx.send(enc.event("ERROR", &err.to_status())).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(component = "apiserver", "watch ended: {e}");
                    let err: ApiError = e.into();
                    let _ = tx.send(enc.event("ERROR", &err.to_status())).await;
                    return;
                }
            };
            last_rev = last_rev.max(rev);
            for change in changes {
                let event = match change {
                    Change::Put { kv, prev, created } => {
                        let Ok(obj) = storage::decode(info, &kv) else {
                            continue;
                        };
                        let now_matches = matches(&opts, &obj);
                        // Without selectors every version matches; only decode the previous
                        // version when a selector could have excluded it.
                        let was_matching = prev.is_some()
                            && (!filtered
                                || prev
                                    .as_ref()
                                    .and_then(|p| storage::decode(info, p).ok())
                                    .is_some_and(|p| matches(&opts, &p)));
                        match (created || prev.is_none(), was_matching, now_matches) {
                            (true, _, true) => Some(("ADDED", obj)),
                            (false, true, true) => Some(("MODIFIED", obj)),
                            (false, false, true) => Some(("ADDED", obj)),
                            (false, true, false) => Some(("DELETED", obj)),
                            (_, _, false) => None,
                        }
                    }
                    Change::Delete { prev, revision, .. } => prev.and_then(|p| {
                        let mut obj = storage::decode(info, &p).ok()?;
                        storage::set_resource_version(&mut obj, revision);
                        matches(&opts, &obj).then_some(("DELETED", obj))
                    }),
                };
                if let Some((kind, obj)) = event
                    && tx.send(enc.event(kind, &obj)).await.is_err()
                {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    let mut resp = (StatusCode::OK, body).into_response();
    let ct = if wants_table {
        table::TABLE_CONTENT_TYPE
    } else if use_protobuf {
        protobuf::PROTOBUF_WATCH_CONTENT_TYPE
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}
