//! The openraft type configuration shared by every Meridian Raft group.
//!
//! Commands and responses are opaque bytes at this layer: each application encodes
//! its own typed commands, so one Raft implementation serves several state
//! machines without generics leaking into every signature.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An encoded application command, as stored in the log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request(pub Vec<u8>);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command({} bytes)", self.0.len())
    }
}

/// An encoded application response to a committed command.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Response(pub Vec<u8>);

openraft::declare_raft_types!(
    /// Type configuration of every Meridian Raft group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A running Raft instance with Meridian's state-machine adapter.
pub type MeridianRaft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;

/// A log id of this configuration.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote of this configuration.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry of this configuration.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Stored membership of this configuration.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata of this configuration.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
