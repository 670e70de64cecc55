//! Rebuilding a lost control plane from its backup (pure, table-tested;
//! the `control_restore` driver carries it out).
//!
//! A backup is older than the control plane it replaces: after it was
//! taken, the lost control plane may have failed namespaces over, moved
//! them, granted leases and pushed routing versions. The shards and
//! gateways remember all of that; the backup does not. Three rules keep the
//! restored control plane from contradicting them:
//!
//! - **A new generation.** The routing version, the access policy's version
//!   and the lease grants' numbering all start a new generation above
//!   anything the lost control plane could have reached
//!   ([`next_generation`], [`grant_term`]), so gateways take the restored
//!   table and shards take its grants (and ignore the lost one's, should it
//!   ever come back).
//! - **The shards' word over the backup's.** Before any lease is granted,
//!   every shard is asked which namespaces it holds, in which role and
//!   epoch. A namespace whose copies moved past the backup's epoch is
//!   adopted where its newest primary is ([`reconcile`]); the backup's
//!   primary is never handed a lease on the backup's say-so, so a copy that
//!   went stale after the backup is not adopted.
//! - **Every shard answers first.** A shard that does not answer could hold
//!   any namespace at a newer epoch, so the rebuild waits for all of them —
//!   unless an operator names it lost ([`ready`]).

use std::collections::BTreeSet;

/// Bits of the routing version (and the access policy's version) below
/// the generation: 2^40 route changes per generation.
pub const GENERATION_SHIFT: u32 = 40;

/// The generation a routing version belongs to (0 until the first restore).
pub fn generation(routing_version: u64) -> u64 {
    routing_version >> GENERATION_SHIFT
}

/// The first version of the generation after `version`'s: what a restored
/// control plane's routing table (and access policy) starts at, so that it
/// is newer than any version the lost control plane reached after the
/// backup. `None` past the last generation.
pub fn next_generation(version: u64) -> Option<u64> {
    generation(version)
        .checked_add(1)?
        .checked_mul(1 << GENERATION_SHIFT)
}

/// The term lease grants are numbered with: the control plane's
/// generation above its Raft term, so every grant of a restored control
/// plane (whose Raft starts again at term 1) orders after every grant of
/// the one it replaced.
pub fn grant_term(generation: u64, raft_term: u64) -> u64 {
    generation
        .saturating_mul(1 << 32)
        .saturating_add(raft_term.min(u64::from(u32::MAX)))
}

/// A copy's role on its shard, as the shard reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyRole {
    /// Configured as the primary.
    Primary,
    /// Configured as a standby.
    Standby,
    /// Held, but never configured with a role (a namespace that was never
    /// replicated or moved).
    Unconfigured,
}

/// What one shard that answered says about one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The shard.
    pub shard: String,
    /// Its region.
    pub region: String,
    /// Whether the namespace's jurisdictions allow that region.
    pub allowed: bool,
    /// Its role.
    pub role: CopyRole,
    /// Its epoch (0 when unconfigured).
    pub epoch: u64,
    /// Its change position.
    pub change_seq: u64,
    /// A primary promoted by a failover: the epoch it held then and its
    /// position (0, 0 otherwise).
    pub promoted_from: (u64, u64),
}

/// What the backup says about one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Its primary's shard.
    pub primary: String,
    /// Its epoch.
    pub epoch: u64,
}

/// A takeover to record with an adoption: the primary of `epoch` took over
/// the history of `source_epoch` at `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredTakeover {
    /// The epoch the new primary holds.
    pub epoch: u64,
    /// The epoch it took over from.
    pub source_epoch: u64,
    /// Its position then.
    pub seq: u64,
}

/// What becomes of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The backup is current for it: its placement stays.
    Keep,
    /// It lives elsewhere now, or at a newer epoch: route it there.
    Adopt {
        /// The primary's shard.
        primary: String,
        /// Its region.
        region: String,
        /// The epoch to configure.
        epoch: u64,
        /// The other copies, as standbys: (shard, region).
        standbys: Vec<(String, String)>,
        /// Where the primary took over, when that is known (a failover's
        /// promotion, or a promotion decided here).
        takeover: Option<RecoveredTakeover>,
        /// Whether the primary was chosen here (its primary is on a shard
        /// named lost, or none is primary at the newest epoch).
        promoted: bool,
    },
    /// No shard that answered holds it: it was deleted or moved after the
    /// backup to a shard named lost. Its route stays; calls find nothing.
    Missing,
    /// Copies disagree in a way no rule settles (two primaries at the
    /// newest epoch): held without a lease until an operator decides.
    Conflict(String),
}

