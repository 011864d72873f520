//! Issue 12's seed scenario on a local HA cluster with running pods: 3 servers tainted
//! `CriticalAddonsOnly=true:NoExecute` and 2 agents, every node with its own containerd and the
//! offline test images. A 6-pod Deployment runs only on the agents; a pod tolerating the taint
//! runs on a server; a server without the taint runs pods too, and tainting it again evicts them.
//! Pod networks are /29s from a /26 of 198.18.0.0/16 chosen from the test's own address block.

mod common;

use std::path::Path;
use std::time::Duration;

use common::workloads::*;
use common::*;

const WAIT: Duration = Duration::from_secs(180);

/// (name, phase, node) of the pods matching `selector`.
fn pods(k: &Path, selector: &str) -> Vec<(String, String, String)> {
    let out = kubectl_ok(
        k,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{"\n"}{end}"#,
        ],
    );
    out.lines()
        .filter_map(|l| {
            let mut c = l.split_whitespace();
            Some((
                c.next()?.to_string(),
                c.next().unwrap_or("").to_string(),
                c.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

fn pod(name: &str, app: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}}}\nspec:\n  terminationGracePeriodSeconds: 2\n{spec_extra}  containers:\n  - name: c\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

#[test]
fn user_pods_run_on_agents_and_leave_a_server_tainted_critical_addons_only() {
    require_pod_runtime();
    for (tool, pkg) in [("etcd", "etcd-server"), ("kubectl", "kubernetes-client")] {
        require_tool(tool, pkg);
    }
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let images = root.path().join("build/images");
    build_images(&root.path().join("build"), &images);
    let names = ["s1", "s2", "s3", "a1", "a2"];
    let mut cleanups = Vec::new();
    for n in names {
        let dest = root.path().join(n).join("data/agent/images");
        std::fs::create_dir_all(&dest).unwrap();
        for f in ["bb.tar", "pause.tar"] {
            std::fs::copy(images.join(f), dest.join(f)).unwrap();
        }
        cleanups.push(NodeCleanup(root.path().join(n).join("data")));
    }
    let ip1 = block.ip(1).octets();
    let cluster_cidr = format!("198.18.{}.{}/26", ip1[1], (ip1[2] % 4) * 64);
    let common = [
        ("token", "seed-token".to_string()),
        ("node-taint[]", "CriticalAddonsOnly=true:NoExecute".into()),
        ("cluster-cidr", cluster_cidr),
        ("service-cidr", "198.19.0.0/16".into()),
        ("node-cidr-mask-size", "29".into()),
        ("pause-image", PAUSE_IMAGE.into()),
    ];
    let mut servers = Vec::new();
    let s1 = start_server("s1", block.ip(1), root.path(), &common);
    let mut s1 = s1;
    s1.daemon.wait_log("ready:", WAIT);
    let mut join = common.to_vec();
    join.push(("server", s1.supervisor()));
    let k = s1.kubeconfig.clone();
    servers.push(s1);
    for (i, n) in ["s2", "s3"].iter().enumerate() {
        let mut s = start_server(n, block.ip(2 + i as u8), root.path(), &join);
        s.daemon.wait_log("ready:", WAIT);
        servers.push(s);
    }
    let token = servers[0].token();
    let supervisor = servers[0].supervisor();
    let agents: Vec<AgentNode> = ["a1", "a2"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            start_agent(
                n,
                block.ip(4 + i as u8),
                root.path(),
                &supervisor,
                &token,
                &[("pause-image", PAUSE_IMAGE.into())],
            )
        })
        .collect();
    for n in names {
        wait_node_ready(&k, n, WAIT);
    }

    // Six replicas, all Running, all on agents.
    apply_yaml(
        &k,
        root.path(),
        "web",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 6
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: {BUSYBOX_IMAGE}
        command: ["sleep", "3600"]
"#
        ),
    );
    let web = wait_for(WAIT, "6 web pods Running", || {
        let p = pods(&k, "app=web");
        (p.len() == 6 && p.iter().all(|(_, phase, _)| phase == "Running")).then_some(p)
    });
    for (name, _, node) in &web {
        assert!(node == "a1" || node == "a2", "{name} on {node}: {web:?}");
    }

    // A pod tolerating the taint runs on a server.
    apply_yaml(
        &k,
        root.path(),
        "addon",
        &pod(
            "addon",
            "addon",
            "  tolerations:\n  - {key: CriticalAddonsOnly, operator: Exists}\n  nodeSelector: {kubernetes.io/hostname: s1}\n",
        ),
    );
    wait_for(WAIT, "addon Running on s1", || {
        (pods(&k, "app=addon") == [("addon".into(), "Running".into(), "s1".into())]).then_some(())
    });

    // Without the taint a server runs user pods too ...
    kubectl_ok(&k, &["taint", "node", "s3", "CriticalAddonsOnly-"]);
    apply_yaml(
        &k,
        root.path(),
        "user",
        &pod(
            "user",
            "user",
            "  nodeSelector: {kubernetes.io/hostname: s3}\n",
        ),
    );
    wait_for(WAIT, "user pod Running on s3", || {
        (pods(&k, "app=user") == [("user".into(), "Running".into(), "s3".into())]).then_some(())
    });
    // ... and tainting it evicts them; the tolerating pod on s1 stays.
    kubectl_ok(
        &k,
        &["taint", "node", "s3", "CriticalAddonsOnly=true:NoExecute"],
    );
    wait_for(WAIT, "user pod evicted from s3", || {
        pods(&k, "app=user").is_empty().then_some(())
    });
    assert_eq!(
        pods(&k, "app=addon"),
        [("addon".into(), "Running".into(), "s1".into())]
    );
    let events = kubectl_ok(
        &k,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=TaintManagerEviction,involvedObject.name=user",
            "-o",
            "name",
        ],
    );
    assert!(!events.trim().is_empty(), "no eviction event");
    drop(agents);
    drop(servers);
    drop(cleanups);
}
