//! The watch cache's semantics (docs/watch-cache.md) against a real server and real etcd, with
//! a window of 16 events per kind (`watch-cache-max-events`): a resumed WATCH gets exactly the
//! changes after its revision, one older than the window gets 410 although etcd still has the
//! history, BOOKMARKs only with `allowWatchBookmarks`, `resourceVersion=0` LISTs include every
//! write the server acknowledged, and field-selector watches see only their objects, with
//! transitions into the selector as ADDED; consistent LISTs of a large kind come from the
//! cache once etcd's progress notifications say it is current, and include writes made to etcd
//! behind the server's back. The etcd-leader-kill case is in tests/ha.rs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);
const WINDOW: usize = 16;

/// The events of a finished watch body: (type, name, resourceVersion).
fn events(body: &str) -> Vec<(String, String, i64)> {
    body.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            let o = &e["object"];
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect()
}

fn rv_of(body: &str) -> i64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion: {body}"))
}

fn create(s: &ServerNode, path: &str, body: &str) -> i64 {
    let (code, out) = s.api("POST", path, Some(body), "application/json");
    assert_eq!(code, 201, "POST {path}: {out}");
    rv_of(&out)
}

#[test]
fn watches_resume_inside_the_window_and_get_410_outside() {
    let (_root, _block, s) = start_ready_server(
        "wc1",
        &[("watch-cache-max-events", WINDOW.to_string())],
        READY,
    );
    create(&s, "/api/v1/namespaces", r#"{"metadata":{"name":"wc"}}"#);
    let base = "/api/v1/namespaces/wc/configmaps";
    let cm = |name: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#)
    };

    // Read-your-writes: a `resourceVersion=0` LIST right after each acknowledged create lists
    // it, at a revision not older than the create's.
    let mut revs = Vec::new();
    for i in 0..2 * WINDOW {
        let rev = create(&s, base, &cm(&format!("c{i:02}")));
        revs.push(rev);
        let (code, body) = s.api(
            "GET",
            &format!("{base}?resourceVersion=0"),
            None,
            "application/json",
        );
        assert_eq!(code, 200, "{body}");
        assert!(
            rv_of(&body) >= rev,
            "list at {} after a write at {rev}",
            rv_of(&body)
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), i + 1, "{body}");
    }

    // The first create is 2 windows back: 410, though etcd was never compacted and still has
    // it (the cache, not etcd, answers).
    let hist = etcdctl(
        &s,
        &[
            "get",
            "/registry/configmaps/wc/c00",
            "-w",
            "json",
            &format!("--rev={}", revs[0]),
        ],
    );
    assert!(
        hist.status.success(),
        "etcd still serves revision {}: {hist:?}",
        revs[0]
    );
    let (code, body) = s.api(
        "GET",
        &format!(
            "{base}?watch=1&resourceVersion={}&timeoutSeconds=5",
            revs[0]
        ),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"type\":\"ERROR\"")
            && body.contains("\"code\":410")
            && body.contains("Expired"),
        "{body}"
    );

    // Inside the window: exactly the later creates, in order, then nothing.
    let from = revs.len() - 4;
    let (code, body) = s.api(
        "GET",
        &format!(
            "{base}?watch=1&resourceVersion={}&timeoutSeconds=2",
            revs[from]
        ),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let got: Vec<(String, i64)> = events(&body).into_iter().map(|(t, _, r)| (t, r)).collect();
    let want: Vec<(String, i64)> = revs[from + 1..]
        .iter()
        .map(|r| ("ADDED".to_string(), *r))
        .collect();
    assert_eq!(got, want, "{body}");

    // Bookmarks (every 15 s) only when asked for, at the newest revision.
    let last = *revs.last().unwrap();
    let tls = s.data_dir().join("server/tls");
    let (cert, key) = (
        tls.join("client-admin.crt").display().to_string(),
        tls.join("client-admin.key").display().to_string(),
    );
    for (ask, want_bookmark) in [("&allowWatchBookmarks=true", true), ("", false)] {
        // Past `curl`'s usual 10 s limit: the watch itself ends after 17 s.
        let (code, body) = curl(
            &format!(
                "https://{}:6443{base}?watch=1&resourceVersion={last}&timeoutSeconds=17{ask}",
                s.ip
            ),
            &s.ca(),
            &["--cert", &cert, "--key", &key, "--max-time", "30"],
        );
        assert_eq!(code, 200, "{body}");
        let evs = events(&body);
        assert!(evs.iter().all(|(t, _, _)| t == "BOOKMARK"), "{body}");
        assert_eq!(!evs.is_empty(), want_bookmark, "{body}");
        assert!(evs.iter().all(|(_, _, r)| *r >= last), "{body}");
    }
}

