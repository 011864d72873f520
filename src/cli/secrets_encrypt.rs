//! `rke2 secrets-encrypt status|enable|disable|prepare|rotate|reencrypt` (over D-Bus to the
//! running server, `io.rke2.Cluster1`), printing what RKE2's command prints.

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{AdminCliError, json};
use crate::cluster::encryption_stages::EncryptionStatus;
use crate::dbus::client;

fn force_arg() -> Arg {
    Arg::new("force")
        .long("force")
        .short('f')
        .action(ArgAction::SetTrue)
        .help("Skip the stage order and the check that every server has the current keys")
}

/// `rke2 secrets-encrypt`.
pub fn command() -> Command {
    Command::new("secrets-encrypt")
        .about("Control encryption of Secrets at rest on the running server (over D-Bus)")
        .arg(super::node_arg())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("status")
                .about("Print the encryption status, rotation stage and keys")
                .arg(super::output_arg()),
        )
        .subcommand(Command::new("enable").about("Encrypt new Secret writes"))
        .subcommand(
            Command::new("disable")
                .about("Write new Secrets in plain (run reencrypt --force to decrypt the rest)"),
        )
        .subcommand(
            Command::new("prepare")
                .about("Add a new key that every server can read (stage prepare)")
                .arg(force_arg()),
        )
        .subcommand(
            Command::new("rotate")
                .about("Make the prepared key the one new writes use (stage rotate)")
                .arg(force_arg()),
        )
        .subcommand(
            Command::new("reencrypt")
                .about("Rewrite every Secret with the current key, then remove the old keys")
                .arg(force_arg()),
        )
}

/// RKE2's status text: three lines, then the key table (Go tabwriter, padding 2).
pub fn render_status(s: &EncryptionStatus) -> String {
    let mut out = format!(
        "Encryption Status: {}\nCurrent Rotation Stage: {}\nServer Encryption Hashes: {}\n\n",
        if s.enabled { "Enabled" } else { "Disabled" },
        s.stage,
        s.hash_message
    );
    let mut rows = vec![
        ["Active".to_string(), "Key Type".into(), "Name".into()],
        ["------".to_string(), "--------".into(), "----".into()],
    ];
    for k in &s.keys {
        rows.push([
            if k.active { " *".into() } else { String::new() },
            k.key_type.clone(),
            k.name.clone(),
        ]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0) + 2;
    let (w0, w1) = (width(0), width(1));
    for r in &rows {
        out.push_str(&format!("{:w0$}{:w1$}{}\n", r[0], r[1], r[2]));
    }
    out
}

pub(super) async fn run(sub: &str, args: &ArgMatches) -> Result<String, AdminCliError> {
    let conn = client::connect().await?;
    let target = args.get_one::<String>("node").map(String::as_str);
    let cluster = client::cluster(&conn, target).await?;
    let force = args.try_get_one::<bool>("force").ok().flatten() == Some(&true);
    let message = match sub {
        "status" => {
            let status = cluster.get_encryption_status().await?;
            return Ok(match args.get_one::<String>("output").map(String::as_str) {
                Some("json") => json(&status),
                _ => render_status(&status),
            });
        }
        "enable" => cluster.enable_secrets_encryption().await?,
        "disable" => cluster.disable_secrets_encryption().await?,
        "prepare" => cluster.prepare_secrets_encryption(force).await?,
        "rotate" => cluster.rotate_secrets_encryption(force).await?,
        "reencrypt" => cluster.reencrypt_secrets(force).await?,
        other => unreachable!("clap only accepts known subcommands, not {other}"),
    };
    Ok(format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::encryption_stages::KeyInfo;

    #[test]
    fn status_reads_like_rke2() {
        let s = EncryptionStatus {
            enabled: true,
            stage: "prepare".into(),
            hashes_match: true,
            hash_message: "All hashes match".into(),
            keys: vec![
                KeyInfo {
                    active: true,
                    key_type: "AES-CBC".into(),
                    name: "aescbckey".into(),
                },
                KeyInfo {
                    active: false,
                    key_type: "AES-CBC".into(),
                    name: "aescbckey-2026-12-02T03:04:05Z".into(),
                },
            ],
        };
        assert_eq!(
            render_status(&s),
            "Encryption Status: Enabled\n\
             Current Rotation Stage: prepare\n\
             Server Encryption Hashes: All hashes match\n\
             \n\
             Active  Key Type  Name\n\
             ------  --------  ----\n \
             *      AES-CBC   aescbckey\n        \
             AES-CBC   aescbckey-2026-12-02T03:04:05Z\n"
        );
    }

    #[test]
    fn force_is_a_flag_of_the_stage_commands() {
        let m = command()
            .try_get_matches_from(["secrets-encrypt", "rotate", "--force"])
            .unwrap();
        let (sub, args) = m.subcommand().unwrap();
        assert_eq!(sub, "rotate");
        assert!(args.get_flag("force"));
        assert!(
            command()
                .try_get_matches_from(["secrets-encrypt", "status", "--force"])
                .is_err()
        );
        assert!(
            command()
                .try_get_matches_from(["secrets-encrypt", "later"])
                .is_err()
        );
    }
}
