//! apps/v1 workloads with real kubectl against a real `rke2 server` and real etcd (issue 13,
//! items 1, 2 and 6): Deployments and ReplicaSets are served with upstream's defaults,
//! validation, table columns and `scale` subresource.

mod common;

use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn deployments_are_served_with_defaults_scale_and_validation() {
    let (_root, _block, s) = start_ready_server("wl-kinds", &[], READY);
    let k = &s.kubeconfig;
    kubectl_ok(
        k,
        &[
            "create",
            "deployment",
            "web",
            "--image=registry.invalid/x:1",
            "--replicas=3",
        ],
    );
    let d = kubectl_ok(k, &["get", "deploy", "web", "-o", "json"]);
    let d: serde_json::Value = serde_json::from_str(&d).unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["metadata"]["generation"], 1);

    // Table columns as upstream prints them.
    let wide = kubectl_ok(k, &["get", "deploy", "web", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(wide.contains("registry.invalid/x:1"), "{wide}");
    assert!(wide.contains("app=web"), "{wide}");

    // kubectl scale goes through deployments/scale.
    let out = kubectl_ok(k, &["scale", "deploy", "web", "--replicas=5"]);
    assert!(out.contains("scaled"), "{out}");
    let replicas = kubectl_ok(
        k,
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    );
    assert_eq!(replicas, "5");
    let scale = kubectl_ok(
        k,
        &[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ],
    );
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let neg = s.kubectl(&["scale", "deploy", "web", "--replicas=-1"]);
    assert!(!neg.status.success());

    // The selector must select the template's labels: 422 with upstream's message.
    let bad = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"bad"},
      "spec":{"selector":{"matchLabels":{"app":"a"}},
              "template":{"metadata":{"labels":{"app":"b"}},
                          "spec":{"containers":[{"name":"c","image":"x"}]}}}}"#;
    let out = kubectl_run(
        std::path::Path::new("kubectl"),
        k,
        &["create", "--validate=false", "-f", "-"],
        Some(bad),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid")
            && err.contains("spec.template.metadata.labels")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    let rs = kubectl(k, &["get", "rs", "-o", "wide"]);
    assert!(
        rs.status.success(),
        "{}",
        String::from_utf8_lossy(&rs.stderr)
    );
    assert!(!stdout(&rs).contains("bad"));
}

/// Names of the pods whose controller is the object with `uid`.
fn pods_owned_by(k: &std::path::Path, uid: &str) -> Vec<String> {
    let out = kubectl(k, &["get", "pods", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"] == uid && r["controller"] == true)
        })
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn replicasets_keep_their_pods() {
    let (_root, _block, s) = start_ready_server("wl-rs", &[], READY);
    let k = &s.kubeconfig;
    let rs = r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{"name":"front"},
      "spec":{"replicas":3,"selector":{"matchLabels":{"app":"front"}},
              "template":{"metadata":{"labels":{"app":"front"}},
                          "spec":{"containers":[{"name":"c","image":"registry.invalid/x:1"}]}}}}"#;
    let out = kubectl_run(
        std::path::Path::new("kubectl"),
        k,
        &["create", "--validate=false", "-f", "-"],
        Some(rs),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uid = kubectl_ok(k, &["get", "rs", "front", "-o", "jsonpath={.metadata.uid}"]);
    wait_for(Duration::from_secs(60), "3 pods of the ReplicaSet", || {
        (pods_owned_by(k, &uid).len() == 3).then_some(())
    });
    for name in pods_owned_by(k, &uid) {
        assert!(name.starts_with("front-"), "{name}");
    }
    wait_for(Duration::from_secs(60), "status.replicas 3", || {
        let r = kubectl_ok(
            k,
            &["get", "rs", "front", "-o", "jsonpath={.status.replicas}"],
        );
        (r == "3").then_some(())
    });
    kubectl_ok(k, &["scale", "rs", "front", "--replicas=5"]);
    wait_for(Duration::from_secs(60), "5 pods", || {
        (pods_owned_by(k, &uid).len() == 5).then_some(())
    });
    kubectl_ok(k, &["scale", "rs", "front", "--replicas=2"]);
    wait_for(Duration::from_secs(60), "2 pods", || {
        (pods_owned_by(k, &uid).len() == 2).then_some(())
    });
    // A deleted pod is replaced.
    let victim = pods_owned_by(k, &uid)[0].clone();
    kubectl_ok(k, &["delete", "pod", &victim, "--wait=false"]);
    wait_for(Duration::from_secs(60), "a replacement pod", || {
        let pods = pods_owned_by(k, &uid);
        (pods.len() == 2 && !pods.contains(&victim)).then_some(())
    });
    let table = kubectl_ok(k, &["get", "rs", "front"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
}
