//! sd_notify (issue 5): the test plays the service manager — its own `NOTIFY_SOCKET` (with
//! sender credentials, as systemd checks them for `NotifyAccess=main`) and `WATCHDOG_USEC` —
//! and watches the real binary: STATUS= phases in words, READY=1 only once kubectl already
//! works, WATCHDOG=1 at half the interval, STOPPING=1 on SIGTERM, nothing sent by etcd, SIGHUP
//! survived; the same for agents; learner and quorum phases in a three-server cluster.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(60);

fn is_ready(m: &Notification) -> bool {
    m.get("READY") == Some("1")
}

fn notify_env<'a>(socket: &'a str, watchdog_usec: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", watchdog_usec)]
}

/// Index of the first status starting with `prefix`, or a failure listing them all.
fn status_index(statuses: &[String], prefix: &str) -> usize {
    statuses
        .iter()
        .position(|s| s.starts_with(prefix))
        .unwrap_or_else(|| panic!("no STATUS={prefix}... among {statuses:#?}"))
}

/// Every datagram came from the daemon itself (so never from etcd, which speaks sd_notify too
/// and would send READY=1 long before the node is ready).
fn assert_all_from(rx: &NotifyReceiver, pid: u32) {
    for m in rx.messages() {
        assert_eq!(m.pid, pid, "notification {:?} from another process", m.text);
    }
}

/// kubectl, once: the node is registered and Ready at the moment READY=1 arrived.
fn assert_node_listed(kubeconfig: &Path, node: &str) {
    let out = kubectl(kubeconfig, &["get", "node", node, "--no-headers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.split_whitespace().nth(1) == Some("Ready"),
        "READY=1 was sent but kubectl get node {node} does not work yet: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn server_status_ready_watchdog_and_stopping() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let sock = root.path().join("notify.sock");
    let rx = NotifyReceiver::bind(&sock);
    let sock = sock.display().to_string();
    // WATCHDOG_USEC 2 s: WATCHDOG=1 expected every second.
    let mut s1 = start_server_env(
        "s1",
        block.ip(1),
        root.path(),
        &[("token", "notify-test-token".into())],
        &notify_env(&sock, "2000000"),
    );
    let pid = s1.daemon.pid();

    let ready = rx.wait_for(READY, "READY=1", is_ready);
    assert_eq!(ready.pid, pid, "READY=1 sent by another process (etcd?)");
    assert_node_listed(&s1.kubeconfig, "s1");
    assert_eq!(ready.get("STATUS"), Some("ready: 1 server, 1 node"));
    let statuses = rx.statuses();
    let etcd = status_index(&statuses, "starting etcd");
    let registering = status_index(&statuses, "registering node");
    let ready_at = status_index(&statuses, "ready: ");
    assert!(
        etcd < registering && registering < ready_at,
        "{statuses:#?}"
    );
    // A slow start may send watchdog pets before READY=1 (harmless: systemd activates the
    // watchdog once start-up completes); every other message before READY=1 names the phase.
    let before_ready: Vec<Notification> = rx
        .messages()
        .into_iter()
        .take_while(|m| !is_ready(m))
        .filter(|m| m.get("WATCHDOG").is_none())
        .collect();
    assert!(
        before_ready.iter().all(|m| m.get("STATUS").is_some()),
        "{before_ready:#?}"
    );

    // Periodic WATCHDOG=1, never further apart than the interval itself.
    let pets_after = |since: Instant| -> Vec<Instant> {
        rx.messages()
            .iter()
            .filter(|m| m.at > since && m.get("WATCHDOG") == Some("1"))
            .map(|m| m.at)
            .collect()
    };
    wait_for(Duration::from_secs(10), "three WATCHDOG=1", || {
        (pets_after(ready.at).len() >= 3).then_some(())
    });
    let pets = pets_after(ready.at);
    for pair in pets.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(500) && gap < Duration::from_secs(2),
            "WATCHDOG=1 gap {gap:?} (expected about 1 s)"
        );
    }

    // SIGHUP is not a reason to die (reload is not supported): still running and petting.
    s1.daemon.signal("HUP");
    let hup = Instant::now();
    wait_for(Duration::from_secs(10), "WATCHDOG=1 after SIGHUP", || {
        (!pets_after(hup).is_empty()).then_some(())
    });
    assert!(s1.daemon.running(), "SIGHUP stopped the daemon");
    s1.daemon
        .wait_log("SIGHUP received", Duration::from_secs(10));

    // SIGTERM: STOPPING=1, then a clean exit.
    s1.daemon.signal("TERM");
    let stopping = rx.wait_for(Duration::from_secs(20), "STOPPING=1", |m| {
        m.get("STOPPING") == Some("1")
    });
    assert_eq!(s1.daemon.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(stopping.at > ready.at);
    assert_all_from(&rx, pid);
    assert!(
        pids_matching(&s1.data_dir().display().to_string()).is_empty(),
        "etcd outlived the daemon"
    );
}

#[test]
fn agent_status_ready_after_registration_and_stopping() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = start_server(
        "s1",
        block.ip(1),
        root.path(),
        &[("token", "agent-notify-token".into())],
    );
    s1.daemon.wait_log("ready:", READY);

    let sock = root.path().join("notify.sock");
    let rx = NotifyReceiver::bind(&sock);
    let sock = sock.display().to_string();
    let config = write_agent_config(
        "a1",
        block.ip(2),
        root.path(),
        &s1.supervisor(),
        &s1.token(),
    );
    let mut a1 = Daemon::start(
        "a1",
        "agent",
        &config,
        &root.path().join("a1/log"),
        &notify_env(&sock, "2000000"),
    );
    let ready = rx.wait_for(READY, "agent READY=1", is_ready);
    assert_node_listed(&s1.kubeconfig, "a1");
    assert!(
        ready
            .get("STATUS")
            .is_some_and(|s| s.starts_with("ready: joined through https://")),
        "{ready:?}"
    );
    let statuses = rx.statuses();
    let certs = status_index(&statuses, "requesting node certificates");
    let registering = status_index(&statuses, "registering node");
    assert!(certs < registering, "{statuses:#?}");
    wait_for(Duration::from_secs(10), "agent WATCHDOG=1", || {
        rx.messages()
            .iter()
            .any(|m| m.at > ready.at && m.get("WATCHDOG") == Some("1"))
            .then_some(())
    });

    a1.signal("TERM");
    rx.wait_for(Duration::from_secs(20), "agent STOPPING=1", |m| {
        m.get("STOPPING") == Some("1")
    });
    assert_eq!(a1.wait_exit(Duration::from_secs(30)), Some(0));
    assert_all_from(&rx, a1.pid());
}

