//! The Meridian Rust client.
//!
//! - [`Client`]: key-value and admin calls against a shard (or, later, a gateway),
//!   given any of its members' addresses.
//! - [`ClientError`]: what a call can fail with, typed so callers can tell "retry",
//!   "fix your request" and "outcome unknown" apart.
//!
//! - [`lost`]: planning the safe re-application of writes a failover lost.
//!
//! Routing: calls go to the leader. A node that is not the leader answers with a
//! typed `not-leader` reason and the leader's address, which the client follows
//! and remembers. Reads at `eventual` consistency may be answered by any member.
//!
//! Retries: a call is retried only when it certainly did not take effect — the
//! connection was refused, or the server's typed reason says nothing was done
//! (not the leader, no quorum, no lease) — or when it is a read. A write whose
//! connection broke after it was sent fails with [`ClientError::OutcomeUnknown`]
//! rather than risk applying it twice. Decisions read [`Reason`]s, never messages.

mod error;
pub mod lost;
pub mod refusals;
pub mod routes;
mod routing;

pub use error::{ClientError, Reason, Refusal};
pub use meridian_proto::v1 as pb;
pub use routing::{Client, ClientOptions, ReplicationSettings};
