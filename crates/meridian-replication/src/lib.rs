//! Replication between shards: a namespace's committed changes shipped from
//! the shard that takes its writes to the shards that hold copies in other
//! regions, in batches, compressed, resumable from a durable cursor, with
//! lag measured in changes and in seconds.
//!
//! A shard takes part through a narrow interface ([`replica`]): as a
//! [`Source`] it lets its change log be read from a sequence number and
//! trimmed; as a [`Sink`] it applies batches through its own Raft log and
//! reports its position. Nothing here touches a shard's storage.
//!
//! - [`mode`]: what differs between active-passive and active-active (one
//!   implementation each): who ships what to whom, and in which role.
//! - [`shipper`]: the shipping side, one named worker per (namespace,
//!   receiver) pair, following the routing table.
//! - [`applier`]: the receiving side: batches back in order and applied on a
//!   standby (`in_order`), or merged on a peer (`merge`).
//! - [`cursor`]: where a standby stands, as its shipper knows it, and lag.
//! - [`pacing`]: when the next batch goes on the wire (pure).
//! - [`progress`]: every pair's progress, read by the shard (status, metrics,
//!   the RPO gate, sync writes).
//! - [`sync_rule`]: when a sync namespace's write may be proposed and
//!   acknowledged (pure).
//! - [`wire`], [`change`]: what a request carries and its formats.
//! - [`bandwidth`]: the cap on bytes shipped.
//! - [`hlc`], [`crdt`]: for active-active namespaces, hybrid logical clocks
//!   and the typed key states (register, counter, set) whose merge is a
//!   join, with the conflicts a merge resolves (pure, property-tested).
//!
//! Active-passive: one primary, standbys that apply its history in order.
//! Active-active: every peer ships its own region's writes (each a key's
//! state) to every other peer, which merges them (`crdt`, ordered by `hlc`).

pub mod applier;
pub mod bandwidth;
pub mod change;
pub mod crdt;
pub mod cursor;
pub mod error;
pub mod hlc;
pub mod mode;
pub mod pacing;
pub mod progress;
pub mod replica;
pub mod session;
pub mod shipper;
pub mod sync_rule;
pub mod tombstone;
pub mod wire;

pub use error::ReplicationError;
pub use replica::{ApplyStep, NamespaceState, Role, Sink, Source};
