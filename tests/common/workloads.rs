//! Pod test helpers: offline test images (busybox-static as an image and as a pause image) and
//! the `rke2 killall` cleanup guard, and pod helpers (a busybox httpd container serving its pod's
//! name, the service proxy's nft table, NodePort requests from the host), shared by
//! tests/workloads.rs, tests/pod_features.rs, tests/service_proxy.rs, tests/seed_scenario.rs and
//! benches/pods.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{AddrBlock, kubectl, require_tool};

/// The pause image the helpers build, as the `pause-image` setting names it.
pub const PAUSE_IMAGE: &str = "rke2test/pause:1";
/// The busybox image the helpers build.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/bb:1";

/// The settings of a test node running pods: a pod range of this test's own (a /27 of
/// 198.18.0.0/16 from the test's address block, cut into /28 node ranges), services in
/// 198.19.0.0/16, the test images' pause image.
pub fn pod_settings(block: &AddrBlock) -> Vec<(&'static str, String)> {
    let o = block.ip(1).octets();
    vec![
        (
            "cluster-cidr",
            format!("198.18.{}.{}/27", o[1], (o[2] % 8) * 32),
        ),
        ("node-cidr-mask-size", "28".into()),
        ("service-cidr", "198.19.0.0/16".into()),
        ("pause-image", PAUSE_IMAGE.into()),
    ]
}

/// Builds the busybox test image and a pause image as docker-archives in `images`:
/// `docker.io/library/bb:1` and `docker.io/rke2test/pause:1` (busybox `sleep` as the pause).
pub fn build_images(work: &Path, images: &Path) {
    for (tool, pkg) in [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("busybox", "busybox-static"),
    ] {
        require_tool(tool, pkg);
    }
    std::fs::create_dir_all(images).unwrap();
    let layout = work.join("oci");
    let bundle = work.join("bundle");
    let run = run_ok;
    let l = layout.display().to_string();
    let b = bundle.display().to_string();
    run(&["umoci", "init", "--layout", &l]);
    run(&["umoci", "new", "--image", &format!("{l}:1")]);
    run(&[
        "umoci",
        "unpack",
        "--rootless",
        "--image",
        &format!("{l}:1"),
        &b,
    ]);
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static installed");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "ls", "wget", "true", "false", "nslookup",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    run(&["umoci", "repack", "--image", &format!("{l}:1"), &b]);
    run(&[
        "umoci",
        "config",
        "--image",
        &format!("{l}:1"),
        "--config.cmd",
        "/bin/sh",
    ]);
    run(&[
        "umoci",
        "config",
        "--image",
        &format!("{l}:1"),
        "--tag",
        "pause",
        "--config.entrypoint",
        "/bin/sleep",
        "--config.cmd",
        "2147483647",
    ]);
    for (tag, name, file) in [
        ("1", "docker.io/library/bb:1", "bb.tar"),
        ("pause", "docker.io/rke2test/pause:1", "pause.tar"),
    ] {
        let dest = format!("docker-archive:{}:{name}", images.join(file).display());
        run(&[
            "skopeo",
            "copy",
            "--quiet",
            &format!("oci:{l}:{tag}"),
            &dest,
        ]);
    }
}

/// Adds the busybox image under a second name, `docker.io/library/bb:<tag>`, to `images` (made
/// by [`build_images`]), for tests that change a template's image.
pub fn tag_busybox(images: &Path, tag: &str) {
    let from = format!("docker-archive:{}", images.join("bb.tar").display());
    let to = format!(
        "docker-archive:{}:docker.io/library/bb:{tag}",
        images.join(format!("bb-{tag}.tar")).display()
    );
    run_ok(&["skopeo", "copy", "--quiet", &from, &to]);
}

/// Runs `args[0]` with the rest as arguments; panics with its stderr unless it succeeds.
pub fn run_ok(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks for what pods need on a node: containerd, runc, ctr and the CNI plugins.
pub fn require_pod_runtime() {
    for (tool, pkg) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
    ] {
        require_tool(tool, pkg);
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").is_file() || Path::new("/opt/cni/bin/bridge").is_file(),
        "the CNI plugins are required: apt-get install -y containernetworking-plugins"
    );
}

/// Writes `yaml` to `<dir>/<name>.yaml` and `kubectl apply`s it.
pub fn apply_yaml(k: &Path, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    super::kubectl_ok(
        k,
        &[
            "apply",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ],
    );
}

/// Runs `rke2 killall` for a node's data dir when dropped (after its daemon), so no container,
/// netns, mount or bridge outlives the test, even when it fails.
pub struct NodeCleanup(pub PathBuf);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        super::killall_data_dir(&self.0);
    }
}

