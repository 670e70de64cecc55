//! Online migration decisions (`namespace migrate`): whether a migration may
//! start, which copy in the target region it uses, what its driver does
//! next, and whether a cutover may switch the route. Pure functions over the
//! control plane's state, table-tested; `jobs` carries them out.
//!
//! A migration is three steps, each recorded in its job so a new leader
//! carries on: (1) a copy in the target region (a standby there, or one
//! added to the namespace for the move: a region-locked namespace ships to
//! it as active-passive until the end), filled by the primary's replicator;
//! (2) once that copy is within reach, the cutover: the source's write lease
//! is revoked, the copy catches up to the source's last change, both digests
//! are compared, and only then is the route switched at a new epoch — or, if
//! that would block writes longer than the budget or the digests differ,
//! the lease is given back and the source stays primary; (3) after the grace
//! period the former primary's copy is handed to the deletion worker and the
//! erasure recorded.

use crate::command::ControlRejection;
use crate::model::{Migration, Namespace, NamespaceMode, Region, Shard};
use std::collections::{BTreeMap, BTreeSet};

/// How far (in changes) the new copy may trail before the cutover starts:
/// what is left is shipped while writes are blocked.
pub const CUTOVER_LAG_ENTRIES: u64 = 256;

fn refuse(namespace: &str, reason: impl Into<String>) -> ControlRejection {
    ControlRejection::Migration {
        namespace: namespace.to_string(),
        reason: reason.into(),
    }
}

/// Checks that `namespace` may move to `to_region` now and fills in where it
/// starts from.
pub fn plan(
    mut request: Migration,
    namespaces: &BTreeMap<String, Namespace>,
    regions: &BTreeMap<String, Region>,
    running: &[&Migration],
) -> Result<Migration, ControlRejection> {
    let name = request.namespace.clone();
    let namespace = namespaces
        .get(&name)
        .ok_or_else(|| ControlRejection::NamespaceNotFound(name.clone()))?;
    if namespace.policy.mode == NamespaceMode::ActiveActive {
        return Err(refuse(
            &name,
            "an active-active namespace has no single home to move",
        ));
    }
    let region = regions
        .get(&request.to_region)
        .ok_or_else(|| ControlRejection::UnknownRegion(request.to_region.clone()))?;
    if namespace.policy.home_region == request.to_region {
        return Err(refuse(
            &name,
            format!("its primary is in {} already", request.to_region),
        ));
    }
    crate::residency::check_region(
        &name,
        &namespace.policy.allowed_jurisdictions,
        region,
        "migration target",
    )
    .map_err(|e| {
        ControlRejection::Placement(crate::placement::PlacementError::Residency(e.to_string()))
    })?;
    if running.iter().any(|m| m.namespace == name) {
        return Err(refuse(&name, "another migration of it is running"));
    }
    if request.max_blocked_ms == 0 {
        return Err(refuse(&name, "--max-blocked-ms must be at least 1"));
    }
    if request.catch_up_timeout_ms == 0 {
        return Err(refuse(&name, "the catch-up timeout must be at least 1 ms"));
    }
    request.source_shard = namespace.shard.clone();
    request.source_region = namespace.policy.home_region.clone();
    request.original_mode = namespace.policy.mode;
    request.target_shard = String::new();
    request.added_target = false;
    request.cutover = None;
    request.source_released = false;
    Ok(request)
}

/// The copy a migration uses in its target region: a standby already there
/// (`false`: not added), or the least-loaded shard of the region with
/// members that holds no copy and none being deleted (`true`: added).
pub fn choose_target(
    migration: &Migration,
    namespace: &Namespace,
    shards: &BTreeMap<String, Shard>,
    load: &BTreeMap<String, usize>,
    being_deleted: &BTreeSet<String>,
) -> Result<(String, bool), ControlRejection> {
    if let Some(standby) = namespace
        .standbys
        .iter()
        .find(|s| s.region == migration.to_region)
    {
        return Ok((standby.shard.clone(), false));
    }
    shards
        .values()
        .filter(|s| s.region == migration.to_region && !s.members.is_empty())
        .filter(|s| s.id != namespace.shard && !being_deleted.contains(&s.id))
        .min_by_key(|s| (load.get(&s.id).copied().unwrap_or(0), s.id.clone()))
        .map(|s| (s.id.clone(), true))
        .ok_or_else(|| {
            refuse(
                &migration.namespace,
                format!(
                    "no shard in {} can take a copy (none with members, or its only shard still erases an older copy)",
                    migration.to_region
                ),
            )
        })
}

