//! Typed client errors.

pub use meridian_proto::reason::Reason;
use std::time::Duration;
use tonic::{Code, Status};

/// A server's refusal: its message for people and, when it carries one, the
/// machine-readable [`Reason`] programs act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The server's message (for people; never parsed).
    pub message: String,
    /// Why, in a form to act on.
    pub reason: Option<Reason>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal {
            message,
            reason: None,
        }
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request broke a limit or a rule; the message names it (and the
    /// reason, for the rules that have one: `wrong-key-type`). Do not retry
    /// as is.
    #[error("invalid request: {0}")]
    InvalidArgument(Refusal),
    /// The namespace (or other named thing) does not exist (a shard that
    /// no longer holds a copy says so with a reason: the route is stale).
    #[error("not found: {0}")]
    NotFound(Refusal),
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
        /// Why, when the server said.
        reason: Option<Reason>,
    },
    /// A precondition failed (e.g. a fenced namespace); the message names the
    /// current primary where known.
    #[error("failed precondition: {0}")]
    FailedPrecondition(Refusal),
    /// No member could serve the call within the retry budget.
    #[error("unavailable: {0}")]
    Unavailable(Refusal),
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
    /// The caller has no usable identity, or its API token is unknown,
    /// revoked or expired. Do not retry with the same credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's identity lacks a permission; the message names the
    /// identity and what it lacks. Do not retry without a new grant.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
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

    /// The machine-readable reason: the server's, when it gave one, and
    /// `outcome-unknown` for a write whose fate this client does not know.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ClientError::FailedPrecondition(refusal)
            | ClientError::Unavailable(refusal)
            | ClientError::NotFound(refusal)
            | ClientError::InvalidArgument(refusal) => refusal.reason.clone(),
            ClientError::ResourceExhausted { reason, .. } => reason.clone(),
            ClientError::OutcomeUnknown(_) => Some(Reason::OutcomeUnknown),
            _ => None,
        }
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
            ClientError::Unauthenticated(_) => Code::Unauthenticated,
            ClientError::PermissionDenied(_) => Code::PermissionDenied,
            ClientError::Other { code, .. } => *code,
        };
        let message = match &error {
            ClientError::AlreadyExists(m)
            | ClientError::DataLoss(m)
            | ClientError::Unauthenticated(m)
            | ClientError::PermissionDenied(m) => m.clone(),
            ClientError::FailedPrecondition(refusal)
            | ClientError::NotFound(refusal)
            | ClientError::InvalidArgument(refusal) => refusal.message.clone(),
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
        // The reason travels on, so the original caller can act on it too.
        if let Some(reason) = error.reason() {
            reason.attach(&mut status);
        }
        status
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        let reason = Reason::of(&status);
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                ClientError::InvalidArgument(Refusal { message, reason })
            }
            Code::NotFound => ClientError::NotFound(Refusal { message, reason }),
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
                    reason,
                }
            }
            Code::FailedPrecondition => {
                ClientError::FailedPrecondition(Refusal { message, reason })
            }
            Code::Unavailable | Code::DeadlineExceeded => {
                ClientError::Unavailable(Refusal { message, reason })
            }
            Code::DataLoss => ClientError::DataLoss(message),
            Code::Unauthenticated => ClientError::Unauthenticated(message),
            Code::PermissionDenied => ClientError::PermissionDenied(message),
            code => ClientError::Other { code, message },
        }
    }
}
