//! The write lease a shard leader holds from the control plane: the decision
//! (pure, table-tested) and the state the node keeps.
//!
//! The control plane counts a grant as possibly held from the moment it
//! starts counting it (`sent_unix_ms` on its clock) until `sent + lease_ms`,
//! whether or not an answer came back. The shard must therefore never hold it
//! longer. It cannot know how long the grant was on the way, only estimate it
//! from the two wall clocks, which may disagree by up to `max_clock_offset_ms`
//! (the stated clock assumption, like CockroachDB's `max-offset`). So it
//! assumes the worst: the grant is `age + max_offset` old, and it holds the
//! lease for `lease_ms - age - max_offset` from now on its monotonic clock. A
//! grant whose sent time lies further in the future than the offset allows
//! proves the assumption broken: the shard refuses it (and so serves nothing
//! that needs a lease) until the clocks agree again.
//!
//! Grants are ordered by `(control term, sequence)`. A shard ignores a grant
//! that is not newer than the last one it took, so a revocation cannot be
//! undone by a grant that was overtaken on the way.
//!
//! A lease is bound to the Raft term in which it was taken: a node that loses
//! leadership and wins it back has no lease until the next grant, because a
//! revocation may have gone to another leader in between.

use std::time::{Duration, Instant};

/// The injected clock offset (`[clock] offset_ms`), set once at start.
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts every later [`now_unix_ms`] reading by `offset_ms` (fault
/// injection; the configuration bounds it to a day either way).
pub fn inject_clock_offset(offset_ms: i64) {
    CLOCK_OFFSET_MS.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
}

/// The wall clock, in Unix milliseconds (with any injected offset).
pub fn now_unix_ms() -> u64 {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    real.saturating_add_signed(CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// One grant, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Lease length; 0 revokes.
    pub lease_ms: u64,
    /// The control plane's clock when the lease started counting there.
    pub sent_unix_ms: u64,
    /// The clock assumption.
    pub max_clock_offset_ms: u64,
    /// `(control term, sequence)`.
    pub order: (u64, u64),
}

/// What to do with a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Hold the lease for this long from now.
    Hold(Duration),
    /// Drop the lease now (a revocation).
    Revoke,
    /// Not newer than the last grant taken: leave the lease as it is.
    Superseded,
    /// A probe that carries no grant (order `(0, 0)`): the lease is left as it is.
    NoGrant,
    /// Do not take it; the lease stays as it is (it runs out on its own).
    Refuse(LeaseRefusal),
}

/// Why a grant was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRefusal {
    /// The grant arrived too late to leave any lease.
    #[error(
        "grant arrived {age_ms} ms after it was sent (by the clocks); with max_clock_offset_ms {max_offset_ms} nothing of its {lease_ms} ms lease is left"
    )]
    TooLate {
        /// Measured age.
        age_ms: u64,
        /// The lease it carried.
        lease_ms: u64,
        /// The clock assumption.
        max_offset_ms: u64,
    },
    /// The grant's sent time is ahead of this node's clock by more than the
    /// clock assumption allows: the clocks are further apart than stated.
    #[error(
        "grant was sent {ahead_ms} ms in this node's future: its clock is further from the control plane's than max_clock_offset_ms {max_offset_ms}; no lease is taken until the clocks agree"
    )]
    ClockOffset {
        /// How far ahead.
        ahead_ms: u64,
        /// The clock assumption.
        max_offset_ms: u64,
    },
}

