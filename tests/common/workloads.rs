//! Pod test helpers: offline test images (busybox-static as an image and as a pause image) and
//! the `rke2 killall` cleanup guard, and pod helpers (a busybox httpd container serving its pod's
//! name, the service proxy's nft table, NodePort requests from the host), shared by
//! tests/workloads.rs, tests/pod_features.rs, tests/service_proxy.rs, tests/seed_scenario.rs and
//! benches/pods.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{AddrBlock, kubectl, require_tool, rke2_bin};

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
        let _ = Command::new(rke2_bin())
            .arg("killall")
            .arg("--data-dir")
            .arg(&self.0)
            .output();
    }
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
