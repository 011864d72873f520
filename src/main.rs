//! The `rke2` binary.
fn main() {}
