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
}

/// One key with its value and version, as exported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionedEntry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The version to keep.
    pub version: u64,
}

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
}
