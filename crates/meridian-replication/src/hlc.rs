//! Hybrid logical clocks (pure): stamps that follow physical time closely,
//! never go backwards, and order every write after everything its region
//! had seen when it was made.
//!
//! A stamp is (wall milliseconds, logical counter). A region's clock takes
//! the larger of its physical time and the last stamp it issued or saw, and
//! counts up the logical part while the wall part stands still. Remote
//! stamps move the clock forward — unless they are further ahead of this
//! node's physical time than the configured bound (`max_clock_offset_ms`):
//! such a stamp is *flagged* (the change is kept and merged as stamped, and
//! counted) but does not drag this clock, and so every other region's,
//! into the future. A later local write of the same key still wins, because
//! a local write is stamped after the key's current stamp (see
//! [`Clock::stamp_after`]), not merely after the clock.

use serde::{Deserialize, Serialize};

/// One hybrid-logical-clock reading.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (physical part).
    pub wall_ms: u64,
    /// Counts events within one wall millisecond.
    pub logical: u32,
}

impl Timestamp {
    /// The smallest stamp greater than this one.
    pub fn next(self) -> Timestamp {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp {
                wall_ms: self.wall_ms,
                logical,
            },
            // 4 billion events in one millisecond: borrow the next one.
            None => Timestamp {
                wall_ms: self.wall_ms.saturating_add(1),
                logical: 0,
            },
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:04}", self.wall_ms, self.logical)
    }
}

/// What observing a remote stamp did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Within the bound: the clock is at least the remote stamp now.
    Within,
    /// Further ahead of this node's physical time than the bound: the
    /// change is kept and merged as stamped, but flagged, and the clock
    /// did not follow it.
    Flagged {
        /// How far ahead of this node's physical time it was.
        ahead_ms: u64,
    },
}

/// A region's hybrid logical clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    last: Timestamp,
    max_offset_ms: u64,
}

impl Clock {
    /// A clock that has issued or seen nothing after `last` (restored from
    /// storage after a restart), with the bound on remote stamps.
    pub fn new(last: Timestamp, max_offset_ms: u64) -> Self {
        Self {
            last,
            max_offset_ms,
        }
    }

    /// The last stamp issued or taken in.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A stamp for a local event at physical time `physical_ms`: after
    /// every stamp issued or seen, and at least the physical time.
    pub fn tick(&mut self, physical_ms: u64) -> Timestamp {
        self.last = if physical_ms > self.last.wall_ms {
            Timestamp {
                wall_ms: physical_ms,
                logical: 0,
            }
        } else {
            self.last.next()
        };
        self.last
    }

    /// A stamp for a local write over a value stamped `current`: after the
    /// clock *and* after `current`, so a write made after a value was seen
    /// always wins over it (even over a flagged, future-stamped one).
    pub fn stamp_after(&mut self, physical_ms: u64, current: Option<Timestamp>) -> Timestamp {
        let ticked = self.tick(physical_ms);
        match current {
            Some(current) if current >= ticked => {
                let stamp = current.next();
                // The clock itself only follows stamps within the bound.
                if self.observe(stamp, physical_ms) == Observed::Within {
                    self.last = self.last.max(stamp);
                }
                stamp
            }
            _ => ticked,
        }
    }

    /// Takes in a remote stamp at physical time `physical_ms`.
    pub fn observe(&mut self, remote: Timestamp, physical_ms: u64) -> Observed {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > self.max_offset_ms {
            return Observed::Flagged { ahead_ms };
        }
        self.last = self.last.max(remote);
        Observed::Within
    }
}

/// A clock offset measured over one round trip: the other clock's reading
/// against the middle of the round trip here, give or take half of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// How far the measured clock is ahead (negative: behind), in ms.
    pub ms: i64,
    /// Half the round trip: the true offset is within `ms` ± this.
    pub uncertainty_ms: u64,
}

impl Offset {
    /// The offset of a clock that read `their_unix_ms` while answering a
    /// request sent at `sent_unix_ms` here and answered `round_trip_ms`
    /// later.
    pub fn measure(their_unix_ms: u64, sent_unix_ms: u64, round_trip_ms: u64) -> Offset {
        let half = round_trip_ms / 2;
        let middle = sent_unix_ms.saturating_add(half);
        let ms = i64::try_from(i128::from(their_unix_ms) - i128::from(middle)).unwrap_or(
            if their_unix_ms > middle {
                i64::MAX
            } else {
                i64::MIN
            },
        );
        Offset {
            ms,
            uncertainty_ms: half,
        }
    }

