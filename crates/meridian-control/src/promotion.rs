//! The sync rule and the choice of a promotion target (pure, table-tested).
//!
//! **Sync rule.** A sync namespace with `n` standby regions has `n + 1`
//! copies. A write is acknowledged once a majority of the copies has it
//! durably, the primary counting as one: [`sync_confirmations`]`(n)` =
//! `floor((n + 1) / 2)` standby confirmations (1 of 1, 1 of 2, 2 of 3, 2 of 4).
//! So every acknowledged write is on at least that many standbys, and any
//! `n - confirmations + 1` standbys include one that has it. Losing any one
//! region leaves enough copies to keep acknowledging writes when `n >= 2`.
//!
//! **Promotion.** For a sync namespace a standby is promoted only if at least
//! `n - confirmations + 1` standbys reported their position after the old
//! primary's lease surely ended (so no acknowledgement came later), and it is
//! the one with the highest position among them: it then holds every
//! acknowledged write. For an async namespace the healthy standby with the
//! highest position is promoted (losses are counted and kept).

/// Standby confirmations a sync write needs with `standbys` standby regions.
pub fn sync_confirmations(standbys: usize) -> usize {
    // floor((n + 1) / 2), which is ceil(n / 2).
    standbys.div_ceil(2)
}

/// One standby as the prober last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its shard.
    pub shard: String,
    /// Its position in the namespace's change log.
    pub position: u64,
    /// It answers probes, holds the namespace as a standby and is not being
    /// rebuilt.
    pub eligible: bool,
    /// Its position was reported after the old primary's lease surely ended.
    pub reported_after_lease: bool,
}

/// Why no standby may be promoted (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPromotion {
    /// No standby is eligible.
    NoEligibleStandby,
    /// A sync namespace needs more standbys to report before one can be
    /// known to hold every acknowledged write.
    TooFewReports {
        /// Standbys that must report.
        needed: usize,
        /// Standbys that did.
        reported: usize,
    },
}

/// The standby to promote and its position.
pub fn choose_target(candidates: &[Candidate], sync: bool) -> Result<(String, u64), NoPromotion> {
    let eligible = candidates.iter().filter(|c| c.eligible);
    let pool: Vec<&Candidate> = if sync {
        let reported: Vec<&Candidate> = eligible.filter(|c| c.reported_after_lease).collect();
        let total = candidates.len();
        let needed = total - sync_confirmations(total) + 1;
        if reported.len() < needed {
            return Err(NoPromotion::TooFewReports {
                needed,
                reported: reported.len(),
            });
        }
        reported
    } else {
        eligible.collect()
    };
    pool.into_iter()
        .max_by(|a, b| {
            a.position
                .cmp(&b.position)
                .then_with(|| b.shard.cmp(&a.shard))
        })
        .map(|c| (c.shard.clone(), c.position))
        .ok_or(NoPromotion::NoEligibleStandby)
}

/// A sync namespace's standby, as the prober sees it, for the standby-loss
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyState {
    /// It answers probes, holds the copy as a standby and is not being rebuilt.
    pub able: bool,
    /// Its position equals the primary's last reported one.
    pub current: bool,
}

/// What the `--on-standby-loss degrade` policy does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncChange {
    /// Too few standbys can confirm writes: switch to async (audited).
    Degrade,
    /// Enough standbys can confirm and are current again: back to sync.
    Restore,
}

