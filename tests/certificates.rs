//! Certificates (issue 16): `rke2 certificate check` dates agree with openssl's reading of the
//! files; `rke2 certificate rotate` keeps a `tls-<unix time>` backup, removes the selected
//! leaves only, and the next start issues new ones (new keys, same CAs) and serves with them.
//! Real binary, real etcd, real openssl and curl.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

const READY: Duration = Duration::from_secs(90);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn rke2(args: &[&str]) -> Output {
    Command::new(rke2_bin()).args(args).output().unwrap()
}

/// notAfter of a certificate file as unix seconds, read by openssl.
fn openssl_not_after(cert: &Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let date = s.trim().strip_prefix("notAfter=").unwrap().trim();
    chrono::DateTime::parse_from_rfc3339(&date.replace(' ', "T").replace("TZ", "Z"))
        .or_else(|_| chrono::DateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%SZ"))
        .map(|t| t.timestamp())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%SZ")
                .map(|t| t.and_utc().timestamp())
        })
        .unwrap_or_else(|e| panic!("{date}: {e}"))
}

/// Server s1 at `block.ip(1)` under `root`, with `extra` config lines, once it is ready.
fn ready_server(block: &AddrBlock, root: &Path, extra: &[(&'static str, String)]) -> ServerNode {
    let mut s = start_server("s1", block.ip(1), root, extra);
    s.daemon.wait_log("ready:", READY);
    s
}

/// A server that became ready once and was stopped, so its data directory is complete.
fn server_run_once(block: &AddrBlock, token: &str) -> (tempfile::TempDir, ServerNode) {
    let root = tempfile::tempdir().unwrap();
    let mut s = ready_server(block, root.path(), &[("token", token.into())]);
    s.daemon.stop();
    (root, s)
}

fn check_json(data_dir: &Path) -> Vec<Value> {
    let out = rke2(&[
        "certificate",
        "check",
        "-o",
        "json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn check_shows_the_dates_and_rotate_keeps_backups() {
    require_tool("etcd", "etcd-server");
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let (root, mut s1) = server_run_once(&block, "cert-token");
    let data = s1.data_dir();
    let tls = data.join("server/tls");

    // check: every leaf, dates as openssl reads them, all OK a year ahead.
    let leaves = check_json(&data);
    let files: Vec<&str> = leaves.iter().map(|l| l["file"].as_str().unwrap()).collect();
    for f in [
        "server/tls/client-admin.crt",
        "server/tls/serving-kube-apiserver.crt",
        "server/tls/client-supervisor.crt",
        "server/tls/etcd/client.crt",
        "server/tls/etcd/server-client.crt",
        "server/tls/etcd/peer-server-client.crt",
        "agent/client-kubelet.crt",
    ] {
        assert!(
            files.iter().any(|x| x.ends_with(f)),
            "{f} missing: {files:?}"
        );
    }
    for l in &leaves {
        let file = Path::new(l["file"].as_str().unwrap());
        assert_eq!(
            l["not_after"].as_i64().unwrap(),
            openssl_not_after(file),
            "{l}"
        );
        assert_eq!(l["status"], "OK", "{l}");
        assert!(l["seconds_left"].as_i64().unwrap() > 360 * 86400);
    }
    let table = rke2(&["certificate", "check", "--data-dir", data.to_str().unwrap()]);
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(table_text.starts_with("FILENAME"), "{table_text}");
    assert!(table_text.contains("system:admin"), "{table_text}");

    // Bad input: an unknown service is a usage error and changes nothing.
    let out = rke2(&[
        "certificate",
        "rotate",
        "--service",
        "bogus",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        text(&out).contains("unknown service \"bogus\""),
        "{}",
        text(&out)
    );
    assert!(tls.join("client-admin.crt").exists());

    // rotate admin and api-server: backup of the whole tls dir, those leaves removed.
    let admin_before = fs::read(tls.join("client-admin.crt")).unwrap();
    let key_before = fs::read(tls.join("serving-kube-apiserver.key")).unwrap();
    let supervisor_before = fs::read(tls.join("client-supervisor.crt")).unwrap();
    let out = rke2(&[
        "certificate",
        "rotate",
        "--service",
        "admin,api-server",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let backup = fs::read_dir(data.join("server"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tls-"))
        .expect("a tls-<unix> backup");
    assert!(text(&out).contains(&backup.display().to_string()));
    assert_eq!(
        fs::read(backup.join("client-admin.crt")).unwrap(),
        admin_before
    );
    assert_eq!(
        fs::read(backup.join("serving-kube-apiserver.key")).unwrap(),
        key_before
    );
    assert!(backup.join("server-ca.key").exists() && backup.join("etcd/peer-ca.key").exists());
    assert_eq!(mode(&backup.join("server-ca.key")), 0o600);
    assert!(!tls.join("client-admin.crt").exists());
    assert!(!tls.join("serving-kube-apiserver.key").exists());
    assert_eq!(
        fs::read(tls.join("client-supervisor.crt")).unwrap(),
        supervisor_before
    );

    // The next start issues new leaves from the same CA and serves with them.
    let ca_before = fs::read(tls.join("server-ca.crt")).unwrap();
    s1.restart(&[]);
    s1.daemon.wait_log("ready:", READY);
    assert_eq!(fs::read(tls.join("server-ca.crt")).unwrap(), ca_before);
    assert_ne!(
        fs::read(tls.join("client-admin.crt")).unwrap(),
        admin_before
    );
    assert_ne!(
        fs::read(tls.join("serving-kube-apiserver.key")).unwrap(),
        key_before
    );
    assert_eq!(
        fs::read(tls.join("client-supervisor.crt")).unwrap(),
        supervisor_before
    );
    let (status, _) = curl(&format!("{}/cacerts", s1.supervisor()), &s1.ca(), &[]);
    assert_eq!(status, 200);
    kubectl_ok(&s1.kubeconfig, &["get", "nodes"]);
    // check on a directory without certificates is a clear error.
    let empty = root.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = rke2(&[
        "certificate",
        "check",
        "--data-dir",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has no certificates"), "{}", text(&out));
}

/// Re-issues the leaf at `<dir>/<stem>.crt/.key` from the CA `<dir>/<ca>.crt/.key` so that it
/// expired yesterday (same CN).
fn expire(tls: &Path, stem: &str, ca: &str, cn: &str) {
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let ca_pem = read(&tls.join(format!("{ca}.crt")));
    let ca_key = rcgen::KeyPair::from_pem(&read(&tls.join(format!("{ca}.key")))).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(400);
    params.not_after = now - time::Duration::days(1);
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::write(tls.join(format!("{stem}.crt")), cert.pem() + &ca_pem).unwrap();
    fs::write(tls.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn leaves_that_expired_while_stopped_are_renewed_at_start() {
    require_tool("etcd", "etcd-server");
    require_tool("openssl", "openssl");
    let block = AddrBlock::new();
    let (_root, mut s1) = server_run_once(&block, "expired-token");
    let data = s1.data_dir();
    let tls = data.join("server/tls");
    for (stem, ca, cn) in [
        ("serving-kube-apiserver", "server-ca", "kube-apiserver"),
        ("client-admin", "client-ca", "system:admin"),
        ("client-supervisor", "client-ca", "system:rke2-supervisor"),
        ("etcd/client", "etcd/server-ca", "etcd-client"),
        ("etcd/server-client", "etcd/server-ca", "etcd-server"),
        ("etcd/peer-server-client", "etcd/peer-ca", "etcd-peer"),
    ] {
        expire(&tls, stem, ca, cn);
    }
    let leaves = check_json(&data);
    let expired: Vec<&Value> = leaves.iter().filter(|l| l["status"] == "EXPIRED").collect();
    assert_eq!(expired.len(), 6, "{leaves:?}");
    let out = rke2(&["certificate", "check", "--data-dir", data.to_str().unwrap()]);
    assert!(
        text(&out).contains("WARNING:") && text(&out).contains("expired"),
        "{}",
        text(&out)
    );

    // The next start renews every expired leaf before etcd and the listeners use them.
    s1.restart(&[]);
    s1.daemon.wait_log("ready:", READY);
    for l in check_json(&data) {
        assert_eq!(l["status"], "OK", "{l}");
        let file = Path::new(l["file"].as_str().unwrap());
        assert!(openssl_not_after(file) > chrono::Utc::now().timestamp() + 360 * 86400);
    }
    kubectl_ok(&s1.kubeconfig, &["get", "nodes"]);
}

/// notAfter (unix seconds) of the certificate served at `ip:port`, read by openssl s_client.
fn served_not_after(ip: std::net::Ipv4Addr, port: u16) -> Option<i64> {
    use std::io::Write;
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("{ip}:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let pem = String::from_utf8_lossy(&out.stdout);
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("served.crt");
    fs::File::create(&file)
        .unwrap()
        .write_all(pem[start..].as_bytes())
        .unwrap();
    Some(openssl_not_after(&file))
}

#[test]
fn leaves_renew_while_running_and_are_served_without_a_restart() {
    require_tool("etcd", "etcd-server");
    require_tool("openssl", "openssl");
    require_tool("kubectl", "kubectl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    // One-minute leaves: renewed 20 s before expiry, checked every 5 s.
    let mut s1 = ready_server(
        &block,
        root.path(),
        &[
            ("token", "renew-token".into()),
            ("leaf-cert-validity", "60s".into()),
        ],
    );
    let data = s1.data_dir();
    let now = || chrono::Utc::now().timestamp();
    let first_api = served_not_after(s1.ip, 6443).expect("6443 serves a certificate");
    assert!(
        first_api <= now() + 61,
        "the served leaf lives one minute: {first_api} vs now {}",
        now()
    );

    // certificate rotate refuses while the server runs and changes nothing.
    let admin_before = fs::read(data.join("server/tls/client-admin.crt")).unwrap();
    let out = rke2(&[
        "certificate",
        "rotate",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("(pid {})", s1.daemon.pid()))
            && text(&out).contains("is running on the data directory"),
        "{}",
        text(&out)
    );
    assert!(data.join("server/tls/client-admin.crt").exists());
    assert!(
        !fs::read_dir(data.join("server")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("tls-")),
        "no backup was made"
    );

    // Before the first leaves expire, 6443, 9345 and etcd's client port serve new ones.
    let api = wait_for(Duration::from_secs(90), "a renewed API certificate", || {
        served_not_after(s1.ip, 6443).filter(|t| *t > first_api)
    });
    assert!(now() < first_api, "renewed before the old leaf expired");
    wait_for(
        Duration::from_secs(30),
        "a renewed supervisor certificate",
        || served_not_after(s1.ip, 9345).filter(|t| *t > first_api),
    );
    wait_for(
        Duration::from_secs(30),
        "a renewed etcd certificate",
        || served_not_after(s1.ip, 2379).filter(|t| *t > first_api),
    );
    assert!(
        s1.daemon
            .log_text()
            .contains("renewed leaf certificates while running")
    );
    assert_ne!(
        fs::read(data.join("server/tls/client-admin.crt")).unwrap(),
        admin_before
    );
    // `certificate check` reads the renewed files.
    for l in check_json(&data) {
        assert!(l["not_after"].as_i64().unwrap() > first_api, "{l}");
    }

    // Past the first leaves' expiry the server keeps working with the renewed ones: kubectl
    // with the rewritten kubeconfig, the node agent's heartbeats (its own client certificate)
    // and etcd through the daemon.
    wait_for(
        Duration::from_secs(90),
        "the first leaves to expire",
        || (now() > first_api + 2).then_some(()),
    );
    assert!(api > first_api);
    kubectl_ok(
        &s1.kubeconfig,
        &["create", "configmap", "after-expiry", "--from-literal=k=v"],
    );
    wait_for(
        Duration::from_secs(60),
        "a lease renewal after the expiry",
        || {
            let out = kubectl(
                &s1.kubeconfig,
                &[
                    "get",
                    "lease",
                    "-n",
                    "kube-node-lease",
                    "s1",
                    "-o",
                    "jsonpath={.spec.renewTime}",
                ],
            );
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            chrono::DateTime::parse_from_rfc3339(t.trim())
                .ok()
                .filter(|t| t.timestamp() > first_api + 2)
        },
    );
    wait_node_ready(&s1.kubeconfig, "s1", Duration::from_secs(30));
    s1.daemon.stop();
}

/// A CA `cn` with a new key, signed by `issuer` (cert, key PEM) or self-signed; (cert, key) PEM.
fn new_ca(cn: &str, issuer: Option<(&str, &str)>) -> (String, String) {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.use_authority_key_identifier_extension = issuer.is_some();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match issuer {
        Some((cert, ikey)) => {
            let issuer =
                rcgen::Issuer::from_ca_cert_pem(cert, rcgen::KeyPair::from_pem(ikey).unwrap())
                    .unwrap();
            params.signed_by(&key, &issuer).unwrap()
        }
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

fn write_ca_dir(dir: &Path, cert: &str, key: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("server-ca.crt"), cert).unwrap();
    fs::write(dir.join("server-ca.key"), key).unwrap();
}

#[test]
fn rotate_ca_takes_only_cross_signed_cas_and_old_clients_keep_trusting_the_cluster() {
    require_tool("etcd", "etcd-server");
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    require_tool("kubectl", "kubectl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut s1 = ready_server(&block, root.path(), &[("token", "ca-token".into())]);
    let data = s1.data_dir();
    let tls = data.join("server/tls");
    let old_ca = root.path().join("old-server-ca.crt");
    fs::copy(tls.join("server-ca.crt"), &old_ca).unwrap();
    let old_pem = fs::read_to_string(&old_ca).unwrap();
    let old_key = fs::read_to_string(tls.join("server-ca.key")).unwrap();
    let rotate_ca = |dir: &Path, force: bool| {
        let mut args = vec![
            "certificate".to_string(),
            "rotate-ca".into(),
            "--path".into(),
            dir.display().to_string(),
            "--server".into(),
            s1.supervisor(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        if force {
            args.push("--force".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rke2(&args)
    };

    // A new CA that does not chain to the current one is refused (without --force).
    let (self_signed, self_key) = new_ca("rke2-server-ca-unrelated", None);
    let bad = root.path().join("unrelated");
    write_ca_dir(&bad, &self_signed, &self_key);
    let out = rotate_ca(&bad, false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is not signed by the current server-ca CA")
            && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    // A key that is not the certificate's is refused before anything is sent, even forced.
    let (cross, cross_key) = new_ca("rke2-server-ca-new", Some((&old_pem, &old_key)));
    let mismatched = root.path().join("mismatched");
    write_ca_dir(&mismatched, &cross, &self_key);
    let out = rotate_ca(&mismatched, true);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("does not belong"), "{}", text(&out));
    // Nothing changed: a restart runs on the old CA.
    assert_eq!(
        fs::read_to_string(tls.join("server-ca.crt")).unwrap(),
        old_pem
    );

    // The cross-signed CA is accepted and written into the bootstrap data only.
    let good = root.path().join("cross-signed");
    write_ca_dir(&good, &cross, &cross_key);
    let out = rotate_ca(&good, false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("restart each server"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(tls.join("server-ca.crt")).unwrap(),
        old_pem
    );
    let (status, _) = curl(&format!("{}/cacerts", s1.supervisor()), &old_ca, &[]);
    assert_eq!(status, 200, "until the restart the old CA is served");

    // The next start puts the new CA files in place and stops asking for one more start, which
    // then issues and serves leaves from the new CA.
    s1.restart(&[]);
    assert_eq!(
        s1.daemon.wait_exit(READY),
        Some(1),
        "{}",
        s1.daemon.log_text()
    );
    assert!(
        s1.daemon
            .log_text()
            .contains("certificate authorities were replaced (rke2 certificate rotate-ca)"),
        "{}",
        s1.daemon.log_text()
    );
    assert_eq!(
        fs::read_to_string(tls.join("server-ca.crt")).unwrap(),
        cross
    );
    s1.restart(&[]);
    s1.daemon.wait_log("ready:", READY);
    let issuer = Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in"])
        .arg(tls.join("serving-kube-apiserver.crt"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&issuer.stdout).contains("rke2-server-ca-new"),
        "{}",
        text(&issuer)
    );
    // A client holding only the old CA still trusts the server (through the cross-signed
    // certificate in the served chain); one with the new bundle does too.
    for ca in [&old_ca, &tls.join("server-ca.crt")] {
        let (status, _) = curl(&format!("{}/cacerts", s1.supervisor()), ca, &[]);
        assert_eq!(status, 200, "{}", ca.display());
        let (status, _) = curl(&format!("https://{}:6443/readyz", s1.ip), ca, &[]);
        assert_ne!(status, 0, "TLS with {} failed", ca.display());
    }
    kubectl_ok(&s1.kubeconfig, &["get", "nodes"]);
    s1.daemon.stop();
}
