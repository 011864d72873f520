//! The Nix side, tested for real with Debian's `nix-bin` (no Nix daemon): every `.nix` file
//! parses, the evaluation cases in `nix/tests/eval.nix` hold, `nix/lib.nix`'s key table matches
//! `src/config/spec.rs`, the config.yaml rendered for each host of a topology loads with the
//! daemon's own loader into the same typed config as the equivalent hand-written file, and —
//! through nixpkgs' real module system in `../shared/nixos-eval` (or `$RKE2_NIXOS_EVAL`) — the
//! NixOS module replaces nixpkgs' own `services.rke2` in both nixpkgs layouts, renders what
//! nixpkgs' module would, and the VM test evaluates through nixpkgs' testing framework. The
//! package's source filter is checked by building exactly the files it keeps.
//!
//! `--store dummy://` lets any user evaluate without a Nix daemon or a writable /nix.

mod common;

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
fn assert_cases(file: &str, args: &[&str], at_least: usize) {
    let cases = nix_eval(file, args);
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
        "{file} {args:?}: {} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

#[test]
fn lib_evaluation_cases_hold() {
    assert_cases("nix/tests/eval.nix", &[], 30);
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

#[derive(Debug, PartialEq)]
enum Typed {
    Server(Box<ServerConfig>),
    Agent(Box<AgentConfig>),
}

/// Loads `src` as `role` with the daemon's loader, asserting it produced no warnings (unknown
/// keys or keys for the other role would be warnings). `what` names the input in failures.
/// Where the token was read from (file and line, for messages) is not part of the effective
/// configuration, so it is cleared before configurations are compared.
fn load_sources(role: &str, src: &ConfigSources, what: &str) -> Typed {
    match role {
        "server" => {
            let mut l = load_server(src).unwrap_or_else(|e| panic!("{e}\n--- {what}"));
            assert!(l.warnings.is_empty(), "{:?}\n--- {what}", l.warnings);
            l.config.node.token_source = None;
            Typed::Server(Box::new(l.config))
        }
        "agent" => {
            let mut l = load_agent(src).unwrap_or_else(|e| panic!("{e}\n--- {what}"));
            assert!(l.warnings.is_empty(), "{:?}\n--- {what}", l.warnings);
            l.config.node.token_source = None;
            Typed::Agent(Box::new(l.config))
        }
        other => panic!("unexpected role {other}"),
    }
}

/// Loads `file` as `role` (see load_sources).
fn load(role: &str, file: &Path, env: &[(&str, &Path)]) -> Typed {
    let text = std::fs::read_to_string(file).unwrap();
    load_sources(
        role,
        &sources(file, env),
        &format!("{}:\n{text}", file.display()),
    )
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
        let (a, b) = (load(role, &rendered, env), load(role, &manual, env));
        assert!(a == b, "{name}:\n{a:#?}\n!=\n{b:#?}\n--- rendered:\n{yaml}");
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

// --- nixpkgs' real module system ----------------------------------------------------------

/// The real NixOS module system: `$RKE2_NIXOS_EVAL`, else `../shared/nixos-eval` beside the
/// repository (CI's layout). Absent: a visible SKIPPED line and None, or a failure under
/// RKE2_TEST_REQUIRE (scripts/test.sh). A directory named by the variable must be valid.
fn nixos_eval_dir(test: &str) -> Option<PathBuf> {
    let valid = |d: &Path| {
        d.join("nixpkgs/nixos/lib/eval-config.nix").is_file()
            && d.join("stub-pkgs.nix").is_file()
            && d.join("lib-latest/default.nix").is_file()
    };
    if let Some(dir) = std::env::var_os("RKE2_NIXOS_EVAL").map(PathBuf::from) {
        assert!(
            valid(&dir),
            "RKE2_NIXOS_EVAL={} is not a nixos-eval directory (nixpkgs/nixos/lib/eval-config.nix, stub-pkgs.nix, lib-latest/)",
            dir.display()
        );
        return Some(dir.canonicalize().unwrap());
    }
    let dir = repo().join("../shared/nixos-eval");
    if valid(&dir) {
        return Some(dir.canonicalize().unwrap());
    }
    common::skip(
        test,
        &format!(
            "no nixpkgs module tree at {} (set RKE2_NIXOS_EVAL to a nixos-eval directory)",
            dir.display()
        ),
    );
    None
}

/// Recreates the directory chain `src/<path...>` under `dst` as real directories whose other
/// entries are symlinks to the originals, so the innermost directory can be changed. Only
/// directories are symlinked on the way, never the files Nix evaluates, so relative imports
/// resolve inside the copy.
fn shadow(src: &Path, dst: &Path, path: &[&str]) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let name = entry.unwrap().file_name();
        if path.first().is_some_and(|p| name == *p) {
            shadow(&src.join(&name), &dst.join(&name), &path[1..]);
        } else {
            std::os::unix::fs::symlink(src.join(&name), dst.join(&name)).unwrap();
        }
    }
}

/// A nixpkgs tree with the current layout: the shared tree with services/cluster/{rke2,k3s}
/// replaced by the rancher module of nix/tests/nixpkgs-rancher, in the module list too.
fn rancher_tree(shared: &Path) -> tempfile::TempDir {
    let tree = tempfile::tempdir().unwrap();
    let nixpkgs = tree.path().join("nixpkgs");
    shadow(
        &shared.join("nixpkgs"),
        &nixpkgs,
        &["nixos", "modules", "services", "cluster", "module-list.nix"],
    );
    let modules = nixpkgs.join("nixos/modules");
    let cluster = modules.join("services/cluster");
    for old in ["rke2", "k3s"] {
        std::fs::remove_file(cluster.join(old)).unwrap();
    }
    std::os::unix::fs::symlink(
        repo().join("nix/tests/nixpkgs-rancher"),
        cluster.join("rancher"),
    )
    .unwrap();
    let list_path = modules.join("module-list.nix");
    std::fs::remove_file(&list_path).unwrap();
    let list =
        std::fs::read_to_string(shared.join("nixpkgs/nixos/modules/module-list.nix")).unwrap();
    let (k3s, rke2) = (
        "./services/cluster/k3s/default.nix",
        "./services/cluster/rke2/default.nix",
    );
    assert!(
        list.contains(k3s) && list.contains(rke2),
        "module-list.nix changed"
    );
    let list: String = list
        .lines()
        .filter(|l| !l.contains(rke2))
        .map(|l| l.replace(k3s, "./services/cluster/rancher/default.nix") + "\n")
        .collect();
    std::fs::write(&list_path, list).unwrap();
    tree
}

/// The nixpkgs layouts the module must work with, as nix-instantiate arguments for
/// nixos-harness.nix: the shared tree (older services/cluster/rke2 layout, its own 24.11 lib)
/// and the rancher copy evaluated with the current lib. The TempDir keeps the copy alive.
fn layouts(shared: &Path) -> Vec<(&'static str, Vec<String>, Option<tempfile::TempDir>)> {
    let shared_arg = vec![
        "--argstr".to_string(),
        "shared".to_string(),
        shared.display().to_string(),
    ];
    let tree = rancher_tree(shared);
    let mut rancher = shared_arg.clone();
    rancher.extend([
        "--argstr".to_string(),
        "nixos".to_string(),
        tree.path().join("nixpkgs/nixos").display().to_string(),
        "--argstr".to_string(),
        "lib".to_string(),
        shared.join("lib-latest").display().to_string(),
    ]);
    vec![
        ("services/cluster/rke2 layout, lib 24.11", shared_arg, None),
        (
            "services/cluster/rancher layout, lib 26.11",
            rancher,
            Some(tree),
        ),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The error of issue 14 is gone in both layouts, and everything module-eval.nix checks
/// (topology hosts, assertions, warnings, config.yaml, units, sockets, firewall, D-Bus,
/// nixpkgs' options, services.k3s) holds under nixpkgs' real eval-config.nix.
#[test]
fn module_evaluates_in_real_nixos_in_both_layouts() {
    assert_cases_in_every_layout(
        "module_evaluates_in_real_nixos_in_both_layouts",
        "nix/tests/module-eval.nix",
        40,
    );
}

/// assert_cases for a nixos-harness.nix based file, once per nixpkgs layout; skipped (or
/// failed under RKE2_TEST_REQUIRE) without the shared module tree.
fn assert_cases_in_every_layout(test: &str, file: &str, at_least: usize) {
    let Some(shared) = nixos_eval_dir(test) else {
        return;
    };
    for (name, args, _tree) in layouts(&shared) {
        eprintln!("layout: {name}");
        assert_cases(file, &strs(&args), at_least);
    }
}

/// systemd's splitting of an Exec line into words: whitespace separates, single and double
/// quotes group (backslash escapes inside double quotes), a backslash-newline continues the
/// line, `%%` and `$$` stand for `%` and `$`.
fn systemd_words(line: &str) -> Vec<String> {
    let line = line.replace("\\\n", " ");
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| w.replace("%%", "%").replace("$$", "$"))
        .collect()
}

/// What the daemon makes of a unit: `argv` parsed by the real command line, `env` as the
/// service environment, `default_config` as the config file when argv names none.
fn effective(
    role: &str,
    argv: &[String],
    env: BTreeMap<String, String>,
    default_config: &Path,
) -> Typed {
    let what = format!("argv {argv:?}, env {env:?}");
    let matches = rke2::cli::command()
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("{e}\n--- {what}"));
    let sub = matches.subcommand_matches(role).unwrap();
    let r = if role == "server" {
        rke2::config::spec::Role::Server
    } else {
        rke2::config::spec::Role::Agent
    };
    let mut src = rke2::cli::sources_from(sub, r, &env);
    if src.config_file.is_none() {
        src.config_file = Some(default_config.to_path_buf());
    }
    load_sources(role, &src, &what)
}

/// A configuration written for nixpkgs' services.rke2 gives the daemon the same effective
/// settings with this module as nixpkgs' module gives it: nixpkgs' ExecStart flags (minus the
/// flags of features rke2-rs lacks, which this module must name in warnings) against this
/// module's config.yaml, LoadCredential'd token files and ExecStart, both through the daemon's
/// real command line and loader. Both nixpkgs layouts.
#[test]
fn nixpkgs_style_configs_take_effect_as_under_nixpkgs_module() {
    let Some(shared) = nixos_eval_dir("nixpkgs_style_configs_take_effect_as_under_nixpkgs_module")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "K10::server:s3cret\n");
    let agent_token = write(dir.path(), "agent-token", "K10::node:ag3nt\n");
    let own_config = write(
        dir.path(),
        "own-config.yaml",
        "node-name: from-file\nnode-heartbeat-interval: 7s\nnode-label: [from=file]\n",
    );
    // Stands for the absent default config file where a unit names none (the loader wants an
    // explicitly named file to exist).
    let no_config = write(dir.path(), "no-config.yaml", "# no settings\n");
    let (t, at) = (token.display(), agent_token.display());
    // (name, role, services.rke2 as JSON, features rke2-rs lacks, only in the older layout:
    // current nixpkgs dropped debug and dataDir)
    let cases: Vec<(&str, &str, String, Vec<&str>, bool)> = vec![
        (
            "agent: serverAddr, tokenFile, nodeName, nodeIP, nodeLabel, nodeTaint, extraFlags",
            "agent",
            format!(
                r#"{{"role": "agent", "serverAddr": "https://rke2.example.internal:9345", "tokenFile": "{t}",
                "nodeName": "worker-1", "nodeIP": "10.0.0.21", "nodeLabel": ["tier=web", "zone=b"],
                "nodeTaint": ["dedicated=web:NoSchedule"], "extraFlags": ["--node-heartbeat-interval=5s"]}}"#
            ),
            vec![],
            false,
        ),
        (
            "joining server: the same plus disable and cni",
            "server",
            format!(
                r#"{{"serverAddr": "https://rke2.example.internal:9345", "tokenFile": "{t}", "nodeName": "s9",
                "nodeIP": "10.0.0.9,fd00::9", "nodeLabel": ["tier=cp"], "nodeTaint": ["CriticalAddonsOnly=true:NoExecute"],
                "extraFlags": ["--cluster-cidr=10.44.0.0/16", "--debug"], "disable": ["rke2-ingress-nginx"], "cni": "cilium"}}"#
            ),
            vec!["disable", "cni"],
            false,
        ),
        (
            "first server: agentTokenFile, debug, dataDir",
            "server",
            format!(
                r#"{{"tokenFile": "{t}", "agentTokenFile": "{at}", "debug": true, "dataDir": "{}", "nodeName": "s1"}}"#,
                dir.path().join("data").display()
            ),
            vec![],
            true,
        ),
        (
            "first server: agentTokenFile, debug as an extra flag",
            "server",
            format!(
                r#"{{"tokenFile": "{t}", "agentTokenFile": "{at}", "extraFlags": ["--debug"], "nodeName": "s1"}}"#
            ),
            vec![],
            false,
        ),
        (
            "configPath: the options outrank the file",
            "agent",
            format!(
                r#"{{"role": "agent", "configPath": "{}", "serverAddr": "https://lb:9345", "tokenFile": "{t}", "nodeName": "worker-2"}}"#,
                own_config.display()
            ),
            vec![],
            false,
        ),
    ];
    for (i, (layout, args, _tree)) in layouts(&shared).into_iter().enumerate() {
        for (name, role, options, unsupported, old_only) in &cases {
            if *old_only && i != 0 {
                continue;
            }
            let mut all = strs(&args);
            all.extend(["--argstr", "optionsJson", options]);
            let out = nix_eval("nix/tests/compare-upstream.nix", &all);
            let at = format!("{layout}, {name}");
            let ours = &out["ours"];
            assert_eq!(ours["assertions"], serde_json::json!([]), "{at}");

            // nixpkgs' unit: its flags, less those of features rke2-rs does not have.
            let mut up = systemd_words(out["upstream"]["execStart"].as_str().unwrap());
            up[0] = "rke2".into();
            let flag_of = |w: &str| {
                w.trim_start_matches("--")
                    .split('=')
                    .next()
                    .unwrap()
                    .to_string()
            };
            let stripped: Vec<String> = up
                .iter()
                .filter(|w| matches!(flag_of(w).as_str(), "disable" | "cni"))
                .map(|w| flag_of(w))
                .collect();
            up.retain(|w| !matches!(flag_of(w).as_str(), "disable" | "cni"));
            let upstream = effective(role, &up, BTreeMap::new(), &no_config);

            // Features without an rke2-rs counterpart: named by this module, never silent.
            let mut named: Vec<String> = stripped.clone();
            named.dedup();
            assert_eq!(
                named, *unsupported,
                "{at}: nixpkgs' flags for features rke2-rs lacks"
            );
            let warnings: Vec<&str> = ours["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect();
            for u in unsupported {
                assert!(
                    warnings
                        .iter()
                        .any(|w| w
                            .starts_with(&format!("services.rke2.{u} is set, but has no effect"))),
                    "{at}: no warning names {u}: {warnings:?}"
                );
            }
            assert_eq!(warnings.len(), unsupported.len(), "{at}: {warnings:?}");

            // This module's unit, systemd's part played here: credentials land in %d.
            let credentials: BTreeMap<String, String> = ours["loadCredential"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let (id, path) = c.as_str().unwrap().split_once(':').unwrap();
                    (format!("%d/{id}"), path.to_string())
                })
                .collect();
            let env: BTreeMap<String, String> = ours["environment"]
                .as_object()
                .unwrap()
                .iter()
                // nixpkgs' rke2 brings its own etcd; this module names the etcd package.
                .filter(|(k, _)| k.as_str() != "RKE2_ETCD_BIN")
                .map(|(k, v)| {
                    let v = v.as_str().unwrap();
                    (
                        k.clone(),
                        credentials.get(v).cloned().unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            let argv = match ours["execStart"].as_str() {
                Some(line) => {
                    let mut w = systemd_words(line);
                    w[0] = "rke2".into();
                    w
                }
                None => vec!["rke2".to_string(), role.to_string()],
            };
            let config = match ours["configYaml"].as_str() {
                Some(yaml) => write(dir.path(), "ours.yaml", yaml),
                None => no_config.clone(),
            };
            let mine = effective(role, &argv, env, &config);
            assert!(
                mine == upstream,
                "{at}: this module's effective config differs from nixpkgs' module's:\n{mine:#?}\n!=\n{upstream:#?}\n--- ours: {ours:#}\n--- nixpkgs' ExecStart: {}",
                out["upstream"]["execStart"]
            );
        }
    }
}

/// The VM test's configuration evaluates through nixpkgs' real testing framework
/// (nixos/lib/testing), in both layouts: every node gets its role from the topology and nothing
/// fails or warns. Running it needs KVM and real nixpkgs (`nix build .#checks.<system>.vm`).
#[test]
fn vm_test_evaluates_through_nixos_testing_framework() {
    assert_cases_in_every_layout(
        "vm_test_evaluates_through_nixos_testing_framework",
        "nix/tests/vm-eval.nix",
        8,
    );
}

/// Every file under `dir`, relative to `root`, except build output and VCS data.
fn repo_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if rel == "target" || rel == ".git" {
            continue;
        }
        if path.is_dir() {
            repo_files(root, &path, out);
        } else {
            out.push(rel);
        }
    }
}