    /// Whether the clock is surely further than `max_ms` from the reference:
    /// even the most favourable reading within the uncertainty is past it.
    pub fn beyond(&self, max_ms: u64) -> bool {
        self.ms.unsigned_abs().saturating_sub(self.uncertainty_ms) > max_ms
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.ms >= 0 { "ahead of" } else { "behind" };
        write!(
            f,
            "{} ms (± {} ms) {side} the control plane's clock",
            self.ms.unsigned_abs(),
            self.uncertainty_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(wall_ms: u64, logical: u32) -> Timestamp {
        Timestamp { wall_ms, logical }
    }

    #[test]
    fn offsets_are_measured_against_the_middle_of_the_round_trip() {
        // (their clock, sent here, round trip, offset, beyond a 250 ms bound)
        let cases = [
            (1_050, 1_000, 100, 0, false),
            (1_350, 1_000, 100, 300, false),
            (1_401, 1_000, 100, 351, true),
            (750, 1_000, 100, -300, false),
            (699, 1_000, 100, -351, true),
            (5_000, 1_000, 0, 4_000, true),
        ];
        for (theirs, sent, rtt, ms, beyond) in cases {
            let offset = Offset::measure(theirs, sent, rtt);
            assert_eq!(offset.ms, ms, "{theirs} {sent} {rtt}");
            assert_eq!(offset.uncertainty_ms, rtt / 2);
            assert_eq!(offset.beyond(250), beyond, "{offset}");
        }
        assert_eq!(Offset::measure(u64::MAX, 0, 0).ms, i64::MAX);
        assert_eq!(Offset::measure(0, u64::MAX, 0).ms, i64::MIN);
        assert!(Offset::measure(0, u64::MAX, 0).beyond(250));
    }

    #[test]
    fn stamps_never_go_backwards_and_follow_physical_time() {
        // (physical time of each tick, expected stamp)
        let cases = [
            (100, ts(100, 0)),
            (100, ts(100, 1)),
            // The physical clock stepped back: the logical part counts on.
            (90, ts(100, 2)),
            (101, ts(101, 0)),
        ];
        let mut clock = Clock::new(Timestamp::default(), 250);
        for (physical, expected) in cases {
            assert_eq!(clock.tick(physical), expected, "at {physical}");
        }
        // Restored after a restart: after what was issued before.
        let mut restored = Clock::new(ts(500, 7), 250);
        assert_eq!(restored.tick(400), ts(500, 8));
        // The logical part never wraps.
        assert_eq!(ts(5, u32::MAX).next(), ts(6, 0));
    }

    #[test]
    fn remote_stamps_within_the_bound_move_the_clock_and_others_are_flagged() {
        // (remote stamp, physical time, verdict, clock after)
        let cases = [
            (ts(1_200, 3), 1_000, Observed::Within, ts(1_200, 3)),
            (ts(1_250, 0), 1_000, Observed::Within, ts(1_250, 0)),
            (
                ts(1_251, 0),
                1_000,
                Observed::Flagged { ahead_ms: 251 },
                ts(1_000, 0),
            ),
            (ts(10, 0), 1_000, Observed::Within, ts(1_000, 0)),
        ];
        for (remote, physical, verdict, after) in cases {
            let mut clock = Clock::new(ts(1_000, 0), 250);
            assert_eq!(clock.observe(remote, physical), verdict, "{remote}");
            assert_eq!(clock.last(), after, "{remote}");
        }
    }

    #[test]
    fn a_local_write_wins_over_the_value_it_overwrites_even_a_future_one() {
        let mut clock = Clock::new(ts(1_000, 0), 250);
        // A value stamped an hour ahead (a skewed peer): flagged, and the
        // clock stays where it was...
        let future = ts(1_000 + 3_600_000, 0);
        assert!(matches!(
            clock.observe(future, 1_000),
            Observed::Flagged { .. }
        ));
        // ...but a write over it is stamped after it, so it wins.
        let stamp = clock.stamp_after(1_001, Some(future));
        assert!(stamp > future, "{stamp}");
        assert_eq!(clock.last(), ts(1_001, 0), "the clock was not dragged");
        // Over an older value: just the clock.
        assert_eq!(clock.stamp_after(1_002, Some(ts(5, 0))), ts(1_002, 0));
        // Over a value within the bound but ahead: after it, and the clock
        // follows.
        let near = ts(1_100, 4);
        assert_eq!(clock.stamp_after(1_003, Some(near)), ts(1_100, 5));
        assert_eq!(clock.tick(1_004), ts(1_100, 6));
    }
}
