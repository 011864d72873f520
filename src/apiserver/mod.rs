//! The Kubernetes API on 6443: a compatible subset served from etcd.

/// Validation and server-side defaulting of objects before storage.
pub mod objects;
/// JSON, merge and strategic merge patches.
pub mod patch;
/// Decoding kubectl's protobuf request bodies to JSON.
pub mod protobuf;
pub mod resources;
/// Label and field selectors of list/watch requests.
pub mod selectors;
pub mod status;
