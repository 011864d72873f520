//! Shutdown signals against the real binary and real etcd: the first SIGTERM starts a graceful
//! shutdown, a second one (while that shutdown is under way) exits at once with a message, and
//! etcd does not outlive the daemon either way.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_second_sigterm_exits_at_once_with_a_message() {
    let (_root, _block, mut s1) = start_ready_server(
        "s1",
        &[("token", "second-signal-token".into())],
        Duration::from_secs(120),
    );
    let data = s1.data_dir().display().to_string();
    // A graceful shutdown waits for etcd to exit (up to its stop grace). Holding etcd stopped
    // keeps that shutdown under way, so the second SIGTERM surely lands during it.
    let etcd = etcd_pids(&data);
    assert!(!etcd.is_empty(), "no etcd process for {data}");
    signal_pids(&etcd, "STOP");
    s1.daemon.signal("TERM");
    s1.daemon.wait_log(
        "SIGTERM received, shutting down (send it again to exit at once)",
        Duration::from_secs(10),
    );
    s1.daemon.signal("TERM");
    let code = s1.daemon.wait_exit(Duration::from_secs(30));
    // Let etcd run again: the SIGTERM the daemon's exit sent it is delivered now.
    signal_pids(&etcd, "CONT");
    assert_eq!(code, Some(1), "{}", s1.daemon.log_tail());
    let log = s1.daemon.log_text();
    assert!(
        log.contains("SIGTERM received while shutting down: exiting at once"),
        "{}",
        s1.daemon.log_tail()
    );
    wait_for(
        Duration::from_secs(10),
        "etcd to exit after the daemon",
        || pids_matching(&data).is_empty().then_some(()),
    );
}

#[test]
fn one_sigint_shuts_down_cleanly() {
    let (_root, _block, mut s1) = start_ready_server(
        "s1",
        &[("token", "one-signal-token".into())],
        Duration::from_secs(120),
    );
    s1.daemon.signal("INT");
    assert_eq!(s1.daemon.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(!s1.daemon.log_text().contains("exiting at once"));
    let data = s1.data_dir().display().to_string();
    wait_for(
        Duration::from_secs(10),
        "etcd to exit after the daemon",
        || pids_matching(&data).is_empty().then_some(()),
    );
}

/// The etcd processes serving the data directory `data`.
fn etcd_pids(data: &str) -> Vec<u32> {
    pids_matching(data)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "etcd")
        })
        .collect()
}

/// Sends `signal` (a name such as `STOP`) to every pid in `pids`.
fn signal_pids(pids: &[u32], signal: &str) {
    for pid in pids {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }
}
