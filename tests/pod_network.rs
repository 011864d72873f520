//! Pod networking across nodes (docs/pod-network.md): a server and an agent, each in a network
//! namespace the test creates and joined by one veth pair (198.18.0.1 and 198.18.0.2, pod
//! networks from 198.18.128.0/17), route each other's `spec.podCIDR` through the other's node IP
//! with their own routing protocol number (host-gw). A pod on the server fetches a page from an
//! httpd pod on the agent by pod IP. Routes the nodes did not make are left alone, stale routes
//! of their own protocol are removed, deleting a Node removes the route to its pods, a node
//! joining later is routed to, and a node with `cni: none` makes no routes.
//! Nothing is added to the host's network namespace; the namespaces have no default route.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::workloads::*;
use common::*;

/// The routing protocol number of the nodes' routes (src/runtime/routes.rs).
const PROTO: &str = "75";

/// Two namespaces `<prefix>-a` / `<prefix>-b` joined by a veth pair, both ends `eth0`. Drop
/// runs `rke2 killall` for the nodes inside their namespace, kills whatever still runs in the
/// namespaces (only this test's processes live there) and deletes them.
struct Lab {
    prefix: String,
    nodes: Vec<(String, PathBuf)>,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) -> String {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    fn new() -> Lab {
        require_tool("ip", "iproute2");
        require_tool("nsenter", "util-linux");
        let lab = Lab {
            prefix: format!("rkp{}", unique_suffix()),
            nodes: Vec::new(),
        };
        let (a, b) = (lab.ns("a"), lab.ns("b"));
        ip_ok(&["netns", "add", &a]);
        ip_ok(&["netns", "add", &b]);
        ip_ok(&[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ]);
        for (ns, addr) in [(&a, "198.18.0.1/24"), (&b, "198.18.0.2/24")] {
            ip_ok(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
            ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `<program>` in namespace `host`'s network only: `nsenter --net`, not `ip netns exec`,
    /// whose fresh /sys mount hides the cgroup mounts runc needs.
    fn exec(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(host)))
            .arg("--")
            .arg(program);
        c
    }

    /// This namespace's routes of `proto` as "dst via gateway" lines.
    fn routes(&self, host: &str, proto: &str) -> Vec<String> {
        let out = ip_ok(&["-n", &self.ns(host), "-j", "route", "show", "proto", proto]);
        let v: serde_json::Value =
            serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} via {}", r["dst"].as_str().unwrap(), r["gateway"]))
            .map(|s| s.replace('"', ""))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (host, data) in &self.nodes {
            let _ = self
                .exec(host, rke2_bin())
                .arg("killall")
                .arg("--data-dir")
                .arg(data)
                .output();
        }
        for host in ["a", "b"] {
            let ns = self.ns(host);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// kubectl run inside namespace `a` (the server's), with a fresh cache dir.
fn kc(lab: &Lab, k: &Path, args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    lab.exec("a", "kubectl")
        .arg("--kubeconfig")
        .arg(k)
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("--request-timeout=20s")
        .args(args)
        .output()
        .expect("run kubectl")
}

fn kc_ok(lab: &Lab, k: &Path, args: &[&str]) -> String {
    let out = kc(lab, k, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn jsonpath(lab: &Lab, k: &Path, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend(what);
    let p = format!("jsonpath={{{path}}}");
    args.extend(["-o", &p]);
    String::from_utf8_lossy(&kc(lab, k, &args).stdout).into_owned()
}

fn apply(lab: &Lab, k: &Path, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    kc_ok(
        lab,
        k,
        &[
            "apply",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_host_gw_routes() {
    require_pod_runtime();
    require_tool("etcd", "etcd-server");
    require_tool("kubectl", "kubernetes-client");
    let root = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    let (ip_a, ip_b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    // A route someone else owns, and a stale one of the nodes' own protocol (as a deleted
    // Node would leave behind while the daemon was down).
    let a = lab.ns("a");
    ip_ok(&[
        "-n",
        &a,
        "route",
        "add",
        "198.18.99.0/24",
        "via",
        "198.18.0.2",
        "proto",
        "static",
    ]);
    ip_ok(&[
        "-n",
        &a,
        "route",
        "add",
        "198.18.98.0/24",
        "via",
        "198.18.0.2",
        "proto",
        PROTO,
    ]);

    let images = root.path().join("images");
    build_images(&root.path().join("build"), &images);
    let node_extra = |data: &Path| {
        let dest = data.join("agent/images");
        std::fs::create_dir_all(&dest).unwrap();
        for f in ["bb.tar", "pause.tar"] {
            std::fs::copy(images.join(f), dest.join(f)).unwrap();
        }
    };
    let s_dir = root.path().join("s1");
    node_extra(&s_dir.join("data"));
    lab.nodes.push(("a".into(), s_dir.join("data")));
    let server = start_server_with(
        "s1",
        ip_a,
        root.path(),
        &[
            ("cluster-cidr", "198.18.128.0/17".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
        |config, log| {
            let mut cmd = lab.exec("a", rke2_bin());
            cmd.args(["server", "--config"])
                .arg(config)
                .env("RUST_LOG", "info");
            Daemon::spawn("s1", cmd, log)
        },
    );
    let k = server.kubeconfig.clone();
    wait_for(Duration::from_secs(90), "server s1 ready", || {
        server.daemon.log_text().contains("ready:").then_some(())
    });
    let token = server.token();

    let b_dir = root.path().join("b1");
    node_extra(&b_dir.join("data"));
    lab.nodes.push(("b".into(), b_dir.join("data")));
    // A second agent joins later from the same namespace (`cni: none`).
    let b2_dir = root.path().join("b2");
    lab.nodes.push(("b".into(), b2_dir.join("data")));
    let server_url = format!("https://{ip_a}:9345");
    let mut agent = start_agent_in(&lab, "b", "b1", &b_dir, &server_url, &token, None);

    let cidr = |node: &str| {
        wait_for(Duration::from_secs(120), &format!("{node} podCIDR"), || {
            let c = jsonpath(&lab, &k, &["node", node], ".spec.podCIDR");
            (!c.is_empty()).then_some(c)
        })
    };
    let (cidr_a, cidr_b) = (cidr("s1"), cidr("b1"));
    assert_ne!(cidr_a, cidr_b);
    for (host, want) in [
        ("a", format!("{cidr_b} via {ip_b}")),
        ("b", format!("{cidr_a} via {ip_a}")),
    ] {
        wait_for(
            Duration::from_secs(60),
            &format!("route {want} in {host}"),
            || {
                let routes = lab.routes(host, PROTO);
                (routes == [want.clone()]).then_some(())
            },
        );
    }
    // The stale route of the nodes' protocol went; the foreign one stayed.
    assert_eq!(lab.routes("a", "static"), ["198.18.99.0/24 via 198.18.0.2"]);

    let marker = format!("pong-{}", unique_suffix());
    apply(
        &lab,
        &k,
        root.path(),
        "web",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: b1
  containers:
  - name: httpd
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "/bin/busybox mkdir -p /w && echo {marker} > /w/index.html && exec /bin/busybox httpd -f -p 8080 -h /w"]
"#
        ),
    );
    let web_ip = wait_pod(&lab, &k, "web", &agent, |phase| phase == "Running");
    assert!(ipnet_contains(&cidr_b, &web_ip), "{web_ip} not in {cidr_b}");
    apply(
        &lab,
        &k,
        root.path(),
        "client",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: default}}
spec:
  nodeName: s1
  restartPolicy: Never
  containers:
  - name: wget
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "i=0; while [ $i -lt 30 ]; do /bin/busybox timeout 3 wget -q -O - http://{web_ip}:8080/ && exit 0; i=$((i+1)); sleep 1; done; exit 1"]
"#
        ),
    );
    let client_ip = wait_pod(&lab, &k, "client", &server.daemon, |p| {
        p == "Succeeded" || p == "Failed"
    });
    let phase = jsonpath(&lab, &k, &["pod", "client"], ".status.phase");
    let logs = kc(&lab, &k, &["logs", "client"]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert_eq!(
        phase,
        "Succeeded",
        "the client pod {client_ip} could not fetch from {web_ip}: {logs}\n{}",
        lab.routes("a", PROTO).join("\n")
    );
    assert!(logs.contains(&marker), "client logs: {logs:?}");
    assert!(
        ipnet_contains(&cidr_a, &client_ip),
        "{client_ip} not in {cidr_a}"
    );

    // A deleted Node's route goes (the agent stops first, or it would register again).
    agent.stop();
    kc_ok(&lab, &k, &["delete", "node", "b1"]);
    wait_for(
        Duration::from_secs(60),
        "route to b1's pods removed",
        || lab.routes("a", PROTO).is_empty().then_some(()),
    );
    assert_eq!(lab.routes("a", "static"), ["198.18.99.0/24 via 198.18.0.2"]);

    // A node joining later is routed to; one with `cni: none` makes no routes itself.
    ip_ok(&["-n", &lab.ns("b"), "route", "flush", "proto", PROTO]);
    let _agent2 = start_agent_in(&lab, "b", "b2", &b2_dir, &server_url, &token, Some("none"));
    let cidr_b2 = cidr("b2");
    wait_for(Duration::from_secs(60), "route to b2's pods", || {
        (lab.routes("a", PROTO) == [format!("{cidr_b2} via {ip_b}")]).then_some(())
    });
    wait_node_ready_in(&lab, &k, "b2");
    assert_eq!(lab.routes("b", PROTO), Vec::<String>::new());
    drop(agent);
    drop(server);
    drop(lab);
}

/// Starts agent `name` (node IP 198.18.0.2) in namespace `host` with its config and data under
/// `dir`, joining `server_url`; `cni` sets the `cni` option when given.
fn start_agent_in(
    lab: &Lab,
    host: &str,
    name: &str,
    dir: &Path,
    server_url: &str,
    token: &str,
    cni: Option<&str>,
) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = agent_config(name, Ipv4Addr::new(198, 18, 0, 2), dir, server_url, token);
    entries.push(("pause-image", PAUSE_IMAGE.into()));
    if let Some(cni) = cni {
        entries.push(("cni", cni.into()));
    }
    let config = dir.join("config.yaml");
    write_config(&config, &entries);
    let mut cmd = lab.exec(host, rke2_bin());
    cmd.args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info");
    Daemon::spawn(name, cmd, &dir.join("log"))
}

/// Waits until Node `name` is Ready (kubectl run in the server's namespace).
fn wait_node_ready_in(lab: &Lab, k: &Path, name: &str) {
    wait_for(Duration::from_secs(90), &format!("{name} Ready"), || {
        let ready = jsonpath(
            lab,
            k,
            &["node", name],
            r#".status.conditions[?(@.type=="Ready")].status"#,
        );
        (ready == "True").then_some(())
    });
}

/// Waits until pod `name` has a pod IP and a phase `done` accepts; returns the pod IP. On
/// timeout the failure shows the pod and the log of the node `daemon` that runs it.
fn wait_pod(
    lab: &Lab,
    k: &Path,
    name: &str,
    daemon: &Daemon,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = std::time::Instant::now();
    loop {
        let phase = jsonpath(lab, k, &["pod", name], ".status.phase");
        let ip = jsonpath(lab, k, &["pod", name], ".status.podIP");
        if done(&phase) && !ip.is_empty() {
            return ip;
        }
        if start.elapsed() > Duration::from_secs(150) {
            let pod = kc(lab, k, &["get", "pod", name, "-o", "yaml"]);
            panic!(
                "pod {name}: phase {phase:?}, ip {ip:?}\n{}\n{}",
                String::from_utf8_lossy(&pod.stdout),
                daemon.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether IPv4 `addr` lies in `cidr`.
fn ipnet_contains(cidr: &str, addr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let Ok(addr) = addr.parse::<Ipv4Addr>() else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(net) & mask == u32::from(addr) & mask
}
