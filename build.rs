//! Build script: generates the CRI v1 client (the subset in proto/cri/runtime_v1.proto) that the
//! node runtime uses to drive containerd (src/runtime/cri.rs), and the grpc.health.v1 client of
//! its gRPC probes (proto/grpc/health/v1/health.proto, src/runtime/probes.rs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(
            &[
                "proto/cri/runtime_v1.proto",
                "proto/grpc/health/v1/health.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto/cri/runtime_v1.proto");
    println!("cargo:rerun-if-changed=proto/grpc/health/v1/health.proto");
    Ok(())
}
