//! containerd as a child of the node process, in RKE2's layout: config rendered at
//! `<data-dir>/agent/etc/containerd/config.toml`, root `<data-dir>/agent/containerd`, state and
//! socket under the run directory, log at `<data-dir>/agent/containerd/containerd.log`. It is
//! restarted with backoff when it dies, gets SIGTERM when the daemon dies (even on `kill -9`, so
//! the restarted daemon can start a fresh one on the same root), and is stopped last on
//! shutdown. Its shims are not its children in the process-tree sense that matters: they keep
//! the containers running across containerd and daemon restarts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::registries::Registries;
use super::{RuntimeConfig, RuntimeError};
use crate::fsutil;

/// How long containerd gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE_RUN: Duration = Duration::from_secs(60);
/// The default data directory, whose containerd keeps RKE2's run directory.
const RKE2_RUN_DIR: &str = "/run/k3s/containerd";

/// Where the node's containerd keeps everything.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub agent_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Layout {
    /// RKE2's paths; the run directory is `/run/k3s/containerd` for the default data dir and
    /// `<data-dir>/agent/run` otherwise, so several nodes can share one machine (tests).
    pub fn new(data_dir: &Path, run_dir: Option<&Path>) -> Layout {
        let agent_dir = data_dir.join("agent");
        let run_dir = match run_dir {
            Some(d) => d.to_path_buf(),
            None if data_dir == Path::new(crate::config::spec::DEFAULT_DATA_DIR) => {
                PathBuf::from(RKE2_RUN_DIR)
            }
            None => agent_dir.join("run"),
        };
        Layout { agent_dir, run_dir }
    }
    pub fn config_file(&self) -> PathBuf {
        self.agent_dir.join("etc/containerd/config.toml")
    }
    pub fn root(&self) -> PathBuf {
        self.agent_dir.join("containerd")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root().join("containerd.log")
    }
    pub fn state(&self) -> PathBuf {
        self.run_dir.clone()
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.agent_dir.join("etc/cni/net.d")
    }
    pub fn cni_data_dir(&self) -> PathBuf {
        self.agent_dir.join("cni")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir.join("images")
    }
    pub fn pod_logs(&self) -> PathBuf {
        self.agent_dir.join("pod-logs")
    }
    /// Per-pod directories (volumes).
    pub fn pods_dir(&self) -> PathBuf {
        self.agent_dir.join("pods")
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The CNI plugin directory: Debian's containernetworking-plugins, or the first of the usual
/// places that holds a `bridge` plugin.
pub fn cni_bin_dir() -> PathBuf {
    for d in ["/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"] {
        if Path::new(d).join("bridge").is_file() {
            return PathBuf::from(d);
        }
    }
    PathBuf::from("/usr/lib/cni")
}

/// An alternative OCI runtime found on the node, registered with containerd beside runc.
#[derive(Debug, Clone, PartialEq)]
pub struct AltRuntime {
    /// The containerd runtime name (`default-runtime`, a RuntimeClass's handler).
    pub name: &'static str,
    pub binary: PathBuf,
}

/// The runc-compatible runtimes RKE2 looks for, by containerd runtime name and binary.
const ALT_RUNTIMES: &[(&str, &str)] = &[
    ("crun", "crun"),
    ("nvidia", "nvidia-container-runtime"),
    (
        "nvidia-experimental",
        "nvidia-container-runtime-experimental",
    ),
];

/// The alternative runtimes whose binary is on PATH (each runs under the runc v2 shim with
/// its own `BinaryName`, as RKE2 registers them).
pub fn detect_runtimes() -> Vec<AltRuntime> {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    ALT_RUNTIMES
        .iter()
        .filter_map(|(name, bin)| {
            let binary = path
                .split(':')
                .map(|d| Path::new(d).join(bin))
                .find(|p| p.is_file())?;
            Some(AltRuntime { name, binary })
        })
        .collect()
}

/// containerd's config.toml (version 2) for this node; `alternatives` are registered as
/// runtimes beside runc, and `default-runtime` picks the default among them.
pub fn render_config(
    layout: &Layout,
    runtime: &RuntimeConfig,
    registries: &Registries,
    alternatives: &[AltRuntime],
) -> String {
    let p = |p: PathBuf| toml_str(&p.display().to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by rke2 at every start; edits are overwritten (docs/workloads.md).\nversion = 2\nroot = {}\nstate = {}\n",
        p(layout.root()),
        p(layout.state())
    );
    let _ = writeln!(out, "[grpc]\n  address = {}\n", p(layout.socket()));
    let _ = writeln!(
        out,
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {}\n  enable_selinux = false\n  \
         # a random port: several nodes may share one machine\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n",
        toml_str(&runtime.pause_image())
    );
    if !has_cap_sys_resource() {
        // Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj to the sandbox's -998, and
        // every sandbox would fail to start.
        out.push_str("  restrict_oom_score_adj = true\n\n");
    }
    let _ = writeln!(
        out,
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n  disable_snapshot_annotations = true\n  default_runtime_name = {}\n",
        toml_str(runtime.default_runtime.as_deref().unwrap_or("runc"))
    );
    let _ = writeln!(
        out,
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
    );
    for alt in alternatives {
        let _ = writeln!(
            out,
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}.options]\n  BinaryName = {}\n",
            p(alt.binary.clone()),
            name = toml_str(alt.name),
        );
    }
    let _ = writeln!(
        out,
        "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {}\n  conf_dir = {}\n",
        p(cni_bin_dir()),
        p(layout.cni_conf_dir())
    );
    out.push_str(&registries.render_cri());
    out
}

