//! The node's CNI configuration: bridge + host-local IPAM on the Node's `spec.podCIDR`,
//! loopback, and portmap for `hostPort`s, with IP masquerading off (pod traffic is never
//! NATed to the outside). Each node gets its own bridge name and IPAM state directory, so
//! several test nodes can share one machine.

use serde_json::json;

use super::RuntimeError;
use super::containerd::Layout;
use crate::fsutil;

/// File name of the config in the CNI conf dir.
pub const CONF_FILE: &str = "10-rke2-bridge.conflist";

/// A Linux interface name (at most 15 bytes) for the node's bridge.
pub fn bridge_name(node: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, node.as_bytes());
    format!("rke2br{}", &hex::encode(digest.as_ref())[..8])
}

/// The conflist for `pod_cidr`.
pub fn render(node: &str, pod_cidr: &str, layout: &Layout) -> String {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "rke2-pod-network",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(node),
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": layout.cni_data_dir().join("networks").display().to_string(),
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
        ]
    });
    serde_json::to_string_pretty(&conf).expect("serialises")
}

/// Writes the conflist when it differs from what is there.
pub fn write(node: &str, pod_cidr: &str, layout: &Layout) -> Result<bool, RuntimeError> {
    let path = layout.cni_conf_dir().join(CONF_FILE);
    let text = render(node, pod_cidr, layout);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    fsutil::write_atomic_mkdir(&path, text.as_bytes(), fsutil::PUBLIC_FILE_MODE)
        .map_err(|e| RuntimeError::io(&path, e))?;
    Ok(true)
}

/// Whether a CNI config is present (for `cni: none`, the user's).
pub fn configured(layout: &Layout) -> bool {
    std::fs::read_dir(layout.cni_conf_dir())
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".conflist") || n.ends_with(".conf") || n.ends_with(".json")
        })
}

/// Removes the node's bridge (best effort; `rke2 killall` and test cleanup).
pub fn remove_bridge(node: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &bridge_name(node)])
        .stderr(std::process::Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn conflist_uses_the_pod_cidr_without_masquerade() {
        let l = Layout::new(Path::new("/d"), None);
        let c: serde_json::Value =
            serde_json::from_str(&render("a1", "198.18.1.0/24", &l)).unwrap();
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "198.18.1.0/24"
        );
        assert_eq!(c["plugins"][1]["type"], "portmap");
        assert!(bridge_name("a-very-long-node-name.example.com").len() <= 15);
        assert_ne!(bridge_name("a1"), bridge_name("a2"));
    }
}
