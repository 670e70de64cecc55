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

impl From<ClientError> for Status {
    /// Turns a client error back into a status, for servers that forward calls
    /// (the gateway): the code keeps its meaning for the original caller.
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::InvalidArgument(_) => Code::InvalidArgument,
            ClientError::NotFound(_) => Code::NotFound,
            ClientError::AlreadyExists(_) => Code::AlreadyExists,
            ClientError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ClientError::FailedPrecondition(_) => Code::FailedPrecondition,
            ClientError::Unavailable(_)
            | ClientError::OutcomeUnknown(_)
            | ClientError::NoEndpoints(_) => Code::Unavailable,
            ClientError::DataLoss(_) => Code::DataLoss,
            ClientError::Other { code, .. } => *code,
        };
        let message = match &error {
            ClientError::InvalidArgument(m)
            | ClientError::NotFound(m)
            | ClientError::AlreadyExists(m)
            | ClientError::FailedPrecondition(m)
            | ClientError::DataLoss(m) => m.clone(),
            ClientError::ResourceExhausted { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut status = Status::new(code, message);
        if let ClientError::ResourceExhausted {
            retry_after: Some(after),
            ..
        } = &error
            && let Ok(value) = after.as_millis().to_string().parse()
        {
            status.metadata_mut().insert("retry-after-ms", value);
        }
        status
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
