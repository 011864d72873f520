//! Secrets encrypted at rest (issue 11 item 8): the real binary, real etcd read back with
//! etcdctl, real kubectl, the admin CLI over a private D-Bus, and an independent decryption of
//! the stored value with Python's `cryptography` to show the format is upstream's. Each test
//! has its own loopback addresses and bus; every process is stopped by a Drop guard.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::bus::*;
use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);
const SETTLE: Duration = Duration::from_secs(30);

fn require_tools() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    require_tool("dbus-daemon", "dbus-daemon");
}

/// The raw bytes etcd holds under `key`.
fn etcd_value(node: &ServerNode, key: &str) -> Vec<u8> {
    let out = etcdctl(node, &["get", key, "-w", "json"]);
    assert!(out.status.success(), "etcdctl: {}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = v["kvs"][0]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not in etcd: {v}"));
    B64.decode(b64).unwrap()
}

fn secret_key(name: &str) -> String {
    format!("/registry/secrets/default/{name}")
}

/// `rke2 secrets-encrypt <args>` as root on `bus`.
fn se(bus: &Bus, args: &[&str]) -> Output {
    let mut all = vec!["secrets-encrypt"];
    all.extend_from_slice(args);
    rke2_cli(&bus.address(), false, &all)
}

fn se_ok(bus: &Bus, args: &[&str]) -> String {
    let out = se(bus, args);
    assert!(
        out.status.success(),
        "secrets-encrypt {args:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(bus: &Bus) -> Value {
    serde_json::from_str(&se_ok(bus, &["status", "-o", "json"])).unwrap()
}

/// Waits until every server reports the cluster's current configuration (as RKE2's docs ask
/// between stages); returns the status.
fn wait_hashes_match(bus: &Bus, stage: &str) -> Value {
    wait_for(SETTLE, &format!("all servers on stage {stage}"), || {
        let s = status(bus);
        (s["hashes_match"] == true && s["stage"] == stage).then_some(s)
    })
}

fn create_secret(kubeconfig: &Path, name: &str, value: &str) {
    kubectl_ok(
        kubeconfig,
        &[
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=password={value}"),
        ],
    );
}

fn read_secret(kubeconfig: &Path, name: &str) -> Result<String, String> {
    let out = kubectl(
        kubeconfig,
        &["get", "secret", name, "-o", "jsonpath={.data.password}"],
    );
    if !out.status.success() {
        return Err(text(&out));
    }
    B64.decode(String::from_utf8_lossy(&out.stdout).trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| e.to_string())
}

/// Decrypts an aescbc or aesgcm value stored under `etcd_key` with Python's `cryptography`
/// and the key from `config`, without any of our code: proves the stored format is
/// upstream's (for aesgcm: the etcd key authenticated as additional data).
fn python_decrypt(config: &Path, etcd_key: &str, value: &[u8]) -> String {
    let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
cfg = json.load(open(sys.argv[1]))
etcd_key = sys.argv[2].encode()
value = bytes.fromhex(sys.argv[3])
for p in cfg["resources"][0]["providers"]:
    for provider, keys in p.items():
        for k in keys.get("keys", []):
            prefix = b"k8s:enc:" + provider.encode() + b":v1:" + k["name"].encode() + b":"
            if not value.startswith(prefix):
                continue
            data, secret = value[len(prefix):], base64.b64decode(k["secret"])
            if provider == "aescbc":
                d = Cipher(algorithms.AES(secret), modes.CBC(data[:16])).decryptor()
                plain = d.update(data[16:]) + d.finalize()
                plain = plain[:-plain[-1]]
            elif provider == "aesgcm":
                plain = AESGCM(secret).decrypt(data[:12], data[12:], etcd_key)
            else:
                sys.exit("unexpected provider " + provider)
            sys.stdout.write(plain.decode())
            sys.exit(0)
sys.exit("no key matches the value's prefix")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(config)
        .arg(etcd_key)
        .arg(hex::encode(value))
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate_through_the_stages() {
    require_tools();
    let block = AddrBlock::new();
    let bs = server_on_bus(&block, "s1", &[]);
    let (s, bus) = (&bs.server, &bs.bus);
    wait_node_ready(&s.kubeconfig, "s1", READY);
    let k = &s.kubeconfig;

    // The provider configuration, upstream's format, private.
    let config = s.data_dir().join("server/cred/encryption-config.json");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(
        mode(&s.data_dir().join("server/cred/encryption-state.json")),
        0o600
    );
    let cfg: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(cfg["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(cfg["kind"], "EncryptionConfiguration");
    assert_eq!(cfg["resources"][0]["resources"][0], "secrets");
    assert_eq!(
        cfg["resources"][0]["providers"][0]["aescbc"]["keys"][0]["name"],
        "aescbckey"
    );
    assert_eq!(
        cfg["resources"][0]["providers"][1],
        serde_json::json!({"identity": {}})
    );

    // A Secret: ciphertext in etcd, plain through the API, decryptable by another
    // implementation of upstream's format.
    let marker = "plain-marker-0451";
    create_secret(k, "db", marker);
    let raw = etcd_value(s, &secret_key("db"));
    assert!(raw.starts_with(b"k8s:enc:aescbc:v1:aescbckey:"), "{raw:?}");
    for needle in [marker.to_string(), B64.encode(marker)] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "etcd holds {needle} in plain"
        );
    }
    assert_eq!(read_secret(k, "db").unwrap(), marker);
    let plain: Value =
        serde_json::from_str(&python_decrypt(&config, &secret_key("db"), &raw)).unwrap();
    assert_eq!(plain["data"]["password"], B64.encode(marker));
    // Secrets' watch events and lists decrypt too.
    let listed = kubectl_ok(
        k,
        &["get", "secrets", "-o", "jsonpath={.items[*].metadata.name}"],
    );
    assert!(listed.split_whitespace().any(|n| n == "db"), "{listed}");

    // Status, RKE2's shape.
    wait_hashes_match(bus, "start");
    let text_status = se_ok(bus, &["status"]);
    assert!(
        text_status.starts_with(
            "Encryption Status: Enabled\nCurrent Rotation Stage: start\nServer Encryption Hashes: All hashes match\n"
        ),
        "{text_status}"
    );
    assert!(
        text_status.contains(
            "Active  Key Type  Name\n------  --------  ----\n *      AES-CBC   aescbckey\n"
        ),
        "{text_status}"
    );
    // Anyone may read the status; only root may change it (the shipped bus policy refuses).
    let (ok, reply) = call(bus, true, "io.rke2.Cluster1.GetEncryptionStatus", &[]);
    assert!(ok, "{reply}");
    assert_error(
        call(
            bus,
            true,
            "io.rke2.Cluster1.PrepareSecretsEncryption",
            &["boolean:false"],
        ),
        "org.freedesktop.DBus.Error.AccessDenied",
    );

    // Out of order: refused with the stage named, exit 1, nothing changed.
    for (args, needs) in [
        (&["rotate"][..], "rotate needs stage prepare"),
        (&["reencrypt"][..], "reencrypt needs stage rotate"),
    ] {
        let out = se(bus, args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("incorrect stage: the cluster is at stage start") && err.contains(needs),
            "{err}"
        );
    }
    assert_eq!(status(bus)["stage"], "start");
    let out = se(bus, &["enable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("already enabled"), "{}", text(&out));
    let out = se(bus, &["rotate", "--bogus"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    // prepare: a second key, not yet used.
    assert!(se_ok(bus, &["prepare"]).contains("prepare completed successfully"));
    let st = wait_hashes_match(bus, "prepare");
    let keys = st["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{st}");
    assert_eq!(keys[0]["name"], "aescbckey");
    assert_eq!(keys[0]["active"], true);
    let new_key = keys[1]["name"].as_str().unwrap().to_string();
    assert!(new_key.starts_with("aescbckey-"), "{new_key}");
    create_secret(k, "during-prepare", "p1");
    assert!(
        etcd_value(s, &secret_key("during-prepare")).starts_with(b"k8s:enc:aescbc:v1:aescbckey:")
    );

    // rotate: the new key writes; old values still read.
    assert!(se_ok(bus, &["rotate"]).contains("rotate completed successfully"));
    let st = wait_hashes_match(bus, "rotate");
    assert_eq!(st["keys"][0]["name"], new_key.as_str());
    let new_prefix = format!("k8s:enc:aescbc:v1:{new_key}:");
    create_secret(k, "after-rotate", "r1");
    assert!(etcd_value(s, &secret_key("after-rotate")).starts_with(new_prefix.as_bytes()));
    assert!(etcd_value(s, &secret_key("db")).starts_with(b"k8s:enc:aescbc:v1:aescbckey:"));
    assert_eq!(read_secret(k, "db").unwrap(), marker);

    // reencrypt: every Secret on the new key, the old key gone.
    let out = se_ok(bus, &["reencrypt"]);
    assert!(out.contains("reencryption finished"), "{out}");
    let st = wait_hashes_match(bus, "reencrypt_finished");
    assert_eq!(st["keys"].as_array().unwrap().len(), 1, "{st}");
    for name in ["db", "during-prepare", "after-rotate"] {
        assert!(
            etcd_value(s, &secret_key(name)).starts_with(new_prefix.as_bytes()),
            "{name} was not re-encrypted"
        );
    }
    let cfg_text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !cfg_text.contains("\"aescbckey\""),
        "old key still configured"
    );
    assert_eq!(read_secret(k, "db").unwrap(), marker);
    let plain: Value = serde_json::from_str(&python_decrypt(
        &config,
        &secret_key("db"),
        &etcd_value(s, &secret_key("db")),
    ))
    .unwrap();
    assert_eq!(plain["data"]["password"], B64.encode(marker));

    // disable: new writes in plain; reencrypt --force decrypts the rest.
    assert!(se_ok(bus, &["disable"]).contains("secrets-encryption disabled"));
    let st = wait_hashes_match(bus, "start");
    assert_eq!(st["enabled"], false);
    assert!(se_ok(bus, &["status"]).starts_with("Encryption Status: Disabled\n"));
    create_secret(k, "while-disabled", "d1");
    let raw = etcd_value(s, &secret_key("while-disabled"));
    assert!(raw.starts_with(b"{"), "{}", String::from_utf8_lossy(&raw));
    assert_eq!(read_secret(k, "db").unwrap(), marker);
    se_ok(bus, &["reencrypt", "--force"]);
    assert!(etcd_value(s, &secret_key("db")).starts_with(b"{"));

    // enable again: the plain Secrets (written before) are encrypted by reencrypt.
    se_ok(bus, &["enable"]);
    wait_hashes_match(bus, "start");
    se_ok(bus, &["reencrypt", "--force"]);
    for name in ["db", "while-disabled", "after-rotate"] {
        assert!(
            etcd_value(s, &secret_key(name)).starts_with(new_prefix.as_bytes()),
            "{name} was not encrypted again"
        );
        read_secret(k, name).unwrap();
    }
    assert_eq!(read_secret(k, "while-disabled").unwrap(), "d1");
    let log = s.daemon.log_text();
    let key_b64 = serde_json::from_str::<Value>(&std::fs::read_to_string(&config).unwrap())
        .unwrap()["resources"][0]["providers"][0]["aescbc"]["keys"][0]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!log.contains(&key_b64), "the log shows an encryption key");
}

#[test]
fn a_cluster_created_with_encryption_off_stores_plain_until_enabled() {
    require_tools();
    let block = AddrBlock::new();
    let bs = server_on_bus(
        &block,
        "s1",
        &[
            ("secrets-encryption", "false".into()),
            ("secrets-encryption-provider", "secretbox".into()),
        ],
    );
    let (s, bus) = (&bs.server, &bs.bus);
    wait_node_ready(&s.kubeconfig, "s1", READY);
    create_secret(&s.kubeconfig, "old", "o1");
    assert!(etcd_value(s, &secret_key("old")).starts_with(b"{"));
    let st = wait_hashes_match(bus, "start");
    assert_eq!(st["enabled"], false);
    assert_eq!(st["keys"][0]["key_type"], "XSalsa20-POLY1305");
    se_ok(bus, &["enable"]);
    wait_hashes_match(bus, "start");
    create_secret(&s.kubeconfig, "new", "n1");
    assert!(etcd_value(s, &secret_key("new")).starts_with(b"k8s:enc:secretbox:v1:secretboxkey:"));
    // The Secret written before stays plain until reencrypt rewrites it.
    assert!(etcd_value(s, &secret_key("old")).starts_with(b"{"));
    let out = se_ok(bus, &["reencrypt", "-f"]);
    assert!(out.contains("secrets rewritten"), "{out}");
    assert!(etcd_value(s, &secret_key("old")).starts_with(b"k8s:enc:secretbox:v1:secretboxkey:"));
    assert_eq!(read_secret(&s.kubeconfig, "old").unwrap(), "o1");

    // After a restart the cluster's state still rules, though this server's setting says
    // false: the server says so, keeps reading everything and keeps encrypting new writes.
    let mut bs = bs;
    let env = bs.bus.env();
    bs.server.restart(&[(env.0, env.1.as_str())]);
    let (s, bus) = (&bs.server, &bs.bus);
    wait_node_ready(&s.kubeconfig, "s1", READY);
    wait_for(READY, "the restarted server's D-Bus", || {
        se(bus, &["status"]).status.success().then_some(())
    });
    assert_eq!(read_secret(&s.kubeconfig, "old").unwrap(), "o1");
    assert_eq!(read_secret(&s.kubeconfig, "new").unwrap(), "n1");
    create_secret(&s.kubeconfig, "after-restart", "a1");
    assert!(
        etcd_value(s, &secret_key("after-restart"))
            .starts_with(b"k8s:enc:secretbox:v1:secretboxkey:")
    );
    assert_eq!(status(bus)["stage"], "reencrypt_finished");
    assert!(
        s.daemon
            .log_text()
            .contains("the cluster's setting applies"),
        "{}",
        s.daemon.log_tail()
    );
}

#[test]
fn aesgcm_values_are_upstreams_format() {
    require_tools();
    let block = AddrBlock::new();
    let bs = server_on_bus(
        &block,
        "s1",
        &[("secrets-encryption-provider", "aesgcm".into())],
    );
    let s = &bs.server;
    wait_node_ready(&s.kubeconfig, "s1", READY);
    create_secret(&s.kubeconfig, "gcm", "g-marker-77");
    let raw = etcd_value(s, &secret_key("gcm"));
    assert!(raw.starts_with(b"k8s:enc:aesgcm:v1:aesgcmkey:"), "{raw:?}");
    let config = s.data_dir().join("server/cred/encryption-config.json");
    let plain: Value =
        serde_json::from_str(&python_decrypt(&config, &secret_key("gcm"), &raw)).unwrap();
    assert_eq!(plain["data"]["password"], B64.encode("g-marker-77"));
    assert_eq!(read_secret(&s.kubeconfig, "gcm").unwrap(), "g-marker-77");
}

/// Reads every Secret (each by name, then the list) from one server's API in a loop until
/// stopped, with curl and the admin client certificate (many reads a second, so every stage
/// change happens under load); counts reads and collects failures.
fn poll_reads(
    server: &ServerNode,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<String>> {
    let tls = server.data_dir().join("server/tls");
    let (ca, cert, key) = (
        server.ca(),
        tls.join("client-admin.crt"),
        tls.join("client-admin.key"),
    );
    let base = format!(
        "https://{}:6443/api/v1/namespaces/default/secrets",
        server.ip
    );
    std::thread::spawn(move || {
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for n in &names {
                let (code, body) = curl_as(&format!("{base}/{n}"), &ca, &cert, &key, "GET", None);
                let value = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["data"]["password"].as_str().map(str::to_string))
                    .and_then(|b| B64.decode(b).ok());
                if code != 200 || value.as_deref() != Some(format!("value-of-{n}").as_bytes()) {
                    failures.push(format!("{n}: HTTP {code}: {body}"));
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            let (code, body) = curl_as(&base, &ca, &cert, &key, "GET", None);
            if code != 200 {
                failures.push(format!("list: HTTP {code}: {body}"));
            }
        }
        failures
    })
}

#[test]
fn three_servers_rotate_and_reencrypt_keeping_every_secret_readable() {
    require_tools();
    let block = AddrBlock::new();
    let bs = server_on_bus(&block, "s1", &[("token", "enc-cluster-token".into())]);
    let (s1, bus) = (&bs.server, &bs.bus);
    let join = || {
        vec![
            ("server", s1.supervisor()),
            ("token", "enc-cluster-token".to_string()),
        ]
    };
    let s2 = start_server_on("s2", block.ip(2), bs.root.path(), &join(), None);
    let mut s3 = start_server_on("s3", block.ip(3), bs.root.path(), &join(), None);
    wait_for(READY, "3 servers Ready", || {
        all_ready(&s1.kubeconfig, &["s1", "s2", "s3"]).then_some(())
    });
    // Joiners got the cluster's key through the bootstrap data.
    let cfg = |s: &ServerNode| {
        std::fs::read(s.data_dir().join("server/cred/encryption-config.json")).unwrap()
    };
    assert_eq!(cfg(&s2), cfg(s1));
    assert_eq!(cfg(&s3), cfg(s1));
    assert_eq!(
        mode(&s3.data_dir().join("server/cred/encryption-config.json")),
        0o600
    );

    // Secrets written through each server, read through every server.
    let servers = [s1, &s2, &s3];
    let mut names = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let n = format!("before-{i}");
        create_secret(&s.kubeconfig, &n, &format!("value-of-{n}"));
        names.push(n);
    }
    let st = wait_hashes_match(bus, "start");
    assert_eq!(st["hash_message"], "All hashes match");

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = servers
        .iter()
        .map(|s| poll_reads(s, names.clone(), stop.clone(), reads.clone()))
        .collect();
    let mut written = names.clone();
    let mut write_round = |round: &str| {
        for (i, s) in servers.iter().enumerate() {
            let n = format!("{round}-{i}");
            create_secret(&s.kubeconfig, &n, &format!("value-of-{n}"));
            written.push(n);
        }
    };
    // After each step the readers complete at least a round on every server (3 Secrets × 3
    // servers) before the next, so every stage is read under, whatever the machine's speed.
    let reads_round = || {
        let mark = reads.load(Ordering::Relaxed);
        wait_for(SETTLE, "a round of reads on every server", || {
            (reads.load(Ordering::Relaxed) >= mark + 9).then_some(())
        });
    };
    let reads_before = reads.load(Ordering::Relaxed);
    let rotation_started = std::time::Instant::now();
    se_ok(bus, &["prepare"]);
    reads_round();
    write_round("prepare");
    wait_hashes_match(bus, "prepare");
    reads_round();
    se_ok(bus, &["rotate"]);
    reads_round();
    write_round("rotate");
    let st = wait_hashes_match(bus, "rotate");
    reads_round();
    let new_key = st["keys"][0]["name"].as_str().unwrap().to_string();
    se_ok(bus, &["reencrypt"]);
    write_round("reencrypt");
    wait_hashes_match(bus, "reencrypt_finished");
    reads_round();
    eprintln!(
        "prepare → reencrypt_finished on 3 servers (waiting for every server between stages): {:?}, {} reads meanwhile",
        rotation_started.elapsed(),
        reads.load(Ordering::Relaxed) - reads_before
    );
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "reads failed during the rotation: {failures:?}"
    );

    // Every Secret, wherever written, is on the new key and readable from every server; the
    // other servers hold exactly the new configuration.
    let prefix = format!("k8s:enc:aescbc:v1:{new_key}:");
    for n in &written {
        assert!(
            etcd_value(s1, &secret_key(n)).starts_with(prefix.as_bytes()),
            "{n} is not on the new key"
        );
        for s in servers {
            assert_eq!(
                read_secret(&s.kubeconfig, n).unwrap(),
                format!("value-of-{n}")
            );
        }
    }
    wait_for(
        SETTLE,
        "every server's files on the final configuration",
        || (cfg(&s2) == cfg(s1) && cfg(&s3) == cfg(s1)).then_some(()),
    );
    assert!(!String::from_utf8_lossy(&cfg(&s2)).contains("\"aescbckey\""));

    // A server that misses a stage blocks the next one until it has caught up: with s3
    // stopped, a forced prepare leaves it behind and rotate is refused, naming it; once s3
    // is back it takes the new key at start and rotate goes ahead.
    s3.daemon.stop();
    se_ok(bus, &["prepare", "--force"]);
    let out = se(bus, &["rotate"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server s3") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(status(bus)["stage"], "prepare");
    let no_bus = format!("unix:path={}", s3.dir.join("no-bus").display());
    s3.restart(&[("DBUS_SYSTEM_BUS_ADDRESS", no_bus.as_str())]);
    wait_hashes_match(bus, "prepare");
    assert_eq!(cfg(&s3), cfg(s1));
    se_ok(bus, &["rotate"]);
    wait_hashes_match(bus, "rotate");
    create_secret(&s3.kubeconfig, "via-s3", "value-of-via-s3");
    for s in [s1, &s2, &s3] {
        assert_eq!(
            read_secret(&s.kubeconfig, "via-s3").unwrap(),
            "value-of-via-s3"
        );
        assert_eq!(
            read_secret(&s.kubeconfig, "before-0").unwrap(),
            "value-of-before-0"
        );
    }
}

#[test]
fn an_unknown_provider_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    write_config(
        &config,
        &[
            ("data-dir", dir.path().join("data").display().to_string()),
            ("secrets-encryption-provider", "rot13".into()),
        ],
    );
    let out = Command::new(rke2_bin())
        .args(["server", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secrets-encryption-provider") && err.contains("unknown provider \"rot13\""),
        "{err}"
    );
    assert!(
        !dir.path().join("data/server/cred").exists(),
        "nothing is written"
    );
}
