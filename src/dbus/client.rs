//! The client side of the D-Bus API, used by the admin CLI (`rke2 token ...`, `rke2 node ...`):
//! proxies of `io.rke2.Nodes1` and `io.rke2.Tokens1` on `io.rke2.Server`, the translation of bus
//! errors into messages a person can act on (daemon not running, access denied), and the text
//! tables and JSON the commands print. Rendering is pure and unit-tested.

use chrono::{DateTime, Utc};
use zbus::{Connection, DBusError, proxy};

use super::SERVER_NAME;
use crate::cluster::admin::{NodeSummary, TokenSummary};

/// Proxy of `io.rke2.Nodes1`.
#[proxy(
    interface = "io.rke2.Nodes1",
    default_service = "io.rke2.Server",
    default_path = "/io/rke2/Server"
)]
pub trait Nodes1 {
    fn list_nodes(&self) -> zbus::Result<Vec<NodeSummary>>;
    fn get_node(&self, name: &str) -> zbus::Result<NodeSummary>;
    fn cordon_node(&self, name: &str) -> zbus::Result<()>;
    fn uncordon_node(&self, name: &str) -> zbus::Result<()>;
    fn label_node(&self, name: &str, labels: &[&str]) -> zbus::Result<()>;
    fn taint_node(&self, name: &str, taints: &[&str]) -> zbus::Result<()>;
    fn delete_node(&self, name: &str) -> zbus::Result<String>;
}

/// Proxy of `io.rke2.Tokens1`.
#[proxy(
    interface = "io.rke2.Tokens1",
    default_service = "io.rke2.Server",
    default_path = "/io/rke2/Server"
)]
pub trait Tokens1 {
    fn create_token(
        &self,
        ttl_seconds: i64,
        description: &str,
        usages: &[&str],
    ) -> zbus::Result<String>;
    fn list_tokens(&self) -> zbus::Result<Vec<TokenSummary>>;
    fn delete_token(&self, token: &str) -> zbus::Result<()>;
    fn rotate_server_token(&self, new_token: &str) -> zbus::Result<String>;
}

/// Proxy of the server's `io.rke2.Cluster1` (the snapshot methods).
#[proxy(
    interface = "io.rke2.Cluster1",
    default_service = "io.rke2.Server",
    default_path = "/io/rke2/Server"
)]
pub trait Cluster1 {
    fn save_snapshot(&self, name: &str) -> zbus::Result<String>;
    fn list_snapshots(&self) -> zbus::Result<Vec<crate::etcd::snapshot::SnapshotInfo>>;
    fn delete_snapshot(&self, name: &str) -> zbus::Result<()>;
    fn prune_snapshots(&self, prefix: &str, retention: u32) -> zbus::Result<Vec<String>>;
    fn get_encryption_status(
        &self,
    ) -> zbus::Result<crate::cluster::encryption_stages::EncryptionStatus>;
    fn enable_secrets_encryption(&self) -> zbus::Result<String>;
    fn disable_secrets_encryption(&self) -> zbus::Result<String>;
    fn prepare_secrets_encryption(&self, force: bool) -> zbus::Result<String>;
    fn rotate_secrets_encryption(&self, force: bool) -> zbus::Result<String>;
    fn reencrypt_secrets(&self, force: bool) -> zbus::Result<String>;
    #[zbus(property)]
    fn certificate_expiry(&self) -> zbus::Result<i64>;
}

/// Why an admin command failed, worded for the person running it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the D-Bus system bus: {0}. Is dbus running? (DBUS_SYSTEM_BUS_ADDRESS selects another bus)"
    )]
    NoBus(String),
    #[error(
        "{SERVER_NAME} is not on the system bus: is `rke2 server` running on this host (and connected to the same bus)? With --node, the node's own name io.rke2.Server.<node> is asked"
    )]
    NotRunning,
    #[error("access denied: {0}. This command must be run as root")]
    AccessDenied(String),
    #[error("{message} ({name})")]
    Remote { name: String, message: String },
    #[error("D-Bus: {0}")]
    Bus(String),
}

/// The name and message of an error reply, however zbus reports it.
fn reply_error(e: &zbus::Error) -> Option<(String, String)> {
    match e {
        zbus::Error::MethodError(name, desc, _) => {
            Some((name.to_string(), desc.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(f) => Some((
            f.name().to_string(),
            f.description().unwrap_or_default().to_string(),
        )),
        zbus::Error::DBus(d) => Some((
            d.name().to_string(),
            d.description().unwrap_or_default().to_string(),
        )),
        _ => None,
    }
}

impl From<zbus::Error> for ClientError {
    fn from(e: zbus::Error) -> Self {
        if let Some((name, message)) = reply_error(&e) {
            return match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => ClientError::NotRunning,
                "org.freedesktop.DBus.Error.AccessDenied" | "io.rke2.Error.AccessDenied" => {
                    ClientError::AccessDenied(message)
                }
                _ => ClientError::Remote { name, message },
            };
        }
        match e {
            zbus::Error::Connection(io, addr) => ClientError::NoBus(format!("{addr}: {io}")),
            zbus::Error::InputOutput(io) => ClientError::NoBus(io.to_string()),
            zbus::Error::Address(a) => ClientError::NoBus(a),
            other => ClientError::Bus(other.to_string()),
        }
    }
}

/// Connects to the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`).
pub async fn connect() -> Result<Connection, ClientError> {
    Connection::system().await.map_err(|e| match e {
        zbus::Error::Connection(io, addr) => ClientError::NoBus(format!("{addr}: {io}")),
        other => ClientError::NoBus(other.to_string()),
    })
}

/// The bus name the CLI talks to: the server node named with `--node` (its per-node name), else
/// whichever server owns the shared name.
pub fn destination(node: Option<&str>) -> String {
    match node {
        Some(n) => super::node_bus_name(SERVER_NAME, n),
        None => SERVER_NAME.to_string(),
    }
}

/// Proxy of the server's cluster interface on `node` (or the shared name).
pub async fn cluster(
    conn: &Connection,
    node: Option<&str>,
) -> Result<Cluster1Proxy<'static>, ClientError> {
    Ok(Cluster1Proxy::builder(conn)
        .destination(destination(node))
        .build()
        .await?)
}

/// Proxy of the server's nodes interface on `node` (or the shared name).
pub async fn nodes(
    conn: &Connection,
    node: Option<&str>,
) -> Result<Nodes1Proxy<'static>, ClientError> {
    Ok(Nodes1Proxy::builder(conn)
        .destination(destination(node))
        .build()
        .await?)
}

