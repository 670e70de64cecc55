//! The control plane's error type and its gRPC status mapping.

use crate::command::ControlRejection;
use crate::placement::PlacementError;
use tonic::{Code, Status};

/// Everything a control-plane request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The state refused the command (residency: FAILED_PRECONDITION naming the
    /// rule; bad policy: INVALID_ARGUMENT; unknown: NOT_FOUND; exists:
    /// ALREADY_EXISTS).
    #[error(transparent)]
    Rejected(#[from] ControlRejection),
    /// A malformed request (INVALID_ARGUMENT).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Something the request names does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// A rule refuses the request (FAILED_PRECONDITION; the message names it).
    #[error("{0}")]
    Refused(String),
    /// Not the control-plane leader (UNAVAILABLE with the leader's address).
    #[error("not the control-plane leader{}", leader_hint(.leader_address.as_deref()))]
    NotLeader {
        /// The leader's address, if known.
        leader_address: Option<String>,
    },
    /// Consensus is unavailable (UNAVAILABLE).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// Storage failure (INTERNAL).
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    /// Listeners or TLS could not be set up (start-up only).
    #[error(transparent)]
    Net(#[from] meridian_net::NetError),
    /// The caller's identity may not do this (PERMISSION_DENIED).
    #[error(transparent)]
    Denied(#[from] crate::authz::Denied),
}

fn leader_hint(address: Option<&str>) -> String {
    address
        .map(|a| format!("; the leader is at {a}"))
        .unwrap_or_default()
}

impl ControlError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ControlError::Rejected(ControlRejection::Placement(PlacementError::Residency(_))) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::Placement(PlacementError::InvalidPolicy(
                _,
            ))) => Code::InvalidArgument,
            ControlError::Rejected(ControlRejection::Placement(PlacementError::NoShard {
                ..
            })) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::Placement(
                PlacementError::NotImplemented(_),
            )) => Code::Unimplemented,
            ControlError::Rejected(ControlRejection::NamespaceExists(_)) => Code::AlreadyExists,
            ControlError::Rejected(ControlRejection::NamespaceNotFound(_)) => Code::NotFound,
            ControlError::Rejected(ControlRejection::UnknownRegion(_)) => Code::NotFound,
            ControlError::Rejected(ControlRejection::BeingDeleted { .. }) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::NotAStandby { .. }) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::ShardRegionMismatch { .. }) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::MemberMoved { .. }) => Code::PermissionDenied,
            ControlError::Rejected(ControlRejection::RegionInUse { .. }) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::Location { .. }) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::JobNotFound(_)) => Code::NotFound,
            ControlError::Rejected(ControlRejection::Schedule { .. }) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::NoSchedule(_)) => Code::NotFound,
            ControlError::Rejected(ControlRejection::JobEnded { .. }) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::NameReserved { .. }) => Code::AlreadyExists,
            ControlError::Rejected(ControlRejection::Migration { .. }) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::NotEmpty(_)) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::BadControlBackup { .. }) => {
                Code::FailedPrecondition
            }
            ControlError::Rejected(ControlRejection::Rebuilding(_)) => Code::FailedPrecondition,
            ControlError::Rejected(ControlRejection::Access(err)) => {
                use meridian_access::AccessError as E;
                match err {
                    E::Invalid(_) => Code::InvalidArgument,
                    E::UnknownRole { .. } | E::NotGranted { .. } | E::UnknownToken(_) => {
                        Code::NotFound
                    }
                    E::BuiltIn(_) | E::RoleInUse { .. } => Code::FailedPrecondition,
                    E::Limit { .. } => Code::ResourceExhausted,
                    E::Format(_) => Code::Internal,
                }
            }
            ControlError::Invalid(_) => Code::InvalidArgument,
            ControlError::NotFound(_) => Code::NotFound,
            ControlError::Refused(_) => Code::FailedPrecondition,
            ControlError::NotLeader { .. } | ControlError::Unavailable(_) => Code::Unavailable,
            ControlError::Storage(_) | ControlError::Net(_) => Code::Internal,
            ControlError::Denied(_) => Code::PermissionDenied,
        }
    }
}

impl ControlError {
    /// Whether this refuses putting data outside a namespace's
    /// jurisdictions (counted in `meridian_residency_refusals_total`).
    /// Placement says so by type; backup, schedule and migration rules
    /// word their residency refusals `residency: ...` (dr.rs,
    /// migration.rs), and that prefix is theirs to keep.
    pub fn is_residency_refusal(&self) -> bool {
        match self {
            ControlError::Rejected(ControlRejection::Placement(PlacementError::Residency(_))) => {
                true
            }
            ControlError::Rejected(
                ControlRejection::Location { reason, .. }
                | ControlRejection::Schedule { reason, .. }
                | ControlRejection::Migration { reason, .. },
            ) => reason.starts_with("residency"),
            _ => false,
        }
    }
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        if error.is_residency_refusal() {
            crate::metrics::RESIDENCY_REFUSALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut status = Status::new(error.code(), error.to_string());
        // The one place control-plane errors get their machine-readable reason.
        if let ControlError::NotLeader { leader_address } = &error {
            meridian_proto::reason::Reason::NotLeader {
                leader_id: None,
                leader_address: leader_address.clone(),
            }
            .attach(&mut status);
        }
        status
    }
}

impl From<meridian_raft::read_barrier::BarrierFailure> for ControlError {
    fn from(failure: meridian_raft::read_barrier::BarrierFailure) -> Self {
        use meridian_raft::read_barrier::BarrierFailure;
        match failure {
            BarrierFailure::NotLeader(_, leader_address) => {
                ControlError::NotLeader { leader_address }
            }
            BarrierFailure::NoQuorum(message) | BarrierFailure::Stopped(message) => {
                ControlError::Unavailable(message)
            }
        }
    }
}
