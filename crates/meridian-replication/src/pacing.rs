//! When a shipper puts its next batch on the wire (pure).
//!
//! Two things pull in opposite directions: a change should leave as soon as
//! it is logged (lag), and every batch costs the receiver one Raft command
//! (CPU, on a machine that is also taking its own region's writes). The
//! earlier rule, "send whatever is new whenever fewer than 8 batches are in
//! flight", did both badly under load: a busy log filled the 8 slots with
//! one-change batches within a few milliseconds, then every change logged
//! during the next WAN round trip waited for a slot to free — up to a whole
//! round trip on top of the one-way delay (measured: convergence lag p99
//! 160–190 ms against 40 ms one-way at 5,000 writes/s).
//!
//! The rule now: an idle pipe sends at once (a lone write pays nothing);
//! while batches are in flight, changes gather for at most [`GATHER`] since
//! the last send (a batch at most every few milliseconds, each carrying
//! what arrived meanwhile), or go at once when a full batch is waiting. The
//! pipe is deep enough ([`MAX_IN_FLIGHT`]) to cover a long round trip at
//! that pace, so a slot is normally free; when it is not, the receiver is
//! the bottleneck and the batches simply grow.

use crate::wire::MAX_BATCH_CHANGES;
use std::time::Duration;

/// Batches on the wire to one receiver at once: a WAN round trip plus the
/// receiver's commit (100–200 ms under load) at one batch per [`GATHER`],
/// with room to spare; few enough that a stalled receiver does not pile up
/// unbounded work (each batch is at most `MAX_BATCH_CHANGES` changes).
pub const MAX_IN_FLIGHT: usize = 64;

/// Longest a change waits for company while other batches are in flight.
pub const GATHER: Duration = Duration::from_millis(3);

/// What the shipper does with the changes not yet on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to send.
    Idle,
    /// Put a batch on the wire now.
    SendNow,
    /// Let changes gather; look again after this long.
    GatherFor(Duration),
    /// The pipe is full: wait for an answer.
    PipeFull,
}

/// Decides from the pipe's state: `in_flight` batches on the wire,
/// `waiting` changes logged but not sent, `since_last_send` since the last
/// batch left. A full batch ([`MAX_BATCH_CHANGES`] changes) cannot grow, so
/// it does not wait.
pub fn next(in_flight: usize, waiting: u64, since_last_send: Duration) -> Next {
    if waiting == 0 {
        Next::Idle
    } else if in_flight >= MAX_IN_FLIGHT {
        Next::PipeFull
    } else if in_flight == 0 || waiting >= MAX_BATCH_CHANGES as u64 || since_last_send >= GATHER {
        Next::SendNow
    } else {
        Next::GatherFor(GATHER - since_last_send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacing_table() {
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let rows = [
            // (in flight, waiting, since last send, expected, why)
            (0, 0, ms(0), Next::Idle, "nothing logged"),
            (5, 0, ms(9), Next::Idle, "nothing new, however long ago"),
            (0, 1, ms(0), Next::SendNow, "an idle pipe sends a lone write at once"),
            (3, 1, ms(0), Next::GatherFor(ms(3)), "just sent: gather"),
            (3, 40, ms(1), Next::GatherFor(ms(2)), "gather until 3 ms after the last send"),
            (3, 40, ms(3), Next::SendNow, "gathered long enough"),
            (3, 1_024, ms(0), Next::SendNow, "a full batch does not wait"),
            (MAX_IN_FLIGHT - 1, 5, ms(4), Next::SendNow, "the last free slot"),
            (MAX_IN_FLIGHT, 5_000, ms(50), Next::PipeFull, "no slot: wait for an answer"),
        ];
        for (in_flight, waiting, since, expected, why) in rows {
            assert_eq!(
                next(in_flight, waiting, since),
                expected,
                "{why}: in flight {in_flight}, waiting {waiting}, {since:?} since the last send"
            );
        }
    }
}
