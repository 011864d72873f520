//! Shell-level tests of `scripts/local-cluster.sh`, the README's quick start: the real script
//! with the real binary, etcd, HAProxy and kubectl, each test on its own loopback addresses and
//! state dir (`RKE2_LOCAL_NET`, `RKE2_LOCAL_DIR`), the binary under test given as
//! `RKE2_LOCAL_BIN` so nothing is installed or rebuilt.

mod common;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster.sh")
}

/// One local cluster's settings; stops whatever the script started when dropped.
struct LocalCluster {
    dir: tempfile::TempDir,
    block: AddrBlock,
    fg: Option<Child>,
    out: PathBuf,
}

impl LocalCluster {
    fn new() -> LocalCluster {
        require_tool("haproxy", "haproxy");
        require_tool("kubectl", "kubectl");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("fg.out");
        LocalCluster {
            block: AddrBlock::new(),
            dir,
            fg: None,
            out,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn net(&self) -> String {
        let ip = self.block.ip(1).octets();
        format!("{}.{}.{}", ip[0], ip[1], ip[2])
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        self.block.ip(host)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script_path())
            .args(args)
            .env("RKE2_LOCAL_DIR", self.state())
            .env("RKE2_LOCAL_NET", self.net())
            .env("RKE2_LOCAL_BIN", rke2_bin())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the script to completion (another shell).
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run local-cluster.sh")
    }

    /// Starts `up` in the foreground of its own "shell", output in `self.out`.
    fn up(&mut self, env: &[(&str, &str)]) {
        let log = fs::File::create(&self.out).unwrap();
        let mut cmd = self.command(&["up"]);
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.fg = Some(cmd.spawn().expect("start local-cluster.sh up"));
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_output(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let text = self.output();
            if text.contains(needle) {
                return;
            }
            if let Some(st) = self.fg.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("the script exited ({st}) before printing {needle:?}:\n{text}");
            }
            assert!(
                start.elapsed() < timeout,
                "no {needle:?} after {timeout:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the foreground script to exit; its exit code.
    fn wait_fg_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.fg.as_mut().expect("script started");
        wait_for(timeout, "the foreground script to exit", || {
            child.try_wait().unwrap().map(|st| st.code().unwrap_or(-1))
        })
    }

    fn pid(&self, part: &str) -> u32 {
        fs::read_to_string(self.state().join("pids").join(part))
            .unwrap_or_else(|e| panic!("pid file of {part}: {e}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Processes whose command line names this cluster's state dir.
    fn leftovers(&self) -> Vec<u32> {
        pids_matching(&self.state().display().to_string())
    }

    fn kubeconfig(&self) -> PathBuf {
        self.state().join("kubeconfig.yaml")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        if let Some(c) = self.fg.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.leftovers() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--help` prints usage and succeeds, a wrong command is a usage error, `down` with nothing
/// running says so, and `clean` does not claim to keep the state it deletes.
#[test]
fn script_usage_down_and_clean_messages() {
    let c = LocalCluster::new();
    let out = c.run(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("usage:"), "{}", text(&out));
    assert!(text(&out).contains("RKE2_LOCAL_DIR"), "{}", text(&out));
    let out = c.run(&["bogus"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let out = c.run(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no local cluster is running"),
        "{}",
        text(&out)
    );
    fs::create_dir_all(c.state().join("s1")).unwrap();
    let out = c.run(&["clean"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("state kept"), "{}", text(&out));
    assert!(!c.state().exists());
}

/// Servers that cannot start are reported at once with the end of their logs, and the script
/// exits with an error instead of waiting for minutes; nothing is left running.
#[test]
fn failing_servers_are_reported_with_their_logs() {
    let mut c = LocalCluster::new();
    // Servers read RKE2_* settings the script does not set: a bad one stops every server.
    // First run: s1 alone creates the cluster (the others wait for its full token).
    c.up(&[("RKE2_CLUSTER_CIDR", "not-a-cidr")]);
    let code = c.wait_fg_exit(Duration::from_secs(90));
    let out = c.output();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("!! s1 (pid") && out.contains("exited with status 64"),
        "{out}"
    );
    assert!(
        out.contains("invalid CIDR \"not-a-cidr\""),
        "no log tail:\n{out}"
    );
    assert!(out.contains("s1 could not create the cluster"), "{out}");
    assert!(c.leftovers().is_empty(), "left: {:?}", c.leftovers());
    // With a full token every server starts at once; each failure is reported.
    fs::write(
        c.state().join("token"),
        "K10aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::server:secret\n",
    )
    .unwrap();
    c.up(&[("RKE2_CLUSTER_CIDR", "not-a-cidr")]);
    let code = c.wait_fg_exit(Duration::from_secs(90));
    let out = c.output();
    assert_eq!(code, 1, "{out}");
    for s in ["s1", "s2", "s3"] {
        assert!(
            out.contains(&format!("!! {s} (pid")),
            "{s} not reported:\n{out}"
        );
    }
    assert!(out.contains("every server has exited"), "{out}");
    assert!(!out.contains("is up"), "{out}");
    wait_for(Duration::from_secs(30), "no process left", || {
        c.leftovers().is_empty().then_some(())
    });
}

/// The admin client certificate of a server, for curl.
fn admin_curl_args(state: &Path) -> Vec<String> {
    let tls = state.join("s2/data/server/tls");
    vec![
        "--cert".into(),
        tls.join("client-admin.crt").display().to_string(),
        "--key".into(),
        tls.join("client-admin.key").display().to_string(),
    ]
}

fn etcdctl_in(state: &Path, server: &str, ip: Ipv4Addr, args: &[&str]) -> Output {
    etcdctl_at(&state.join(server).join("data"), ip, args)
}

/// Makes sure s1's etcd is not the leader, so killing s1 is a non-leader kill.
fn move_leadership_off_s1(c: &LocalCluster) {
    let status = |server: &str, ip: Ipv4Addr| -> Option<(u64, u64)> {
        let out = etcdctl_in(
            &c.state(),
            server,
            ip,
            &["endpoint", "status", "-w", "json"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let st = &v[0]["Status"];
        Some((st["header"]["member_id"].as_u64()?, st["leader"].as_u64()?))
    };
    let (s1_id, leader) = wait_for(Duration::from_secs(30), "etcd status of s1", || {
        status("s1", c.ip(1))
    });
    if s1_id != leader {
        return;
    }
    let (s2_id, _) = wait_for(Duration::from_secs(30), "etcd status of s2", || {
        status("s2", c.ip(2))
    });
    let out = etcdctl_in(
        &c.state(),
        "s1",
        c.ip(1),
        &["move-leader", &format!("{s2_id:x}")],
    );
    assert!(out.status.success(), "move-leader: {}", text(&out));
    wait_for(Duration::from_secs(30), "s1 to lose leadership", || {
        status("s1", c.ip(1)).filter(|(id, l)| id != l)
    });
}

/// Writes through the fixed address as fast as curl allows, recording (start, end, ok).
fn write_loop(
    lb: Ipv4Addr,
    ca: PathBuf,
    auth: Vec<String>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
) -> Vec<(Duration, Duration, bool)> {
    let url = format!("https://{lb}:6443/api/v1/namespaces/default/configmaps/stall-probe");
    let mut samples = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let body = format!("{{\"data\":{{\"n\":\"{n}\"}}}}");
        let start = epoch.elapsed();
        let mut extra: Vec<&str> = auth.iter().map(String::as_str).collect();
        extra.extend([
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "-d",
            &body,
        ]);
        let (code, _) = curl(&url, &ca, &extra);
        samples.push((start, epoch.elapsed(), code == 200));
    }
    samples
}

/// The quick start as a user runs it: `up`, a second `up` while the first runs (refused, the
/// running cluster untouched), a `kill -9` of s1 (reported at once, the rest keeps serving
/// through the fixed address; the longest write stall is measured and printed), `down` from
/// another shell (the foreground script exits at once, no process left), then a second `up`
/// that keeps the previous run's logs and judges readiness from live heartbeats: an agent that
/// cannot start is reported instead of being counted Ready from the state etcd kept.
#[test]
fn quick_start_lifecycle() {
    let mut c = LocalCluster::new();
    let state = c.state();
    c.up(&[]);
    c.wait_output("Local rke2-rs cluster is up.", Duration::from_secs(240));

    // A full token, so joining nodes verify the CA instead of trusting it on first use.
    let token = fs::read_to_string(state.join("token")).unwrap();
    assert!(token.starts_with("K10"), "token is not a full K10 token");
    for n in ["s1", "s2", "s3", "a1"] {
        let log = fs::read_to_string(state.join(n).join("log")).unwrap();
        assert!(
            !log.contains("trusted on first use"),
            "{n} trusted the CA on first use"
        );
    }

    // Up twice: refused, and the running cluster keeps its processes and logs.
    let pids: Vec<(String, u32)> = ["haproxy", "s1", "s2", "s3", "a1"]
        .iter()
        .map(|p| (p.to_string(), c.pid(p)))
        .collect();
    let log_len = fs::metadata(state.join("s1/log")).unwrap().len();
    let out = c.run(&["up"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("already running"), "{}", text(&out));
    assert!(
        text(&out).contains("local-cluster.sh down"),
        "{}",
        text(&out)
    );
    for (p, pid) in &pids {
        assert!(alive(*pid), "{p} was stopped by the refused second up");
        assert_eq!(c.pid(p), *pid, "{p}'s pid file was rewritten");
    }
    assert!(fs::metadata(state.join("s1/log")).unwrap().len() >= log_len);

    // s1 is not special: kill -9 it (as a non-leader) while writing through the fixed address.
    move_leadership_off_s1(&c);
    kubectl_ok(
        &c.kubeconfig(),
        &["create", "configmap", "stall-probe", "--from-literal=n=0"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let writer = {
        let (lb, ca, auth, stop) = (
            c.ip(100),
            state.join("s2/data/server/tls/server-ca.crt"),
            admin_curl_args(&state),
            stop.clone(),
        );
        std::thread::spawn(move || write_loop(lb, ca, auth, stop, epoch))
    };
    wait_for(Duration::from_secs(10), "writes to start", || {
        (epoch.elapsed() > Duration::from_secs(2)).then_some(())
    });
    let s1 = c.pid("s1");
    let killed_at = epoch.elapsed();
    Command::new("kill")
        .args(["-9", &s1.to_string()])
        .status()
        .unwrap();
    c.wait_output(
        &format!("!! s1 (pid {s1}) exited with status 137"),
        Duration::from_secs(10),
    );
    wait_for(
        Duration::from_secs(15),
        "5 s of writes after the kill",
        || (epoch.elapsed() > killed_at + Duration::from_secs(5)).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    let samples = writer.join().unwrap();
    let after: Vec<_> = samples.iter().filter(|s| s.1 >= killed_at).collect();
    let failed = after.iter().filter(|s| !s.2).count();
    let longest_request = after.iter().map(|s| s.1 - s.0).max().unwrap_or_default();
    // The longest time without a completed write around the kill, failures included.
    let mut last_ok = samples
        .iter()
        .filter(|s| s.2 && s.1 < killed_at)
        .map(|s| s.1)
        .max()
        .unwrap_or(killed_at);
    let mut longest_gap = Duration::ZERO;
    for s in after.iter().filter(|s| s.2) {
        longest_gap = longest_gap.max(s.1 - last_ok);
        last_ok = s.1;
    }
    println!(
        "write stall through the fixed address after kill -9 of a non-leader server: longest gap between completed writes {:.3} s, longest request {:.3} s, {} of {} writes failed",
        longest_gap.as_secs_f64(),
        longest_request.as_secs_f64(),
        failed,
        after.len()
    );
    assert!(
        after.len() > 5,
        "too few writes after the kill: {}",
        after.len()
    );
    // A sanity bound, far above the measured figure; HAProxy without redispatch stalled 3 s.
    assert!(
        longest_gap < Duration::from_millis(2500),
        "writes stalled {longest_gap:?} after a server died"
    );
    for p in ["haproxy", "s2", "s3", "a1"] {
        assert!(alive(c.pid(p)), "{p} stopped after s1 was killed");
    }
    assert!(c.fg.as_mut().unwrap().try_wait().unwrap().is_none());

    // `down` from another shell: the foreground script exits at once, nothing is left.
    let out = c.run(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(c.wait_fg_exit(Duration::from_secs(30)), 0, "{}", c.output());
    assert_eq!(
        c.output().matches("local cluster stopped").count(),
        1,
        "{}",
        c.output()
    );
    assert!(c.leftovers().is_empty(), "left: {:?}", c.leftovers());

    // Second run: the first run's logs are kept, and a node that cannot start is reported
    // rather than counted Ready from what etcd stored.
    let first_run_s2 = fs::read_to_string(state.join("s2/log")).unwrap();
    let blocker = TcpListener::bind((c.ip(11), 6444)).expect("occupy a1's load balancer port");
    c.up(&[]);
    c.wait_output("!! a1 (pid", Duration::from_secs(120));
    c.wait_output("Local rke2-rs cluster is up.", Duration::from_secs(240));
    assert!(c.output().contains("Not running: a1"), "{}", c.output());
    assert_eq!(
        fs::read_to_string(state.join("s2/log.1")).unwrap(),
        first_run_s2
    );
    drop(blocker);
    let out = c.run(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    c.wait_fg_exit(Duration::from_secs(30));
    assert!(c.leftovers().is_empty(), "left: {:?}", c.leftovers());
}
