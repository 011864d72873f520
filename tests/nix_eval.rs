//! The Nix side, tested for real with Debian's `nix-bin` (no nixpkgs, no daemon): every `.nix`
//! file parses, the evaluation cases in `nix/tests/eval.nix` hold, `nix/lib.nix`'s key table
//! matches `src/config/spec.rs`, and the config.yaml rendered for each host of a topology loads
//! with the daemon's own loader into the same typed config as the equivalent hand-written file.
//!
//! `--store dummy://` lets any user evaluate without a Nix daemon or a writable /nix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rke2::config::spec::{Roles, SETTINGS, Shape};
use rke2::config::{AgentConfig, ConfigSources, ServerConfig, load_agent, load_server};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `nix-instantiate` with `args`; Ok(stdout) or Err(stderr). A missing nix-instantiate
/// fails the test: silently skipping would let the Nix files rot unnoticed.
fn nix_instantiate(args: &[&str]) -> Result<String, String> {
    let out = match Command::new("nix-instantiate")
        .args(["--store", "dummy://"])
        .args(args)
        .current_dir(repo())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "nix-instantiate not found: these tests need Nix; install it with `apt-get install -y nix-bin`"
        ),
        Err(e) => panic!("cannot run nix-instantiate: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

/// `nix-instantiate --eval --strict --json <file> <args>`, parsed; panics with Nix's message.
fn nix_eval(file: &str, args: &[&str]) -> Value {
    let mut all = vec!["--eval", "--strict", "--json", file];
    all.extend_from_slice(args);
    let out = nix_instantiate(&all).unwrap_or_else(|e| panic!("evaluating {file} failed:\n{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{file} gave invalid JSON ({e}): {out}"))
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            nix_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = Vec::new();
    nix_files(&repo().join("nix"), &mut files);
    let flake = repo().join("flake.nix");
    if flake.exists() {
        files.push(flake);
    }
    assert!(files.len() >= 5, "expected the nix/ files, found {files:?}");
    for f in &files {
        let path = f.to_str().unwrap();
        if let Err(e) = nix_instantiate(&["--parse", path]) {
            panic!("{path} does not parse:\n{e}");
        }
    }
}

/// Evaluates a file of `{ name, expected, actual }` cases and fails on any that differ.
fn assert_cases(file: &str, at_least: usize) {
    let cases = nix_eval(file, &[]);
    let cases = cases
        .as_array()
        .unwrap_or_else(|| panic!("{file} returns a list of cases"));
    assert!(
        cases.len() >= at_least,
        "{file}: too few cases: {}",
        cases.len()
    );
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c["expected"] != c["actual"])
        .map(|c| {
            format!(
                "{}\n  expected: {}\n  actual:   {}",
                c["name"].as_str().unwrap_or("?"),
                c["expected"],
                c["actual"]
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{file}: {} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

#[test]
fn lib_evaluation_cases_hold() {
    assert_cases("nix/tests/eval.nix", 30);
}

/// module.nix and topology.nix evaluated as NixOS modules (by the stand-in module system in
/// nix/tests/mini-modules.nix, as there is no nixpkgs here).
#[test]
fn module_evaluation_cases_hold() {
    assert_cases("nix/tests/module-eval.nix", 20);
}

/// The Nix module may only render keys the daemon knows, for the roles that use them.
#[test]
fn nix_key_table_matches_spec() {
    let nix = nix_eval("nix/lib.nix", &["-A", "spec"]);
    let nix: Vec<(String, String, String)> = nix
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap().to_string();
            (f("key"), f("roles"), f("shape"))
        })
        .collect();
    let rust: Vec<(String, String, String)> = SETTINGS
        .iter()
        .map(|s| {
            let roles = match s.roles {
                Roles::Server => "server",
                Roles::Agent => "agent",
                Roles::Both => "both",
            };
            let shape = match s.shape {
                Shape::Scalar => "scalar",
                Shape::Bool => "bool",
                Shape::CommaList => "commaList",
                Shape::List => "list",
            };
            (s.key.to_string(), roles.to_string(), shape.to_string())
        })
        .collect();
    assert_eq!(
        nix, rust,
        "nix/lib.nix `spec` must mirror src/config/spec.rs SETTINGS, in order"
    );
}

fn sources(file: &Path, env: &[(&str, &Path)]) -> ConfigSources {
    ConfigSources {
        config_file: Some(file.to_path_buf()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect(),
        flags: vec![],
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

enum Typed {
    Server(Box<ServerConfig>),
    Agent(Box<AgentConfig>),
}

/// Loads `file` as `role` with the daemon's loader, asserting it produced no warnings (unknown
/// keys or keys for the other role would be warnings).
fn load(role: &str, file: &Path, env: &[(&str, &Path)]) -> Typed {
    let src = sources(file, env);
    let text = std::fs::read_to_string(file).unwrap();
    match role {
        "server" => {
            let l = load_server(&src)
                .unwrap_or_else(|e| panic!("{e}\n--- {}:\n{text}", file.display()));
            assert!(
                l.warnings.is_empty(),
                "{:?}\n--- {}:\n{text}",
                l.warnings,
                file.display()
            );
            Typed::Server(Box::new(l.config))
        }
        "agent" => {
            let l =
                load_agent(&src).unwrap_or_else(|e| panic!("{e}\n--- {}:\n{text}", file.display()));
            assert!(
                l.warnings.is_empty(),
                "{:?}\n--- {}:\n{text}",
                l.warnings,
                file.display()
            );
            Typed::Agent(Box::new(l.config))
        }
        other => panic!("unexpected role {other}"),
    }
}

/// Renders every host of a topology with nix/tests/render-host.nix, loads each YAML, and
/// compares it with the hand-written config for that host loaded the same way.
fn check_rendered_equals_hand_written(
    render_args: &[&str],
    hand_written: &BTreeMap<&str, (&str, String)>,
    env: &[(&str, &Path)],
) {
    let hosts = nix_eval("nix/tests/render-host.nix", render_args);
    let hosts = hosts.as_object().unwrap();
    let names: Vec<&str> = hosts.keys().map(String::as_str).collect();
    let expected: Vec<&str> = hand_written.keys().copied().collect();
    assert_eq!(names, expected, "rendered hosts");
    let dir = tempfile::tempdir().unwrap();
    for (name, (role, text)) in hand_written {
        let host = &hosts[*name];
        assert_eq!(host["role"], *role, "{name}: role");
        let yaml = host["yaml"].as_str().unwrap();
        let rendered = write(dir.path(), &format!("{name}-rendered.yaml"), yaml);
        let manual = write(dir.path(), &format!("{name}-manual.yaml"), text);
        match (load(role, &rendered, env), load(role, &manual, env)) {
            (Typed::Server(a), Typed::Server(b)) => {
                assert!(a == b, "{name}:\n{a:#?}\n!=\n{b:#?}\n--- rendered:\n{yaml}")
            }
            (Typed::Agent(a), Typed::Agent(b)) => {
                assert!(a == b, "{name}:\n{a:#?}\n!=\n{b:#?}\n--- rendered:\n{yaml}")
            }
            _ => unreachable!(),
        }
    }
}

/// The NixOS module's path: config.yaml without a token, which arrives through LoadCredential
/// as RKE2_TOKEN_FILE=%d/token; here the test plays systemd and sets the variable.
#[test]
fn fixture_topology_renders_like_hand_written_configs() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "K10::server:s3cret\n");
    let env = [("RKE2_TOKEN_FILE", token.as_path())];
    let join = "server: https://rke2.example.internal:9345\n";
    let common = "cluster-cidr: 10.42.0.0/16\nnode-monitor-grace-period: 40s\ntls-san: rke2.example.internal\n";
    let mut hand = BTreeMap::new();
    hand.insert(
        "s1",
        (
            "server",
            format!("node-name: s1\nnode-ip: 10.0.0.1\n{common}"),
        ),
    );
    hand.insert(
        "s2",
        (
            "server",
            format!("{join}node-name: s2\nnode-ip: [10.0.0.2]\n{common}"),
        ),
    );
    hand.insert(
        "s3",
        ("server", format!("{join}node-name: s3\nnode-ip: 10.0.0.3\nnode-taint:\n- CriticalAddonsOnly=true:NoExecute\n{common}")),
    );
    hand.insert(
        "a1",
        ("agent", format!("{join}node-name: a1\nnode-ip: 10.0.0.11\nnode-label: [tier=web]\nnode-taint: [\"dedicated=web:NoSchedule\"]\n")),
    );
    hand.insert(
        "a2",
        ("agent", format!("{join}node-name: a2\nnode-ip: 10.0.0.12\nnode-label:\n  - example.com/zone=b\n  - tier=batch\n")),
    );
    let fixture = repo().join("nix/tests/cluster-3s2a.nix");
    check_rendered_equals_hand_written(
        &[
            "--argstr",
            "topologyFile",
            fixture.to_str().unwrap(),
            "--arg",
            "withTokenFile",
            "false",
        ],
        &hand,
        &env,
    );
}

/// The standalone path the HA cluster test uses: a topology given as JSON (loopback addresses,
/// per-node data dirs and bind addresses), rendered with token-file, fed straight to the loader.
#[test]
fn json_topology_renders_standalone_configs_with_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "K10::server:s3cret\n");
    let agent_token = write(dir.path(), "agent-token", "K10::node:ag3nt\n");
    let data = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let node = |ip: &str, name: &str| {
        serde_json::json!({
            "address": ip,
            "settings": { "bind-address": ip, "data-dir": data(name), "write-kubeconfig": data(&format!("{name}.yaml")) }
        })
    };
    let topology = serde_json::json!({
        "registrationAddress": "127.0.0.1",
        "registrationPort": 19345,
        "tokenFile": token,
        "agentTokenFile": agent_token,
        "initServer": "n2",
        "settings": { "etcd-arg": ["heartbeat-interval=50"], "node-heartbeat-interval": "2s", "log-format": "text" },
        "servers": { "n1": node("127.0.0.2", "n1"), "n2": node("127.0.0.3", "n2"), "n3": node("127.0.0.4", "n3") },
        "agents": { "w1": { "address": "127.0.0.5", "settings": { "data-dir": data("w1"), "lb-server-port": 16444 } } }
    });
    let (t, at) = (token.display(), agent_token.display());
    let server = |ip: &str, name: &str, join: bool| {
        let join = if join {
            "server: https://127.0.0.1:19345\n"
        } else {
            ""
        };
        format!(
            "{join}token-file: {t}\nagent-token-file: {at}\nnode-name: {name}\nnode-ip: {ip}\ntls-san: 127.0.0.1\n\
             bind-address: {ip}\ndata-dir: {}\nwrite-kubeconfig: {}\netcd-arg: heartbeat-interval=50\n\
             node-heartbeat-interval: 2s\nlog-format: text\n",
            data(name),
            data(&format!("{name}.yaml"))
        )
    };
    let mut hand = BTreeMap::new();
    hand.insert("n1", ("server", server("127.0.0.2", "n1", true)));
    hand.insert("n2", ("server", server("127.0.0.3", "n2", false)));
    hand.insert("n3", ("server", server("127.0.0.4", "n3", true)));
    hand.insert(
        "w1",
        (
            "agent",
            format!(
                "server: https://127.0.0.1:19345\ntoken-file: {at}\nnode-name: w1\nnode-ip: 127.0.0.5\ndata-dir: {}\n\
                 lb-server-port: 16444\nnode-heartbeat-interval: 2s\nlog-format: text\n",
                data("w1")
            ),
        ),
    );
    let json = topology.to_string();
    check_rendered_equals_hand_written(&["--argstr", "topologyJson", &json], &hand, &[]);
}

#[test]
fn even_topology_is_rejected_with_the_quorum_rule() {
    let fixture = repo().join("nix/tests/cluster-3s2a.nix");
    let even = format!(
        "let c = import {}; in c // {{ servers = c.servers // {{ s4 = {{ address = \"10.0.0.4\"; }}; }}; }}",
        fixture.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "even.nix", &even);
    let err = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "nix/tests/render-host.nix",
        "--argstr",
        "topologyFile",
        file.to_str().unwrap(),
        "--argstr",
        "hostName",
        "s1",
    ])
    .expect_err("a 4-server topology must not render");
    assert!(
        err.contains("4 servers (s1, s2, s3, s4), an even number of servers"),
        "{err}"
    );
    assert!(err.contains("majority (quorum)"), "{err}");
    assert!(err.contains("Use an odd number of servers"), "{err}");
}

