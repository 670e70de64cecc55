//! The shard's error type and how each case maps to a gRPC status.
//!
//! The mapping is part of the API contract (see ARCHITECTURE.md, "Errors"):
//! clients decide whether to retry, redirect or give up from the code alone.

use crate::command::Rejection;
use crate::limits::LimitError;
use tonic::{Code, Status};

use meridian_proto::reason::Reason;
pub use meridian_proto::reason::{
    LEADER_ADDRESS_KEY as LEADER_ADDRESS_HEADER, LEADER_ID_KEY as LEADER_ID_HEADER,
};

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
    /// A backup could not be written, read or verified (INTERNAL; the
    /// message names the object or rule).
    #[error("backup: {0}")]
    Backup(String),
    /// A backup is damaged, incomplete or does not give the digest it
    /// recorded (DATA_LOSS; the message names the object): it cannot be
    /// trusted, so nothing is restored from it.
    #[error("backup: {0}")]
    BackupDamaged(String),
    /// The operation does not apply to this node as configured
    /// (FAILED_PRECONDITION; the message says why).
    #[error("{0}")]
    NotApplicable(String),
    /// Residency: the call would put a namespace's bytes where its rules do
    /// not allow (FAILED_PRECONDITION; the message names the rule).
    #[error("residency: {0}")]
    Residency(String),
    /// The shard's leader holds no current lease from the control plane, so
    /// another region may already have been promoted: writes and strong,
    /// session and bounded reads of the replicated namespace are refused
    /// (UNAVAILABLE; nothing was done).
    #[error(
        "no write lease: namespace {namespace:?} (epoch {epoch} here) is replicated and this shard has not been confirmed as its primary by the control plane recently, so it may have been failed over; writes and strong, session and bounded reads are refused here (nothing was done) — retry, or read eventual"
    )]
    NoLease {
        /// The namespace.
        namespace: String,
        /// Its epoch on this shard.
        epoch: u64,
    },
    /// A digest asked for at a change this copy has not reached within the
    /// wait (UNAVAILABLE; retry).
    #[error(
        "namespace {namespace:?} is at change {at} here, not {wanted}, after waiting {waited_ms} ms"
    )]
    NotYetAt {
        /// The namespace.
        namespace: String,
        /// Where this copy is.
        at: u64,
        /// The change asked for.
        wanted: u64,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A full integrity check found the running content sum a namespace's
    /// record kept different from the one its entries add up to: the
    /// copy's storage or its bookkeeping is damaged (DATA_LOSS).
    #[error(
        "namespace {namespace:?} at change {change_seq}: the running content sum kept with its writes is {kept}, but its entries add up to {scanned}; this copy is damaged (rebuild it from another copy or a backup)"
    )]
    ContentSumMismatch {
        /// The namespace.
        namespace: String,
        /// Its position in the scanned view.
        change_seq: u64,
        /// The sum its record kept.
        kept: String,
        /// The sum recomputed from its entries.
        scanned: String,
    },
    /// A sync namespace has fewer standbys able to confirm writes than its
    /// acknowledgement rule needs: the write is refused before anything is
    /// applied (UNAVAILABLE; nothing was written).
    #[error(
        "namespace {namespace:?} is sync and needs {needed} standby confirmation(s) per write, but only {able} standby(s) can confirm now ({detail}); the write was refused before anything was applied"
    )]
    NoSyncQuorum {
        /// The namespace.
        namespace: String,
        /// Confirmations a write needs.
        needed: usize,
        /// Standbys able to confirm now.
        able: usize,
        /// Which standbys cannot, and why.
        detail: String,
    },
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
    /// A strong, session or bounded read of a sync namespace could see
    /// changes no standby has confirmed yet, and none confirmed them in time
    /// (UNAVAILABLE; nothing was done, retry).
    #[error(
        "namespace {namespace:?} is sync and its standbys have not confirmed its latest changes within {waited_ms} ms, so a strong read could see a write a failover would lose; retry, or read eventual"
    )]
    NotConfirmed {
        /// The namespace.
        namespace: String,
        /// How long the read waited.
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
    /// This copy of the namespace is waiting to be rebuilt from its primary
    /// (a demoted former primary): it serves no reads until then
    /// (FAILED_PRECONDITION: read from the primary).
    #[error(
        "this copy of namespace {namespace:?} (epoch {epoch}) is being rebuilt from its primary and serves no reads until then — read from the primary"
    )]
    Rebuilding {
        /// The namespace.
        namespace: String,
        /// Its epoch here.
        epoch: u64,
    },
    /// Listeners or TLS could not be set up (start-up only).
    #[error(transparent)]
    Net(#[from] meridian_net::NetError),
    /// A session read reached a copy that has not caught up with the
    /// session's token within the wait (UNAVAILABLE, reason
    /// `session-behind`): nothing was read; another copy, or this one
    /// shortly, can serve it.
    #[error(
        "namespace {namespace:?}: this copy does not hold everything the session token saw yet ({missing}); retry, or read from the region that took the session's writes"
    )]
    SessionBehind {
        /// The namespace.
        namespace: String,
        /// Which histories are behind, and by how much.
        missing: String,
    },
    /// This node's clock is surely further from the control plane's than
    /// the bound (UNAVAILABLE, reason `clock-skew`): an active-active write
    /// stamped here would be ordered wrongly, so none is taken; another
    /// region's peer can take it.
    #[error(
        "namespace {namespace:?}: this node's clock is {offset}, beyond max_clock_offset_ms {max_offset_ms}; active-active writes are refused here until its clock is fixed (write through another region)"
    )]
    ClockSkew {
        /// The namespace.
        namespace: String,
        /// The measured offset, as text.
        offset: String,
        /// The bound.
        max_offset_ms: u64,
    },
    /// A bounded read at an active-active peer that has not held another
    /// region's writes within the bound (FAILED_PRECONDITION: loosen the
    /// bound, or read in that region).
    #[error(
        "this peer of namespace {namespace:?} last held all of region {origin}'s writes {} ago and is {behind} of its changes behind; the read's bound is {bound_ms} ms{} — loosen it, or read in {origin}",
        staleness_ms.map_or("never (since this node led)".to_string(), |ms| format!("{ms} ms")),
        if *bound_entries > 0 { format!(" and {bound_entries} changes") } else { String::new() }
    )]
    PeerTooStale {
        /// The namespace.
        namespace: String,
        /// The region whose writes are behind.
        origin: String,
        /// How long ago this peer held all of them.
        staleness_ms: Option<u64>,
        /// Changes of that region not merged here yet (as last reported).
        behind: u64,
        /// The read's bound in ms.
        bound_ms: u64,
        /// The read's bound in changes (0: none).
        bound_entries: u64,
    },
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
                Rejection::OutOfRange { .. }
                | Rejection::NotActiveActive { .. }
                | Rejection::RefusedActiveActive { .. }
                | Rejection::KeyType { .. },
            ) => Code::InvalidArgument,
            ShardError::SessionBehind { .. } | ShardError::ClockSkew { .. } => Code::Unavailable,
            ShardError::Rejected(
                Rejection::NotPrimary { .. }
                | Rejection::StaleEpoch { .. }
                | Rejection::NotStandby { .. },
            ) => Code::FailedPrecondition,
            ShardError::NotLeader { .. } | ShardError::OutcomeUnknown | ShardError::NoQuorum(_) => {
                Code::Unavailable
            }
            ShardError::DiskFull { .. } => Code::ResourceExhausted,
            ShardError::ImportMismatch(_) | ShardError::ContentSumMismatch { .. } => Code::DataLoss,
            ShardError::Storage(_) => Code::Internal,
            ShardError::Raft(_) => Code::Unavailable,
            ShardError::NotApplicable(_) => Code::FailedPrecondition,
            ShardError::Backup(_) => Code::Internal,
            ShardError::BackupDamaged(_) => Code::DataLoss,
            ShardError::Residency(_) => Code::FailedPrecondition,
            ShardError::Net(_) => Code::Internal,
            ShardError::NoLease { .. }
            | ShardError::NotReplicated { .. }
            | ShardError::NotConfirmed { .. }
            | ShardError::NoSyncQuorum { .. }
            | ShardError::NotYetAt { .. } => Code::Unavailable,
            ShardError::LagExceeded { .. } => Code::ResourceExhausted,
            ShardError::TooStale { .. }
            | ShardError::PeerTooStale { .. }
            | ShardError::Rebuilding { .. } => Code::FailedPrecondition,
        }
    }
}

