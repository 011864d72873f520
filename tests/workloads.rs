//! Pods on the real containerd, runc and CNI plugins (docs/workloads.md): a server node imports
//! test images the test builds itself from Debian's busybox-static (no network), runs a pod
//! bound to it with `spec.nodeName`, shows its pod IP, restarts a crashing container with
//! growing CrashLoopBackOff delays, reports a missing image as ErrImagePull/ImagePullBackOff,
//! survives `kill -9` of the daemon with its containers running and adopts them afterwards
//! (same container ID, no restart), serves `kubectl logs` through the API server, and stops a
//! deleted pod well within its grace period.
//! Pod networks stay in 198.18.0.0/15 with masquerading off; pulls only go to loopback.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

fn ctr_containers(data: &Path) -> Vec<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(data.join("agent/run/containerd.sock"))
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pods_run_on_containerd_and_survive_a_daemon_kill() {
    require_pod_runtime();
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let root = tempfile::tempdir().unwrap();
    let node = block.node_name("s1");
    let node_dir = root.path().join(&node);
    let data = node_dir.join("data");
    build_images(&root.path().join("build"), &data.join("agent/images"));
    let _cleanup = NodeCleanup(data.clone());
    let mut server = start_server(
        &node,
        ip,
        root.path(),
        &[
            ("cluster-cidr", "198.18.0.0/16".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", "rke2test/pause:1".into()),
        ],
    );
    let k = server.kubeconfig.clone();
    wait_node_ready(&k, &node, Duration::from_secs(90));
    // podCIDR allocation is the scheduler's (another branch): the test assigns one, a /28 in
    // 198.18.0.0/16 chosen from its own address block so parallel tests do not overlap.
    let octets = ip.octets();
    let cidr = format!("198.18.{}.{}/28", octets[1], (octets[2] % 16) * 16);
    kubectl_ok(
        &k,
        &[
            "patch",
            "node",
            &node,
            "-p",
            &format!(r#"{{"spec":{{"podCIDR":"{cidr}","podCIDRs":["{cidr}"]}}}}"#),
        ],
    );
    // The Node reports the real runtime.
    wait_for(Duration::from_secs(30), "containerRuntimeVersion", || {
        let out = kubectl(
            &k,
            &[
                "get",
                "node",
                &node,
                "-o",
                "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .starts_with("containerd://")
            .then_some(())
    });

    let marker = format!("rke2-test-{}", unique_suffix());
    apply_yaml(
        &k,
        root.path(),
        "web",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: docker.io/library/bb:1
    command: ["sh", "-c", "trap 'exit 0' TERM; echo hello from $MY_POD on $MY_NODE; while true; do sleep 1; done", "{marker}"]
    env:
    - {{name: MY_NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
"#
        ),
    );
    wait_for(Duration::from_secs(90), "pod web Running", || {
        (pod_field(&k, "web", ".status.phase") == "Running").then_some(())
    });
    let pod_ip = pod_field(&k, "web", ".status.podIP");
    let net: ipnet::Ipv4Net = cidr.parse().unwrap();
    assert!(
        net.contains(&pod_ip.parse::<std::net::Ipv4Addr>().unwrap()),
        "podIP {pod_ip} is not in the node's podCIDR {cidr}"
    );
    assert_eq!(pod_field(&k, "web", ".status.hostIP"), ip.to_string());
    assert_eq!(pod_field(&k, "web", ".status.qosClass"), "BestEffort");
    let wide = kubectl_ok(&k, &["get", "pod", "web", "-o", "wide", "--no-headers"]);
    assert!(wide.contains(&pod_ip) && wide.contains("1/1"), "{wide}");
    // The container's output is in its CRI log under the data dir.
    let logs = data.join("agent/pod-logs");
    wait_for(Duration::from_secs(20), "the container's log line", || {
        let dir = std::fs::read_dir(&logs).ok()?.flatten().next()?.path();
        let text = std::fs::read_to_string(dir.join("c/0.log")).ok()?;
        text.contains(&format!("stdout F hello from web on {node}"))
            .then_some(())
    });
    // kubectl logs through the server, proxied to the node's kubelet API.
    let out = kubectl_ok(&k, &["logs", "web"]);
    assert_eq!(out, format!("hello from web on {node}\n"));
    let out = kubectl_ok(&k, &["logs", "web", "--timestamps", "--tail=1"]);
    assert!(
        out.ends_with(&format!(" hello from web on {node}\n")) && out.starts_with("20"),
        "{out}"
    );
    let bad = kubectl(&k, &["logs", "web", "-c", "nope"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("container nope is not valid for pod web"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let container_id = pod_field(&k, "web", ".status.containerStatuses[0].containerID");
    assert!(container_id.starts_with("containerd://"), "{container_id}");

    // A crashing container restarts with growing back-off delays.
    apply_yaml(
        &k,
        root.path(),
        "crash",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: docker.io/library/bb:1
    command: ["sh", "-c", "echo dying; exit 3"]
"#
        ),
    );
    // A missing image (pulled from a loopback address nobody serves).
    let missing = format!("{}:1/nothing/here:1", block.ip(250));
    apply_yaml(
        &k,
        root.path(),
        "missing",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: {missing}\n"
        ),
    );
    wait_for(
        Duration::from_secs(60),
        "ErrImagePull/ImagePullBackOff",
        || {
            let reason = pod_field(
                &k,
                "missing",
                ".status.containerStatuses[0].state.waiting.reason",
            );
            (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(())
        },
    );
    let status = kubectl_ok(&k, &["get", "pod", "missing", "--no-headers"]);
    assert!(
        status.contains("ErrImagePull") || status.contains("ImagePullBackOff"),
        "{status}"
    );
    wait_for(
        Duration::from_secs(60),
        "CrashLoopBackOff with back-off 10s",
        || {
            let msg = pod_field(
                &k,
                "crash",
                ".status.containerStatuses[0].state.waiting.message",
            );
            let reason = pod_field(
                &k,
                "crash",
                ".status.containerStatuses[0].state.waiting.reason",
            );
            (reason == "CrashLoopBackOff" && msg.starts_with("back-off 10s")).then_some(())
        },
    );
    wait_for(
        Duration::from_secs(90),
        "the back-off doubling to 20s",
        || {
            let msg = pod_field(
                &k,
                "crash",
                ".status.containerStatuses[0].state.waiting.message",
            );
            msg.starts_with("back-off 20s").then_some(())
        },
    );
    let crash = kubectl_ok(&k, &["get", "pod", "crash", "--no-headers"]);
    assert_eq!(kubectl_ok(&k, &["logs", "crash"]), "dying\n");
    assert!(crash.contains("CrashLoopBackOff"), "{crash}");
    assert_eq!(
        pod_field(
            &k,
            "crash",
            ".status.containerStatuses[0].lastState.terminated.exitCode"
        ),
        "3"
    );

    // kill -9 of the daemon: the container keeps running; the restarted daemon adopts it.
    server.daemon.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !pids_matching(&marker).is_empty(),
        "the container died with the daemon"
    );
    server.restart(&[]);
    wait_node_ready(&k, &node, Duration::from_secs(90));
    wait_for(Duration::from_secs(60), "the adopted pod's status", || {
        let ready = pod_field(&k, "web", ".status.containerStatuses[0].ready");
        (ready == "true").then_some(())
    });
    // Give the node runtime a few syncs to (wrongly) recreate anything.
    let settle = Instant::now();
    wait_for(Duration::from_secs(30), "runtime settled", || {
        (settle.elapsed() > Duration::from_secs(4)).then_some(())
    });
    assert_eq!(
        pod_field(&k, "web", ".status.containerStatuses[0].containerID"),
        container_id,
        "the restarted daemon recreated the container"
    );
    assert_eq!(
        pod_field(&k, "web", ".status.containerStatuses[0].restartCount"),
        "0"
    );
    assert_eq!(pod_field(&k, "web", ".status.podIP"), pod_ip);

    // Deletion: the container gets SIGTERM and stops well within its 30 s grace period.
    let id = container_id.trim_start_matches("containerd://").to_string();
    assert!(ctr_containers(&data).contains(&id));
    kubectl_ok(&k, &["delete", "pod", "web", "--wait=false"]);
    wait_for(
        Duration::from_secs(25),
        "the container removed after delete",
        || {
            (!ctr_containers(&data).contains(&id) && pids_matching(&marker).is_empty())
                .then_some(())
        },
    );
    drop(server);
}