/// Writes the config (0600: registry credentials may be in it) and creates the directories.
/// A `default-runtime` that is neither runc nor found on the node is an error: containerd
/// would start, and then fail every sandbox.
pub fn write_config(
    layout: &Layout,
    runtime: &RuntimeConfig,
    registries: &Registries,
) -> Result<(), RuntimeError> {
    let alternatives = detect_runtimes();
    if let Some(name) = &runtime.default_runtime
        && name != "runc"
        && !alternatives.iter().any(|a| a.name == name)
    {
        return Err(RuntimeError::UnknownRuntime {
            name: name.clone(),
            found: std::iter::once("runc")
                .chain(alternatives.iter().map(|a| a.name))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for alt in &alternatives {
        tracing::info!(
            component = "containerd",
            "found runtime {} at {}",
            alt.name,
            alt.binary.display()
        );
    }
    for dir in [
        layout.root(),
        layout.state(),
        layout.cni_conf_dir(),
        layout.images_dir(),
    ] {
        fsutil::ensure_dir(&dir, 0o700).map_err(|e| RuntimeError::io(&dir, e))?;
    }
    let file = layout.config_file();
    fsutil::write_atomic_mkdir(
        &file,
        render_config(layout, runtime, registries, &alternatives).as_bytes(),
        fsutil::SECRET_FILE_MODE,
    )
    .map_err(|e| RuntimeError::io(&file, e))
}

/// Whether this process holds CAP_SYS_RESOURCE (some containers and VMs run root without it).
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// The containerd binary: `containerd` on PATH.
fn containerd_bin() -> PathBuf {
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join("containerd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("containerd"))
}

fn spawn(layout: &Layout) -> Result<Child, RuntimeError> {
    let bin = containerd_bin();
    let log_path = layout.log_file();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RuntimeError::io(&log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| RuntimeError::io(&log_path, e))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--config")
        .arg(layout.config_file())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(false);
    for var in crate::etcd::process::SERVICE_MANAGER_ENV {
        cmd.env_remove(var);
    }
    // containerd dies with the daemon (the restarted daemon starts its own on the same root);
    // the shims and containers keep running.
    crate::etcd::process::spawn_tied(cmd, "containerd").map_err(|e| RuntimeError::Spawn {
        bin: bin.display().to_string(),
        source: e,
    })
}

/// Runs containerd until `cancel`, restarting it with backoff when it exits.
pub async fn supervise(layout: Layout, cancel: CancellationToken) {
    let mut backoff = RESTART_BACKOFF_MIN;
    let mut restarts = 0u32;
    loop {
        match spawn(&layout) {
            Ok(mut child) => {
                tracing::info!(
                    component = "containerd",
                    pid = child.id().unwrap_or_default(),
                    "containerd started; log at {}",
                    layout.log_file().display()
                );
                let started = tokio::time::Instant::now();
                tokio::select! {
                    _ = cancel.cancelled() => {
                        crate::etcd::process::stop_child(&mut child, STOP_GRACE, "containerd").await;
                        tracing::info!(component = "containerd", "containerd stopped");
                        return;
                    }
                    status = child.wait() => {
                        restarts += 1;
                        if started.elapsed() > STABLE_RUN {
                            backoff = RESTART_BACKOFF_MIN;
                        }
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::error!(component = "containerd", restarts,
                            "containerd exited unexpectedly ({status}); restarting in {backoff:?}; see {}",
                            layout.log_file().display());
                    }
                }
            }
            Err(e) => {
                tracing::error!(component = "containerd", "{e}; retrying in {backoff:?}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_rke2_and_separates_test_nodes() {
        let l = Layout::new(Path::new("/var/lib/rancher/rke2"), None);
        assert_eq!(
            l.config_file(),
            Path::new("/var/lib/rancher/rke2/agent/etc/containerd/config.toml")
        );
        assert_eq!(l.socket(), Path::new("/run/k3s/containerd/containerd.sock"));
        assert_eq!(
            l.log_file(),
            Path::new("/var/lib/rancher/rke2/agent/containerd/containerd.log")
        );
        let l = Layout::new(Path::new("/tmp/n1"), None);
        assert_eq!(l.socket(), Path::new("/tmp/n1/agent/run/containerd.sock"));
        let l = Layout::new(Path::new("/tmp/n1"), Some(Path::new("/run/x")));
        assert_eq!(l.socket(), Path::new("/run/x/containerd.sock"));
    }

    #[test]
    fn config_names_root_state_socket_cni_and_pause_image() {
        let l = Layout::new(Path::new("/d"), Some(Path::new("/r")));
        let c = render_config(&l, &RuntimeConfig::default(), &Registries::default(), &[]);
        assert!(c.contains("root = \"/d/agent/containerd\""), "{c}");
        assert!(c.contains("state = \"/r\""), "{c}");
        assert!(c.contains("address = \"/r/containerd.sock\""), "{c}");
        assert!(c.contains("conf_dir = \"/d/agent/etc/cni/net.d\""), "{c}");
        assert!(
            c.contains("sandbox_image = \"docker.io/rancher/mirrored-pause:3.6\""),
            "{c}"
        );
        assert!(c.contains("stream_server_port = \"0\""), "{c}");
        assert!(c.contains("default_runtime_name = \"runc\""), "{c}");
    }

    #[test]
    fn a_default_runtime_not_on_the_node_is_refused_before_containerd_starts() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path(), Some(&dir.path().join("run")));
        let rt = RuntimeConfig {
            default_runtime: Some("no-such-runtime".into()),
            ..RuntimeConfig::default()
        };
        let e = write_config(&l, &rt, &Registries::default()).unwrap_err();
        assert!(
            matches!(&e, RuntimeError::UnknownRuntime { name, found } if name == "no-such-runtime" && found.starts_with("runc")),
            "{e}"
        );
        assert!(!l.config_file().exists());
        let rt = RuntimeConfig {
            default_runtime: Some("runc".into()),
            ..RuntimeConfig::default()
        };
        write_config(&l, &rt, &Registries::default()).unwrap();
        assert!(l.config_file().is_file());
    }

    #[test]
    fn alternative_runtimes_run_under_the_runc_shim_and_may_be_the_default() {
        let l = Layout::new(Path::new("/d"), Some(Path::new("/r")));
        let rt = RuntimeConfig {
            default_runtime: Some("crun".into()),
            ..RuntimeConfig::default()
        };
        let crun = AltRuntime {
            name: "crun",
            binary: PathBuf::from("/usr/bin/crun"),
        };
        let c = render_config(&l, &rt, &Registries::default(), &[crun]);
        assert!(c.contains("default_runtime_name = \"crun\""), "{c}");
        let table = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"crun\"]\n  runtime_type = \"io.containerd.runc.v2\"";
        assert!(c.contains(table), "{c}");
        let options = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"crun\".options]\n  BinaryName = \"/usr/bin/crun\"";
        assert!(c.contains(options), "{c}");
        assert!(c.contains("containerd.runtimes.runc]"), "{c}");
    }
}
