//! The service proxy on the real nftables, containerd, runc and CNI plugins
//! (docs/service-proxy.md): a Deployment of busybox `httpd` replicas behind a NodePort Service;
//! a client pod reaching the ClusterIP gets answers from every replica, the NodePort answers on
//! the node's loopback address from the host, `sessionAffinity: ClientIP` pins a client to one
//! replica, an endpoint that stops being ready leaves the rules, and deleting the Service leaves
//! no rule of it in the node's table. Each test cluster uses its own /28 pod and service ranges
//! inside 198.18.0.0/15, so parallel clusters in this network namespace never share addresses.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::workloads::*;
use common::*;

const WAIT: Duration = Duration::from_secs(120);

fn jsonpath(k: &Path, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let p = format!("jsonpath={{{path}}}");
    args.extend_from_slice(&["-o", &p]);
    String::from_utf8_lossy(&kubectl(k, &args).stdout).into_owned()
}

/// The pod endpoints (`198.18.x.y:port`) a table leads to: from endpoint chains
/// (`dnat ip to A:P`, with session affinity) and from service chains' dnat maps (`N : A . P`).
fn pod_endpoints(table: &str) -> BTreeSet<String> {
    let tokens: Vec<&str> = table
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        if !t.starts_with("198.18.") {
            continue;
        }
        if t.contains(':') {
            out.insert(t.to_string());
        } else if tokens.get(i + 1) == Some(&".")
            && let Some(port) = tokens.get(i + 2).filter(|p| p.parse::<u16>().is_ok())
        {
            out.insert(format!("{t}:{port}"));
        }
    }
    out
}

/// A client pod fetching `url` every 200 ms and printing each answer on its own line.
fn client_pod(name: &str, url: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: c
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "while true; do busybox timeout 3 busybox wget -q -O - {url} || echo failed; sleep 0.2; done"]
"#
    )
}

