//! `kubectl rollout` against a real `rke2 server` and real etcd (issue 13, item 1): a rollout
//! that makes no progress fails `rollout status` at its progress deadline; `pause` holds a new
//! template back until `resume`; `restart` rolls a new ReplicaSet.

mod common;

use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);

fn replica_sets(k: &std::path::Path) -> usize {
    kubectl_ok(k, &["get", "rs", "-l", "app=slow", "-o", "name"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn rollout_deadline_pause_resume_and_restart() {
    let (root, _block, s) = start_ready_server("rollout", &[], READY);
    let k = &s.kubeconfig;
    // Its pods match no node, so they never become available: no progress.
    let file = root.path().join("slow.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: slow
spec:
  replicas: 2
  progressDeadlineSeconds: 3
  selector:
    matchLabels: {app: slow}
  template:
    metadata:
      labels: {app: slow}
    spec:
      nodeSelector: {example.com/none: "true"}
      containers:
      - name: c
        image: registry.invalid/x:1
"#,
    )
    .unwrap();
    kubectl_ok(k, &["apply", "-f", &file.display().to_string()]);
    let status = kubectl(k, &["rollout", "status", "deploy/slow", "--timeout=40s"]);
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success());
    assert!(
        err.contains("exceeded its progress deadline"),
        "rollout status: {err}\n{}",
        kubectl_ok(k, &["get", "deploy", "slow", "-o", "yaml"])
    );
    let reason = kubectl_ok(
        k,
        &[
            "get",
            "deploy",
            "slow",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Progressing")].reason}"#,
        ],
    );
    assert_eq!(reason, "ProgressDeadlineExceeded");

    // Paused: a new template makes no new ReplicaSet until resumed.
    kubectl_ok(k, &["rollout", "pause", "deploy/slow"]);
    kubectl_ok(
        k,
        &["set", "image", "deploy/slow", "c=registry.invalid/x:2"],
    );
    wait_for(READY, "the paused condition", || {
        let reason = kubectl_ok(
            k,
            &[
                "get",
                "deploy",
                "slow",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Progressing")].reason}"#,
            ],
        );
        (reason == "DeploymentPaused").then_some(())
    });
    assert_eq!(replica_sets(k), 1);
    kubectl_ok(k, &["rollout", "resume", "deploy/slow"]);
    wait_for(READY, "the resumed rollout's ReplicaSet", || {
        (replica_sets(k) == 2).then_some(())
    });

    // Restart: a new template annotation, so a new ReplicaSet.
    kubectl_ok(k, &["rollout", "restart", "deploy/slow"]);
    wait_for(READY, "the restarted rollout's ReplicaSet", || {
        (replica_sets(k) == 3).then_some(())
    });
    let history = kubectl_ok(k, &["rollout", "history", "deploy/slow"]);
    assert!(history.contains('3'), "{history}");
}
