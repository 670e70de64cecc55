//! The narrow interface a shard implements for replication: read its change
//! log from a sequence number ([`Source`]), apply a batch and report its
//! position ([`Sink`]).
//!
//! Replication never touches the shard's storage or Raft group directly: a
//! source reads what its state machine logged, a sink proposes what it
//! received through its own Raft log (so the durable cursor is the sink's
//! applied position, on a quorum of its members).

use crate::bandwidth::BandwidthCap;
use crate::change::{ChangeRecord, VersionedEntry};
use crate::progress::ReplicationProgress;
use std::future::Future;
use std::io;

/// A namespace's role on a shard, as replication sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes writes and ships them.
    Primary,
    /// Applies what its primary ships.
    Standby,
    /// One copy of an active-active namespace: takes writes, ships its own
    /// to every other peer, merges theirs.
    Peer,
}

/// What replication needs to know of one namespace on a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceState {
    /// Its role here.
    pub role: Role,
    /// The epoch this copy holds (a failover bumps it).
    pub epoch: u64,
    /// Last change logged (primary; a peer: of its own writes) or applied
    /// (standby).
    pub change_seq: u64,
    /// The change log is gone through this sequence number.
    pub trimmed_through: u64,
    /// Whether changes are logged for standbys.
    pub log_changes: bool,
    /// Whether this copy waits for a full copy (it diverged).
    pub resync_needed: bool,
}

/// The shipping side: a shard whose namespaces are shipped from here.
pub trait Source: Send + Sync + 'static {
    /// Why a local step (a trim) failed.
    type Error: std::fmt::Display + Send;

    /// This shard's name (a pair is never shipped to itself).
    fn shard(&self) -> &str;
    /// This shard's region (an active-active peer ships the writes made
    /// here, under this name).
    fn region(&self) -> &str;
    /// Whether this node leads its shard now (only the leader ships).
    fn is_leader(&self) -> bool;
    /// The namespace's state here, if it is here.
    fn namespace(&self, namespace: &str) -> Option<NamespaceState>;
    /// Fires whenever a change is logged (any namespace).
    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Up to `max` logged changes of `namespace` after `after`, in order.
    fn changes_after(
        &self,
        namespace: &str,
        after: u64,
        max: usize,
    ) -> io::Result<Vec<ChangeRecord>>;
    /// Visits every key-value of `namespace` from one point-in-time view
    /// (`visit(seq, key, version, value)`, false to stop) and returns the
    /// change sequence number the view is at. Blocking: called on a
    /// blocking thread.
    fn visit_copy(
        &self,
        namespace: &str,
        visit: &mut dyn FnMut(u64, Vec<u8>, u64, Vec<u8>) -> bool,
    ) -> io::Result<u64>;
    /// Drops the log of `namespace` through `through` (every standby has it).
    fn trim(
        &self,
        namespace: &str,
        through: u64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Where every standby stands (kept by the shippers, read by the shard).
    fn progress(&self) -> &ReplicationProgress;
    /// The cap on the bytes shipped.
    fn bandwidth(&self) -> &BandwidthCap;
    /// The process's named workers (one shipper per pair).
    fn workers(&self) -> &meridian_net::workers::Workers;
    /// `bytes` (compressed) reached a standby: counted in the metrics.
    fn shipped(&self, bytes: u64);
}

/// One step a standby applies through its Raft log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyStep {
    /// Changes in sequence order (those already held are skipped; a gap
    /// stops the batch).
    Changes {
        /// The namespace.
        namespace: String,
        /// The primary's epoch (must be the standby's).
        epoch: u64,
        /// The changes.
        changes: Vec<ChangeRecord>,
    },
    /// A full copy begins: the standby's copy is emptied.
    ResyncBegin {
        /// The namespace.
        namespace: String,
        /// The primary's epoch.
        epoch: u64,
    },
    /// Key-values of a full copy.
    ResyncEntries {
        /// The namespace.
        namespace: String,
        /// The primary's epoch.
        epoch: u64,
        /// The key-values with their versions.
        entries: Vec<VersionedEntry>,
    },
    /// A full copy is complete at `through_seq`.
    ResyncEnd {
        /// The namespace.
        namespace: String,
        /// The primary's epoch.
        epoch: u64,
        /// The change the copy corresponds to.
        through_seq: u64,
    },
    /// Active-active: another region's own writes, in its log's order, each
    /// a key's state to merge (those already merged are skipped; a gap
    /// stops the batch).
    Merge {
        /// The namespace.
        namespace: String,
        /// The sender's epoch.
        epoch: u64,
        /// The region whose writes these are.
        origin: String,
        /// The changes.
        changes: Vec<ChangeRecord>,
    },
    /// Active-active: key states from a peer's point-in-time copy (its log
    /// no longer reaches back to this peer's position). Merged like any
    /// state, so nothing is emptied first; with `through_seq`, the copy
    /// is complete and this peer holds the origin's writes through it.
    MergeCopy {
        /// The namespace.
        namespace: String,
        /// The sender's epoch.
        epoch: u64,
        /// The region that sent its copy.
        origin: String,
        /// Keys with their states.
        entries: Vec<VersionedEntry>,
        /// Set on the last chunk.
        through_seq: Option<u64>,
    },
}

/// The applying side: a shard holding standby copies.
pub trait Sink: Send + Sync + 'static {
    /// Why a step was refused or failed (the shard's own error, which
    /// carries the typed reasons its callers act on).
    type Error: From<crate::ReplicationError> + Send;
    /// A step handed to Raft, not yet committed.
    type Pending: Send;

    /// The namespace's state here, if it is here.
    fn namespace(&self, namespace: &str) -> Option<NamespaceState>;
    /// A peer: how far it holds `origin`'s own writes (0: none, or not a
    /// peer).
    fn merged(&self, namespace: &str, origin: &str) -> u64;
    /// A peer that counts its writes by log position: its frontier (see
    /// [`crate::tombstone`]); `None` otherwise.
    fn frontier(&self, namespace: &str) -> Option<crate::tombstone::Frontier>;
    /// Waits until this node's state is what a quorum has (so a position
    /// answered without a Raft round is not one a new leader lacks).
    fn read_barrier(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Queues `step` for the Raft log: steps submitted one after another
    /// reach the log in that order. Finish with [`Sink::committed`].
    fn submit(
        &self,
        step: ApplyStep,
    ) -> impl Future<Output = Result<Self::Pending, Self::Error>> + Send;
    /// Waits for a submitted step to commit and apply; returns the
    /// namespace's position after it.
    fn committed(
        &self,
        pending: Self::Pending,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;
    /// The standby held the primary's head when it answered (fresh for
    /// bounded reads).
    fn note_current(&self, namespace: &str);
    /// Where batches of each namespace queue in order.
    fn lanes(&self) -> &crate::applier::ApplyLanes;
    /// Active-active: a request from `origin` said its log reaches
    /// `origin_head`, and this peer holds its writes through `merged` (the
    /// peer bounds its staleness per origin from these).
    fn note_merged(&self, namespace: &str, origin: &str, origin_head: u64, merged: u64);
}
