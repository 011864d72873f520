//! journald (issue 5): the real binary logs natively to a real `systemd-journald`, run by the
//! test in a private mount namespace where its sockets sit at the fixed path
//! `/run/systemd/journal/` (docs/testing.md §4a); the entries carry the structured `RKE2_*`
//! fields, syslog priorities and `SYSLOG_IDENTIFIER=rke2`, and no token, password or key. Without
//! a journal socket, `--log-format journald` falls back to stderr with one warning.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Map, Value};

const READY: Duration = Duration::from_secs(60);
const SERVER_SECRET: &str = "jrnl-server-secret-7f3a9c";
const AGENT_SECRET: &str = "jrnl-agent-secret-2b8e4d";
const WRONG_TOKEN: &str = "jrnl-wrong-token-51c0e7";
const WRONG_NODE_PASSWORD: &str = "jrnl-wrong-node-password-a94d";

fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// A stand-alone systemd-journald in its own mount namespace; stopped when dropped.
struct Journald {
    child: Child,
}

type Entry = Map<String, Value>;

impl Journald {
    fn start(dir: &Path) -> Journald {
        fs::create_dir_all(dir.join("run")).unwrap();
        let log = fs::File::create(dir.join("journald.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .arg(helper("journald-up.sh"))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start journald");
        // Owned by the guard from here on, so a failed wait still stops it.
        let mut journald = Journald { child };
        let socket = dir.join("run/socket");
        let start = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = journald.child.try_wait() {
                panic!(
                    "journald exited ({status}): {}",
                    fs::read_to_string(dir.join("journald.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(10), "journald socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        journald
    }

    /// `rke2 <args>` inside journald's mount namespace, where the journal socket is.
    fn rke2(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.child.id().to_string())
            .args(["-m", "--"])
            .arg(rke2_bin())
            .args(args)
            // Debug level too: no secret may appear at any level.
            .env(
                "RUST_LOG",
                "debug,h2=info,hyper=info,tower=info,zbus=warn,tonic=info",
            );
        cmd
    }

    /// Every entry in the journal.
    fn entries(&self) -> Vec<Entry> {
        let dir = format!("/proc/{}/root/run/log/journal", self.child.id());
        let out = Command::new("journalctl")
            .args(["-D", &dir, "-o", "json", "--all", "--no-pager"])
            .output()
            .expect("journalctl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .collect()
    }

    fn entries_of(&self, pid: u32) -> Vec<Entry> {
        let pid = pid.to_string();
        self.entries()
            .into_iter()
            .filter(|e| field(e, "_PID") == Some(pid.as_str()))
            .collect()
    }

    fn wait_message(&self, pid: u32, prefix: &str) {
        wait_for(READY, &format!("journal entry {prefix:?}"), || {
            self.entries_of(pid)
                .iter()
                .any(|e| field(e, "MESSAGE").is_some_and(|m| m.starts_with(prefix)))
                .then_some(())
        });
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(e: &'a Entry, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str)
}

/// A field's value as text; journalctl writes non-UTF-8 values as byte arrays.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_u64) => String::from_utf8_lossy(
            &items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b as u8)
                .collect::<Vec<u8>>(),
        )
        .into_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    }
}

/// The one entry whose MESSAGE starts with `prefix`, with a readable failure.
fn find<'a>(entries: &'a [Entry], prefix: &str, pred: impl Fn(&Entry) -> bool) -> &'a Entry {
    entries
        .iter()
        .find(|e| field(e, "MESSAGE").is_some_and(|m| m.starts_with(prefix)) && pred(e))
        .unwrap_or_else(|| {
            let messages: Vec<_> = entries.iter().filter_map(|e| field(e, "MESSAGE")).collect();
            panic!("no matching entry {prefix:?} among {messages:#?}")
        })
}

#[test]
fn native_entries_have_fields_priorities_and_no_secrets() {
    require_tool("etcd", "etcd-server");
    require_tool("curl", "curl");
    require_tool("journalctl", "systemd");
    require_tool("nsenter", "util-linux");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let journald = Journald::start(&root.path().join("journal"));

    // Server, logging natively (log-format journald: stderr is not a journal stream here).
    let dir = root.path().join("s1");
    fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config("s1", block.ip(1), &dir);
    entries.push(("token", SERVER_SECRET.into()));
    entries.push(("agent-token", AGENT_SECRET.into()));
    entries.push(("log-format", "journald".into()));
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let cmd = journald.rke2(&["server", "--config", &config.display().to_string()]);
    let mut server = Daemon::spawn("s1", cmd, &dir.join("log"));
    journald.wait_message(server.pid(), "ready:");
    let ca = dir.join("data/server/tls/server-ca.crt");
    let agent_token = fs::read_to_string(dir.join("data/server/agent-token")).unwrap();

    // Agent, joining through the server.
    let agent_config = write_agent_config(
        "a1",
        block.ip(2),
        root.path(),
        &format!("https://{}:9345", block.ip(1)),
        agent_token.trim(),
    );
    let mut text_config = fs::read_to_string(&agent_config).unwrap();
    text_config.push_str("log-format: journald\n");
    fs::write(&agent_config, text_config).unwrap();
    let cmd = journald.rke2(&["agent", "--config", &agent_config.display().to_string()]);
    let mut agent = Daemon::spawn("a1", cmd, &root.path().join("a1/log"));
    journald.wait_message(agent.pid(), "ready:");
    let node_password = fs::read_to_string(root.path().join("a1/node-password")).unwrap();

    // Things that log warnings: a wrong token, a wrong node password, a SIGHUP.
    let supervisor = format!("https://{}:9345", block.ip(1));
    let (code, _) = curl(
        &format!("{supervisor}/v1-rke2/server-bootstrap"),
        &ca,
        &["-u", &format!("server:{WRONG_TOKEN}")],
    );
    assert_eq!(code, 401);
    // A well-formed CSR, so the refusal is the node password's (a garbage body is a 400 first).
    let csr = root.path().join("a1.csr");
    fs::write(&csr, rke2::pki::new_key_and_csr().unwrap().1).unwrap();
    let (code, body) = curl(
        &format!("{supervisor}/v1-rke2/serving-kubelet.crt"),
        &ca,
        &[
            "-u",
            &format!("node:{AGENT_SECRET}"),
            "-H",
            "rke2-Node-Name: a1",
            "-H",
            &format!("rke2-Node-Password: {WRONG_NODE_PASSWORD}"),
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", csr.display()),
        ],
    );
    assert_eq!(code, 403, "{body}");
    server.signal("HUP");
    journald.wait_message(server.pid(), "SIGHUP received");
    assert_eq!(agent.stop(), Some(0));
    assert_eq!(server.stop(), Some(0));

    let all = journald.entries();
    let (spid, apid) = (server.pid().to_string(), agent.pid().to_string());
    let ours: Vec<Entry> = all
        .iter()
        .filter(|e| matches!(field(e, "_PID"), Some(p) if p == spid || p == apid))
        .cloned()
        .collect();
    let of = |pid: &str| -> Vec<Entry> {
        ours.iter()
            .filter(|e| field(e, "_PID") == Some(pid))
            .cloned()
            .collect()
    };
    let (server_entries, agent_entries) = (of(&spid), of(&apid));
    assert!(server_entries.len() > 20 && agent_entries.len() > 5);

    // Every entry: native protocol, our identifier, a syslog priority; ours carry a component.
    let mut priorities = BTreeSet::new();
    for e in &ours {
        assert_eq!(field(e, "_TRANSPORT"), Some("journal"), "{e:?}");
        assert_eq!(field(e, "SYSLOG_IDENTIFIER"), Some("rke2"), "{e:?}");
        let p = field(e, "PRIORITY").unwrap_or_default().to_string();
        assert!(["3", "4", "6", "7"].contains(&p.as_str()), "{e:?}");
        priorities.insert(p);
        if field(e, "TARGET").is_some_and(|t| t.starts_with("rke2")) {
            assert!(e.contains_key("RKE2_COMPONENT"), "no component: {e:?}");
            assert!(e.contains_key("CODE_FILE") && e.contains_key("CODE_LINE"));
        }
    }
    // Info 6 and debug 7 (syslog convention, not tracing-journald's 5/6), warnings 4.
    for p in ["4", "6", "7"] {
        assert!(priorities.contains(p), "no entry with PRIORITY={p}");
    }

    // Structured fields: component, node, etcd member, peer address.
    let registered = find(&server_entries, "registered node", |_| true);
    assert_eq!(field(registered, "RKE2_COMPONENT"), Some("node-agent"));
    assert_eq!(field(registered, "RKE2_NODE"), Some("s1"));
    assert_eq!(field(registered, "PRIORITY"), Some("6"));
    let registered = find(&agent_entries, "registered node", |_| true);
    assert_eq!(field(registered, "RKE2_NODE"), Some("a1"));
    let etcd = find(&server_entries, "etcd started", |_| true);
    assert_eq!(field(etcd, "RKE2_COMPONENT"), Some("etcd"));
    assert!(
        field(etcd, "RKE2_ETCD_MEMBER").is_some_and(|m| m.starts_with("s1-")),
        "{etcd:?}"
    );
    let chatter = find(&server_entries, "etcd: ", |e| {
        field(e, "PRIORITY") == Some("7")
    });
    assert!(chatter.contains_key("RKE2_DETAIL"), "{chatter:?}");
    let issued = find(&server_entries, "issued kubelet client certificate", |_| {
        true
    });
    assert_eq!(field(issued, "RKE2_NODE"), Some("a1"));
    assert!(
        field(issued, "RKE2_REMOTE_ADDR")
            .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok()),
        "{issued:?}"
    );
    let rejected = find(&server_entries, "node password rejected", |_| true);
    assert_eq!(field(rejected, "PRIORITY"), Some("4"));
    assert_eq!(field(rejected, "RKE2_NODE"), Some("a1"));
    assert!(rejected.contains_key("RKE2_REMOTE_ADDR"));
    let hup = find(&server_entries, "SIGHUP received", |_| true);
    assert_eq!(field(hup, "PRIORITY"), Some("4"));
    assert_eq!(field(hup, "RKE2_COMPONENT"), Some("daemon"));
    find(&server_entries, "stopping", |e| {
        field(e, "RKE2_NODE") == Some("s1")
    });

