//! Bad configuration given to the real binary (issue 17, minor items): malformed tokens, a
//! huge `tls-san` list and broken YAML must each exit 64 with a message naming the source
//! (file and line, or flag) and the key, before anything is created on disk.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Runs `rke2 <role> --config <dir>/config.yaml --data-dir <dir>/data <args>` with `text` as
/// the config file, with no RKE2_* variables from the environment.
fn run(role: &str, dir: &Path, text: &[u8], args: &[&str]) -> Output {
    std::fs::write(dir.join("config.yaml"), text).unwrap();
    let mut cmd = Command::new(rke2_bin());
    cmd.arg(role)
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // Without --write-kubeconfig a server would write to /etc; keep it in the test dir too.
    if role == "server" {
        cmd.arg("--write-kubeconfig")
            .arg(dir.join("kubeconfig.yaml"));
    }
    cmd.output().unwrap()
}

/// Asserts exit 64, that stderr contains every needle, and that the directory holds only the
/// config file (no data dir, no kubeconfig, nothing half-written).
fn assert_refused(what: &str, dir: &Path, out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{what}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{what}: {n:?} not in {stderr}");
    }
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "config.yaml")
        .collect();
    assert!(left.is_empty(), "{what}: created {left:?}");
    stderr
}

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn malformed_tokens_exit_64_and_create_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = dir.join("config.yaml").display().to_string();

    // A short hash in the config file: file, line and key named; the password never printed.
    let out = run(
        "server",
        dir,
        b"node-name: s1\ntoken: K10abc::server:hunter2-secret\n",
        &[],
    );
    let err = assert_refused(
        "short hash",
        dir,
        &out,
        &[&format!("{cfg}:2"), "key \"token\"", "got 3"],
    );
    assert!(!err.contains("hunter2-secret"), "the token leaked: {err}");

    // Right length, not hex: says which character, not "expected 64 ..., got 64".
    let bad = format!("K10{}x::server:pw", &HASH[..63]);
    let out = run("server", dir, b"", &["--token", &bad]);
    let err = assert_refused(
        "non-hex hash",
        dir,
        &out,
        &[
            "flag --token",
            "character 64 of 64 is not a hexadecimal digit",
        ],
    );
    assert!(!err.contains("got 64"), "{err}");

    // A bootstrap token cannot be the server token.
    let out = run("server", dir, b"", &["--token", "abcdef.0123456789abcdef"]);
    assert_refused("bootstrap server token", dir, &out, &["flag --token"]);

    // agent-token in a full format with a bad hash.
    let out = run(
        "server",
        dir,
        format!("token: pw\nagent-token: K10{}::node:pw\n", &HASH[..20]).as_bytes(),
        &[],
    );
    assert_refused(
        "agent-token",
        dir,
        &out,
        &[&format!("{cfg}:2"), "key \"agent-token\"", "got 20"],
    );

    // Agents: the join token's hash is checked before the data dir or the node password exist.
    let out = run(
        "agent",
        dir,
        b"server: https://127.0.0.1:1\n",
        &["--token", "K10zz::node:pw"],
    );
    assert_refused("agent token", dir, &out, &["flag --token", "got 2"]);
}

#[test]
fn huge_tls_san_list_is_refused_before_any_file_is_written() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut text = String::from("token: pw\ntls-san:\n");
    for i in 0..20_000 {
        text.push_str(&format!("  - san{i}.example.test\n"));
    }
    let out = run("server", dir, text.as_bytes(), &[]);
    let cfg = dir.join("config.yaml").display().to_string();
    assert_refused(
        "20,000 SANs",
        dir,
        &out,
        &[
            // The 1,001st entry: the list starts on line 3.
            &format!("{cfg}:1003"),
            "key \"tls-san\"",
            "too many entries: 20000",
            "at most 1000",
        ],
    );
}

#[test]
fn yaml_errors_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let cfg = dir.join("config.yaml").display().to_string();
    let mut bomb = String::from("token: pw\nnode-name: s1\nx0: &x0 [a,a,a,a,a,a,a,a,a]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x{i}: &x{i} [*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p},*x{p}]\n"
        ));
    }
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        (
            "duplicate key",
            b"token: pw\nnode-name: s1\n# again\ntoken: other\n".to_vec(),
            vec![
                format!("{cfg}:4"),
                "key \"token\"".into(),
                "duplicate key".into(),
            ],
        ),
        (
            "two documents",
            b"token: pw\n---\nnode-name: s1\n".to_vec(),
            vec![format!("{cfg}:2"), "second YAML document".into()],
        ),
        (
            "non-UTF-8",
            b"token: pw\nnode-name: s1\nnode-label: [caf\xe9=1]\n".to_vec(),
            vec![format!("{cfg}:3"), "not valid UTF-8".into()],
        ),
        (
            "alias bomb",
            bomb.into_bytes(),
            vec![format!("{cfg}:4"), "alias".into()],
        ),
    ];
    for (what, text, needles) in cases {
        for role in ["server", "agent"] {
            let out = run(role, dir, &text, &[]);
            let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
            let err = assert_refused(&format!("{what} ({role})"), dir, &out, &needles);
            assert!(
                !err.contains(":0:") && !err.contains(&format!("{cfg}:1:")),
                "{err}"
            );
        }
    }
}
