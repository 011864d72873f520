//! `rke2 etcd-snapshot …` (over D-Bus to the running server, as RKE2's CLI goes to its
//! server) and `rke2 certificate …` (offline on the data directory, as RKE2 does).

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{AdminCliError, json, values};
use crate::config::spec::{self, Role};
use crate::config::{ConfigSources, sources};
use crate::dbus::client;
use crate::etcd::snapshot::SnapshotInfo;

/// `rke2 etcd-snapshot`.
pub fn etcd_snapshot_command() -> Command {
    let output = Arg::new("output")
        .long("output")
        .short('o')
        .value_name("FORMAT")
        .value_parser(["table", "json", "yaml"])
        .default_value("table")
        .help("Output format");
    Command::new("etcd-snapshot")
        .about("Save, list, delete and prune etcd snapshots of the running server (over D-Bus)")
        .arg(super::node_arg())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("save")
                .about("Save a snapshot now; prints its path")
                .arg(
                    Arg::new("name")
                        .long("name")
                        .value_name("NAME")
                        .default_value("on-demand")
                        .help("Name prefix (<name>-<node>-<unix time>)"),
                ),
        )
        .subcommand(
            Command::new("list")
                .visible_aliases(["ls", "l"])
                .about("List snapshots")
                .arg(output),
        )
        .subcommand(
            Command::new("delete")
                .about("Delete snapshots by name")
                .arg(
                    Arg::new("names")
                        .value_name("NAME")
                        .required(true)
                        .num_args(1..),
                ),
        )
        .subcommand(
            Command::new("prune")
                .about("Delete all but the newest snapshots with a name prefix")
                .arg(
                    Arg::new("name")
                        .long("name")
                        .value_name("NAME")
                        .default_value("on-demand")
                        .help("Name prefix of the snapshots to prune"),
                )
                .arg(
                    Arg::new("snapshot-retention")
                        .long("snapshot-retention")
                        .value_name("COUNT")
                        .default_value("5")
                        .help("Number of snapshots to keep"),
                ),
        )
}

/// `rke2 certificate`.
pub fn certificate_command() -> Command {
    let data_dir = || {
        Arg::new("data-dir")
            .long("data-dir")
            .short('d')
            .value_name("DIR")
            .help(format!(
                "Data directory (default: from the config file, else {})",
                spec::DEFAULT_DATA_DIR
            ))
    };
    let config = || {
        Arg::new("config")
            .long("config")
            .short('c')
            .value_name("FILE")
            .help(format!(
                "Config file (default {})",
                spec::DEFAULT_CONFIG_FILE
            ))
    };
    Command::new("certificate")
        .about("Check and rotate this node's certificates (offline, on the data directory)")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("check")
                .about("Show every leaf certificate with its expiry; warns within 120 days")
                .arg(data_dir())
                .arg(config())
                .arg(
                    Arg::new("output")
                        .long("output")
                        .short('o')
                        .value_name("FORMAT")
                        .value_parser(["table", "json"])
                        .default_value("table")
                        .help("Output format"),
                ),
        )
        .subcommand(
            Command::new("rotate")
                .about("Back up server/tls to server/tls-<unix time> and remove leaf certificates; the next start regenerates them. Run while rke2 is stopped")
                .arg(data_dir())
                .arg(config())
                .arg(
                    Arg::new("service")
                        .long("service")
                        .short('s')
                        .value_name("SERVICE")
                        .value_delimiter(',')
                        .action(ArgAction::Append)
                        .help(format!(
                            "Services to rotate (default: all): {}",
                            crate::pki::rotate::SERVICES.join(", ")
                        )),
                ),
        )
        .subcommand(
            Command::new("rotate-ca")
                .about("Write new certificate authorities (cross-signed by the current ones) into the cluster's bootstrap data; each server uses them from its next start")
                .arg(data_dir())
                .arg(config())
                .arg(
                    Arg::new("path")
                        .long("path")
                        .value_name("DIR")
                        .required(true)
                        .help("Directory with the new CA files, laid out as server/tls (server-ca.crt/.key, client-ca.crt/.key, request-header-ca.crt/.key, etcd/server-ca.crt/.key, etcd/peer-ca.crt/.key)"),
                )
                .arg(
                    Arg::new("force")
                        .long("force")
                        .action(ArgAction::SetTrue)
                        .help("Accept new CAs that are not signed by the current ones (nodes trusting the old CAs then stop trusting the cluster)"),
                )
                .arg(
                    Arg::new("server")
                        .long("server")
                        .short('s')
                        .value_name("URL")
                        .default_value("https://127.0.0.1:9345")
                        .help("Supervisor URL of a running server of the cluster"),
                ),
        )
}

