//! The one table of every setting `rke2 server` and `rke2 agent` understand. The clap flags,
//! the `RKE2_*` environment variables, the config-file keys and the README's key list are all
//! derived from it, so a key cannot exist in one place and be missing in another.

/// Which subcommands accept a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    Server,
    Agent,
    Both,
}

impl Roles {
    pub fn includes(self, role: Role) -> bool {
        matches!(
            (self, role),
            (Roles::Both, _) | (Roles::Server, Role::Server) | (Roles::Agent, Role::Agent)
        )
    }
}

/// The node role a configuration is being loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// How a setting's value is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value; the last source wins.
    Scalar,
    /// A boolean flag (`--debug`, `debug: true`).
    Bool,
    /// Repeatable; each element may also be a comma-separated list.
    CommaList,
    /// Repeatable; elements are taken verbatim (labels, taints and raw arguments contain commas
    /// only when the user means it).
    List,
}

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Config-file key and long flag name (`--<key>`).
    pub key: &'static str,
    pub shape: Shape,
    pub roles: Roles,
    /// Value shown in `--help` and the README; `None` when there is no default.
    pub default: Option<&'static str>,
    /// Placeholder for the value in help text.
    pub value_name: &'static str,
    pub help: &'static str,
    /// Short flag, as RKE2 has for a few keys.
    pub short: Option<char>,
}

impl Setting {
    /// The environment variable that sets this key: `RKE2_` + upper-cased key with `_`.
    pub fn env_var(&self) -> String {
        format!("RKE2_{}", self.key.to_ascii_uppercase().replace('-', "_"))
    }
}

const fn s(
    key: &'static str,
    shape: Shape,
    roles: Roles,
    default: Option<&'static str>,
    value_name: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        shape,
        roles,
        default,
        value_name,
        help,
        short: None,
    }
}

use Roles::{Agent as A, Both as B, Server as S};
use Shape::{Bool, CommaList, List, Scalar};

/// Default config file path.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/rancher/rke2/config.yaml";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/rke2";

