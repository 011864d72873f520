//! The command line: `rke2 server`, `rke2 agent` (their flags generated from the settings table
//! in [`crate::config::spec`], so flags, config keys and `RKE2_*` variables never drift) and the
//! admin subcommands that talk to a running daemon.

pub mod ops;
pub mod secrets_encrypt;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::ConfigSources;
use crate::config::spec::{self, Role, Shape};
use crate::dbus::client::{self, ClientError};

/// Exit code for bad usage or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: i32 = 1;

fn settings_args(role: Role) -> Vec<Arg> {
    let mut args = vec![
        Arg::new("config")
            .long("config")
            .short('c')
            .value_name("FILE")
            .help(format!(
                "Config file (default {}; also RKE2_CONFIG_FILE); drop-ins in <file>.d/*.yaml",
                spec::DEFAULT_CONFIG_FILE
            ))
            .action(ArgAction::Set),
    ];
    for s in spec::SETTINGS.iter().filter(|s| s.roles.includes(role)) {
        let mut help = s.help.to_string();
        if let Some(d) = s.default {
            help.push_str(&format!(" (default: {d})"));
        }
        help.push_str(&format!(" [${}]", s.env_var()));
        let mut a = Arg::new(s.key).long(s.key).help(help);
        if let Some(c) = s.short {
            a = a.short(c);
        }
        a = match s.shape {
            Shape::Bool => a
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_name("BOOL")
                .action(ArgAction::Set),
            Shape::Scalar => a.value_name(s.value_name).action(ArgAction::Set),
            Shape::List | Shape::CommaList => a.value_name(s.value_name).action(ArgAction::Append),
        };
        args.push(a);
    }
    args
}

/// The clap command tree.
pub fn command() -> Command {
    Command::new("rke2")
        .version(env!("CARGO_PKG_VERSION"))
        .about("RKE2-style highly available Kubernetes server/agent runtime for systemd and NixOS")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("server")
                .about("Run a server node (etcd, Kubernetes API, supervisor)")
                .args(settings_args(Role::Server)),
        )
        .subcommand(
            Command::new("agent")
                .about("Run an agent node")
                .args(settings_args(Role::Agent)),
        )
        .subcommand(token_command())
        .subcommand(node_command())
        .subcommand(ops::etcd_snapshot_command())
        .subcommand(ops::certificate_command())
        .subcommand(secrets_encrypt::command())
        .subcommand(crate::runtime::killall::command())
}

fn output_arg() -> Arg {
    Arg::new("output")
        .long("output")
        .short('o')
        .value_name("FORMAT")
        .value_parser(["text", "json"])
        .default_value("text")
        .help("Output format")
}

/// `--node`: which server on the bus to ask (its per-node bus name), for hosts or test buses
/// with several servers.
fn node_arg() -> Arg {
    Arg::new("node")
        .long("node")
        .value_name("NODE")
        .global(true)
        .help("Ask this server node (bus name io.rke2.Server.<NODE>) instead of the one owning io.rke2.Server")
}

fn token_command() -> Command {
    Command::new("token")
        .about("Manage bootstrap tokens and the server token of the running server (over D-Bus)")
        .arg(node_arg())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("create")
                .about("Create a bootstrap token agents can join with; prints the full token")
                .arg(
                    Arg::new("ttl")
                        .long("ttl")
                        .value_name("DURATION")
                        .default_value("24h")
                        .help("Lifetime, e.g. 30m, 24h; 0 = never expires"),
                )
                .arg(
                    Arg::new("description")
                        .long("description")
                        .value_name("TEXT")
                        .default_value("")
                        .help("A description shown by `token list`"),
                )
                .arg(
                    Arg::new("usages")
                        .long("usages")
                        .value_name("LIST")
                        .value_delimiter(',')
                        .action(ArgAction::Append)
                        .help("Comma-separated usages: signing,authentication (default: both)"),
                ),
        )
        .subcommand(
            Command::new("list")
                .about("List bootstrap tokens (ids only, never secrets)")
                .arg(output_arg()),
        )
        .subcommand(
            Command::new("delete")
                .about("Delete bootstrap tokens given as <id>, <id>.<secret> or full tokens")
                .arg(
                    Arg::new("tokens")
                        .value_name("TOKEN")
                        .required(true)
                        .num_args(1..),
                ),
        )
        .subcommand(
            Command::new("rotate")
                .about("Rotate the server token; prints the new full token")
                .arg(
                    Arg::new("new-token")
                        .long("new-token")
                        .value_name("TOKEN")
                        .help("The new token (default: generated)"),
                ),
        )
}

