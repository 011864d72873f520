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

fn api_json(
    s: &ServerNode,
    method: &str,
    path: &str,
    body: Option<&str>,
    ct: &str,
) -> (u16, Value) {
    let (code, text) = s.api(method, path, body, ct);
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
        let (code, body) = s.api(
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

fn configmap_data(s: &ServerNode, name: &str) -> Value {
    let (code, v) = api_json(
        s,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps/{name}"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    v["data"].clone()
}

/// `dryRun=All` on every verb answers what would have been stored (defaults, validation and
/// the update rules applied) and writes nothing: GET and etcd still show the old state.
#[test]
fn dry_run_answers_the_result_and_writes_nothing() {
    let (_root, _block, s) = start_ready_server("dry", &[], READY);
    let k = &s.kubeconfig;
    kubectl_ok(k, &["create", "configmap", "d1", "--from-literal=k1=live"]);
    let key = "/registry/configmaps/default/d1";
    let stored = etcd_value(&s, key);
    assert!(stored.contains("\"live\""), "{stored}");
    let base = "/api/v1/namespaces/default/configmaps";

    // PATCH (the issue's case): the answer shows the change, nothing changes.
    let (code, v) = api_json(
        &s,
        "PATCH",
        &format!("{base}/d1?dryRun=All"),
        Some(r#"{"data":{"k1":"dry"}}"#),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["k1"], "dry", "{v}");
    assert_eq!(configmap_data(&s, "d1")["k1"], "live");
    assert_eq!(etcd_value(&s, key), stored, "a dry-run patch wrote to etcd");

    // A dry-run patch is validated like a real one.
    let (code, v) = api_json(
        &s,
        "PATCH",
        &format!("{base}/d1?dryRun=All"),
        Some(r#"{"data":{"bad key!":"x"}}"#),
        "application/merge-patch+json",
    );
    assert_eq!(code, 422, "{v}");

    // PUT: the answer is the replaced object with the server-owned fields kept.
    let mut live: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "configmap", "d1", "-o", "json"])).unwrap();
    let uid = live["metadata"]["uid"].clone();
    live["data"] = serde_json::json!({"k2": "put"});
    live["metadata"]["uid"] = Value::Null;
    let (code, v) = api_json(
        &s,
        "PUT",
        &format!("{base}/d1?dryRun=All"),
        Some(&live.to_string()),
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"], serde_json::json!({"k2": "put"}), "{v}");
    assert_eq!(
        v["metadata"]["uid"], uid,
        "the update rules keep the uid: {v}"
    );
    assert_eq!(configmap_data(&s, "d1"), serde_json::json!({"k1": "live"}));
    assert_eq!(
        etcd_value(&s, key),
        stored,
        "a dry-run update wrote to etcd"
    );

    // POST: defaults applied (uid, creationTimestamp, a generated name), nothing stored.
    let (code, v) = api_json(
        &s,
        "POST",
        &format!("{base}?dryRun=All"),
        Some(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-"},"data":{"a":"b"}}"#,
        ),
        "application/json",
    );
    assert_eq!(code, 201, "{v}");
    let generated = v["metadata"]["name"].as_str().unwrap().to_string();
    assert!(generated.starts_with("gen-") && generated.len() > 4, "{v}");
    assert!(v["metadata"]["uid"].is_string(), "{v}");
    assert!(v["metadata"]["creationTimestamp"].is_string(), "{v}");
    let (code, _) = s.api(
        "GET",
        &format!("{base}/{generated}"),
        None,
        "application/json",
    );
    assert_eq!(code, 404, "a dry-run create stored {generated}");
    // A dry-run create of a taken name fails as the real one would.
    let (code, v) = api_json(
        &s,
        "POST",
        &format!("{base}?dryRun=All"),
        Some(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d1"}}"#),
        "application/json",
    );
    assert_eq!(
        (code, v["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{v}"
    );

    // DELETE by query and by DeleteOptions body (kubectl --dry-run=server), with preconditions.
    let (code, v) = api_json(
        &s,
        "DELETE",
        &format!("{base}/d1?dryRun=All"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["name"], "d1");
    let out = kubectl_ok(k, &["delete", "configmap", "d1", "--dry-run=server"]);
    assert!(out.contains("server dry run"), "{out}");
    let (code, v) = api_json(
        &s,
        "DELETE",
        &format!("{base}/d1"),
        Some(
            r#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"],"preconditions":{"uid":"not-the-uid"}}"#,
        ),
        "application/json",
    );
    assert_eq!(code, 409, "a dry-run delete checks preconditions: {v}");
    let (code, v) = api_json(
        &s,
        "DELETE",
        &format!("{base}/d1"),
        Some(r#"{"dryRun":["Some"]}"#),
        "application/json",
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(
        etcd_value(&s, key),
        stored,
        "a dry-run delete removed the object"
    );

    // DELETE of the collection.
    kubectl_ok(k, &["create", "configmap", "d2"]);
    let (code, v) = api_json(
        &s,
        "DELETE",
        &format!("{base}?dryRun=All"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    let names = kubectl_ok(k, &["get", "configmaps", "-o", "name"]);
    assert!(
        names.contains("configmap/d1") && names.contains("configmap/d2"),
        "{names}"
    );
    let (code, v) = api_json(
        &s,
        "PATCH",
        &format!("{base}/d1?dryRun=Yes"),
        Some("{}"),
        "application/merge-patch+json",
    );
    assert_eq!(code, 422, "{v}");
}

/// `kubectl diff` shows a changed manifest and exits 1 (kubectl 1.29-1.33 installed). kubectl
/// diff needs the server's OpenAPI; until that is served the test says so and skips.
#[test]
fn kubectl_diff_shows_the_change() {
    let (_root, _block, s) = start_ready_server("kdiff", &[], READY);
    let (code, _) = s.api("GET", "/openapi/v3", None, "application/json");
    if code == 404 {
        skip(
            "kubectl_diff_shows_the_change",
            "the server serves no /openapi/v3 yet (kubectl diff needs it)",
        );
        return;
    }
    let k = &s.kubeconfig;
    kubectl_ok(k, &["create", "configmap", "d1", "--from-literal=k1=live"]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("changed.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d1\n  namespace: default\ndata:\n  k1: changed\n",
    )
    .unwrap();
    let mut versions: Vec<String> = (29..=33)
        .map(|m| format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}"))
        .filter(|p| Path::new(p).exists())
        .collect();
    if versions.is_empty() {
        versions.push("kubectl".into());
    }
    for bin in &versions {
        let out = kubectl_bin(bin, k, &["diff", "-f", &manifest.display().to_string()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{bin} diff: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("-  k1: live") && text.contains("+  k1: changed"),
            "{bin} diff: {text}"
        );
    }
    assert_eq!(configmap_data(&s, "d1")["k1"], "live");
}

/// Every kubectl installed (1.27-1.33 and the default one), each with its own cache.
fn kubectl_versions() -> Vec<String> {
    let mut bins: Vec<String> = (27..=33)
        .map(|m| format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}"))
        .filter(|p| Path::new(p).exists())
        .collect();
    bins.push("kubectl".into());
    bins
}

fn run_kubectl(bin: &str, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = kubectl_bin(bin, kubeconfig, args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `kubectl auth can-i --list` (SelfSubjectRulesReview, protobuf from 1.32 on) and `kubectl
/// auth whoami` (v1beta1 on 1.27, v1 later) work on every kubectl installed; a node's rules
/// are its node-authorizer policy.
#[test]
fn auth_can_i_list_and_whoami() {
    let (_root, _block, s) = start_ready_server("authl", &[], READY);
    let k = &s.kubeconfig;
    for bin in kubectl_versions() {
        let (ok, out) = run_kubectl(&bin, k, &["auth", "can-i", "--list"]);
        assert!(ok, "{bin} auth can-i --list: {out}");
        let first: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            first,
            [
                "Resources",
                "Non-Resource",
                "URLs",
                "Resource",
                "Names",
                "Verbs"
            ],
            "{bin}: {out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("*.*") && l.contains("[*]")),
            "{bin}: {out}"
        );
        let (ok, out) = run_kubectl(&bin, k, &["auth", "whoami", "-o", "json"]);
        assert!(ok, "{bin} auth whoami: {out}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{bin}: {e}: {out}"));
        assert_eq!(v["kind"], "SelfSubjectReview", "{bin}: {out}");
        assert!(
            v["status"]["userInfo"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == "system:masters"),
            "{bin}: {out}"
        );
    }

    // The node's own rules, with its kubelet client certificate.
    let agent = s.data_dir().join("agent");
    let (cert, key) = (
        agent.join("client-kubelet.crt"),
        agent.join("client-kubelet.key"),
    );
    let review = |ns: &str| -> Value {
        let body = format!(
            r#"{{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{{"namespace":"{ns}"}}}}"#
        );
        let (code, text) = curl(
            &format!(
                "https://{}:6443/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                s.ip
            ),
            &s.ca(),
            &[
                "--cert",
                &cert.display().to_string(),
                "--key",
                &key.display().to_string(),
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                &body,
            ],
        );
        assert_eq!(code, 201, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let rules_for = |v: &Value, resource: &str| -> Vec<Value> {
        v["status"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .cloned()
            .collect()
    };
    let lease_ns = review("kube-node-lease");
    let leases = rules_for(&lease_ns, "leases");
    assert!(
        leases
            .iter()
            .any(|r| r["resourceNames"] == serde_json::json!(["authl"])
                && r["verbs"].as_array().unwrap().iter().any(|v| v == "update")),
        "{lease_ns}"
    );
    assert!(rules_for(&lease_ns, "secrets").is_empty(), "{lease_ns}");
    let default_ns = review("default");
    assert!(
        rules_for(&default_ns, "leases").iter().all(|r| !r["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "update")),
        "a node may write its lease only in kube-node-lease: {default_ns}"
    );
}

/// Streams a raw watch through curl (admin certificate) into a channel of JSON events.
fn watch_events(s: &ServerNode, path: &str) -> (std::process::Child, mpsc::Receiver<Value>) {
    let tls = s.data_dir().join("server/tls");
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "120", "--cacert"])
        .arg(s.ca())
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .arg(format!("https://{}:6443{path}", s.ip))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

/// Kills a curl child when dropped, also on a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl delete ns` with contents: the namespace goes Terminating (a watcher sees it), its
/// contents are removed, the `kubernetes` finalizer is removed, then it is DELETED. A namespace
/// held by another finalizer stays Terminating with upstream's conditions and refuses new
/// content with upstream's 403.
#[test]
fn namespace_deletion_goes_through_terminating() {
    let (_root, _block, s) = start_ready_server("nsdel", &[], READY);
    let k = &s.kubeconfig;
    kubectl_ok(k, &["create", "namespace", "x"]);
    let ns: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "ns", "x", "-o", "json"])).unwrap();
    assert_eq!(
        ns["spec"]["finalizers"],
        serde_json::json!(["kubernetes"]),
        "{ns}"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    kubectl_ok(
        k,
        &["-n", "x", "create", "configmap", "c1", "--from-literal=a=1"],
    );
    kubectl_ok(
        k,
        &[
            "-n",
            "x",
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=a=1",
        ],
    );

    // A dry-run delete answers the Terminating namespace and changes nothing.
    let (code, v) = api_json(
        &s,
        "DELETE",
        "/api/v1/namespaces/x?dryRun=All",
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["phase"], "Terminating", "{v}");
    let live: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "ns", "x", "-o", "json"])).unwrap();
    assert_eq!(live["status"]["phase"], "Active", "{live}");
    assert!(live["metadata"]["deletionTimestamp"].is_null(), "{live}");

    let rv = live["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let (child, events) = watch_events(
        &s,
        &format!("/api/v1/namespaces?watch=1&fieldSelector=metadata.name%3Dx&resourceVersion={rv}"),
    );
    let _curl = KillOnDrop(child);
    // kubectl waits until the namespace is gone.
    let out = kubectl_ok(k, &["delete", "namespace", "x", "--timeout=60s"]);
    assert!(out.contains("namespace \"x\" deleted"), "{out}");
    let mut seen = Vec::new();
    let deleted = loop {
        let ev = events
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no DELETED event; saw {seen:?}"));
        let kind = ev["type"].as_str().unwrap_or_default().to_string();
        let phase = ev["object"]["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.push(format!("{kind}({phase})"));
        if kind == "DELETED" {
            break ev;
        }
    };
    assert_eq!(
        seen.first().map(String::as_str),
        Some("MODIFIED(Terminating)"),
        "{seen:?}"
    );
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|e| e == "MODIFIED(Terminating)"),
        "{seen:?}"
    );
    assert_eq!(
        deleted["object"]["spec"]["finalizers"],
        serde_json::json!([]),
        "{deleted}"
    );
    for prefix in ["/registry/configmaps/x/", "/registry/secrets/x/"] {
        let out = etcdctl(&s, &["get", prefix, "--prefix", "--keys-only"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{prefix} still holds {:?}",
            out
        );
    }

    // A namespace held by another finalizer (set through /finalize) stays Terminating.
    kubectl_ok(k, &["create", "namespace", "y"]);
    kubectl_ok(k, &["-n", "y", "create", "configmap", "c1"]);
    let mut y: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "ns", "y", "-o", "json"])).unwrap();
    y["spec"]["finalizers"] = serde_json::json!(["kubernetes", "example.com/hold"]);
    let (code, v) = api_json(
        &s,
        "PUT",
        "/api/v1/namespaces/y/finalize",
        Some(&y.to_string()),
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["spec"]["finalizers"],
        serde_json::json!(["kubernetes", "example.com/hold"])
    );
    // Later writes need no resourceVersion precondition.
    y["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    y["spec"]["finalizers"] = serde_json::json!(["nodomain"]);
    let (code, v) = api_json(
        &s,
        "PUT",
        "/api/v1/namespaces/y/finalize",
        Some(&y.to_string()),
        "application/json",
    );
    assert_eq!(code, 422, "{v}");
    kubectl_ok(k, &["delete", "namespace", "y", "--wait=false"]);
    let held = wait_for(WAIT, "y finalized by the controller", || {
        let v: Value =
            serde_json::from_str(&kubectl_ok(k, &["get", "ns", "y", "-o", "json"])).ok()?;
        (v["spec"]["finalizers"] == serde_json::json!(["example.com/hold"])).then_some(v)
    });
    assert_eq!(held["status"]["phase"], "Terminating", "{held}");
    let conditions: Vec<&str> = held["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(conditions.contains(&"NamespaceContentRemaining"), "{held}");
    assert!(
        conditions.contains(&"NamespaceDeletionContentFailure"),
        "{held}"
    );
    let out = kubectl(k, &["-n", "y", "create", "configmap", "late"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "configmaps \"late\" is forbidden: unable to create new content in namespace y because it is being terminated"
        ),
        "{err}"
    );
    let names = kubectl_ok(k, &["-n", "y", "get", "configmaps", "-o", "name"]);
    assert!(names.trim().is_empty(), "content left in y: {names}");
    // Releasing the last finalizer lets the controller delete it.
    let mut y = held.clone();
    y["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    y["spec"]["finalizers"] = serde_json::json!([]);
    let (code, v) = api_json(
        &s,
        "PUT",
        "/api/v1/namespaces/y/finalize",
        Some(&y.to_string()),
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    wait_for(WAIT, "namespace y gone", || {
        let out = kubectl(k, &["get", "ns", "y"]);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
            .then_some(())
    });
}

/// The stored Events of namespace `default` as core/v1 JSON.
fn default_events(k: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&kubectl_ok(
        k,
        &["get", "events", "-n", "default", "-o", "json"],
    ))
    .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn find_event<'a>(events: &'a [Value], node: &str, reason: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["reason"] == reason && e["involvedObject"]["name"] == node)
}

/// The granted TTL (seconds) of the etcd lease `key` is attached to (0 without a lease).
fn lease_ttl(s: &ServerNode, key: &str) -> i64 {
    let out = etcdctl(s, &["get", key, "-w", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("etcdctl get {key}: {e}: {out:?}"));
    let lease = v["kvs"][0]["lease"].as_i64().unwrap_or(0);
    if lease == 0 {
        return 0;
    }
    let out = etcdctl(
        s,
        &["lease", "timetolive", &format!("{lease:x}"), "-w", "json"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // etcdctl 3.4 spells it `granted-ttl`, later versions `grantedTTL`.
    v.get("granted-ttl")
        .or_else(|| v.get("grantedTTL"))
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no granted TTL in {v}"))
}

/// After a cluster start `kubectl get events -A` and `kubectl describe node` show the node's
/// registration and readiness (and its etcd member); cordoning twice counts one Event twice;
/// Events are served as events.k8s.io/v1 too and live `event-ttl` (an etcd lease).
#[test]
fn events_record_what_the_server_does() {
    let (_root, _block, s) = start_ready_server("evs", &[("event-ttl", "30m".into())], READY);
    let k = &s.kubeconfig;
    wait_node_ready(k, "evs", WAIT);
    let events = wait_for(WAIT, "registration, readiness and etcd events", || {
        let evs = default_events(k);
        (find_event(&evs, "evs", "RegisteredNode").is_some()
            && find_event(&evs, "evs", "NodeReady").is_some()
            && find_event(&evs, "evs", "ETCDMemberAdded").is_some())
        .then_some(evs)
    });
    let registered = find_event(&events, "evs", "RegisteredNode").unwrap();
    assert_eq!(registered["involvedObject"]["kind"], "Node");
    assert_eq!(
        registered["message"],
        "Node evs event: Registered Node evs in Controller"
    );
    assert_eq!(registered["count"], 1);
    let all = kubectl_ok(k, &["get", "events", "-A"]);
    assert!(
        all.contains("RegisteredNode") && all.contains("NodeReady") && all.contains("node/evs"),
        "{all}"
    );
    let describe = kubectl_ok(k, &["describe", "node", "evs"]);
    let section = describe.split("Events:").nth(1).unwrap_or_default();
    assert!(
        section.contains("RegisteredNode") && section.contains("NodeReady"),
        "{describe}"
    );

    // Dedup: cordon, uncordon, cordon → one NodeNotSchedulable Event with count 2.
    kubectl_ok(k, &["cordon", "evs"]);
    wait_for(WAIT, "NodeNotSchedulable", || {
        find_event(&default_events(k), "evs", "NodeNotSchedulable").map(|_| ())
    });
    kubectl_ok(k, &["uncordon", "evs"]);
    wait_for(WAIT, "NodeSchedulable", || {
        find_event(&default_events(k), "evs", "NodeSchedulable").map(|_| ())
    });
    kubectl_ok(k, &["cordon", "evs"]);
    let cordoned = wait_for(WAIT, "NodeNotSchedulable counted twice", || {
        let evs = default_events(k);
        find_event(&evs, "evs", "NodeNotSchedulable")
            .filter(|e| e["count"] == 2)
            .cloned()
    });
    let same = default_events(k)
        .iter()
        .filter(|e| e["reason"] == "NodeNotSchedulable")
        .count();
    assert_eq!(same, 1, "a repeated Event is one object");
    assert_ne!(cordoned["firstTimestamp"], Value::Null);

    // The same Event through events.k8s.io/v1.
    let name = cordoned["metadata"]["name"].as_str().unwrap();
    let (code, v1) = api_json(
        &s,
        "GET",
        &format!("/apis/events.k8s.io/v1/namespaces/default/events/{name}"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v1["regarding"]["name"], "evs", "{v1}");
    assert_eq!(
        v1["note"], "Node evs status is now: NodeNotSchedulable",
        "{v1}"
    );
    assert_eq!(v1["deprecatedCount"], 2, "{v1}");

    // Every Event write carries a lease of event-ttl (30m).
    let key = format!("/registry/events/default/{name}");
    assert_eq!(lease_ttl(&s, &key), 1800, "{key}");
    // ... also Events created through the API.
    let (code, created) = api_json(
        &s,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        Some(
            r#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"api-ev"},"eventTime":"2026-01-01T00:00:00.000000Z","reportingController":"test","reportingInstance":"t1","action":"Testing","reason":"Tested","type":"Normal","note":"hello","regarding":{"kind":"Node","name":"evs"}}"#,
        ),
        "application/json",
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(lease_ttl(&s, "/registry/events/default/api-ev"), 1800);
    let core: Value = serde_json::from_str(&kubectl_ok(
        k,
        &["get", "event", "api-ev", "-n", "default", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(core["message"], "hello", "{core}");
    assert_eq!(core["involvedObject"]["name"], "evs", "{core}");
}

/// A server that renews its leaf certificates at start (here: a new `tls-san`) records
/// `CertificateRenewed` on its Node; the first start (certificates generated) does not.
#[test]
fn certificate_renewal_is_an_event() {
    let (_root, _block, mut s) = start_ready_server("certev", &[], READY);
    let k = s.kubeconfig.clone();
    wait_for(WAIT, "RegisteredNode", || {
        find_event(&default_events(&k), "certev", "RegisteredNode").map(|_| ())
    });
    assert!(find_event(&default_events(&k), "certev", "CertificateRenewed").is_none());
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str("tls-san: renewed.example.internal\n");
    std::fs::write(&s.config, config).unwrap();
    s.restart(&[]);
    s.daemon.wait_log("ready:", READY);
    let ev = wait_for(WAIT, "CertificateRenewed", || {
        find_event(&default_events(&k), "certev", "CertificateRenewed").cloned()
    });
    assert_eq!(ev["source"]["component"], "pki", "{ev}");
    assert_eq!(ev["involvedObject"]["kind"], "Node", "{ev}");
}
