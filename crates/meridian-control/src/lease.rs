//! Lease accounting on the control plane (pure; the prober carries it out).
//!
//! Every grant is counted from when its lease starts counting here (the start
//! of the leadership confirmation it rests on, also sent to the shard as
//! `sent_unix_ms`) until that time plus the lease plus a margin for clock-rate
//! differences — whether or not an answer ever came back. The shard holds a
//! grant for less than that (see `meridian_shard::lease`), so "every grant
//! counted here has ended" implies "the shard holds no lease".
//!
//! Grants are numbered `(term, sequence)`. A revocation the shard has
//! acknowledged ends every grant numbered before it (the shard ignores older
//! grants from then on), which is how a drain knows at once that the primary
//! can acknowledge nothing more.
//!
//! A new control-plane leader cannot know its predecessor's grants: it counts
//! one whole lease from when it became leader for every shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Extra time past a grant's end before it counts as surely over (clock-rate
/// differences between the control plane's and the shard's monotonic clocks).
pub const LEASE_MARGIN: Duration = Duration::from_millis(250);

/// One grant to send: its number and lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// `(term, sequence)`; `(0, 0)` for a probe that carries no grant.
    pub order: (u64, u64),
    /// The lease carried (0: a revocation, unless it carries no grant).
    pub lease_ms: u64,
}

impl Ticket {
    /// A probe without a grant: the shard's lease is left as it is. Sent to
    /// a shard whose last probe failed — a grant it may receive late would
    /// only push back, by the whole lease, the moment it surely holds none.
    pub const NO_GRANT: Ticket = Ticket {
        order: (0, 0),
        lease_ms: 0,
    };

    /// Whether this is a revocation (not a probe without a grant).
    pub fn is_revocation(&self) -> bool {
        self.lease_ms == 0 && *self != Ticket::NO_GRANT
    }
}

#[derive(Debug, Default, Clone)]
struct ShardGrants {
    /// Grants that may still be held: (sequence, counted from, lease).
    live: Vec<(u64, Instant, Duration)>,
    /// Whether the shard is being drained: it gets revocations only.
    draining: bool,
    /// Whether the shard acknowledged a revocation of this term: grants of
    /// earlier leaders are over too.
    revocation_acknowledged: bool,
}

/// Every grant this control-plane leader sent, per shard.
#[derive(Debug, Clone)]
pub struct LeaseLedger {
    term: u64,
    next_seq: u64,
    /// When this leader's term began: until a lease past it, grants of
    /// earlier leaders may be held.
    inherited_until: Instant,
    shards: HashMap<String, ShardGrants>,
}

impl LeaseLedger {
    /// A ledger for a leader of `term` that became leader at `since`.
    pub fn new(term: u64, since: Instant, lease: Duration) -> Self {
        Self {
            term,
            next_seq: 1,
            inherited_until: since + lease + LEASE_MARGIN,
            shards: HashMap::new(),
        }
    }

