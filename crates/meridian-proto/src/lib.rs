//! Meridian's wire contract.
//!
//! - [`v1`]: the generated types and services of protobuf package `meridian.v1`
//!   (`Kv`, `Admin`, and the internal `RaftTransport`).
//! - [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, served by gRPC reflection so
//!   `grpcurl` works without the `.proto` files.
//! - [`names`]: the rule for namespace names.
//! - [`reason`]: machine-readable reasons for refusals, carried in metadata,
//!   attached and read back in one place.
//! - [`workers`]: the `Workers` service every process serves over its
//!   registry of named background workers.
//!
//! The `.proto` files under `proto/` are the public API; this crate only compiles them.

pub mod names;
pub mod reason;
pub mod workers;

/// Generated code for protobuf package `meridian.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");
}

/// Encoded `FileDescriptorSet` of every Meridian `.proto` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/meridian_descriptor.bin"));
