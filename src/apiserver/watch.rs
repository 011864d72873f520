//! Watch (docs/kubernetes-api.md §A.6): newline-delimited JSON events over a chunked response, fed
//! by the kind's watch cache (crate::storage::watch_cache), or by an etcd watch of its own until
//! the cache has listed. `resourceVersion` unset or `0` starts with synthetic ADDED events for the
//! current objects; `resourceVersion=N` resumes with the changes after N, or sends a 410
//! `Expired` ERROR event when N predates the cache's window (or, before the cache has listed,
//! once N has been compacted in etcd). Selector transitions become ADDED/DELETED
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
use tokio_util::sync::CancellationToken;

use crate::datastore::{Change, DatastoreError, Stored, WatchStream};
use crate::registry::ResourceInfo;
use crate::storage::watch_cache::{CacheError, CacheEvent, CacheWatch, KindCache, selected};
use crate::storage::{self, ListOptions, RawListResult, Storage};

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

/// The event a watch with `opts` sends for one change, if any: `obj` is the object after the
/// change (for a deletion, its last state with `deleted_at` as its resourceVersion), `prev`
/// the one before a put. Selector transitions become ADDED/DELETED like upstream.
fn classify(
    info: &'static ResourceInfo,
    opts: &ListOptions,
    obj: &Stored,
    prev: Option<&Stored>,
    created: bool,
    deleted_at: Option<i64>,
) -> Option<(&'static str, Value)> {
    let filtered = opts.label_selector.is_some() || opts.field_selector.is_some();
    let mut value = storage::decode(info, obj).ok()?;
    if let Some(rev) = deleted_at {
        storage::set_resource_version(&mut value, rev);
        return selected(opts, &value).then_some(("DELETED", value));
    }
    let now_matches = selected(opts, &value);
    // Without selectors every version matches; only decode the previous version when a
    // selector could have excluded it.
    let was_matching = prev.is_some()
        && (!filtered
            || prev
                .and_then(|p| storage::decode(info, p).ok())
                .is_some_and(|p| selected(opts, &p)));
    match (created || prev.is_none(), was_matching, now_matches) {
        (true, _, true) => Some(("ADDED", value)),
        (false, true, true) => Some(("MODIFIED", value)),
        (false, false, true) => Some(("ADDED", value)),
        (false, true, false) => Some(("DELETED", value)),
        (_, _, false) => None,
    }
}

/// Where a LIST is answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource {
    /// The watch cache, at a revision not older than this one: `resourceVersion=0`, or
    /// `resourceVersion=N` with `resourceVersionMatch=NotOlderThan` (or unset, without `limit`,
    /// upstream's legacy meaning).
    CacheNotOlderThan(i64),
    /// A consistent LIST (no `resourceVersion`, no `limit`, no `continue`): the watch cache once
    /// it has reached etcd's current revision, as upstream's consistent reads from cache
    /// (`KindCache::list_consistent`).
    CacheConsistent,
    /// etcd: exact and paginated lists, and continued pages.
    Store,
}

/// Which [`ListSource`] answers a LIST with these parameters.
pub fn list_source(query: &Query, opts: &ListOptions) -> Result<ListSource, ApiError> {
    let rv = query.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let Some(rv) = rv else {
        return match rv_match {
            Some(_) => Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )),
            None if opts.limit == 0 && opts.continue_token.is_none() => {
                Ok(ListSource::CacheConsistent)
            }
            None => Ok(ListSource::Store),
        };
    };
    let n = rv
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion \"{rv}\"")))?;
    if opts.continue_token.is_some() {
        return Ok(ListSource::Store);
    }
    match rv_match.map(String::as_str) {
        Some("NotOlderThan") => Ok(ListSource::CacheNotOlderThan(n)),
        Some("Exact") if n == 0 => Err(ApiError::BadRequest(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
        )),
        Some("Exact") => Ok(ListSource::Store),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unsupported resourceVersionMatch \"{other}\" (Exact, NotOlderThan)"
        ))),
        None if n == 0 || opts.limit == 0 => Ok(ListSource::CacheNotOlderThan(n)),
        None => Ok(ListSource::Store),
    }
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
    let rv_param = query.get("resourceVersion").map(String::as_str);
    let requested: Option<i64> = match rv_param {
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
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let cancel = st.cancel.clone();
    let body = |rx| respond(rx, wants_table, use_protobuf);

    // "Any state" (`resourceVersion=0`) and resumed watches come from the cache; unset means
    // "from the current state": a consistent list from etcd, then the cache after it.
    let mut after = requested;
    let cache = st.watch_cache.kind(info);
    if requested.is_none() && rv_param != Some("0") {
        after = Some(initial_list(&store, cache.as_deref(), info, ns, &opts, &enc, &tx).await?);
    }
    if let Some(cache) = cache {
        match cache.watch(ns, &opts, after).await {
            Ok(cw) => {
                let w = Watcher {
                    enc,
                    opts,
                    tx,
                    bookmarks,
                };
                tokio::spawn(w.follow_cache(cw, timeout, cancel));
                return Ok(body(rx));
            }
            // The client's revision predates the window: 410 like upstream's cache ("too old
            // resource version"), even if etcd still has that history; the client relists.
            Err(CacheError::Expired {
                requested: n,
                oldest,
            }) if requested.is_some() => {
                let err = ApiError::Expired {
                    requested: n,
                    oldest,
                };
                let _ = tx.send(enc.event("ERROR", &err.to_status())).await;
                return Ok(body(rx));
            }
            // The revision of this server's own initial list predates the window (the cache
            // relisted meanwhile): the client gave none to resume from, so etcd serves it.
            Err(CacheError::Expired {
                requested: n,
                oldest,
            }) => {
                tracing::debug!(
                    component = "apiserver",
                    "initial list at {n} predates the cache window ({oldest}): reading etcd"
                );
            }
            // Not listed yet: this watch reads etcd itself.
            Err(CacheError::NotReady) => {}
        }
    }
    let after = match after {
        Some(rv) => rv,
        None => initial_list(&store, None, info, ns, &opts, &enc, &tx).await?,
    };
    let stream = match store
        .datastore()
        .watch(&info.list_prefix(ns), after + 1)
        .await
    {
        Ok(stream) => stream,
        // Like upstream, a revision that is gone is an ERROR event once the watch is accepted.
        Err(DatastoreError::Compacted { compacted, .. }) => {
            let err = ApiError::Expired {
                requested: after,
                oldest: compacted,
            };
            let _ = tx.send(enc.event("ERROR", &err.to_status())).await;
            return Ok(body(rx));
        }
        Err(e) => return Err(e.into()),
    };
    let w = Watcher {
        enc,
        opts,
        tx,
        bookmarks,
    };
    tokio::spawn(w.follow_etcd(stream, after, timeout, cancel));
    Ok(body(rx))
}

