//! Cascading deletion and finalizers with real kubectl against a real `rke2 server` and real
//! etcd (issue 13, item 2): `--cascade=foreground` waits for the dependents and then the owner
//! goes, `--cascade=orphan` leaves the dependents without their owner reference, and any
//! object's finalizers hold its deletion until the last one is removed.

mod common;

use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);

/// A Deployment whose pods match no node, so they stay Pending (and go at once when deleted).
fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{example.com/none: "true"}}
      containers:
      - name: c
        image: registry.invalid/x:1
"#
    )
}

fn count(k: &std::path::Path, what: &str, selector: &str) -> usize {
    kubectl_ok(k, &["get", what, "-l", selector, "-o", "name"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn cascading_deletion_and_finalizers() {
    let (root, _block, s) = start_ready_server("cascade", &[], READY);
    let k = &s.kubeconfig;
    for name in ["fg", "orph"] {
        let file = root.path().join(format!("{name}.yaml"));
        std::fs::write(&file, deployment(name)).unwrap();
        kubectl_ok(k, &["apply", "-f", &file.display().to_string()]);
        wait_for(READY, "the Deployment's ReplicaSet and pods", || {
            (count(k, "rs", &format!("app={name}")) == 1
                && count(k, "pods", &format!("app={name}")) == 2)
                .then_some(())
        });
    }

    // Foreground: kubectl waits until the Deployment is gone, and by then so are its
    // ReplicaSet and pods.
    kubectl_ok(k, &["delete", "deploy", "fg", "--cascade=foreground"]);
    let left = kubectl(k, &["get", "deploy", "fg"]);
    assert!(!left.status.success(), "the Deployment is gone");
    assert_eq!(count(k, "rs", "app=fg"), 0);
    assert_eq!(count(k, "pods", "app=fg"), 0);

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, without the owner reference.
    kubectl_ok(k, &["delete", "deploy", "orph", "--cascade=orphan"]);
    wait_for(READY, "the orphaning Deployment to go", || {
        (!kubectl(k, &["get", "deploy", "orph"]).status.success()).then_some(())
    });
    let refs = kubectl_ok(
        k,
        &[
            "get",
            "rs",
            "-l",
            "app=orph",
            "-o",
            "jsonpath={.items[0].metadata.ownerReferences}",
        ],
    );
    assert_eq!(refs, "", "the ReplicaSet lost its owner reference");
    assert_eq!(count(k, "pods", "app=orph"), 2);

    // Finalizers hold any object: DELETE marks it, removing the last finalizer deletes it.
    kubectl_ok(k, &["create", "configmap", "held"]);
    kubectl_ok(
        k,
        &[
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/a","example.com/b"]}}"#,
        ],
    );
    kubectl_ok(k, &["delete", "configmap", "held", "--wait=false"]);
    let stamp = kubectl_ok(
        k,
        &[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ],
    );
    assert!(!stamp.is_empty(), "marked for deletion, still there");
    kubectl_ok(
        k,
        &[
            "patch",
            "configmap",
            "held",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        ],
    );
    assert!(kubectl(k, &["get", "configmap", "held"]).status.success());
    kubectl_ok(
        k,
        &[
            "patch",
            "configmap",
            "held",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    let gone = kubectl(k, &["get", "configmap", "held"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "the last finalizer's removal deleted it: {}",
        String::from_utf8_lossy(&gone.stderr)
    );
}