fn log_lines(k: &Path, pod: &str) -> Vec<String> {
    let out = kubectl(k, &["logs", pod]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn cluster_ips_and_node_ports_reach_ready_endpoints_and_leave_no_rules() {
    require_pod_runtime();
    require_tool("nft", "nftables");
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let o = ip.octets();
    let base = (o[2] % 16) * 16;
    let pod_cidr = format!("198.18.{}.{base}/28", o[1]);
    let service_cidr = format!("198.19.{}.{base}/28", o[1]);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("svcpx").join("data");
    build_images(&root.path().join("build"), &data.join("agent/images"));
    let _cleanup = NodeCleanup(data.clone());
    let server = start_server(
        "svcpx",
        ip,
        root.path(),
        &[
            ("cluster-cidr", pod_cidr.clone()),
            ("node-cidr-mask-size", "28".into()),
            ("service-cidr", service_cidr.clone()),
            ("cluster-dns", format!("198.19.{}.{}", o[1], base + 10)),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
    );
    let k = server.kubeconfig.clone();
    wait_node_ready(&k, "svcpx", Duration::from_secs(90));
    let table_file = data.join("agent/proxy-table");
    let table = wait_for(Duration::from_secs(60), "the proxy's table", || {
        let t = std::fs::read_to_string(&table_file).ok()?;
        nft_table(&t).contains("chain services").then_some(t)
    });

    apply_yaml(&k, root.path(), "web", &web_app(3, ""));
    let replicas: BTreeSet<String> = wait_for(WAIT, "3 running web pods", || {
        let names = jsonpath(
            &k,
            &[
                "pods",
                "-l",
                "app=web",
                "--field-selector=status.phase=Running",
            ],
            ".items[*].metadata.name",
        );
        let set: BTreeSet<String> = names.split_whitespace().map(str::to_string).collect();
        (set.len() == 3).then_some(set)
    });
    let cluster_ip = jsonpath(&k, &["svc", "web"], ".spec.clusterIP");
    let node_port = jsonpath(&k, &["svc", "web"], ".spec.ports[0].nodePort");
    assert!(
        cluster_ip.starts_with(&format!("198.19.{}.", o[1])),
        "{cluster_ip}"
    );
    wait_for(WAIT, "3 endpoints in the rules", || {
        (pod_endpoints(&nft_table(&table)).len() == 3).then_some(())
    });

    // A client pod reaching the ClusterIP gets answers from every replica.
    apply_yaml(
        &k,
        root.path(),
        "client",
        &client_pod("client", &format!("http://{cluster_ip}/")),
    );
    wait_for(WAIT, "answers from all 3 replicas", || {
        let seen: BTreeSet<String> = log_lines(&k, "client").into_iter().collect();
        replicas.is_subset(&seen).then_some(())
    });
    let lines = log_lines(&k, "client");
    for l in &lines {
        assert!(
            replicas.contains(l) || l == "failed",
            "unexpected answer {l:?} in {lines:?}"
        );
    }

    // ...and so does one reaching the Service by name: the node's cluster DNS answers the
    // name, the proxy carries the connection.
    apply_yaml(
        &k,
        root.path(),
        "byname",
        &client_pod("byname", "http://web.default.svc.cluster.local/"),
    );
    wait_for(WAIT, "answers by name from all 3 replicas", || {
        let seen: BTreeSet<String> = log_lines(&k, "byname").into_iter().collect();
        replicas.is_subset(&seen).then_some(())
    });

    // The NodePort answers on the node's address, from the host. That address is a loopback
    // one here, so the pod bridge needs route_localnet.
    allow_loopback_sources("svcpx");
    let url = format!("http://{ip}:{node_port}/");
    let mut host_seen = BTreeSet::new();
    wait_for(WAIT, "NodePort answers from every replica", || {
        let body = http_body(&url);
        if !body.is_empty() {
            assert!(replicas.contains(&body), "NodePort answered {body:?}");
            host_seen.insert(body);
        }
        (host_seen == replicas).then_some(())
    });

    // sessionAffinity: ClientIP pins a client to one replica.
    kubectl_ok(
        &k,
        &[
            "patch",
            "svc",
            "web",
            "-p",
            r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
        ],
    );
    wait_for(WAIT, "affinity sets", || {
        (nft_table(&table).matches("set aff-").count() == 3).then_some(())
    });
    apply_yaml(
        &k,
        root.path(),
        "sticky",
        &client_pod("sticky", &format!("http://{cluster_ip}/")),
    );
    let answers = wait_for(WAIT, "20 answers to the sticky client", || {
        let l: Vec<String> = log_lines(&k, "sticky")
            .into_iter()
            .filter(|l| l != "failed")
            .collect();
        (l.len() >= 20).then_some(l)
    });
    let distinct: BTreeSet<&String> = answers.iter().collect();
    assert_eq!(distinct.len(), 1, "one replica answers: {answers:?}");
    kubectl_ok(&k, &["delete", "pod", "sticky", "--wait=false"]);

    // An endpoint that stops being ready leaves the rules.
    apply_yaml(
        &k,
        root.path(),
        "extra",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: extra, labels: {{app: web}}}}\nspec:\n  restartPolicy: Never\n  containers:\n{}",
            web_container(BUSYBOX_IMAGE, 2)
        ),
    );
    let extra_ip = wait_for(WAIT, "the extra pod's IP", || {
        let ip = jsonpath(&k, &["pod", "extra"], ".status.podIP");
        (!ip.is_empty()).then_some(ip)
    });
    let extra = format!("{extra_ip}:8080");
    wait_for(WAIT, "the extra endpoint in the rules", || {
        pod_endpoints(&nft_table(&table))
            .contains(&extra)
            .then_some(())
    });
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://{extra_ip}:8080/cgi-bin/stop"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "stopping");
    wait_for(WAIT, "the extra endpoint out of the rules", || {
        (!pod_endpoints(&nft_table(&table)).contains(&extra)).then_some(())
    });
    assert_eq!(
        pod_endpoints(&nft_table(&table)).len(),
        3,
        "the replicas stay"
    );

    // Deleting the Service removes every rule of it.
    kubectl_ok(&k, &["delete", "svc", "web"]);
    wait_for(WAIT, "no rule of the deleted service", || {
        let t = nft_table(&table);
        (!t.contains(&cluster_ip)
            && !t.contains("default/web")
            && !t.contains(&node_port)
            // The `kubernetes` service's rules (to the API server) stay; none to a pod.
            && pod_endpoints(&t).is_empty())
        .then_some(())
    });
    assert!(nft_table(&table).contains("chain services"));
    // The `kubernetes` service leads to the API server, from its EndpointSlice.
    let api_rule = format!(": {ip} . 6443");
    assert!(nft_table(&table).contains(&api_rule), "{api_rule}");
    drop(server);
    assert!(
        nft_table(&table).is_empty(),
        "a clean shutdown removes the table"
    );
}
