//! The API router over the in-memory store, with a caller authenticated as a client certificate
//! would make it: every verb, conflicts, validation, paging, watch (initial state, resume, 410
//! after compaction, bookmarks) and node restrictions, without etcd or TLS.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::datastore::KvStore as _;
use crate::datastore::memory::MemoryStore;
use crate::datastore::{Datastore, StoreCell};
use crate::https::{CertIdentity, ConnInfo};
use crate::kubeclient::LineSplitter;
use crate::storage::watch_cache::{CacheConfig, cached_kinds};

struct Api {
    router: Router,
    memory: Arc<MemoryStore>,
    cancel: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn admin() -> CertIdentity {
    CertIdentity {
        user: "admin".into(),
        groups: vec!["system:masters".into()],
    }
}

fn node(name: &str) -> CertIdentity {
    CertIdentity {
        user: format!("system:node:{name}"),
        groups: vec!["system:nodes".into()],
    }
}

fn api() -> Api {
    api_with(CacheConfig::default())
}

/// The router with its watch caches sized by `cache` (a small window for 410 tests).
fn api_with(cache: CacheConfig) -> Api {
    let memory = MemoryStore::new();
    let store: StoreCell = Default::default();
    store
        .set(Datastore::from_impl(memory.clone()))
        .expect("fresh cell");
    let cancel = CancellationToken::new();
    Api {
        router: super::router(
            store,
            Default::default(),
            std::env::temp_dir(),
            cancel.clone(),
            Duration::from_secs(3600),
            None,
            crate::storage::services::ServiceRanges::defaults(),
            std::sync::Arc::new(crate::storage::watch_cache::WatchCaches::new(
                cancel.clone(),
                cache,
            )),
        ),
        memory,
        cancel,
    }
}

fn request(
    who: Option<CertIdentity>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b
        .body(match body {
            Some(v) => Body::from(serde_json::to_vec(&v).unwrap()),
            None => Body::empty(),
        })
        .unwrap();
    req.extensions_mut().insert(ConnInfo {
        remote: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:6443".parse().unwrap(),
        identity: who,
        unauthenticated: Default::default(),
    });
    req
}

impl Api {
    async fn call_as(
        &self,
        who: Option<CertIdentity>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self
            .router
            .clone()
            .oneshot(request(who, method, uri, body))
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(admin()), method, uri, body).await
    }

    /// Opens a watch and returns its body, to read events from.
    async fn watch(&self, uri: &str) -> (StatusCode, Body) {
        let resp = self
            .router
            .clone()
            .oneshot(request(Some(admin()), Method::GET, uri, None))
            .await
            .unwrap();
        (resp.status(), resp.into_body())
    }
}

/// The next newline-delimited event of a watch body.
async fn next_event(body: &mut Body, pending: &mut LineSplitter) -> Value {
    loop {
        if let Some(line) = pending.next_line() {
            return serde_json::from_slice(line.unwrap()).unwrap();
        }
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("an event within 30 s")
            .expect("the watch is still open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            pending.push(&data);
        }
    }
}