fn node_command() -> Command {
    let name = || Arg::new("name").value_name("NODE").required(true);
    Command::new("node")
        .about("Manage the nodes of the running server's cluster (over D-Bus)")
        .arg(node_arg())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(Command::new("list").about("List nodes").arg(output_arg()))
        .subcommand(
            Command::new("cordon")
                .about("Mark a node unschedulable")
                .arg(name()),
        )
        .subcommand(
            Command::new("uncordon")
                .about("Mark a node schedulable")
                .arg(name()),
        )
        .subcommand(
            Command::new("delete")
                .about("Delete a node (a server node's etcd member is removed too)")
                .arg(name()),
        )
}

fn values(m: &ArgMatches, id: &str) -> Vec<String> {
    m.get_many::<String>(id)
        .map(|v| v.cloned().collect())
        .unwrap_or_default()
}

/// Runs `rke2 token ...` / `rke2 node ...`; `None` for the daemon subcommands. Returns the exit
/// code: 0, [`EXIT_FAILURE`] when the daemon refused or could not be reached, [`EXIT_USAGE`]
/// for bad arguments.
pub fn run_admin(command: &str, matches: &ArgMatches) -> Option<i32> {
    if command == "killall" {
        return Some(crate::runtime::killall::run(matches));
    }
    if !matches!(
        command,
        "token" | "node" | "etcd-snapshot" | "certificate" | "secrets-encrypt"
    ) {
        return None;
    }
    let (sub, args) = matches.subcommand().expect("subcommand required");
    if command == "certificate" {
        return Some(finish(command, sub, ops::run_certificate(sub, args)));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rke2: cannot start the async runtime: {e}");
            return Some(EXIT_FAILURE);
        }
    };
    let result = rt.block_on(async {
        match command {
            "token" => run_token(sub, args).await,
            "etcd-snapshot" => ops::run_etcd_snapshot(sub, args).await,
            "secrets-encrypt" => secrets_encrypt::run(sub, args).await,
            _ => run_node(sub, args).await,
        }
    });
    Some(finish(command, sub, result))
}

/// Prints the outcome of an admin command; returns its exit code.
fn finish(command: &str, sub: &str, result: Result<String, AdminCliError>) -> i32 {
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(AdminCliError::Usage(e)) => {
            eprintln!("rke2 {command} {sub}: {e}");
            EXIT_USAGE
        }
        Err(AdminCliError::Client(e)) => {
            eprintln!("rke2 {command} {sub}: {e}");
            EXIT_FAILURE
        }
        Err(AdminCliError::Failed(e)) => {
            eprintln!("rke2 {command} {sub}: {e}");
            EXIT_FAILURE
        }
    }
}

#[derive(Debug)]
enum AdminCliError {
    Usage(String),
    Client(ClientError),
    /// A local operation failed (offline commands).
    Failed(String),
}

impl From<ClientError> for AdminCliError {
    fn from(e: ClientError) -> Self {
        AdminCliError::Client(e)
    }
}

impl From<zbus::Error> for AdminCliError {
    fn from(e: zbus::Error) -> Self {
        AdminCliError::Client(e.into())
    }
}

/// A token lifetime in whole seconds: `0` = never expires, else a duration like `24h`.
pub fn parse_ttl(s: &str) -> Result<i64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    let d = crate::config::parse_duration(s)?;
    Ok(d.as_secs_f64().round() as i64)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("serialises") + "\n"
}