impl ShardError {
    /// The machine-readable reason a caller acts on, for the refusals that
    /// have one. This is the one place shard errors get their reasons.
    pub fn reason(&self) -> Option<Reason> {
        Some(match self {
            ShardError::NotLeader {
                leader_id,
                leader_address,
            } => Reason::NotLeader {
                leader_id: *leader_id,
                leader_address: leader_address.clone(),
            },
            ShardError::NoQuorum(_) | ShardError::NotConfirmed { .. } => Reason::NoQuorum,
            ShardError::OutcomeUnknown | ShardError::NotReplicated { .. } => Reason::OutcomeUnknown,
            ShardError::NoLease { namespace, epoch } => Reason::NoLease {
                namespace: namespace.clone(),
                epoch: *epoch,
            },
            ShardError::NoSyncQuorum { namespace, .. } => Reason::NoSyncQuorum {
                namespace: namespace.clone(),
            },
            ShardError::LagExceeded { namespace, .. } => Reason::RpoExceeded {
                namespace: namespace.clone(),
            },
            ShardError::DiskFull { .. } => Reason::DiskFull,
            ShardError::Rebuilding { namespace, epoch } => Reason::NotPrimary {
                namespace: namespace.clone(),
                epoch: *epoch,
                primary: None,
            },
            ShardError::Rejected(Rejection::NotPrimary { name, epoch }) => Reason::NotPrimary {
                namespace: name.clone(),
                epoch: *epoch,
                primary: None,
            },
            ShardError::Rejected(Rejection::NamespaceNotFound { name }) => {
                Reason::NamespaceNotHere {
                    namespace: name.clone(),
                }
            }
            ShardError::Rejected(Rejection::StaleEpoch { name, current, .. }) => {
                Reason::StaleEpoch {
                    namespace: name.clone(),
                    epoch: *current,
                }
            }
            ShardError::SessionBehind { namespace, .. } => Reason::SessionBehind {
                namespace: namespace.clone(),
            },
            ShardError::ClockSkew { namespace, .. } => Reason::ClockSkew {
                namespace: namespace.clone(),
            },
            ShardError::Rejected(Rejection::KeyType { name, .. }) => Reason::WrongKeyType {
                namespace: name.clone(),
            },
            _ => return None,
        })
    }
}

impl From<ShardError> for Status {
    fn from(error: ShardError) -> Self {
        let mut status = Status::new(error.code(), error.to_string());
        if let Some(reason) = error.reason() {
            reason.attach(&mut status);
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
