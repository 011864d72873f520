//! Server-side apply with the real kubectl and the official Python client against a real
//! server: create and change by apply, a conflict between two field managers (409, then
//! `--force-conflicts`), and `metadata.managedFields` kept on every write.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);

/// `apply --server-side` (`--validate=false`: this test is about apply, not OpenAPI).
fn apply(k: &Path, manifest: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["apply", "--server-side", "--validate=false", "-f", "-"];
    args.extend_from_slice(extra);
    let out = kubectl_run(Path::new("kubectl"), k, &args, Some(manifest));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn managed(k: &Path, what: &[&str]) -> (Value, Vec<Value>) {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let obj: Value = serde_json::from_str(&kubectl_ok(k, &args)).unwrap();
    let mf = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (obj, mf)
}

fn entry<'a>(mf: &'a [Value], manager: &str, operation: &str) -> &'a Value {
    mf.iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .unwrap_or_else(|| panic!("no {manager}/{operation} entry in {mf:#?}"))
}

const CM_V1: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: ssa
  namespace: default
  labels: {app: web}
data:
  k: v1
  gone: soon
";

const CM_V2: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: ssa
  namespace: default
  labels: {app: web}
data:
  k: v2
";

const CM_OTHER: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: ssa, namespace: default}
data: {k: theirs}
";

