//! The service proxy's traffic policies on the real kernel (docs/service-proxy.md): the
//! proxy's model and ruleset for a node `n1`, applied with `nft` inside a network namespace
//! the test makes ("node"), with a "client" namespace outside the cluster and a "pod"
//! namespace holding n1's endpoint (a server answering each connection with the peer address
//! it sees). The other endpoint of each service is on node `n2` and unreachable, so a
//! connection that reaches it fails. Checks: `externalTrafficPolicy: Local` sends external
//! NodePort clients to the local endpoint only with their source address kept, and drops
//! them when there is none; `Cluster` masquerades them; `internalTrafficPolicy: Local` keeps
//! ClusterIP traffic on the local endpoint and drops it when there is none.
//! Nothing is added to the host's network namespace.

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use rke2::proxy::{model, nft};
use serde_json::{Value, json};

const NODE_IP: &str = "198.18.254.1";
const CLIENT_IP: &str = "198.18.254.2";
const NODE_POD_SIDE: &str = "198.18.253.1";
const LOCAL_POD: &str = "198.18.253.5";
const REMOTE_POD: &str = "198.18.252.9";
const CLUSTER_CIDR: &str = "198.18.252.0/23";

/// Prints the peer address of every connection to port 8080.
const SERVER: &str = "
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080))
s.listen(64)
while True:
    c, a = s.accept()
    c.sendall((a[0] + '\\n').encode())
    c.close()
";

/// Connects to argv[1]:argv[2] and prints the answer, `timeout` or `refused`.
const CLIENT: &str = "
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    print(c.recv(100).decode().strip())
except socket.timeout:
    print('timeout')
except ConnectionRefusedError:
    print('refused')
except OSError as e:
    print('error', e)
";

/// The namespaces `<prefix>-node`, `-client` and `-pod`; Drop kills the server and deletes
/// them (with them the node's table).
struct Lab {
    prefix: String,
    server: Option<Child>,
}

fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new() -> Lab {
        let mut lab = Lab {
            prefix: format!("rkpp{}", unique_suffix()),
            server: None,
        };
        let (node, client, pod) = (lab.ns("node"), lab.ns("client"), lab.ns("pod"));
        for ns in [&node, &client, &pod] {
            ip_ok(&["netns", "add", ns]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for (peer, ours, their, ours_addr, their_addr) in [
            (&client, "to-client", "eth0", NODE_IP, CLIENT_IP),
            (&pod, "to-pod", "eth0", NODE_POD_SIDE, LOCAL_POD),
        ] {
            ip_ok(&[
                "-n", &node, "link", "add", ours, "type", "veth", "peer", "name", their, "netns",
                peer,
            ]);
            ip_ok(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{ours_addr}/24"),
                "dev",
                ours,
            ]);
            ip_ok(&["-n", &node, "link", "set", ours, "up"]);
            ip_ok(&[
                "-n",
                peer,
                "addr",
                "add",
                &format!("{their_addr}/24"),
                "dev",
                their,
            ]);
            ip_ok(&["-n", peer, "link", "set", their, "up"]);
            ip_ok(&["-n", peer, "route", "add", "default", "via", ours_addr]);
        }
        let fwd = lab
            .exec("node", "sysctl")
            .arg("-qw")
            .arg("net.ipv4.ip_forward=1")
            .status();
        assert!(fwd.unwrap().success());
        lab.server = Some(
            lab.exec("pod", "python3")
                .args(["-c", SERVER])
                .stdout(Stdio::null())
                .spawn()
                .expect("python3"),
        );
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn exec(&self, host: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns(host)))
            .arg("--")
            .arg(program);
        c
    }

    /// What the client gets connecting to `addr`:`port`.
    fn connect(&self, addr: &str, port: u16) -> String {
        let out: Output = self
            .exec("client", "python3")
            .args(["-c", CLIENT, addr, &port.to_string()])
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for host in ["node", "client", "pod"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(host)])
                .status();
        }
    }
}

/// A service `name` at `cluster_ip` port 80 (NodePort `node_port` if given) with `policies`
/// merged into its spec.
fn service(name: &str, cluster_ip: &str, node_port: Option<u16>, policies: Value) -> Value {
    let mut spec = json!({
        "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
        "clusterIP": cluster_ip,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": node_port}],
    });
    for (k, v) in policies.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec})
}

/// The slice of service `name`: endpoints (address, node) on port 8080.
fn slice(name: &str, endpoints: &[(&str, &str)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(a, n)| json!({"addresses": [a], "nodeName": n, "conditions": {"ready": true}}))
        .collect();
    json!({"metadata": {"namespace": "ns", "name": format!("{name}-x"),
                        "labels": {model::SERVICE_NAME_LABEL: name}},
           "addressType": "IPv4", "endpoints": eps,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

#[test]
fn traffic_policies_local_keep_to_local_endpoints_and_sources() {
    require_tool("ip", "iproute2");
    require_tool("nsenter", "util-linux");
    require_tool("nft", "nftables");
    require_tool("python3", "python3");
    let lab = Lab::new();
    let both = [(LOCAL_POD, "n1"), (REMOTE_POD, "n2")];
    let services = [
        service(
            "etp",
            "198.19.254.1",
            Some(30001),
            json!({"externalTrafficPolicy": "Local"}),
        ),
        service("cluster", "198.19.254.2", Some(30002), json!({})),
        service(
            "etp-none",
            "198.19.254.3",
            Some(30003),
            json!({"externalTrafficPolicy": "Local"}),
        ),
        service(
            "itp",
            "198.19.254.4",
            None,
            json!({"internalTrafficPolicy": "Local"}),
        ),
        service(
            "itp-none",
            "198.19.254.5",
            None,
            json!({"internalTrafficPolicy": "Local"}),
        ),
    ];
    let slices = [
        slice("etp", &both),
        slice("cluster", &[(LOCAL_POD, "n1")]),
        slice("etp-none", &[(REMOTE_POD, "n2")]),
        slice("itp", &both),
        slice("itp-none", &[(REMOTE_POD, "n2")]),
    ];
    let spec = nft::TableSpec {
        name: "rke2-proxy-policies".into(),
        node_ips: vec![NODE_IP.parse().unwrap()],
        cluster_cidrs: vec![CLUSTER_CIDR.parse().unwrap()],
    };
    let ports = model::service_ports(&services, &slices, "n1");
    let script = nft::full_script(&spec, &nft::render(&spec, &ports));
    let mut apply = lab
        .exec("node", "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );

    // eTP Cluster: masqueraded (the pod sees the node's address), once the server listens.
    wait_for(Duration::from_secs(20), "the pod's server", || {
        (lab.connect(NODE_IP, 30002) == NODE_POD_SIDE).then_some(())
    });
    // eTP Local: always the local endpoint (the remote one would fail), source kept. With
    // random choice over two endpoints, eight tries miss the remote one by chance 1 in 256.
    for _ in 0..8 {
        assert_eq!(
            lab.connect(NODE_IP, 30001),
            CLIENT_IP,
            "externalTrafficPolicy Local"
        );
    }
    // ... and nothing when the node has no endpoint: dropped, not refused.
    assert_eq!(lab.connect(NODE_IP, 30003), "timeout");
    // iTP Local: ClusterIP traffic only to the local endpoint (masqueraded: the client is
    // outside the cluster CIDR), dropped without one.
    for _ in 0..8 {
        assert_eq!(
            lab.connect("198.19.254.4", 80),
            NODE_POD_SIDE,
            "internalTrafficPolicy Local"
        );
    }
    assert_eq!(lab.connect("198.19.254.5", 80), "timeout");
}
