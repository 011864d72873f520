//! Cluster DNS with the real `rke2` binary, real etcd, kubectl and containerd (issue 13 item 4,
//! docs/dns.md): the node makes `cluster-dns` a local address and answers on it; a pod gets the
//! cluster's resolv.conf and resolves a Service to its ClusterIP with busybox's nslookup (read
//! from the pod's logs); the node's local route is gone after it stops, and after a SIGKILL
//! `rke2 killall` removes it.
//! Each test uses its own /28 pod and service ranges inside 198.18.0.0/15 (so its `cluster-dns`
//! is its own), and queries only that address: nothing leaves the machine.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::workloads::*;
use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const READY: Duration = Duration::from_secs(90);

/// One UDP question to `server`; `None` while nothing answers.
fn ask(server: SocketAddr, name: &str, t: RecordType) -> Option<Message> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, t));
    s.send_to(&m.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn local_routes() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "local"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The local routes for `ip`, one line each (a run killed before it could clean up may have
/// left one with another metric: only this test's node's route is asserted on).
fn routes_for(ip: Ipv4Addr) -> Vec<String> {
    local_routes()
        .lines()
        .filter(|l| l.starts_with(&format!("local {ip} ")))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The route added since `before` (this node's), once there is exactly one.
fn own_route(ip: Ipv4Addr, before: &[String]) -> Option<String> {
    let new: Vec<String> = routes_for(ip)
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    (new.len() == 1).then(|| new[0].clone())
}

#[test]
fn pods_resolve_services_through_the_node_dns() {
    require_pod_runtime();
    require_tool("ip", "iproute2");
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let o = ip.octets();
    // Ranges of this test only (127.A.B.x → 198.1x.A.(B%16*16)/28).
    let low = (o[2] % 16) * 16;
    let pods = format!("198.18.{}.{low}/28", o[1]);
    let services = format!("198.19.{}.{low}/28", o[1]);
    let dns_ip = Ipv4Addr::new(198, 19, o[1], low + 10);
    let dns = SocketAddr::new(dns_ip.into(), 53);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("dns1/data");
    build_images(&root.path().join("build"), &data.join("agent/images"));
    let _cleanup = NodeCleanup(data.clone());
    let before = routes_for(dns_ip);
    let mut server = start_server(
        "dns1",
        ip,
        root.path(),
        &[
            ("cluster-cidr", pods.clone()),
            ("node-cidr-mask-size", "28".into()),
            ("service-cidr", services.clone()),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
    );
    let k = server.kubeconfig.clone();
    wait_node_ready(&k, "dns1", READY);

    // A Service with a named port; the allocator never hands out the DNS address.
    apply_yaml(
        &k,
        root.path(),
        "web",
        r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, protocol: TCP}]
"#,
    );
    let cluster_ip = kubectl_ok(
        &k,
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
    );
    assert!(
        !cluster_ip.is_empty() && cluster_ip != dns_ip.to_string(),
        "{cluster_ip}"
    );

    // The node answers on cluster-dns from this (host) network namespace too.
    let fqdn = "web.default.svc.cluster.local.";
    let m = wait_for(
        Duration::from_secs(60),
        "the node's DNS answer for web",
        || ask(dns, fqdn, RecordType::A).filter(|m| !m.answers.is_empty()),
    );
    assert_eq!(m.answers[0].data.to_string(), cluster_ip);
    assert!(m.metadata.authoritative);
    let route = own_route(dns_ip, &before).unwrap_or_else(|| {
        panic!(
            "no local route of this node for {dns_ip}:\n{}",
            local_routes()
        )
    });
    assert!(route.contains(" dev lo "), "{route}");
    let m = ask(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(
        m.answers[0].data.to_string(),
        "0 100 80 web.default.svc.cluster.local."
    );
    let m = ask(dns, "nope.default.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = ask(dns, "example.org.", RecordType::A).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // A deleted Service is gone from DNS as soon as the watch delivers it.
    kubectl_ok(&k, &["create", "service", "clusterip", "gone", "--tcp=81"]);
    wait_for(Duration::from_secs(30), "gone resolvable", || {
        ask(dns, "gone.default.svc.cluster.local.", RecordType::A).filter(|m| !m.answers.is_empty())
    });
    kubectl_ok(&k, &["delete", "service", "gone"]);
    wait_for(Duration::from_secs(30), "gone NXDOMAIN", || {
        ask(dns, "gone.default.svc.cluster.local.", RecordType::A)
            .filter(|m| m.metadata.response_code == ResponseCode::NXDomain)
    });

    // A pod with the default dnsPolicy resolves the Service by name.
    apply_yaml(
        &k,
        root.path(),
        "client",
        r#"apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: dns1
  restartPolicy: Never
  containers:
  - name: c
    image: docker.io/library/bb:1
    command: ["sh", "-c", "cat /etc/resolv.conf; echo ===; nslookup web.default.svc.cluster.local; echo ===; nslookup nope.default.svc.cluster.local; echo END"]
"#,
    );
    let logs = wait_for(Duration::from_secs(120), "the client pod's output", || {
        let out = kubectl(&k, &["logs", "client"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("END").then_some(text)
    });
    let parts: Vec<&str> = logs.split("===\n").collect();
    assert_eq!(parts.len(), 3, "{logs}");
    assert!(
        parts[0].contains(&format!("nameserver {dns_ip}")),
        "resolv.conf: {}",
        parts[0]
    );
    assert!(
        parts[0].contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "resolv.conf: {}",
        parts[0]
    );
    assert!(
        parts[0].contains("options ndots:5"),
        "resolv.conf: {}",
        parts[0]
    );
    assert!(
        parts[1].contains(&format!("Address: {cluster_ip}"))
            || parts[1].contains(&format!("Address 1: {cluster_ip}")),
        "nslookup web: {}",
        parts[1]
    );
    assert!(parts[2].contains("NXDOMAIN"), "nslookup nope: {}", parts[2]);

    // Stopping the node removes its local route.
    assert_eq!(server.daemon.stop(), Some(0));
    assert!(
        !routes_for(dns_ip).contains(&route),
        "the local route outlived the node:\n{}",
        local_routes()
    );

    // A killed node cannot clean up; `rke2 killall` removes the route it recorded.
    server.restart(&[]);
    wait_for(READY, "the restarted node's local route", || {
        routes_for(dns_ip).contains(&route).then_some(())
    });
    server.daemon.kill9();
    assert!(routes_for(dns_ip).contains(&route), "{}", local_routes());
    let out = Command::new(rke2_bin())
        .arg("killall")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !routes_for(dns_ip).contains(&route),
        "killall left the local route:\n{}",
        local_routes()
    );
    assert!(!data.join("agent/cluster-dns-route").exists());
}