/// `rke2 etcd-snapshot list` as a table.
pub fn render_snapshots(list: &[SnapshotInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.node.clone(),
                s.size.to_string(),
                chrono::DateTime::from_timestamp(s.created, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    client::render_table(&["Name", "Node", "Size", "Created"], &rows)
}

pub(super) async fn run_etcd_snapshot(
    sub: &str,
    args: &ArgMatches,
) -> Result<String, AdminCliError> {
    let retention = match sub {
        "prune" => {
            let v = args
                .get_one::<String>("snapshot-retention")
                .expect("defaulted");
            crate::config::ops::parse_retention(v)
                .map_err(|e| AdminCliError::Usage(format!("--snapshot-retention: {e}")))?
        }
        _ => 0,
    };
    let conn = client::connect().await?;
    let target = args.get_one::<String>("node").map(String::as_str);
    let cluster = client::cluster(&conn, target).await?;
    let name = || args.get_one::<String>("name").cloned().unwrap_or_default();
    match sub {
        "save" => {
            let path = cluster.save_snapshot(&name()).await?;
            Ok(format!("{path}\n"))
        }
        "list" => {
            let list = cluster.list_snapshots().await?;
            Ok(match args.get_one::<String>("output").map(String::as_str) {
                Some("json") => json(&list),
                Some("yaml") => serde_yaml::to_string(&list).expect("serialises"),
                _ => render_snapshots(&list),
            })
        }
        "delete" => {
            let mut out = String::new();
            for n in values(args, "names") {
                cluster.delete_snapshot(&n).await?;
                out.push_str(&format!("Snapshot {n} deleted\n"));
            }
            Ok(out)
        }
        "prune" => {
            let deleted = cluster.prune_snapshots(&name(), retention).await?;
            Ok(deleted
                .iter()
                .map(|n| format!("Snapshot {n} pruned\n"))
                .collect())
        }
        other => unreachable!("clap only accepts known subcommands, not {other}"),
    }
}

/// The data directory: `--data-dir`, else the config file's (and `RKE2_DATA_DIR`), else the
/// default.
fn data_dir(args: &ArgMatches) -> Result<PathBuf, AdminCliError> {
    if let Some(d) = args.get_one::<String>("data-dir") {
        return Ok(PathBuf::from(d));
    }
    let sources = ConfigSources {
        config_file: args.get_one::<String>("config").map(PathBuf::from),
        env: super::env_snapshot(),
        flags: Vec::new(),
    };
    let raw = sources::merge(&sources, Role::Server)
        .map_err(|e| AdminCliError::Usage(format!("configuration error: {e}")))?;
    Ok(PathBuf::from(
        raw.values
            .get("data-dir")
            .and_then(|v| v.last())
            .map(|r| r.value.clone())
            .unwrap_or_else(|| spec::DEFAULT_DATA_DIR.to_string()),
    ))
}

pub(super) fn run_certificate(sub: &str, args: &ArgMatches) -> Result<String, AdminCliError> {
    use crate::pki::rotate::{self, RotateError};
    let dir = data_dir(args)?;
    let failed = |e: RotateError| match e {
        RotateError::UnknownService(_) => AdminCliError::Usage(e.to_string()),
        other => AdminCliError::Failed(other.to_string()),
    };
    match sub {
        "check" => {
            let leaves = rotate::check(&dir).map_err(failed)?;
            for l in leaves.iter().filter(|l| l.status != "OK") {
                eprintln!(
                    "WARNING: {} ({}) {} on {}",
                    l.file,
                    l.subject,
                    if l.status == "EXPIRED" {
                        "expired"
                    } else {
                        "expires within 120 days"
                    },
                    l.expires
                );
            }
            Ok(match args.get_one::<String>("output").map(String::as_str) {
                Some("json") => json(&leaves),
                _ => render_leaves(&leaves),
            })
        }
        "rotate" => {
            let services = values(args, "service");
            // Held while files move, so a server cannot start on a half-rotated directory.
            // (An agent-only data directory has no server to wait for.)
            let _lock = if dir.join("server").is_dir() {
                Some(crate::server::data_lock::acquire(&dir).map_err(|e| {
                    AdminCliError::Failed(format!("{e}; certificate rotate works offline"))
                })?)
            } else {
                None
            };
            let r =
                rotate::rotate(&dir, &services, chrono::Utc::now().timestamp()).map_err(failed)?;
            let mut out = String::new();
            for b in &r.backups {
                out.push_str(&format!("Certificates backed up to {}\n", b.display()));
            }
            for f in &r.removed {
                out.push_str(&format!("Removed {}\n", f.display()));
            }
            out.push_str("Successfully backed up certificates; restart rke2 to regenerate them\n");
            Ok(out)
        }
        "rotate-ca" => rotate_ca(&dir, args),
        other => unreachable!("clap only accepts known subcommands, not {other}"),
    }
}

/// `rke2 certificate rotate-ca`: reads and checks the new CA files locally, then uploads them
/// with this server's token (from `<data-dir>/server/token`) to a running server, which checks
/// them against the cluster's current CAs and writes them into the bootstrap data.
fn rotate_ca(data_dir: &std::path::Path, args: &ArgMatches) -> Result<String, AdminCliError> {
    use crate::pki::rotate_ca;
    let dir = PathBuf::from(args.get_one::<String>("path").expect("required"));
    let force = args.get_flag("force");
    let server = args.get_one::<String>("server").expect("defaulted").clone();
    let new = rotate_ca::read_dir(&dir).map_err(|e| AdminCliError::Usage(e.to_string()))?;
    // The files' own checks (CA, matching key) before anything is sent; the cross-signing
    // check needs the cluster's current CAs and is made by the server.
    rotate_ca::validate(&crate::bootstrap::BootstrapData::default(), &new, true)
        .map_err(|e| AdminCliError::Usage(e.to_string()))?;
    let token_file = data_dir.join("server").join("token");
    let token = std::fs::read_to_string(&token_file).map_err(|e| {
        AdminCliError::Failed(format!(
            "cannot read the server token {}: {e} (run this on a server)",
            token_file.display()
        ))
    })?;
    let token = crate::token::JoinToken::parse(token.trim())
        .map_err(|e| AdminCliError::Failed(format!("{}: {e}", token_file.display())))?;
    let mut upload = crate::bootstrap::BootstrapData::default();
    for (name, bytes) in &new {
        upload.insert(name, bytes);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminCliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let resp = rt
        .block_on(async {
            let access =
                crate::clientaccess::ClusterAccess::connect(&server, &token, "server", None)
                    .await?;
            access
                .request(
                    http::Method::PUT,
                    &format!("{}?force={force}", crate::protocol::CERT_CACERTS),
                    &[("content-type", "application/json".to_string())],
                    Some(upload.to_json()),
                )
                .await
        })
        .map_err(|e| AdminCliError::Failed(e.to_string()))?;
    Ok(resp.text())
}

/// `rke2 certificate check` as a table.
fn render_leaves(leaves: &[crate::pki::rotate::LeafStatus]) -> String {
    let rows: Vec<Vec<String>> = leaves
        .iter()
        .map(|l| {
            vec![
                l.file.clone(),
                l.service.clone(),
                l.subject.clone(),
                l.expires.clone(),
                client::human_duration(chrono::Duration::seconds(l.seconds_left)),
                l.status.clone(),
            ]
        })
        .collect();
    client::render_table(
        &[
            "FILENAME",
            "SERVICE",
            "SUBJECT",
            "EXPIRES",
            "RESIDUAL TIME",
            "STATUS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_table_has_one_row_per_leaf() {
        let leaf = crate::pki::rotate::LeafStatus {
            file: "client-admin.crt".into(),
            service: "admin".into(),
            subject: "system:admin".into(),
            not_after: 0,
            expires: "2027-01-01T00:00:00Z".into(),
            seconds_left: 3 * 86400,
            status: "WARNING".into(),
        };
        let table = render_leaves(&[leaf]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("FILENAME"), "{table}");
        assert_eq!(lines.len(), 2, "{table}");
        assert!(
            lines[1].contains("system:admin") && lines[1].contains("WARNING"),
            "{table}"
        );
    }
}
