//! Container runtime settings (`container-runtime-endpoint`, `private-registry`, `cni`, ...): parsed
//! here with the rest of the configuration and used by crate::runtime, which re-exports them.

use std::path::PathBuf;
use std::str::FromStr;

/// The node's pod network choice (`cni`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cni {
    /// bridge + host-local on the node's podCIDR, loopback, portmap.
    Bridge,
    /// The user installs a CNI config themselves.
    None,
}

impl FromStr for Cni {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "bridge" => Ok(Cni::Bridge),
            "none" => Ok(Cni::None),
            other => Err(format!("invalid cni \"{other}\": expected bridge or none")),
        }
    }
}

/// Container runtime settings shared by servers and agents.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Existing containerd socket; `None` starts our own containerd.
    pub endpoint: Option<PathBuf>,
    /// State + socket directory of our containerd; `None` means the default (see
    /// `crate::runtime::containerd::Layout::new`).
    pub run_dir: Option<PathBuf>,
    pub private_registry: PathBuf,
    pub system_default_registry: Option<String>,
    pub pause_image: String,
    pub cni: Cni,
    /// containerd's default runtime (`default-runtime`): `runc`, or one of the alternatives
    /// found on the node (crate::runtime::containerd::detect_runtimes); `None` is runc.
    pub default_runtime: Option<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            endpoint: None,
            run_dir: None,
            private_registry: PathBuf::from("/etc/rancher/rke2/registries.yaml"),
            system_default_registry: None,
            pause_image: "rancher/mirrored-pause:3.6".into(),
            cni: Cni::Bridge,
            default_runtime: None,
        }
    }
}

impl RuntimeConfig {
    /// The sandbox image with `system-default-registry` applied and normalised to a full
    /// reference (`docker.io/library/...` style), as containerd names imported images.
    pub fn pause_image(&self) -> String {
        let image = match &self.system_default_registry {
            Some(reg) if !reg.is_empty() && !has_registry(&self.pause_image) => {
                format!("{reg}/{}", self.pause_image)
            }
            _ => self.pause_image.clone(),
        };
        normalize_image(&image)
    }
}

/// Whether the first path component of an image reference names a registry host.
fn has_registry(image: &str) -> bool {
    image.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// Docker's normalisation of an image reference: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_image(image: &str) -> String {
    let image = image.trim();
    let mut full = if has_registry(image) {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}
