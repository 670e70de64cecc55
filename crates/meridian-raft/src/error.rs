//! Errors of the Raft machinery.

use std::io;

/// Why a Raft node could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    /// The storage engine failed; the message names the operation.
    #[error("storage error while {operation}: {source}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The Raft configuration was rejected.
    #[error("invalid raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft stopped with a fatal error.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// The operation does not apply to this node (the message says why).
    #[error("{0}")]
    Refused(String),
}

impl RaftNodeError {
    /// Wraps a storage error with the operation that hit it.
    pub fn storage(operation: &'static str, source: io::Error) -> Self {
        Self::Storage { operation, source }
    }
}
