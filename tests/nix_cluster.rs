//! The Nix topology drives a real cluster (issue: Nix): one topology is rendered per host by
//! `nix/tests/render-host.nix`, and those files, unchanged, start 3 servers + 1 agent on
//! loopback addresses behind HAProxy — the same checks as the HA test, driven by Nix.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const FORM: Duration = Duration::from_secs(90);

#[test]
fn nix_rendered_configs_start_a_working_cluster() {
    require_tool("nix-instantiate", "nix-bin");
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let token = root.path().join("token");
    fs::write(&token, "nix-cluster-token\n").unwrap();
    let dir = |n: &str| root.path().join(n);
    let server = |n: &str, i: u8| {
        serde_json::json!({
            "address": block.ip(i).to_string(),
            "settings": {
                "data-dir": dir(n).join("data").display().to_string(),
                "write-kubeconfig": dir(n).join("rke2.yaml").display().to_string(),
                "bind-address": block.ip(i).to_string(),
                "node-heartbeat-interval": "1s",
                "etcd-arg": ["heartbeat-interval=50", "election-timeout=500"],
            }
        })
    };
    let topology = serde_json::json!({
        "registrationAddress": block.ip(100).to_string(),
        "tokenFile": token.display().to_string(),
        "servers": {"s1": server("s1", 1), "s2": server("s2", 2), "s3": server("s3", 3)},
        "agents": {"a1": {
            "address": block.ip(11).to_string(),
            "labels": {"tier": "web"},
            "taints": ["dedicated=web:NoSchedule"],
            "settings": {
                "data-dir": dir("a1").join("data").display().to_string(),
                "lb-bind-address": block.ip(11).to_string(),
                "node-password-file": dir("a1").join("node-password").display().to_string(),
                "node-heartbeat-interval": "1s",
            }
        }},
    });
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--store", "dummy://"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/nix/tests/render-host.nix"
        ))
        .arg("--argstr")
        .arg("topologyJson")
        .arg(topology.to_string())
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let lb = Haproxy::start(
        block.ip(100),
        &[block.ip(1), block.ip(2), block.ip(3)],
        root.path(),
    );
    let started = Instant::now();
    let mut servers = Vec::new();
    for (i, name) in ["s1", "s2", "s3"].iter().enumerate() {
        let host = &hosts[*name];
        assert_eq!(host["role"], "server");
        assert_eq!(host["isInitServer"], i == 0);
        fs::create_dir_all(dir(name)).unwrap();
        let config = dir(name).join("config.yaml");
        fs::write(&config, host["yaml"].as_str().unwrap()).unwrap();
        let daemon = Daemon::start(name, "server", &config, &dir(name).join("log"), &[]);
        servers.push(ServerNode {
            daemon,
            ip: block.ip(i as u8 + 1),
            dir: dir(name),
            config,
            kubeconfig: dir(name).join("rke2.yaml"),
        });
    }
    assert_eq!(hosts["a1"]["role"], "agent");
    fs::create_dir_all(dir("a1")).unwrap();
    let agent_config = dir("a1").join("config.yaml");
    fs::write(&agent_config, hosts["a1"]["yaml"].as_str().unwrap()).unwrap();
    let _agent = Daemon::start("a1", "agent", &agent_config, &dir("a1").join("log"), &[]);

    servers[0].daemon.wait_log("ready:", FORM);
    let k = kubeconfig_via(
        &servers[0].kubeconfig,
        lb.ip,
        &root.path().join("via-lb.yaml"),
    );
    let all_ready = |names: &[&str]| {
        let out = kubectl(&k, &["get", "nodes", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        names.iter().all(|n| {
            text.lines().any(|l| {
                l.split_whitespace().next() == Some(n)
                    && l.split_whitespace().nth(1) == Some("Ready")
            })
        })
    };
    wait_for(FORM, "4 nodes Ready from the Nix-rendered configs", || {
        all_ready(&["s1", "s2", "s3", "a1"]).then_some(())
    });
    eprintln!("Nix-rendered cluster Ready after {:?}", started.elapsed());
    let a1: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&k, &["get", "node", "a1", "-o", "json"])).unwrap();
    assert_eq!(a1["metadata"]["labels"]["tier"], "web");
    assert_eq!(a1["spec"]["taints"][0]["key"], "dedicated");
    wait_for(FORM, "3 voting members", || {
        let m = etcd_members(&servers[0])?;
        (m.iter().filter(|(n, l)| !l && !n.is_empty()).count() == 3).then_some(())
    });

    // One server lost: the cluster still answers and the agent stays Ready.
    kubectl_ok(&k, &["create", "configmap", "before", "--from-literal=a=b"]);
    servers[1].daemon.kill9();
    wait_for(Duration::from_secs(30), "writes after losing s2", || {
        kubectl(
            &k,
            &[
                "create",
                "configmap",
                &format!("after-{}", started.elapsed().as_millis()),
                "--from-literal=a=b",
            ],
        )
        .status
        .success()
        .then_some(())
    });
    assert!(
        kubectl_ok(&k, &["get", "configmap", "before", "-o", "name"]).contains("configmap/before")
    );
    assert_eq!(ready_condition(&k, "a1").as_deref(), Some("True"));
}
