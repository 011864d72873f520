//! HA (issue: servers and agents join through a fixed registration address): HAProxy in front of
//! three servers on their own loopback addresses, an agent, failover, quorum loss, refusals.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const FORM: Duration = Duration::from_secs(60);

struct Cluster {
    lb: Haproxy,
    servers: Vec<ServerNode>,
    agent: Option<AgentNode>,
    kubeconfig: std::path::PathBuf,
    /// Last, so it is dropped last: the nodes stop (and `rke2 killall` reads their config)
    /// before their directories go.
    _root: tempfile::TempDir,
}

fn form_cluster(block: &AddrBlock, servers: usize, agent: bool, token: &str) -> Cluster {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    let root = tempfile::tempdir().unwrap();
    let ips: Vec<_> = (1..=servers as u8).map(|i| block.ip(i)).collect();
    let lb = Haproxy::start(block.ip(100), &ips, root.path());
    let mut nodes = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let mut extra: Vec<(&'static str, String)> =
            vec![("token", token.into()), ("tls-san[]", lb.ip.to_string())];
        if i > 0 {
            extra.push(("server", lb.url()));
        }
        nodes.push(start_server(
            &format!("s{}", i + 1),
            *ip,
            root.path(),
            &extra,
        ));
    }
    let agent = agent.then(|| {
        start_agent(
            "a1",
            block.ip(11),
            root.path(),
            &lb.url(),
            token,
            &[
                ("node-label[]", "tier=web".into()),
                ("node-taint[]", "dedicated=web:NoSchedule".into()),
            ],
        )
    });
    nodes[0].daemon.wait_log("ready:", FORM);
    let kubeconfig = kubeconfig_via(
        &nodes[0].kubeconfig,
        lb.ip,
        &root.path().join("via-lb.yaml"),
    );
    Cluster {
        _root: root,
        lb,
        servers: nodes,
        agent,
        kubeconfig,
    }
}

fn voters(node: &ServerNode) -> Option<usize> {
    etcd_members(node).map(|m| {
        m.iter()
            .filter(|(name, learner)| !learner && !name.is_empty())
            .count()
    })
}

