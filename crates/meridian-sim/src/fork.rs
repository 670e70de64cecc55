//! The legacy `fork_seq` the control plane still sends with a standby's
//! desired role (for shards from before takeovers were reported; copies now
//! compute their fork point with `meridian_shard::fork`).

use crate::world::Move;

/// The legacy fork point sent to standby `shard` (as `desired_by_shard`
/// computes it):
/// the position its successor was promoted at, if `shard` was a primary that
/// failed over; 0 otherwise.
pub fn fork_seq(moves: &[Move], shard: usize) -> u64 {
    moves
        .iter()
        .rev()
        .find(|m| m.from == shard)
        .map_or(0, |m| m.promoted_seq)
}
