//! Images from a private registry mirror and from air-gap archives (docs/workloads.md):
//! - Debian's `docker-registry` on a loopback address, serving TLS with a certificate from a test
//!   CA and requiring htpasswd auth, holds the busybox test image (pushed with skopeo); a
//!   `registries.yaml` (`private-registry`) mirrors a registry name that answers nothing (another
//!   loopback address) to it, with the credentials and the CA in `configs`.
//!   A pod naming the mirrored registry starts, so its image came through the mirror, and the
//!   rendered containerd config has RKE2's layout. A `rewrite` rule maps another repository
//!   path to one that exists only on the mirror: a pod naming the original path runs from the
//!   image pulled under the rewritten one, and keeps the name it was given.
//! - `*.tar.gz` (docker-archive) and `*.tar.zst` (OCI layout) archives in
//!   `<data-dir>/agent/images/` are imported at start, and a pod runs from each.
//!
//! Nothing is pulled from the internet: the images are built from busybox-static.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::workloads::*;
use common::*;

fn require_runtime() {
    require_pod_runtime();
    for (tool, pkg) in [
        ("etcd", "etcd-server"),
        ("kubectl", "kubernetes-client"),
        ("skopeo", "skopeo"),
        ("zstd", "zstd"),
    ] {
        require_tool(tool, pkg);
    }
}

