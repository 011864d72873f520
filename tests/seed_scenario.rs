//! Issues 12 and 13 on one local HA cluster with running pods: HAProxy as the fixed
//! registration address in front of 3 servers tainted `CriticalAddonsOnly=true:NoExecute`, and
//! 2 agents, every node with its own containerd and the offline test images.
//!
//! - Issue 12's seed scenario: a 6-pod Deployment runs only on the agents; a pod tolerating the
//!   taint runs on a server; a server without the taint runs pods too, and tainting it again
//!   evicts them.
//! - The Deployment's NodePort Service answers on every node's address (servers and agents) from
//!   its pods, and deleting it removes every rule from every node's nftables table.
//! - `kubectl exec -it` and `kubectl port-forward` work through the registration address and
//!   through each server's own address, with the default kubectl and an older one.
//! - Losing an agent (daemon SIGKILLed, its containers stopped by `rke2 killall`): its node goes
//!   NotReady, its pods are evicted after their `tolerationSeconds` and replacements run on the
//!   other agent.
//!
//! Pod networks are /28s from a /25 of 198.18.0.0/16 and the service range a /28 of
//! 198.19.0.0/16, both chosen from the test's own address block, with masquerading off.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::streaming::*;
use common::workloads::*;
use common::*;

const WAIT: Duration = Duration::from_secs(180);
/// How long the Deployment's pods stay on a node that stopped reporting (their tolerations of
/// the `not-ready` and `unreachable` NoExecute taints).
const TOLERATION_SECONDS: u32 = 5;
/// The servers' `node-monitor-grace-period`: short so a lost agent turns Unknown quickly, yet
/// long enough that no live node (heartbeats every 1 s or 2 s) misses it on a busy machine.
const GRACE: &str = "10s";

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

/// Six busybox httpd replicas serving their pod names on 8080, leaving a node that stops
/// reporting after [`TOLERATION_SECONDS`], behind a NodePort Service.
fn web() -> String {
    let tolerations: String = ["node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"]
        .iter()
        .map(|key| {
            format!(
                "      - {{key: {key}, operator: Exists, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}\n"
            )
        })
        .collect();
    web_app(
        6,
        &format!("      terminationGracePeriodSeconds: 2\n      tolerations:\n{tolerations}"),
    )
}

fn jsonpath(k: &Path, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={{{path}}}");
    args.extend_from_slice(&["-o", &p]);
    kubectl_ok(k, &args)
}

/// The default kubectl and the oldest versioned one installed (it speaks only SPDY, the
/// default one WebSocket first; docs/streaming.md). A host without versioned ones (Debian's
/// kubernetes-client alone) tests the default one only, as tests/exec.rs does.
fn two_kubectls() -> Vec<(String, PathBuf)> {
    installed_kubectls().into_iter().take(2).collect()
}

