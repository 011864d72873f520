//! Server core (issue: config, token, PKI, embedded etcd, supervisor API): the real binary with
//! real etcd on its own loopback address.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(60);

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn first_server_serves_supervisor_api_and_runs_etcd() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = start_server(
        "s1",
        block.ip(1),
        root.path(),
        &[
            ("token", "core-test-token".into()),
            ("tls-san[]", "rke2.example.test".into()),
        ],
    );
    s1.daemon.wait_log("ready:", READY);

    // /ping and /cacerts; the token's CA hash is the sha256 of the /cacerts body.
    let (code, body) = curl(&format!("{}/ping", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!((code, body.as_str()), (200, "pong"));
    let (code, cacerts) = curl(&format!("{}/cacerts", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!(code, 200);
    let token = s1.token();
    assert_eq!(
        token,
        format!(
            "K10{}::server:core-test-token",
            sha256_hex(cacerts.as_bytes())
        )
    );
    assert_eq!(fs::read_to_string(s1.ca()).unwrap(), cacerts);

    // server-bootstrap: wrong password 401 (Status JSON), node credentials 403, right password 200.
    let url = format!("{}/v1-rke2/server-bootstrap", s1.supervisor());
    let (code, body) = curl(&url, &s1.ca(), &["-u", "server:wrong"]);
    assert_eq!(code, 401, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 401);
    let (code, _) = curl(&url, &s1.ca(), &["-u", "node:core-test-token"]);
    assert_eq!(code, 403);
    let (code, _) = curl(&url, &s1.ca(), &[]);
    assert_eq!(code, 403);
    let (code, body) = curl(&url, &s1.ca(), &["-u", "server:core-test-token"]);
    assert_eq!(code, 200);
    let bundle: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in [
        "ServerCA",
        "ServerCAKey",
        "ClientCA",
        "ClientCAKey",
        "ETCDServerCA",
        "ETCDPeerCA",
        "PasswdFile",
    ] {
        assert!(
            bundle[key]["Content"].is_string(),
            "bootstrap data lacks {key}"
        );
    }

    // Other routes and their roles.
    let (code, body) = curl(
        &format!("{}/v1-rke2/config", s1.supervisor()),
        &s1.ca(),
        &["-u", "node:core-test-token"],
    );
    assert_eq!(code, 200, "{body}");
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["SupervisorPort"], 9345);
    assert_eq!(cfg["CriticalControlArgs"]["cluster-cidr"], "10.42.0.0/16");
    let (code, _) = curl(
        &format!("{}/v1-rke2/readyz", s1.supervisor()),
        &s1.ca(),
        &["-u", "node:core-test-token"],
    );
    assert_eq!(code, 200);
    let (code, body) = curl(
        &format!("{}/v1-rke2/apiservers", s1.supervisor()),
        &s1.ca(),
        &["-u", "node:core-test-token"],
    );
    assert_eq!(code, 200);
    assert!(body.contains(&format!("{}:6443", s1.ip)), "{body}");
    // The member list needs the server token, even from a local address.
    let (code, body) = curl(&format!("{}/db/info", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!(code, 403, "{body}");
    let (code, body) = curl(
        &format!("{}/db/info", s1.supervisor()),
        &s1.ca(),
        &["-u", "server:core-test-token"],
    );
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["members"].as_array().unwrap().len(), 1);
    let (code, _) = curl(&format!("{}/nope", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!(code, 404);
    // Oversized and malformed requests get 4xx, never a crash.
    let big = root.path().join("big-body");
    fs::write(&big, "x".repeat(512 * 1024)).unwrap();
    let (code, _) = curl(
        &format!("{}/v1-rke2/token", s1.supervisor()),
        &s1.ca(),
        &[
            "-u",
            "server:core-test-token",
            "-X",
            "PUT",
            // The server answers 413 from Content-Length before the body is sent.
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{}", big.display()),
        ],
    );
    assert_eq!(code, 413);
    let (code, _) = curl(
        &format!("{}/v1-rke2/token", s1.supervisor()),
        &s1.ca(),
        &[
            "-u",
            "server:core-test-token",
            "-X",
            "PUT",
            "--data",
            "{not json",
        ],
    );
    assert_eq!(code, 400);
    let (code, _) = curl(&format!("{}/ping", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!(code, 200, "still serving after bad requests");

    // etcd: healthy, one voting member named <node>-<8 hex>.
    let out = etcdctl(&s1, &["endpoint", "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is healthy")
            || String::from_utf8_lossy(&out.stdout).contains("is healthy")
    );
    let out = etcdctl(&s1, &["member", "list", "-w", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    let name = members[0]["name"].as_str().unwrap();
    assert!(
        name.starts_with("s1-")
            && name.len() == 11
            && name[3..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert!(members[0].get("isLearner").is_none_or(|l| l == false));
    assert_eq!(
        fs::read_to_string(s1.data_dir().join("server/db/etcd-name"))
            .unwrap()
            .trim(),
        name
    );
    // etcd runs with the hash-map bbolt freelist (etcd 3.5's default, asked of 3.4 too).
    let etcd_pids: Vec<u32> =
        pids_matching(&s1.data_dir().join("server/db/etcd").display().to_string())
            .into_iter()
            .filter(|p| {
                fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "etcd")
            })
            .collect();
    assert_eq!(etcd_pids.len(), 1, "{etcd_pids:?}");
    let environ = fs::read(format!("/proc/{}/environ", etcd_pids[0])).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE=map"),
        "etcd's environment lacks the freelist type"
    );
    // etcd's data dir holds only what etcd itself writes.
    let etcd_dir: Vec<_> = fs::read_dir(s1.data_dir().join("server/db/etcd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(etcd_dir, vec!["member".to_string()]);
    assert!(!s1.daemon.log_text().contains("found invalid file"));

    // File modes.
    let d = s1.data_dir();
    assert_eq!(mode(&d.join("server/token")), 0o600);
    assert_eq!(
        fs::read_link(d.join("server/node-token")).unwrap(),
        Path::new("token")
    );
    assert_eq!(
        fs::read_link(d.join("server/agent-token")).unwrap(),
        Path::new("token")
    );
    assert_eq!(mode(&d.join("server/cred/passwd")), 0o600);
    assert_eq!(mode(&s1.kubeconfig), 0o600);
    for dir in [
        "",
        "server",
        "server/tls",
        "server/cred",
        "server/db",
        "server/db/etcd",
    ] {
        assert_eq!(mode(&d.join(dir)), 0o700, "{dir}");
    }
    for key in [
        "server-ca.key",
        "client-ca.key",
        "serving-kube-apiserver.key",
        "client-admin.key",
        "etcd/server-ca.key",
        "etcd/peer-ca.key",
        "etcd/client.key",
    ] {
        assert_eq!(mode(&d.join("server/tls").join(key)), 0o600, "{key}");
    }
    let passwd = fs::read_to_string(d.join("server/cred/passwd")).unwrap();
    assert!(
        passwd.contains("core-test-token,server,server,rke2:server"),
        "{passwd}"
    );
    // The token never appears in the log.
    assert!(
        !s1.daemon.log_text().contains("core-test-token"),
        "token leaked into the log"
    );

    // Clean stop: exit 0, no etcd left.
    assert_eq!(s1.daemon.stop(), Some(0));
    let data = d.display().to_string();
    wait_for(Duration::from_secs(10), "etcd gone after stop", || {
        pids_matching(&data).is_empty().then_some(())
    });
}

#[test]
fn restart_keeps_identity_wrong_token_is_refused_and_kill9_leaves_no_etcd() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = start_server(
        "r1",
        block.ip(1),
        root.path(),
        &[("token", "restart-token".into())],
    );
    s1.daemon.wait_log("ready:", READY);
    let token = s1.token();
    let ca = fs::read(s1.ca()).unwrap();
    let member_id = |s: &ServerNode| {
        let out = etcdctl(s, &["member", "list", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["members"][0]["ID"].as_u64(),
            v["members"][0]["name"].as_str().map(str::to_string),
        )
    };
    let before = member_id(&s1);

    // kill -9 of the daemon: its etcd dies with it.
    let data = s1.data_dir().display().to_string();
    assert!(
        !pids_matching(&format!("--data-dir={data}")).is_empty(),
        "etcd should be running"
    );
    s1.daemon.kill9();
    wait_for(
        Duration::from_secs(10),
        "etcd to die with the daemon",
        || {
            pids_matching(&format!("--data-dir={data}"))
                .is_empty()
                .then_some(())
        },
    );

    // Restart: same token, CA and member.
    s1.restart(&[]);
    s1.daemon.wait_log("ready:", READY);
    assert_eq!(s1.token(), token);
    assert_eq!(fs::read(s1.ca()).unwrap(), ca);
    assert_eq!(member_id(&s1), before);
    s1.daemon.stop();

    // Restart with another token: clear error, non-zero exit, nothing changed.
    let files = [
        "server/token",
        "server/cred/passwd",
        "server/tls/server-ca.crt",
        "server/tls/server-ca.key",
    ];
    let snapshot: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(s1.data_dir().join(f)).unwrap())
        .collect();
    let text = fs::read_to_string(&s1.config)
        .unwrap()
        .replace("restart-token", "another-token");
    let bad = s1.dir.join("bad.yaml");
    fs::write(&bad, text).unwrap();
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("encrypted with a different token"),
        "{stderr}"
    );
    for (f, before) in files.iter().zip(snapshot) {
        assert_eq!(
            fs::read(s1.data_dir().join(f)).unwrap(),
            before,
            "{f} changed"
        );
    }
    wait_for(
        Duration::from_secs(10),
        "no etcd after refused start",
        || {
            pids_matching(&format!("--data-dir={data}"))
                .is_empty()
                .then_some(())
        },
    );
}

#[test]
fn generated_token_without_configured_token() {
    require_tool("etcd", "etcd-server");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = start_server("g1", block.ip(1), root.path(), &[]);
    s1.daemon.wait_log("ready:", READY);
    let token = s1.token();
    let pw = token.rsplit_once("::server:").unwrap().1;
    assert_eq!(pw.len(), 32);
    assert!(pw.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        !s1.daemon.log_text().contains(pw),
        "generated token leaked into the log"
    );
}

/// Runs `rke2 server` with a config that must be refused; returns stderr.
fn refused(dir: &Path, yaml: &str, extra_args: &[&str]) -> String {
    let cfg = dir.join("config.yaml");
    let data = dir.join("data");
    let full = format!(
        "data-dir: {}\nwrite-kubeconfig: {}\n{yaml}",
        data.display(),
        dir.join("k.yaml").display()
    );
    fs::write(&cfg, full).unwrap();
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&cfg)
        .args(extra_args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "expected exit 64 for {yaml:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !data.exists(),
        "nothing may be written for a refused config"
    );
    assert!(!dir.join("k.yaml").exists());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_exits_64_naming_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.yaml").display().to_string();
    let e = refused(d.path(), "token: x\nnode-label: [a=b\n", &[]);
    assert!(e.contains(&cfg) && e.contains("malformed YAML"), "{e}");
    let e = refused(d.path(), "node-name:\n  nested: map\n", &[]);
    assert!(
        e.contains(&format!("{cfg}:3")) && e.contains("\"node-name\""),
        "{e}"
    );
    let e = refused(d.path(), "node-ip: 10.0.0.300\n", &[]);
    assert!(
        e.contains(&format!("{cfg}:3")) && e.contains("\"node-ip\"") && e.contains("10.0.0.300"),
        "{e}"
    );
    let e = refused(d.path(), "node-taint:\n  - dedicated=web:Sometimes\n", &[]);
    assert!(
        e.contains("\"node-taint\"") && e.contains("NoSchedule, PreferNoSchedule, NoExecute"),
        "{e}"
    );
    let e = refused(d.path(), "node-taint: [novalue]\n", &[]);
    assert!(e.contains("\"node-taint\""), "{e}");
    let e = refused(d.path(), "https-listen-port: 70000\n", &[]);
    assert!(e.contains("\"https-listen-port\""), "{e}");
    let e = refused(d.path(), "tls-san: [\"not a name\"]\n", &[]);
    assert!(e.contains("\"tls-san\""), "{e}");
    let e = refused(d.path(), "node-label: [\"bad key!=x\"]\n", &[]);
    assert!(e.contains("\"node-label\""), "{e}");
    let e = refused(d.path(), "", &["--bind-address", "not-an-ip"]);
    assert!(
        e.contains("flag --bind-address") && e.contains("not-an-ip"),
        "{e}"
    );
    let e = refused(d.path(), "", &["--no-such-flag"]);
    assert!(e.contains("--no-such-flag"), "{e}");
    let e = refused(d.path(), "server: https://lb:9345\n", &[]);
    assert!(e.contains("\"token\""), "{e}");
    let e = refused(d.path(), "write-kubeconfig-mode: \"0999\"\n", &[]);
    assert!(e.contains("\"write-kubeconfig-mode\""), "{e}");
    // Environment variables are named too.
    let cfg_path = d.path().join("config.yaml");
    fs::write(
        &cfg_path,
        format!("data-dir: {}\n", d.path().join("data").display()),
    )
    .unwrap();
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&cfg_path)
        .env("RKE2_SUPERVISOR_PORT", "zero")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RKE2_SUPERVISOR_PORT"));
}

#[test]
fn missing_etcd_binary_is_a_clear_error() {
    let block = AddrBlock::new();
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.yaml");
    write_config(
        &cfg,
        &[
            ("data-dir", d.path().join("data").display().to_string()),
            ("etcd-bin", "/nonexistent/etcd".into()),
            ("node-ip", block.ip(1).to_string()),
            ("bind-address", block.ip(1).to_string()),
        ],
    );
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("apt-get install -y etcd-server") && e.contains("etcd-bin"),
        "{e}"
    );
}
