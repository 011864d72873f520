//! Build script: generates the CRI v1 client (the subset in proto/cri/runtime_v1.proto) that the
//! node runtime uses to drive containerd (src/runtime/cri.rs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/cri/runtime_v1.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/cri/runtime_v1.proto");
    Ok(())
}