#[test]
fn field_selector_watches_see_only_their_pods() {
    let (_root, _block, s) = start_ready_server("wc2", &[], READY);
    create(&s, "/api/v1/namespaces", r#"{"metadata":{"name":"wf"}}"#);
    let base = "/api/v1/namespaces/wf/pods";
    let pod = |name: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"schedulerName":"none","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )
    };
    let bind = |name: &str, node: &str| {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{name}"}},"target":{{"apiVersion":"v1","kind":"Node","name":"{node}"}}}}"#
        );
        let (code, out) = s.api(
            "POST",
            &format!("{base}/{name}/binding"),
            Some(&body),
            "application/json",
        );
        assert_eq!(code, 201, "bind {name}: {out}");
    };
    let delete = |name: &str| {
        let (code, out) = s.api(
            "DELETE",
            &format!("{base}/{name}?gracePeriodSeconds=0"),
            None,
            "application/json",
        );
        assert_eq!(code, 200, "delete {name}: {out}");
    };
    // Bound by hand (no scheduler takes `schedulerName: none`) to nodes that do not exist, so
    // no kubelet acts on them (the orphan clean-up waits 40 s).
    let start = create(&s, base, &pod("a"));
    bind("a", "ghost-1");
    create(&s, base, &pod("b"));
    bind("b", "ghost-2");
    delete("b");
    delete("a");
    create(&s, base, &pod("b"));

    let watch = |selector: &str| {
        let (code, body) = s.api(
            "GET",
            &format!("/api/v1/pods?watch=1&fieldSelector={selector}&resourceVersion={start}&timeoutSeconds=2"),
            None,
            "application/json",
        );
        assert_eq!(code, 200, "{body}");
        events(&body)
            .into_iter()
            .map(|(t, n, _)| format!("{t} {n}"))
            .collect::<Vec<_>>()
    };
    // Binding moves `a` into ghost-1's selector: ADDED; nothing of `b`.
    assert_eq!(watch("spec.nodeName%3Dghost-1"), ["ADDED a", "DELETED a"]);
    assert_eq!(
        watch("metadata.name%3Db"),
        ["ADDED b", "MODIFIED b", "DELETED b", "ADDED b"]
    );
    // A list by node from the cache agrees.
    let (code, body) = s.api(
        "GET",
        "/api/v1/pods?resourceVersion=0&fieldSelector=spec.nodeName%3Dghost-2",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{body}");
}

/// Bytes etcd at `s` has sent to its gRPC clients so far (its metrics endpoint).
fn etcd_sent_bytes(s: &ServerNode) -> f64 {
    let (code, body) = curl(&format!("http://{}:2381/metrics", s.ip), &s.ca(), &[]);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_network_client_grpc_sent_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no etcd_network_client_grpc_sent_bytes_total in {body}"))
}

/// Consistent LISTs (no resourceVersion, no limit) of a large kind are answered from the cache
/// once it has reached etcd's current revision: they include a write made straight to etcd
/// behind the server's back (as another server's write would be), and etcd does not send the
/// objects. The kind is idle when listed, so only etcd's progress notifications (every 100 ms,
/// set by the daemon) can tell the cache it is current.
#[test]
fn consistent_lists_are_served_by_the_cache_once_it_is_current() {
    let (root, _block, s) = start_ready_server("wc3", &[], READY);
    let items: Vec<Value> = (0..600)
        .map(|i| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("c{i:03}"), "namespace": "default"},
                "data": {"k": "v".repeat(200)}})
        })
        .collect();
    let file = root.path().join("configmaps.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&file, list.to_string()).unwrap();
    let out = s.kubectl(&["create", "-f", &file.display().to_string()]);
    assert!(out.status.success(), "{out:?}");

    // Another server's write, as etcd holds it: a copy of c000's stored value under a new name.
    let stored = etcdctl(
        &s,
        &[
            "get",
            "/registry/configmaps/default/c000",
            "--print-value-only",
        ],
    );
    assert!(stored.status.success(), "{stored:?}");
    let value = String::from_utf8(stored.stdout)
        .unwrap()
        .trim_end()
        .replace("\"c000\"", "\"direct\"");
    let put = etcdctl(&s, &["put", "/registry/configmaps/default/direct", &value]);
    assert!(put.status.success(), "{put:?}");
    let (code, body) = s.api(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), 601);
    assert!(names.contains(&"direct"), "{names:?}");

    // Idle now, and etcd's revision moves on elsewhere: the next consistent LIST waits for a
    // progress notification, not for etcd to send 600 objects. (etcd's counter also takes the
    // server's own traffic meanwhile: its lease renewals, status updates and the progress
    // notifications themselves.)
    let bump = etcdctl(&s, &["put", "/wc3-elsewhere", "x"]);
    assert!(bump.status.success(), "{bump:?}");
    let before = etcd_sent_bytes(&s);
    let (code, body) = s.api("GET", "/api/v1/configmaps", None, "application/json");
    assert_eq!(code, 200);
    let sent = etcd_sent_bytes(&s) - before;
    assert!(body.len() > 150_000, "{} bytes listed", body.len());
    assert!(
        sent < body.len() as f64 / 4.0,
        "etcd sent {sent} bytes for a LIST of {} bytes: not served by the cache",
        body.len()
    );
    assert!(rv_of(&body) > 0);
}
