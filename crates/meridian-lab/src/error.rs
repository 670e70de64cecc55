//! Errors of the lab.

use std::path::PathBuf;

/// What can go wrong running a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No lab state in the directory.
    #[error("no lab found in {dir}: start one with `meridian lab up --dir {dir}`")]
    NotFound {
        /// The lab directory.
        dir: PathBuf,
    },
    /// A lab is already running there.
    #[error(
        "a lab is already running in {dir} (pids {pids:?}); stop it with `meridian lab down --dir {dir}`"
    )]
    AlreadyRunning {
        /// The lab directory.
        dir: PathBuf,
        /// Its live processes.
        pids: Vec<u32>,
    },
    /// A name matches no process or region of the lab.
    #[error("no process or region named {name:?} in this lab; known: {known}")]
    UnknownTarget {
        /// What was asked for.
        name: String,
        /// Names that exist.
        known: String,
    },
    /// A request that makes no sense for this lab.
    #[error("invalid lab request: {0}")]
    Invalid(String),
    /// Processes did not become ready in time.
    #[error("not ready after {seconds} s: {waiting}; see the logs under {dir}")]
    NotReady {
        /// How long we waited.
        seconds: u64,
        /// Which processes were not ready.
        waiting: String,
        /// The lab directory (logs are there).
        dir: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state file could not be read or written.
    #[error("lab state {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl LabError {
    /// Wraps an I/O error with what was being done.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}
