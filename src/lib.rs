//! rke2-rs: an RKE2-style highly available Kubernetes server/agent runtime for systemd and NixOS.
//!
//! The binary (`src/main.rs`) only parses the command line, sets up logging and dispatches;
//! everything else lives in these modules, one per subsystem.

/// Settings: config files, `RKE2_*` variables and flags, merged and validated.
pub mod config;
/// Atomic file writes with the right modes.
pub mod fsutil;
/// Join tokens, the CA hash and the credentials store.
pub mod token;
/// Kubernetes naming rules for node names, labels and taints.
pub mod validation;
/// The Kubernetes API server on 6443.
pub mod apiserver;
/// The agent: the client-side load balancer in front of the servers.
pub mod agent;