    /// The term this ledger numbers grants in.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Issues the next grant for `shard`, counted from `counted_from`: a
    /// lease of `lease` unless the shard is draining (then a revocation).
    pub fn issue(&mut self, shard: &str, lease: Duration, counted_from: Instant) -> Ticket {
        let seq = self.next_seq;
        self.next_seq += 1;
        let grants = self.shards.entry(shard.to_string()).or_default();
        let lease = if grants.draining {
            Duration::ZERO
        } else {
            lease
        };
        if !lease.is_zero() {
            grants.live.push((seq, counted_from, lease));
        }
        Ticket {
            order: (self.term, seq),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Issues a revocation for `shard` (and marks it draining: later grants
    /// are revocations too, until [`Self::end_drain`]).
    pub fn revoke(&mut self, shard: &str) -> Ticket {
        self.shards.entry(shard.to_string()).or_default().draining = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ticket {
            order: (self.term, seq),
            lease_ms: 0,
        }
    }

    /// Whether `shard` is being drained.
    pub fn draining(&self, shard: &str) -> bool {
        self.shards.get(shard).is_some_and(|g| g.draining)
    }

    /// Marks `shard` draining (no more leases) without sending anything.
    pub fn start_drain(&mut self, shard: &str) {
        self.shards.entry(shard.to_string()).or_default().draining = true;
    }

    /// Lets `shard` have leases again.
    pub fn end_drain(&mut self, shard: &str) {
        if let Some(grants) = self.shards.get_mut(shard) {
            grants.draining = false;
        }
    }

    /// The shard acknowledged the revocation `ticket`: every grant numbered
    /// before it is over.
    pub fn revoked(&mut self, shard: &str, ticket: Ticket) {
        if ticket.order.0 != self.term {
            return;
        }
        let grants = self.shards.entry(shard.to_string()).or_default();
        grants.live.retain(|(seq, _, _)| *seq > ticket.order.1);
        grants.revocation_acknowledged = true;
    }

    /// Until when `shard` may hold a lease from this leader or (without an
    /// acknowledged revocation) from its predecessors; `None` if surely none
    /// at `now`. The answer never comes earlier than the truth.
    pub fn may_hold_until(&self, shard: &str, now: Instant) -> Option<Instant> {
        self.lease_end(shard).filter(|until| *until > now)
    }

    /// When the last lease `shard` may hold (from this leader or, without an
    /// acknowledged revocation, its predecessors) surely ends, even if that
    /// is in the past; `None` if it surely holds none at all.
    pub fn lease_end(&self, shard: &str) -> Option<Instant> {
        let revoked = self
            .shards
            .get(shard)
            .is_some_and(|g| g.revocation_acknowledged);
        let inherited = (!revoked).then_some(self.inherited_until);
        let own = self.shards.get(shard).and_then(|g| {
            g.live
                .iter()
                .map(|(_, from, lease)| *from + *lease + LEASE_MARGIN)
                .max()
        });
        inherited.into_iter().chain(own).max()
    }

    /// Forgets grants that are surely over at `now` (bounded memory).
    pub fn prune(&mut self, now: Instant) {
        for grants in self.shards.values_mut() {
            grants
                .live
                .retain(|(_, from, lease)| *from + *lease + LEASE_MARGIN > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(3_500);

    #[test]
    fn a_new_leader_counts_a_whole_lease_for_its_predecessors() {
        let start = Instant::now();
        let ledger = LeaseLedger::new(2, start, LEASE);
        let end = start + LEASE + LEASE_MARGIN;
        assert_eq!(ledger.may_hold_until("s", start), Some(end));
        assert_eq!(ledger.may_hold_until("s", end), None);
    }

    #[test]
    fn every_grant_counts_from_its_send_whether_or_not_it_was_answered() {
        let start = Instant::now();
        let mut ledger = LeaseLedger::new(1, start, LEASE);
        let later = start + Duration::from_secs(10);
        // Two grants sent, neither answered (lost or delayed on the way).
        ledger.issue("s", LEASE, later);
        ledger.issue("s", LEASE, later + Duration::from_secs(1));
        let expected = later + Duration::from_secs(1) + LEASE + LEASE_MARGIN;
        assert_eq!(ledger.may_hold_until("s", later), Some(expected));
        assert_eq!(ledger.may_hold_until("other", later), None);
        ledger.prune(expected);
        assert_eq!(ledger.may_hold_until("s", expected), None);
    }

    #[test]
    fn an_acknowledged_revocation_ends_every_earlier_grant_at_once() {
        let start = Instant::now();
        let mut ledger = LeaseLedger::new(1, start, LEASE);
        let first = ledger.issue("s", LEASE, start);
        assert_eq!(first.lease_ms, 3_500);
        let revoke = ledger.revoke("s");
        assert!(revoke.order > first.order);
        assert_eq!(revoke.lease_ms, 0);
        let mut unacknowledged = LeaseLedger::new(1, start, LEASE);
        unacknowledged.revoke("s");
        assert!(
            unacknowledged.may_hold_until("s", start).is_some(),
            "a revocation without an answer ends nothing"
        );
        // Until the shard acknowledges, the grant (and the predecessors'
        // possible grants) still count.
        assert!(ledger.may_hold_until("s", start).is_some());
        ledger.revoked("s", revoke);
        assert_eq!(ledger.may_hold_until("s", start), None);
        // While draining, probes carry revocations only.
        let probe = ledger.issue("s", LEASE, start);
        assert_eq!(probe.lease_ms, 0);
        assert_eq!(ledger.may_hold_until("s", start), None);
        ledger.end_drain("s");
        assert_eq!(ledger.issue("s", LEASE, start).lease_ms, 3_500);
    }

    #[test]
    fn a_probe_without_a_grant_is_neither_a_grant_nor_a_revocation() {
        assert!(!Ticket::NO_GRANT.is_revocation());
        let mut ledger = LeaseLedger::new(1, Instant::now(), LEASE);
        assert!(ledger.revoke("s").is_revocation());
        assert!(!ledger.issue("t", LEASE, Instant::now()).is_revocation());
    }

    #[test]
    fn a_grant_issued_after_the_revocation_still_counts() {
        let start = Instant::now();
        let mut ledger = LeaseLedger::new(1, start, LEASE);
        let revoke = ledger.revoke("s");
        ledger.end_drain("s");
        let after = ledger.issue("s", LEASE, start);
        ledger.revoked("s", revoke);
        assert!(after.order > revoke.order);
        assert_eq!(
            ledger.may_hold_until("s", start),
            Some(start + LEASE + LEASE_MARGIN)
        );
    }
}
