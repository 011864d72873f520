//! The node's local route for the `cluster-dns` address, which the node's DNS server
//! (crate::dns, docs/dns.md) answers on: a `local` route in the kernel's local table,
//! `ip route add local <ip> dev lo table local metric <m>`, where the metric is derived from
//! the node's data dir. Several nodes sharing one network namespace each add their own route
//! (same address, own metric) and remove only their own on shutdown, so the address stays
//! local while any of them runs. Pods reach it through their default route to the node; no NAT
//! is involved. The route is also written to `<data-dir>/agent/`[`ROUTE_FILE`], and it lives
//! with the node runtime so that `rke2 killall` can remove it after a daemon that could not
//! clean up.

use std::net::IpAddr;
use std::path::Path;

/// The file under `<data-dir>/agent/` naming the node's route (`<address> <metric>`).
pub const ROUTE_FILE: &str = "cluster-dns-route";

/// Lowest metric used; the data dir's hash is added to it.
const METRIC_BASE: u32 = 4000;
/// Range of the hash part of the metric.
const METRIC_SPAN: u32 = 1 << 20;

/// The route metric owned by the node with `data_dir`.
pub fn metric(data_dir: &Path) -> u32 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        data_dir.as_os_str().as_encoded_bytes(),
    );
    let b = digest.as_ref();
    METRIC_BASE + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % METRIC_SPAN
}

fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// The two changes this module makes to the local table.
#[derive(Clone, Copy)]
enum Change {
    Add,
    Del,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Del => "del",
        }
    }

    /// What `ip` says when the table already is as asked: the node's own route left by a
    /// daemon that did not stop cleanly (add), or a route already removed (del).
    fn already_done(self) -> &'static str {
        match self {
            Change::Add => "File exists",
            Change::Del => "No such process",
        }
    }
}

fn args(change: Change, ip: IpAddr, metric: u32) -> Vec<String> {
    let family = if ip.is_ipv4() { "-4" } else { "-6" };
    [
        family,
        "route",
        change.verb(),
        "local",
        &prefix(ip),
        "dev",
        "lo",
        "table",
        "local",
        "metric",
        &metric.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Why the address could not be made local.
#[derive(Debug, thiserror::Error)]
#[error("ip {args}: {message}")]
pub struct RouteError {
    args: String,
    message: String,
}

/// What an `ip` run means for `change`, shared by the daemon (async) and `rke2 killall`.
fn outcome(
    change: Change,
    args: &[String],
    out: std::io::Result<std::process::Output>,
) -> Result<(), RouteError> {
    let message = match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    if message.contains(change.already_done()) {
        return Ok(());
    }
    Err(RouteError {
        args: args.join(" "),
        message,
    })
}

async fn ip(change: Change, ip_addr: IpAddr, metric: u32) -> Result<(), RouteError> {
    let args = args(change, ip_addr, metric);
    let out = tokio::process::Command::new("ip")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    outcome(change, &args, out)
}

/// Adds this node's local route for `ip` (an existing identical route is this node's own, left
/// by a daemon that did not stop cleanly).
pub async fn add(ip_addr: IpAddr, metric: u32) -> Result<(), RouteError> {
    ip(Change::Add, ip_addr, metric).await
}

/// Removes this node's local route for `ip` (others' routes for the same address stay).
pub async fn remove(ip_addr: IpAddr, metric: u32) -> Result<(), RouteError> {
    ip(Change::Del, ip_addr, metric).await
}

/// Records the node's route for `rke2 killall`.
pub fn record(agent_dir: &Path, ip_addr: IpAddr, metric: u32) -> std::io::Result<()> {
    crate::fsutil::write_atomic_mkdir(
        &agent_dir.join(ROUTE_FILE),
        format!("{ip_addr} {metric}\n").as_bytes(),
        0o644,
    )
}

/// Forgets the record once the route is gone.
pub fn forget(agent_dir: &Path) {
    let _ = std::fs::remove_file(agent_dir.join(ROUTE_FILE));
}

/// The address and metric in a route record; `None` unless it is exactly that.
fn parse_record(text: &str) -> Option<(IpAddr, u32)> {
    let mut words = text.split_whitespace();
    let ip_addr = words.next()?.parse().ok()?;
    let metric = words.next()?.parse().ok()?;
    words.next().is_none().then_some((ip_addr, metric))
}

/// Removes the route a node recorded under `agent_dir` (for `rke2 killall`, which runs with
/// the daemon down); returns whether a recorded route was removed or already gone.
pub fn remove_recorded(agent_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(agent_dir.join(ROUTE_FILE)) else {
        return false;
    };
    let Some((ip_addr, metric)) = parse_record(&text) else {
        return false;
    };
    let args = args(Change::Del, ip_addr, metric);
    let out = std::process::Command::new("ip")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output();
    let gone = outcome(Change::Del, &args, out).is_ok();
    if gone {
        forget(agent_dir);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_dir_owns_its_own_metric() {
        let a = metric(Path::new("/var/lib/rancher/rke2"));
        let b = metric(Path::new("/tmp/x/s2/data"));
        assert_ne!(a, b);
        assert!((METRIC_BASE..METRIC_BASE + METRIC_SPAN).contains(&a));
        assert_eq!(a, metric(Path::new("/var/lib/rancher/rke2")));
        assert_eq!(
            args(Change::Add, "10.43.0.10".parse().unwrap(), 7).join(" "),
            "-4 route add local 10.43.0.10/32 dev lo table local metric 7"
        );
    }

    #[test]
    fn an_already_made_change_is_success_and_other_failures_name_the_command() {
        use std::os::unix::process::ExitStatusExt;
        let failed = |stderr: &str| {
            Ok(std::process::Output {
                status: std::process::ExitStatus::from_raw(2 << 8),
                stdout: Vec::new(),
                stderr: stderr.as_bytes().to_vec(),
            })
        };
        let a = args(Change::Del, "198.19.0.10".parse().unwrap(), 7);
        let exists = "RTNETLINK answers: File exists\n";
        let gone = "RTNETLINK answers: No such process\n";
        assert!(outcome(Change::Add, &a, failed(exists)).is_ok());
        assert!(outcome(Change::Del, &a, failed(gone)).is_ok());
        let err = outcome(Change::Del, &a, failed(exists)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ip -4 route del local 198.19.0.10/32 dev lo table local metric 7: \
             RTNETLINK answers: File exists"
        );
        assert!(outcome(Change::Add, &a, failed("Operation not permitted")).is_err());
        let missing = outcome(Change::Add, &a, Err(std::io::ErrorKind::NotFound.into()));
        assert!(missing.is_err());
    }

    #[test]
    fn route_records_round_trip_and_refuse_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "198.19.0.10".parse().unwrap();
        record(dir.path(), ip, 4711).unwrap();
        let text = std::fs::read_to_string(dir.path().join(ROUTE_FILE)).unwrap();
        assert_eq!(parse_record(&text), Some((ip, 4711)));
        assert_eq!(parse_record("198.19.0.10 4711 extra"), None);
        assert_eq!(parse_record("198.19.0.10; rm -rf / 1"), None);
        assert_eq!(
            parse_record("fd00::a 9"),
            Some(("fd00::a".parse().unwrap(), 9))
        );
        forget(dir.path());
        assert!(!dir.path().join(ROUTE_FILE).exists());
        assert!(
            !remove_recorded(dir.path()),
            "nothing recorded, nothing removed"
        );
    }
}