/// A consistent LIST from `cache` (see [`ListSource::CacheConsistent`]): etcd's current
/// revision, then the cache once it has applied it; `None` when etcd must answer instead.
pub async fn consistent_from_cache(
    store: &Storage,
    cache: &KindCache,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<Option<RawListResult>, ApiError> {
    let current = store.revision().await?;
    Ok(cache
        .list_consistent(ns, opts, current)
        .await
        .ok()
        .transpose()?)
}

/// Sends the current objects as ADDED events; returns the revision they were read at. They
/// come from `cache` when it can answer a consistent LIST, else from etcd.
async fn initial_list(
    store: &Storage,
    cache: Option<&KindCache>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    opts: &ListOptions,
    enc: &Encoder,
    tx: &mpsc::Sender<Bytes>,
) -> Result<i64, ApiError> {
    let opts = ListOptions {
        limit: 0,
        continue_token: None,
        ..opts.clone()
    };
    let cached = match cache {
        Some(cache) => consistent_from_cache(store, cache, ns, &opts).await?,
        None => None,
    };
    let list = match cached {
        Some(raw) => raw.decoded(info)?,
        None => store.list(info, ns, &opts).await?,
    };
    for item in &list.items {
        let _ = tx.send(enc.event("ADDED", item)).await;
    }
    Ok(list.resource_version)
}

/// The sending side of one watch response.
struct Watcher {
    enc: Encoder,
    opts: ListOptions,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
}

impl Watcher {
    /// Sends one change; false once the client is gone.
    async fn send(
        &self,
        obj: &Stored,
        prev: Option<&Stored>,
        created: bool,
        deleted_at: Option<i64>,
    ) -> bool {
        match classify(self.enc.info, &self.opts, obj, prev, created, deleted_at) {
            Some((kind, v)) => self.tx.send(self.enc.event(kind, &v)).await.is_ok(),
            None => true,
        }
    }

    async fn send_cached(&self, ev: &CacheEvent) -> bool {
        let prev = ev.prev.as_ref().map(|p| &p.kv);
        let deleted_at = ev.deleted.then_some(ev.revision);
        self.send(&ev.obj.kv, prev, prev.is_none(), deleted_at)
            .await
    }

    /// Streams events from a watch-cache registration.
    async fn follow_cache(self, mut cw: CacheWatch, timeout: Duration, cancel: CancellationToken) {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark_timer.tick().await;
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = bookmark_timer.tick(), if self.bookmarks => {
                    let (queued, rev) = cw.drain_for_bookmark();
                    for ev in &queued {
                        if !self.send_cached(ev).await { return; }
                    }
                    if self.tx.send(self.enc.bookmark(rev)).await.is_err() { return; }
                    continue;
                }
                ev = cw.next() => ev,
            };
            // `None`: dropped as too slow or by a relist; the client resumes from its revision.
            let Some(ev) = ev else { return };
            if !self.send_cached(&ev).await {
                return;
            }
        }
    }

    /// Streams events from a datastore watch of its own (before the cache is ready).
    async fn follow_etcd(
        self,
        mut stream: WatchStream,
        after: i64,
        timeout: Duration,
        cancel: CancellationToken,
    ) {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_rev = after;
        let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark_timer.tick().await;
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = bookmark_timer.tick(), if self.bookmarks => {
                    if self.tx.send(self.enc.bookmark(last_rev)).await.is_err() { return; }
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
                    let _ = self
                        .tx
                        .send(self.enc.event("ERROR", &err.to_status()))
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(component = "apiserver", "watch ended: {e}");
                    let err: ApiError = e.into();
                    let _ = self
                        .tx
                        .send(self.enc.event("ERROR", &err.to_status()))
                        .await;
                    return;
                }
            };
            last_rev = last_rev.max(rev);
            for change in changes {
                let sent = match &change {
                    Change::Put { kv, prev, created } => {
                        self.send(kv, prev.as_ref(), *created, None).await
                    }
                    Change::Delete { prev, revision, .. } => match prev {
                        Some(p) => self.send(p, None, false, Some(*revision)).await,
                        None => true,
                    },
                };
                if !sent {
                    return;
                }
            }
        }
    }
}

fn respond(rx: mpsc::Receiver<Bytes>, wants_table: bool, use_protobuf: bool) -> Response {
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
    resp
}
