//! Meridian's control plane: the single source of truth for where every namespace
//! lives and how to reach it.
//!
//! - [`model`]: regions, shards, namespaces and their placement policies, routes,
//!   audit records — the control plane's data.
//! - [`residency`]: the residency rule, as a pure check with named violations.
//! - [`placement`]: choosing a shard for a namespace, as a pure decision.
//! - [`command`]: the changes replicated through the control plane's Raft log.
//! - [`state`]: applying commands to the in-memory state (pure, deterministic).
//! - [`node`], [`service`], [`server`]: a running member — request logic, the
//!   `meridian.v1.Control` gRPC service (including `WatchRoutes`), health.
//! - [`failover`]: the leader's health probes, write leases and automatic
//!   failover of active-passive namespaces.
//! - [`lease`]: lease accounting (every grant counted from its send time).
//! - [`promotion`]: the sync rule and the choice of a promotion target.
//! - [`deletion`]: deleting every copy of a deleted namespace, resumably.
//! - [`route_log`]: which routes changed at each recent version (route deltas).
//! - [`admin_http`]: the JSON admin API, its OpenAPI document and the web
//!   console (`/console`, one embedded page drawing the JSON routes).
//! - [`cluster_view`]: the live view of shards the console shows (Raft roles,
//!   standby positions), asked of the shards at request time.
//! - [`config`], [`error`]: configuration and the error-to-status mapping.
//! - [`state_machine`]: the Raft [`Application`](meridian_raft::Application) that
//!   persists the state and feeds it commands.
//!
//! Decisions (residency, placement) are pure functions over the state, tested with
//! tables of cases; the state machine only stores their outcome.

pub mod admin_http;
pub mod audit;
pub mod authz;
pub mod backups;
pub mod cluster_view;
pub mod command;
pub mod config;
pub mod control_backup;
pub mod deletion;
pub mod dr;
pub mod error;
pub mod failover;
pub mod jobs;
pub mod lease;
pub mod metrics;
pub mod migrate_job;
pub mod migration;
pub mod model;
pub mod node;
pub mod placement;
pub mod promotion;
pub mod rebuild;
pub mod rebuild_job;
pub mod residency;
pub mod route_log;
pub mod server;
pub mod service;
pub mod state;
pub mod state_machine;

pub use command::{ControlCommand, ControlResult};
pub use model::{NamespaceMode, PlacementPolicy, Region};
pub use residency::ResidencyViolation;
pub use state::ControlState;
