//! The Raft machinery every replicated part of Meridian runs on.
//!
//! Shards and the control plane differ only in their state machine; everything
//! else lives here, once:
//!
//! - [`types`]: the openraft type configuration (opaque command and response bytes).
//! - [`config`]: configuration sections every Raft-based server shares.
//! - [`engine`]: the fjall database a node keeps everything in, and its group-commit
//!   flusher that makes many log appends durable with one fsync.
//! - [`apply_batch`]: the read-through batch a run of entries is applied into.
//! - [`log_store`]: the Raft log, vote and commit index in that database.
//! - [`state_machine`]: the [`Application`] trait a state machine implements, and the
//!   adapter that applies committed entries to it and builds/installs snapshots.
//! - [`snapshot`]: the versioned, checksummed snapshot file format.
//! - [`network`]: the client side of the gRPC Raft transport.
//! - [`append_window`]: the cap on unanswered log appends per follower that
//!   makes entries arriving one by one travel in batches.
//! - [`transport`]: the server side of the gRPC Raft transport.
//! - [`member_gate`]: a group's transport answers only its own members.
//! - [`reseal`]: re-encryption of stored values after a data-key rotation.
//! - [`read_barrier`]: one leadership confirmation shared by concurrent reads.
//! - [`node`]: wiring the parts into a running [`RaftNode`].
//! - [`metrics`]: storage metrics (fsync latency, group size).

pub mod append_window;
pub mod apply_batch;
pub mod at_rest;
pub mod config;
pub mod engine;
pub mod error;
pub mod log_store;
pub mod member_gate;
pub mod metrics;
pub mod network;
pub mod node;
pub mod read_barrier;
pub mod reseal;
pub mod snapshot;
pub mod snapshot_spacing;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use apply_batch::ApplyBatch;
pub use engine::StorageEngine;
pub use error::RaftNodeError;
pub use node::{RaftNode, RaftNodeOptions};
pub use state_machine::{Application, StateMachineStore};
pub use types::{MeridianRaft, Request, Response, TypeConfig};