/// A node's side of a failure: the daemon's log tail and the last lines of its containerd log
/// (`<data-dir>/agent/containerd/containerd.log`), where the CRI stream server reports.
pub fn node_logs(daemon: &super::Daemon, data_dir: &Path) -> String {
    let containerd = std::fs::read_to_string(data_dir.join("agent/containerd/containerd.log"))
        .unwrap_or_else(|e| format!("(no containerd log: {e})"));
    let lines: Vec<&str> = containerd.lines().collect();
    format!(
        "--- {} log:\n{}\n--- containerd log:\n{}",
        daemon.name,
        daemon.log_tail(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

/// A jsonpath `path` (without braces) of pod `pod`, empty when kubectl fails.
pub fn pod_field(k: &Path, pod: &str, path: &str) -> String {
    let out = kubectl(
        k,
        &["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft list table inet <table>` (empty when the table does not exist).
pub fn nft_table(table: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container serving its pod's name on 8080 with busybox httpd (`GET /cgi-bin/stop` ends
/// it), as a YAML list item indented by `indent` spaces.
pub fn web_container(image: &str, indent: usize) -> String {
    let text = format!(
        r#"- name: c
  image: {image}
  env:
  - {{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
  command:
  - sh
  - -c
  - |
    busybox mkdir -p /www/cgi-bin
    echo "$MY_POD" > /www/index.html
    printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho stopping\nbusybox touch /www/stop\n' > /www/cgi-bin/stop
    busybox chmod 755 /www/cgi-bin/stop
    busybox httpd -p 8080 -h /www
    while [ ! -e /www/stop ]; do sleep 1; done
"#
    );
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The trimmed body of `GET url` by curl within 3 s; empty when nothing answered.
pub fn http_body(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Lets the host reach pods on `node`'s bridge from a loopback address (test nodes' addresses
/// are loopback ones): the kernel routes loopback sources and destinations through an
/// interface only with its `route_localnet` set. The setting goes with the bridge.
pub fn allow_loopback_sources(node: &str) {
    let localnet = format!(
        "/proc/sys/net/ipv4/conf/{}/route_localnet",
        rke2::runtime::cni::bridge_name(node)
    );
    std::fs::write(&localnet, "1").unwrap_or_else(|e| panic!("{localnet}: {e}"));
}

/// A Deployment `web` of `replicas` [`web_container`]s (pod spec lines `pod_spec_extra`, each
/// indented by 6 spaces, before `containers:`) behind a NodePort Service `web` (port 80 to the
/// pods' 8080), as one YAML document stream.
pub fn web_app(replicas: u32, pod_spec_extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
{pod_spec_extra}      containers:
{}---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"#,
        web_container(BUSYBOX_IMAGE, 6)
    )
}

/// A server and agents on one [`super::AddrBlock`], the test images imported on the agents
/// (benches/pods.rs, benches/deployment.rs). Node names (and so CNI bridge names) derive from
/// the block, so runs next to other tests never share a bridge. Fields drop in order: agents
/// first, then their cleanups, then the server.
pub struct PodCluster {
    pub agents: Vec<(String, super::AgentNode)>,
    agent_cleanups: Vec<NodeCleanup>,
    pub server: super::ServerNode,
    _server_cleanup: NodeCleanup,
    pub kubeconfig: PathBuf,
    pub root: tempfile::TempDir,
    _block: super::AddrBlock,
}

impl PodCluster {
    /// Starts the server on `block` with `server_extra` settings and `agents` agents, and waits
    /// until every node is Ready with the images and the CNI config in place; `extra_images`
    /// are more names for the busybox image (rollouts to "a new image" without a registry).
    pub fn start(
        block: super::AddrBlock,
        agents: usize,
        server_extra: &[(&'static str, String)],
        extra_images: &[&str],
    ) -> PodCluster {
        use std::time::Duration;
        let root = tempfile::tempdir().unwrap();
        let o = block.ip(1).octets();
        let server_name = format!("bs{}x{}", o[1], o[2]);
        let mut extra = vec![("pause-image", PAUSE_IMAGE.to_string())];
        extra.extend(server_extra.iter().cloned());
        let server = super::start_server(&server_name, block.ip(1), root.path(), &extra);
        let server_cleanup = NodeCleanup(server.data_dir());
        let k = server.kubeconfig.clone();
        super::wait_node_ready(&k, &server_name, Duration::from_secs(120));
        let build = root.path().join("build");
        let mut cluster = PodCluster {
            agents: Vec::new(),
            agent_cleanups: Vec::new(),
            server,
            _server_cleanup: server_cleanup,
            kubeconfig: k.clone(),
            root,
            _block: block.clone(),
        };
        for i in 0..agents {
            let name = format!("b{}{}x{}", (b'a' + i as u8) as char, o[1], o[2]);
            let dir = cluster.root.path().join(&name);
            let images = dir.join("data/agent/images");
            if i == 0 {
                build_images(&build, &images);
            } else {
                std::fs::create_dir_all(&images).unwrap();
                for f in ["bb.tar", "pause.tar"] {
                    let first = cluster.agents[0].1.dir.join("data/agent/images").join(f);
                    std::fs::copy(first, images.join(f)).unwrap();
                }
            }
            for (n, extra) in extra_images.iter().enumerate() {
                let dest = format!(
                    "docker-archive:{}:{extra}",
                    images.join(format!("extra{n}.tar")).display()
                );
                let src = format!("docker-archive:{}", images.join("bb.tar").display());
                run_ok(&["skopeo", "copy", "--quiet", &src, &dest]);
            }
            cluster.agent_cleanups.push(NodeCleanup(dir.join("data")));
            let agent = super::start_agent(
                &name,
                block.ip(2 + i as u8),
                cluster.root.path(),
                &cluster.server.supervisor(),
                &cluster.server.token(),
                &[("pause-image", PAUSE_IMAGE.into())],
            );
            cluster.agents.push((name, agent));
        }
        for (name, agent) in &cluster.agents {
            super::wait_node_ready(&k, name, Duration::from_secs(120));
            super::wait_for(Duration::from_secs(60), "agent images and CNI", || {
                let out = kubectl(
                    &k,
                    &[
                        "get",
                        "node",
                        name,
                        "-o",
                        "jsonpath={.status.images[*].names}",
                    ],
                );
                let cni = agent
                    .dir
                    .join("data/agent/etc/cni/net.d/10-rke2-bridge.conflist");
                let names = String::from_utf8_lossy(&out.stdout).into_owned();
                (extra_images
                    .iter()
                    .chain([&"bb:1"])
                    .all(|i| names.contains(*i))
                    && cni.is_file())
                .then_some(())
            });
        }
        cluster
    }

    /// Deletes every pod (and `what_else`, say `deploy/web`), waits until the agents' pod
    /// sandboxes are gone, and stops the agents.
    pub fn stop_pods(&mut self, what_else: &[&str]) {
        use std::time::Duration;
        for w in what_else {
            kubectl(&self.kubeconfig, &["delete", w, "--wait=false"]);
        }
        kubectl(
            &self.kubeconfig,
            &["delete", "pods", "--all", "--wait=false"],
        );
        super::wait_for(Duration::from_secs(180), "the pods gone", || {
            let out = kubectl(&self.kubeconfig, &["get", "pods", "-o", "name"]);
            (out.status.success() && out.stdout.is_empty()).then_some(())
        });
        for (_, a) in &mut self.agents {
            a.daemon.stop();
        }
    }
}

/// When each pod was first seen (its creation) and first seen Running, from one
/// `kubectl get pods --watch` started before the pods are created: per-pod create → Running
/// latency without polling. Stops the watch when dropped.
pub struct PodTimes {
    child: std::process::Child,
    times: std::sync::Arc<std::sync::Mutex<PodTimeMap>>,
}

type PodTimeMap =
    std::collections::HashMap<String, (std::time::Instant, Option<std::time::Instant>)>;

impl PodTimes {
    /// Starts the watch and returns once it is established. kubectl prints nothing for an
    /// empty list, so a sentinel pod (bound to no real node) shows when it is; it is then
    /// deleted at once.
    pub fn start(k: &Path) -> PodTimes {
        use std::io::BufRead;
        use std::process::Stdio;
        const SENTINEL: &str = "watch-sentinel";
        super::kubectl_ok(
            k,
            &[
                "run",
                SENTINEL,
                "--image=none",
                "--restart=Never",
                "--overrides={\"spec\": {\"nodeName\": \"no-such-node\"}}",
            ],
        );
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(k)
            .args([
                "get",
                "pods",
                "--watch",
                "--no-headers",
                "-o",
                "custom-columns=N:.metadata.name,P:.status.phase",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl");
        let stdout = child.stdout.take().unwrap();
        let times = std::sync::Arc::new(std::sync::Mutex::new(PodTimeMap::new()));
        let t = times.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let now = std::time::Instant::now();
                let mut cols = line.split_whitespace();
                let (Some(name), phase) = (cols.next(), cols.next()) else {
                    continue;
                };
                let mut t = t.lock().unwrap();
                let e = t.entry(name.to_string()).or_insert((now, None));
                if phase == Some("Running") && e.1.is_none() {
                    e.1 = Some(now);
                }
            }
        });
        let times = PodTimes { child, times };
        // The watch follows from its list's resourceVersion: no pod created after the
        // sentinel is seen is missed.
        super::wait_for(std::time::Duration::from_secs(60), "the pod watch", || {
            times.times.lock().unwrap().remove(SENTINEL).map(|_| ())
        });
        super::kubectl_ok(
            k,
            &["delete", "pod", SENTINEL, "--grace-period=0", "--force"],
        );
        times
    }

    /// Pods seen Running so far.
    pub fn running(&self) -> usize {
        let t = self.times.lock().unwrap();
        t.values().filter(|(_, r)| r.is_some()).count()
    }

    /// Create → Running latencies of the pods seen Running, sorted, and the last Running
    /// instant.
    pub fn latencies(&self) -> (Vec<std::time::Duration>, Option<std::time::Instant>) {
        let t = self.times.lock().unwrap();
        let mut lat: Vec<_> = t
            .values()
            .filter_map(|(seen, r)| r.map(|r| r - *seen))
            .collect();
        lat.sort();
        (lat, t.values().filter_map(|(_, r)| *r).max())
    }
}

impl Drop for PodTimes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `p` quantile (0..=1) of sorted `values` (nearest rank).
pub fn quantile(values: &[std::time::Duration], p: f64) -> std::time::Duration {
    values[((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1]
}
