//! rke2-rs: an RKE2-style highly available Kubernetes server/agent runtime for systemd and NixOS.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging and dispatches;
//! everything else lives in these modules, one per subsystem.

/// Agents: join, client-side load balancer, node agent.
pub mod agent;
/// The Kubernetes API server on 6443.
pub mod apiserver;
/// Encrypted cluster bootstrap data shared between servers.
pub mod bootstrap;
/// Command-line parsing.
pub mod cli;
/// Joining a cluster: CA pinning by token hash and authenticated supervisor requests.
pub mod clientaccess;
/// Shared cluster state and domain operations used by every server subsystem.
pub mod cluster;
/// Settings: config files, `RKE2_*` variables and flags, merged and validated.
pub mod config;
/// Control loops of servers.
pub mod controllers;
/// systemd integration: listeners, notifications, watchdog, signals, runtime state.
pub mod daemon;
/// Key-value storage on etcd: CAS writes, paginated lists, watches.
pub mod datastore;
/// The D-Bus service (`io.rke2.Server`, `io.rke2.Agent`) and its client for the admin CLI.
pub mod dbus;
/// Cluster DNS served by every node on the `cluster-dns` address.
pub mod dns;
/// The embedded etcd member: process, identity, membership.
pub mod etcd;
/// The event recorder: Events for what the server's components do.
pub mod events;
/// Atomic file writes with the right modes.
pub mod fsutil;
/// Facts about this machine: host name, default-route address, Go architecture name.
pub mod host;
/// TLS servers and clients.
pub mod https;
/// The node's JSON client of the Kubernetes API (node agent and node runtime).
pub(crate) mod kubeclient;
/// Kubeconfig files.
pub mod kubeconfig;
/// Logging to journald or stderr.
pub mod logging;
/// Data-directory layout.
pub mod paths;
/// Certificate authorities and leaf certificates.
pub mod pki;
/// The supervisor API's wire contract: routes, headers, the configuration document.
pub mod protocol;

/// The service proxy: nftables rules for ClusterIP and NodePort traffic.
pub mod proxy;
/// The resource registry: every served kind, declared once.
pub mod registry;
/// The node's container runtime (containerd over the CRI) and its pods.
pub mod runtime;
/// Secrets encrypted at rest: providers, keys, rotation stages.
pub mod secrets_encryption;
/// `rke2 server`: the orchestration of a server node.
pub mod server;
/// Kubernetes objects over the datastore: CAS writes, paginated filtered lists, selectors.
pub mod storage;
/// The registration (supervisor) API on 9345.
pub mod supervisor;
/// Join tokens, the CA hash and the credentials store.
pub mod token;
/// Kubernetes naming rules for node names, labels and taints.
pub mod validation;