/// The standby-loss verdict for a sync namespace whose policy allows
/// degrading: degrade once fewer standbys can confirm than the sync rule
/// needs; restore once that many are able and current again. `None`: no change.
pub fn standby_loss_verdict(standbys: &[StandbyState], degraded: bool) -> Option<SyncChange> {
    let needed = sync_confirmations(standbys.len());
    let able = standbys.iter().filter(|s| s.able).count();
    let current = standbys.iter().filter(|s| s.able && s.current).count();
    match degraded {
        false if able < needed => Some(SyncChange::Degrade),
        true if current >= needed => Some(SyncChange::Restore),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_a_majority_of_copies_minus_the_primary() {
        for (standbys, needed) in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            assert_eq!(sync_confirmations(standbys), needed, "{standbys} standbys");
        }
    }

    fn candidate(shard: &str, position: u64, eligible: bool, reported: bool) -> Candidate {
        Candidate {
            shard: shard.into(),
            position,
            eligible,
            reported_after_lease: reported,
        }
    }

    #[test]
    fn choice_table() {
        /// (case, candidates, sync, expected)
        type Case = (
            &'static str,
            Vec<Candidate>,
            bool,
            Result<(String, u64), NoPromotion>,
        );
        let cases: Vec<Case> = vec![
            (
                "async: the highest healthy position wins",
                vec![
                    candidate("a", 5, true, false),
                    candidate("b", 9, true, false),
                ],
                false,
                Ok(("b".into(), 9)),
            ),
            (
                "async: an unhealthy standby is skipped",
                vec![
                    candidate("a", 5, true, true),
                    candidate("b", 9, false, true),
                ],
                false,
                Ok(("a".into(), 5)),
            ),
            (
                "sync, one standby that reported after the lease",
                vec![candidate("a", 5, true, true)],
                true,
                Ok(("a".into(), 5)),
            ),
            (
                "sync, one standby whose report is older than the lease's end",
                vec![candidate("a", 5, true, false)],
                true,
                Err(NoPromotion::TooFewReports {
                    needed: 1,
                    reported: 0,
                }),
            ),
            (
                "sync, two standbys, both reported: the higher one holds every ack",
                vec![candidate("a", 5, true, true), candidate("b", 7, true, true)],
                true,
                Ok(("b".into(), 7)),
            ),
            (
                "sync, two standbys, the one that may hold the last acks is down",
                vec![
                    candidate("a", 5, true, true),
                    candidate("b", 7, false, false),
                ],
                true,
                Err(NoPromotion::TooFewReports {
                    needed: 2,
                    reported: 1,
                }),
            ),
            (
                "sync, three standbys need two reports",
                vec![
                    candidate("a", 5, true, true),
                    candidate("b", 8, true, true),
                    candidate("c", 9, false, false),
                ],
                true,
                Ok(("b".into(), 8)),
            ),
            (
                "nothing eligible",
                vec![candidate("a", 5, false, false)],
                false,
                Err(NoPromotion::NoEligibleStandby),
            ),
            (
                "ties go to the first shard by name",
                vec![candidate("b", 5, true, true), candidate("a", 5, true, true)],
                false,
                Ok(("a".into(), 5)),
            ),
        ];
        for (case, candidates, sync, expected) in cases {
            assert_eq!(choose_target(&candidates, sync), expected, "{case}");
        }
    }

    #[test]
    fn standby_loss_table() {
        let able_current = StandbyState {
            able: true,
            current: true,
        };
        let able_behind = StandbyState {
            able: true,
            current: false,
        };
        let lost = StandbyState {
            able: false,
            current: false,
        };
        // (case, standbys, degraded now, verdict)
        let cases = [
            ("one standby, fine", vec![able_current], false, None),
            (
                "one standby, lost",
                vec![lost],
                false,
                Some(SyncChange::Degrade),
            ),
            ("degraded, still lost", vec![lost], true, None),
            ("degraded, back but behind", vec![able_behind], true, None),
            (
                "degraded, back and current",
                vec![able_current],
                true,
                Some(SyncChange::Restore),
            ),
            (
                "two standbys, one lost: still a majority",
                vec![able_behind, lost],
                false,
                None,
            ),
            (
                "two standbys, both lost",
                vec![lost, lost],
                false,
                Some(SyncChange::Degrade),
            ),
            (
                "three standbys, two lost",
                vec![able_current, lost, lost],
                false,
                Some(SyncChange::Degrade),
            ),
            (
                "three, degraded, two current again",
                vec![able_current, able_current, lost],
                true,
                Some(SyncChange::Restore),
            ),
        ];
        for (case, standbys, degraded, expected) in cases {
            assert_eq!(
                standby_loss_verdict(&standbys, degraded),
                expected,
                "{case}"
            );
        }
    }
}
