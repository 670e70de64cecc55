//! Where a standby copy's history leaves the namespace's current one: the
//! `fork_seq` the control plane sends with a standby's desired role.

use crate::world::Move;

/// The fork point sent to standby `shard` (as `desired_by_shard` computes it):
/// the position its successor was promoted at, if `shard` was a primary that
/// failed over; 0 otherwise.
pub fn fork_seq(moves: &[Move], shard: usize) -> u64 {
    moves
        .iter()
        .rev()
        .find(|m| m.from == shard)
        .map_or(0, |m| m.promoted_seq)
}