/// Decides what a node does with `grant`, given the order of the last grant
/// it took and its wall clock now.
pub fn decide(grant: &Grant, last_taken: Option<(u64, u64)>, now_unix_ms: u64) -> LeaseDecision {
    if grant.order == (0, 0) {
        return LeaseDecision::NoGrant;
    }
    if last_taken.is_some_and(|last| grant.order <= last) {
        return LeaseDecision::Superseded;
    }
    if grant.lease_ms == 0 {
        return LeaseDecision::Revoke;
    }
    let ahead_ms = grant.sent_unix_ms.saturating_sub(now_unix_ms);
    if ahead_ms > grant.max_clock_offset_ms {
        return LeaseDecision::Refuse(LeaseRefusal::ClockOffset {
            ahead_ms,
            max_offset_ms: grant.max_clock_offset_ms,
        });
    }
    let age_ms = now_unix_ms.saturating_sub(grant.sent_unix_ms);
    let held_ms = grant
        .lease_ms
        .saturating_sub(age_ms)
        .saturating_sub(grant.max_clock_offset_ms);
    if held_ms == 0 {
        return LeaseDecision::Refuse(LeaseRefusal::TooLate {
            age_ms,
            lease_ms: grant.lease_ms,
            max_offset_ms: grant.max_clock_offset_ms,
        });
    }
    LeaseDecision::Hold(Duration::from_millis(held_ms))
}

/// The lease a node holds (as its shard's leader).
#[derive(Debug, Default)]
pub struct LeaseState {
    /// Until when, and in which Raft term it was taken.
    held: Option<(Instant, u64)>,
    /// The order of the last grant taken (held, revoked or refused ones
    /// that were newer still count: a refusal must not let an older grant in).
    last_taken: Option<(u64, u64)>,
}

impl LeaseState {
    /// Applies `grant` at `now` (monotonic and wall clock) in Raft term
    /// `term`; returns the decision taken.
    pub fn apply(
        &mut self,
        grant: &Grant,
        now: Instant,
        now_unix_ms: u64,
        term: u64,
    ) -> LeaseDecision {
        let decision = decide(grant, self.last_taken, now_unix_ms);
        match &decision {
            LeaseDecision::Superseded | LeaseDecision::NoGrant => {}
            LeaseDecision::Refuse(_) => self.last_taken = Some(grant.order),
            LeaseDecision::Revoke => {
                self.last_taken = Some(grant.order);
                self.held = None;
            }
            LeaseDecision::Hold(length) => {
                self.last_taken = Some(grant.order);
                let until = now + *length;
                // A longer lease from an earlier grant in the same term stays:
                // the control plane counts every grant it sent until its end.
                self.held = match self.held {
                    Some((earlier, held_term)) if held_term == term && earlier > until => {
                        Some((earlier, term))
                    }
                    _ => Some((until, term)),
                };
            }
        }
        decision
    }