/// Whether the rebuild may decide: every shard answered or was named lost.
/// `Err` lists those still awaited.
pub fn ready(
    shards: &BTreeSet<String>,
    answered: &BTreeSet<String>,
    lost: &BTreeSet<String>,
) -> Result<(), Vec<String>> {
    let waiting: Vec<String> = shards
        .iter()
        .filter(|s| !answered.contains(*s) && !lost.contains(*s))
        .cloned()
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting)
    }
}

/// Where one namespace lives after the restore, from the backup's view
/// (`restored`), what every shard that answered says (`copies`: one per
/// shard that holds it) and the shards named lost.
pub fn reconcile(restored: &Restored, copies: &[CopyReport], lost: &BTreeSet<String>) -> Verdict {
    let copies: Vec<&CopyReport> = copies.iter().filter(|c| c.allowed).collect();
    if copies.is_empty() {
        return Verdict::Missing;
    }
    let newest = copies.iter().map(|c| c.epoch).max().unwrap_or(0);
    if newest <= restored.epoch {
        // Nothing moved past the backup: its primary stays, unless it is
        // on a shard named lost.
        if !lost.contains(&restored.primary) {
            return Verdict::Keep;
        }
        return promote(restored.epoch.max(1), &copies, restored);
    }
    let primaries: Vec<&&CopyReport> = copies
        .iter()
        .filter(|c| c.epoch == newest && c.role == CopyRole::Primary)
        .collect();
    match primaries.as_slice() {
        [primary] => {
            let takeover = (primary.promoted_from.0 > 0).then_some(RecoveredTakeover {
                epoch: newest,
                source_epoch: primary.promoted_from.0,
                seq: primary.promoted_from.1,
            });
            adopt(primary, newest, &copies, takeover, false)
        }
        [] => promote(newest, &copies, restored),
        several => Verdict::Conflict(format!(
            "{} copies are primary at epoch {newest}: {}",
            several.len(),
            several
                .iter()
                .map(|c| c.shard.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Promotes the most advanced copy (newest epoch, then furthest position)
/// to a new epoch above `epoch`, as a failover would.
fn promote(epoch: u64, copies: &[&CopyReport], restored: &Restored) -> Verdict {
    let Some(best) = copies
        .iter()
        .max_by_key(|c| (c.epoch, c.change_seq, c.shard == restored.primary))
    else {
        return Verdict::Missing;
    };
    let Some(next) = epoch.checked_add(1) else {
        return Verdict::Conflict(format!("epoch {epoch} cannot grow"));
    };
    let takeover = RecoveredTakeover {
        epoch: next,
        source_epoch: best.epoch.max(1),
        seq: best.change_seq,
    };
    adopt(best, next, copies, Some(takeover), true)
}

fn adopt(
    primary: &CopyReport,
    epoch: u64,
    copies: &[&CopyReport],
    takeover: Option<RecoveredTakeover>,
    promoted: bool,
) -> Verdict {
    let mut standbys: Vec<(String, String)> = copies
        .iter()
        .filter(|c| c.shard != primary.shard && c.region != primary.region)
        .map(|c| (c.shard.clone(), c.region.clone()))
        .collect();
    // One standby per region (the placement's rule): the first by shard id.
    standbys.sort();
    standbys.dedup_by(|a, b| a.1 == b.1);
    Verdict::Adopt {
        primary: primary.shard.clone(),
        region: primary.region.clone(),
        epoch,
        standbys,
        takeover,
        promoted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(shard: &str, role: CopyRole, epoch: u64, seq: u64) -> CopyReport {
        CopyReport {
            shard: shard.into(),
            region: shard.split('/').next().unwrap_or(shard).into(),
            allowed: true,
            role,
            epoch,
            change_seq: seq,
            promoted_from: (0, 0),
        }
    }

    fn lost(shards: &[&str]) -> BTreeSet<String> {
        shards.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generations_order_after_everything_before_them() {
        assert_eq!(generation(5), 0);
        assert_eq!(next_generation(5), Some(1 << 40));
        assert_eq!(next_generation((1 << 40) + 7), Some(2 << 40));
        assert!(next_generation((1 << 40) - 1).unwrap() > (1 << 40) - 1);
        assert_eq!(next_generation(u64::MAX), None);
        // Any grant of a later generation orders after any of an earlier one.
        assert!(grant_term(1, 1) > grant_term(0, 1_000_000));
        assert!(grant_term(0, 3) > grant_term(0, 2));
        assert_eq!(grant_term(0, 9), 9);
        assert!(grant_term(2, u64::MAX) < grant_term(3, 1));
    }

    #[test]
    fn every_shard_answers_or_is_named_lost_before_deciding() {
        let shards = lost(&["a", "b", "c"]);
        assert_eq!(
            ready(&shards, &lost(&["a"]), &lost(&[])),
            Err(vec!["b".into(), "c".into()])
        );
        assert_eq!(ready(&shards, &lost(&["a", "b"]), &lost(&["c"])), Ok(()));
        assert_eq!(ready(&shards, &lost(&["a", "b", "c"]), &lost(&[])), Ok(()));
    }

    #[test]
    fn reconcile_table() {
        use CopyRole::*;
        let restored = Restored {
            primary: "us/1".into(),
            epoch: 2,
        };
        let promoted = |mut c: CopyReport, from: (u64, u64)| {
            c.promoted_from = from;
            c
        };
        let forbidden = |mut c: CopyReport| {
            c.allowed = false;
            c
        };
        let adopt = |primary: &str, epoch, standbys: &[&str], takeover, promoted| Verdict::Adopt {
            primary: primary.into(),
            region: primary.split('/').next().unwrap().into(),
            epoch,
            standbys: standbys
                .iter()
                .map(|s| (s.to_string(), s.split('/').next().unwrap().to_string()))
                .collect(),
            takeover,
            promoted,
        };
        let t = |epoch, source_epoch, seq| {
            Some(RecoveredTakeover {
                epoch,
                source_epoch,
                seq,
            })
        };
        // (case, copies, lost shards, verdict)
        let cases: Vec<(&str, Vec<CopyReport>, Vec<&str>, Verdict)> = vec![
            (
                "nothing moved after the backup: keep",
                vec![copy("us/1", Primary, 2, 50), copy("eu/1", Standby, 2, 48)],
                vec![],
                Verdict::Keep,
            ),
            (
                "never configured (region-locked): keep",
                vec![copy("us/1", Unconfigured, 0, 0)],
                vec![],
                Verdict::Keep,
            ),
            (
                "failed over after the backup: the newest primary is adopted, the stale one becomes a standby",
                vec![
                    copy("us/1", Primary, 2, 60),
                    promoted(copy("eu/1", Primary, 3, 55), (2, 55)),
                ],
                vec![],
                adopt("eu/1", 3, &["us/1"], t(3, 2, 55), false),
            ),
            (
                "the stale primary answers first or alone among primaries at its epoch: still not adopted",
                vec![
                    copy("us/1", Primary, 2, 70),
                    copy("ap/1", Standby, 3, 40),
                    promoted(copy("eu/1", Primary, 3, 55), (2, 55)),
                ],
                vec![],
                adopt("eu/1", 3, &["ap/1", "us/1"], t(3, 2, 55), false),
            ),
            (
                "migrated after the backup, source erased: adopted where it is",
                vec![copy("eu/2", Primary, 3, 10)],
                vec![],
                adopt("eu/2", 3, &[], None, false),
            ),
            (
                "the backup's primary is named lost: the furthest copy is promoted",
                vec![copy("eu/1", Standby, 2, 48), copy("ap/1", Standby, 2, 49)],
                vec!["us/1"],
                adopt("ap/1", 3, &["eu/1"], t(3, 2, 49), true),
            ),
            (
                "the newest primary is on a shard named lost: a standby at that epoch is promoted",
                vec![copy("us/1", Primary, 2, 60), copy("ap/1", Standby, 3, 58)],
                vec!["eu/1"],
                adopt("ap/1", 4, &["us/1"], t(4, 3, 58), true),
            ),
            (
                "two primaries at the newest epoch: held",
                vec![copy("eu/1", Primary, 3, 5), copy("ap/1", Primary, 3, 6)],
                vec![],
                Verdict::Conflict("2 copies are primary at epoch 3: eu/1, ap/1".into()),
            ),
            (
                "no copy anywhere: missing",
                vec![],
                vec![],
                Verdict::Missing,
            ),
            (
                "a copy where its jurisdictions forbid is never adopted",
                vec![
                    forbidden(copy("cn/1", Primary, 5, 5)),
                    copy("us/1", Primary, 2, 3),
                ],
                vec![],
                Verdict::Keep,
            ),
            (
                "one standby per region",
                vec![
                    promoted(copy("eu/1", Primary, 3, 9), (2, 9)),
                    copy("us/2", Standby, 3, 9),
                    copy("us/1", Standby, 2, 9),
                ],
                vec![],
                adopt("eu/1", 3, &["us/1"], t(3, 2, 9), false),
            ),
        ];
        for (case, copies, named_lost, expected) in cases {
            assert_eq!(
                reconcile(&restored, &copies, &lost(&named_lost)),
                expected,
                "{case}"
            );
        }
    }
}