async fn run_token(sub: &str, args: &ArgMatches) -> Result<String, AdminCliError> {
    let conn = client::connect().await?;
    let target = args.get_one::<String>("node").map(String::as_str);
    let tokens = client::tokens(&conn, target).await?;
    match sub {
        "create" => {
            let ttl = args.get_one::<String>("ttl").expect("defaulted");
            let ttl = parse_ttl(ttl).map_err(|e| AdminCliError::Usage(format!("--ttl: {e}")))?;
            let description = args.get_one::<String>("description").expect("defaulted");
            let usages = values(args, "usages");
            let usages: Vec<&str> = usages.iter().map(String::as_str).collect();
            let token = tokens.create_token(ttl, description, &usages).await?;
            Ok(format!("{token}\n"))
        }
        "list" => {
            let list = tokens.list_tokens().await?;
            Ok(match args.get_one::<String>("output").map(String::as_str) {
                Some("json") => json(&list),
                _ => client::render_tokens(&list, chrono::Utc::now()),
            })
        }
        "delete" => {
            let mut out = String::new();
            for t in values(args, "tokens") {
                tokens.delete_token(&t).await?;
                let id = crate::cluster::admin::token_id_of(&t).unwrap_or(t);
                out.push_str(&format!("bootstrap token \"{id}\" deleted\n"));
            }
            Ok(out)
        }
        "rotate" => {
            let new = args
                .get_one::<String>("new-token")
                .cloned()
                .unwrap_or_default();
            let token = tokens.rotate_server_token(&new).await?;
            eprintln!(
                "Token rotated; every running server has written it to its server/token. \
                 Put it in each node's token setting before that node's next restart"
            );
            Ok(format!("{token}\n"))
        }
        other => unreachable!("clap only accepts known subcommands, not {other}"),
    }
}

async fn run_node(sub: &str, args: &ArgMatches) -> Result<String, AdminCliError> {
    let conn = client::connect().await?;
    let target = args.get_one::<String>("node").map(String::as_str);
    let nodes = client::nodes(&conn, target).await?;
    let name = || args.get_one::<String>("name").cloned().unwrap_or_default();
    match sub {
        "list" => {
            let list = nodes.list_nodes().await?;
            Ok(match args.get_one::<String>("output").map(String::as_str) {
                Some("json") => json(&list),
                _ => client::render_nodes(&list, chrono::Utc::now()),
            })
        }
        "cordon" => {
            nodes.cordon_node(&name()).await?;
            Ok(format!("node/{} cordoned\n", name()))
        }
        "uncordon" => {
            nodes.uncordon_node(&name()).await?;
            Ok(format!("node/{} uncordoned\n", name()))
        }
        "delete" => {
            let member = nodes.delete_node(&name()).await?;
            Ok(if member.is_empty() {
                format!("node/{} deleted\n", name())
            } else {
                format!("node/{} deleted (etcd member {member} removed)\n", name())
            })
        }
        other => unreachable!("clap only accepts known subcommands, not {other}"),
    }
}

/// Collects flag values into config sources, preserving per-key order.
pub fn sources_from(
    matches: &ArgMatches,
    role: Role,
    env: &BTreeMap<String, String>,
) -> ConfigSources {
    let mut flags = Vec::new();
    for s in spec::SETTINGS.iter().filter(|s| s.roles.includes(role)) {
        if matches.value_source(s.key) == Some(clap::parser::ValueSource::CommandLine)
            && let Some(values) = matches.get_many::<String>(s.key)
        {
            for v in values {
                flags.push((s.key.to_string(), v.clone()));
            }
        }
    }
    ConfigSources {
        config_file: matches.get_one::<String>("config").map(PathBuf::from),
        env: env.clone(),
        flags,
    }
}

/// The `RKE2_*` variables and the few others the daemon reads, captured once at start.
pub fn env_snapshot() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("RKE2_")
                || matches!(
                    k.as_str(),
                    "PATH" | "JOURNAL_STREAM" | "RUST_LOG" | "MALLOC_ARENA_MAX"
                )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_durations_and_zero() {
        assert_eq!(parse_ttl("0"), Ok(0));
        assert_eq!(parse_ttl("24h"), Ok(86400));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert!(parse_ttl("-5s").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn admin_commands_parse() {
        let m = command()
            .try_get_matches_from([
                "rke2",
                "token",
                "create",
                "--ttl",
                "1h",
                "--usages",
                "signing,authentication",
            ])
            .unwrap();
        let (_, token) = m.subcommand().unwrap();
        let (_, create) = token.subcommand().unwrap();
        assert_eq!(values(create, "usages"), vec!["signing", "authentication"]);
        assert!(
            command()
                .try_get_matches_from(["rke2", "node", "cordon"])
                .is_err()
        );
        assert!(
            command()
                .try_get_matches_from(["rke2", "node", "list", "-o", "yaml"])
                .is_err()
        );
        assert!(
            command()
                .try_get_matches_from(["rke2", "token", "delete", "abcdef", "ghijkl"])
                .is_ok()
        );
    }
}