#[test]
fn host_outside_the_topology_is_rejected_by_name() {
    let fixture = repo().join("nix/tests/cluster-3s2a.nix");
    let err = nix_instantiate(&[
        "--eval",
        "--strict",
        "--json",
        "nix/tests/render-host.nix",
        "--argstr",
        "topologyFile",
        fixture.to_str().unwrap(),
        "--argstr",
        "hostName",
        "web9",
    ])
    .expect_err("an unknown host must not render");
    assert!(
        err.contains("\"web9\" (from the hostName argument), is not in the topology"),
        "{err}"
    );
}

/// The README's Nix samples are fixtures: each parses, and the shared cluster file is a valid
/// topology that renders for every host.
#[test]
fn readme_samples_parse_and_the_topology_renders() {
    let readme = std::fs::read_to_string(repo().join("nix/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```nix\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 3, "expected the README's nix samples");
    let dir = tempfile::tempdir().unwrap();
    for (i, block) in blocks.iter().enumerate() {
        // Snippets of a configuration (`services.rke2 = ...;`) parse inside an attribute set.
        let text = if block.trim_start().starts_with("services.") {
            format!("{{\n{block}}}\n")
        } else {
            block.to_string()
        };
        let file = write(dir.path(), &format!("sample{i}.nix"), &text);
        if let Err(e) = nix_instantiate(&["--parse", file.to_str().unwrap()]) {
            panic!("README sample {i} does not parse:\n{e}\n{text}");
        }
    }
    let cluster = blocks
        .iter()
        .find(|b| b.starts_with("# cluster.nix"))
        .expect("the README declares the topology in a shared cluster.nix");
    let file = write(dir.path(), "cluster.nix", cluster);
    let hosts = nix_eval(
        "nix/tests/render-host.nix",
        &["--argstr", "topologyFile", file.to_str().unwrap()],
    );
    let roles: BTreeMap<&str, &str> = hosts
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v["role"].as_str().unwrap()))
        .collect();
    let expected: BTreeMap<&str, &str> = [
        ("a1", "agent"),
        ("s1", "server"),
        ("s2", "server"),
        ("s3", "server"),
    ]
    .into();
    assert_eq!(roles, expected);
    assert_eq!(hosts["s1"]["isInitServer"], true);
    assert_eq!(
        hosts["s2"]["settings"]["server"],
        "https://rke2.example.internal:9345"
    );
}
