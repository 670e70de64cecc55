//! Disaster recovery: where backups go and what they are made of.
//!
//! - [`location`]: a backup location's URL as an object store — a local
//!   directory (`file:///...`, the default) or S3 and S3-compatible servers
//!   (`s3://bucket/prefix`, with the `s3` cargo feature).
//! - [`manifest`]: the versioned manifest that lists every object of a
//!   backup with its size and SHA-256, the namespace's jurisdictions, the
//!   location's region and the change sequence it was taken at.
//! - [`chunk`]: one object's bytes — records, compressed (zstd), sealed with
//!   the backup's own data key (AES-256-GCM, the object's place in the backup
//!   authenticated too).
//! - [`writer`]: streams a namespace's records into objects, never holding
//!   more than one chunk in memory, and writes the manifest last.
//! - [`reader`]: reads a backup back, checking every object against the
//!   manifest (a missing or damaged object is named), and validates it.
//! - [`control`]: the control plane's own backups (its stored records).
//!
//! A full backup holds a namespace's keys ([`Record`]s) as of one change
//! sequence; an incremental one holds the logged changes ([`Change`]s)
//! after its parent's sequence, so a chain restores to any sequence in it.
//!
//! A backup's data key is random and stored only wrapped by the
//! key-encryption key (the same key file as encryption at rest), so the
//! objects say nothing without it.

pub mod chunk;
pub mod control;
pub mod error;
pub mod location;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use error::DrError;
pub use manifest::Manifest;

/// One stored key of a namespace as a backup carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The user key.
    pub key: Vec<u8>,
    /// Its version (the change that wrote it).
    pub version: u64,
    /// Its value.
    pub value: Vec<u8>,
}

/// One logged change of a namespace as an incremental backup carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Its position in the namespace's change sequence.
    pub seq: u64,
    /// The keys it wrote or removed, in order.
    pub writes: Vec<ChangeWrite>,
}

/// One key written (or removed) by a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeWrite {
    /// The user key.
    pub key: Vec<u8>,
    /// The new value; `None` for a removal.
    pub value: Option<Vec<u8>>,
    /// The key's version after the write.
    pub version: u64,
}

/// What a backup object carries: its size before compression, to cut
/// objects and bound decompression.
pub trait BackupItem: serde::Serialize {
    /// Bytes it takes before compression (an estimate).
    fn plain_size(&self) -> usize;
}

impl BackupItem for Record {
    fn plain_size(&self) -> usize {
        self.key.len() + self.value.len() + 16
    }
}

impl BackupItem for Change {
    fn plain_size(&self) -> usize {
        self.writes
            .iter()
            .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len) + 16)
            .sum::<usize>()
            + 16
    }
}
