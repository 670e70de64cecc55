//! Commands that go through the Raft log, and what applying them returns.
//!
//! Both are serialized with postcard inside the log entry. The encoding is part of
//! the on-disk format: new variants go at the end, existing ones never change.

use serde::{Deserialize, Serialize};

/// A change to the shard's state, decided by the leader and applied by every
/// replica in log order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// Creates an empty namespace.
    CreateNamespace {
        /// Name of the new namespace.
        name: String,
        /// The namespace cap in force when the leader accepted the request; carried
        /// in the command so that every replica decides the same way.
        max_namespaces: u64,
    },
    /// Removes a namespace and every key in it.
    DeleteNamespace {
        /// Name of the namespace.
        name: String,
    },
    /// Writes one key.
    Put {
        /// Namespace of the key.
        namespace: String,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes one key.
    Delete {
        /// Namespace of the key.
        namespace: String,
        /// The key.
        key: Vec<u8>,
    },
    /// Compare-then-write, atomically.
    Txn {
        /// Namespace of every key involved.
        namespace: String,
        /// Conditions that select the branch.
        compares: Vec<Compare>,
        /// Writes applied when every condition holds.
        success: Vec<WriteOp>,
        /// Writes applied otherwise.
        failure: Vec<WriteOp>,
    },
    /// Loads key-values with their versions (export/import, and later replication).
    Import {
        /// Namespace to load into; must exist.
        namespace: String,
        /// Entries to write as they are.
        entries: Vec<VersionedEntry>,
    },
    /// Sets a namespace's replication role and epoch (from the control plane:
    /// placement, failover, fencing). Refused if `epoch` is older than the
    /// namespace's.
    ConfigureNamespace {
        /// The namespace.
        namespace: String,
        /// Its role on this shard.
        role: NamespaceRole,
        /// The epoch this role belongs to.
        epoch: u64,
        /// Whether to keep a log of its changes (for standbys to catch up from).
        log_changes: bool,
        /// For a primary being demoted: the last sequence number the promoted
        /// standby had. Logged changes after it are set aside as lost writes and
        /// the copy is marked for a rebuild from the new primary.
        fork_seq: Option<u64>,
        /// Acknowledge client writes only once a standby has them durably.
        sync: bool,
        /// RPO gate: most changes a standby may be behind (0: no bound).
        max_lag_entries: u64,
        /// RPO gate: oldest unconfirmed change's age in ms (0: no bound).
        max_lag_ms: u64,
    },
    /// Applies changes shipped from the namespace's primary, in sequence order;
    /// already-applied sequence numbers are skipped, a gap stops the batch.
    ApplyReplicated {
        /// The namespace.
        namespace: String,
        /// The primary's epoch; must equal this standby's.
        epoch: u64,
        /// Changes in sequence order (format 1, without previous versions;
        /// kept so that log entries written before format 2 still apply).
        changes: Vec<ChangeRecordV1>,
    },
    /// Drops change-log entries up to `through` (every standby has them).
    TrimChanges {
        /// The namespace.
        namespace: String,
        /// Last sequence number to drop.
        through: u64,
    },
    /// Starts rebuilding a standby copy from its primary: removes its keys and
    /// change log.
    ResyncBegin {
        /// The namespace.
        namespace: String,
        /// The primary's epoch; must equal the standby's.
        epoch: u64,
    },
    /// Loads part of the primary's copy during a rebuild.
    ResyncEntries {
        /// The namespace.
        namespace: String,
        /// The primary's epoch.
        epoch: u64,
        /// Keys with their values and versions.
        entries: Vec<VersionedEntry>,
    },
    /// Ends a rebuild: the copy now equals the primary's at `through_seq`.
    ResyncEnd {
        /// The namespace.
        namespace: String,
        /// The primary's epoch.
        epoch: u64,
        /// The primary's sequence number the copy corresponds to.
        through_seq: u64,
    },
    /// [`Command::ApplyReplicated`] with format-2 change records.
    ApplyChanges {
        /// The namespace.
        namespace: String,
        /// The primary's epoch; must equal this standby's.
        epoch: u64,
        /// Changes in sequence order.
        changes: Vec<ChangeRecord>,
    },
    /// Removes set-aside lost writes (re-applied or discarded by an operator).
    DiscardLost {
        /// The namespace.
        namespace: String,
        /// `(epoch, seq)` of each lost change to remove.
        changes: Vec<(u64, u64)>,
    },
    /// This copy's history leaves its namespace's current history after
    /// `fork_seq` (where the failovers since its epoch took over): changes
    /// after it are set aside as lost writes and the copy waits for a
    /// rebuild. Any role; nothing if it holds nothing after `fork_seq`.
    SetAsideAfter {
        /// The namespace.
        namespace: String,
        /// The last change its history shares with the current one.
        fork_seq: u64,
    },
    /// Keeps a namespace's change log for incremental backups. `None`:
    /// start (if not already): every change from now on is logged and kept.
    /// `Some(seq)`: a backup holds everything through `seq`, so changes up
    /// to it may go (once standbys have them too).
    HoldChanges {
        /// The namespace.
        namespace: String,
        /// Changes a backup now holds.
        release_through: Option<u64>,
    },
    /// Loads logged changes (puts and deletes with their versions), in
    /// order: a restore replaying an incremental backup.
    LoadChanges {
        /// Namespace to load into; must exist as a primary.
        namespace: String,
        /// The changes, in sequence order.
        changes: Vec<ChangeRecord>,
    },
    /// Notes the time: each listed namespace had applied the listed change
    /// on the leader before `unix_ms` (the leader's clock, read after the
    /// changes), so everything up to it was written by then. Backups carry
    /// these marks, so a chain restores to a time. Proposed about once a
    /// second for the primaries whose change log moved.
    MarkTime {
        /// The leader's wall clock (Unix ms).
        unix_ms: u64,
        /// Each namespace with the change it had applied.
        namespaces: Vec<(String, u64)>,
    },
    /// Makes this copy one peer of an active-active namespace (from the
    /// control plane): it takes writes in `region`, logs them for the other
    /// peers and merges theirs.
    ConfigurePeer {
        /// The namespace.
        namespace: String,
        /// The epoch of its placement.
        epoch: u64,
        /// This shard's region (the origin of the writes made here).
        region: String,
        /// Conflict records kept at most (the oldest go first).
        conflict_retention: u64,
        /// Remote stamps further ahead of the leader's clock than this are
        /// flagged.
        max_clock_offset_ms: u64,
    },
    /// A client write to an active-active key, stamped by the namespace's
    /// hybrid logical clock at `physical_ms` (the leader's clock).
    ActiveWrite {
        /// The namespace.
        namespace: String,
        /// The key.
        key: Vec<u8>,
        /// What to do to it.
        op: meridian_replication::crdt::Op,
        /// The leader's wall clock when it proposed the write (Unix ms).
        physical_ms: u64,
    },
    /// Another region's own writes to an active-active namespace, merged.
    MergeChanges {
        /// The namespace.
        namespace: String,
        /// The sender's epoch.
        epoch: u64,
        /// The region whose writes these are.
        origin: String,
        /// Its changes in its log's order.
        changes: Vec<ChangeRecord>,
        /// The leader's wall clock (Unix ms): stamps resolved conflicts and
        /// flags remote stamps too far ahead of it.
        physical_ms: u64,
    },
    /// Key states of a peer's point-in-time copy, merged; with
    /// `through_seq`, this peer now holds the origin's writes through it.
    MergeCopy {
        /// The namespace.
        namespace: String,
        /// The sender's epoch.
        epoch: u64,
        /// The region that sent the copy.
        origin: String,
        /// Keys with their states.
        entries: Vec<VersionedEntry>,
        /// Set on the last chunk.
        through_seq: Option<u64>,
        /// As in [`Command::MergeChanges`].
        physical_ms: u64,
    },
    /// A round of tombstone collection in an active-active namespace (see
    /// `meridian_replication::tombstone`): what every other peer said of
    /// how far it has merged, as the leader's shippers last heard it.
    CollectTombstones {
        /// The namespace.
        namespace: String,
        /// Every other region of the namespace with its frontier (`None`:
        /// not heard yet).
        peers:
            std::collections::BTreeMap<String, Option<meridian_replication::tombstone::Frontier>>,
        /// At most this many tombstones are looked at.
        limit: u32,
        /// The leader's wall clock (Unix ms).
        physical_ms: u64,
    },
}

