//! Facts about the machine this process runs on, as both servers and agents need them: the
//! host name, the default-route address and the Go name of the CPU architecture.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// The host name, lower-cased (RKE2's default node name).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_ascii_lowercase()
}

/// The address of the interface holding the default route, found by "connecting" a UDP
/// socket (no packet is sent).
pub fn default_route_ip() -> Option<IpAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).ok()?;
    sock.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// Why this node's name or address could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdentityError {
    #[error("invalid node name \"{name}\": {source}; set node-name")]
    InvalidName {
        name: String,
        #[source]
        source: crate::validation::InvalidValue,
    },
    #[error("cannot determine this node's IP address (no default route); set node-ip")]
    NoAddress,
}

/// Checks that `name` may name a Node.
pub fn check_node_name(name: &str) -> Result<(), NodeIdentityError> {
    crate::validation::validate_dns_subdomain(name).map_err(|source| {
        NodeIdentityError::InvalidName {
            name: name.to_string(),
            source,
        }
    })
}

/// The node's addresses: the configured ones, else `fallback`, else the default-route address.
pub fn node_ips(
    configured: &[IpAddr],
    fallback: Option<IpAddr>,
) -> Result<Vec<IpAddr>, NodeIdentityError> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    fallback
        .or_else(default_route_ip)
        .map(|ip| vec![ip])
        .ok_or(NodeIdentityError::NoAddress)
}

/// Maps Rust's architecture names to Go's (`GOARCH`), which is what Kubernetes clients expect
/// in `platform` and in the `kubernetes.io/arch` label.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// This machine's architecture in Go's naming.
pub fn arch() -> &'static str {
    go_arch(std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }
}
