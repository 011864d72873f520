//! Issue 11 items 3, 5, 6 and 7 against a real server with real etcd: query parameters as
//! upstream reads them (Debian's python3-kubernetes watch), honest dry-run, the self-subject
//! rules/whoami reviews, namespace deletion through `Terminating`, and Events.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// A raw API request with the admin client certificate; returns (status, body).
fn api(
    s: &ServerNode,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
) -> (u16, String) {
    let tls = s.data_dir().join("server/tls");
    let mut args = vec![
        "-X".to_string(),
        method.to_string(),
        "--cert".into(),
        tls.join("client-admin.crt").display().to_string(),
        "--key".into(),
        tls.join("client-admin.key").display().to_string(),
        "-H".into(),
        format!("Content-Type: {content_type}"),
    ];
    if let Some(b) = body {
        args.push("--data-binary".into());
        args.push(b.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&format!("https://{}:6443{path}", s.ip), &s.ca(), &refs)
}

fn api_json(
    s: &ServerNode,
    method: &str,
    path: &str,
    body: Option<&str>,
    ct: &str,
) -> (u16, Value) {
    let (code, text) = api(s, method, path, body, ct);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {code} not JSON ({e}): {text}"));
    (code, v)
}

/// The value stored in etcd under `key` (empty when absent), read with the real etcdctl.
fn etcd_value(s: &ServerNode, key: &str) -> String {
    let out = etcdctl(s, &["get", key, "--print-value-only"]);
    assert!(out.status.success(), "etcdctl get {key}: {:?}", out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Debian's python3-kubernetes (22.x) sends `watch=True`; its watch must stream events (the
/// initial ADDED of an existing object, then a live one) instead of ending on a list.
#[test]
fn python_kubernetes_client_watch_streams_events() {
    if !Path::new("/usr/bin/python3").exists()
        || !Command::new("/usr/bin/python3")
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success())
    {
        skip(
            "python_kubernetes_client_watch_streams_events",
            "python3-kubernetes is not installed (apt-get install python3-kubernetes)",
        );
        return;
    }
    let (_root, _block, s) = start_ready_server("pyw", &[], READY);
    let k = &s.kubeconfig;
    kubectl_ok(
        k,
        &["create", "configmap", "py-before", "--from-literal=a=1"],
    );
    let script = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, namespace="default", timeout_seconds=60):
    name = ev["object"].metadata.name
    print(ev["type"], name, flush=True)
    if name == "py-after":
        sys.exit(0)
print("STREAM-ENDED", flush=True)
sys.exit(1)
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(k)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let next = |seen: &mut Vec<String>| {
        let line = rx.recv_timeout(WAIT);
        if let Ok(l) = &line {
            seen.push(l.clone());
        }
        line
    };
    let first = next(&mut seen);
    let ok = first.as_deref() == Ok("ADDED py-before");
    if !ok {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "python watch did not report the existing object: {seen:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kubectl_ok(
        k,
        &["create", "configmap", "py-after", "--from-literal=a=2"],
    );
    let second = next(&mut seen);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        second.as_deref(),
        Ok("ADDED py-after"),
        "python watch saw {seen:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every spelling upstream accepts selects a watch; a non-integer `limit` is a 400 naming it.
#[test]
fn query_parameters_parse_like_upstream() {
    let (_root, _block, s) = start_ready_server("qp", &[], READY);
    for (q, watch) in [
        ("watch=True", true),
        ("watch=TRUE", true),
        ("watch=t", true),
        ("watch", true),
        ("watch=0&watch=1", false),
        ("watch=False", false),
        ("watch=1&watch=0", true),
    ] {
        // A watch with a short timeout streams events (ADDED lines); a list is one object.
        let (code, body) = api(
            &s,
            "GET",
            &format!("/api/v1/namespaces?{q}&timeoutSeconds=1"),
            None,
            "application/json",
        );
        assert_eq!(code, 200, "{q}: {body}");
        let first: Value = serde_json::from_str(body.lines().next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{q}: {e}: {body}"));
        let is_watch = first["type"] == "ADDED";
        let is_list = body.contains("\"kind\":\"NamespaceList\"");
        assert_eq!((is_watch, is_list), (watch, !watch), "{q}: {body}");
    }
    let (code, v) = api_json(
        &s,
        "GET",
        "/api/v1/namespaces?limit=ten",
        None,
        "application/json",
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("\"limit\""), "{v}");
    let (code, v) = api_json(
        &s,
        "GET",
        "/api/v1/namespaces?limit=2&limit=abc",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "first value counts: {v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
    let (code, v) = api_json(
        &s,
        "GET",
        "/api/v1/namespaces?watch=1&timeoutSeconds=soon",
        None,
        "application/json",
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("timeoutSeconds"),
        "{v}"
    );
}