/// Where a migration re-places a standby (pure): a namespace that shipped
/// to standbys before the move (active-passive) and has none left but the
/// source copy about to be erased gets one on the least-loaded shard of an
/// allowed region other than its new home and the region it left. `None`:
/// it keeps another standby, was not replicated, or no region qualifies.
pub fn replacement_standby(
    migration: &Migration,
    namespace: &Namespace,
    regions: &BTreeMap<String, Region>,
    shards: &BTreeMap<String, Shard>,
    load: &BTreeMap<String, usize>,
    being_deleted: &BTreeSet<String>,
) -> Option<(String, String)> {
    if !matches!(migration.original_mode, NamespaceMode::ActivePassive { .. })
        || namespace
            .standbys
            .iter()
            .any(|s| s.shard != migration.source_shard)
    {
        return None;
    }
    shards
        .values()
        .filter(|s| !s.members.is_empty() && s.id != namespace.shard)
        .filter(|s| s.region != namespace.policy.home_region && s.region != migration.source_region)
        .filter(|s| !being_deleted.contains(&s.id))
        .filter(|s| {
            regions.get(&s.region).is_some_and(|region| {
                crate::residency::check_region(
                    &namespace.name,
                    &namespace.policy.allowed_jurisdictions,
                    region,
                    "standby",
                )
                .is_ok()
            })
        })
        .min_by_key(|s| (load.get(&s.id).copied().unwrap_or(0), s.id.clone()))
        .map(|s| (s.id.clone(), s.region.clone()))
}

/// What a migration's driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Choose (and, if new, create) the copy in the target region.
    AddTarget,
    /// Wait until the new copy trails the primary by at most
    /// [`CUTOVER_LAG_ENTRIES`] (or give up at `deadline_ms`), then cut over:
    /// block writes, verify and switch the route.
    CatchUp {
        /// Give up after this (Unix ms).
        deadline_ms: u64,
    },
    /// Keep the former primary's copy until then (Unix ms).
    KeepSource {
        /// Until when.
        until_ms: u64,
    },
    /// Hand the former primary's copy to the deletion worker.
    ReleaseSource,
    /// Wait until the shard confirms the copy is gone.
    AwaitErasure,
    /// Done: the copy is gone.
    Finished,
    /// Undo: the namespace stays where it was (the added copy goes).
    RollBack(String),
}

/// The next step of `migration` (started at `started_ms`), given the
/// namespace as it is now.
pub fn next_step(
    migration: &Migration,
    started_ms: u64,
    namespace: Option<&Namespace>,
    being_deleted: &BTreeSet<String>,
    cancel_requested: bool,
    now_ms: u64,
) -> Step {
    let Some(namespace) = namespace else {
        return Step::RollBack("the namespace was deleted".into());
    };
    match &migration.cutover {
        None => {
            if cancel_requested {
                return Step::RollBack("cancelled".into());
            }
            if namespace.shard != migration.source_shard {
                return Step::RollBack(format!(
                    "its primary moved to {} by a failover meanwhile",
                    namespace.shard
                ));
            }
            if migration.target_shard.is_empty() {
                return Step::AddTarget;
            }
            Step::CatchUp {
                deadline_ms: started_ms.saturating_add(migration.catch_up_timeout_ms),
            }
        }
        Some(cutover) => {
            if !migration.source_released {
                let until_ms = cutover.at_unix_ms.saturating_add(migration.keep_source_ms);
                if now_ms < until_ms {
                    return Step::KeepSource { until_ms };
                }
                return Step::ReleaseSource;
            }
            if being_deleted.contains(&migration.source_shard) {
                Step::AwaitErasure
            } else {
                Step::Finished
            }
        }
    }
}

