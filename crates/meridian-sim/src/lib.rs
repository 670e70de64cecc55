//! A seeded, deterministic simulation of Meridian's failover protocol.
//!
//! One run is a small topology — a control-plane leader, three regions
//! holding a replicated namespace (primary and one or two standbys, sync or
//! async), a fourth region outside its jurisdictions, a gateway per region
//! and clients — driven through random partitions, delays, message loss and
//! crashes, all drawn from one seed. The decisions are the real ones: lease
//! accounting (`meridian_control::lease`), the promotion choice
//! (`meridian_control::promotion`), the lease a shard takes
//! (`meridian_shard::lease`), the sync rule (`meridian_replication::sync_rule`),
//! and every replica is the real shard state machine on real storage. Time
//! and the network are simulated, so a seed replays exactly.
//!
//! - [`scenario`]: what a seed decides up front.
//! - [`world`]: processes, network, time, the event loop.
//! - [`control`], [`shard`], [`clients`]: what each process does.
//! - [`faults`]: what goes wrong.
//! - [`invariants`]: what must hold after every run.
//!
//! What it does not cover: Raft inside a shard (openraft's own tests, and
//! the real-process tests in `tests/`), the gRPC runtime, and the control
//! plane's own replication (its leader is one process whose crash starts a
//! new term with an empty lease ledger).

mod clients;
mod control;
mod faults;
mod fork;
mod invariants;
pub mod rng;
pub mod scenario;
mod shard;
mod world;

pub use invariants::{Stats, Violation};
pub use scenario::Scenario;

use serde::Serialize;

/// Errors that stop a run (not invariant violations: those are results).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Storage for the simulated replicas failed.
    #[error("simulation storage: {0}")]
    Storage(#[from] std::io::Error),
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's set-up (from its seed).
    pub scenario: Scenario,
    /// Counts.
    pub stats: Stats,
    /// Broken invariants (empty: the run passed).
    pub violations: Vec<Violation>,
    /// Faults, failovers and role changes, in order.
    pub trace: Vec<String>,
}

/// How to run a seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Keep every message in the trace.
    pub verbose: bool,
    /// Use the fork rule from before failovers reported their takeovers
    /// (only a former primary cut back, to the position the promotion was
    /// decided on): the checks must catch it.
    pub legacy_fork: bool,
}

/// Runs the simulation of `seed` (storage in a scratch directory, on tmpfs
/// when there is one); `verbose` keeps every message in the trace.
pub fn run(seed: u64, verbose: bool) -> Result<Report, SimError> {
    run_with(
        seed,
        Options {
            verbose,
            ..Options::default()
        },
    )
}

/// Runs the simulation of `seed` with `options`.
pub fn run_with(seed: u64, options: Options) -> Result<Report, SimError> {
    let verbose = options.verbose;
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("meridian-sim-")
            .tempdir_in(shm)?
    } else {
        tempfile::Builder::new().prefix("meridian-sim-").tempdir()?
    };
    let scenario = Scenario::of(seed);
    let mut world = world::World::new(scenario.clone(), dir.path())?;
    world.verbose = verbose;
    world.legacy_fork = options.legacy_fork;
    world.run()?;
    let (violations, stats) = world.check()?;
    Ok(Report {
        scenario,
        stats,
        violations,
        trace: std::mem::take(&mut world.trace),
    })
}
