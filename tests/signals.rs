//! Shutdown signals against the real binary and real etcd: the first SIGTERM starts a graceful
//! shutdown, a second one (while that shutdown is under way) exits at once with a message, and
//! etcd does not outlive the daemon either way; a SIGTERM while a server or an agent is still
//! joining is a clean stop too.

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

/// SIGTERM while a server or an agent is still joining (its `server:` does not answer yet) is a
/// clean stop: exit status 0, so `systemctl stop` during a join does not leave a failed unit.
#[test]
fn sigterm_while_joining_is_a_clean_stop() {
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    // Nothing listens on host 9 of the block: every join attempt fails and is retried.
    let nowhere = format!("https://{}:9345", block.ip(9));
    let token = "joining-stop-token".to_string();
    let mut s2 = start_server(
        "s2",
        block.ip(2),
        root.path(),
        &[("server", nowhere.clone()), ("token", token.clone())],
    );
    let agent_config = write_agent_config("a1", block.ip(3), root.path(), &nowhere, &token);
    let mut a1 = Daemon::start(
        "a1",
        "agent",
        &agent_config,
        &root.path().join("a1").join("log"),
        &[],
    );
    for (daemon, stopped) in [
        (&mut s2.daemon, "shut down before the server was ready"),
        (&mut a1, "shut down before the agent was ready"),
    ] {
        daemon.wait_log("failed, retrying", Duration::from_secs(30));
        daemon.signal("TERM");
        assert_eq!(
            daemon.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            daemon.log_tail()
        );
        daemon.wait_log(stopped, Duration::from_secs(1));
    }
    let data = s2.data_dir().display().to_string();
    assert!(pids_matching(&data).is_empty(), "etcd outlived {data}");
}
