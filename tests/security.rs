//! Node authorization and node identities (issue 17, findings 1, 3 and 4 and the garbage-CSR
//! item), against real servers, real etcd, kubectl, curl and openssl, using an agent's real
//! credentials (the files it writes under its data directory) and raw supervisor requests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);

/// An API request with a client certificate pair; returns (status, body).
fn api_as(
    s: &ServerNode,
    cert: &Path,
    key: &Path,
    method: &str,
    path: &str,
    merge_patch: Option<&str>,
) -> (u16, String) {
    curl_as(
        &format!("https://{}:6443{path}", s.ip),
        &s.ca(),
        cert,
        key,
        method,
        merge_patch,
    )
}

/// The kubelet client certificate an agent (or server) wrote under its data directory.
fn kubelet_pair(data_dir: &Path) -> (PathBuf, PathBuf) {
    let agent = data_dir.join("agent");
    (
        agent.join("client-kubelet.crt"),
        agent.join("client-kubelet.key"),
    )
}

/// The agent-route password of a full server token (`K10<hash>::server:<password>`); the
/// `node` user shares it when no agent-token is set.
fn agent_password(s: &ServerNode) -> String {
    s.token()
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("full token")
}

/// POSTs a CSR to a supervisor certificate route as an agent-token holder.
fn request_cert(
    s: &ServerNode,
    dir: &Path,
    route: &str,
    node: &str,
    password: &str,
    ips: &str,
    csr: &[u8],
) -> (u16, String) {
    let body = dir.join(format!("{node}-{}.csr", unique_suffix()));
    std::fs::write(&body, csr).unwrap();
    let user = format!("node:{}", agent_password(s));
    let data = format!("@{}", body.display());
    let (name_h, pw_h, ip_h) = (
        format!("rke2-Node-Name: {node}"),
        format!("rke2-Node-Password: {password}"),
        format!("rke2-Node-IP: {ips}"),
    );
    curl(
        &format!("{}{route}", s.supervisor()),
        &s.ca(),
        &[
            "-u",
            &user,
            "-X",
            "POST",
            "-H",
            &name_h,
            "-H",
            &pw_h,
            "-H",
            &ip_h,
            "--data-binary",
            &data,
        ],
    )
}

fn fresh_csr() -> Vec<u8> {
    rke2::pki::new_key_and_csr().unwrap().1
}

fn sans_of(pem: &str) -> Vec<String> {
    let der = rke2::pki::first_cert_der(pem.as_bytes()).unwrap();
    rke2::pki::CertInfo::parse(&der).unwrap().sans
}

