//! Socket activation (issue 5): the real binary started by `systemd-socket-activate` serves the
//! supervisor (9345) and the Kubernetes API (6443) on the sockets it inherits, matched by
//! `LISTEN_FDNAMES` whatever their order. The config's own bind address points elsewhere, so a
//! daemon that bound by itself would fail these tests. Unknown and duplicate fds are closed
//! with a warning.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(60);

/// Starts `rke2 server` under `systemd-socket-activate` with one `-l` per `(name, port)` on
/// `ip`, in that fd order; the config binds `elsewhere` instead. The daemon starts lazily, on
/// the first connection. Returns the daemon and its node dir.
fn activate(
    name: &str,
    ip: Ipv4Addr,
    elsewhere: Ipv4Addr,
    root: &std::path::Path,
    fds: &[(&str, u16)],
) -> (Daemon, std::path::PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config(name, ip, &dir);
    entries.retain(|(k, _)| *k != "bind-address");
    entries.push(("bind-address", elsewhere.to_string()));
    entries.push(("token", "socket-activation-token".into()));
    let config = dir.join("config.yaml");
    write_config(&config, &entries);

    let mut cmd = Command::new("systemd-socket-activate");
    for (_, port) in fds {
        cmd.arg("-l").arg(format!("{ip}:{port}"));
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| *n).collect();
    cmd.arg(format!("--fdname={}", names.join(":")))
        // systemd-socket-activate passes on only what -E names.
        .args(["-E", "RUST_LOG=info", "-E", "PATH"])
        .arg(rke2_bin())
        .args(["server", "--config"])
        .arg(&config);
    (Daemon::spawn(name, cmd, &dir.join("log")), dir)
}

fn check_served_on_inherited_sockets(fds: &[(&str, u16)]) {
    require_tool("systemd-socket-activate", "systemd");
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let (ip, elsewhere) = (block.ip(1), block.ip(2));
    let root = tempfile::tempdir().unwrap();
    let (mut daemon, dir) = activate("s1", ip, elsewhere, root.path(), fds);
    let ca = dir.join("data/server/tls/server-ca.crt");

    // The first connection starts the daemon; it then answers on the inherited socket.
    wait_for(READY, "/ping on the inherited supervisor socket", || {
        let (code, body) = curl(&format!("https://{ip}:9345/ping"), &ca, &["-k"]);
        (code == 200 && body == "pong").then_some(())
    });
    daemon.wait_log("ready:", READY);
    let (code, body) = curl(&format!("https://{ip}:9345/ping"), &ca, &[]);
    assert_eq!((code, body.as_str()), (200, "pong"));

    // kubectl through the inherited API socket (the written kubeconfig names bind-address).
    let server = format!("--server=https://{ip}:6443");
    let nodes = kubectl_ok(
        &dir.join("rke2.yaml"),
        &[&server, "get", "nodes", "-o", "name"],
    );
    assert_eq!(nodes.trim(), "node/s1");

    // Nothing was bound at the configured address.
    for port in [9345, 6443] {
        assert!(
            !port_open(SocketAddr::from((elsewhere, port))),
            "the daemon bound {elsewhere}:{port} itself"
        );
    }
    let log = daemon.log_text();
    for name in ["supervisor", "apiserver"] {
        assert!(
            log.contains(&format!("using socket-activated listener \"{name}\"")),
            "{name} not taken over:\n{}",
            daemon.log_tail()
        );
    }
    assert!(!log.contains("listening for"), "{}", daemon.log_tail());
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_tail());
}

#[test]
fn serves_supervisor_and_api_on_inherited_sockets() {
    check_served_on_inherited_sockets(&[("supervisor", 9345), ("apiserver", 6443)]);
}

#[test]
fn fd_order_does_not_matter() {
    check_served_on_inherited_sockets(&[("apiserver", 6443), ("supervisor", 9345)]);
}

#[test]
fn unknown_and_duplicate_fds_are_closed_with_a_warning() {
    require_tool("systemd-socket-activate", "systemd");
    require_tool("etcd", "etcd-server");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let (ip, elsewhere) = (block.ip(1), block.ip(2));
    let root = tempfile::tempdir().unwrap();
    let fds = [
        ("apiserver", 6443),
        ("metrics", 16001),
        ("supervisor", 9345),
        ("supervisor", 16002),
    ];
    let (mut daemon, dir) = activate("s1", ip, elsewhere, root.path(), &fds);
    let ca = dir.join("data/server/tls/server-ca.crt");
    wait_for(READY, "/ping on the inherited supervisor socket", || {
        let (code, _) = curl(&format!("https://{ip}:9345/ping"), &ca, &["-k"]);
        (code == 200).then_some(())
    });
    daemon.wait_log("ready:", READY);
    let log = daemon.log_text();
    assert!(
        log.contains("closing inherited socket with unknown name \"metrics\""),
        "{}",
        daemon.log_tail()
    );
    assert!(
        log.contains("closing extra inherited socket named \"supervisor\""),
        "{}",
        daemon.log_tail()
    );
    // Closed: nobody listens there any more (systemd-socket-activate exec'd the daemon, so the
    // daemon held the only copy).
    for port in [16001, 16002] {
        assert!(
            !port_open(SocketAddr::from((ip, port))),
            "port {port} still open"
        );
    }
    // The first "supervisor" (fd order) is the one in use.
    assert!(log.contains(&format!(
        "using socket-activated listener \"supervisor\" on {ip}:9345"
    )));
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_tail());
}
