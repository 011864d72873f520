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

/// The ReplicaSets owned by the Deployment with `uid`: (name, spec.replicas, revision, image).
fn sets_of(k: &std::path::Path, uid: &str) -> Vec<(String, i64, String, String)> {
    replica_set_rows(k, &[], |r| {
        r["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["uid"] == uid)
    })
}

/// Pods (not terminating) whose `app` label is `app`.
fn pods_labelled(k: &std::path::Path, app: &str) -> usize {
    let out = kubectl(
        k,
        &["get", "pods", "-l", &format!("app={app}"), "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .count()
}

#[test]
fn deployments_roll_out_undo_and_delete_with_their_dependents() {
    let (_root, _block, s) = start_ready_server("wl-deploy", &[], READY);
    let k = &s.kubeconfig;
    let long = Duration::from_secs(60);
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
    let uid = kubectl_ok(
        k,
        &["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"],
    );
    wait_for(long, "3 pods of web", || {
        (pods_labelled(k, "web") == 3).then_some(())
    });
    let sets = sets_of(k, &uid);
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (first_rs, _, rev, _) = sets[0].clone();
    assert_eq!(rev, "1");
    let hash = kubectl_ok(
        k,
        &[
            "get",
            "rs",
            &first_rs,
            "-o",
            "jsonpath={.metadata.labels.pod-template-hash}",
        ],
    );
    assert_eq!(first_rs, format!("web-{hash}"));
    wait_for(long, "deployment status", || {
        let st = kubectl_ok(
            k,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.status.replicas}/{.status.updatedReplicas}/{.status.observedGeneration}",
            ],
        );
        (st == "3/3/1").then_some(())
    });
    let conds = kubectl_ok(
        k,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ],
    );
    assert_eq!(conds, "Available Progressing");

    kubectl_ok(k, &["scale", "deploy", "web", "--replicas=5"]);
    wait_for(long, "5 pods of web", || {
        (pods_labelled(k, "web") == 5).then_some(())
    });

    // A new template: a new ReplicaSet with the next revision; pods never become ready here,
    // so the rollout stops where maxSurge/maxUnavailable allow, as upstream's would.
    kubectl_ok(k, &["set", "image", "deploy/web", "x=registry.invalid/x:2"]);
    wait_for(long, "a second ReplicaSet", || {
        let sets = sets_of(k, &uid);
        sets.iter()
            .any(|(_, n, rev, img)| img == "registry.invalid/x:2" && rev == "2" && *n > 0)
            .then_some(())
    });
    wait_for(long, "the surge bound", || {
        // maxSurge 25% of 5 rounds up to 2: at most 7 replicas in all.
        let total: i64 = sets_of(k, &uid).iter().map(|s| s.1).sum();
        (total == 7 || total == 6).then_some(())
    });
    let history = kubectl_ok(k, &["rollout", "history", "deploy/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    kubectl_ok(k, &["rollout", "undo", "deploy/web"]);
    wait_for(long, "the first ReplicaSet back as revision 3", || {
        let sets = sets_of(k, &uid);
        sets.iter()
            .any(|(name, _, rev, _)| *name == first_rs && rev == "3")
            .then_some(())
    });
    let image = kubectl_ok(
        k,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(image, "registry.invalid/x:1");
    assert_eq!(
        sets_of(k, &uid).len(),
        2,
        "no third ReplicaSet for an old template"
    );

    // Background deletion: the ReplicaSets and then the pods go.
    kubectl_ok(k, &["delete", "deploy", "web"]);
    wait_for(long, "web's ReplicaSets and pods gone", || {
        (sets_of(k, &uid).is_empty() && pods_labelled(k, "web") == 0).then_some(())
    });

    // Orphan deletion leaves the ReplicaSet and its pods, without the owner reference.
    kubectl_ok(
        k,
        &[
            "create",
            "deployment",
            "keep",
            "--image=registry.invalid/x:1",
            "--replicas=2",
        ],
    );
    let keep_uid = kubectl_ok(
        k,
        &["get", "deploy", "keep", "-o", "jsonpath={.metadata.uid}"],
    );
    wait_for(long, "2 pods of keep", || {
        (pods_labelled(k, "keep") == 2).then_some(())
    });
    kubectl_ok(k, &["delete", "deploy", "keep", "--cascade=orphan"]);
    let gone = kubectl(k, &["get", "deploy", "keep"]);
    assert!(!gone.status.success());
    // Give the collector every chance to (wrongly) act: wait for a later write to be processed.
    kubectl_ok(
        k,
        &[
            "create",
            "deployment",
            "probe",
            "--image=registry.invalid/x:1",
            "--replicas=1",
        ],
    );
    wait_for(long, "the probe's pod", || {
        (pods_labelled(k, "probe") == 1).then_some(())
    });
    assert_eq!(pods_labelled(k, "keep"), 2);
    let rs = kubectl_ok(k, &["get", "rs", "-l", "app=keep", "-o", "json"]);
    let rs: serde_json::Value = serde_json::from_str(&rs).unwrap();
    assert_eq!(rs["items"].as_array().unwrap().len(), 1);
    assert!(
        rs["items"][0]["metadata"]["ownerReferences"].is_null(),
        "{rs}"
    );
    assert!(sets_of(k, &keep_uid).is_empty());
}