/// `openssl verify -purpose sslserver` of `cert` against `ca`; returns (success, output).
fn openssl_verify(ca: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn member_names(s: &ServerNode) -> Vec<String> {
    etcd_members(s)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

fn has_label(k: &Path, node: &str, label: &str) -> bool {
    let out = kubectl(k, &["get", "node", node, "-o", "json"]);
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["metadata"]["labels"].get(label).cloned())
            .is_some()
}

fn secret_exists(k: &Path, name: &str) -> bool {
    kubectl(k, &["get", "secret", "-n", "kube-system", name])
        .status
        .success()
}

#[test]
fn one_server_refuses_node_escalation_foreign_names_and_api_impersonation() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    require_tool("curl", "curl");
    require_tool("openssl", "openssl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let fixed = block.ip(100);
    let mut s = start_server(
        "s1",
        block.ip(1),
        root.path(),
        &[("tls-san[]", fixed.to_string())],
    );
    s.daemon.wait_log("ready:", READY);
    let k = s.kubeconfig.clone();
    let a = start_agent(
        "a1",
        block.ip(11),
        root.path(),
        &s.supervisor(),
        &s.token(),
        &[],
    );
    wait_node_ready(&k, "a1", READY);
    let (a_cert, a_key) = kubelet_pair(&a.dir.join("data"));

    // Finding 1 with the agent's real credentials: role label + member annotation, either
    // alone, taints, another node.
    let attack = r#"{"metadata":{"labels":{"node-role.kubernetes.io/etcd":"true"},"annotations":{"etcd.rke2.cattle.io/node-name":"s1-00000000"}}}"#;
    let (code, body) = api_as(
        &s,
        &a_cert,
        &a_key,
        "PATCH",
        "/api/v1/nodes/a1",
        Some(attack),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(r#"nodes \"a1\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/etcd"#)
            && body.contains("\"reason\":\"Forbidden\""),
        "{body}"
    );
    // (method, path, merge patch, expected status, expected text in the answer)
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "PATCH",
            "/api/v1/nodes/a1",
            Some(r#"{"metadata":{"annotations":{"etcd.rke2.cattle.io/node-name":"s1-00000000"}}}"#),
            403,
            "not allowed to modify annotations",
        ),
        (
            "PATCH",
            "/api/v1/nodes/a1",
            Some(r#"{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}"#),
            403,
            "is not allowed to modify taints",
        ),
        ("DELETE", "/api/v1/nodes/s1", None, 403, "cannot delete"),
        // Ordinary labels and status stay writable: the node identity still works.
        (
            "PATCH",
            "/api/v1/nodes/a1",
            Some(r#"{"metadata":{"labels":{"tier":"web"}}}"#),
            200,
            "\"tier\":\"web\"",
        ),
        (
            "PATCH",
            "/api/v1/nodes/a1/status",
            Some(r#"{"status":{"capacity":{"pods":"111"}}}"#),
            200,
            "\"pods\":\"111\"",
        ),
    ];
    for (method, path, patch, want, text) in cases {
        let (code, body) = api_as(&s, &a_cert, &a_key, method, path, *patch);
        assert_eq!(code, *want, "{method} {path}: {body}");
        assert!(body.contains(text), "{method} {path}: {body}");
    }
    // A server's own node identity may not delete its Node: it is an etcd member.
    let (s_cert, s_key) = kubelet_pair(&s.data_dir());
    let (code, body) = api_as(&s, &s_cert, &s_key, "DELETE", "/api/v1/nodes/s1", None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("etcd member"), "{body}");
    // The server's role labels were set by the server itself, not through that identity.
    assert!(has_label(&k, "s1", "node-role.kubernetes.io/etcd"));

    // Finding 3: the server's node name is claimed by its own node password.
    assert!(secret_exists(&k, "s1.node-password.rke2"));
    for route in [
        "/v1-rke2/client-kubelet.crt",
        "/v1-rke2/serving-kubelet.crt",
    ] {
        let (code, body) = request_cert(
            &s,
            root.path(),
            route,
            "s1",
            "not-the-servers-password",
            &block.ip(1).to_string(),
            &fresh_csr(),
        );
        assert_eq!(code, 403, "{route}: {body}");
    }

    // Garbage CSR: refused before the name is claimed.
    let (code, body) = request_cert(
        &s,
        root.path(),
        "/v1-rke2/client-kubelet.crt",
        "ghost",
        "pw",
        "",
        b"garbage",
    );
    assert_eq!(code, 400, "{body}");
    assert!(!secret_exists(&k, "ghost.node-password.rke2"));
    // Names the API is verified as are reserved.
    let (code, body) = request_cert(
        &s,
        root.path(),
        "/v1-rke2/serving-kubelet.crt",
        "kubernetes",
        "pw",
        "",
        &fresh_csr(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(!secret_exists(&k, "kubernetes.node-password.rke2"));

    // Finding 4: a serving certificate asked for with the fixed address, the server's IP and
    // agent a1's address (another Node reports it: the supervisor's node address index).
    let own_ip = block.ip(12);
    let other_node = block.ip(11);
    let (code, pem) = request_cert(
        &s,
        root.path(),
        "/v1-rke2/serving-kubelet.crt",
        "a2",
        "a2-password",
        &format!("{fixed},{},127.0.0.1,{own_ip},{other_node}", s.ip),
        &fresh_csr(),
    );
    assert_eq!(code, 200, "{pem}");
    let sans = sans_of(&pem);
    for bad in [
        fixed.to_string(),
        s.ip.to_string(),
        other_node.to_string(),
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
    ] {
        assert!(!sans.contains(&bad), "{bad} in {sans:?}");
    }
    assert!(
        sans.contains(&own_ip.to_string()) && sans.contains(&"a2".to_string()),
        "{sans:?}"
    );
    let forged = root.path().join("a2-serving.crt");
    std::fs::write(&forged, &pem).unwrap();
    let (ok, out) = openssl_verify(&s.ca(), &forged);
    assert!(
        !ok,
        "a kubelet serving certificate verifies against the API CA: {out}"
    );
    let admin_ca = root.path().join("admin-ca.crt");
    std::fs::write(&admin_ca, kubeconfig_ca(&k)).unwrap();
    let (ok, out) = openssl_verify(&admin_ca, &forged);
    assert!(!ok, "verifies against the admin kubeconfig's CA: {out}");
    // The agent's own serving certificate: its address, signed by the kubelet serving CA.
    let a_serving = a.dir.join("data/agent/serving-kubelet.crt");
    let a_sans = sans_of(&std::fs::read_to_string(&a_serving).unwrap());
    assert!(a_sans.contains(&block.ip(11).to_string()), "{a_sans:?}");
    let kubelet_ca = s.data_dir().join("server/tls/kubelet-serving-ca.crt");
    let (ok, out) = openssl_verify(&kubelet_ca, &a_serving);
    assert!(ok, "{out}");
    // Clients verify the API as a name no kubelet certificate can hold.
    for kc in [k.clone(), a.dir.join("data/agent/kubelet.kubeconfig")] {
        let text = std::fs::read_to_string(&kc).unwrap();
        assert!(
            text.contains("tls-server-name: kubernetes"),
            "{}: {text}",
            kc.display()
        );
    }

    // The last voter is never removed: deleting the only server's Node keeps its member; the
    // node agent registers it again and the server puts its role labels back.
    let before = member_names(&s);
    assert_eq!(before.len(), 1, "{before:?}");
    kubectl_ok(&k, &["delete", "node", "s1"]);
    s.daemon.wait_log("it is the only voting member", READY);
    assert_eq!(member_names(&s), before);
    wait_for(READY, "s1 registered and labelled again", || {
        has_label(&k, "s1", "node-role.kubernetes.io/etcd").then_some(())
    });
    // An admin deleting an agent's Node works; the agent comes back and stays Ready.
    kubectl_ok(&k, &["delete", "node", "a1"]);
    wait_node_ready(&k, "a1", READY);
    assert_eq!(member_names(&s), before);
    kubectl_ok(
        &k,
        &["create", "configmap", "still-works", "--from-literal=a=b"],
    );
    drop(a);
}

/// The CA the admin kubeconfig trusts, as PEM.
fn kubeconfig_ca(kubeconfig: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let b64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("certificate-authority-data");
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

fn controller_leader(s: &ServerNode) -> Option<String> {
    let out = etcdctl(
        s,
        &["get", "--print-value-only", "/rke2/leader/controllers"],
    );
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

#[test]
fn etcd_membership_follows_server_identity_and_keeps_quorum() {
    require_tool("etcd", "etcd-server");
    require_tool("etcdctl", "etcd-client");
    require_tool("kubectl", "kubernetes-client");
    require_tool("curl", "curl");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let mut servers = vec![start_server("s1", block.ip(1), root.path(), &[])];
    servers[0].daemon.wait_log("ready:", READY);
    let (url, token) = (servers[0].supervisor(), servers[0].token());
    for i in 2..=3u8 {
        servers.push(start_server(
            &format!("s{i}"),
            block.ip(i),
            root.path(),
            &[("server", url.clone()), ("token", token.clone())],
        ));
    }
    let a = start_agent("a1", block.ip(11), root.path(), &url, &token, &[]);
    let k = servers[0].kubeconfig.clone();
    wait_for(READY, "3 voters", || {
        (etcd_members(&servers[0])
            .is_some_and(|m| m.len() == 3 && m.iter().all(|(n, l)| !l && !n.is_empty())))
        .then_some(())
    });
    for n in ["s1", "s2", "s3", "a1"] {
        wait_node_ready(&k, n, READY);
    }
    let members = member_names(&servers[0]);
    let member_of = |node: &str| {
        members
            .iter()
            .find(|m| m.starts_with(&format!("{node}-")))
            .cloned()
            .unwrap()
    };

    // The issue's exact attack with the agent's real credentials, aimed at s3.
    let (a_cert, a_key) = kubelet_pair(&a.dir.join("data"));
    let s0 = &servers[0];
    let attack = format!(
        r#"{{"metadata":{{"labels":{{"node-role.kubernetes.io/etcd":"true"}},"annotations":{{"etcd.rke2.cattle.io/node-name":"{}"}}}}}}"#,
        member_of("s3")
    );
    let (code, body) = api_as(
        s0,
        &a_cert,
        &a_key,
        "PATCH",
        "/api/v1/nodes/a1",
        Some(&attack),
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = api_as(s0, &a_cert, &a_key, "DELETE", "/api/v1/nodes/s3", None);
    assert_eq!(code, 403, "{body}");
    // Its own (non-member) Node it may delete; its node agent registers it again.
    let (code, body) = api_as(s0, &a_cert, &a_key, "DELETE", "/api/v1/nodes/a1", None);
    assert_eq!(code, 200, "{body}");

    // Pick the servers for the quorum check: the controllers leader stays up, a "victim" goes
    // down, a healthy "target" stays.
    let leader = wait_for(READY, "a controllers leader", || controller_leader(s0));
    let leader_idx = (0..3).find(|i| servers[*i].daemon.name == leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader_idx).collect();
    let (victim, target) = (others[0], others[1]);
    let (victim_name, target_name) = (
        servers[victim].daemon.name.clone(),
        servers[target].daemon.name.clone(),
    );

    // Even an admin-written role label and member annotation on an agent's Node do not tie it
    // to a member: deleting that Node removes nothing (checked once a later removal is done).
    wait_for(READY, "a1 registered again", || {
        kubectl(&k, &["get", "node", "a1"])
            .status
            .success()
            .then_some(())
    });
    kubectl_ok(
        &k,
        &["label", "node", "a1", "node-role.kubernetes.io/etcd=true"],
    );
    kubectl_ok(
        &k,
        &[
            "annotate",
            "node",
            "a1",
            &format!("etcd.rke2.cattle.io/node-name={}", member_of(&target_name)),
        ],
    );
    kubectl_ok(&k, &["delete", "node", "a1"]);

    // Quorum: with one server down, removing a healthy one would leave 1 of 2 healthy.
    servers[victim].daemon.kill9();
    let lk = servers[leader_idx].kubeconfig.clone();
    kubectl_ok(&lk, &["delete", "node", &target_name]);
    servers[leader_idx]
        .daemon
        .wait_log("which is no quorum", READY);
    let now = member_names(&servers[leader_idx]);
    assert!(now.contains(&member_of(&target_name)), "{now:?}");
    assert_eq!(now.len(), 3, "{now:?}");

    // An admin deleting the dead server's Node removes its member (2 healthy remain).
    kubectl_ok(&lk, &["delete", "node", &victim_name]);
    wait_for(READY, "the dead server's member removed", || {
        let m = member_names(&servers[leader_idx]);
        (m.len() == 2 && !m.contains(&member_of(&victim_name))).then_some(())
    });
    let m = member_names(&servers[leader_idx]);
    assert!(
        m.contains(&member_of(&target_name)),
        "{target_name}'s member was removed (through a1's annotation or without quorum): {m:?}"
    );
    // The cluster and the agent keep working.
    kubectl_ok(&lk, &["create", "configmap", "after", "--from-literal=a=b"]);
    wait_node_ready(&lk, "a1", READY);
    drop(a);
}
