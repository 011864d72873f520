//! Pod features on the real containerd, runc and CNI plugins (docs/workloads.md), with the test
//! images built offline from busybox-static: probes (a readiness httpGet keeps the pod 0/1 and
//! out of the Service's ready addresses until it passes; a startup tcpSocket probe gates it; a
//! liveness exec failure runs the preStop hook, then restarts the container with `Unhealthy` and
//! `Killing` events; a hostNetwork pod's gRPC readiness probe follows a grpc.health.v1 server
//! in the test process on the node's address), and a
//! pod using Secrets (secretKeyRef env, a secret volume with 0644 files), init containers in
//! order, a hostPort and securityContext runAsUser, all visible through `kubectl logs`.
//! Pod networks stay in 198.18.0.0/15 with masquerading off; nothing leaves the machine.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::workloads::*;
use common::*;

/// `READY` and `STATUS` of `kubectl get pod`.
fn ready_column(k: &Path, pod: &str) -> String {
    let out = kubectl(k, &["get", "pod", pod, "--no-headers"]);
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let cols: Vec<&str> = line.split_whitespace().collect();
    cols.get(1..3).map(|c| c.join(" ")).unwrap_or_default()
}

/// The first IP of the `probed` Endpoints' `addresses` or `notReadyAddresses`.
fn endpoint_ip(k: &Path, list: &str) -> String {
    let out = kubectl(
        k,
        &[
            "get",
            "endpoints",
            "probed",
            "-o",
            &format!("jsonpath={{.subsets[0].{list}[0].ip}}"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn event_reasons(k: &Path, pod: &str) -> String {
    let out = kubectl(
        k,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On a failing test, prints the pods, their events and the end of the node's log.
struct DumpOnFailure {
    kubeconfig: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Drop for DumpOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for args in [&["get", "pods", "-o", "yaml"][..], &["get", "events"][..]] {
            let out = kubectl(&self.kubeconfig, args);
            eprintln!(
                "--- kubectl {args:?}\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        eprintln!("--- node log (end)");
        for l in tail.into_iter().rev() {
            eprintln!("{l}");
        }
    }
}

/// One node for a pod test, Ready with its podCIDR. Fields drop in order: the failure dump
/// while the node still runs, the node, then its containers (`rke2 killall`).
struct PodNode {
    _dump: DumpOnFailure,
    _server: ServerNode,
    _cleanup: NodeCleanup,
    node: String,
    kubeconfig: std::path::PathBuf,
    /// The CNI bridge's address (the podCIDR's first).
    gateway: String,
}

/// Starts node `<prefix><b>x<c>` on `ip` (the test's block) with the test images. The name
/// picks the CNI bridge's name: unique per address block, so tests running at the same time
/// never share a bridge. The cluster CIDR is one /28 of 198.18.0.0/16 derived from the block
/// too, allocated whole to the node.
fn start_pod_node(prefix: &str, ip: std::net::Ipv4Addr, root: &Path) -> PodNode {
    let o = ip.octets();
    let node = format!("{prefix}{}x{}", o[1], o[2]);
    let base = (o[2] % 16) * 16;
    let cidr = format!("198.18.{}.{base}/28", o[1]);
    let data = root.join(&node).join("data");
    build_images(&root.join("build"), &data.join("agent/images"));
    let cleanup = NodeCleanup(data.clone());
    let server = start_server(
        &node,
        ip,
        root,
        &[
            ("cluster-cidr", cidr.clone()),
            ("node-cidr-mask-size", "28".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
    );
    let k = server.kubeconfig.clone();
    let dump = DumpOnFailure {
        kubeconfig: k.clone(),
        log: server.dir.join("log"),
    };
    wait_node_ready(&k, &node, Duration::from_secs(90));
    wait_for(Duration::from_secs(30), "the node's podCIDR", || {
        let out = kubectl(
            &k,
            &["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"],
        );
        (String::from_utf8_lossy(&out.stdout) == cidr).then_some(())
    });
    PodNode {
        _dump: dump,
        _server: server,
        _cleanup: cleanup,
        node,
        kubeconfig: k,
        gateway: format!("198.18.{}.{}", o[1], base + 1),
    }
}

#[test]
fn probes_secrets_init_containers_host_ports_and_users() {
    require_pod_runtime();
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let root = tempfile::tempdir().unwrap();
    let o = ip.octets();
    let pn = start_pod_node("pf", ip, root.path());
    let (k, node, gateway) = (pn.kubeconfig.clone(), pn.node.clone(), pn.gateway.clone());

    // ---- Probes. The web root is a hostPath the test controls: `ready` makes the readiness
    // httpGet pass, removing `alive` makes the liveness exec fail.
    let www = root.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("alive"), "yes\n").unwrap();
    apply_yaml(
        &k,
        root.path(),
        "probed",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: probed, labels: {{app: probed}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  volumes:
  - {{name: www, hostPath: {{path: "{www}", type: Directory}}}}
  containers:
  - name: web
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "sleep 2; exec busybox httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: www, mountPath: /www}}]
    startupProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1, failureThreshold: 30}}
    readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1}}
    livenessProbe: {{exec: {{command: ["cat", "/www/alive"]}}, periodSeconds: 1, failureThreshold: 2}}
    lifecycle: {{preStop: {{exec: {{command: ["sh", "-c", "echo prestop >> /www/prestop"]}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: probed}}
spec:
  selector: {{app: probed}}
  ports: [{{port: 80, targetPort: 8080}}]
"#,
            www = www.display()
        ),
    );
    wait_for(Duration::from_secs(90), "probed started", || {
        (pod_field(&k, "probed", ".status.containerStatuses[0].started") == "true").then_some(())
    });
    let pod_ip = pod_field(&k, "probed", ".status.podIP");
    assert!(!pod_ip.is_empty());
    // Started (the startup probe passed) but the readiness probe keeps failing (404): the pod
    // runs, 0/1, not Ready, and the Service lists it as not ready. Several probe periods pass.
    let since = Instant::now();
    wait_for(Duration::from_secs(60), "5 s of failing readiness", || {
        assert_eq!(ready_column(&k, "probed"), "0/1 Running");
        assert_eq!(
            pod_field(
                &k,
                "probed",
                ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            "False"
        );
        (since.elapsed() > Duration::from_secs(5)).then_some(())
    });
    wait_for(Duration::from_secs(30), "a not-ready endpoint", || {
        (endpoint_ip(&k, "notReadyAddresses") == pod_ip).then_some(())
    });
    assert!(
        event_reasons(&k, "probed")
            .contains("Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{}",
        event_reasons(&k, "probed")
    );
    // Repeated failures are one Event whose count grows (5+ periods of 1 s have passed).
    let out = kubectl_ok(
        &k,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=probed,reason=Unhealthy",
            "-o",
            "jsonpath={range .items[*]}{.count} {.message}{\"\\n\"}{end}",
        ],
    );
    let readiness: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with("Readiness probe failed: HTTP probe failed with statuscode: 404"))
        .collect();
    assert_eq!(readiness.len(), 1, "{out}");
    let count: u32 = readiness[0].split(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3, "{out}");
    // The probe starts passing: Ready, 1/1, a ready endpoint.
    std::fs::write(www.join("ready"), "ok\n").unwrap();
    wait_for(Duration::from_secs(30), "probed 1/1", || {
        (ready_column(&k, "probed") == "1/1 Running").then_some(())
    });
    assert_eq!(
        pod_field(
            &k,
            "probed",
            ".status.conditions[?(@.type==\"ContainersReady\")].status"
        ),
        "True"
    );
    wait_for(Duration::from_secs(30), "a ready endpoint", || {
        (endpoint_ip(&k, "addresses") == pod_ip).then_some(())
    });
    let first_id = pod_field(&k, "probed", ".status.containerStatuses[0].containerID");
    assert_eq!(
        pod_field(&k, "probed", ".status.containerStatuses[0].restartCount"),
        "0"
    );

    // The liveness probe fails: Unhealthy, Killing, the preStop hook runs in the container
    // before it is stopped (it writes to the hostPath), and the container restarts.
    assert!(!www.join("prestop").exists(), "preStop ran before any kill");
    std::fs::remove_file(www.join("alive")).unwrap();
    wait_for(Duration::from_secs(30), "the Killing event", || {
        let ev = event_reasons(&k, "probed");
        ev.contains("Killing: Container web failed liveness probe, will be restarted")
            .then_some(())
    });
    let ev = event_reasons(&k, "probed");
    assert!(
        ev.contains(
            "Unhealthy: Liveness probe failed: command [\"cat\", \"/www/alive\"] exited with 1"
        ),
        "{ev}"
    );
    std::fs::write(www.join("alive"), "yes\n").unwrap();
    wait_for(
        Duration::from_secs(90),
        "the restarted container ready",
        || {
            let restarts = pod_field(&k, "probed", ".status.containerStatuses[0].restartCount");
            (restarts == "1" && ready_column(&k, "probed") == "1/1 Running").then_some(())
        },
    );
    assert_ne!(
        pod_field(&k, "probed", ".status.containerStatuses[0].containerID"),
        first_id
    );
    assert_eq!(
        std::fs::read_to_string(www.join("prestop")).unwrap(),
        "prestop\n",
        "the preStop hook did not run once before the liveness kill"
    );
    let last = pod_field(
        &k,
        "probed",
        ".status.containerStatuses[0].lastState.terminated.reason",
    );
    assert!(!last.is_empty(), "no lastState after the liveness restart");

    // ---- Secrets, init containers, hostPort, runAsUser.
    kubectl_ok(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=user=admin",
            "--from-literal=pass=s3cr3t",
        ],
    );
    let host_port = 20000 + (u16::from(o[1]) * 256 + u16::from(o[2])) % 20000;
    apply_yaml(
        &k,
        root.path(),
        "features",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: features}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: creds, secret: {{secretName: creds}}}}
  initContainers:
  - {{name: init1, image: {BUSYBOX_IMAGE}, command: ["sh", "-c", "echo one >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: init2, image: {BUSYBOX_IMAGE}, command: ["sh", "-c", "echo two >> /work/order; echo served > /work/index.html; chmod 755 /work"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    securityContext: {{runAsUser: 1234}}
    command: ["sh", "-c", "cat /work/order; busybox id -u; echo SECRET=$PASS; cat /creds/user; echo; busybox stat -c %a /creds/pass; exec busybox httpd -f -p 8081 -h /work"]
    env:
    - {{name: PASS, valueFrom: {{secretKeyRef: {{name: creds, key: pass}}}}}}
    ports: [{{containerPort: 8081, hostPort: {host_port}}}]
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: creds, mountPath: /creds, readOnly: true}}
"#
        ),
    );
    wait_for(Duration::from_secs(90), "features Running", || {
        (pod_field(&k, "features", ".status.phase") == "Running").then_some(())
    });
    let inits = kubectl_ok(
        &k,
        &[
            "get",
            "pod",
            "features",
            "-o",
            "jsonpath={range .status.initContainerStatuses[*]}{.name}={.state.terminated.reason} {end}",
        ],
    );
    assert_eq!(inits, "init1=Completed init2=Completed ", "{inits}");
    wait_for(Duration::from_secs(30), "the app's output", || {
        let out = kubectl(&k, &["logs", "features", "-c", "app"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().count() >= 6).then_some(text)
    });
    let logs = kubectl_ok(&k, &["logs", "features", "-c", "app"]);
    assert_eq!(
        logs, "one\ntwo\n1234\nSECRET=s3cr3t\nadmin\n644\n",
        "{logs}"
    );
    // The hostPort forwards to the container (portmap): reached through the node's bridge
    // address, since loopback sources cannot be forwarded to the pod network.
    let body = wait_for(Duration::from_secs(30), "the hostPort", || {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "3"])
            .arg(format!("http://{gateway}:{host_port}/index.html"))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        (!body.is_empty()).then_some(body)
    });
    assert_eq!(body, "served\n");
    drop(pn);
}

/// A hostNetwork pod whose gRPC readiness probe asks a grpc.health.v1 server that this test
/// process runs on the node's (loopback) address: Ready follows SERVING / NOT_SERVING both ways,
/// and the failures are upstream's `Unhealthy` messages.
#[test]
fn a_grpc_readiness_probe_follows_the_health_service() {
    require_pod_runtime();
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let root = tempfile::tempdir().unwrap();
    let pn = start_pod_node("pg", ip, root.path());
    let (k, node) = (pn.kubeconfig.clone(), pn.node.clone());

    // The health server, NOT_SERVING for "app" to begin with.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (reporter, service) = rt.block_on(async {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("app", tonic_health::ServingStatus::NotServing)
            .await;
        (reporter, service)
    });
    let incoming = rt
        .block_on(async {
            tonic::transport::server::TcpIncoming::bind(std::net::SocketAddr::new(ip.into(), 0))
        })
        .unwrap();
    let port = incoming.local_addr().unwrap().port();
    let health = rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let set = |status| rt.block_on(reporter.set_service_status("app", status));

    apply_yaml(
        &k,
        root.path(),
        "grpcprobed",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: grpcprobed}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "while true; do sleep 1; done"]
    readinessProbe: {{grpc: {{port: {port}, service: app}}, periodSeconds: 1, failureThreshold: 1}}
