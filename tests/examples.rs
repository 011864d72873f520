//! Shipped samples are fixtures: every example config parses with the daemon's loader, and the
//! README shows them verbatim, so the docs cannot drift from what the daemon accepts.

use std::fs;
use std::path::{Path, PathBuf};

use rke2::config::{ConfigSources, load_agent, load_server};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies an example with its token-file pointed at a real temporary file.
fn staged(example: &Path, dir: &Path) -> PathBuf {
    let token = dir.join("token");
    fs::write(&token, "example-token\n").unwrap();
    let text = fs::read_to_string(example)
        .unwrap()
        .replace("/etc/rancher/rke2/token", &token.display().to_string());
    let out = dir.join("config.yaml");
    fs::write(&out, text).unwrap();
    out
}

fn sources(path: PathBuf) -> ConfigSources {
    ConfigSources {
        config_file: Some(path),
        ..Default::default()
    }
}

#[test]
fn example_configs_parse_without_warnings() {
    let d = tempfile::tempdir().unwrap();
    let server = load_server(&sources(staged(
        &root().join("examples/config.yaml"),
        d.path(),
    )))
    .unwrap();
    assert!(server.warnings.is_empty(), "{:?}", server.warnings);
    assert_eq!(server.config.node.node_name.as_deref(), Some("server-1"));
    assert_eq!(
        server.config.node.node_taints[0].to_string(),
        "CriticalAddonsOnly=true:NoExecute"
    );
    assert_eq!(
        server.config.node.token.as_ref().unwrap().expose(),
        "example-token"
    );

    let d = tempfile::tempdir().unwrap();
    let join = load_server(&sources(staged(
        &root().join("examples/joining-server/config.yaml"),
        d.path(),
    )))
    .unwrap();
    assert!(join.warnings.is_empty(), "{:?}", join.warnings);
    assert_eq!(
        join.config.node.server.as_ref().unwrap().url(),
        "https://rke2.example.internal:9345"
    );

    let d = tempfile::tempdir().unwrap();
    let agent = load_agent(&sources(staged(
        &root().join("examples/agent.yaml"),
        d.path(),
    )))
    .unwrap();
    assert!(agent.warnings.is_empty(), "{:?}", agent.warnings);
    assert_eq!(agent.config.node.node_labels[0].to_string(), "tier=web");
}

#[test]
fn readme_shows_the_examples_and_every_setting() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    for example in ["examples/config.yaml", "examples/agent.yaml"] {
        let text = fs::read_to_string(root().join(example)).unwrap();
        assert!(
            readme.contains(text.trim()),
            "README must show {example} verbatim"
        );
    }
    for s in rke2::config::spec::SETTINGS {
        assert!(
            readme.contains(&format!("`{}`", s.key)),
            "README must document the setting `{}`",
            s.key
        );
    }
}
