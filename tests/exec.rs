//! `kubectl exec`, `attach`, `port-forward` and `cp` (issue 13, item 5) against a real server
//! node running pods on the real containerd, with every kubectl installed (1.27 ... 1.33 and the
//! dispatcher): output, exit codes, piped stdin, a TTY (`-it` under script(1)), a port-forward
//! carrying an HTTP request to busybox httpd, a file copied out with `kubectl cp`, and a node
//! identity that may read pods but is Forbidden to open sessions into them.
//! Pod networks stay in 198.18.0.0/15 with masquerading off; nothing leaves 127.0.0.0/8.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::streaming::*;
use common::workloads::*;
use common::*;

fn pod_phase(k: &Path, pod: &str) -> String {
    let out = kubectl(k, &["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(k: &Path, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    kubectl_ok(
        k,
        &[
            "apply",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The admin kubeconfig with the node's own kubelet client certificate (`system:node:<node>`).
fn node_kubeconfig(admin: &Path, agent: &Path, dir: &Path) -> std::path::PathBuf {
    let kc = dir.join("node.kubeconfig");
    std::fs::copy(admin, &kc).unwrap();
    let user = kubectl_ok(
        &kc,
        &[
            "config",
            "view",
            "-o",
            "jsonpath={.contexts[0].context.user}",
        ],
    );
    kubectl_ok(
        &kc,
        &[
            "config",
            "set-credentials",
            &user,
            "--embed-certs",
            &format!(
                "--client-certificate={}",
                agent.join("client-kubelet.crt").display()
            ),
            &format!(
                "--client-key={}",
                agent.join("client-kubelet.key").display()
            ),
        ],
    );
    kc
}

/// kubectl with a fresh cache dir, under timeout(1) so a session that never ends fails the test
/// (exit 124) instead of hanging it.
fn run_kubectl(bin: &Path, k: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let (cmd, _cache) = kubectl_cmd(bin, k, args);
    let mut timed = Command::new("timeout");
    timed
        .args(["-k", "5", "120"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let mut child = timed
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn exec_attach_port_forward_and_cp_with_every_kubectl() {
    for (tool, pkg) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("curl", "curl"),
        ("script", "bsdutils"),
    ] {
        require_tool(tool, pkg);
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").is_file() || Path::new("/opt/cni/bin/bridge").is_file(),
        "the CNI plugins are required: apt-get install -y containernetworking-plugins"
    );
    let block = AddrBlock::new();
    let ip = block.ip(1);
    let node = block.node_name("s1");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join(&node).join("data");
    build_images(&root.path().join("build"), &data.join("agent/images"));
    let _cleanup = NodeCleanup(data.clone());
    let server = start_server(
        &node,
        ip,
        root.path(),
        &[
            ("cluster-cidr", "198.18.0.0/16".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", PAUSE_IMAGE.into()),
        ],
    );
    let k = server.kubeconfig.clone();
    wait_node_ready(&k, &node, Duration::from_secs(90));
    let octets = ip.octets();
    let cidr = format!("198.18.{}.{}/28", octets[1], (octets[2] % 16) * 16);
    kubectl_ok(
        &k,
        &[
            "patch",
            "node",
            &node,
            "-p",
            &format!(r#"{{"spec":{{"podCIDR":"{cidr}","podCIDRs":["{cidr}"]}}}}"#),
        ],
    );
    let marker = format!("copied-{}", unique_suffix());
    apply(
        &k,
        root.path(),
        "web",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "busybox ln -s busybox /bin/tar; busybox mkdir -p /www /tmp; echo hello-web > /www/index.html; echo {marker} > /tmp/out.txt; exec busybox httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: {BUSYBOX_IMAGE}
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "read line; echo got $line"]
"#
        ),
    );
    for pod in ["web", "reader"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while pod_phase(&k, pod) != "Running" {
            if std::time::Instant::now() > deadline {
                let status = kubectl(&k, &["get", "pod", pod, "-o", "jsonpath={.status}"]);
                panic!("pod {pod} is not Running: {}", text(&status.stdout));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // The node's own identity may read the pod but not open a session in it.
    let node_kc = node_kubeconfig(&k, &data.join("agent"), root.path());
    let got = kubectl(&node_kc, &["get", "pod", "web", "-o", "name"]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    for args in [
        &["exec", "web", "--", "echo", "hi"][..],
        &["attach", "reader"][..],
        &["port-forward", "web", ":8080"][..],
    ] {
        let out = kubectl(&node_kc, args);
        let err = text(&out.stderr);
        let sub = format!("pods/{}", args[0].replace('-', ""));
        assert!(!out.status.success(), "{args:?} as the node succeeded");
        assert!(
            err.contains("forbidden") && err.contains(&format!("cannot create resource \"{sub}\"")),
            "{args:?}: {err}"
        );
    }

    // The kubelet API opens sessions for the API server only: the admin's certificate (from the
    // same client CA) is refused there, so nobody bypasses the API server's authorisation.
    let admin_cert = data.join("server/tls/client-admin.crt");
    let admin_key = data.join("server/tls/client-admin.key");
    let direct = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--max-time",
            "20",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cert")
        .arg(&admin_cert)
        .arg("--key")
        .arg(&admin_key)
        .arg(format!(
            "https://{ip}:10250/exec/default/web/c?command=true&output=1"
        ))
        .output()
        .unwrap();
    let body = text(&direct.stdout);
    assert!(
        body.ends_with("\n403") && body.contains("only the API server"),
        "kubelet API exec as admin: {body} {}",
        text(&direct.stderr)
    );

    // attach: stdin reaches the container's main process, its answer comes back.
    let out = run_kubectl(
        Path::new("kubectl"),
        &k,
        &["attach", "-i", "reader"],
        Some("hello-attach\n"),
    );
    assert!(
        text(&out.stdout).contains("got hello-attach"),
        "attach: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let kubectls = installed_kubectls();
    for (label, bin) in &kubectls {
        eprintln!("kubectl {label}");
        let run = |args: &[&str], stdin: Option<&str>| run_kubectl(bin, &k, args, stdin);
        let out = run(&["exec", "web", "--", "echo", "hi"], None);
        assert!(out.status.success(), "{label}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hi\n", "{label}");

        let out = run(
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(3), "{label}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "out\n", "{label}");
        assert!(
            text(&out.stderr).starts_with("err\n"),
            "{label}: {}",
            text(&out.stderr)
        );

        let input = format!("piped through {label}\nsecond line\n");
        let out = run(&["exec", "-i", "web", "--", "cat"], Some(&input));
        assert!(out.status.success(), "{label}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), input, "{label}");

        assert_tty_and_port_forward(bin, &k, "web", "hello-web\n", label, &|| {
            node_logs(&server.daemon, &data)
        });

        let dest = root.path().join(format!("out-{label}.txt"));
        let out = run(
            &["cp", "web:/tmp/out.txt", &dest.display().to_string()],
            None,
        );
        assert!(out.status.success(), "{label} cp: {}", text(&out.stderr));
        let listing = Command::new("ls")
            .arg("-laR")
            .arg(root.path())
            .output()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap_or_else(|e| panic!(
                "{label} cp: {e}: {} {}\n{}",
                text(&out.stdout),
                text(&out.stderr),
                text(&listing.stdout)
                    .lines()
                    .filter(|l| !l.contains("data"))
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            format!("{marker}\n"),
            "{label} cp"
        );
    }

    // Bad requests are refused with the reason, before anything reaches the node.
    let out = kubectl(&k, &["exec", "web", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod web"),
        "{}",
        text(&out.stderr)
    );
}