/// A namespace's role on a shard.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum NamespaceRole {
    /// Takes client writes.
    #[default]
    Primary,
    /// Takes only replicated changes from the primary of its epoch.
    Standby,
    /// One copy of an active-active namespace: takes writes, merges the
    /// other peers'.
    Peer,
}

pub use meridian_replication::change::{
    ChangeRecord, ChangeRecordV1, ReplicatedWrite, ReplicatedWriteV1, VersionedEntry,
};

/// A write inside a transaction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum WriteOp {
    /// Writes a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// What a transaction condition compares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version; 0 for a missing key.
    Version(u64),
    /// The key's value; a missing key equals no value.
    Value(Vec<u8>),
    /// Whether the key exists.
    Exists(bool),
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Greater than the target.
    Greater,
    /// Less than the target.
    Less,
}

/// One transaction condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compare {
    /// The key to look at.
    pub key: Vec<u8>,
    /// The comparison.
    pub op: CompareOp,
    /// What to compare with.
    pub target: CompareTarget,
}

impl Command {
    /// The namespace a client's write changes (put, delete, txn, import);
    /// `None` for everything else. Leases, the RPO gate and sync replication
    /// apply to these writes only.
    pub fn client_write_namespace(&self) -> Option<&str> {
        match self {
            Command::Put { namespace, .. }
            | Command::Delete { namespace, .. }
            | Command::Txn { namespace, .. }
            | Command::Import { namespace, .. }
            | Command::LoadChanges { namespace, .. } => Some(namespace),
            _ => None,
        }
    }
}

