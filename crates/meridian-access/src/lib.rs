//! Who may do what in Meridian.
//!
//! - [`policy`]: the replicated access policy — custom roles, grants of a role
//!   to an identity over a scope of namespaces, API tokens (stored hashed) and
//!   revoked identities — and the changes an administrator makes to it. The
//!   control plane keeps it in its Raft state and pushes it to every gateway
//!   and node with the routing table, so no call needs a round trip to decide.
//! - [`decision`]: the pure decision every server applies to every call
//!   ([`decision::decide`]), table-tested.
//! - [`residency`]: the rule deciding whether a region or a backup location
//!   may hold a namespace's bytes.
//! - [`token`]: the bearer-token format (`mrdt_ID_SECRET`) and its hashing.
//! - [`caller`]: the caller of a gRPC or HTTP call (certificate identity or bearer token)
//!   and refusals as `tonic::Status` or HTTP status codes.
//!
//! In plain text nobody is authenticated, so nothing can be refused: a cluster
//! without `[network.tls]` has no access control (servers say so at start).

pub mod caller;
pub mod decision;
pub mod policy;
pub mod residency;
pub mod token;

pub use decision::{Caller, Refusal, Target, decide};

/// Milliseconds since the Unix epoch: the `now` servers pass to [`decide`]
/// (token expiry) and stamp refused calls with.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
pub use policy::{AccessChange, AccessPolicy, Grant, Permission, Scope};

/// Why an access change or an encoded policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AccessError {
    /// A name or value breaks a rule (the message names it).
    #[error("{0}")]
    Invalid(String),
    /// No such role.
    #[error("unknown role {name:?}; roles: {known}")]
    UnknownRole {
        /// The role asked for.
        name: String,
        /// The roles there are.
        known: String,
    },
    /// Built-in roles cannot be redefined or deleted.
    #[error("role {0:?} is built in and cannot be changed or deleted")]
    BuiltIn(String),
    /// A role still granted or held by tokens cannot be deleted.
    #[error("role {role:?} is still in use by {users}; revoke those first")]
    RoleInUse {
        /// The role.
        role: String,
        /// Who holds it.
        users: String,
    },
    /// A revoke of a grant that does not exist.
    #[error("{identity} has no grant of {role} on {scope}; its grants: {has}")]
    NotGranted {
        /// The identity.
        identity: String,
        /// The role.
        role: String,
        /// The scope.
        scope: String,
        /// What it holds.
        has: String,
    },
    /// No such token.
    #[error("no token with id {0:?}")]
    UnknownToken(String),
    /// A table is full.
    #[error("too many {what}: the limit is {limit}")]
    Limit {
        /// What.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// Stored or pushed policy bytes that cannot be read.
    #[error("access policy: {0}")]
    Format(String),
}
