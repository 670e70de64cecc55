//! The errors of backups and restores.

/// Why a backup could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum DrError {
    /// A location URL that cannot be used (the message says why).
    #[error("backup location {url:?}: {reason}")]
    Location {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// An object the manifest lists is not there.
    #[error("backup {backup}: object {object} is missing")]
    Missing {
        /// The backup.
        backup: String,
        /// The object's path.
        object: String,
    },
    /// An object is there but is not what the manifest says (size or
    /// SHA-256), or does not decrypt: it was damaged or replaced.
    #[error("backup {backup}: object {object} is damaged: {reason}")]
    Damaged {
        /// The backup.
        backup: String,
        /// The object's path.
        object: String,
        /// What does not match.
        reason: String,
    },
    /// The manifest is unreadable or of an unknown format.
    #[error("backup {backup}: manifest: {reason}")]
    Manifest {
        /// The backup.
        backup: String,
        /// Why.
        reason: String,
    },
    /// The records read back do not give the digest the manifest recorded.
    #[error("backup {backup}: restored digest {found} differs from the source's {expected}")]
    DigestMismatch {
        /// The backup.
        backup: String,
        /// The source's digest at the backup's sequence.
        expected: String,
        /// What the backup gives.
        found: String,
    },
    /// Key material or sealing failed.
    #[error("backup encryption: {0}")]
    Crypto(String),
}
