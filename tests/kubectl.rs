//! The Kubernetes API driven by the real kubectl (issue: Kubernetes API on 6443 + node agent):
//! a real server with real etcd on its own loopback address.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(60);

fn start(name: &str, extra: &[(&'static str, String)]) -> (tempfile::TempDir, ServerNode) {
    let (root, _, s) = start_ready_server(name, extra, READY);
    (root, s)
}

/// A raw API request with the admin client certificate.
fn api(
    s: &ServerNode,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
) -> (u16, String) {
    s.api(method, path, body, content_type)
}

fn node_json(s: &ServerNode, name: &str) -> serde_json::Value {
    serde_json::from_str(&kubectl_ok(
        &s.kubeconfig,
        &["get", "node", name, "-o", "json"],
    ))
    .unwrap()
}

#[test]
fn kubectl_reads_the_cluster() {
    let started = Instant::now();
    let (_root, s) = start("k1", &[("token", "kubectl-token".into())]);
    let k = &s.kubeconfig;
    wait_node_ready(k, "k1", Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(30));
    let out = kubectl_ok(k, &["get", "nodes"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..3],
        &["k1", "Ready", "control-plane,etcd,master"],
        "{out}"
    );
    assert!(row[4].starts_with("v1.32."), "{out}");

    let wide = kubectl_ok(k, &["get", "nodes", "-o", "wide"]);
    assert!(
        wide.contains("INTERNAL-IP")
            && wide.contains("OS-IMAGE")
            && wide.contains(&s.ip.to_string()),
        "{wide}"
    );
    let yaml = kubectl_ok(k, &["get", "nodes", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: k1"),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "nodes", "-o", "json"])).unwrap();
    assert_eq!(json["items"][0]["metadata"]["name"], "k1");
    assert!(
        json["items"][0]["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let jp = kubectl_ok(
        k,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert_eq!(jp.trim(), "True");
    let describe = kubectl_ok(k, &["describe", "node", "k1"]);
    assert!(
        describe.contains("Roles:              control-plane,etcd,master"),
        "{describe}"
    );
    assert!(describe.contains("HolderIdentity:  k1"), "{describe}");
    let ns = kubectl_ok(k, &["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines().any(|l| l.starts_with(n) && l.contains("Active")),
            "{ns}"
        );
    }
    let leases = kubectl_ok(k, &["get", "leases", "-n", "kube-node-lease"]);
    assert!(
        leases.contains("HOLDER")
            && leases
                .lines()
                .any(|l| l.starts_with("k1 ") && l.contains(" k1 ")),
        "{leases}"
    );
    let resources = kubectl_ok(k, &["api-resources"]);
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("nodes") && l.contains(" no ")),
        "{resources}"
    );
    assert!(
        resources.contains("leases") && resources.contains("coordination.k8s.io/v1"),
        "{resources}"
    );
    let version = kubectl_ok(k, &["version"]);
    assert!(version.contains("Server Version: v1.32."), "{version}");
    assert_eq!(kubectl_ok(k, &["get", "--raw", "/readyz"]), "ok");
    assert_eq!(
        kubectl_ok(k, &["auth", "can-i", "list", "nodes"]).trim(),
        "yes"
    );
    let who = kubectl_ok(k, &["auth", "whoami"]);
    assert!(
        who.contains("system:admin") && who.contains("system:masters"),
        "{who}"
    );
    // The endpoints controller publishes ready servers (reconciled every 2 s).
    wait_for(Duration::from_secs(15), "kubernetes endpoints", || {
        let out = kubectl(k, &["get", "endpoints", "kubernetes", "-n", "default"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{}:6443", s.ip))
            .then_some(())
    });
}

#[test]
fn kubectl_changes_the_cluster() {
    let (_root, s) = start("k2", &[]);
    let k = &s.kubeconfig;
    wait_node_ready(k, "k2", Duration::from_secs(10));
    assert!(kubectl_ok(k, &["label", "node", "k2", "tier=web"]).contains("node/k2 labeled"));
    assert_eq!(node_json(&s, "k2")["metadata"]["labels"]["tier"], "web");
    assert!(kubectl_ok(k, &["label", "node", "k2", "tier-"]).contains("node/k2 unlabeled"));
    assert!(
        node_json(&s, "k2")["metadata"]["labels"]
            .get("tier")
            .is_none()
    );
    assert!(kubectl_ok(k, &["annotate", "node", "k2", "note=hello"]).contains("annotated"));
    assert_eq!(
        node_json(&s, "k2")["metadata"]["annotations"]["note"],
        "hello"
    );
    assert!(
        kubectl_ok(k, &["taint", "node", "k2", "dedicated=web:NoSchedule"])
            .contains("node/k2 tainted")
    );
    let taints = node_json(&s, "k2")["spec"]["taints"].clone();
    assert_eq!(
        taints,
        serde_json::json!([{"effect": "NoSchedule", "key": "dedicated", "value": "web"}])
    );
    assert!(kubectl_ok(k, &["taint", "node", "k2", "dedicated-"]).contains("untainted"));
    assert!(
        node_json(&s, "k2")["spec"]
            .get("taints")
            .is_none_or(|t| t.is_null() || t == &serde_json::json!([]))
    );
    assert!(kubectl_ok(k, &["cordon", "k2"]).contains("node/k2 cordoned"));
    assert!(kubectl_ok(k, &["get", "nodes"]).contains("Ready,SchedulingDisabled"));
    assert!(kubectl_ok(k, &["uncordon", "k2"]).contains("node/k2 uncordoned"));
    assert!(!kubectl_ok(k, &["get", "nodes"]).contains("SchedulingDisabled"));

    // Namespaces and secrets (kubectl sends these bodies as protobuf).
    assert!(kubectl_ok(k, &["create", "namespace", "team-a"]).contains("namespace/team-a created"));
    assert!(
        kubectl_ok(
            k,
            &[
                "create",
                "secret",
                "generic",
                "s1",
                "--from-literal=password=hunter2",
                "-n",
                "team-a"
            ]
        )
        .contains("secret/s1 created")
    );
    let yaml = kubectl_ok(k, &["get", "secret", "s1", "-n", "team-a", "-o", "yaml"]);
    assert!(
        yaml.contains("password: aHVudGVyMg==") && yaml.contains("type: Opaque"),
        "{yaml}"
    );
    assert!(kubectl_ok(k, &["delete", "namespace", "team-a"]).contains("deleted"));
    let out = kubectl(k, &["get", "secret", "s1", "-n", "team-a"]);
    assert!(!out.status.success());
    let out = kubectl(k, &["delete", "namespace", "kube-system"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("may not be deleted")
    );

    // Deleting the node: kubectl waits for 404, then the node agent registers it again.
    let uid = node_json(&s, "k2")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kubectl_ok(k, &["delete", "node", "k2"]).contains("node \"k2\" deleted"));
    wait_for(Duration::from_secs(20), "node re-registered", || {
        let out = kubectl(k, &["get", "node", "k2", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["metadata"]["uid"].as_str()? != uid).then_some(())
    });
    wait_node_ready(k, "k2", Duration::from_secs(20));
    // A server node's deletion must not remove the last etcd voter.
    let out = etcdctl(&s, &["member", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("k2-"));
}

#[test]
fn watch_reports_changes_and_resumes_from_a_revision() {
    let (_root, s) = start("k3", &[]);
    let k = s.kubeconfig.clone();
    wait_node_ready(&k, "k3", Duration::from_secs(10));
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&k)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["get", "nodes", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("header");
    assert!(first.starts_with("NAME"), "{first}");
    let row = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("initial row");
    assert!(row.starts_with("k3 "), "{row}");
    let rv_before = node_json(&s, "k3")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    kubectl_ok(&k, &["cordon", "k3"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500))
            && line.contains("SchedulingDisabled")
        {
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "kubectl get nodes --watch did not print the change");

    // Resume from the old revision: the missed change is delivered.
    kubectl_ok(&k, &["label", "node", "k3", "resumed=yes"]);
    let tls = s.data_dir().join("server/tls");
    let out = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "3"])
        .arg("--cacert")
        .arg(s.ca())
        .arg("--cert")
        .arg(tls.join("client-admin.crt"))
        .arg("--key")
        .arg(tls.join("client-admin.key"))
        .arg(format!(
            "https://{}:6443/api/v1/nodes?watch=1&resourceVersion={rv_before}",
            s.ip
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "MODIFIED" && e["object"]["spec"]["unschedulable"] == true),
        "{text}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "MODIFIED"
                && e["object"]["metadata"]["labels"]["resumed"] == "yes"),
        "{text}"
    );
    assert!(
        events.iter().all(|e| e["type"] != "BOOKMARK"),
        "no bookmarks unless asked"
    );

    // A revision older than the watch cache's window (which starts after the server's first
    // writes) and compacted in etcd gets 410 Expired. A compacted revision still inside the
    // window is served from memory, as upstream's cache does.
    let out = etcdctl(&s, &["endpoint", "status", "-w", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = status[0]["Status"]["header"]["revision"].as_i64().unwrap();
    assert!(etcdctl(&s, &["compact", &rev.to_string()]).status.success());
    let (code, body) = api(
        &s,
        "GET",
        "/api/v1/nodes?watch=1&resourceVersion=1&timeoutSeconds=2",
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    assert!(
        body.contains("\"type\":\"ERROR\"")
            && body.contains("\"code\":410")
            && body.contains("Expired"),
        "{body}"
    );
}

#[test]
fn concurrent_updates_with_one_resource_version_conflict() {
    let (_root, s) = start("k4", &[]);
    wait_node_ready(&s.kubeconfig, "k4", Duration::from_secs(10));
    let (code, body) = api(
        &s,
        "GET",
        "/api/v1/namespaces/default",
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    let ns: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut a = ns.clone();
    a["metadata"]["labels"]["writer"] = "a".into();
    let mut b = ns.clone();
    b["metadata"]["labels"]["writer"] = "b".into();
    let (ca, _) = api(
        &s,
        "PUT",
        "/api/v1/namespaces/default",
        Some(&a.to_string()),
        "application/json",
    );
    let (cb, bb) = api(
        &s,
        "PUT",
        "/api/v1/namespaces/default",
        Some(&b.to_string()),
        "application/json",
    );
    assert_eq!(ca, 200);
    assert_eq!(cb, 409, "{bb}");
    let st: serde_json::Value = serde_json::from_str(&bb).unwrap();
    assert_eq!(st["reason"], "Conflict");
    // A label with a stale --resource-version is refused too; without one it always applies.
    let out = kubectl(
        &s.kubeconfig,
        &[
            "label",
            "ns",
            "default",
            "x=1",
            &format!(
                "--resource-version={}",
                ns["metadata"]["resourceVersion"].as_str().unwrap()
            ),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Conflict"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl_ok(&s.kubeconfig, &["label", "ns", "default", "x=1"]);
}

fn issue_cert(
    s: &ServerNode,
    dir: &Path,
    cn: &str,
    orgs: &[&str],
    other_ca: bool,
) -> (PathBuf, PathBuf) {
    let tls = s.data_dir().join("server/tls");
    let ca = if other_ca {
        rke2::pki::CertAuthority::generate("rogue").unwrap()
    } else {
        rke2::pki::CertAuthority::load(&rke2::paths::CertPair {
            cert: tls.join("client-ca.crt"),
            key: tls.join("client-ca.key"),
        })
        .unwrap()
    };
    let (chain, key) = ca
        .issue_with_new_key(&rke2::pki::LeafSpec::client(cn, orgs))
        .unwrap();
    let (c, k) = (
        dir.join(format!("{cn}.crt").replace(':', "_")),
        dir.join(format!("{cn}.key").replace(':', "_")),
    );
    std::fs::write(&c, chain).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

#[test]
fn authentication_and_node_restriction() {
    let (root, s) = start("k5", &[]);
    wait_node_ready(&s.kubeconfig, "k5", Duration::from_secs(10));
    let url = format!("https://{}:6443/api/v1/nodes/k5", s.ip);
    let patch = r#"{"metadata":{"labels":{"evil":"yes"}}}"#;
    let (other_c, other_k) = issue_cert(
        &s,
        root.path(),
        "system:node:other",
        &["system:nodes"],
        false,
    );
    let as_cert = |c: &Path, k: &Path, method: &str, body: Option<&str>| {
        curl_as(&url, &s.ca(), c, k, method, body)
    };
    let (code, body) = as_cert(&other_c, &other_k, "PATCH", Some(patch));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("system:node:other") && body.contains("cannot patch"),
        "{body}"
    );
    let (code, _) = as_cert(&other_c, &other_k, "GET", None);
    assert_eq!(code, 200, "nodes may read nodes");
    let (own_c, own_k) = issue_cert(&s, root.path(), "system:node:k5", &["system:nodes"], false);
    let (code, _) = as_cert(&own_c, &own_k, "PATCH", Some(patch));
    assert_eq!(code, 200, "a node may patch itself");
    let (code, body) = curl(&url, &s.ca(), &[]);
    assert_eq!(code, 401, "{body}");
    let (user_c, user_k) = issue_cert(&s, root.path(), "bob", &["developers"], false);
    let (code, _) = as_cert(&user_c, &user_k, "GET", None);
    assert_eq!(code, 403);
    let (rogue_c, rogue_k) = issue_cert(&s, root.path(), "system:admin", &["system:masters"], true);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(s.ca())
        .arg("--cert")
        .arg(&rogue_c)
        .arg("--key")
        .arg(&rogue_k)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a certificate from another CA must fail the TLS handshake"
    );
    // kubectl with no credentials: "You must be logged in".
    let anon = root.path().join("anon.yaml");
    let ca_b64 = String::from_utf8(
        Command::new("base64")
            .arg("-w0")
            .arg(s.ca())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        &anon,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca_b64}\n    server: https://{}:6443\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: not-a-credential-this-server-accepts\n", s.ip),
    )
    .unwrap();
    let out = kubectl(&anon, &["get", "nodes"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be logged in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let (root, s) = start("k6", &[]);
    wait_node_ready(&s.kubeconfig, "k6", Duration::from_secs(10));
    let j = "application/json";
    let (code, body) = api(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("{not json"),
        j,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = api(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"c1"}}"#),
        j,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = api(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c1"}}"#),
        j,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = api(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1","labels":{"bad key!":"x"}}}"#,
        ),
        j,
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("metadata.labels"), "{body}");
    let (code, body) = api(
        &s,
        "PATCH",
        "/api/v1/nodes/k6",
        Some(r#"{"spec":{"taints":[{"key":"k","value":"v","effect":"Sometimes"}]}}"#),
        "application/merge-patch+json",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("spec.taints[0].effect"), "{body}");
    let big = root.path().join("big.json");
    std::fs::write(&big, format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#, "x".repeat(4 * 1024 * 1024))).unwrap();
    let (code, _) = api(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(&format!("@{}", big.display())),
        j,
    );
    assert_eq!(code, 413);
    let (code, _) = api(&s, "GET", "/api/v1/foos", None, j);
    assert_eq!(code, 404);
    // Nothing was stored.
    for name in ["c1", "big"] {
        let (code, _) = api(
            &s,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps/{name}"),
            None,
            j,
        );
        assert_eq!(code, 404, "{name} must not exist");
    }
    assert!(node_json(&s, "k6")["spec"].get("taints").is_none());
}
