//! Checks that prove Meridian's guarantees from the outside.
//!
//! - [`history`]: recording a history — every call's invocation, completion
//!   and outcome (done, refused, value read, or unknown) — from many clients.
//! - [`linearizability`]: deciding whether a recorded history is linearizable
//!   (per key, against a register), with an explanation when it is not.
//!
//! Real-process tests record what clients saw while nodes are killed and
//! regions partitioned, then assert [`linearizability::check`] finds no
//! violation; the checker itself is shown to reject known-bad histories.

pub mod history;
pub mod linearizability;

pub use history::{Input, Operation, Output, Recorder};
pub use linearizability::{Verdict, check};
