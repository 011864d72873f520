//! `kubectl rollout` against a real `rke2 server` and real etcd (issue 13, item 1): a rollout
//! that makes no progress fails `rollout status` at its progress deadline; `pause` holds a new
//! template back until `resume`; `restart` rolls a new ReplicaSet. With real pods (containerd),
//! `kubectl set image` on a 3-replica Deployment keeps at least `replicas - maxUnavailable`
//! pods ready at every moment a `kubectl get pods -w` watch reports, and `rollout undo` returns
//! to the previous ReplicaSet.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

/// What a `kubectl get pods -w --output-watch-events -o json` log shows: the number of ready
/// pods (Ready condition True, not being deleted) after each event, and every pod name.
fn replay(log: &str) -> (Vec<usize>, BTreeSet<String>) {
    let mut ready: BTreeMap<String, bool> = BTreeMap::new();
    let (mut counts, mut seen) = (Vec::new(), BTreeSet::new());
    for event in serde_json::Deserializer::from_str(log).into_iter::<serde_json::Value>() {
        let Ok(event) = event else { break };
        let pod = &event["object"];
        let Some(name) = pod["metadata"]["name"].as_str() else {
            continue;
        };
        seen.insert(name.to_string());
        if event["type"] == "DELETED" {
            ready.remove(name);
        } else {
            let is_ready = pod["metadata"]["deletionTimestamp"].is_null()
                && pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.insert(name.to_string(), is_ready);
        }
        counts.push(ready.values().filter(|r| **r).count());
    }
    (counts, seen)
}

/// Starts `kubectl get pods -l <selector> -w` with every event as JSON in `<dir>/watch.log`
/// (the guard kills it when dropped).
fn watch_pods(k: &std::path::Path, dir: &std::path::Path, selector: &str) -> Daemon {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(k)
        .arg("--cache-dir")
        .arg(dir.join("watch-cache"))
        .args([
            "get",
            "pods",
            "-l",
            selector,
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ]);
    Daemon::spawn("kubectl-watch", cmd, &dir.join("watch.log"))
}

/// The ready pods the watch saw last.
fn ready_now(watch: &Daemon) -> usize {
    replay(&watch.log_text()).0.last().copied().unwrap_or(0)
}

/// The ReplicaSets labelled `app=<app>`: (name, spec.replicas, revision annotation).
fn sets_of(k: &std::path::Path, app: &str) -> Vec<(String, i64, String)> {
    replica_set_rows(k, &["-l", &format!("app={app}")], |_| true)
        .into_iter()
        .map(|(name, replicas, revision, _)| (name, replicas, revision))
        .collect()
}

fn rollout_done(k: &std::path::Path, what: &str) {
    wait_for(RUN, &format!("rollout status {what}"), || {
        let out = kubectl(k, &["rollout", "status", what, "--timeout=10s"]);
        out.status.success().then_some(())
    });
}

const RUN: Duration = Duration::from_secs(180);

#[test]
fn set_image_keeps_ready_pods_within_max_unavailable_and_undo_returns() {
    use common::workloads::*;
    require_pod_runtime();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let name = "roll1";
    let images = root.path().join(name).join("data/agent/images");
    build_images(&root.path().join("build"), &images);
    tag_busybox(&images, "2");
    let _cleanup = NodeCleanup(root.path().join(name).join("data"));
    let mut s = start_server(name, block.ip(1), root.path(), &pod_settings(&block));
    s.daemon.wait_log("ready:", READY);
    let k = s.kubeconfig.clone();
    wait_node_ready(&k, name, READY);

    // maxSurge 0: every step takes a ready pod away, so the bound is exercised.
    apply_yaml(
        &k,
        root.path(),
        "roll",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: roll}}
spec:
  replicas: 3
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxUnavailable: 1, maxSurge: 0}}
  selector:
    matchLabels: {{app: roll}}
  template:
    metadata:
      labels: {{app: roll}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
        ),
    );
    rollout_done(&k, "deploy/roll");
    let first = sets_of(&k, "roll");
    assert_eq!(first.len(), 1, "{first:?}");
    let first_rs = first[0].0.clone();

    let watch = watch_pods(&k, root.path(), "app=roll");
    wait_for(READY, "the watch to see 3 ready pods", || {
        (ready_now(&watch) == 3).then_some(())
    });
    let armed = replay(&watch.log_text()).0.len();
    kubectl_ok(
        &k,
        &["set", "image", "deploy/roll", "c=docker.io/library/bb:2"],
    );
    rollout_done(&k, "deploy/roll");
    wait_for(READY, "the watch to see 3 ready pods again", || {
        (ready_now(&watch) == 3).then_some(())
    });
    let (counts, seen) = replay(&watch.log_text());
    assert!(seen.len() >= 6, "old and new pods seen: {seen:?}");
    assert_eq!(
        counts[armed..].iter().min(),
        Some(&2),
        "ready pods never below replicas - maxUnavailable, and the rollout used that room: {counts:?}"
    );
    let sets = sets_of(&k, "roll");
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(
        sets.iter()
            .any(|(n, replicas, rev)| *n != first_rs && *replicas == 3 && rev == "2"),
        "{sets:?}"
    );

    // Undo: back to the first ReplicaSet (as revision 3), within the same bound.
    kubectl_ok(&k, &["rollout", "undo", "deploy/roll"]);
    rollout_done(&k, "deploy/roll");
    wait_for(READY, "the first ReplicaSet back with 3 replicas", || {
        let sets = sets_of(&k, "roll");
        let back = sets
            .iter()
            .any(|(n, r, rev)| *n == first_rs && *r == 3 && rev == "3");
        let other_empty = sets.iter().all(|(n, r, _)| *n == first_rs || *r == 0);
        (back && other_empty && sets.len() == 2).then_some(())
    });
    wait_for(READY, "the watch to see 3 ready pods after undo", || {
        (ready_now(&watch) == 3).then_some(())
    });
    let (counts, _) = replay(&watch.log_text());
    assert_eq!(counts[armed..].iter().min(), Some(&2), "{counts:?}");
    let image = kubectl_ok(
        &k,
        &[
            "get",
            "deploy",
            "roll",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(image, BUSYBOX_IMAGE);
}