/// Starts server node `node` at the block's first address with the test pod settings and
/// `extra`, and waits until it is Ready with a podCIDR: a /28 in 198.18.0.0/16 from the test's
/// own address block, so parallel tests do not overlap.
fn start_node(
    block: &AddrBlock,
    node: &str,
    root: &Path,
    extra: (&'static str, String),
) -> ServerNode {
    let ip = block.ip(1);
    let mut server = start_server(
        node,
        ip,
        root,
        &[
            ("cluster-cidr", "198.18.0.0/16".into()),
            ("service-cidr", "198.19.0.0/16".into()),
            ("pause-image", PAUSE_IMAGE.into()),
            extra,
        ],
    );
    server.daemon.wait_log("ready:", Duration::from_secs(90));
    wait_node_ready(&server.kubeconfig, node, Duration::from_secs(60));
    let o = ip.octets();
    let cidr = format!("198.18.{}.{}/28", o[1], (o[2] % 16) * 16);
    kubectl_ok(
        &server.kubeconfig,
        &[
            "patch",
            "node",
            node,
            "-p",
            &format!(r#"{{"spec":{{"podCIDR":"{cidr}","podCIDRs":["{cidr}"]}}}}"#),
        ],
    );
    server
}

/// Runs a pod with `image` on `node` and waits until it is Running; the failure shows the pod.
fn run_pod(k: &Path, dir: &Path, node: &str, name: &str, image: &str) {
    apply_yaml(
        k,
        dir,
        name,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", "echo started; while true; do sleep 1; done"]
"#
        ),
    );
    let start = std::time::Instant::now();
    loop {
        let out = kubectl(k, &["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        if String::from_utf8_lossy(&out.stdout) == "Running" {
            return;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let pod = kubectl(k, &["get", "pod", name, "-o", "yaml"]);
            panic!(
                "pod {name} ({image}) not Running:\n{}",
                String::from_utf8_lossy(&pod.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A bcrypt htpasswd line (the registry's htpasswd auth only takes bcrypt), made by Debian's
/// Python with a low cost so every request stays cheap.
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(sys.argv[1] + ':' + crypt.crypt(sys.argv[2], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            user,
            password,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test CA (`<dir>/ca/ca.crt`, the layout skopeo's `--dest-cert-dir` reads) and a server
/// certificate for `ip` signed by it (`<dir>/registry.crt`, `.key`), made with openssl.
fn test_ca_and_server_cert(dir: &Path, ip: std::net::Ipv4Addr) {
    require_tool("openssl", "openssl");
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n")).unwrap();
    for args in [
        vec![
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=rke2-test-registry-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca/ca.crt"),
        ],
        vec![
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=registry",
            "-keyout",
            &p("registry.key"),
            "-out",
            &p("registry.csr"),
        ],
        vec![
            "openssl",
            "x509",
            "-req",
            "-in",
            &p("registry.csr"),
            "-CA",
            &p("ca/ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("san.ext"),
            "-out",
            &p("registry.crt"),
        ],
    ] {
        run_ok(&args);
    }
}

#[test]
fn a_pod_pulls_its_image_through_a_registries_yaml_mirror_with_auth() {
    require_runtime();
    require_tool("docker-registry", "docker-registry");
    let block = AddrBlock::new();
    let (reg_ip, upstream_ip) = (block.ip(5), block.ip(6));
    let root = tempfile::tempdir().unwrap();
    let build = root.path().join("build");
    let images = build.join("images");
    build_images(&build, &images);

    // The registry: loopback only, htpasswd auth, storage in the test dir.
    let reg_dir = root.path().join("registry");
    std::fs::create_dir_all(reg_dir.join("data")).unwrap();
    let password = format!("pw-{}", unique_suffix());
    std::fs::write(reg_dir.join("htpasswd"), htpasswd("puller", &password)).unwrap();
    let reg_addr = format!("{reg_ip}:5000");
    let certs = reg_dir.join("certs");
    test_ca_and_server_cert(&certs, reg_ip);
    std::fs::write(
        reg_dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {reg_addr}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: rke2-test\n    path: {}\n",
            reg_dir.join("data").display(),
            certs.join("registry.crt").display(),
            certs.join("registry.key").display(),
            reg_dir.join("htpasswd").display()
        ),
    )
    .unwrap();
    let mut reg_cmd = Command::new("docker-registry");
    reg_cmd.arg("serve").arg(reg_dir.join("config.yml"));
    let _registry = Daemon::spawn("registry", reg_cmd, &reg_dir.join("log"));
    wait_for(Duration::from_secs(20), "registry listening", || {
        port_open(reg_addr.parse().unwrap()).then_some(())
    });
    // Without credentials the registry refuses: the pull below must use the configs auth.
    let anon = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-cert-dir",
            &certs.join("ca").display().to_string(),
            &format!("docker-archive:{}", images.join("bb.tar").display()),
            &format!("docker://{reg_addr}/library/bb:1"),
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !anon.status.success(),
        "the registry took an anonymous push"
    );
    // The test image as library/bb:1, and as rewritten/project/bbr:2 for the rewrite rule
    // (only under that path).
    for path in ["library/bb:1", "rewritten/project/bbr:2"] {
        run_ok(&[
            "skopeo",
            "copy",
            "--quiet",
            "--dest-cert-dir",
            &certs.join("ca").display().to_string(),
            "--dest-creds",
            &format!("puller:{password}"),
            &format!("docker-archive:{}", images.join("bb.tar").display()),
            &format!("docker://{reg_addr}/{path}"),
        ]);
    }

    // The node imports only the pause image; busybox must come from the mirror. The image's
    // own registry is a loopback address where nothing listens, so only the mirror can serve.
    let node = block.node_name("s1");
    let data = root.path().join(&node).join("data");
    std::fs::create_dir_all(data.join("agent/images")).unwrap();
    std::fs::copy(
        images.join("pause.tar"),
        data.join("agent/images/pause.tar"),
    )
    .unwrap();
    let upstream = format!("{upstream_ip}:5000");
    let registries = root.path().join("registries.yaml");
    let ca = certs.join("ca/ca.crt").display().to_string();
    std::fs::write(
        &registries,
        format!(
            r#"mirrors:
  "{upstream}":
    endpoint:
      - "https://{reg_addr}"
    rewrite:
      "^library/(bbr.*)": "rewritten/project/$1"
configs:
  "{reg_addr}":
    auth:
      username: puller
      password: "{password}"
    tls:
      ca_file: "{ca}"
"#
        ),
    )
    .unwrap();
    let _cleanup = NodeCleanup(data.clone());
    let server = start_node(
        &block,
        &node,
        root.path(),
        ("private-registry", registries.display().to_string()),
    );
    let k = server.kubeconfig.clone();

    // containerd's config has the mirror and the credentials where RKE2 puts them.
    let toml = std::fs::read_to_string(data.join("agent/etc/containerd/config.toml")).unwrap();
    let cri = r#"plugins."io.containerd.grpc.v1.cri".registry"#;
    for want in [
        format!("[{cri}.mirrors.\"{upstream}\"]\n  endpoint = [\"https://{reg_addr}\"]"),
        format!("[{cri}.configs.\"{reg_addr}\".tls]\n  ca_file = \"{ca}\""),
        format!("[{cri}.configs.\"{reg_addr}\".auth]\n  username = \"puller\""),
    ] {
        assert!(toml.contains(&want), "no {want:?} in:\n{toml}");
    }
    assert_eq!(
        mode(&data.join("agent/etc/containerd/config.toml")) & 0o077,
        0,
        "the containerd config holds registry passwords"
    );
    assert!(
        !server.daemon.log_text().contains(&password),
        "password logged"
    );

    run_pod(
        &k,
        root.path(),
        &node,
        "mirrored",
        &format!("{upstream}/library/bb:1"),
    );
    let log = std::fs::read_to_string(reg_dir.join("log")).unwrap_or_default();
    assert!(
        log.contains("/v2/library/bb/manifests/1"),
        "the registry served no manifest:\n{log}"
    );

    // The rewrite: the pod names library/bbr at the mirrored registry; the mirror holds it
    // only as rewritten/project/bbr. The pod runs, and keeps the name it was given.
    let original = format!("{upstream}/library/bbr:2");
    run_pod(&k, root.path(), &node, "rewritten", &original);
    let log = std::fs::read_to_string(reg_dir.join("log")).unwrap_or_default();
    assert!(
        log.contains("/v2/rewritten/project/bbr/manifests/2"),
        "the registry served no rewritten manifest:\n{log}"
    );
    // The rewritten pull succeeded first: the original path was never asked for.
    assert!(
        !log.contains("/v2/library/bbr/"),
        "the original path reached the mirror:\n{log}"
    );
    let status = kubectl_ok(
        &k,
        &[
            "get",
            "pod",
            "rewritten",
            "-o",
            "jsonpath={.spec.containers[0].image} {.status.containerStatuses[0].image} {.status.containerStatuses[0].imageID}",
        ],
    );
    let fields: Vec<&str> = status.split(' ').collect();
    assert_eq!(
        fields[..2],
        [original.as_str(), original.as_str()],
        "{status}"
    );
    assert!(fields[2].contains("sha256:"), "{status}");
    let logs = kubectl_ok(&k, &["logs", "rewritten"]);
    assert!(logs.starts_with("started"), "{logs}");
    // containerd's config routes the rewritten names to the endpoint alone.
    let toml = std::fs::read_to_string(data.join("agent/etc/containerd/config.toml")).unwrap();
    let own = format!("[{cri}.mirrors.\"{reg_addr}\"]\n  endpoint = [\"https://{reg_addr}\"]");
    assert!(toml.contains(&own), "no {own:?} in:\n{toml}");
}

#[test]
fn gzip_and_zstd_airgap_archives_are_imported_at_start() {
    require_runtime();
    require_tool("umoci", "umoci");
    let block = AddrBlock::new();
    let root = tempfile::tempdir().unwrap();
    let build = root.path().join("build");
    let built = build.join("images");
    build_images(&build, &built);
    let node = block.node_name("s1");
    let data = root.path().join(&node).join("data");
    let dest = data.join("agent/images");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::copy(built.join("pause.tar"), dest.join("pause.tar")).unwrap();
    let oci = build.join("oci");
    // A docker-archive named bbgz:1, gzipped.
    let gz_tar = build.join("bbgz.tar");
    run_ok(&[
        "skopeo",
        "copy",
        "--quiet",
        &format!("oci:{}:1", oci.display()),
        &format!(
            "docker-archive:{}:docker.io/library/bbgz:1",
            gz_tar.display()
        ),
    ]);
    let gz = std::fs::File::create(dest.join("bbgz.tar.gz")).unwrap();
    let st = Command::new("gzip")
        .arg("-c")
        .arg(&gz_tar)
        .stdout(gz)
        .status()
        .unwrap();
    assert!(st.success());
    // An OCI layout named bbzst:1 (containerd's image-name annotation on its index entry),
    // tarred and zstd-compressed.
    let layout = build.join("zst-layout");
    run_ok(&[
        "skopeo",
        "copy",
        "--quiet",
        &format!("oci:{}:1", oci.display()),
        &format!("oci:{}:1", layout.display()),
    ]);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] =
        "docker.io/library/bbzst:1".into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let zst = dest.join("bbzst.tar.zst");
    let st = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -C "$1" -cf - . | zstd -q -c > "$2""#)
        .args([
            "sh",
            &layout.display().to_string(),
            &zst.display().to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success());

    let _cleanup = NodeCleanup(data.clone());
    let mut server = start_node(
        &block,
        &node,
        root.path(),
        ("pause-image", PAUSE_IMAGE.into()),
    );
    let k = server.kubeconfig.clone();
    for file in ["bbgz.tar.gz", "bbzst.tar.zst"] {
        server.daemon.wait_log(
            &format!("imported images from {}", dest.join(file).display()),
            Duration::from_secs(60),
        );
    }
    // Both images are listed on the Node and run.
    wait_for(Duration::from_secs(60), "images on the Node", || {
        let out = kubectl(
            &k,
            &[
                "get",
                "node",
                &node,
                "-o",
                "jsonpath={.status.images[*].names}",
            ],
        );
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        (names.contains("docker.io/library/bbgz:1") && names.contains("docker.io/library/bbzst:1"))
            .then_some(())
    });
    run_pod(&k, root.path(), &node, "fromgz", "docker.io/library/bbgz:1");
    run_pod(
        &k,
        root.path(),
        &node,
        "fromzst",
        "docker.io/library/bbzst:1",
    );
}