/// Whether the new copy is close enough to start the cutover. A copy at 0
/// has not finished its full copy yet unless the primary is at 0 too (an
/// empty namespace): a primary that holds data starts its change log at 1
/// or later, so the number of changes between them says nothing about the
/// bytes still to copy.
pub fn within_reach(primary_seq: u64, copy_seq: u64) -> bool {
    (copy_seq > 0 || primary_seq == 0)
        && primary_seq.saturating_sub(copy_seq) <= CUTOVER_LAG_ENTRIES
}

/// What a cutover does once the source's lease is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutoverVerdict {
    /// The copy lacks changes still, and there is time: ask again.
    Wait,
    /// Out of budget: give the lease back; the source stays primary.
    OverBudget(String),
    /// The copies differ at the same change: give the lease back.
    Differ(String),
    /// Switch the route.
    Switch,
}

/// Which control-plane member should drive a cutover: every step of the
/// write block (revocation, the two sums, the route switch's commit, the
/// promotion) is a round trip from the leader, so a leader in a third
/// region pays its distance four times. `None` when this member (in
/// `my_region`) is in the source or target region already, or no member
/// is; otherwise a member of the source region (the revocation and the
/// source's sum become local), else one of the target region. `members`
/// are the other voters with their regions.
pub fn cutover_leader(
    my_region: &str,
    members: &[(u64, String)],
    source_region: &str,
    target_region: &str,
) -> Option<u64> {
    if my_region == source_region || my_region == target_region {
        return None;
    }
    [source_region, target_region]
        .into_iter()
        .find_map(|region| {
            members
                .iter()
                .filter(|(_, r)| r == region)
                .map(|(id, _)| *id)
                .min()
        })
}

/// What a drained move keeps in reserve, in ms, for the steps after its
/// decision: the route switch (one control-plane commit: the 90th
/// percentile of `recent_commits_ms`, or a round trip to the target when
/// nothing was committed lately) and the promotion (one round trip to the
/// target, `target_rtt_ms`).
pub fn switch_reserve_ms(target_rtt_ms: u64, recent_commits_ms: &[u64]) -> u64 {
    let commit = if recent_commits_ms.is_empty() {
        target_rtt_ms
    } else {
        let mut sorted = recent_commits_ms.to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample at or above 90 % of them.
        let rank = (sorted.len() * 9).div_ceil(10).max(1);
        sorted[rank - 1]
    };
    target_rtt_ms.saturating_add(commit)
}

/// Decides a cutover step: `elapsed_ms` since the revocation was sent,
/// `reserve_ms` what the route switch and the promotion will still take
/// (estimated from a measured round trip), `budget_ms` the longest block
/// allowed, `final_seq` the source's last change, `copy_seq` the new
/// copy's, and the two digests once both are at `final_seq` (`None` before
/// they were compared). Digests are compared only when both copies are at
/// the same change.
pub fn cutover_verdict(
    elapsed_ms: u64,
    reserve_ms: u64,
    budget_ms: u64,
    final_seq: u64,
    copy_seq: u64,
    digests: Option<(&str, &str)>,
) -> CutoverVerdict {
    if elapsed_ms.saturating_add(reserve_ms) > budget_ms {
        return CutoverVerdict::OverBudget(format!(
            "writes were blocked {elapsed_ms} ms with the new copy at change {copy_seq} of {final_seq}, and switching would take about {reserve_ms} ms more; the budget is {budget_ms} ms (--max-blocked-ms)"
        ));
    }
    // Behind: wait for it. Ahead: a write admitted before the revocation
    // landed after the source was read, so the two digests are of different
    // changes and prove nothing either way; both are read again.
    if copy_seq != final_seq {
        return CutoverVerdict::Wait;
    }
    match digests {
        None => CutoverVerdict::Wait,
        Some((source, copy)) if source != copy => CutoverVerdict::Differ(format!(
            "at change {final_seq} the source's digest is {source} and the new copy's {copy}"
        )),
        Some(_) => CutoverVerdict::Switch,
    }
}