    // No secret in any field of any entry (the whole journal, not only ours).
    let token = fs::read_to_string(dir.join("data/server/token")).unwrap();
    let secrets = [
        SERVER_SECRET,
        AGENT_SECRET,
        WRONG_TOKEN,
        WRONG_NODE_PASSWORD,
        node_password.trim(),
        token.trim(),
        agent_token.trim(),
        "PRIVATE KEY",
    ];
    for e in &all {
        for (k, v) in e {
            let v = text(v);
            for s in secrets {
                assert!(!v.contains(s), "secret {s:?} logged in {k}: {v}");
            }
        }
    }
}

#[test]
fn without_a_journal_socket_logs_go_to_stderr_with_one_warning() {
    require_tool("etcd", "etcd-server");
    require_tool("unshare", "util-linux");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("s1");
    fs::create_dir_all(&dir).unwrap();
    let mut entries = server_config("s1", block.ip(1), &dir);
    entries.push(("token", "fallback-token".into()));
    entries.push(("log-format", "journald".into()));
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    // An empty /run/systemd in a private mount namespace: no journal socket at all.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /run/systemd && exec "$0" "$@""#)
        .arg(rke2_bin())
        .args(["server", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info");
    let mut server = Daemon::spawn("s1", cmd, &dir.join("log"));
    server.wait_log("ready: 1 server, 1 node", READY);
    assert_eq!(server.stop(), Some(0));
    let log = server.log_text();
    assert_eq!(
        log.matches("the journal socket /run/systemd/journal/socket is not available")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("starting server (Init)"), "{log}");
}