#[test]
fn joining_learner_and_quorum_phases() {
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = start_server(
        "s1",
        block.ip(1),
        root.path(),
        &[("token", "quorum-token".into())],
    );
    s1.daemon.wait_log("ready:", READY);
    let join = [
        ("server", s1.supervisor()),
        ("token", "quorum-token".to_string()),
    ];

    // A joining server says it joins as a learner, waits for promotion, then is ready.
    let sock2 = root.path().join("notify-s2.sock");
    let rx2 = NotifyReceiver::bind(&sock2);
    let sock2 = sock2.display().to_string();
    let mut s2 = start_server_env(
        "s2",
        block.ip(2),
        root.path(),
        &join,
        &[("NOTIFY_SOCKET", sock2.as_str())],
    );
    let ready2 = rx2.wait_for(READY, "s2 READY=1", is_ready);
    let statuses = rx2.statuses();
    let learner = status_index(&statuses, "joining the etcd cluster as a learner");
    let ready_at = status_index(&statuses, "ready: 2 servers, 2 nodes");
    assert!(learner < ready_at, "{statuses:#?}");
    assert!(
        ready2
            .get("STATUS")
            .is_some_and(|s| s.contains("even number")),
        "two servers must be flagged: {ready2:?}"
    );
    let mut s3 = start_server("s3", block.ip(3), root.path(), &join);
    s3.daemon.wait_log("ready:", READY);

    // Whole cluster down; s1 comes back alone: no quorum, and STATUS= says how far off it is.
    for s in [&mut s3, &mut s2, &mut s1] {
        assert_eq!(s.daemon.stop(), Some(0), "{}", s.daemon.log_tail());
    }
    let sock1 = root.path().join("notify-s1.sock");
    let rx1 = NotifyReceiver::bind(&sock1);
    let sock1 = sock1.display().to_string();
    s1.restart(&[("NOTIFY_SOCKET", sock1.as_str())]);
    rx1.wait_for(
        Duration::from_secs(30),
        "STATUS=waiting for quorum (1/3 servers)",
        |m| m.get("STATUS") == Some("waiting for quorum (1/3 servers)"),
    );
    assert!(
        !rx1.messages().iter().any(is_ready),
        "READY=1 without quorum"
    );

    // A second server back: quorum, and READY=1 with the cluster's real size.
    s2.restart(&[]);
    let ready1 = rx1.wait_for(READY, "s1 READY=1 after quorum", is_ready);
    assert_eq!(ready1.get("STATUS"), Some("ready: 3 servers, 3 nodes"));
    assert_node_listed(&s1.kubeconfig, "s1");

    // Quorum lost again after readiness: STATUS= says so (the unit stays active).
    assert_eq!(s2.daemon.stop(), Some(0), "{}", s2.daemon.log_tail());
    rx1.wait_for(
        Duration::from_secs(30),
        "STATUS=waiting for quorum (1/3 servers) after READY=1",
        |m| m.at > ready1.at && m.get("STATUS") == Some("waiting for quorum (1/3 servers)"),
    );
    assert!(s1.daemon.running());
}
