//! The Meridian lab: a whole topology as child processes on one machine.
//!
//! - [`topology`]: what to start — regions, nodes, names, ports, configs.
//! - [`state`]: the versioned `lab.json` that records every process, so later
//!   commands (`status`, `kill`, `restart`, `down`) and clients find them.
//! - [`process`]: starting, signalling and reaping processes by PID.
//! - [`wan`]: round trips between regions, the WAN emulator's links, and
//!   partitioning them.
//! - [`lab`]: the [`Lab`] handle tying these together, including readiness waits.
//!
//! Integration tests use the same [`Lab`] as their launcher: a temp dir per lab,
//! ports chosen by the OS, and every child killed when the handle drops.

pub mod error;
pub mod lab;
pub mod process;
pub mod state;
pub mod topology;
pub mod wan;

pub use error::LabError;
pub use lab::{Lab, LabSpec};
pub use state::{LabState, ProcessRecord, ProcessRole};
pub use wan::WanSettings;