/// The result of applying a [`Command`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandResult {
    /// A namespace was created at this log index.
    NamespaceCreated {
        /// Log index of the creation.
        created_index: u64,
    },
    /// A namespace was removed with this many keys.
    NamespaceDeleted {
        /// Keys removed.
        keys_deleted: u64,
    },
    /// A key was written.
    Put(PutOutcome),
    /// A key was (or was not) removed.
    Delete(DeleteOutcome),
    /// A transaction ran one of its branches.
    Txn {
        /// Whether every condition held.
        succeeded: bool,
        /// One outcome per write of the branch that ran.
        outcomes: Vec<WriteOutcome>,
    },
    /// Entries were loaded.
    Imported {
        /// Number of entries written.
        count: u64,
    },
    /// The command was valid when proposed but the state refused it.
    Rejected(Rejection),
    /// A namespace's role and epoch were set.
    Configured,
    /// Replicated changes were applied through this sequence number.
    Replicated {
        /// The namespace's last applied sequence number.
        applied_seq: u64,
    },
    /// Change-log entries were dropped.
    Trimmed,
    /// Set-aside lost writes were removed.
    Discarded {
        /// Lost changes removed.
        count: u64,
    },
    /// The change log is kept after `hold`.
    Held {
        /// Changes after this sequence number are kept.
        hold: u64,
        /// The namespace's last change sequence number.
        change_seq: u64,
    },
    /// Time marks were recorded.
    Marked,
    /// An active-active write was applied.
    ActiveWritten(ActiveOutcome),
    /// A round of tombstone collection ran.
    TombstonesCollected {
        /// Tombstones dropped.
        collected: u64,
        /// Why the round dropped none, if it could not look (a peer not
        /// heard from, or behind the checkpoint), for logs.
        waiting: Option<String>,
    },
}

