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
    s1.daemon.signal("TERM");
    s1.daemon.wait_log(
        "SIGTERM received, shutting down (send it again to exit at once)",
        Duration::from_secs(10),
    );
    // The graceful path keeps etcd for its shutdown delay, so this lands while it runs.
    s1.daemon.signal("TERM");
    assert_eq!(s1.daemon.wait_exit(Duration::from_secs(30)), Some(1));
    let log = s1.daemon.log_text();
    assert!(
        log.contains("SIGTERM received while shutting down: exiting at once"),
        "{}",
        s1.daemon.log_tail()
    );
    let data = s1.data_dir().display().to_string();
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
