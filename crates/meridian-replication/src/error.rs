//! Why a replication request was refused.

/// Errors of replication; a shard turns them into its own typed refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// The payload does not decode, or does not match what the request says.
    #[error("malformed replication request: {0}")]
    Malformed(String),
    /// The namespace is not on this shard.
    #[error("namespace {name:?} is not on this shard")]
    NamespaceNotFound {
        /// The namespace.
        name: String,
    },
    /// The sender's epoch is not this copy's.
    #[error("namespace {name:?} is at epoch {current}; the request is for epoch {requested}")]
    StaleEpoch {
        /// The namespace.
        name: String,
        /// This copy's epoch.
        current: u64,
        /// The sender's.
        requested: u64,
    },
}
