//! Compiles the `.proto` files with `protox` (pure Rust, so a fresh checkout needs no
//! `protoc`) and keeps the descriptor set for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/meridian/v1/kv.proto",
        "proto/meridian/v1/admin.proto",
        "proto/meridian/v1/raft.proto",
        "proto/meridian/v1/control.proto",
        "proto/meridian/v1/workers.proto",
        "proto/meridian/v1/replication.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("meridian_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".meridian.v1.RaftPayload.data")
        .bytes(".meridian.v1.SnapshotChunk.data")
        .compile_fds(descriptors)?;
    Ok(())
}
