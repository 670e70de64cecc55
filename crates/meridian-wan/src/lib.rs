//! WAN emulation for the lab. This machine has no `netem`, so latency between
//! regions is added in user space: every directed link between two regions is a
//! TCP proxy that delivers each chunk of bytes a fixed one-way delay after it
//! arrived, in order, without waiting for earlier chunks to be acknowledged
//! (so throughput is not capped by the delay, as on a real long fat pipe).
//!
//! - [`link`]: one proxied link — listener, per-connection pumps, partition state.
//! - [`control`]: the small HTTP API the lab uses to list, partition and heal links
//!   of a running emulator process.
//! - [`server`]: the `meridian wan` process: its configuration and run loop.
//!
//! A partition pauses a link the way a real network partition pauses TCP: bytes
//! stop flowing (senders block once buffers fill, and their timeouts fire), new
//! connections are accepted but not connected onwards; on heal, everything resumes.

pub mod control;
pub mod link;
pub mod server;

pub use link::{Link, LinkSpec, LinkStatus};
pub use server::WanConfig;

/// Errors of the WAN emulator.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A listener could not be opened.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is unusable.
    #[error("invalid WAN configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No link has that name.
    #[error("no link named {0:?}")]
    UnknownLink(String),
}
