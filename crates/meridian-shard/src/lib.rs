//! A Meridian shard node: one member of a regional Raft group that stores
//! namespaced, versioned key-value data.
//!
//! - [`config`]: the node's TOML/environment configuration and its validation.
//! - [`limits`]: request limits and the errors that name them.
//! - [`keys`]: how namespaced keys and versioned values are laid out in storage.
//! - [`command`]: the commands replicated through the Raft log and their results.
//! - [`formats`]: versioned encodings of what is stored and sent (golden samples).
//! - [`state_machine`]: applying commands; reads of the applied state.
//! - [`digest`]: integrity digests that any two copies of a namespace can compare.
//! - [`node`]: request logic — proposing, read barriers, leader discovery.
//! - [`active`]: active-active namespaces: typed writes, session tokens, a peer's reads.
//! - [`lease`]: the write lease from the control plane (when a grant holds).
//! - [`replica`]: the shard's side of replication (`meridian-replication`): its
//!   change log as a source, its Raft log as the sink of what is shipped here.
//! - [`access`]: who may call the data and admin APIs (the pushed access policy).
//! - [`api`]: the `meridian.v1` gRPC services (`Kv`, `Admin`, `Replication`).
//! - [`server`]: serving gRPC and HTTP (`/health/*`, `/metrics`) until shutdown.
//! - [`metrics`], [`disk`], [`error`]: metrics, free-space guard, error mapping.

pub mod access;
pub mod active;
pub mod api;
pub mod backup;
pub mod command;
pub mod config;
pub mod digest;
pub mod disk;
pub mod error;
pub mod fork;
pub mod formats;
pub mod keys;
pub mod lease;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod restore;
pub mod server;
pub mod state_machine;
pub mod time_marks;
pub mod tombstones;

pub use config::NodeConfig;
pub use error::ShardError;
pub use node::ShardNode;