fn cargo(args: &[&str], manifest: &Path) -> std::process::Output {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // Only what a shell would pass: the variables `cargo test` sets for test processes would
    // change build-script fingerprints, and the two builds would keep rebuilding dependencies
    // for each other in the shared target dir.
    cmd.env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.args(args)
        .arg("--manifest-path")
        .arg(manifest)
        // The repository's own target dir: dependencies are already built there.
        .env("CARGO_TARGET_DIR", repo().join("target"))
        .output()
        .expect("run cargo")
}

/// nix/package.nix's source filter keeps everything Cargo needs: the very filter expression,
/// applied to the repository's files as lib.cleanSourceWith applies it, keeps benches,
/// examples and the rest, and exactly the kept files pass `cargo build --offline --locked` of
/// what buildRustPackage builds (lib and bins).
#[test]
fn package_source_filter_keeps_what_cargo_needs() {
    let mut files = Vec::new();
    repo_files(&repo(), &repo(), &mut files);
    files.sort();
    let list = files.join("\n");
    let kept: Vec<String> = serde_json::from_value(nix_eval(
        "nix/tests/source-filter.nix",
        &["--argstr", "files", &list],
    ))
    .unwrap();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        "benches/api.rs",
        "benches/ha.rs",
        "benches/server_start.rs",
        "examples/config.yaml",
        "tests/common/mod.rs",
        "systemd/rke2-server.service",
        "systemd/rke2-server.socket",
        "dbus/io.rke2.conf",
    ] {
        assert!(kept.iter().any(|k| k == needed), "{needed} is filtered out");
    }
    for left_out in [
        "flake.nix",
        "nix/module.nix",
        "README.md",
        "scripts/test.sh",
    ] {
        assert!(!kept.iter().any(|k| k == left_out), "{left_out} is kept");
    }

    // Exactly the kept files, in a stable place: files whose content did not change keep their
    // modification time, so repeated runs rebuild incrementally.
    let copy = repo().join("target/nix-source-filter");
    let mut present = Vec::new();
    if copy.exists() {
        repo_files(&copy, &copy, &mut present);
    }
    for stale in present.iter().filter(|p| !kept.contains(p)) {
        std::fs::remove_file(copy.join(stale)).unwrap();
    }
    for f in &kept {
        let (src, dst) = (repo().join(f), copy.join(f));
        if std::fs::read(&dst).ok() != Some(std::fs::read(&src).unwrap()) {
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(&src, &dst).unwrap();
        }
    }
    // Cargo resolves every declared target (the [[bench]]es too) while loading the manifest,
    // so a filtered-out bench fails here, as it did in `nix build`; `check` reads every source
    // file, build script and `include_*!` input the build reads, without the second codegen
    // of every dependency that `build` would cost the test suite.
    let manifest = copy.join("Cargo.toml");
    let out = cargo(
        &["check", "--offline", "--locked", "--lib", "--bins"],
        &manifest,
    );
    assert!(
        out.status.success(),
        "cargo check on the filtered tree:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