/// Every setting, in the order `--help` and the README list them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        short: Some('d'),
        ..s(
            "data-dir",
            Scalar,
            B,
            Some(DEFAULT_DATA_DIR),
            "DIR",
            "Folder to hold state",
        )
    },
    Setting {
        short: Some('t'),
        ..s(
            "token",
            Scalar,
            B,
            None,
            "TOKEN",
            "Shared secret used to join a server or agent to a cluster",
        )
    },
    s(
        "token-file",
        Scalar,
        B,
        None,
        "FILE",
        "File containing the token",
    ),
    Setting {
        short: Some('s'),
        ..s(
            "server",
            Scalar,
            B,
            None,
            "URL",
            "Server to connect to (https://<fixed-address>:9345); required for agents and joining servers",
        )
    },
    s(
        "node-name",
        Scalar,
        B,
        None,
        "NAME",
        "Node name (default: the host name, lower-cased)",
    ),
    s(
        "node-ip",
        CommaList,
        B,
        None,
        "IP",
        "IP address(es) to advertise for the node, at most one per family (default: a server's bind-address, else the default-route address)",
    ),
    s(
        "node-label",
        List,
        B,
        None,
        "KEY=VALUE",
        "Label to add to the node when it registers (repeatable)",
    ),
    s(
        "node-taint",
        List,
        B,
        None,
        "KEY=VALUE:EFFECT",
        "Taint to add to the node when it registers (repeatable)",
    ),
    s(
        "node-heartbeat-interval",
        Scalar,
        B,
        Some("10s"),
        "DURATION",
        "How often the node agent renews its Lease in kube-node-lease",
    ),
    s(
        "node-password-file",
        Scalar,
        A,
        Some("/etc/rancher/node/password"),
        "FILE",
        "Where the agent keeps its node password",
    ),
    s(
        "agent-token",
        Scalar,
        S,
        None,
        "TOKEN",
        "Shared secret used to join agents (default: the server token)",
    ),
    s(
        "agent-token-file",
        Scalar,
        S,
        None,
        "FILE",
        "File containing the agent token",
    ),
    s(
        "tls-san",
        CommaList,
        S,
        None,
        "NAME",
        "Additional host name or IP as a Subject Alternative Name in the serving certificates (repeatable or comma list)",
    ),
    s(
        "bind-address",
        Scalar,
        S,
        None,
        "IP",
        "Address the supervisor and API listeners bind to (default: all addresses)",
    ),
    s(
        "advertise-address",
        Scalar,
        S,
        None,
        "IP",
        "Address other nodes use to reach this server's API (default: first node IP)",
    ),
    s(
        "supervisor-port",
        Scalar,
        S,
        Some("9345"),
        "PORT",
        "Port of the registration (supervisor) API",
    ),
    s(
        "https-listen-port",
        Scalar,
        S,
        Some("6443"),
        "PORT",
        "Port of the Kubernetes API",
    ),
    s(
        "etcd-client-port",
        Scalar,
        S,
        Some("2379"),
        "PORT",
        "etcd client port",
    ),
    s(
        "etcd-peer-port",
        Scalar,
        S,
        Some("2380"),
        "PORT",
        "etcd peer port",
    ),
    s(
        "etcd-metrics-port",
        Scalar,
        S,
        Some("2381"),
        "PORT",
        "etcd metrics/health port (plain HTTP)",
    ),
    s(
        "etcd-bin",
        Scalar,
        S,
        None,
        "PATH",
        "etcd binary (default: `etcd` on PATH)",
    ),
    s(
        "etcd-arg",
        List,
        S,
        None,
        "FLAG=VALUE",
        "Extra etcd flag, e.g. heartbeat-interval=50 (repeatable)",
    ),
    s(
        "write-kubeconfig",
        Scalar,
        S,
        Some("/etc/rancher/rke2/rke2.yaml"),
        "FILE",
        "Where to write the admin kubeconfig",
    ),
    s(
        "write-kubeconfig-mode",
        Scalar,
        S,
        Some("0600"),
        "MODE",
        "Octal file mode of the admin kubeconfig",
    ),
    s(
        "cluster-cidr",
        Scalar,
        S,
        Some("10.42.0.0/16"),
        "CIDR",
        "Pod network range (must match on all servers)",
    ),
    s(
        "service-cidr",
        Scalar,
        S,
        Some("10.43.0.0/16"),
        "CIDR",
        "Service network range (must match on all servers)",
    ),
    s(
        "service-node-port-range",
        Scalar,
        S,
        Some("30000-32767"),
        "RANGE",
        "Port range reserved for NodePort services (must match on all servers)",
    ),
    s(
        "cluster-dns",
        Scalar,
        S,
        None,
        "IP",
        "Cluster DNS service IP (default: service CIDR + 10; must match on all servers)",
    ),
    s(
        "cluster-domain",
        Scalar,
        S,
        Some("cluster.local"),
        "DOMAIN",
        "Cluster domain (must match on all servers)",
    ),
    s(
        "node-monitor-grace-period",
        Scalar,
        S,
        Some("40s"),
        "DURATION",
        "How long a node's Lease may go unrenewed before its Ready condition becomes Unknown",
    ),
    s(
        "node-cidr-mask-size",
        Scalar,
        S,
        None,
        "BITS",
        "Prefix length of each node's pod CIDR taken from cluster-cidr (default: 24 for IPv4, 64 for IPv6)",
    ),
    s(
        "event-ttl",
        Scalar,
        S,
        Some("1h"),
        "DURATION",
        "How long an Event is kept after its last update",
    ),
    s(
        "watch-cache-max-events",
        Scalar,
        S,
        Some("200000"),
        "COUNT",
        "Most recent changes each resource's watch cache keeps for resuming watches (at least 1)",
    ),
    s(
        "cluster-reset",
        Bool,
        S,
        Some("false"),
        "",
        "Forget all peers and become the sole member of a new etcd cluster, keeping the data (then exits)",
    ),
    s(
        "cluster-reset-restore-path",
        Scalar,
        S,
        None,
        "FILE",
        "With cluster-reset: the etcd snapshot (file or name in etcd-snapshot-dir) to restore",
    ),
    s(
        "etcd-disable-snapshots",
        Bool,
        S,
        Some("false"),
        "",
        "Disable scheduled etcd snapshots",
    ),
    s(
        "etcd-snapshot-name",
        Scalar,
        S,
        Some("etcd-snapshot"),
        "NAME",
        "Name prefix of scheduled etcd snapshots (<name>-<node>-<unix time>)",
    ),
    s(
        "etcd-snapshot-schedule-cron",
        Scalar,
        S,
        Some("0 */12 * * *"),
        "CRON",
        "When to take scheduled etcd snapshots (5-field cron expression, local time)",
    ),
    s(
        "etcd-snapshot-retention",
        Scalar,
        S,
        Some("5"),
        "COUNT",
        "Number of snapshots to keep per name prefix and node",
    ),
    s(
        "etcd-snapshot-dir",
        Scalar,
        S,
        None,
        "DIR",
        "Directory of etcd snapshots (default: <data-dir>/server/db/snapshots)",
    ),
    s(
        "etcd-snapshot-compress",
        Bool,
        S,
        Some("false"),
        "",
        "Compress etcd snapshots (zip)",
    ),
    s(
        "secrets-encryption",
        Bool,
        S,
        Some("true"),
        "",
        "Encrypt Secrets at rest when the cluster is created (afterwards: rke2 secrets-encrypt enable|disable)",
    ),
    s(
        "secrets-encryption-provider",
        Scalar,
        S,
        Some("aescbc"),
        "PROVIDER",
        "Provider of a new cluster's encryption key: aescbc, aesgcm or secretbox",
    ),
    s(
        "leaf-cert-validity",
        Scalar,
        S,
        Some("8760h"),
        "DURATION",
        "Lifetime of the leaf certificates a server issues itself; each is renewed, at start and while running, 120 days (or a third of this lifetime) before it expires",
    ),
    s(
        "lb-server-port",
        Scalar,
        A,
        Some("6444"),
        "PORT",
        "Local port of the agent's supervisor load balancer; the API load balancer uses this port - 1",
    ),
    s(
        "lb-bind-address",
        Scalar,
        A,
        Some("127.0.0.1"),
        "IP",
        "Local address of the agent's load balancers",
    ),
    // Container runtime and pods (docs/workloads.md).
    s(
        "container-runtime-endpoint",
        Scalar,
        B,
        None,
        "SOCKET",
        "Use this existing containerd socket instead of starting containerd",
    ),
    s(
        "containerd-run-dir",
        Scalar,
        B,
        None,
        "DIR",
        "State and socket directory of the node's containerd (default: /run/k3s/containerd with the default data-dir, else <data-dir>/agent/run)",
    ),
    s(
        "private-registry",
        Scalar,
        B,
        Some("/etc/rancher/rke2/registries.yaml"),
        "FILE",
        "Private registry configuration file (mirrors and configs)",
    ),
    s(
        "system-default-registry",
        Scalar,
        B,
        None,
        "REGISTRY",
        "Registry prepended to the system images (the pause image)",
    ),
    s(
        "pause-image",
        Scalar,
        B,
        Some("rancher/mirrored-pause:3.6"),
        "IMAGE",
        "Pod sandbox (pause) image",
    ),
    s(
        "default-runtime",
        Scalar,
        B,
        None,
        "NAME",
        "containerd's default runtime: runc, or an alternative found on the node (crun, nvidia, nvidia-experimental)",
    ),
    s(
        "cni",
        Scalar,
        B,
        Some("bridge"),
        "NAME",
        "Pod network: bridge (bridge + host-local on the node's podCIDR) or none",
    ),
    s(
        "log-format",
        Scalar,
        B,
        Some("auto"),
        "FORMAT",
        "auto (journald under systemd, else text), text, or journald",
    ),
    s("debug", Bool, B, Some("false"), "", "Turn on debug logs"),
];

/// Looks a setting up by key.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_env_names_follow_rke2() {
        let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
        assert_eq!(find("tls-san").unwrap().env_var(), "RKE2_TLS_SAN");
    }
}
