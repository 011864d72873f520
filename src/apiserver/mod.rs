//! The Kubernetes API on 6443: a compatible subset served from etcd.

pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod status;
