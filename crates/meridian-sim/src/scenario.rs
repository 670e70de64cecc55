//! What a seed decides before the run starts: the namespace's mode and
//! standbys, the clocks' offsets and how long faults last.

use crate::rng::Rng;
use serde::Serialize;

/// One run's set-up.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// The seed everything derives from.
    pub seed: u64,
    /// Sync mode (else async).
    pub sync: bool,
    /// The namespace's standby regions (its primary starts in region 0).
    pub standbys: Vec<usize>,
    /// Each region's wall-clock offset from the control plane's (within the
    /// clock assumption).
    pub clock_offset_ms: [i64; 4],
    /// Clients per region.
    pub clients_per_region: usize,
    /// Faults happen until then; then every link heals and every process runs.
    pub faults_until_ms: u64,
    /// Clients start no new operation after this.
    pub clients_until_ms: u64,
    /// The run ends then.
    pub end_ms: u64,
}

impl Scenario {
    /// The scenario of `seed`.
    pub fn of(seed: u64) -> Self {
        // A generator of its own, so the set-up does not shift the run's draws.
        let mut rng = Rng::new(seed ^ 0x5EED_5CE7_A510);
        let sync = rng.chance(0.5);
        let standbys = if rng.chance(0.6) {
            vec![1, 2]
        } else {
            vec![1 + rng.index(2)]
        };
        let bound = crate::world::config::MAX_CLOCK_OFFSET_MS as i64;
        let mut clock_offset_ms = [0; 4];
        for offset in &mut clock_offset_ms {
            *offset = rng.range(0, 2 * bound as u64) as i64 - bound;
        }
        let faults_until_ms = rng.range(20_000, 35_000);
        Self {
            seed,
            sync,
            standbys,
            clock_offset_ms,
            clients_per_region: 2,
            faults_until_ms,
            clients_until_ms: faults_until_ms + 14_000,
            end_ms: faults_until_ms + 20_000,
        }
    }
}