/// The mode a namespace has while a migration runs: a region-locked one
/// ships to its new copy as async active-passive.
pub fn mode_during(original: NamespaceMode) -> NamespaceMode {
    match original {
        NamespaceMode::RegionLocked => NamespaceMode::ActivePassive { sync: false },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Cutover, FailoverOverride, MaxLag, PlacementPolicy, ShardMember, StandbyCopy,
        StandbyLossPolicy,
    };

    fn regions() -> BTreeMap<String, Region> {
        [("us-east", "US"), ("eu-west", "EU"), ("eu-central", "EU")]
            .into_iter()
            .map(|(name, tag)| {
                (
                    name.to_string(),
                    Region {
                        name: name.into(),
                        jurisdictions: [tag.to_string()].into(),
                        latitude: 0.0,
                        longitude: 0.0,
                    },
                )
            })
            .collect()
    }

    fn namespace(mode: NamespaceMode, standbys: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: "orders".into(),
            policy: PlacementPolicy {
                home_region: "eu-central".into(),
                mode,
                standby_regions: standbys.iter().map(|(r, _)| r.to_string()).collect(),
                allowed_jurisdictions: ["EU".to_string()].into(),
            },
            shard: "eu-central-s1".into(),
            epoch: 1,
            standbys: standbys
                .iter()
                .map(|(region, shard)| StandbyCopy {
                    region: region.to_string(),
                    shard: shard.to_string(),
                })
                .collect(),
            max_lag: MaxLag::default(),
            failover: FailoverOverride::default(),
            on_standby_loss: StandbyLossPolicy::default(),
            sync_degraded: false,
        }
    }

    fn request(to: &str) -> Migration {
        Migration {
            namespace: "orders".into(),
            to_region: to.into(),
            max_blocked_ms: 1000,
            keep_source_ms: 60_000,
            catch_up_timeout_ms: 600_000,
            source_shard: String::new(),
            source_region: String::new(),
            original_mode: NamespaceMode::RegionLocked,
            target_shard: String::new(),
            added_target: false,
            cutover: None,
            source_released: false,
        }
    }

    fn shards(ids: &[(&str, &str, bool)]) -> BTreeMap<String, Shard> {
        ids.iter()
            .map(|(id, region, has_members)| {
                let members = if *has_members {
                    [(
                        1,
                        ShardMember {
                            node_id: 1,
                            address: "127.0.0.1:1".into(),
                        },
                    )]
                    .into()
                } else {
                    BTreeMap::new()
                };
                (
                    id.to_string(),
                    Shard {
                        id: id.to_string(),
                        region: region.to_string(),
                        members,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_move_into_the_standby_region_re_places_the_standby() {
        // Moved eu-central -> eu-west into its standby; the source copy in
        // eu-central is about to go.
        let mut moved = namespace(
            NamespaceMode::ActivePassive { sync: false },
            &[("eu-central", "eu-central-s1")],
        );
        moved.shard = "eu-west-s1".into();
        moved.policy.home_region = "eu-west".into();
        let mut migration = request("eu-west");
        migration.source_shard = "eu-central-s1".into();
        migration.source_region = "eu-central".into();
        migration.original_mode = NamespaceMode::ActivePassive { sync: false };
        let mut regions = regions();
        regions.insert(
            "eu-north".into(),
            Region {
                name: "eu-north".into(),
                jurisdictions: ["EU".to_string()].into(),
                latitude: 0.0,
                longitude: 0.0,
            },
        );
        let all = shards(&[
            ("eu-west-s1", "eu-west", true),
            ("eu-central-s1", "eu-central", true),
            ("eu-central-s2", "eu-central", true),
            ("us-east-s1", "us-east", true),
            ("eu-north-s1", "eu-north", true),
            ("eu-north-s2", "eu-north", true),
        ]);
        let load: BTreeMap<String, usize> = [("eu-north-s1".to_string(), 3)].into();
        let none = BTreeSet::new();
        let choose = |migration: &Migration, namespace: &Namespace, deleting: &BTreeSet<String>| {
            replacement_standby(migration, namespace, &regions, &all, &load, deleting)
        };
        // Not its new home, not the region it left, not outside its
        // jurisdictions (us-east): the least-loaded eu-north shard.
        assert_eq!(
            choose(&migration, &moved, &none),
            Some(("eu-north-s2".into(), "eu-north".into()))
        );
        let deleting: BTreeSet<String> = ["eu-north-s2".to_string()].into();
        assert_eq!(
            choose(&migration, &moved, &deleting),
            Some(("eu-north-s1".into(), "eu-north".into()))
        );
        // Another standby is carried over: nothing to re-place.
        let mut kept = moved.clone();
        kept.standbys.push(StandbyCopy {
            region: "eu-north".into(),
            shard: "eu-north-s1".into(),
        });
        assert_eq!(choose(&migration, &kept, &none), None);
        // A region-locked namespace had no standby to carry.
        let mut locked = migration.clone();
        locked.original_mode = NamespaceMode::RegionLocked;
        assert_eq!(choose(&locked, &moved, &none), None);
        // No region left that qualifies: none.
        let few = shards(&[
            ("eu-west-s1", "eu-west", true),
            ("us-east-s1", "us-east", true),
        ]);
        assert_eq!(
            replacement_standby(&migration, &moved, &regions, &few, &load, &none),
            None
        );
    }

    #[test]
    fn plans_refuse_what_cannot_move() {
        let namespaces: BTreeMap<String, Namespace> = [(
            "orders".to_string(),
            namespace(NamespaceMode::RegionLocked, &[]),
        )]
        .into();
        let regions = regions();
        let planned = plan(request("eu-west"), &namespaces, &regions, &[]).unwrap();
        assert_eq!(planned.source_shard, "eu-central-s1");
        assert_eq!(planned.source_region, "eu-central");
        assert_eq!(planned.original_mode, NamespaceMode::RegionLocked);

        let cases: Vec<(Migration, &str)> = vec![
            (request("us-east"), "residency rule violated"),
            (
                request("eu-central"),
                "its primary is in eu-central already",
            ),
            (request("mars"), "unknown region"),
            (
                Migration {
                    namespace: "nope".into(),
                    ..request("eu-west")
                },
                "not found",
            ),
            (
                Migration {
                    max_blocked_ms: 0,
                    ..request("eu-west")
                },
                "--max-blocked-ms",
            ),
        ];
        for (asked, expected) in cases {
            let refused = plan(asked.clone(), &namespaces, &regions, &[]).unwrap_err();
            assert!(
                refused.to_string().contains(expected),
                "{asked:?}: {refused}"
            );
        }
        let running = planned.clone();
        let refused = plan(request("eu-west"), &namespaces, &regions, &[&running]).unwrap_err();
        assert!(refused.to_string().contains("another migration"));
        let active_active: BTreeMap<String, Namespace> = [(
            "orders".to_string(),
            namespace(NamespaceMode::ActiveActive, &[]),
        )]
        .into();
        assert!(plan(request("eu-west"), &active_active, &regions, &[]).is_err());
    }

    #[test]
    fn targets_prefer_a_standby_then_the_least_loaded_free_shard() {
        let shards = shards(&[
            ("eu-west-s1", "eu-west", true),
            ("eu-west-s2", "eu-west", true),
            ("eu-west-s3", "eu-west", false),
        ]);
        let load: BTreeMap<String, usize> =
            [("eu-west-s1".to_string(), 3), ("eu-west-s2".to_string(), 1)].into();
        let nothing = BTreeSet::new();
        let with_standby = namespace(
            NamespaceMode::ActivePassive { sync: false },
            &[("eu-west", "eu-west-s1")],
        );
        assert_eq!(
            choose_target(&request("eu-west"), &with_standby, &shards, &load, &nothing).unwrap(),
            ("eu-west-s1".to_string(), false)
        );
        let alone = namespace(NamespaceMode::RegionLocked, &[]);
        assert_eq!(
            choose_target(&request("eu-west"), &alone, &shards, &load, &nothing).unwrap(),
            ("eu-west-s2".to_string(), true)
        );
        // A shard still erasing an older copy is passed over.
        let erasing: BTreeSet<String> = ["eu-west-s2".to_string()].into();
        assert_eq!(
            choose_target(&request("eu-west"), &alone, &shards, &load, &erasing).unwrap(),
            ("eu-west-s1".to_string(), true)
        );
        let erasing_all: BTreeSet<String> =
            ["eu-west-s1".to_string(), "eu-west-s2".to_string()].into();
        assert!(choose_target(&request("eu-west"), &alone, &shards, &load, &erasing_all).is_err());
    }

    #[test]
    fn steps_follow_what_is_recorded() {
        let ns = namespace(NamespaceMode::RegionLocked, &[]);
        let none = BTreeSet::new();
        let mut m = plan(
            request("eu-west"),
            &[("orders".to_string(), ns.clone())].into(),
            &regions(),
            &[],
        )
        .unwrap();
        assert_eq!(
            next_step(&m, 0, Some(&ns), &none, false, 5),
            Step::AddTarget
        );
        assert!(matches!(
            next_step(&m, 0, None, &none, false, 5),
            Step::RollBack(_)
        ));
        assert_eq!(
            next_step(&m, 0, Some(&ns), &none, true, 5),
            Step::RollBack("cancelled".into())
        );
        m.target_shard = "eu-west-s1".into();
        assert_eq!(
            next_step(&m, 100, Some(&ns), &none, false, 5),
            Step::CatchUp {
                deadline_ms: 600_100
            }
        );
        let mut moved_away = ns.clone();
        moved_away.shard = "eu-central-s2".into();
        assert!(matches!(
            next_step(&m, 0, Some(&moved_away), &none, false, 5),
            Step::RollBack(_)
        ));
        m.cutover = Some(Cutover {
            at_unix_ms: 1_000,
            change_seq: 9,
            digest: "d".into(),
            epoch: 2,
            blocked_ms: 120,
        });
        // After the cutover a cancel changes nothing, and the namespace's
        // primary is the target now.
        let mut after = ns.clone();
        after.shard = "eu-west-s1".into();
        assert_eq!(
            next_step(&m, 0, Some(&after), &none, true, 2_000),
            Step::KeepSource { until_ms: 61_000 }
        );
        assert_eq!(
            next_step(&m, 0, Some(&after), &none, false, 61_000),
            Step::ReleaseSource
        );
        m.source_released = true;
        let erasing: BTreeSet<String> = ["eu-central-s1".to_string()].into();
        assert_eq!(
            next_step(&m, 0, Some(&after), &erasing, false, 61_000),
            Step::AwaitErasure
        );
        assert_eq!(
            next_step(&m, 0, Some(&after), &none, false, 61_000),
            Step::Finished
        );
    }

    #[test]
    fn cutovers_are_led_from_the_source_or_target_region() {
        let members = |list: &[(u64, &str)]| -> Vec<(u64, String)> {
            list.iter().map(|(id, r)| (*id, r.to_string())).collect()
        };
        let lab = members(&[(1, "us-east"), (2, "eu-west")]);
        // (this member's region, the others, source, target, hand to)
        type Case<'a> = (&'a str, &'a [(u64, String)], &'a str, &'a str, Option<u64>);
        let cases: &[Case] = &[
            // Already next to the move: stay.
            ("us-east", &lab, "us-east", "eu-west", None),
            ("eu-west", &lab, "us-east", "eu-west", None),
            // From a third region: the source's member, else the target's.
            ("ap-south", &lab, "us-east", "eu-west", Some(1)),
            ("ap-south", &lab, "eu-west", "us-east", Some(2)),
            ("ap-south", &lab[1..], "us-east", "eu-west", Some(2)),
            // Nobody nearer: stay.
            ("ap-south", &lab, "sa-east", "ca-central", None),
            ("ap-south", &[], "us-east", "eu-west", None),
        ];
        for (mine, others, source, target, expected) in cases {
            assert_eq!(
                cutover_leader(mine, others, source, target),
                *expected,
                "{mine} {others:?} {source} -> {target}"
            );
        }
        // Several in the region: the lowest id, so every try picks the same.
        let two = members(&[(7, "us-east"), (3, "us-east")]);
        assert_eq!(
            cutover_leader("ap-south", &two, "us-east", "eu-west"),
            Some(3)
        );
    }

    #[test]
    fn the_reserve_is_a_round_trip_and_a_recent_commit() {
        let cases: &[(u64, &[u64], u64)] = &[
            // Nothing committed lately: two round trips, as before.
            (80, &[], 160),
            (0, &[], 0),
            // One sample: it is the percentile.
            (80, &[30], 110),
            // Ten samples: the ninth smallest (the slowest is an outlier
            // the estimate does not chase).
            (80, &[5, 9, 12, 7, 6, 8, 10, 11, 400, 13], 80 + 13),
            // Twenty: the eighteenth smallest.
            (
                120,
                &[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                ],
                120 + 18,
            ),
            // Saturating, never overflowing.
            (u64::MAX, &[5], u64::MAX),
        ];
        for (rtt, commits, expected) in cases {
            assert_eq!(
                switch_reserve_ms(*rtt, commits),
                *expected,
                "{rtt} {commits:?}"
            );
        }
    }

    #[test]
    fn cutovers_switch_only_in_budget_and_with_equal_digests() {
        let cases = [
            (10, 0, 1000, 50, 49, None, CutoverVerdict::Wait),
            (10, 0, 1000, 50, 50, None, CutoverVerdict::Wait),
            (
                10,
                0,
                1000,
                50,
                50,
                Some(("a", "a")),
                CutoverVerdict::Switch,
            ),
            (
                10,
                900,
                1000,
                50,
                50,
                Some(("a", "a")),
                CutoverVerdict::Switch,
            ),
            (
                1001,
                0,
                1000,
                50,
                50,
                Some(("a", "a")),
                CutoverVerdict::OverBudget(String::new()),
            ),
            // In time so far, but the switch itself would run over.
            (
                700,
                400,
                1000,
                50,
                50,
                Some(("a", "a")),
                CutoverVerdict::OverBudget(String::new()),
            ),
            (
                1001,
                0,
                1000,
                50,
                40,
                None,
                CutoverVerdict::OverBudget(String::new()),
            ),
            (
                10,
                0,
                1000,
                50,
                50,
                Some(("a", "b")),
                CutoverVerdict::Differ(String::new()),
            ),
            // The copy answered from a later change than the source's read
            // (a late write landed in between): digests of different
            // changes say nothing; both are read again.
            (10, 0, 1000, 50, 51, Some(("a", "b")), CutoverVerdict::Wait),
        ];
        for (elapsed, reserve, budget, goal, at, digests, expected) in cases {
            let verdict = cutover_verdict(elapsed, reserve, budget, goal, at, digests);
            assert_eq!(
                std::mem::discriminant(&verdict),
                std::mem::discriminant(&expected),
                "{elapsed} {reserve} {budget} {goal} {at} {digests:?}: {verdict:?}"
            );
        }
        assert!(within_reach(300, 300 - CUTOVER_LAG_ENTRIES));
        assert!(!within_reach(300, 300 - CUTOVER_LAG_ENTRIES - 1));
        // Still copying: a few changes ahead, but the data is not there.
        assert!(!within_reach(3, 0));
        assert!(within_reach(0, 0));
        assert!(within_reach(3, 3));
        assert_eq!(
            mode_during(NamespaceMode::RegionLocked),
            NamespaceMode::ActivePassive { sync: false }
        );
        assert_eq!(
            mode_during(NamespaceMode::ActivePassive { sync: true }),
            NamespaceMode::ActivePassive { sync: true }
        );
    }
}
