//! Where a copy's history leaves its namespace's current history (pure,
//! table-tested).
//!
//! Every failover creates an epoch whose primary took over the history of
//! some earlier epoch (the one the promoted copy held) up to some position:
//! `history(E) = history(source(E))[..=seq(E)]` followed by what the new
//! primary writes. The epochs form a tree. A copy that last held epoch `a`
//! holds a prefix of `history(a)`; it shares with `history(E)` everything up
//! to the smallest takeover position on the paths from `a` and from `E` to
//! their nearest common epoch. What it holds beyond that point never made it
//! into the current history: it is set aside as lost writes and the copy is
//! rebuilt.
//!
//! The takeover position is the promoted copy's real position when it became
//! primary — not the one the promotion was decided on, which may be lower
//! (the old primary can still ship changes to it in between).

use std::collections::BTreeMap;

/// Where the primary of `epoch` took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    /// The epoch the failover created.
    pub epoch: u64,
    /// The epoch the promoted copy held.
    pub source_epoch: u64,
    /// Its change position then.
    pub seq: u64,
}

/// Why a fork point cannot be computed yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkUnknown {
    /// A failover on the way has not reported its takeover yet.
    #[error("the takeover of epoch {0} is not known yet")]
    Missing(u64),
    /// The takeovers do not form a tree (a source not older than its epoch).
    #[error("takeover of epoch {epoch} names source epoch {source_epoch}, which is not older")]
    Malformed {
        /// The epoch.
        epoch: u64,
        /// Its claimed source.
        source_epoch: u64,
    },
}

/// The path from `epoch` towards the first placement (epoch 1): each epoch
/// on it with its takeover position, ending at the first epoch whose takeover
/// is unknown (`Err` kept for the caller) or at epoch 1.
fn path(
    takeovers: &BTreeMap<u64, (u64, u64)>,
    mut epoch: u64,
) -> (Vec<(u64, u64)>, Result<(), ForkUnknown>) {
    let mut steps = Vec::new();
    while epoch > 1 {
        let Some(&(source_epoch, seq)) = takeovers.get(&epoch) else {
            steps.push((epoch, u64::MAX));
            return (steps, Err(ForkUnknown::Missing(epoch)));
        };
        if source_epoch >= epoch {
            return (
                steps,
                Err(ForkUnknown::Malformed {
                    epoch,
                    source_epoch,
                }),
            );
        }
        steps.push((epoch, seq));
        epoch = source_epoch;
    }
    steps.push((epoch.max(1), u64::MAX));
    (steps, Ok(()))
}

/// The last change position the history of `copy_epoch` shares with the
/// history of `target_epoch`; `None` when they are the same history
/// (nothing to set aside).
pub fn fork_point(
    takeovers: &[Takeover],
    copy_epoch: u64,
    target_epoch: u64,
) -> Result<Option<u64>, ForkUnknown> {
    if copy_epoch.max(1) == target_epoch.max(1) {
        return Ok(None);
    }
    let table: BTreeMap<u64, (u64, u64)> = takeovers
        .iter()
        .map(|t| (t.epoch, (t.source_epoch, t.seq)))
        .collect();
    let (ours, ours_complete) = path(&table, copy_epoch);
    let (theirs, theirs_complete) = path(&table, target_epoch);
    // The nearest common epoch: the first of ours that is on their path.
    for (i, (epoch, _)) in ours.iter().enumerate() {
        if let Some(j) = theirs.iter().position(|(e, _)| e == epoch) {
            // Our steps before it and theirs before it; a step's position is
            // where its epoch left its source, so the common epoch's own
            // step does not count.
            let fork = ours[..i]
                .iter()
                .chain(theirs[..j].iter())
                .map(|(_, seq)| *seq)
                .min();
            return match fork {
                Some(u64::MAX) => Err(first_unknown(&ours[..i], &theirs[..j])),
                other => Ok(other),
            };
        }
    }
    ours_complete.and(theirs_complete)?;
    // Both paths end at epoch 1, so it is always common; not reached.
    Err(ForkUnknown::Missing(copy_epoch))
}

fn first_unknown(ours: &[(u64, u64)], theirs: &[(u64, u64)]) -> ForkUnknown {
    ours.iter()
        .chain(theirs)
        .find(|(_, seq)| *seq == u64::MAX)
        .map_or(ForkUnknown::Missing(0), |(epoch, _)| {
            ForkUnknown::Missing(*epoch)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, source_epoch: u64, seq: u64) -> Takeover {
        Takeover {
            epoch,
            source_epoch,
            seq,
        }
    }

    #[test]
    fn fork_point_table() {
        let linear = [t(2, 1, 10), t(3, 2, 20)];
        let skip = [t(2, 1, 10), t(3, 1, 8)];
        let gap = [t(3, 1, 5)];
        // (case, takeovers, copy epoch, target epoch, fork point)
        type Case<'a> = (
            &'static str,
            &'a [Takeover],
            u64,
            u64,
            Result<Option<u64>, ForkUnknown>,
        );
        let cases: Vec<Case> = vec![
            ("same epoch: nothing to set aside", &linear, 3, 3, Ok(None)),
            (
                "unmanaged copy counts as the first placement",
                &linear,
                0,
                1,
                Ok(None),
            ),
            (
                "one failover: where the new primary took over",
                &linear,
                1,
                2,
                Ok(Some(10)),
            ),
            (
                "two failovers in a line: the smaller position",
                &linear,
                1,
                3,
                Ok(Some(10)),
            ),
            ("a copy of the middle epoch", &linear, 2, 3, Ok(Some(20))),
            (
                "promoted from an older epoch: the middle epoch's writes after 8 are not in it",
                &skip,
                2,
                3,
                Ok(Some(8)),
            ),
            (
                "the first epoch against a skipping promotion",
                &skip,
                1,
                3,
                Ok(Some(8)),
            ),
            (
                "an epoch that never took over is not on the path",
                &gap,
                1,
                3,
                Ok(Some(5)),
            ),
            (
                "a copy of an epoch whose takeover is unknown waits",
                &gap,
                2,
                3,
                Err(ForkUnknown::Missing(2)),
            ),
            (
                "the target's own takeover unknown: wait",
                &[],
                1,
                2,
                Err(ForkUnknown::Missing(2)),
            ),
            (
                "a later copy against an earlier target (a failback)",
                &linear,
                3,
                2,
                Ok(Some(20)),
            ),
        ];
        for (case, takeovers, copy, target, expected) in cases {
            assert_eq!(fork_point(takeovers, copy, target), expected, "{case}");
        }
    }

    #[test]
    fn a_source_that_is_not_older_is_refused() {
        assert_eq!(
            fork_point(&[t(3, 3, 1)], 1, 3),
            Err(ForkUnknown::Malformed {
                epoch: 3,
                source_epoch: 3
            })
        );
        assert_eq!(
            fork_point(&[t(3, 5, 1), t(5, 3, 1)], 1, 3),
            Err(ForkUnknown::Malformed {
                epoch: 3,
                source_epoch: 5
            })
        );
    }
}
