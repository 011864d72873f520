//! Scheduling, pod CIDRs, taint-based eviction and the pod API with the real `rke2` binary,
//! real etcd and the real kubectl (issue 12 items 3, 6, 7, 8). Agents are real `rke2 agent`
//! processes; without a container runtime on them, pods are only placed (bound) and their API
//! objects checked, and deleting a pod on such a node removes it at once (docs/scheduling.md).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(60);

fn pod_json(k: &Path, name: &str) -> Option<Value> {
    let out = kubectl(k, &["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn node_of(k: &Path, name: &str) -> String {
    pod_json(k, name)
        .and_then(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn apply(k: &Path, dir: &Path, file: &str, yaml: &str) -> std::process::Output {
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    kubectl(
        k,
        &["apply", "--validate=false", "-f", path.to_str().unwrap()],
    )
}

fn pod_yaml(name: &str, labels: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n{extra_spec}---\n"
    )
}

/// `kubectl get pods --field-selector <selector> -o name`, trimmed.
fn pods_where(k: &Path, selector: &str) -> String {
    kubectl_ok(
        k,
        &["get", "pods", "--field-selector", selector, "-o", "name"],
    )
    .trim()
    .to_string()
}

/// `kubectl wait --for=condition=PodScheduled pod/<name>`.
fn wait_scheduled(k: &Path, name: &str) {
    kubectl_ok(
        k,
        &[
            "wait",
            "--for=condition=PodScheduled",
            &format!("pod/{name}"),
            "--timeout=60s",
        ],
    );
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// 1 server tainted `CriticalAddonsOnly=true:NoExecute` + 2 agents: placement by taints,
/// tolerations and node selectors, cordon, upstream's unschedulable message and event, drain
/// through evictions, taint-based eviction, pod CIDRs, the pod API through kubectl.
#[test]
fn pods_land_where_taints_cordons_and_selectors_allow() {
    let (root, block, s) = start_ready_server(
        "sch1",
        &[
            ("token", "sched-token".into()),
            ("node-taint[]", "CriticalAddonsOnly=true:NoExecute".into()),
            ("cluster-cidr", "198.18.0.0/16".into()),
            ("service-cidr", "198.19.0.0/16".into()),
        ],
        READY,
    );
    let k = &s.kubeconfig;
    let mut agents = Vec::new();
    for (i, name) in ["sch1-a1", "sch1-a2"].iter().enumerate() {
        agents.push(start_agent(
            name,
            block.ip(2 + i as u8),
            root.path(),
            &s.supervisor(),
            "sched-token",
            &[],
        ));
    }
    for n in ["sch1", "sch1-a1", "sch1-a2"] {
        wait_node_ready(k, n, READY);
    }

    // Each node gets its own /24 out of cluster-cidr.
    let cidrs: Vec<String> = ["sch1", "sch1-a1", "sch1-a2"]
        .iter()
        .map(|n| {
            wait_for(WAIT, &format!("podCIDR of {n}"), || {
                let c = kubectl_ok(k, &["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"]);
                (!c.is_empty()).then_some(c)
            })
        })
        .collect();
    for c in &cidrs {
        assert!(
            c.starts_with("198.18.") && c.ends_with(".0/24"),
            "{cidrs:?}"
        );
    }
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{cidrs:?}");

    // A 6-pod set lands only on the agents, spread over both.
    let set: String = (0..6)
        .map(|i| pod_yaml(&format!("web-{i}"), "app: web", ""))
        .collect();
    let out = apply(k, root.path(), "web.yaml", &set);
    assert!(out.status.success(), "{}", stderr(&out));
    kubectl_ok(
        k,
        &[
            "wait",
            "--for=condition=PodScheduled",
            "pod",
            "-l",
            "app=web",
            "--timeout=60s",
        ],
    );
    let wide = kubectl_ok(
        k,
        &["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"],
    );
    let mut per_node = std::collections::BTreeMap::new();
    for line in wide.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
        assert_eq!(cols.len(), 9, "{line}");
        assert_eq!(cols[1], "0/1");
        // Bound pods wait for an image the nodes do not have: the node runtime reports them as
        // creating or failing to pull, never running.
        assert!(
            [
                "Pending",
                "ContainerCreating",
                "ErrImagePull",
                "ImagePullBackOff"
            ]
            .contains(&cols[2]),
            "{line}"
        );
        *per_node.entry(cols[6].to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        per_node.into_iter().collect::<Vec<_>>(),
        vec![("sch1-a1".to_string(), 3), ("sch1-a2".to_string(), 3)]
    );
    let on_a1 = pods_where(k, "spec.nodeName=sch1-a1");
    assert_eq!(on_a1.lines().count(), 3, "{on_a1}");

    // A pod tolerating the taint may land on the server.
    let addon = pod_yaml(
        "addon",
        "app: addon",
        "  tolerations:\n  - key: CriticalAddonsOnly\n    operator: Exists\n  nodeSelector:\n    kubernetes.io/hostname: sch1\n",
    );
    assert!(apply(k, root.path(), "addon.yaml", &addon).status.success());
    wait_for(WAIT, "addon on the server", || {
        (node_of(k, "addon") == "sch1").then_some(())
    });

    // Cordoned agents take nothing: the pod gets upstream's message and event.
    kubectl_ok(k, &["cordon", "sch1-a1", "sch1-a2"]);
    assert!(
        apply(
            k,
            root.path(),
            "late.yaml",
            &pod_yaml("late", "app: late", "")
        )
        .status
        .success()
    );
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {CriticalAddonsOnly: true}, \
                    2 node(s) were unschedulable. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling..";
    let condition = wait_for(WAIT, "late unschedulable", || {
        let p = pod_json(k, "late")?;
        let c = p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")?
            .clone();
        (c["reason"] == "Unschedulable").then_some(c)
    });
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["message"], expected);
    let described = wait_for(WAIT, "FailedScheduling in describe", || {
        let d = kubectl_ok(k, &["describe", "pod", "late"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(described.contains(expected), "{described}");
    assert_eq!(node_of(k, "late"), "");
    // Uncordoning lets it through.
    kubectl_ok(k, &["uncordon", "sch1-a2"]);
    wait_for(WAIT, "late bound after uncordon", || {
        (node_of(k, "late") == "sch1-a2").then_some(())
    });
    // A request no node can meet: upstream's resource wording and preemption verdict.
    let huge = "    resources:\n      requests:\n        cpu: \"1000\"\n";
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n{huge}"
    );
    assert!(apply(k, root.path(), "huge.yaml", &yaml).status.success());
    let message = wait_for(WAIT, "huge unschedulable", || {
        let p = pod_json(k, "huge")?;
        p["status"]["conditions"][0]["message"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(
        message,
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {CriticalAddonsOnly: true}, \
         1 node(s) were unschedulable. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling.."
    );

    // Drain evicts a1's pods (policy/v1 evictions); without a runtime there they go at once.
    let out = kubectl(
        k,
        &[
            "drain",
            "sch1-a1",
            "--force",
            "--grace-period=5",
            "--timeout=60s",
        ],
    );
    assert!(
        out.status.success(),
        "drain: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let drained = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(drained.contains("evicted"), "{drained}");
    let left = pods_where(k, "spec.nodeName=sch1-a1");
    assert_eq!(left.trim(), "", "drained node keeps {left}");

    // Tainting a node NoExecute evicts the pods that do not tolerate it.
    let before = pods_where(k, "spec.nodeName=sch1-a2");
    assert!(before.lines().count() >= 4, "{before}");
    let tolerant = pod_yaml(
        "stays",
        "app: stays",
        "  nodeName: sch1-a2\n  tolerations:\n  - key: maintenance\n    operator: Equal\n    value: \"now\"\n    effect: NoExecute\n",
    );
    assert!(
        apply(k, root.path(), "stays.yaml", &tolerant)
            .status
            .success()
    );
    kubectl_ok(
        k,
        &["taint", "node", "sch1-a2", "maintenance=now:NoExecute"],
    );
    wait_for(WAIT, "a2's pods evicted", || {
        let left = pods_where(k, "spec.nodeName=sch1-a2");
        (left.trim() == "pod/stays").then_some(())
    });
    let events = kubectl_ok(
        k,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=TaintManagerEviction",
            "-o",
            "name",
        ],
    );
    assert!(events.lines().count() >= 4, "{events}");

    // Tainting the server later evicts the user pods on it (the addon tolerates the taint).
    let user = pod_yaml("on-server", "app: user", "  nodeName: sch1\n");
    assert!(apply(k, root.path(), "user.yaml", &user).status.success());
    wait_for(WAIT, "a user pod on the server is evicted", || {
        pod_json(k, "on-server").is_none().then_some(())
    });
    assert_eq!(node_of(k, "addon"), "sch1");
    drop(agents);
}

/// The pod API with kubectl: defaults and admission, 422s for common mistakes, the binding
/// subresource, deletion of unbound pods, field selectors, spec immutability.
#[test]
fn the_pod_api_defaults_validates_and_binds() {
    let (root, _block, s) = start_ready_server("sch2", &[("token", "sched2".into())], READY);
    let k = &s.kubeconfig;
    wait_node_ready(k, "sch2", READY);
    // The only node is cordoned: pods stay Pending until bound by hand.
    kubectl_ok(k, &["cordon", "sch2"]);
    // `kubectl run` with upstream's defaults and the default tolerations.
    kubectl_ok(
        k,
        &[
            "run",
            "r1",
            "--image=busybox:1.36",
            "--restart=Never",
            "--",
            "sleep",
            "3600",
        ],
    );
    let p = pod_json(k, "r1").unwrap();
    assert_eq!(p["spec"]["restartPolicy"], "Never");
    assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    let keys: Vec<&str> = p["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable"
        ]
    );

    // Invalid specs: upstream's 422 messages, nothing stored.
    for (name, spec, message) in [
        (
            "no-containers",
            "  containers: []\n",
            "The Pod \"no-containers\" is invalid: spec.containers: Required value",
        ),
        (
            "no-image",
            "  containers:\n  - name: c\n",
            "spec.containers[0].image: Required value",
        ),
        (
            "twins",
            "  containers:\n  - name: c\n    image: a\n  - name: c\n    image: b\n",
            "spec.containers[1].name: Duplicate value: \"c\"",
        ),
        (
            "sometimes",
            "  restartPolicy: Sometimes\n  containers:\n  - name: c\n    image: a\n",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            "odd-volume",
            "  volumes:\n  - name: v\n  containers:\n  - name: c\n    image: a\n",
            "spec.volumes[0]: Required value: must specify a volume type",
        ),
    ] {
        let yaml = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}");
        let out = apply(k, root.path(), &format!("{name}.yaml"), &yaml);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
        assert!(pod_json(k, name).is_none(), "{name} was stored");
    }

    // With no schedulable node the pod stays Pending; the binding subresource places it.
    let tls = s.data_dir().join("server/tls");
    let post = |path: &str, body: &str| {
        curl(
            &format!("https://{}:6443{path}", s.ip),
            &s.ca(),
            &[
                "-X",
                "POST",
                "--cert",
                tls.join("client-admin.crt").to_str().unwrap(),
                "--key",
                tls.join("client-admin.key").to_str().unwrap(),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    };
    // `kubectl get pods -w` follows the pod from creation to its binding.
    let cache = tempfile::tempdir().unwrap();
    let mut watch = std::process::Command::new("kubectl");
    watch
        .arg("--kubeconfig")
        .arg(k)
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "get",
            "pods",
            "-w",
            "-o",
            "wide",
            "--field-selector",
            "metadata.name=manual",
        ]);
    let mut watcher = Daemon::spawn("kubectl-watch", watch, &root.path().join("watch.log"));
    // Whether the pod exists before or after the watch starts, kubectl lists it first.
    kubectl_ok(
        k,
        &["run", "manual", "--image=busybox:1.36", "--restart=Never"],
    );
    watcher.wait_log("Pending", WAIT);
    wait_for(WAIT, "manual unschedulable", || {
        let p = pod_json(k, "manual")?;
        (p["status"]["conditions"][0]["reason"] == "Unschedulable").then_some(())
    });
    let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"manual"},"target":{"apiVersion":"v1","kind":"Node","name":"sch2"}}"#;
    let (code, body) = post("/api/v1/namespaces/default/pods/manual/binding", binding);
    assert_eq!(code, 201, "{body}");
    assert_eq!(node_of(k, "manual"), "sch2");
    // The watch shows the bound pod with its node in the wide NODE column.
    wait_for(WAIT, "the watch to show the binding", || {
        watcher
            .log_text()
            .lines()
            .any(|l| l.starts_with("manual") && l.split_whitespace().nth(6) == Some("sch2"))
            .then_some(())
    });
    drop(watcher);
    let (code, body) = post("/api/v1/namespaces/default/pods/manual/binding", binding);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("pod manual is already assigned to node \\\"sch2\\\""),
        "{body}"
    );
    let wide = pods_where(k, "spec.nodeName=sch2");
    assert_eq!(wide.trim(), "pod/manual");
    let pending = pods_where(k, "status.phase=Pending,metadata.name=r1");
    assert_eq!(pending.trim(), "pod/r1");

    // The spec is immutable but for images: moving a pod by PATCH is refused.
    let out = kubectl(
        k,
        &[
            "patch",
            "pod",
            "manual",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeName":"elsewhere"}}"#,
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pod updates may not change fields other than"),
        "{}",
        stderr(&out)
    );
    kubectl_ok(k, &["set", "image", "pod/manual", "manual=busybox:1.37"]);

    // Deleting: an unbound pod and a pod on a node without a runtime go at once.
    kubectl_ok(
        k,
        &[
            "delete",
            "pod",
            "r1",
            "manual",
            "--grace-period=10",
            "--timeout=30s",
        ],
    );
    assert!(pod_json(k, "r1").is_none() && pod_json(k, "manual").is_none());

    // On a Ready node reporting a container runtime (a hand-made Node standing in for one
    // running the node runtime), deletion is graceful: the pod shows Terminating until the
    // runtime's final zero-grace deletion (done here with --force --grace-period=0).
    let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: runtime-node\n";
    assert!(apply(k, root.path(), "node.yaml", node).status.success());
    let status = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"architecture":"amd64","bootID":"","containerRuntimeVersion":"containerd://1.7.0","kernelVersion":"","kubeProxyVersion":"","kubeletVersion":"v1.32.4","machineID":"","operatingSystem":"linux","osImage":"","systemUUID":""}}}"#;
    kubectl_ok(
        k,
        &[
            "patch",
            "node",
            "runtime-node",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    );
    let graceful = pod_yaml(
        "graceful",
        "app: g",
        "  nodeName: runtime-node\n  terminationGracePeriodSeconds: 45\n",
    );
    assert!(
        apply(k, root.path(), "graceful.yaml", &graceful)
            .status
            .success()
    );
    kubectl_ok(k, &["delete", "pod", "graceful", "--wait=false"]);
    let p = pod_json(k, "graceful").expect("still there while terminating");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 45);
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    let row = kubectl_ok(k, &["get", "pod", "graceful", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(2), Some("Terminating"), "{row}");
    kubectl_ok(
        k,
        &["delete", "pod", "graceful", "--force", "--grace-period=0"],
    );
    assert!(pod_json(k, "graceful").is_none());
}

/// A stopped agent: the lifecycle controller marks its node Unknown, the node gets the
/// `unreachable` NoExecute taint, and its pods go after their `tolerationSeconds`; pods with
/// the default 300 s stay.
#[test]
fn a_stopped_agent_is_tainted_and_its_pods_evicted() {
    let (root, block, s) = start_ready_server(
        "sch3",
        &[
            ("token", "sched3".into()),
            ("node-monitor-grace-period", "4s".into()),
        ],
        READY,
    );
    let k = &s.kubeconfig;
    let mut agent = start_agent(
        "sch3-a1",
        block.ip(2),
        root.path(),
        &s.supervisor(),
        "sched3",
        &[],
    );
    wait_node_ready(k, "sch3-a1", READY);
    let on_agent = "  nodeSelector:\n    kubernetes.io/hostname: sch3-a1\n";
    let short = format!(
        "{on_agent}  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: 5\n"
    );
    let yaml = pod_yaml("short", "app: a", &short) + &pod_yaml("patient", "app: a", on_agent);
    assert!(apply(k, root.path(), "pods.yaml", &yaml).status.success());
    kubectl_ok(
        k,
        &[
            "wait",
            "--for=condition=PodScheduled",
            "pod",
            "short",
            "patient",
            "--timeout=60s",
        ],
    );
    assert_eq!(node_of(k, "short"), "sch3-a1");

    agent.daemon.stop();
    let taint = wait_for(WAIT, "the unreachable taint", || {
        let t = kubectl_ok(
            k,
            &["get", "node", "sch3-a1", "-o", "jsonpath={.spec.taints}"],
        );
        t.contains("node.kubernetes.io/unreachable").then_some(t)
    });
    assert!(
        taint.contains("NoExecute") && taint.contains("timeAdded"),
        "{taint}"
    );
    wait_for(WAIT, "short evicted", || {
        pod_json(k, "short").is_none().then_some(())
    });
    assert!(
        pod_json(k, "patient").is_some(),
        "the default toleration keeps it for 300 s"
    );
    let events = kubectl_ok(
        k,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=short",
            "-o",
            "json",
        ],
    );
    assert!(events.contains("TaintManagerEviction"), "{events}");
}

/// The node name holding the `controllers` leadership key, as `server`'s etcd reports it.
fn controllers_leader(server: &ServerNode) -> String {
    let out = etcdctl(
        server,
        &["get", "/rke2/leader/controllers", "--print-value-only"],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Scheduling is leader-elected: with three servers only the `controllers` leader binds, and
/// when it stops another server takes over and binds the pods created afterwards; the new
/// leader's taint controller marks the stopped server's node `unreachable`.
#[test]
fn another_server_schedules_when_the_leader_stops() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let token = ("token", "sched-ha".to_string());
    let grace = ("node-monitor-grace-period", "4s".to_string());
    let mut servers = vec![start_server(
        "ha1",
        block.ip(1),
        root.path(),
        &[token.clone(), grace.clone()],
    )];
    servers[0].daemon.wait_log("ready:", READY);
    let join = [token, grace, ("server", servers[0].supervisor())];
    for (i, name) in ["ha2", "ha3"].iter().enumerate() {
        let s = start_server(name, block.ip(2 + i as u8), root.path(), &join);
        servers.push(s);
        servers.last_mut().unwrap().daemon.wait_log("ready:", READY);
    }
    let leader = wait_for(WAIT, "a controllers leader", || {
        Some(controllers_leader(&servers[0])).filter(|n| !n.is_empty())
    });
    let li = servers
        .iter()
        .position(|s| s.daemon.name == leader)
        .expect("the leader is one of ours");
    let survivor = (li + 1) % 3;
    let k = servers[survivor].kubeconfig.clone();
    for s in ["ha1", "ha2", "ha3"] {
        wait_node_ready(&k, s, READY);
    }
    // A pod on the leader's node, and one scheduled while it leads.
    let pinned = pod_yaml("pinned", "app: ha", &format!("  nodeName: {leader}\n"));
    assert!(
        apply(&k, root.path(), "pinned.yaml", &pinned)
            .status
            .success()
    );
    assert!(
        apply(
            &k,
            root.path(),
            "before.yaml",
            &pod_yaml("before", "app: ha", "")
        )
        .status
        .success()
    );
    wait_scheduled(&k, "before");

    assert_eq!(
        servers[li].daemon.stop(),
        Some(0),
        "{}",
        servers[li].daemon.log_tail()
    );
    let new_leader = wait_for(WAIT, "a new controllers leader", || {
        Some(controllers_leader(&servers[survivor])).filter(|n| !n.is_empty() && *n != leader)
    });
    assert_ne!(new_leader, leader);
    assert!(
        apply(
            &k,
            root.path(),
            "after.yaml",
            &pod_yaml("after", "app: ha", "")
        )
        .status
        .success()
    );
    wait_scheduled(&k, "after");
    assert_ne!(
        node_of(&k, "after"),
        leader,
        "the stopped server's node is not Ready"
    );
    // The new leader's taint manager: the stopped server's node goes unreachable, and its pod
    // stays (the default 300 s toleration).
    wait_for(WAIT, "the unreachable taint on the stopped server", || {
        let t = kubectl_ok(
            &k,
            &["get", "node", &leader, "-o", "jsonpath={.spec.taints}"],
        );
        t.contains("node.kubernetes.io/unreachable").then_some(())
    });
    assert!(pod_json(&k, "pinned").is_some());
}