#[test]
fn kubectl_server_side_apply_conflicts_and_managed_fields() {
    let (_root, _block, s) = start_ready_server("ssa1", &[], READY);
    let k = &s.kubeconfig;

    // Create by apply, then change: k updated, `gone` (no longer applied) removed.
    let (ok, out, err) = apply(k, CM_V1, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let (ok, out, err) = apply(k, CM_V2, &[]);
    assert!(ok, "{out}{err}");
    let (obj, mf) = managed(k, &["configmap", "ssa", "-n", "default"]);
    assert_eq!(obj["data"], serde_json::json!({"k": "v2"}), "{obj}");
    let e = entry(&mf, "kubectl", "Apply");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(e["apiVersion"], "v1");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    assert_eq!(
        e["fieldsV1"],
        serde_json::json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );

    // A second manager changing k conflicts; forced, it takes the field over.
    let (ok, out, err) = apply(k, CM_OTHER, &["--field-manager=other"]);
    assert!(!ok, "conflicting apply succeeded: {out}");
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.k"#),
        "{err}"
    );
    let (obj, _) = managed(k, &["configmap", "ssa", "-n", "default"]);
    assert_eq!(obj["data"]["k"], "v2", "a refused apply changed the object");
    let (ok, out, err) = apply(k, CM_OTHER, &["--field-manager=other", "--force-conflicts"]);
    assert!(ok, "{out}{err}");
    let (obj, mf) = managed(k, &["configmap", "ssa", "-n", "default"]);
    assert_eq!(obj["data"]["k"], "theirs");
    assert_eq!(
        entry(&mf, "other", "Apply")["fieldsV1"],
        serde_json::json!({"f:data": {"f:k": {}}})
    );
    assert_eq!(
        entry(&mf, "kubectl", "Apply")["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {"f:app": {}}}})
    );

    // Imperative writes are tracked too, under kubectl's manager names.
    kubectl_ok(k, &["create", "configmap", "imp", "--from-literal=a=b"]);
    kubectl_ok(k, &["label", "configmap", "imp", "tier=x"]);
    let (_, mf) = managed(k, &["configmap", "imp"]);
    assert_eq!(
        entry(&mf, "kubectl-create", "Update")["fieldsV1"],
        serde_json::json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        entry(&mf, "kubectl-label", "Update")["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
    );
    // Client-side apply (create, then a strategic merge patch) under its own manager.
    let csa = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: csa, namespace: default}\n";
    for value in ["1", "2"] {
        let manifest = format!("{csa}data: {{a: \"{value}\"}}\n");
        let out = kubectl_run(
            Path::new("kubectl"),
            k,
            &["apply", "--validate=false", "-f", "-"],
            Some(&manifest),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let (obj, mf) = managed(k, &["configmap", "csa"]);
    assert_eq!(obj["data"]["a"], "2");
    let e = entry(&mf, "kubectl-client-side-apply", "Update");
    assert_eq!(
        e["fieldsV1"]["f:data"],
        serde_json::json!({"f:a": {}}),
        "{e}"
    );
    // Default output hides them, as upstream's kubectl does.
    assert!(!kubectl_ok(k, &["get", "configmap", "imp", "-o", "yaml"]).contains("managedFields"));

    // An apply without fieldManager is refused (kubectl always sends one; curl does not).
    let tls = s.data_dir().join("server/tls");
    let (code, body) = curl(
        &format!(
            "https://{}:6443/api/v1/namespaces/default/configmaps/ssa",
            s.ip
        ),
        &s.ca(),
        &[
            "-X",
            "PATCH",
            "--cert",
            tls.join("client-admin.crt").to_str().unwrap(),
            "--key",
            tls.join("client-admin.key").to_str().unwrap(),
            "-H",
            "Content-Type: application/apply-patch+yaml",
            "--data-binary",
            CM_OTHER,
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("fieldManager is required"), "{body}");
}

/// `apply --server-side` with every kubectl installed (each its own manager, object and cache).
#[test]
fn every_kubectl_version_applies_server_side() {
    let (_root, _block, s) = start_ready_server("ssa3", &[], READY);
    for (v, bin) in installed_kubectls() {
        let v = v.replace('.', "-");
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: v{v}, namespace: default}}\ndata: {{k: x}}\n"
        );
        for _ in 0..2 {
            let out = kubectl_run(
                &bin,
                &s.kubeconfig,
                &["apply", "--server-side", "--validate=false", "-f", "-"],
                Some(&manifest),
            );
            assert!(
                out.status.success(),
                "{v}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (_, mf) = managed(&s.kubeconfig, &["configmap", &format!("v{v}")]);
        assert_eq!(
            entry(&mf, "kubectl", "Apply")["fieldsV1"],
            serde_json::json!({"f:data": {"f:k": {}}}),
            "{v}"
        );
    }
}

/// The venv with the official Python client, made under target/ on first use.
fn python_client() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-kubernetes");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has(&python) {
        return Some(python);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        skip("python_client_server_side_apply", "python3 -m venv failed");
        return None;
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "kubernetes"])
        .output()
        .expect("run pip");
    if !pip.status.success() {
        // The one allowed skip, even under RKE2_TEST_REQUIRE: the package index is out of
        // reach, which no install step on this machine can fix.
        eprintln!(
            "SKIPPED python_client_server_side_apply: pip install kubernetes failed (no \
             network?): {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        return None;
    }
    has(&python).then_some(python)
}

const PY_APPLY: &str = r#"
import json, sys
from kubernetes import config, dynamic
from kubernetes.client import api_client
client = dynamic.DynamicClient(api_client.ApiClient(configuration=config.load_kube_config(sys.argv[1])))
cms = client.resources.get(api_version="v1", kind="ConfigMap")
body = {"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "py-ssa", "namespace": "default"}, "data": {"x": "1"}}
obj = cms.server_side_apply(body=body, namespace="default", field_manager="py-mgr")
body["data"]["x"] = "2"
obj = cms.server_side_apply(body=body, namespace="default", field_manager="py-mgr")
print(json.dumps(obj.to_dict()))
"#;

#[test]
fn python_client_server_side_apply() {
    let Some(python) = python_client() else {
        return;
    };
    let (_root, _block, s) = start_ready_server("ssa2", &[], READY);
    let out = Command::new(&python)
        .arg("-c")
        .arg(PY_APPLY)
        .arg(&s.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let obj: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(obj["data"]["x"], "2", "{obj}");
    let mf = obj["metadata"]["managedFields"].as_array().unwrap();
    let e = entry(mf, "py-mgr", "Apply");
    assert_eq!(e["fieldsV1"], serde_json::json!({"f:data": {"f:x": {}}}));
}