fn rv(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn cm(name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": data}})
}

async fn with_namespace(api: &Api, ns: &str) {
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": ns}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn every_verb_on_a_namespaced_kind() {
    let api = api();
    with_namespace(&api, "t").await;
    let base = "/api/v1/namespaces/t/configmaps";

    // create, and a second create of the same name is 409 AlreadyExists.
    let (status, created) = api.call(Method::POST, base, Some(cm("a", "1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["namespace"], "t");
    assert!(!rv(&created).is_empty());
    let (status, err) = api.call(Method::POST, base, Some(cm("a", "1"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "AlreadyExists");

    // get
    let (status, got) = api.call(Method::GET, &format!("{base}/a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // update with the current resourceVersion, then a stale one is 409 Conflict.
    let mut next = got.clone();
    next["data"]["k"] = json!("2");
    let (status, updated) = api
        .call(Method::PUT, &format!("{base}/a"), Some(next.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["data"]["k"], "2");
    assert_ne!(rv(&updated), rv(&created));
    let (status, err) = api
        .call(Method::PUT, &format!("{base}/a"), Some(next))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["reason"], "Conflict");

    // patch (merge patch), and a patch that moves resourceVersion is 409.
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{base}/a"))
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"data":{"k":"3"}}"#))
        .unwrap();
    let mut req = req;
    req.extensions_mut().insert(ConnInfo {
        remote: "127.0.0.1:40000".parse().unwrap(),
        local: "127.0.0.1:6443".parse().unwrap(),
        identity: Some(admin()),
        unauthenticated: Default::default(),
    });
    let resp = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, got) = api.call(Method::GET, &format!("{base}/a"), None).await;
    assert_eq!(got["data"]["k"], "3");

    // list, with paging.
    api.call(Method::POST, base, Some(cm("b", "1"))).await;
    api.call(Method::POST, base, Some(cm("c", "1"))).await;
    let (status, page) = api
        .call(Method::GET, &format!("{base}?limit=2"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["kind"], "ConfigMapList");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("{base}?limit=2&continue={token}"),
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["metadata"]["name"], "c");

    // invalid bodies are refused and nothing is stored.
    let (status, err) = api
        .call(Method::POST, base, Some(cm("Bad_Name", "1")))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["reason"], "Invalid");

    // delete, then get is 404; deletecollection empties the namespace.
    let (status, _) = api.call(Method::DELETE, &format!("{base}/a"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = api.call(Method::GET, &format!("{base}/a"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["reason"], "NotFound");
    let (status, _) = api.call(Method::DELETE, base, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = api.call(Method::GET, base, None).await;
    assert_eq!(list["items"], json!([]));

    // A namespaced create into a missing namespace is 404.
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/namespaces/missing/configmaps",
            Some(cm("x", "1")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn system_namespaces_are_protected_and_others_delete_their_contents() {
    let api = api();
    for ns in crate::registry::SYSTEM_NAMESPACES {
        with_namespace(&api, ns).await;
    }
    for ns in crate::registry::SYSTEM_NAMESPACES {
        let (status, _) = api
            .call(Method::DELETE, &format!("/api/v1/namespaces/{ns}"), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{ns}");
    }
    with_namespace(&api, "scratch").await;
    api.call(
        Method::POST,
        "/api/v1/namespaces/scratch/configmaps",
        Some(cm("a", "1")),
    )
    .await;
    // deletecollection spares the system namespaces and marks the others Terminating; the
    // namespace controller's round then takes their contents and them.
    let (status, _) = api.call(Method::DELETE, "/api/v1/namespaces", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, scratch) = api
        .call(Method::GET, "/api/v1/namespaces/scratch", None)
        .await;
    assert_eq!(scratch["status"]["phase"], "Terminating", "{scratch}");
    let store = crate::storage::Storage::new(Datastore::from_impl(api.memory.clone()));
    assert!(
        crate::storage::namespaces::finalize(&store, "scratch")
            .await
            .unwrap()
    );
    let (_, list) = api.call(Method::GET, "/api/v1/namespaces", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), crate::registry::SYSTEM_NAMESPACES.len());
    assert!(!names.contains(&"scratch"));
    let (_, cms) = api
        .call(Method::GET, "/api/v1/namespaces/scratch/configmaps", None)
        .await;
    assert_eq!(cms["items"], json!([]));
}

#[tokio::test]
async fn callers_are_authenticated_and_nodes_restricted() {
    let api = api();
    let (status, _) = api.call_as(None, Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let n1 = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (status, _) = api
        .call_as(Some(node("n1")), Method::POST, "/api/v1/nodes", Some(n1))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let n2 = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}});
    let (status, _) = api
        .call_as(Some(node("n1")), Method::POST, "/api/v1/nodes", Some(n2))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call_as(
            Some(node("n1")),
            Method::GET,
            "/api/v1/namespaces/default/secrets",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call_as(Some(node("n1")), Method::GET, "/api/v1/nodes", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn watch_starts_with_the_state_then_follows_and_resumes() {
    let api = api();
    with_namespace(&api, "w").await;
    let base = "/api/v1/namespaces/w/configmaps";
    let (_, a) = api.call(Method::POST, base, Some(cm("a", "1"))).await;

    let (status, mut body) = api.watch(&format!("{base}?watch=true")).await;
    assert_eq!(status, StatusCode::OK);
    let mut buf = LineSplitter::default();
    let ev = next_event(&mut body, &mut buf).await;
    assert_eq!(
        (ev["type"].as_str(), rv(&ev["object"])),
        (Some("ADDED"), rv(&a))
    );

    let (_, b) = api.call(Method::POST, base, Some(cm("b", "1"))).await;
    let ev = next_event(&mut body, &mut buf).await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["name"], "b");
    api.call(Method::DELETE, &format!("{base}/a"), None).await;
    let ev = next_event(&mut body, &mut buf).await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "a");
    drop(body);

    // Resuming from b's revision replays only what came after it.
    let (_, mut resumed) = api
        .watch(&format!("{base}?watch=true&resourceVersion={}", rv(&b)))
        .await;
    let mut buf = LineSplitter::default();
    let ev = next_event(&mut resumed, &mut buf).await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "a");
}

#[tokio::test]
async fn watch_from_before_the_cache_window_is_gone() {
    // A window of 3 events: the 4 writes after `a` push it past `a`.
    let api = api_with(CacheConfig::with_max_events(3));
    with_namespace(&api, "w").await;
    let base = "/api/v1/namespaces/w/configmaps";
    let (_, a) = api.call(Method::POST, base, Some(cm("a", "1"))).await;
    let mut later = Vec::new();
    for i in 0..4 {
        let (_, x) = api
            .call(Method::POST, base, Some(cm(&format!("x{i}"), "1")))
            .await;
        later.push(rv(&x));
    }
    // The store still has `a`'s revision (nothing is compacted): the cache alone says 410.
    let (status, mut body) = api
        .watch(&format!("{base}?watch=true&resourceVersion={}", rv(&a)))
        .await;
    // Upstream accepts the watch, then sends the 410 as an ERROR event.
    assert_eq!(status, StatusCode::OK);
    let ev = next_event(&mut body, &mut LineSplitter::default()).await;
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    assert_eq!(ev["object"]["reason"], "Expired", "{ev}");
    assert_eq!(
        body.frame().await.map(|f| f.is_ok()),
        None,
        "the watch ends"
    );
    // Resuming inside the window replays exactly the later writes.
    let (_, mut body) = api
        .watch(&format!("{base}?watch=true&resourceVersion={}", later[0]))
        .await;
    let mut buf = LineSplitter::default();
    for want in &later[1..] {
        let ev = next_event(&mut body, &mut buf).await;
        assert_eq!(
            (ev["type"].as_str(), rv(&ev["object"])),
            (Some("ADDED"), want.clone())
        );
    }
    let (_, x) = api.call(Method::POST, base, Some(cm("y", "1"))).await;
    let ev = next_event(&mut body, &mut buf).await;
    assert_eq!(rv(&ev["object"]), rv(&x), "nothing in between: {ev}");
    // A list continuing from a snapshot that has since been compacted is 410 too.
    let (_, page) = api
        .call(Method::GET, &format!("{base}?limit=1"), None)
        .await;
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    api.call(Method::POST, base, Some(cm("late", "1"))).await;
    api.memory.compact(api.memory.revision().await.unwrap());
    let (status, err) = api
        .call(
            Method::GET,
            &format!("{base}?limit=1&continue={token}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{err}");
    assert_eq!(err["reason"], "Expired");
}

#[tokio::test]
async fn field_selector_watches_follow_selector_transitions() {
    let api = api();
    with_namespace(&api, "w").await;
    let base = "/api/v1/namespaces/w/pods";
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    let bind = async |name: &str, node: &str| {
        let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                          "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let uri = format!("{base}/{name}/binding");
        let (status, out) = api.call(Method::POST, &uri, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
    };
    let delete = async |name: &str| {
        let uri = format!("{base}/{name}?gracePeriodSeconds=0");
        let (status, out) = api.call(Method::DELETE, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{out}");
    };
    let (status, a) = api.call(Method::POST, base, Some(pod("a"))).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let (_, mut n1) = api
        .watch(&format!(
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion={}",
            rv(&a)
        ))
        .await;
    let (_, mut named) = api
        .watch(&format!(
            "{base}?watch=true&fieldSelector=metadata.name%3Db&resourceVersion={}",
            rv(&a)
        ))
        .await;
    // `a` is bound to n1 (a transition into the selector: ADDED), `b` is created and bound
    // to n2 (never n1's), then both are deleted.
    bind("a", "n1").await;
    api.call(Method::POST, base, Some(pod("b"))).await;
    bind("b", "n2").await;
    delete("b").await;
    delete("a").await;
    // Last events, after everything above: `c` bound to n1, and a new `b`.
    api.call(Method::POST, base, Some(pod("c"))).await;
    bind("c", "n1").await;
    api.call(Method::POST, base, Some(pod("b"))).await;
    let mut buf = LineSplitter::default();
    let mut read = async |body: &mut Body, n: usize| {
        let mut out = Vec::new();
        buf = LineSplitter::default();
        for _ in 0..n {
            let ev = next_event(body, &mut buf).await;
            let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("?");
            out.push(format!("{} {name}", ev["type"].as_str().unwrap_or("?")));
        }
        out
    };
    // Only n1's pods, each entering the selector as ADDED; nothing of `b` in between.
    assert_eq!(read(&mut n1, 3).await, ["ADDED a", "DELETED a", "ADDED c"]);
    assert_eq!(
        read(&mut named, 4).await,
        ["ADDED b", "MODIFIED b", "DELETED b", "ADDED b"]
    );
}

#[tokio::test(start_paused = true)]
async fn watch_sends_bookmarks_only_when_asked() {
    let api = api();
    with_namespace(&api, "w").await;
    let base = "/api/v1/namespaces/w/configmaps";
    let (_, a) = api.call(Method::POST, base, Some(cm("a", "1"))).await;
    let (_, mut body) = api
        .watch(&format!(
            "{base}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
            rv(&a)
        ))
        .await;
    let mut buf = LineSplitter::default();
    // The paused clock runs ahead to the bookmark interval while the watch is idle.
    let ev = next_event(&mut body, &mut buf).await;
    assert_eq!(ev["type"], "BOOKMARK");
    assert_eq!(ev["object"]["kind"], "ConfigMap");
    assert_eq!(rv(&ev["object"]), rv(&a));

    // Without allowWatchBookmarks the idle watch stays silent until its timeout ends it.
    let (_, mut quiet) = api
        .watch(&format!(
            "{base}?watch=true&timeoutSeconds=60&resourceVersion={}",
            rv(&a)
        ))
        .await;
    let end = tokio::time::timeout(Duration::from_secs(120), quiet.frame())
        .await
        .expect("the watch ends at its timeout");
    assert!(end.is_none(), "no event before the timeout");
}

#[tokio::test]
async fn watches_and_any_state_lists_share_one_store_watch_per_kind() {
    let api = api();
    with_namespace(&api, "w").await;
    let base = "/api/v1/namespaces/w/configmaps";
    let (_, a) = api.call(Method::POST, base, Some(cm("a", "1"))).await;
    let kinds = cached_kinds().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.memory.watch_count() < kinds {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every cache watches"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut bodies = Vec::new();
    for uri in [
        format!("{base}?watch=true"),
        format!("{base}?watch=true&resourceVersion=0"),
        format!("{base}?watch=true&resourceVersion={}", rv(&a)),
        "/api/v1/configmaps?watch=true&fieldSelector=metadata.name%3Db".to_string(),
    ] {
        let (status, body) = api.watch(&uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        bodies.push(body);
    }
    // One store watch per cached kind, started with the server; client watches add none.
    assert_eq!(api.memory.watch_count(), kinds);
    let (_, b) = api.call(Method::POST, base, Some(cm("b", "1"))).await;
    for (i, body) in bodies.iter_mut().enumerate() {
        let mut buf = LineSplitter::default();
        let mut ev = next_event(body, &mut buf).await;
        if i < 2 {
            // The watches without a revision start with the current state.
            assert_eq!(ev["object"]["metadata"]["name"], "a");
            ev = next_event(body, &mut buf).await;
        }
        assert_eq!(
            (ev["type"].as_str(), rv(&ev["object"])),
            (Some("ADDED"), rv(&b)),
            "watch {i}"
        );
    }

    // A list at any state is never older than a write this server acknowledged.
    for i in 0..10 {
        let (_, c) = api
            .call(Method::POST, base, Some(cm(&format!("c{i}"), "1")))
            .await;
        let (status, list) = api
            .call(Method::GET, &format!("{base}?resourceVersion=0"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let listed_rv: i64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(listed_rv >= rv(&c).parse::<i64>().unwrap());
        assert_eq!(list["items"].as_array().unwrap().len(), i + 3);
        let (_, list) = api
            .call(
                Method::GET,
                &format!(
                    "{base}?resourceVersion={}&resourceVersionMatch=NotOlderThan&fieldSelector=metadata.name%3Dc{i}",
                    rv(&c)
                ),
                None,
            )
            .await;
        assert_eq!(list["items"][0]["metadata"]["name"], format!("c{i}"));
    }
    for (query, message) in [
        (
            "resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersion=1&resourceVersionMatch=Newest",
            "unsupported resourceVersionMatch \"Newest\"",
        ),
    ] {
        let (status, err) = api
            .call(Method::GET, &format!("{base}?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(err["message"].as_str().unwrap().contains(message), "{err}");
    }
}

#[tokio::test]
async fn large_lists_are_whole_from_the_cache_and_from_the_store() {
    let api = api_with(CacheConfig {
        consistent_min_objects: 1,
        ..CacheConfig::default()
    });
    with_namespace(&api, "big").await;
    let base = "/api/v1/namespaces/big/configmaps";
    // Over a MiB of stored bytes: the response is built on the blocking pool.
    let data = "x".repeat(4096);
    let mut revs = Vec::new();
    for i in 0..300 {
        let (status, c) = api
            .call(Method::POST, base, Some(cm(&format!("c{i:03}"), &data)))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        revs.push(rv(&c));
    }
    // Any state and consistent (both from the cache), a paginated page (from the store).
    for query in ["?resourceVersion=0", "", "?limit=1000"] {
        let (status, list) = api.call(Method::GET, &format!("{base}{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 300, "{query}");
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item["metadata"]["name"], format!("c{i:03}"), "{query}");
            assert_eq!(rv(item), revs[i], "{query}");
            assert_eq!(item["data"]["k"].as_str().map(str::len), Some(4096));
        }
        let listed: i64 = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(listed >= revs[299].parse::<i64>().unwrap(), "{query}");
    }
}
