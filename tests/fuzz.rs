//! Fuzz targets on the stable toolchain, written as proptest properties (docs/fuzzing.md).
//!
//! Every target first replays its corpus (`tests/fuzz-corpus/<target>/`, committed: seeds and
//! every input that ever crashed), then runs proptest cases that are either random bytes or
//! corpus entries mutated byte-wise and with a per-target dictionary of tokens (a small
//! mutation fuzzer: libFuzzer-style coverage feedback needs nightly, this does not). A failing
//! case is shrunk and its seed saved in `tests/fuzz-corpus/<target>.proptest-regressions`.
//!
//! `cargo test --test fuzz` runs a short run (the default case counts below, a few seconds per
//! target); `RKE2_FUZZ_CASES=100000 cargo test --release --test fuzz` runs a long one.
//!
//! The properties: nothing panics on any input, every refusal is a 4xx (never a 5xx that blames
//! the server for a client's bytes), config errors point at a real line, tokens never appear
//! in error messages, and the round trips (token format/parse, encrypt/decrypt, percent
//! encoding, selector display/parse) hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_json::{Value, json};

use rke2::apiserver::patch::{PatchKind, apply_patch};
use rke2::apiserver::status::ApiError;
use rke2::config::{ConfigSources, Origin};
use rke2::storage::selectors::{FieldSelector, LabelSelector};

/// One target: its corpus directory, its mutation dictionary and its default case count.
struct Target {
    name: &'static str,
    /// `tests/fuzz-corpus/<name>.proptest-regressions` (a `&'static str` for proptest).
    regressions: &'static str,
    dictionary: &'static [&'static str],
    default_cases: u32,
}

/// `RKE2_FUZZ_CASES` overrides every target's case count (the long run).
fn cases(target: &Target) -> u32 {
    std::env::var("RKE2_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(target.default_cases)
}

fn corpus_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target.name)
}

/// The corpus files of a target, in name order (never empty: a target without seeds is a
/// mistake in the repository).
fn corpus(target: &Target) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

/// One byte-level edit of an input.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Token(usize, usize),
}

fn apply_mutations(seed: &[u8], mutations: &[Mutation], dictionary: &[&str]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match m {
            Mutation::Set(i, b) if !v.is_empty() => {
                let i = i % v.len();
                v[i] = *b;
            }
            Mutation::Set(..) => v.push(0),
            Mutation::Insert(i, bytes) => {
                let i = at(*i, v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, v.len());
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Mutation::Duplicate(i, n) => {
                let i = at(*i, v.len());
                let end = (i + n).min(v.len());
                let chunk = v[i..end].to_vec();
                v.splice(end..end, chunk);
            }
            Mutation::Token(i, t) if !dictionary.is_empty() => {
                let i = at(*i, v.len());
                let token = dictionary[t % dictionary.len()].as_bytes();
                v.splice(i..i, token.iter().copied());
            }
            Mutation::Token(..) => {}
        }
    }
    v
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, t)| Mutation::Token(i, t)),
    ]
}

/// Inputs for a target: random bytes, random dictionary sentences, or mutated seeds.
fn inputs(target: &'static Target) -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
    let dict = target.dictionary;
    let sentence = proptest::collection::vec(0..dict.len().max(1), 0..24).prop_map(move |ix| {
        ix.iter()
            .filter_map(|i| dict.get(*i))
            .flat_map(|t| t.bytes())
            .collect::<Vec<u8>>()
    });
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..128),
        1 => sentence,
        4 => (proptest::sample::select(seeds), proptest::collection::vec(mutation(), 1..6))
            .prop_map(move |(seed, ms)| apply_mutations(&seed, &ms, dict)),
    ]
    .boxed()
}

/// Replays the corpus through `check`, then runs the proptest cases.
fn fuzz(target: &'static Target, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    for (name, bytes) in corpus(target) {
        if let Err(e) = check(&bytes) {
            panic!("{}/{name}: {e}", corpus_dir(target).display());
        }
    }
    run_strategy(target, cases(target), inputs(target), |b| check(&b));
}

fn run_strategy<T: std::fmt::Debug>(
    target: &'static Target,
    cases: u32,
    strategy: impl Strategy<Value = T>,
    check: impl Fn(T) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(target.regressions))),
        ..Config::default()
    };
    // The short run in the test command explores the same inputs every time, so its verdict
    // never depends on luck; a long run (RKE2_FUZZ_CASES set) draws fresh random inputs.
    let mut runner = if std::env::var_os("RKE2_FUZZ_CASES").is_some() {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    };
    if let Err(e) = runner.run(&strategy, check) {
        panic!("fuzz target {}: {e}", target.name);
    }
}

