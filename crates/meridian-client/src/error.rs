//! Typed client errors.

use std::time::Duration;
use tonic::{Code, Status};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request broke a limit or a rule; the message names it. Do not retry as is.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The namespace (or other named thing) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing to create already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A limit or quota was hit; retry after the given delay, if any.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        /// What was exhausted.
        message: String,
        /// When to retry, if the server said.
        retry_after: Option<Duration>,
    },
    /// A precondition failed (e.g. a fenced namespace); the message names the
    /// current primary where known.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// No member could serve the call within the retry budget.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but its outcome is unknown (the connection or the leader
    /// was lost before the answer). Read the key to find out.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Data verification failed.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The client was given no usable endpoint.
    #[error("no endpoints: {0}")]
    NoEndpoints(String),
    /// Any other server error.
    #[error("{code:?}: {message}")]
    Other {
        /// gRPC status code.
        code: Code,
        /// Server message.
        message: String,
    },
}

impl ClientError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_) | ClientError::ResourceExhausted { .. }
        )
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ClientError::InvalidArgument(message),
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::ResourceExhausted => {
                let retry_after = status
                    .metadata()
                    .get("retry-after-ms")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_millis);
                ClientError::ResourceExhausted {
                    message,
                    retry_after,
                }
            }
            Code::FailedPrecondition => ClientError::FailedPrecondition(message),
            Code::Unavailable | Code::DeadlineExceeded => ClientError::Unavailable(message),
            Code::DataLoss => ClientError::DataLoss(message),
            code => ClientError::Other { code, message },
        }
    }
}