    /// Whether the lease is held at `now` by a leader of Raft term `term`.
    pub fn holds(&self, now: Instant, term: u64) -> bool {
        self.held
            .is_some_and(|(until, held_term)| held_term == term && now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(lease_ms: u64, sent_unix_ms: u64, order: (u64, u64)) -> Grant {
        Grant {
            lease_ms,
            sent_unix_ms,
            max_clock_offset_ms: 250,
            order,
        }
    }

    #[test]
    fn decision_table() {
        let now = 100_000;
        /// (case, grant, order of the last grant taken, decision)
        type Case = (&'static str, Grant, Option<(u64, u64)>, LeaseDecision);
        let cases: &[Case] = &[
            (
                "fresh grant: the offset is taken off",
                grant(3_500, now, (1, 1)),
                None,
                LeaseDecision::Hold(Duration::from_millis(3_250)),
            ),
            (
                "a grant 1 s on the way loses that second too",
                grant(3_500, now - 1_000, (1, 2)),
                Some((1, 1)),
                LeaseDecision::Hold(Duration::from_millis(2_250)),
            ),
            (
                "sent slightly in the future (within the offset): age counts as 0",
                grant(3_500, now + 200, (1, 2)),
                None,
                LeaseDecision::Hold(Duration::from_millis(3_250)),
            ),
            (
                "delayed past its lease (bytes released on heal)",
                grant(3_500, now - 3_300, (1, 5)),
                Some((1, 4)),
                LeaseDecision::Refuse(LeaseRefusal::TooLate {
                    age_ms: 3_300,
                    lease_ms: 3_500,
                    max_offset_ms: 250,
                }),
            ),
            (
                "from further in the future than the offset allows",
                grant(3_500, now + 400, (1, 1)),
                None,
                LeaseDecision::Refuse(LeaseRefusal::ClockOffset {
                    ahead_ms: 400,
                    max_offset_ms: 250,
                }),
            ),
            (
                "overtaken by a newer grant or revocation",
                grant(3_500, now, (1, 3)),
                Some((1, 4)),
                LeaseDecision::Superseded,
            ),
            (
                "a duplicate is superseded",
                grant(3_500, now, (1, 4)),
                Some((1, 4)),
                LeaseDecision::Superseded,
            ),
            (
                "an older control term is superseded whatever its sequence",
                grant(3_500, now, (1, 900)),
                Some((2, 1)),
                LeaseDecision::Superseded,
            ),
            (
                "a probe without a grant changes nothing",
                grant(0, now, (0, 0)),
                Some((2, 1)),
                LeaseDecision::NoGrant,
            ),
            (
                "revocation",
                grant(0, now, (2, 2)),
                Some((2, 1)),
                LeaseDecision::Revoke,
            ),
        ];
        for (name, grant, last, expected) in cases {
            assert_eq!(&decide(grant, *last, now), expected, "{name}");
        }
    }

    #[test]
    fn the_shard_never_holds_past_what_the_control_plane_counts() {
        // For every true transit time and clock offset within the assumption,
        // the lease ends no later than sent + lease in the control plane's time.
        let lease_ms = 3_500;
        let max_offset = 250i64;
        for transit in [0u64, 10, 500, 1_000, 3_000, 3_249, 3_250, 4_000] {
            for offset in (-max_offset..=max_offset).step_by(50) {
                let sent = 1_000_000u64; // control plane's clock
                let arrival_true = sent + transit; // in control-plane time
                let node_clock = (arrival_true as i64 + offset) as u64;
                let grant = Grant {
                    lease_ms,
                    sent_unix_ms: sent,
                    max_clock_offset_ms: max_offset as u64,
                    order: (1, 1),
                };
                if let LeaseDecision::Hold(held) = decide(&grant, None, node_clock) {
                    let ends = arrival_true + held.as_millis() as u64;
                    assert!(
                        ends <= sent + lease_ms,
                        "transit {transit} offset {offset}: ends {ends}"
                    );
                }
            }
        }
    }

    #[test]
    fn revocation_cannot_be_undone_by_an_overtaken_grant() {
        let start = Instant::now();
        let mut state = LeaseState::default();
        let now = 50_000;
        state.apply(&grant(3_500, now, (1, 1)), start, now, 7);
        assert!(state.holds(start, 7));
        state.apply(&grant(0, now, (1, 3)), start, now, 7);
        assert!(!state.holds(start, 7));
        // Grant 2 was sent before the revocation and arrives after it.
        let late = state.apply(&grant(3_500, now, (1, 2)), start, now, 7);
        assert_eq!(late, LeaseDecision::Superseded);
        assert!(!state.holds(start, 7));
    }

    #[test]
    fn a_lease_belongs_to_the_raft_term_it_was_taken_in() {
        let start = Instant::now();
        let mut state = LeaseState::default();
        state.apply(&grant(3_500, 10_000, (1, 1)), start, 10_000, 4);
        assert!(state.holds(start, 4));
        assert!(!state.holds(start, 5), "leadership lost and won back");
        assert!(!state.holds(start + Duration::from_millis(3_250), 4));
    }

    #[test]
    fn a_refused_grant_still_blocks_older_ones() {
        let start = Instant::now();
        let mut state = LeaseState::default();
        let now = 10_000;
        state.apply(&grant(3_500, now + 1_000, (1, 5)), start, now, 1);
        let older = state.apply(&grant(3_500, now, (1, 4)), start, now, 1);
        assert_eq!(older, LeaseDecision::Superseded);
        assert!(!state.holds(start, 1));
    }
}