/// Outcome of an active-active write, at the copy that took it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveOutcome {
    /// The key's version after it (see `KeyState::version`).
    pub version: u64,
    /// Its version before (0: absent).
    pub previous_version: u64,
    /// The write's hybrid-logical stamp.
    pub stamp: meridian_replication::hlc::Timestamp,
    /// A counter's value after the write (here; other regions' concurrent
    /// increments arrive later).
    pub counter: Option<i64>,
    /// This copy's position in its own log after the write.
    pub change_seq: u64,
}

/// Outcome of a put.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutOutcome {
    /// Version after the write.
    pub version: u64,
    /// Version before the write; 0 if the key was missing.
    pub previous_version: u64,
}

/// Outcome of a delete.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Whether the key existed.
    pub deleted: bool,
    /// Version of the removed key; 0 if none.
    pub previous_version: u64,
}

/// Outcome of one write of a transaction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A put.
    Put(PutOutcome),
    /// A delete.
    Delete(DeleteOutcome),
}

/// Why the state machine refused a command. Decided identically on every replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The namespace does not exist.
    #[error("namespace {name:?} not found")]
    NamespaceNotFound {
        /// The namespace.
        name: String,
    },
    /// The namespace already exists.
    #[error("namespace {name:?} already exists")]
    NamespaceExists {
        /// The namespace.
        name: String,
    },
    /// The shard already holds `max_namespaces` namespaces.
    #[error("shard holds {count} namespaces; the limit max_namespaces is {limit}")]
    TooManyNamespaces {
        /// Namespaces present.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// The namespace is a standby on this shard (or was fenced by a failover):
    /// client writes go to its primary.
    #[error(
        "namespace {name:?} is a standby on this shard at epoch {epoch}; writes go to its primary (see the routing table)"
    )]
    NotPrimary {
        /// The namespace.
        name: String,
        /// Its epoch here.
        epoch: u64,
    },
    /// A command carried an older epoch than the namespace has here.
    #[error("namespace {name:?} is at epoch {current}; a request of epoch {requested} is stale")]
    StaleEpoch {
        /// The namespace.
        name: String,
        /// Its epoch here.
        current: u64,
        /// The epoch the request carried.
        requested: u64,
    },
    /// Replicated changes sent to a namespace that is not a standby here.
    #[error("namespace {name:?} is not a standby on this shard; replicated changes refused")]
    NotStandby {
        /// The namespace.
        name: String,
    },
    /// A version or change sequence number above the limit, which would let
    /// later writes overflow (imports and rebuilds carry them from outside).
    #[error(
        "namespace {name:?}: {what} {value} exceeds the limit {limit} (versions and change sequence numbers must leave room to grow)"
    )]
    OutOfRange {
        /// The namespace.
        name: String,
        /// What was out of range ("imported version", "resync through_seq").
        what: String,
        /// The value given.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The operation is for active-active namespaces (counters and sets),
    /// or merges into a copy that is not a peer.
    #[error(
        "namespace {name:?} is not active-active here; {operation} applies only to active-active namespaces (create one with --mode active-active)"
    )]
    NotActiveActive {
        /// The namespace.
        name: String,
        /// What was attempted.
        operation: String,
    },
    /// The operation does not apply to an active-active namespace.
    #[error("namespace {name:?} is active-active: {operation} is refused ({why})")]
    RefusedActiveActive {
        /// The namespace.
        name: String,
        /// What was attempted.
        operation: String,
        /// Why, and what to use instead.
        why: String,
    },
    /// The key holds another type (fixed by its first write), or the
    /// operation would overflow it.
    #[error("namespace {name:?}, key {key:?}: {why}")]
    KeyType {
        /// The namespace.
        name: String,
        /// The key (lossy text).
        key: String,
        /// The rule, naming the key's type.
        why: String,
    },
}
