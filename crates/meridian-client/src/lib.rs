//! The Meridian Rust client.
//!
//! - [`Client`]: key-value and admin calls against a shard (or, later, a gateway),
//!   given any of its members' addresses.
//! - [`ClientError`]: what a call can fail with, typed so callers can tell "retry",
//!   "fix your request" and "outcome unknown" apart.
//!
//! Routing: calls go to the leader. A node that is not the leader answers with the
//! leader's address (metadata `meridian-leader-address`), which the client follows
//! and remembers. Reads at `eventual` consistency may be answered by any member.
//!
//! Retries: a call is retried on another member only when it certainly did not take
//! effect — the connection was refused, or the server said it is not the leader —
//! or when it is a read. A write whose connection broke after it was sent fails with
//! [`ClientError::OutcomeUnknown`] rather than risk applying it twice.

mod error;
pub mod routes;
mod routing;

pub use error::{ClientError, Reason, Refusal};
pub use meridian_proto::v1 as pb;
pub use routing::{Client, ClientOptions, ReplicationSettings};
