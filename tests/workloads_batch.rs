//! DaemonSets, Jobs and CronJobs on real nodes with real containerd, judged by real kubectl
//! (issue 13, item 1): a DaemonSet lands on every node that tolerates it (the server, tainted
//! `CriticalAddonsOnly=true:NoExecute`, only when the DaemonSet tolerates that) and rolls a
//! template change out; a Job runs to completion (`kubectl wait --for=condition=complete`); a
//! failing Job stops at its backoffLimit; an Indexed Job runs each index once with its index
//! in env, label and hostname; a CronJob on `*/1 * * * *` fires and `timeZone` names are
//! checked against the system's tz database. A DaemonSet keeps ControllerRevisions, so
//! `kubectl rollout history|undo ds` work.
//! Pod networks are small ranges of 198.18.0.0/16 picked from each test's own address block,
//! so parallel tests never share a pod subnet; pulls never leave the machine.

mod common;

use std::path::Path;
use std::time::Duration;

use common::workloads::*;
use common::*;

const READY: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(180);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn apply(k: &Path, yaml: &str) {
    let out = kubectl_run(
        Path::new("kubectl"),
        k,
        &["apply", "--validate=false", "-f", "-"],
        Some(yaml),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn require_runtime() {
    for (tool, pkg) in [("containerd", "containerd"), ("runc", "runc")] {
        require_tool(tool, pkg);
    }
}

/// `node -> pods` of the pods whose controller has `uid` (not being deleted).
fn pods_by_node(k: &Path, uid: &str) -> Vec<(String, String)> {
    let out = kubectl(k, &["get", "pods", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut pods: Vec<(String, String)> = v["items"]
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
            (
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    pods.sort();
    pods
}

fn uid_of(k: &Path, kind: &str, name: &str) -> String {
    kubectl_ok(k, &["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
}

fn daemonset(name: &str, tolerations: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      tolerations: {tolerations}
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

#[test]
fn daemonsets_run_on_every_tolerating_node_and_roll_out() {
    require_runtime();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let (server, agent) = ("ds1", "ds1-a1");
    for node in [server, agent] {
        build_images(
            &root.path().join(format!("build-{node}")),
            &root.path().join(node).join("data/agent/images"),
        );
    }
    let _cleanup_server = NodeCleanup(root.path().join(server).join("data"));
    let _cleanup_agent = NodeCleanup(root.path().join(agent).join("data"));
    let mut extra = pod_settings(&block);
    extra.push(("token", "ds-token".into()));
    extra.push(("node-taint[]", "CriticalAddonsOnly=true:NoExecute".into()));
    let mut s = start_server(server, block.ip(1), root.path(), &extra);
    s.daemon.wait_log("ready:", READY);
    let _a = start_agent(
        agent,
        block.ip(2),
        root.path(),
        &s.supervisor(),
        "ds-token",
        &[("pause-image", PAUSE_IMAGE.into())],
    );
    let k = s.kubeconfig.clone();
    for n in [server, agent] {
        wait_node_ready(&k, n, READY);
    }

    apply(
        &k,
        &daemonset(
            "everywhere",
            r#"[{key: CriticalAddonsOnly, operator: Exists}]"#,
        ),
    );
    apply(&k, &daemonset("agents", "[]"));
    let everywhere = uid_of(&k, "ds", "everywhere");
    let agents = uid_of(&k, "ds", "agents");

    // kubectl's own rollout check: every desired pod updated and available.
    for ds in ["ds/everywhere", "ds/agents"] {
        wait_for(RUN, &format!("rollout status {ds}"), || {
            let out = kubectl(&k, &["rollout", "status", ds, "--timeout=10s"]);
            (out.status.success()).then_some(())
        });
    }
    let nodes =
        |uid: &str| -> Vec<String> { pods_by_node(&k, uid).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(nodes(&everywhere), [server, agent]);
    assert_eq!(
        nodes(&agents),
        [agent],
        "the tainted server only runs tolerating daemons"
    );
    let status = |name: &str, field: &str| {
        kubectl_ok(
            &k,
            &[
                "get",
                "ds",
                name,
                "-o",
                &format!("jsonpath={{.status.{field}}}"),
            ],
        )
    };
    assert_eq!(status("everywhere", "desiredNumberScheduled"), "2");
    assert_eq!(status("everywhere", "numberReady"), "2");
    assert_eq!(status("agents", "desiredNumberScheduled"), "1");
    assert_eq!(status("agents", "numberMisscheduled"), "0");

    // Upstream's columns, and describe works.
    let wide = kubectl_ok(&k, &["get", "ds", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let row = wide.lines().find(|l| l.starts_with("everywhere ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..6], ["2", "2", "2", "2", "2"], "{wide}");
    let described = kubectl_ok(&k, &["describe", "ds", "everywhere"]);
    assert!(
        described.contains("Desired Number of Nodes Scheduled: 2"),
        "{described}"
    );

    // A template change rolls out node by node to new pods on both nodes.
    let before = pods_by_node(&k, &everywhere);
    kubectl_ok(&k, &["set", "env", "ds/everywhere", "ROLLED=1"]);
    wait_for(RUN, "rollout of the changed template", || {
        let out = kubectl(&k, &["rollout", "status", "ds/everywhere", "--timeout=10s"]);
        (out.status.success()).then_some(())
    });
    let after = pods_by_node(&k, &everywhere);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );

    // Each template is a ControllerRevision: `rollout history` lists both, and shows the
    // first template without the new variable.
    let revisions = kubectl_ok(&k, &["get", "controllerrevisions", "-o", "wide"]);
    let header: Vec<&str> = revisions
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    assert!(
        revisions.contains("daemonset.apps/everywhere"),
        "{revisions}"
    );
    let history = kubectl_ok(&k, &["rollout", "history", "ds/everywhere"]);
    let numbers = |h: &str| -> Vec<String> {
        h.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.parse::<u32>().is_ok())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(numbers(&history), ["1", "2"], "{history}");
    let first = kubectl_ok(&k, &["rollout", "history", "ds/everywhere", "--revision=1"]);
    assert!(
        first.contains(BUSYBOX_IMAGE) && !first.contains("ROLLED"),
        "{first}"
    );
    let second = kubectl_ok(&k, &["rollout", "history", "ds/everywhere", "--revision=2"]);
    assert!(second.contains("ROLLED"), "{second}");

    // `rollout undo` (kubectl patches the template back from revision 1): the first template
    // becomes revision 3 and its pods replace the current ones on both nodes.
    let hash_of_revision = |n: i64| {
        let out = kubectl_ok(&k, &["get", "controllerrevisions", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["metadata"]["ownerReferences"][0]["name"] == "everywhere" && r["revision"] == n
            })
            .map(|r| {
                r["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    let first_hash = hash_of_revision(1).expect("revision 1");
    let out = kubectl_ok(&k, &["rollout", "undo", "ds/everywhere"]);
    assert!(out.contains("rolled back"), "{out}");
    let env = kubectl_ok(
        &k,
        &[
            "get",
            "ds",
            "everywhere",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env}",
        ],
    );
    assert!(!env.contains("ROLLED"), "{env}");
    wait_for(RUN, "rollout status after undo", || {
        let out = kubectl(&k, &["rollout", "status", "ds/everywhere", "--timeout=10s"]);
        (out.status.success()).then_some(())
    });
    let history = kubectl_ok(&k, &["rollout", "history", "ds/everywhere"]);
    assert_eq!(numbers(&history), ["2", "3"], "{history}");
    assert_eq!(hash_of_revision(3).as_deref(), Some(first_hash.as_str()));
    wait_for(RUN, "both daemon pods back on the first revision", || {
        let out = kubectl(&k, &["get", "pods", "-l", "app=everywhere", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let hashes: Vec<&str> = v["items"]
            .as_array()?
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["labels"]["controller-revision-hash"].as_str())
            .collect();
        (hashes == [first_hash.as_str(), first_hash.as_str()]).then_some(())
    });
}

#[test]
fn jobs_complete_or_stop_at_their_backoff_limit_and_cronjobs_fire() {
    require_runtime();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let name = "job1";
    build_images(
        &root.path().join("build"),
        &root.path().join(name).join("data/agent/images"),
    );
    let _cleanup = NodeCleanup(root.path().join(name).join("data"));
    let mut s = start_server(name, block.ip(1), root.path(), &pod_settings(&block));
    s.daemon.wait_log("ready:", READY);
    let k = s.kubeconfig.clone();
    wait_node_ready(&k, name, READY);

    // A Job that succeeds, made the usual way.
    kubectl_ok(
        &k,
        &[
            "create",
            "job",
            "ok",
            &format!("--image={BUSYBOX_IMAGE}"),
            "--",
            "sh",
            "-c",
            "echo job done",
        ],
    );
    // A Job whose pods always fail: two tries (backoffLimit 1), then Failed.
    apply(
        &k,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: bad}}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "echo failing; exit 3"]
"#
        ),
    );
    kubectl_ok(
        &k,
        &[
            "create",
            "cronjob",
            "tick",
            &format!("--image={BUSYBOX_IMAGE}"),
            "--schedule=*/1 * * * *",
            "--",
            "sh",
            "-c",
            "echo tick",
        ],
    );

    wait_for(RUN, "kubectl wait --for=condition=complete job/ok", || {
        let out = kubectl(
            &k,
            &[
                "wait",
                "--for=condition=complete",
                "job/ok",
                "--timeout=10s",
            ],
        );
        out.status.success().then_some(())
    });
    let logs = kubectl_ok(&k, &["logs", "job/ok"]);
    assert_eq!(logs, "job done\n");
    let row = kubectl_ok(&k, &["get", "job", "ok", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["ok", "Complete", "1/1"], "{row}");

    wait_for(RUN, "kubectl wait --for=condition=failed job/bad", || {
        let out = kubectl(
            &k,
            &["wait", "--for=condition=failed", "job/bad", "--timeout=10s"],
        );
        out.status.success().then_some(())
    });
    let reason = kubectl_ok(
        &k,
        &[
            "get",
            "job",
            "bad",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Failed")].reason}"#,
        ],
    );
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(
        kubectl_ok(
            &k,
            &["get", "job", "bad", "-o", "jsonpath={.status.failed}"]
        ),
        "2"
    );
    let tries = pods_by_node(&k, &uid_of(&k, "job", "bad"));
    assert_eq!(tries.len(), 2, "exactly backoffLimit + 1 pods: {tries:?}");

    // The CronJob fires within its first full minute (plus the pod's run).
    let cronjob = uid_of(&k, "cronjob", "tick");
    let fired = wait_for(Duration::from_secs(150), "a job of cronjob tick", || {
        let out = kubectl(&k, &["get", "jobs", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["items"].as_array()?.iter().find_map(|j| {
            let owned = j["metadata"]["ownerReferences"][0]["uid"] == cronjob.as_str();
            owned.then(|| {
                j["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        })
    });
    assert!(fired.starts_with("tick-"), "{fired}");
    wait_for(RUN, "the scheduled job completes", || {
        let out = kubectl(
            &k,
            &[
                "wait",
                "--for=condition=complete",
                &format!("job/{fired}"),
                "--timeout=10s",
            ],
        );
        out.status.success().then_some(())
    });
    assert_eq!(kubectl_ok(&k, &["logs", &format!("job/{fired}")]), "tick\n");
    let last = kubectl_ok(
        &k,
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ],
    );
    assert!(last.ends_with(":00Z"), "{last}");

    // An Indexed Job: one pod per index with the index in its env, label and hostname;
    // completedIndexes says which succeeded.
    apply(
        &k,
        &format!(
            r#"apiVersion: batch/v1
kind: Job
metadata: {{name: idx}}
spec:
  completionMode: Indexed
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=`cat /etc/hostname`"]
"#
        ),
    );
    wait_for(RUN, "kubectl wait --for=condition=complete job/idx", || {
        let out = kubectl(
            &k,
            &[
                "wait",
                "--for=condition=complete",
                "job/idx",
                "--timeout=10s",
            ],
        );
        out.status.success().then_some(())
    });
    assert_eq!(
        kubectl_ok(
            &k,
            &[
                "get",
                "job",
                "idx",
                "-o",
                "jsonpath={.status.completedIndexes} {.status.succeeded}"
            ]
        ),
        "0-2 3"
    );
    for index in 0..3 {
        let selector = format!(
            "batch.kubernetes.io/job-name=idx,batch.kubernetes.io/job-completion-index={index}"
        );
        let pods = kubectl_ok(&k, &["get", "pods", "-l", &selector, "-o", "name"]);
        let pod = pods
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no pod of index {index}"));
        assert_eq!(
            kubectl_ok(&k, &["logs", pod]),
            format!("index={index} host=idx-{index}\n")
        );
    }
    // Indexed needs completions: upstream's 422.
    let no_completions = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"idx2"},
      "spec":{"completionMode":"Indexed","parallelism":2,"template":{"spec":{
        "restartPolicy":"Never","containers":[{"name":"c","image":"x"}]}}}}"#;
    let out = kubectl_run(
        Path::new("kubectl"),
        &k,
        &["create", "--validate=false", "-f", "-"],
        Some(no_completions),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.completions: Required value: when completion mode is Indexed"),
        "{}",
        stderr(&out)
    );

    // CronJob time zones come from the system's tz database; unknown names get upstream's 422.
    let zoned = |zone: &str| {
        format!(
            r#"{{"apiVersion":"batch/v1","kind":"CronJob","metadata":{{"name":"zoned"}},
      "spec":{{"schedule":"0 9 * * *","timeZone":"{zone}","jobTemplate":{{"spec":{{"template":{{"spec":{{
        "restartPolicy":"Never","containers":[{{"name":"c","image":"x"}}]}}}}}}}}}}}}"#
        )
    };
    let out = kubectl_run(
        Path::new("kubectl"),
        &k,
        &["create", "--validate=false", "-f", "-"],
        Some(&zoned("Mars/Olympus")),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#
        ),
        "{}",
        stderr(&out)
    );
    let out = kubectl_run(
        Path::new("kubectl"),
        &k,
        &["create", "--validate=false", "-f", "-"],
        Some(&zoned("America/New_York")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let row = kubectl_ok(&k, &["get", "cronjob", "zoned", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..7],
        ["zoned", "0", "9", "*", "*", "*", "America/New_York"],
        "{row}"
    );

    // Upstream's columns for all three kinds, and describe works.
    let wide = kubectl_ok(&k, &["get", "job,cronjob", "-o", "wide"]);
    assert!(
        wide.contains("COMPLETIONS") && wide.contains("DURATION"),
        "{wide}"
    );
    assert!(
        wide.contains("SCHEDULE") && wide.contains("LAST SCHEDULE"),
        "{wide}"
    );
    assert!(wide.contains("*/1 * * * *"), "{wide}");
    for (kind, obj) in [("job", "ok"), ("cronjob", "tick")] {
        let out = kubectl(&k, &["describe", kind, obj]);
        assert!(out.status.success(), "describe {kind}: {}", stderr(&out));
    }
}