/// A refusal must be the client's fault (4xx), never an internal error.
fn client_error(what: &str, e: &ApiError) -> Result<(), TestCaseError> {
    let code = e.code();
    prop_assert!(
        (400..500).contains(&code),
        "{what}: answered {code} for a client's input: {e}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// percent-decoding of query strings

static PERCENT: Target = Target {
    name: "percent_decode",
    regressions: "tests/fuzz-corpus/percent_decode.proptest-regressions",
    dictionary: &[
        "%",
        "%a",
        "%2",
        "%25",
        "%e9",
        "%c3%a9",
        "\u{e9}",
        "\u{1F600}",
        "+",
        "&",
        "=",
        "a",
        "labelSelector=",
        "fieldSelector=",
        "%%",
        "%zz",
        "%F0%9F",
    ],
    default_cases: 2000,
};

/// Percent-encodes everything but unreserved characters, as a client would.
fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn fuzz_percent_decode() {
    fuzz(&PERCENT, |bytes| {
        let q = String::from_utf8_lossy(bytes);
        let _ = rke2::apiserver::query_map(Some(&q));
        Ok(())
    });
    // Round trip: whatever a client encodes decodes to the same map.
    run_strategy(
        &PERCENT,
        cases(&PERCENT),
        proptest::collection::btree_map(".{0,12}", ".{0,24}", 0..6),
        |map: BTreeMap<String, String>| {
            let q = map
                .iter()
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
                .collect::<Vec<_>>()
                .join("&");
            let decoded = rke2::apiserver::query_map(Some(&q));
            prop_assert!(decoded.is_ok(), "query {} was refused", q);
            let decoded = decoded.unwrap_or_default();
            for (k, v) in map.iter().filter(|(k, _)| !k.is_empty()) {
                prop_assert_eq!(decoded.get(k), Some(v), "query {}", q);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// label and field selectors

static SELECTORS: Target = Target {
    name: "selectors",
    regressions: "tests/fuzz-corpus/selectors.proptest-regressions",
    dictionary: &[
        "=",
        "==",
        "!=",
        " in ",
        " notin ",
        "(",
        ")",
        ",",
        "!",
        " ",
        "a",
        "b.c/d",
        "app",
        "metadata.name",
        "spec.nodeName",
        "\\",
        "\\,",
        "\\=",
        ">",
        "<",
        "1",
        "-",
        "_",
        "\u{e9}",
    ],
    default_cases: 3000,
};

fn sample_objects() -> Vec<Value> {
    vec![
        json!({}),
        json!({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "x", "a": "1"}}}),
        json!({"metadata": {"name": "n1", "labels": null}, "spec": {"nodeName": "n1", "unschedulable": true}}),
        json!({"metadata": "not-an-object", "status": {"phase": "Running"}}),
    ]
}

#[test]
fn fuzz_selectors() {
    let objects = sample_objects();
    fuzz(&SELECTORS, |bytes| {
        let input = String::from_utf8_lossy(bytes);
        match LabelSelector::parse(&input) {
            Ok(sel) => {
                for o in &objects {
                    let _ = sel.matches_object(o);
                }
                // What we print must parse back to the same selector.
                let shown = sel.to_string();
                let back = LabelSelector::parse(&shown).map_err(|e| {
                    TestCaseError::fail(format!("{input:?} printed as {shown:?}: {e}"))
                })?;
                prop_assert_eq!(back.to_string(), shown);
            }
            Err(e) => client_error("labelSelector", &ApiError::from(e))?,
        }
        match FieldSelector::parse(&input) {
            Ok(sel) => {
                for o in &objects {
                    let _ = sel.matches(o);
                }
                let _ = sel.single_name();
            }
            Err(e) => client_error("fieldSelector", &ApiError::from(e))?,
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// request bodies: JSON, Kubernetes protobuf, and the media types the API refuses (YAML)

static API_BODY: Target = Target {
    name: "api_body",
    regressions: "tests/fuzz-corpus/api_body.proptest-regressions",
    dictionary: &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "true",
        "1e999",
        "-0",
        "\"metadata\"",
        "\"name\"",
        "\"data\"",
        "\"labels\"",
        "\"apiVersion\":\"v1\"",
        "\"kind\":\"ConfigMap\"",
        "\\u0000",
        "\\ud800",
        "k8s\0",
        "\u{0}",
        "\u{ff}",
        "\u{80}",
    ],
    default_cases: 3000,
};

const BODY_TYPES: &[&str] = &[
    "application/json",
    "application/vnd.kubernetes.protobuf",
    "application/yaml",
    "application/apply-patch+yaml",
    "text/plain; charset=\u{e9}",
];

#[test]
fn fuzz_api_body() {
    let configmaps = rke2::registry::lookup("", "v1", "configmaps").unwrap();
    let namespaces = rke2::registry::lookup("", "v1", "namespaces").unwrap();
    fuzz(&API_BODY, |bytes| {
        for ct in BODY_TYPES {
            let mut headers = HeaderMap::new();
            if let Ok(v) = ct.parse() {
                headers.insert(CONTENT_TYPE, v);
            }
            match rke2::apiserver::decode_body(&headers, bytes) {
                Ok(v) => {
                    for info in [configmaps, namespaces] {
                        let ns = info.namespaced.then_some("default");
                        if let Err(e) = rke2::apiserver::objects::validate_body(info, &v, ns, None)
                        {
                            client_error("validate_body", &e)?;
                        }
                    }
                }
                Err(e) => client_error(ct, &e)?,
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// PATCH bodies of every type

static PATCH: Target = Target {
    name: "patch",
    regressions: "tests/fuzz-corpus/patch.proptest-regressions",
    dictionary: &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "\"op\":\"add\"",
        "\"op\":\"remove\"",
        "\"op\":\"replace\"",
        "\"op\":\"move\"",
        "\"op\":\"copy\"",
        "\"op\":\"test\"",
        "\"path\":\"/metadata/labels/a\"",
        "\"path\":\"/data/-\"",
        "\"from\":\"/metadata\"",
        "\"path\":\"\"",
        "/~1",
        "/~0",
        "/0",
        "\"$patch\":\"delete\"",
        "\"$patch\":\"replace\"",
        "\"$retainKeys\":[\"a\"]",
        "\"$setElementOrder/conditions\":[{\"type\":\"Ready\"}]",
        "\"$deleteFromPrimitiveList/finalizers\":[\"a\"]",
        "\"conditions\":[{\"type\":\"X\"}]",
        "\"finalizers\":[\"f\"]",
        "\"taints\":[]",
        "\"containers\":[{\"name\":\"c\"}]",
    ],
    default_cases: 3000,
};

fn patch_originals() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "namespace": "default", "resourceVersion": "5",
                            "labels": {"a": "1"}, "annotations": {"x": "y"}, "finalizers": ["f"]},
               "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
               "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"conditions": [{"type": "Ready", "status": "True"},
                                         {"type": "MemoryPressure", "status": "False"}],
                          "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "spec": {"containers": [{"name": "c", "image": "i"}], "list": [1, 2, 3]}}),
    ]
}

#[test]
fn fuzz_patch() {
    let originals = patch_originals();
    fuzz(&PATCH, |bytes| {
        for original in &originals {
            let info = rke2::registry::lookup_kind(
                original["apiVersion"].as_str().unwrap(),
                original["kind"].as_str().unwrap(),
            )
            .expect("originals are served kinds");
            for kind in [
                PatchKind::Json,
                PatchKind::Merge,
                PatchKind::StrategicMerge,
                PatchKind::Apply,
            ] {
                match apply_patch(info, kind, original, bytes) {
                    Ok(patched) => {
                        let _ = rke2::apiserver::patch::patch_resource_version(original, &patched);
                        // RFC 7386: a merge patch is idempotent.
                        if kind == PatchKind::Merge {
                            let again = apply_patch(info, kind, &patched, bytes)
                                .map_err(|e| TestCaseError::fail(format!("reapply: {e}")))?;
                            prop_assert_eq!(&again, &patched);
                        }
                    }
                    Err(e) => client_error(kind.content_type(), &e)?,
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// join tokens and the credentials file

static TOKENS: Target = Target {
    name: "tokens",
    regressions: "tests/fuzz-corpus/tokens.proptest-regressions",
    dictionary: &[
        "K10",
        "::",
        ":",
        ".",
        "server",
        "node",
        "abcdef",
        "0123456789abcdef",
        "\u{e9}",
        " ",
        "\n",
        ",",
        "rke2:server",
        "rke2:agent",
        "0123456789abcdef0123456789abcdef",
    ],
    default_cases: 4000,
};

#[test]
fn fuzz_tokens() {
    use rke2::token::{Credentials, JoinToken, Passwd, Secret, normalize_server_token};
    fuzz(&TOKENS, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match JoinToken::parse(&text) {
            Ok(t) => {
                if let Some(h) = &t.ca_hash {
                    prop_assert!(
                        h.len() == 64
                            && h.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                        "hash {h:?}"
                    );
                }
                if let Credentials::Basic { password, .. } = &t.credentials {
                    prop_assert!(!password.expose().is_empty());
                }
            }
            Err(e) => {
                // The message must not repeat the input (it may be a password).
                let msg = e.to_string();
                let t = text.trim();
                prop_assert!(t.len() < 8 || !msg.contains(t), "{msg:?} repeats {t:?}");
            }
        }
        let _ = normalize_server_token(&Secret::new(text.to_string()));
        if let Ok(p) = Passwd::parse(&text, Path::new("passwd")) {
            let _ = p.authenticate("server", "x");
            let _ = p.render();
        }
        Ok(())
    });
    // Round trip: a formatted full token parses back to its parts, and its errors never show
    // the password.
    run_strategy(
        &TOKENS,
        cases(&TOKENS),
        (
            "[0-9a-f]{64}",
            "[a-z][a-z0-9-]{0,15}",
            "[!-~][ -~]{6,30}[!-~]",
            any::<bool>(),
        ),
        |(hash, user, pw, break_hash)| {
            let hash = if break_hash {
                format!("{}z", &hash[1..])
            } else {
                hash
            };
            let full = rke2::token::format_full_token(&hash, &user, &Secret::new(pw.clone()));
            match JoinToken::parse(&full) {
                Ok(t) => {
                    prop_assert!(!break_hash);
                    prop_assert_eq!(t.ca_hash.as_deref(), Some(hash.as_str()));
                    prop_assert_eq!(
                        t.credentials,
                        Credentials::Basic {
                            username: user,
                            password: Secret::new(pw)
                        }
                    );
                }
                Err(e) => {
                    prop_assert!(break_hash, "{e}");
                    prop_assert!(!e.to_string().contains(&pw), "{e}");
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// bootstrap data decryption

static BOOTSTRAP: Target = Target {
    name: "bootstrap",
    regressions: "tests/fuzz-corpus/bootstrap.proptest-regressions",
    dictionary: &[":", "=", "==", "A", "/", "+", " ", "\n", "0123456789abcdef"],
    // Every mutated blob that still parses costs a 4096-round PBKDF2 (~13 ms unoptimised).
    default_cases: 120,
};

/// The password the corpus blobs were encrypted with.
const CORPUS_PASSWORD: &str = "fuzz-corpus-password";

#[test]
fn fuzz_bootstrap_decrypt() {
    use rke2::bootstrap::{decrypt, encrypt};
    use rke2::token::Secret;
    let pw = Secret::new(CORPUS_PASSWORD);
    // The corpus blobs were sealed by an independent implementation (Python `cryptography`, the
    // RKE2 format): they must open.
    let bundle = std::fs::read_to_string(corpus_dir(&BOOTSTRAP).join("bundle")).unwrap();
    let plain = decrypt(&pw, &bundle).expect("the corpus bundle decrypts");
    assert!(plain.starts_with(b"{\"ServerCA\""));
    fuzz(&BOOTSTRAP, |bytes| {
        let stored = String::from_utf8_lossy(bytes);
        let _ = decrypt(&Secret::new(""), &stored);
        if let Ok(plain) = decrypt(&pw, &stored) {
            // Only an untouched (or whitespace-padded) blob opens: GCM authenticates it.
            prop_assert!(plain.starts_with(b"{"), "decrypted garbage: {plain:?}");
        }
        Ok(())
    });
    // Round trip with random passwords and data; a different password never opens it. Each
    // case derives keys three times (PBKDF2, the slow part), hence fewer cases.
    run_strategy(
        &BOOTSTRAP,
        (cases(&BOOTSTRAP) / 8).max(1),
        (
            ".{1,40}",
            ".{1,40}",
            proptest::collection::vec(any::<u8>(), 0..512),
        ),
        |(p1, p2, data)| {
            let s1 = Secret::new(p1.clone());
            let sealed = encrypt(&s1, &data).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decrypt(&s1, &sealed).ok(), Some(data));
            if p1 != p2 {
                prop_assert!(decrypt(&Secret::new(p2), &sealed).is_err());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// config files

static CONFIG_YAML: Target = Target {
    name: "config_yaml",
    regressions: "tests/fuzz-corpus/config_yaml.proptest-regressions",
    dictionary: &[
        "\n",
        ": ",
        "- ",
        "  ",
        "---\n",
        "...\n",
        "&a ",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\"",
        "'",
        "#",
        "? ",
        "|\n",
        ">\n",
        "!!str ",
        "!!binary ",
        "token",
        "token-file",
        "tls-san",
        "node-label+",
        "node-name",
        "data-dir",
        "server",
        "agent-token",
        "K10",
        "https://127.0.0.1:9345",
        "\t",
        "\u{e9}",
        "\u{feff}",
        "\u{ff}",
    ],
    default_cases: 1500,
};

/// A config error from a file must name a line of that file.
fn check_config_error(e: &rke2::config::ConfigError, text: &[u8]) -> Result<(), TestCaseError> {
    if let Origin::File { line, .. } = &e.origin {
        let lines = text.split(|b| *b == b'\n').count();
        prop_assert!(
            *line >= 1 && *line <= lines.max(1),
            "error at line {line} of a {lines}-line file: {e}"
        );
    }
    Ok(())
}

#[test]
fn fuzz_config_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    fuzz(&CONFIG_YAML, |bytes| {
        match rke2::config::sources::parse_config_text(&path, bytes) {
            Ok(entries) => {
                let lines = bytes.split(|b| *b == b'\n').count();
                for e in entries {
                    prop_assert!(e.line >= 1 && e.line <= lines, "{e:?}");
                }
            }
            Err(e) => check_config_error(&e, bytes)?,
        }
        // The whole load, as `rke2 server` / `rke2 agent` do it.
        std::fs::write(&path, bytes).unwrap();
        let sources = ConfigSources {
            config_file: Some(path.clone()),
            ..Default::default()
        };
        if let Err(e) = rke2::config::load_server(&sources) {
            check_config_error(&e, bytes)?;
        }
        if let Err(e) = rke2::config::load_agent(&sources) {
            check_config_error(&e, bytes)?;
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// supervisor requests: node names from headers and the CSRs agents send

static SUPERVISOR: Target = Target {
    name: "supervisor",
    regressions: "tests/fuzz-corpus/supervisor.proptest-regressions",
    dictionary: &[
        "\u{30}", "\u{2}", "\u{4}", "\u{6}", "\u{a0}", "\u{ff}", "\u{80}", "\u{81}", "\u{82}",
        "\u{0}",
    ],
    default_cases: 600,
};

#[test]
fn fuzz_supervisor_requests() {
    use rke2::pki::{CertAuthority, CertInfo, LeafSpec, first_cert_der, new_key_and_csr};
    let ca = CertAuthority::generate("fuzz").unwrap();
    let (_key, valid_csr) = new_key_and_csr().unwrap();
    let spec = LeafSpec::client("system:node:n1", &["system:nodes"]);
    let check = |csr: &[u8]| -> Result<(), TestCaseError> {
        if let Ok(chain) = ca.sign_csr(csr, &spec) {
            // Names come from the server's spec, never from the request.
            let der =
                first_cert_der(chain.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let info = CertInfo::parse(&der).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(info.common_name, "system:node:n1");
            prop_assert!(info.sans.is_empty());
        }
        Ok(())
    };
    check(&valid_csr).unwrap();
    // Corpus entries are CSRs (DER); mutations flip tags and lengths.
    fuzz(&SUPERVISOR, check);
    run_strategy(
        &SUPERVISOR,
        cases(&SUPERVISOR),
        (
            proptest::collection::vec(mutation(), 1..6),
            ".{0,300}",
            "[ -~]{0,80}",
        ),
        |(ms, name, ips)| {
            check(&apply_mutations(&valid_csr, &ms, SUPERVISOR.dictionary))?;
            // Header values: the node name rule and the comma-separated IP list.
            let lower = name.trim().to_ascii_lowercase();
            if rke2::validation::validate_dns_subdomain(&lower).is_ok() {
                prop_assert!(lower.len() <= 253);
                prop_assert!(
                    lower.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'.'),
                    "{lower:?}"
                );
            }
            for ip in ips.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let _ = ip.parse::<std::net::IpAddr>();
            }
            Ok(())
        },
    );
}
