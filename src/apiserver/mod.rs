//! The Kubernetes API on 6443: a compatible subset served from etcd.

pub mod discovery;
pub mod resources;
pub mod status;
pub mod table;