"#
        ),
    );
    wait_for(Duration::from_secs(90), "grpcprobed Running", || {
        (pod_field(&k, "grpcprobed", ".status.phase") == "Running").then_some(())
    });
    let unhealthy =
        r#"Unhealthy: Readiness probe failed: service unhealthy (responded with "NOT_SERVING")"#;
    wait_for(Duration::from_secs(30), "the NOT_SERVING event", || {
        event_reasons(&k, "grpcprobed")
            .contains(unhealthy)
            .then_some(())
    });
    assert_eq!(ready_column(&k, "grpcprobed"), "0/1 Running");
    // SERVING: Ready.
    set(tonic_health::ServingStatus::Serving);
    wait_for(Duration::from_secs(30), "grpcprobed 1/1", || {
        (ready_column(&k, "grpcprobed") == "1/1 Running").then_some(())
    });
    assert_eq!(
        pod_field(
            &k,
            "grpcprobed",
            ".status.conditions[?(@.type==\"Ready\")].status"
        ),
        "True"
    );
    // NOT_SERVING again: not Ready, the container keeps running (readiness never restarts it).
    set(tonic_health::ServingStatus::NotServing);
    wait_for(Duration::from_secs(30), "grpcprobed 0/1 again", || {
        (ready_column(&k, "grpcprobed") == "0/1 Running").then_some(())
    });
    assert_eq!(
        pod_field(
            &k,
            "grpcprobed",
            ".status.containerStatuses[0].restartCount"
        ),
        "0"
    );
    // The server gone: a connection error, still not Ready.
    health.abort();
    wait_for(
        Duration::from_secs(30),
        "the connection failure event",
        || {
            event_reasons(&k, "grpcprobed")
            .contains(&format!(
                "Unhealthy: Readiness probe failed: error: failed to connect service at \"{ip}:{port}\""
            ))
            .then_some(())
        },
    );
    assert_eq!(ready_column(&k, "grpcprobed"), "0/1 Running");
}