#[test]
fn three_servers_and_an_agent_survive_a_server_loss() {
    let block = AddrBlock::new();
    let started = Instant::now();
    let mut c = form_cluster(&block, 3, true, "ha-token");
    let k = c.kubeconfig.clone();
    wait_for(FORM, "4 nodes Ready through the fixed address", || {
        all_ready(&k, &["s1", "s2", "s3", "a1"]).then_some(())
    });
    eprintln!(
        "cluster of 3 servers + 1 agent Ready after {:?}",
        started.elapsed()
    );
    let out = kubectl_ok(&k, &["get", "nodes", "--no-headers"]);
    for s in ["s1", "s2", "s3"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{s} ")) && l.contains("control-plane,etcd,master")), "{out}");
    }
    let agent: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&k, &["get", "node", "a1", "-o", "json"])).unwrap();
    assert_eq!(agent["metadata"]["labels"]["tier"], "web");
    assert_eq!(agent["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(agent["spec"]["taints"][0]["effect"], "NoSchedule");
    wait_for(FORM, "3 voting etcd members", || {
        (voters(&c.servers[0]) == Some(3)).then_some(())
    });
    // Every live server is published for agents and in the kubernetes endpoints.
    wait_for(Duration::from_secs(20), "3 API endpoints", || {
        let out = kubectl(
            &k,
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].addresses[*].ip}",
            ],
        );
        (String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
            == 3)
            .then_some(())
    });

    for i in 0..20 {
        kubectl_ok(
            &k,
            &[
                "create",
                "configmap",
                &format!("before-{i}"),
                "--from-literal=k=v",
            ],
        );
    }

    // Kill the etcd leader's daemon.
    let li = etcd_leader(&c.servers).expect("a leader");
    let killed_name = c.servers[li].daemon.name.clone();
    c.servers[li].daemon.kill9();
    let t = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "API writable through the fixed address after the kill",
        || {
            let out = kubectl(
                &k,
                &[
                    "create",
                    "configmap",
                    &format!("after-{}", t.elapsed().as_millis()),
                    "--from-literal=k=v",
                ],
            );
            out.status.success().then_some(())
        },
    );
    eprintln!(
        "writes through the fixed address resumed {:?} after killing the leader {killed_name}",
        t.elapsed()
    );
    // All earlier writes survived; the agent stays Ready (its heartbeats moved to a live server).
    let cms = kubectl_ok(&k, &["get", "configmaps", "-o", "name"]);
    for i in 0..20 {
        assert!(
            cms.contains(&format!("configmap/before-{i}\n")),
            "before-{i} lost:\n{cms}"
        );
    }
    let renew = |k: &Path| {
        let out = kubectl(
            k,
            &[
                "get",
                "lease",
                "a1",
                "-n",
                "kube-node-lease",
                "-o",
                "jsonpath={.spec.renewTime}",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let r0 = renew(&k);
    wait_for(
        Duration::from_secs(15),
        "agent lease renewed after the failover",
        || (renew(&k) != r0).then_some(()),
    );
    assert_eq!(ready_condition(&k, "a1").as_deref(), Some("True"));

    // Restart the killed server: it rejoins with its identity.
    let survivor = (li + 1) % 3;
    c.servers[li].restart(&[]);
    c.servers[li].daemon.wait_log("ready:", FORM);
    wait_for(FORM, "3 voters again", || {
        (voters(&c.servers[survivor]) == Some(3)).then_some(())
    });
    wait_for(FORM, "all Ready again", || {
        all_ready(&k, &["s1", "s2", "s3", "a1"]).then_some(())
    });

    // Two of three down: calls fail with a clear error within the client timeout.
    let (x, y) = ((li + 1) % 3, (li + 2) % 3);
    c.servers[x].daemon.kill9();
    c.servers[y].daemon.kill9();
    let t = Instant::now();
    let direct = c.servers[li].kubeconfig.clone();
    let mut failed_clearly = false;
    for _ in 0..10 {
        let out = kubectl(
            &direct,
            &[
                "--request-timeout=15s",
                "create",
                "configmap",
                "during-outage",
                "--from-literal=k=v",
            ],
        );
        if !out.status.success() {
            let e = String::from_utf8_lossy(&out.stderr);
            assert!(
                e.contains("etcd") || e.contains("Timeout") || e.contains("unavailable"),
                "unclear error: {e}"
            );
            failed_clearly = true;
            break;
        }
    }
    assert!(failed_clearly, "writes must fail without quorum");
    assert!(t.elapsed() < Duration::from_secs(60));
    // Bring one back: the cluster recovers with nothing lost.
    c.servers[x].restart(&[]);
    c.servers[x].daemon.wait_log("ready:", FORM);
    wait_for(FORM, "writes after recovery", || {
        kubectl(
            &k,
            &[
                "create",
                "configmap",
                &format!("recovered-{}", t.elapsed().as_millis()),
                "--from-literal=k=v",
            ],
        )
        .status
        .success()
        .then_some(())
    });
    let cms = kubectl_ok(&k, &["get", "configmaps", "-o", "name"]);
    for i in 0..20 {
        assert!(
            cms.contains(&format!("configmap/before-{i}\n")),
            "before-{i} lost after recovery"
        );
    }
    drop(c.agent.take());
    let _ = &c.lb;
}

#[test]
fn joins_are_refused_with_clear_errors_and_change_nothing() {
    let block = AddrBlock::new();
    let c = form_cluster(&block, 1, true, "refusal-token");
    let k = c.kubeconfig.clone();
    wait_for(FORM, "s1 and a1 Ready", || {
        all_ready(&k, &["s1", "a1"]).then_some(())
    });
    let root = tempfile::tempdir().unwrap();
    let full = c.servers[0].token();
    let nodes_before = kubectl_ok(&k, &["get", "nodes", "-o", "name"]);

    // Agent with a wrong token.
    let mut bad = start_agent(
        "bad-token",
        block.ip(21),
        root.path(),
        &c.lb.url(),
        "not-the-token",
        &[],
    );
    assert_ne!(bad.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(
        bad.daemon.log_text().contains("refused the token"),
        "{}",
        bad.daemon.log_tail()
    );
    // Agent with a token whose CA hash is another cluster's.
    let wrong_hash = format!("K10{}::node:refusal-token", "0".repeat(64));
    let mut bad = start_agent(
        "bad-hash",
        block.ip(22),
        root.path(),
        &c.lb.url(),
        &wrong_hash,
        &[],
    );
    assert_ne!(bad.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(
        bad.daemon.log_text().contains("CA hash does not match"),
        "{}",
        bad.daemon.log_tail()
    );
    // A second machine claiming an existing node name with another password.
    let mut dup = start_agent(
        "dup",
        block.ip(23),
        root.path(),
        &c.lb.url(),
        &full,
        &[("node-name", "a1".into())],
    );
    assert_ne!(dup.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(
        dup.daemon.log_text().contains("Node password rejected"),
        "{}",
        dup.daemon.log_tail()
    );
    // A server with a wrong token.
    let mut s = start_server(
        "bad-server",
        block.ip(24),
        root.path(),
        &[("server", c.lb.url()), ("token", "wrong".into())],
    );
    assert_ne!(s.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(
        s.daemon.log_text().contains("not authorized") || s.daemon.log_text().contains("401"),
        "{}",
        s.daemon.log_tail()
    );
    // A server whose shared settings differ.
    let mut s = start_server(
        "bad-cidr",
        block.ip(25),
        root.path(),
        &[
            ("server", c.lb.url()),
            ("token", full.clone()),
            ("cluster-cidr", "10.99.0.0/16".into()),
        ],
    );
    assert_ne!(s.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    let log = s.daemon.log_text();
    assert!(
        log.contains("critical configuration value mismatch") && log.contains("cluster-cidr"),
        "{}",
        s.daemon.log_tail()
    );

    // Nothing changed: same nodes, one etcd member, the real a1 still Ready.
    assert_eq!(
        kubectl_ok(&k, &["get", "nodes", "-o", "name"]),
        nodes_before
    );
    assert_eq!(voters(&c.servers[0]), Some(1));
    assert_eq!(etcd_members(&c.servers[0]).unwrap().len(), 1);
    assert_eq!(ready_condition(&k, "a1").as_deref(), Some("True"));
}

#[test]
fn two_servers_warn_about_the_even_count() {
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, 2, false, "even-token");
    c.servers[1].daemon.wait_log("ready:", FORM);
    c.servers[0].daemon.wait_log(
        "an odd number of servers is required for fault tolerance",
        FORM,
    );
}

#[test]
fn lost_heartbeats_mark_a_node_unknown_until_they_resume() {
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    // STATUS= (and the D-Bus Phase, the same text) follows node readiness.
    let sock = root.path().join("notify-l1.sock");
    let rx = NotifyReceiver::bind(&sock);
    let sock = sock.display().to_string();
    let mut s = start_server_env(
        "l1",
        block.ip(1),
        root.path(),
        &[
            ("token", "lease-token".into()),
            ("node-monitor-grace-period", "4s".into()),
        ],
        &[("NOTIFY_SOCKET", sock.as_str())],
    );
    s.daemon.wait_log("ready:", FORM);
    let a = start_agent(
        "la",
        block.ip(11),
        root.path(),
        &s.supervisor(),
        "lease-token",
        &[],
    );
    wait_node_ready(&s.kubeconfig, "la", FORM);
    let status = |text: &'static str| move |m: &Notification| m.get("STATUS") == Some(text);
    let all_ready = rx.wait_for(
        Duration::from_secs(30),
        "STATUS=ready: 1 server, 2 nodes",
        status("ready: 1 server, 2 nodes"),
    );
    a.daemon.signal("STOP");
    wait_for(
        Duration::from_secs(30),
        "Ready=Unknown after the grace period",
        || (ready_condition(&s.kubeconfig, "la").as_deref() == Some("Unknown")).then_some(()),
    );
    let degraded = rx.wait_for(
        Duration::from_secs(30),
        "STATUS=ready: 1 server, 1 of 2 nodes ready",
        status("ready: 1 server, 1 of 2 nodes ready"),
    );
    assert!(degraded.at > all_ready.at);
    a.daemon.signal("CONT");
    wait_for(
        Duration::from_secs(30),
        "Ready=True after heartbeats resume",
        || (ready_condition(&s.kubeconfig, "la").as_deref() == Some("True")).then_some(()),
    );
    rx.wait_for(
        Duration::from_secs(30),
        "STATUS=ready: 1 server, 2 nodes again",
        |m| m.at > degraded.at && m.get("STATUS") == Some("ready: 1 server, 2 nodes"),
    );
}

#[test]
fn deleting_a_server_node_removes_its_etcd_member() {
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, 3, false, "delete-token");
    let k = c.kubeconfig.clone();
    wait_for(FORM, "3 voters", || {
        (voters(&c.servers[0]) == Some(3)).then_some(())
    });
    wait_for(FORM, "3 servers Ready", || {
        all_ready(&k, &["s1", "s2", "s3"]).then_some(())
    });
    kubectl_ok(&k, &["delete", "node", "s3"]);
    let t = Instant::now();
    loop {
        let m = etcd_members(&c.servers[0]).unwrap_or_default();
        if m.len() == 2 && m.iter().all(|(n, _)| !n.starts_with("s3-")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "s3's member was not removed: {m:?}\n--- s1\n{}\n--- s2\n{}\n--- s3\n{}",
            c.servers[0].daemon.log_tail(),
            c.servers[1].daemon.log_tail(),
            c.servers[2].daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The removed server notices and stops; the cluster keeps working.
    c.servers[2].daemon.wait_exit(Duration::from_secs(60));
    assert!(
        c.servers[2]
            .daemon
            .log_text()
            .contains("removed from the cluster"),
        "{}",
        c.servers[2].daemon.log_tail()
    );
    // The way back names the absolute db directory, usable from any working directory.
    let db = c.servers[2].data_dir().join("server/db");
    assert!(
        c.servers[2].daemon.log_text().contains(&format!(
            "remove this server's db directory {}",
            db.display()
        )),
        "{}",
        c.servers[2].daemon.log_tail()
    );
    kubectl_ok(
        &k,
        &["create", "configmap", "after-delete", "--from-literal=a=b"],
    );
}

/// While a server is stopped and its Node NotReady, the other servers' STATUS= (and D-Bus
/// Phase, the same text, logged on every change) counts it out; it counts again once the server
/// is back.
#[test]
fn status_counts_a_stopped_server_out_until_it_returns() {
    require_tool("etcd", "etcd-server");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let grace = ("node-monitor-grace-period", "4s".to_string());
    let token = ("token", "count-token".to_string());
    let mut s1 = start_server(
        "s1",
        block.ip(1),
        root.path(),
        &[token.clone(), grace.clone()],
    );
    s1.daemon.wait_log("ready:", FORM);
    let join = [token, grace, ("server", s1.supervisor())];
    let mut s2 = start_server("s2", block.ip(2), root.path(), &join);
    s2.daemon.wait_log("ready:", FORM);
    let mut s3 = start_server("s3", block.ip(3), root.path(), &join);
    s3.daemon.wait_log("ready:", FORM);
    s1.daemon
        .wait_log("ready: 3 servers, 3 nodes", Duration::from_secs(60));

    assert_eq!(s3.daemon.stop(), Some(0), "{}", s3.daemon.log_tail());
    s1.daemon.wait_log(
        "ready: 2 of 3 servers ready, 2 of 3 nodes ready",
        Duration::from_secs(60),
    );
    let degraded_at = s1.daemon.log_text().len();
    s3.restart(&[]);
    wait_for(Duration::from_secs(60), "s1 counting s3 again", || {
        s1.daemon.log_text()[degraded_at..]
            .contains("ready: 3 servers, 3 nodes")
            .then_some(())
    });
}

/// The `mod_revision`s etcd itself recorded under `prefix` after `rev`, from its history.
fn etcd_history(node: &ServerNode, prefix: &str, after: i64) -> Vec<i64> {
    // `etcdctl watch` replays the history then waits: `timeout` bounds the wait.
    let tls = node.data_dir().join("server/tls/etcd");
    let out = std::process::Command::new("timeout")
        .args(["5", "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", node.ip))
        .arg(format!("--cacert={}", tls.join("server-ca.crt").display()))
        .arg(format!("--cert={}", tls.join("client.crt").display()))
        .arg(format!("--key={}", tls.join("client.key").display()))
        .args(["watch", "--prefix", prefix, "-w", "json"])
        .arg(format!("--rev={}", after + 1))
        .output()
        .expect("run etcdctl watch");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|r| r["Events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["kv"]["mod_revision"].as_i64().expect("mod_revision"))
        .collect()
}

/// The resourceVersions of the events in a raw watch body.
fn watched_revisions(body: &str) -> Vec<i64> {
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            assert_ne!(e["type"], "ERROR", "{e}");
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a resourceVersion")
        })
        .collect()
}

#[test]
fn watches_lose_and_repeat_nothing_across_an_etcd_leader_kill() {
    let block = AddrBlock::new();
    let mut c = form_cluster(&block, 3, false, "watch-token");
    let k = c.kubeconfig.clone();
    wait_for(FORM, "3 voting etcd members", || {
        (voters(&c.servers[0]) == Some(3)).then_some(())
    });
    for s in &mut c.servers {
        s.daemon.wait_log("ready:", FORM);
    }
    wait_for(FORM, "3 nodes Ready", || {
        all_ready(&k, &["s1", "s2", "s3"]).then_some(())
    });
    kubectl_ok(&k, &["create", "namespace", "wt"]);
    let li = etcd_leader(&c.servers).expect("a leader");
    // Every server serves a watch, one follower takes the writes; the leader dies.
    let (w, x) = ((li + 1) % 3, (li + 2) % 3);
    let cm = |name: &str, v: usize| {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"v":"{v}"}}}}"#
        )
    };
    let base = "/api/v1/namespaces/wt/configmaps";
    // Caches start with each server, so the watches below (from `start`) are served from the
    // caches' windows; a list at any state reads the cache too.
    let (code, body) = c.servers[w].api(
        "GET",
        &format!("{base}?resourceVersion=0"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = c.servers[x].api("POST", base, Some(&cm("start", 0)), "application/json");
    assert_eq!(code, 201, "{body}");
    let start: serde_json::Value = serde_json::from_str(&body).unwrap();
    let start: i64 = start["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A raw watch on every server from `start`, each streamed into a file: the leader's ends
    // when it dies, and resumes on a follower from the last revision it delivered.
    let watch_into = |s: &ServerNode, from: i64, out: &std::path::Path| {
        let tls = s.data_dir().join("server/tls");
        std::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "600", "--cacert"])
            .arg(s.ca())
            .arg("--cert")
            .arg(tls.join("client-admin.crt"))
            .arg("--key")
            .arg(tls.join("client-admin.key"))
            .arg("-o")
            .arg(out)
            .arg(format!(
                "https://{}:6443{base}?watch=1&allowWatchBookmarks=true&resourceVersion={from}&timeoutSeconds=590",
                s.ip
            ))
            .spawn()
            .expect("run curl")
    };
    let out_paths: Vec<_> = (0..3)
        .map(|i| c._root.path().join(format!("watch-{i}.out")))
        .collect();
    let mut curls: Vec<_> = (0..3)
        .map(|i| watch_into(&c.servers[i], start, &out_paths[i]))
        .collect();
    let watched =
        |i: usize| watched_revisions(&std::fs::read_to_string(&out_paths[i]).unwrap_or_default());
    // Writes (creates, updates, deletes) before, during and after the leader's death.
    let write = |s: &ServerNode, i: usize| -> Option<i64> {
        let name = format!("cm-{}", i % 7);
        let (code, body) = match i % 3 {
            0 => s.api("POST", base, Some(&cm(&name, i)), "application/json"),
            1 => s.api(
                "PATCH",
                &format!("{base}/{name}"),
                Some(&format!(r#"{{"data":{{"v":"{i}"}}}}"#)),
                "application/merge-patch+json",
            ),
            _ => s.api(
                "DELETE",
                &format!("{base}/{name}"),
                None,
                "application/json",
            ),
        };
        (200..300).contains(&code).then(|| {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
    };
    for i in 0..15 {
        write(&c.servers[x], i);
    }
    // The leader's watch has seen some of them before it dies.
    wait_for(
        Duration::from_secs(30),
        "the leader's watch delivers",
        || (!watched(li).is_empty()).then_some(()),
    );
    let killed = c.servers[li].daemon.name.clone();
    c.servers[li].daemon.kill9();
    let _ = curls[li].wait();
    let before_kill = watched(li);
    let resumed_path = c._root.path().join("watch-resumed.out");
    let resume_from = *before_kill.last().expect("events before the kill");
    curls.push(watch_into(&c.servers[w], resume_from, &resumed_path));
    let mut i = 15;
    wait_for(
        Duration::from_secs(60),
        "10 writes after the leader kill",
        || {
            if write(&c.servers[x], i).is_some() && i >= 24 {
                return Some(());
            }
            i += 1;
            None
        },
    );
    // A final marker: once the watch has it, it has everything before it.
    let (code, body) = c.servers[x].api("POST", base, Some(&cm("end", 0)), "application/json");
    assert_eq!(code, 201, "{body}");
    let end: serde_json::Value = serde_json::from_str(&body).unwrap();
    let end: i64 = end["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let resumed = || {
        let mut all = before_kill.clone();
        all.extend(watched_revisions(
            &std::fs::read_to_string(&resumed_path).unwrap_or_default(),
        ));
        all
    };
    wait_for(
        Duration::from_secs(60),
        "every watch delivers the last write",
        || {
            (watched(w).contains(&end) && watched(x).contains(&end) && resumed().contains(&end))
                .then_some(())
        },
    );
    for curl in &mut curls {
        let _ = curl.kill();
        let _ = curl.wait();
    }

    let history = etcd_history(&c.servers[w], "/registry/configmaps/wt/", start);
    assert!(history.len() >= 15, "{history:?}");
    for (who, got) in [
        (c.servers[w].daemon.name.clone(), watched(w)),
        (c.servers[x].daemon.name.clone(), watched(x)),
        (
            format!("{killed}, then resumed on {}", c.servers[w].daemon.name),
            resumed(),
        ),
    ] {
        eprintln!(
            "watch on {who}: {} events across the kill of the etcd leader {killed}, {} in etcd's history ({} before the kill)",
            got.len(),
            history.len(),
            before_kill.len()
        );
        assert_eq!(got, history, "watched events on {who} vs etcd's history");
    }
    // The cached list on the follower agrees with etcd too.
    let (code, body) = c.servers[w].api(
        "GET",
        &format!("{base}?resourceVersion=0"),
        None,
        "application/json",
    );
    assert_eq!(code, 200, "{body}");
    let cached: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut cached: Vec<String> = cached["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    cached.sort();
    let listed = kubectl_ok(
        &c.servers[w].kubeconfig,
        &["get", "configmaps", "-n", "wt", "-o", "name"],
    );
    let mut listed: Vec<String> = listed
        .lines()
        .map(|l| l.trim_start_matches("configmap/").to_string())
        .collect();
    listed.sort();
    assert_eq!(cached, listed);
}
