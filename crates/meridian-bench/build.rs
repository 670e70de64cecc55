//! Compiles the minimal etcd v3 client protocol the benchmark speaks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd/kv.proto");
    let descriptors = protox::compile(["proto/etcd/kv.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
