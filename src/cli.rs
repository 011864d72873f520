//! The command line: `rke2 server`, `rke2 agent` (their flags generated from the settings table
//! in [`crate::config::spec`], so flags, config keys and `RKE2_*` variables never drift) and the
//! admin subcommands that talk to a running daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::spec::{self, Role, Shape};
use crate::config::{ConfigSources, LogFormat};

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
            k.starts_with("RKE2_") || matches!(k.as_str(), "PATH" | "JOURNAL_STREAM" | "RUST_LOG")
        })
        .collect()
}

/// Logging choice before the config is loaded (so config errors are printed plainly).
pub fn early_log_format() -> LogFormat {
    LogFormat::Text
}
