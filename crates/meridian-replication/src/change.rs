//! What replication carries: a namespace's committed changes in sequence
//! order, and the key-values of a full copy.
//!
//! These types are also part of the shard's Raft commands and stored change
//! log (postcard-encoded, versioned by the shard's format envelopes), so a
//! field is never reordered or removed: a new form gets a new type and a
//! conversion, as format 1 did.

use serde::{Deserialize, Serialize};

/// One committed change of a namespace, as logged and shipped to standbys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Position in the namespace's change sequence (1, 2, ...).
    pub seq: u64,
    /// The writes of the command, in order.
    pub writes: Vec<ReplicatedWrite>,
}

/// One key written (or removed) by a change, with the version it got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicatedWrite {
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The key's version after the write (the removed version for a delete).
    pub version: u64,
    /// The key's version before the write (0: absent), when known (`None`
    /// for changes recorded in format 1). A lost write is re-applied only
    /// while the key still has this version on the new primary.
    pub previous_version: Option<u64>,
}

/// Format 1 of [`ChangeRecord`] (before previous versions were recorded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeRecordV1 {
    /// Position in the namespace's change sequence.
    pub seq: u64,
    /// The writes of the command, in order.
    pub writes: Vec<ReplicatedWriteV1>,
}

/// Format 1 of [`ReplicatedWrite`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicatedWriteV1 {
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The key's version after the write.
    pub version: u64,
}

impl From<ChangeRecordV1> for ChangeRecord {
    fn from(old: ChangeRecordV1) -> Self {
        ChangeRecord {
            seq: old.seq,
            writes: old
                .writes
                .into_iter()
                .map(|w| ReplicatedWrite {
                    key: w.key,
                    value: w.value,
                    version: w.version,
                    previous_version: None,
                })
                .collect(),
        }
    }
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