#[test]
fn user_pods_run_on_agents_serve_node_ports_streams_and_move_when_an_agent_is_lost() {
    require_pod_runtime();
    for (tool, pkg) in [
        ("etcd", "etcd-server"),
        ("kubectl", "kubernetes-client"),
        ("nft", "nftables"),
        ("curl", "curl"),
        ("script", "bsdutils"),
    ] {
        require_tool(tool, pkg);
    }
    let kubectls = two_kubectls();
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let images = root.path().join("build/images");
    build_images(&root.path().join("build"), &images);
    // Node names of this test alone: pod bridges are named after nodes, and other tests run
    // nodes in this network namespace at the same time.
    let [s1, s2, s3, a1, a2] = ["seed-s1", "seed-s2", "seed-s3", "seed-a1", "seed-a2"];
    let names = [s1, s2, s3, a1, a2];
    let mut cleanups = Vec::new();
    for n in names {
        let dest = root.path().join(n).join("data/agent/images");
        std::fs::create_dir_all(&dest).unwrap();
        for f in ["bb.tar", "pause.tar"] {
            std::fs::copy(images.join(f), dest.join(f)).unwrap();
        }
        cleanups.push(NodeCleanup(root.path().join(n).join("data")));
    }
    let o = block.ip(1).octets();
    let cluster_cidr = format!("198.18.{}.{}/25", o[1], (o[2] % 2) * 128);
    let svc_base = (o[2] % 16) * 16;
    let server_ips = [block.ip(1), block.ip(2), block.ip(3)];
    let lb = Haproxy::start(block.ip(100), &server_ips, root.path());
    let common = [
        ("token", "seed-token".to_string()),
        ("tls-san[]", lb.ip.to_string()),
        ("node-taint[]", "CriticalAddonsOnly=true:NoExecute".into()),
        ("cluster-cidr", cluster_cidr),
        ("service-cidr", format!("198.19.{}.{svc_base}/28", o[1])),
        ("cluster-dns", format!("198.19.{}.{}", o[1], svc_base + 10)),
        ("node-cidr-mask-size", "28".into()),
        ("node-monitor-grace-period", GRACE.into()),
        ("pause-image", PAUSE_IMAGE.into()),
    ];
    let mut servers = Vec::new();
    let mut first = start_server(s1, server_ips[0], root.path(), &common);
    first.daemon.wait_log("ready:", WAIT);
    let token = first.token();
    let k = first.kubeconfig.clone();
    servers.push(first);
    let mut join = common.to_vec();
    join.push(("server", lb.url()));
    for (n, ip) in [(s2, server_ips[1]), (s3, server_ips[2])] {
        let mut s = start_server(n, ip, root.path(), &join);
        s.daemon.wait_log("ready:", WAIT);
        servers.push(s);
    }
    let mut agents: Vec<AgentNode> = [a1, a2]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            start_agent(
                n,
                block.ip(4 + i as u8),
                root.path(),
                &lb.url(),
                &token,
                &[("pause-image", PAUSE_IMAGE.into())],
            )
        })
        .collect();
    for n in names {
        wait_node_ready(&k, n, WAIT);
    }

    // Six replicas, all Running, all on agents.
    apply_yaml(&k, root.path(), "web", &web());
    let web = wait_for(WAIT, "6 web pods Running", || {
        let p = pods(&k, "app=web");
        (p.len() == 6 && p.iter().all(|(_, phase, _)| phase == "Running")).then_some(p)
    });
    for (name, _, node) in &web {
        assert!(node == a1 || node == a2, "{name} on {node}: {web:?}");
    }
    let replicas: BTreeSet<String> = web.iter().map(|(name, _, _)| name.clone()).collect();

    // A pod tolerating the taint runs on a server.
    apply_yaml(
        &k,
        root.path(),
        "addon",
        &pod(
            "addon",
            "addon",
            &format!(
                "  tolerations:\n  - {{key: CriticalAddonsOnly, operator: Exists}}\n  nodeSelector: {{kubernetes.io/hostname: {s1}}}\n"
            ),
        ),
    );
    wait_for(WAIT, "addon Running on s1", || {
        (pods(&k, "app=addon") == [("addon".into(), "Running".into(), s1.into())]).then_some(())
    });

    // Without the taint a server runs user pods too ...
    kubectl_ok(&k, &["taint", "node", s3, "CriticalAddonsOnly-"]);
    apply_yaml(
        &k,
        root.path(),
        "user",
        &pod(
            "user",
            "user",
            &format!("  nodeSelector: {{kubernetes.io/hostname: {s3}}}\n"),
        ),
    );
    wait_for(WAIT, "user pod Running on s3", || {
        (pods(&k, "app=user") == [("user".into(), "Running".into(), s3.into())]).then_some(())
    });
    // ... and tainting it evicts them; the tolerating pod on s1 stays.
    kubectl_ok(
        &k,
        &["taint", "node", s3, "CriticalAddonsOnly=true:NoExecute"],
    );
    wait_for(WAIT, "user pod evicted from s3", || {
        pods(&k, "app=user").is_empty().then_some(())
    });
    assert_eq!(
        pods(&k, "app=addon"),
        [("addon".into(), "Running".into(), s1.into())]
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

    // The NodePort answers on every node's address, servers without pods included, and only
    // from the Service's pods. The replicas sit on the agents' bridges.
    for agent in [a1, a2] {
        allow_loopback_sources(agent);
    }
    let node_port = jsonpath(&k, &["svc", "web"], ".spec.ports[0].nodePort");
    let cluster_ip = jsonpath(&k, &["svc", "web"], ".spec.clusterIP");
    let node_ips: Vec<(&str, std::net::Ipv4Addr)> = names
        .iter()
        .zip(server_ips.iter().chain(agents.iter().map(|a| &a.ip)))
        .map(|(n, ip)| (*n, *ip))
        .collect();
    let (mut answered, mut seen) = (BTreeSet::new(), BTreeSet::new());
    wait_for(
        WAIT,
        "the NodePort on every node answering from every replica",
        || {
            for (node, ip) in &node_ips {
                let body = http_body(&format!("http://{ip}:{node_port}/"));
                if !body.is_empty() {
                    assert!(
                        replicas.contains(&body),
                        "{node}'s NodePort answered {body:?}"
                    );
                    answered.insert(*node);
                    seen.insert(body);
                }
            }
            (answered.len() == node_ips.len() && seen == replicas).then_some(())
        },
    );

    // Deleting the Service removes every rule of it from every node's table.
    let tables: Vec<String> = names
        .iter()
        .map(|n| {
            let file = root.path().join(n).join("data/agent/proxy-table");
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .collect();
    for t in &tables {
        assert!(
            nft_table(t).contains(&format!("{cluster_ip} . tcp . 80")),
            "{t}"
        );
    }
    kubectl_ok(&k, &["delete", "svc", "web"]);
    wait_for(WAIT, "no rule of the deleted service on any node", || {
        tables
            .iter()
            .all(|table| {
                let t = nft_table(table);
                t.contains("chain services")
                    && !t.contains(&cluster_ip)
                    && !t.contains("default/web")
                    && !t.contains(&node_port)
                    // The `kubernetes` service's rules (to the API servers' 6443) stay; none
                    // to a pod's 8080 (a dnat map element `A . 8080` or an affinity chain's
                    // `dnat ip to A:8080`).
                    && !t.contains(". 8080")
                    && !t.contains(":8080")
            })
            .then_some(())
    });
    let ruleset = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(
        !ruleset.contains(&format!("{cluster_ip} . ")),
        "a rule for {cluster_ip} is left in the ruleset"
    );

    // exec -it and port-forward through the registration address and each server's own one.
    let mut entries = vec![(
        "the registration address".to_string(),
        kubeconfig_via(&k, lb.ip, &root.path().join("via-lb.yaml")),
    )];
    for s in &servers {
        let file = root.path().join(format!("via-{}.yaml", s.daemon.name));
        entries.push((s.daemon.name.clone(), kubeconfig_via(&k, s.ip, &file)));
    }
    let target = &web[0].0;
    for (via, kubeconfig) in &entries {
        for (label, bin) in &kubectls {
            let what = format!("kubectl {label} via {via}");
            eprintln!("{what}");
            assert_tty_and_port_forward(
                bin,
                kubeconfig,
                target,
                &format!("{target}\n"),
                &what,
                &|| {
                    let node = pod_field(&k, target, "spec.nodeName");
                    agents
                        .iter()
                        .filter(|a| a.daemon.name == node)
                        .map(|a| node_logs(&a.daemon, &root.path().join(&node).join("data")))
                        .collect()
                },
            );
        }
    }

    // Losing an agent: its daemon dies and its containers stop, so it stops reporting.
    let lost: Vec<String> = web
        .iter()
        .filter(|(_, _, node)| node == a2)
        .map(|(name, _, _)| name.clone())
        .collect();
    assert!(!lost.is_empty(), "no web pod on {a2}: {web:?}");
    agents[1].daemon.kill9();
    drop(cleanups.remove(4)); // rke2 killall for a2
    wait_for(WAIT, "the lost agent NotReady", || {
        (ready_condition(&k, a2).as_deref() == Some("Unknown")).then_some(())
    });
    let node = kubectl_ok(&k, &["get", "node", a2, "--no-headers"]);
    assert_eq!(node.split_whitespace().nth(1), Some("NotReady"), "{node}");
    let moved = wait_for(WAIT, "6 web pods Running on the live agent", || {
        let p: Vec<_> = pods(&k, "app=web")
            .into_iter()
            .filter(|(_, phase, node)| node != a2 && phase == "Running")
            .collect();
        (p.len() == 6).then_some(p)
    });
    for (name, _, node) in &moved {
        assert_eq!(node, a1, "{name}: {moved:?}");
    }
    for name in &lost {
        let out = kubectl(
            &k,
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        );
        assert!(
            !out.status.success() || !out.stdout.is_empty(),
            "{name} on the lost agent was not evicted"
        );
        let events = kubectl_ok(
            &k,
            &[
                "get",
                "events",
                "--field-selector",
                &format!("reason=TaintManagerEviction,involvedObject.name={name}"),
                "-o",
                "name",
            ],
        );
        assert!(!events.trim().is_empty(), "no eviction event for {name}");
    }
    drop(agents);
    drop(servers);
    drop(lb);
    drop(cleanups);
}
