//! What a new user meets in the first hour with one real server: a mistyped `--config`, flags
//! that replace list keys, a typo in a key, readable log files, etcd's data dir left to etcd,
//! `<data-dir>/bin/kubectl` as the guides use it, and a join hint naming the fixed address.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

/// An explicitly named config file that does not exist is a usage error naming it, for both
/// roles; nothing is started.
#[test]
fn a_missing_config_file_is_exit_64_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("typo.yaml");
    for role in ["server", "agent"] {
        let out = Command::new(rke2_bin())
            .args([role, "--config"])
            .arg(&missing)
            .args(["--data-dir"])
            .arg(d.path().join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{role}: {err}");
        assert!(
            err.contains(&missing.display().to_string()),
            "{role}: {err}"
        );
        assert!(err.contains("does not exist"), "{role}: {err}");
    }
    assert!(!d.path().join("data").exists(), "nothing may be written");
}

/// Two IPv4 node IPs are refused with a message saying why.
#[test]
fn two_node_ips_of_one_family_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("config.yaml");
    fs::write(&config, "node-ip: 127.0.0.5\n").unwrap();
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&config)
        .args(["--node-ip", "127.0.0.6,127.0.0.7"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("127.0.0.6 and 127.0.0.7 are both IPv4"),
        "{err}"
    );
    assert!(err.contains("flag --node-ip"), "{err}");
}

#[test]
fn a_first_server_as_a_new_user_meets_it() {
    require_tool("kubectl", "kubectl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let ip = block.ip(1);
    let lb = "rke2-lb.example.internal";
    // The file's node-ip is replaced by the flag (it used to be appended, and etcd then bound
    // the file's address); `node-lable` is a typo.
    let dir = root.path().join("s1");
    fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config("s1", ip, &dir);
    entries.retain(|(k, _)| *k != "node-ip");
    entries.push(("node-ip", block.ip(9).to_string()));
    entries.push(("tls-san", lb.to_string()));
    entries.push(("node-lable", "tier=x".to_string()));
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let mut cmd = Command::new(rke2_bin());
    cmd.arg("server")
        .arg("--config")
        .arg(&config)
        .args(["--node-ip", &ip.to_string()])
        .env("RUST_LOG", "info");
    let mut daemon = Daemon::spawn("s1", cmd, &dir.join("log"));
    let kubeconfig = dir.join("rke2.yaml");
    wait_for(Duration::from_secs(120), "the server to be ready", || {
        if !daemon.running() {
            panic!("server exited:\n{}", daemon.log_tail());
        }
        daemon.log_text().contains("ready:").then_some(())
    });
    wait_node_ready(&kubeconfig, "s1", Duration::from_secs(60));
    let internal = kubectl_ok(
        &kubeconfig,
        &[
            "get",
            "node",
            "s1",
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
    );
    assert_eq!(internal.trim(), ip.to_string());

    let log = daemon.log_text();
    assert!(
        log.contains("unknown key \"node-lable\", ignored (did you mean \"node-label\"?)"),
        "{log}"
    );
    // A log file is not a terminal: no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the log file");
    // Nothing of ours in etcd's data dir, so etcd has nothing to warn about.
    assert!(!log.contains("found invalid file"), "{log}");
    let etcd_dir: Vec<String> = fs::read_dir(dir.join("data/server/db/etcd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(etcd_dir, vec!["member".to_string()]);
    // etcd's info chatter is not shown at info, and none of its lines at warn is one of the
    // messages that are normal while members connect.
    assert!(
        !log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("TCP streaming connection")),
        "{log}"
    );
    // The join hint names the fixed registration address (the first tls-san).
    assert!(log.contains(&format!("-s https://{lb}:9345")), "{log}");

    // The HA guide's check works verbatim.
    let kubectl = dir.join("data/bin/kubectl");
    assert!(
        fs::symlink_metadata(&kubectl).is_ok(),
        "{} missing",
        kubectl.display()
    );
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["get", "nodes"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("s1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop();
}

/// An admin deleting an agent's Node gets it back within seconds, with its labels and taints
/// from the config, well before its next heartbeat: the node agent watches its own Node
/// instead of noticing the deletion only when it heartbeats.
#[test]
fn a_deleted_agent_node_comes_back_within_seconds() {
    require_tool("kubectl", "kubectl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s = start_server("s1", block.ip(1), root.path(), &[]);
    wait_for(Duration::from_secs(120), "the server to be ready", || {
        if !s.daemon.running() {
            panic!("server exited:\n{}", s.daemon.log_tail());
        }
        s.daemon.log_text().contains("ready:").then_some(())
    });
    let k = s.kubeconfig.clone();
    // A long interval (start_agent sets a short one for speed), so a re-registration at the
    // next heartbeat (the old behaviour) cannot pass.
    let mut a = start_agent(
        "a1",
        block.ip(2),
        root.path(),
        &s.supervisor(),
        &s.token(),
        &[
            ("node-heartbeat-interval", "30s".to_string()),
            ("node-label[]", "tier=edge".to_string()),
            ("node-taint[]", "dedicated=edge:NoSchedule".to_string()),
        ],
    );
    wait_node_ready(&k, "a1", Duration::from_secs(120));
    a.daemon
        .wait_log("registered node", Duration::from_secs(30));
    kubectl_ok(&k, &["delete", "node", "a1"]);
    let deleted = std::time::Instant::now();
    wait_for(Duration::from_secs(90), "a1 registered again", || {
        if !a.daemon.running() {
            panic!("agent exited:\n{}", a.daemon.log_tail());
        }
        kubectl(&k, &["get", "node", "a1"])
            .status
            .success()
            .then_some(())
    });
    let back = deleted.elapsed();
    println!("a1's Node was back {back:?} after its deletion");
    assert!(
        back < Duration::from_secs(15),
        "a1 came back only after {back:?}:\n{}",
        a.daemon.log_tail()
    );
    let node = kubectl_ok(
        &k,
        &[
            "get",
            "node",
            "a1",
            "-o",
            "jsonpath={.metadata.labels.tier} {.spec.taints[*].key}",
        ],
    );
    assert_eq!(node.trim(), "edge dedicated");
    wait_node_ready(&k, "a1", Duration::from_secs(60));
}