/// Proxy of the server's tokens interface on `node` (or the shared name).
pub async fn tokens(
    conn: &Connection,
    node: Option<&str>,
) -> Result<Tokens1Proxy<'static>, ClientError> {
    Ok(Tokens1Proxy::builder(conn)
        .destination(destination(node))
        .build()
        .await?)
}

/// A duration the way kubectl prints ages: `45s`, `12m`, `3h`, `5d`.
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Left-aligned columns separated by three spaces, like kubectl.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut text = line(header.to_vec());
    for r in rows {
        text.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    text
}

/// The STATUS column of a node, as kubectl shows it.
pub fn node_status(n: &NodeSummary) -> String {
    let mut s = match n.ready.as_str() {
        "True" => "Ready".to_string(),
        "Unknown" | "" => "Unknown".to_string(),
        _ => "NotReady".to_string(),
    };
    if n.unschedulable {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// `rke2 node list` as a table.
pub fn render_nodes(nodes: &[NodeSummary], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                node_status(n),
                if n.roles.is_empty() {
                    "<none>".into()
                } else {
                    n.roles.join(",")
                },
                parse_time(&n.created)
                    .map(|t| human_duration(now - t))
                    .unwrap_or_else(|| "<unknown>".into()),
                n.version.clone(),
                n.internal_ip.clone(),
                if n.etcd_member.is_empty() {
                    "<none>".into()
                } else {
                    n.etcd_member.clone()
                },
            ]
        })
        .collect();
    render_table(
        &[
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "ETCD-MEMBER",
        ],
        &rows,
    )
}

/// `rke2 token list` as a table (RKE2's columns; the TOKEN column shows only the id, since
/// secrets are never listed).
pub fn render_tokens(tokens: &[TokenSummary], now: DateTime<Utc>) -> String {
    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let (ttl, expires) = match parse_time(&t.expires) {
                None => ("<forever>".to_string(), "<never>".to_string()),
                Some(exp) if exp <= now => ("<expired>".to_string(), t.expires.clone()),
                Some(exp) => (human_duration(exp - now), t.expires.clone()),
            };
            vec![
                t.id.clone(),
                ttl,
                expires,
                none(&t.usages.join(",")),
                none(&t.description),
                none(&t.groups.join(",")),
            ]
        })
        .collect();
    render_table(
        &[
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA GROUPS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, ready: &str, cordoned: bool) -> NodeSummary {
        NodeSummary {
            name: name.into(),
            ready: ready.into(),
            unschedulable: cordoned,
            roles: vec!["control-plane".into(), "etcd".into()],
            internal_ip: "10.0.0.1".into(),
            version: "v1.32.4".into(),
            created: "2026-01-01T00:00:00Z".into(),
            etcd_member: "s1-0000abcd".into(),
            labels: BTreeMap::new(),
            taints: vec![],
        }
    }

    #[test]
    fn node_table_matches_kubectl_style() {
        let now = parse_time("2026-01-01T03:00:00Z").unwrap();
        let text = render_nodes(
            &[node("s1", "True", true), node("a1", "Unknown", false)],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME   STATUS"), "{text}");
        assert!(lines[1].contains("Ready,SchedulingDisabled"), "{text}");
        assert!(lines[1].contains("control-plane,etcd   3h"), "{text}");
        assert!(lines[2].contains("Unknown"), "{text}");
    }

    #[test]
    fn token_table_uses_rke2_placeholders() {
        let now = parse_time("2026-01-01T00:00:00Z").unwrap();
        let t = |id: &str, exp: &str, desc: &str| TokenSummary {
            id: id.into(),
            description: desc.into(),
            expires: exp.into(),
            usages: vec!["signing".into(), "authentication".into()],
            groups: vec![],
        };
        let text = render_tokens(
            &[
                t("abcdef", "", ""),
                t("ghijkl", "2026-01-02T00:00:00Z", "for a1"),
                t("mnopqr", "2025-12-31T00:00:00Z", ""),
            ],
            now,
        );
        assert!(text.starts_with("TOKEN"), "{text}");
        assert!(text.contains("abcdef   <forever>   <never>"), "{text}");
        assert!(text.contains("ghijkl   24h"), "{text}");
        assert!(text.contains("mnopqr   <expired>"), "{text}");
        assert!(text.contains("for a1"));
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(chrono::Duration::seconds(5)), "5s");
        assert_eq!(human_duration(chrono::Duration::seconds(600)), "10m");
        assert_eq!(human_duration(chrono::Duration::hours(30)), "30h");
        assert_eq!(human_duration(chrono::Duration::days(3)), "3d");
    }

    #[test]
    fn bus_errors_become_actionable_messages() {
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        assert!(matches!(ClientError::from(e), ClientError::NotRunning));
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("policy".into())));
        let c = ClientError::from(e);
        assert!(c.to_string().contains("must be run as root"), "{c}");
    }
}
