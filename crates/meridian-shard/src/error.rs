//! The shard's error type and how each case maps to a gRPC status.
//!
//! The mapping is part of the API contract (see ARCHITECTURE.md, "Errors"):
//! clients decide whether to retry, redirect or give up from the code alone.

use crate::command::Rejection;
use crate::limits::LimitError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key carrying the leader's node id on a redirect.
pub const LEADER_ID_HEADER: &str = "meridian-leader-id";
/// Metadata key carrying the leader's gRPC address on a redirect.
pub const LEADER_ADDRESS_HEADER: &str = "meridian-leader-address";

/// Everything a shard request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The request breaks a limit or a rule (INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] LimitError),
    /// The state machine refused the command (NOT_FOUND, ALREADY_EXISTS or
    /// RESOURCE_EXHAUSTED depending on the rejection).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// This node is not the leader (UNAVAILABLE, with the leader in metadata when
    /// known). Nothing was written; the call can be sent to the leader.
    #[error("{}", not_leader_message(*.leader_id, .leader_address.as_deref()))]
    NotLeader {
        /// The current leader, if known.
        leader_id: Option<u64>,
        /// Its gRPC address, if known.
        leader_address: Option<String>,
    },
    /// The write may or may not have been applied: leadership changed after it was
    /// proposed (UNAVAILABLE; the client must not blindly retry a non-idempotent
    /// write).
    #[error("leadership changed while the write was in flight; its outcome is unknown")]
    OutcomeUnknown,
    /// No quorum could be reached in time (UNAVAILABLE).
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The data directory is nearly full (RESOURCE_EXHAUSTED); writes resume once
    /// space is freed.
    #[error(
        "data directory has {free_bytes} bytes free, below limits.min_free_disk_bytes = {min_free_bytes}; writes are refused until space is freed"
    )]
    DiskFull {
        /// Bytes free now.
        free_bytes: u64,
        /// The configured floor.
        min_free_bytes: u64,
    },
    /// An import's contents did not match its trailer (DATA_LOSS).
    #[error("import verification failed: {0}")]
    ImportMismatch(String),
    /// Storage failed (INTERNAL); the node may need attention.
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    /// Raft stopped or failed (UNAVAILABLE).
    #[error("raft unavailable: {0}")]
    Raft(String),
    /// The shard's leader holds no write lease from the control plane, so it
    /// may have been failed over: writes to replicated namespaces wait
    /// (UNAVAILABLE; nothing was written).
    #[error(
        "no write lease: this shard has not been confirmed by the control plane recently, so writes to replicated namespaces are paused (it may have been failed over); nothing was written"
    )]
    NoLease,
    /// A sync namespace's write committed in the primary region, but no standby
    /// confirmed it in time: it is not acknowledged (UNAVAILABLE; outcome
    /// unknown, as a failover may or may not keep it).
    #[error(
        "write committed in the primary region but no standby confirmed it within {waited_ms} ms; namespace {namespace:?} is sync, so the write is not acknowledged (outcome unknown)"
    )]
    NotReplicated {
        /// The namespace.
        namespace: String,
        /// How long the primary waited.
        waited_ms: u64,
    },
    /// The RPO gate: a standby is further behind than the namespace's
    /// `max_lag` (RESOURCE_EXHAUSTED; nothing was written).
    #[error(
        "namespace {namespace:?}: standby {standby} is {entries} changes and {seconds:.1} s behind; max_lag is {limit} — writes are refused until it catches up (nothing was written)"
    )]
    LagExceeded {
        /// The namespace.
        namespace: String,
        /// The lagging standby (shard and region).
        standby: String,
        /// Changes behind.
        entries: u64,
        /// Age of its oldest unconfirmed change.
        seconds: f64,
        /// The bound, as configured.
        limit: String,
    },
    /// A bounded read at a standby that was not current within the bound
    /// (FAILED_PRECONDITION: read from the primary instead).
    #[error(
        "the standby copy of namespace {namespace:?} was last known current {} ago; the read's bound is {bound_ms} ms — read from the primary",
        staleness_ms.map_or("never".to_string(), |ms| format!("{ms} ms"))
    )]
    TooStale {
        /// The namespace.
        namespace: String,
        /// How long ago it was known current (`None`: never since this node led).
        staleness_ms: Option<u64>,
        /// The read's bound.
        bound_ms: u64,
    },
    /// Listeners or TLS could not be set up (start-up only).
    #[error(transparent)]
    Net(#[from] meridian_net::NetError),
}

fn not_leader_message(leader_id: Option<u64>, address: Option<&str>) -> String {
    match (leader_id, address) {
        (Some(id), Some(address)) => {
            format!("not the leader; the leader is node {id} at {address}")
        }
        (Some(id), None) => format!("not the leader; the leader is node {id}"),
        _ => "not the leader, and no leader is known yet (election in progress); retry shortly"
            .into(),
    }
}

impl ShardError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ShardError::Invalid(_) => Code::InvalidArgument,
            ShardError::Rejected(Rejection::NamespaceNotFound { .. }) => Code::NotFound,
            ShardError::Rejected(Rejection::NamespaceExists { .. }) => Code::AlreadyExists,
            ShardError::Rejected(Rejection::TooManyNamespaces { .. }) => Code::ResourceExhausted,
            ShardError::Rejected(
                Rejection::NotPrimary { .. }
                | Rejection::StaleEpoch { .. }
                | Rejection::NotStandby { .. },
            ) => Code::FailedPrecondition,
            ShardError::NotLeader { .. } | ShardError::OutcomeUnknown | ShardError::NoQuorum(_) => {
                Code::Unavailable
            }
            ShardError::DiskFull { .. } => Code::ResourceExhausted,
            ShardError::ImportMismatch(_) => Code::DataLoss,
            ShardError::Storage(_) => Code::Internal,
            ShardError::Raft(_) => Code::Unavailable,
            ShardError::Net(_) => Code::Internal,
            ShardError::NoLease | ShardError::NotReplicated { .. } => Code::Unavailable,
            ShardError::LagExceeded { .. } => Code::ResourceExhausted,
            ShardError::TooStale { .. } => Code::FailedPrecondition,
        }
    }
}

impl From<ShardError> for Status {
    fn from(error: ShardError) -> Self {
        let mut status = Status::new(error.code(), error.to_string());
        if let ShardError::NotLeader {
            leader_id,
            leader_address,
        } = &error
        {
            if let Some(id) = leader_id {
                status
                    .metadata_mut()
                    .insert(LEADER_ID_HEADER, MetadataValue::from(*id));
            }
            if let Some(address) = leader_address
                && let Ok(value) = address.parse()
            {
                status.metadata_mut().insert(LEADER_ADDRESS_HEADER, value);
            }
        }
        status
    }
}

impl From<meridian_raft::read_barrier::BarrierFailure> for ShardError {
    fn from(failure: meridian_raft::read_barrier::BarrierFailure) -> Self {
        use meridian_raft::read_barrier::BarrierFailure;
        match failure {
            BarrierFailure::NotLeader(leader_id, leader_address) => ShardError::NotLeader {
                leader_id,
                leader_address,
            },
            BarrierFailure::NoQuorum(message) => ShardError::NoQuorum(message),
            BarrierFailure::Stopped(message) => ShardError::Raft(message),
        }
    }
}
