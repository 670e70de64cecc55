//! Disaster-recovery rules the control plane decides (pure, table-tested):
//! which backup locations may exist, where a backup may go, and where and
//! how a backup may be restored.

use crate::command::ControlRejection;
use crate::model::{BackupLocation, Region};
use std::collections::BTreeMap;

/// `location` completed (jurisdictions default to its region's) and
/// checked: a known region; a name of 1-64 characters from `a-z`, `0-9`,
/// `-`, `_`; only jurisdictions its region is tagged with (a location in
/// us-east cannot claim to be in the EU); and no different location under
/// the same name (locations are never changed in place — backups name them).
pub fn check_location(
    mut location: BackupLocation,
    regions: &BTreeMap<String, Region>,
    existing: &BTreeMap<String, BackupLocation>,
) -> Result<BackupLocation, ControlRejection> {
    let refuse = |reason: String| ControlRejection::Location {
        name: location.name.clone(),
        reason,
    };
    let name_ok = !location.name.is_empty()
        && location.name.len() <= 64
        && location
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err(refuse(
            "a name is 1-64 characters from a-z, 0-9, '-', '_'".into(),
        ));
    }
    let Some(region) = regions.get(&location.region) else {
        return Err(refuse(format!(
            "unknown region {:?}; regions: {}",
            location.region,
            regions.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    if location.jurisdictions.is_empty() {
        location.jurisdictions = region.jurisdictions.clone();
    }
    let foreign: Vec<&String> = location
        .jurisdictions
        .difference(&region.jurisdictions)
        .collect();
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "region {} is tagged {:?}; a location there cannot claim {:?}",
            region.name, region.jurisdictions, foreign
        )));
    }
    if let Some(current) = existing.get(&location.name)
        && *current != location
    {
        return Err(refuse(format!(
            "it exists as {} in region {} ({:?}); locations are not changed in place",
            current.url, current.region, current.jurisdictions
        )));
    }
    Ok(location)
}

/// Residency, failing closed: a backup of `namespace` (allowed in
/// `allowed`) may go to `location` only if the location's jurisdictions
/// share one with it — never to a default or a "nearest" place instead.
pub fn check_backup_target(
    namespace: &str,
    allowed: &std::collections::BTreeSet<String>,
    location: &BackupLocation,
) -> Result<(), String> {
    if meridian_access::residency::may_hold(allowed, &location.jurisdictions) {
        Ok(())
    } else {
        Err(format!(
            "residency: namespace {namespace:?} may only be held in jurisdictions {allowed:?}; location {} (region {}) holds {:?}, so no backup goes there",
            location.name, location.region, location.jurisdictions
        ))
    }
}

/// Whether a namespace in `mode` can be backed up (pure): active-active
/// namespaces are refused, saying why (see
/// [`meridian_replication::mode::ActiveActive::backup_refusal`]).
pub fn check_backup_mode(namespace: &str, mode: crate::model::NamespaceMode) -> Result<(), String> {
    match mode {
        crate::model::NamespaceMode::ActiveActive => Err(
            meridian_replication::mode::ActiveActive::backup_refusal(namespace),
        ),
        _ => Ok(()),
    }
}

/// `backup`'s chain, full backup first: each incremental backup's parent
/// must be in the catalog, of the same namespace and location, and end at
/// the sequence the child starts from.
pub fn chain_of<'a>(
    backup: &'a crate::model::BackupRecord,
    catalog: &'a BTreeMap<String, crate::model::BackupRecord>,
) -> Result<Vec<&'a crate::model::BackupRecord>, String> {
    let mut chain = vec![backup];
    let mut current = backup;
    while let Some(parent_id) = &current.parent {
        let Some(parent) = catalog.get(parent_id) else {
            return Err(format!(
                "backup {} continues backup {parent_id}, which is not in the catalog",
                current.backup_id
            ));
        };
        if parent.namespace != current.namespace
            || parent.location != current.location
            || parent.change_seq != current.from_seq
            || chain.len() > catalog.len()
        {
            return Err(format!(
                "backup {} does not continue backup {parent_id} (namespace, location or change sequence differ)",
                current.backup_id
            ));
        }
        chain.push(parent);
        current = parent;
    }
    chain.reverse();
    Ok(chain)
}

/// Shortest interval between scheduled backups.
pub const MIN_BACKUP_EVERY_MS: u64 = 1_000;

/// `schedule` checked: the namespace and location exist, the location may
/// hold the namespace (residency, as for any backup), at least
/// [`MIN_BACKUP_EVERY_MS`] between backups, and backups kept at least one
/// interval.
pub fn check_schedule(
    schedule: crate::model::BackupSchedule,
    namespaces: &BTreeMap<String, crate::model::Namespace>,
    locations: &BTreeMap<String, BackupLocation>,
) -> Result<crate::model::BackupSchedule, ControlRejection> {
    let refuse = |reason: String| ControlRejection::Schedule {
        namespace: schedule.namespace.clone(),
        reason,
    };
    let Some(namespace) = namespaces.get(&schedule.namespace) else {
        return Err(ControlRejection::NamespaceNotFound(schedule.namespace));
    };
    let Some(location) = locations.get(&schedule.location) else {
        return Err(refuse(format!(
            "no backup location {:?} (meridian dr location list)",
            schedule.location
        )));
    };
    check_backup_mode(&schedule.namespace, namespace.policy.mode).map_err(refuse)?;
    check_backup_target(
        &schedule.namespace,
        &namespace.policy.allowed_jurisdictions,
        location,
    )
    .map_err(refuse)?;
    if schedule.every_ms < MIN_BACKUP_EVERY_MS {
        return Err(refuse(format!(
            "backups at most once a second (every >= {MIN_BACKUP_EVERY_MS} ms; asked {} ms)",
            schedule.every_ms
        )));
    }
    if schedule.keep_ms < schedule.every_ms {
        return Err(refuse(format!(
            "keep ({} ms) must be at least the interval ({} ms), or no backup would outlive the next",
            schedule.keep_ms, schedule.every_ms
        )));
    }
    Ok(schedule)
}

/// Which backups of one namespace in one location retention removes at
/// `now_ms` (pure): those taken more than `keep_ms` ago — except the newest
/// backup (so a restorable chain always remains) and every backup a kept
/// backup's chain needs. Oldest first.
pub fn expired(backups: &[&crate::model::BackupRecord], now_ms: u64, keep_ms: u64) -> Vec<String> {
    let by_id: BTreeMap<&str, &crate::model::BackupRecord> =
        backups.iter().map(|b| (b.backup_id.as_str(), *b)).collect();
    let cutoff = now_ms.saturating_sub(keep_ms);
    let newest = backups
        .iter()
        .max_by_key(|b| (b.change_seq, b.created_unix_ms))
        .map(|b| b.backup_id.as_str());
    let mut kept: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for backup in backups {
        if backup.created_unix_ms < cutoff && Some(backup.backup_id.as_str()) != newest {
            continue;
        }
        // Keep it and its chain.
        let mut current = Some(*backup);
        while let Some(b) = current {
            if !kept.insert(b.backup_id.as_str()) {
                break;
            }
            current = b.parent.as_deref().and_then(|p| by_id.get(p).copied());
        }
    }
    let mut gone: Vec<&crate::model::BackupRecord> = backups
        .iter()
        .copied()
        .filter(|b| !kept.contains(b.backup_id.as_str()))
        .collect();
    gone.sort_by_key(|b| (b.created_unix_ms, b.change_seq));
    gone.into_iter().map(|b| b.backup_id.clone()).collect()
}

/// The scheduled backups due at `now_ms` (pure): a schedule is due once
/// its interval has passed since the later of its namespace's latest backup
/// in its location and the latest backup job started for it (so a failing
/// backup is tried again at the schedule's pace, not in a loop), and no
/// backup job of it is running.
pub fn due_backups(
    schedules: &BTreeMap<String, crate::model::BackupSchedule>,
    backups: &BTreeMap<String, crate::model::BackupRecord>,
    jobs: &BTreeMap<u64, crate::model::Job>,
    now_ms: u64,
) -> Vec<crate::model::BackupSpec> {
    schedules
        .values()
        .filter(|schedule| {
            let mut last = 0;
            for backup in backups.values() {
                if backup.namespace == schedule.namespace && backup.location == schedule.location {
                    last = last.max(backup.created_unix_ms);
                }
            }
            for job in jobs.values() {
                if let crate::model::JobSpec::Backup(spec) = &job.spec
                    && spec.namespace == schedule.namespace
                {
                    if job.is_running() {
                        return false;
                    }
                    last = last.max(job.created_unix_ms);
                }
            }
            last == 0 || now_ms >= last.saturating_add(schedule.every_ms)
        })
        .map(|schedule| crate::model::BackupSpec {
            namespace: schedule.namespace.clone(),
            location: schedule.location.clone(),
        })
        .collect()
}

/// The change a backup chain is restored to for wall-clock time `at_ms`
/// (pure): the last change marked at or before it — the namespace exactly
/// as it was at that mark, nothing written after `at_ms`, and at most a
/// mark interval (about a second) of writes before it left out. `start` is
/// the chain's full backup (its change, and when it was taken: by then it
/// had reached that change); `marks` are the time marks the chain's backups
/// carry (change, Unix ms); `end_seq` the change the chain ends at.
pub fn seq_at_time(
    start: (u64, u64),
    marks: &[(u64, u64)],
    end_seq: u64,
    at_ms: u64,
) -> Result<u64, String> {
    let (start_seq, start_ms) = start;
    if at_ms < start_ms {
        return Err(format!(
            "{at_ms} (Unix ms) is before the chain's full backup, taken at {start_ms} (change {start_seq}): no backup holds the namespace as it was then"
        ));
    }
    Ok(marks
        .iter()
        .filter(|(seq, ms)| *ms <= at_ms && *seq > start_seq && *seq <= end_seq)
        .map(|(seq, _)| *seq)
        .max()
        .unwrap_or(start_seq))
}

/// What a restore was asked for.
#[derive(Debug, Clone, Default)]
pub struct RestoreAsk {
    /// Target name (empty: the backup's namespace).
    pub as_name: String,
    /// Region (empty: the namespace's home region if it still exists, else
    /// the location's region).
    pub region: String,
    /// Change sequence (`None`: the backup's).
    pub at_seq: Option<u64>,
}

/// Decides a restore of `backup` (pure): the target, its region and
/// placement, or the rule that refuses it. The data may only go to a region
/// whose jurisdictions the backup's namespace allowed (residency fails
/// closed: no default region instead); the backup must be verified; the
/// target is a region-locked namespace with the backup's jurisdictions
/// (standbys can be added once it exists).
pub fn plan_restore(
    backup: &crate::model::BackupRecord,
    catalog: &BTreeMap<String, crate::model::BackupRecord>,
    current: Option<&crate::model::Namespace>,
    regions: &BTreeMap<String, Region>,
    locations: &BTreeMap<String, BackupLocation>,
    ask: &RestoreAsk,
) -> Result<crate::model::RestoreSpec, String> {
    let chain = chain_of(backup, catalog)?;
    if let Some(bad) = chain.iter().find(|b| !b.verified) {
        return Err(format!(
            "backup {} is not verified (its last check failed); a restore needs every backup of its chain verified (meridian dr validate {})",
            bad.backup_id, bad.backup_id
        ));
    }
    if !locations.contains_key(&backup.location) {
        return Err(format!(
            "backup {}: its location {:?} is not known",
            backup.backup_id, backup.location
        ));
    }
    let jurisdictions = if !backup.jurisdictions.is_empty() {
        backup.jurisdictions.clone()
    } else if let Some(ns) = current {
        ns.policy.allowed_jurisdictions.clone()
    } else {
        return Err(format!(
            "backup {} does not record its namespace's jurisdictions and namespace {:?} is gone, so where it may be restored cannot be decided",
            backup.backup_id, backup.namespace
        ));
    };
    let region_name = if !ask.region.is_empty() {
        ask.region.clone()
    } else if let Some(ns) = current {
        ns.policy.home_region.clone()
    } else {
        backup.location_region.clone()
    };
    let Some(region) = regions.get(&region_name) else {
        return Err(format!(
            "unknown region {region_name:?}; regions: {}",
            regions.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    };
    if !meridian_access::residency::may_hold(&jurisdictions, &region.jurisdictions) {
        return Err(format!(
            "residency: backup {} holds namespace {:?}, which may only be held in jurisdictions {:?}; region {} is {:?}, so it is not restored there",
            backup.backup_id, backup.namespace, jurisdictions, region.name, region.jurisdictions
        ));
    }
    let at_seq = ask.at_seq.unwrap_or(backup.change_seq);
    let full = &chain[0];
    if at_seq < full.change_seq || at_seq > backup.change_seq {
        return Err(format!(
            "change {at_seq} is outside the chain of backup {}, which reaches changes {} (full backup {}) through {}",
            backup.backup_id, full.change_seq, full.backup_id, backup.change_seq
        ));
    }
    let target = if ask.as_name.is_empty() {
        backup.namespace.clone()
    } else {
        ask.as_name.clone()
    };
    // The shards' rule for names, checked here so a bad name is refused
    // before a job starts.
    let name_ok = meridian_proto::names::is_namespace_name(&target);
    if !name_ok {
        return Err(format!(
            "namespace name {target:?}: 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ));
    }
    Ok(crate::model::RestoreSpec {
        backup_id: full.backup_id.clone(),
        source_namespace: backup.namespace.clone(),
        target,
        location: backup.location.clone(),
        // Only the incremental backups with changes at or before at_seq.
        incrementals: chain[1..]
            .iter()
            .filter(|b| b.from_seq < at_seq)
            .map(|b| b.backup_id.clone())
            .collect(),
        at_seq,
        policy: crate::model::PlacementPolicy {
            home_region: region.name.clone(),
            mode: crate::model::NamespaceMode::RegionLocked,
            standby_regions: Vec::new(),
            allowed_jurisdictions: jurisdictions,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_picks_the_last_change_marked_at_or_before_it() {
        let marks = [(12, 2_000), (15, 3_000), (19, 4_000), (30, 9_000)];
        // (case, at, end of the chain, change or refusal)
        let cases: [(&str, u64, u64, Result<u64, &str>); 7] = [
            (
                "before the full backup",
                999,
                30,
                Err("before the chain's full backup"),
            ),
            ("at the full backup", 1_000, 30, Ok(10)),
            ("before the first mark", 1_999, 30, Ok(10)),
            ("on a mark", 3_000, 30, Ok(15)),
            ("between marks", 3_999, 30, Ok(15)),
            ("after the last mark", 99_000, 30, Ok(30)),
            (
                "marks past the chain's end do not count",
                99_000,
                20,
                Ok(19),
            ),
        ];
        for (case, at, end, expected) in cases {
            let found = seq_at_time((10, 1_000), &marks, end, at);
            match expected {
                Ok(seq) => assert_eq!(found, Ok(seq), "{case}"),
                Err(rule) => assert!(
                    found.as_ref().is_err_and(|e| e.contains(rule)),
                    "{case}: {found:?}"
                ),
            }
        }
    }

    fn regions() -> BTreeMap<String, Region> {
        [("eu-west", &["EU"][..]), ("us-east", &["US", "US-VA"][..])]
            .into_iter()
            .map(|(name, tags)| {
                (
                    name.to_string(),
                    Region {
                        name: name.into(),
                        jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
                        latitude: 0.0,
                        longitude: 0.0,
                    },
                )
            })
            .collect()
    }

    fn location(name: &str, region: &str, tags: &[&str]) -> BackupLocation {
        BackupLocation {
            name: name.into(),
            url: format!("file:///backups/{name}"),
            region: region.into(),
            jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn location_rules() {
        let existing: BTreeMap<String, BackupLocation> = [(
            "eu-vault".to_string(),
            location("eu-vault", "eu-west", &["EU"]),
        )]
        .into();
        // (case, location, refusal containing, or None when accepted)
        let cases = [
            (
                "defaults to the region's tags",
                location("us-vault", "us-east", &[]),
                None,
            ),
            (
                "a subset of the region's tags",
                location("va", "us-east", &["US-VA"]),
                None,
            ),
            (
                "the same one again",
                location("eu-vault", "eu-west", &["EU"]),
                None,
            ),
            (
                "a tag its region lacks",
                location("fake-eu", "us-east", &["EU"]),
                Some("cannot claim"),
            ),
            (
                "an unknown region",
                location("x", "mars", &[]),
                Some("unknown region"),
            ),
            (
                "a bad name",
                location("Bad Name", "eu-west", &[]),
                Some("1-64 characters"),
            ),
            (
                "a different one under a used name",
                location("eu-vault", "us-east", &["US"]),
                Some("not changed in place"),
            ),
        ];
        for (case, candidate, refusal) in cases {
            match (check_location(candidate, &regions(), &existing), refusal) {
                (Ok(_), None) => {}
                (Err(err), Some(why)) => assert!(err.to_string().contains(why), "{case}: {err}"),
                (other, _) => panic!("{case}: {other:?}"),
            }
        }
        let eu: std::collections::BTreeSet<String> = ["EU".to_string()].into();
        assert!(check_backup_target("gdpr", &eu, &location("v", "eu-west", &["EU"])).is_ok());
        let refused =
            check_backup_target("gdpr", &eu, &location("v", "us-east", &["US"])).unwrap_err();
        assert!(
            refused.contains("residency") && refused.contains("\"gdpr\""),
            "{refused}"
        );
        let completed =
            check_location(location("u", "us-east", &[]), &regions(), &existing).unwrap();
        assert_eq!(completed.jurisdictions, regions()["us-east"].jurisdictions);
    }

    fn backup(jurisdictions: &[&str], verified: bool) -> crate::model::BackupRecord {
        crate::model::BackupRecord {
            backup_id: "gdpr-1-aa".into(),
            namespace: "gdpr".into(),
            location: "eu-vault".into(),
            location_region: "eu-west".into(),
            shard: "eu-west-a".into(),
            node_id: 1,
            change_seq: 40,
            key_count: 10,
            digest: "d".into(),
            stored_bytes: 1,
            objects: 1,
            verified,
            created_unix_ms: 1,
            elapsed_ms: 1,
            jurisdictions: jurisdictions.iter().map(|t| t.to_string()).collect(),
            parent: None,
            from_seq: 0,
        }
    }

    /// (case, backup, ask, Ok((target, region)) or Err(refusal containing))
    type RestoreCase = (
        &'static str,
        crate::model::BackupRecord,
        RestoreAsk,
        Result<(&'static str, &'static str), &'static str>,
    );

    #[test]
    fn restore_rules() {
        let locations: BTreeMap<String, BackupLocation> = [(
            "eu-vault".to_string(),
            location("eu-vault", "eu-west", &["EU"]),
        )]
        .into();
        // at 0 stands for "not given" in these tables.
        let ask = |as_name: &str, region: &str, at_seq: u64| RestoreAsk {
            as_name: as_name.into(),
            region: region.into(),
            at_seq: (at_seq != 0).then_some(at_seq),
        };
        // (case, backup, ask, Ok((target, region)) or Err(refusal containing))
        let cases: Vec<RestoreCase> = vec![
            (
                "defaults: own name, location's region",
                backup(&["EU"], true),
                ask("", "", 0),
                Ok(("gdpr", "eu-west")),
            ),
            (
                "a new name in an allowed region",
                backup(&["EU"], true),
                ask("gdpr2", "eu-west", 40),
                Ok(("gdpr2", "eu-west")),
            ),
            (
                "a region outside the jurisdictions",
                backup(&["EU"], true),
                ask("x", "us-east", 0),
                Err("residency"),
            ),
            (
                "an unknown region",
                backup(&["EU"], true),
                ask("x", "mars", 0),
                Err("unknown region"),
            ),
            (
                "an unverified backup",
                backup(&["EU"], false),
                ask("x", "eu-west", 0),
                Err("not verified"),
            ),
            (
                "another change without a chain",
                backup(&["EU"], true),
                ask("x", "eu-west", 41),
                Err("outside the chain"),
            ),
            (
                "no recorded jurisdictions, namespace gone",
                backup(&[], true),
                ask("x", "eu-west", 0),
                Err("cannot be decided"),
            ),
            (
                "a bad target name",
                backup(&["EU"], true),
                ask("Bad Name", "eu-west", 0),
                Err("1-63 characters"),
            ),
        ];
        for (case, record, asked, expected) in cases {
            let catalog = BTreeMap::from([(record.backup_id.clone(), record.clone())]);
            match (
                plan_restore(&record, &catalog, None, &regions(), &locations, &asked),
                expected,
            ) {
                (Ok(spec), Ok((target, region))) => {
                    assert_eq!(spec.target, target, "{case}");
                    assert_eq!(spec.policy.home_region, region, "{case}");
                    assert_eq!(
                        spec.policy.allowed_jurisdictions, record.jurisdictions,
                        "{case}"
                    );
                    assert_eq!(spec.at_seq, 40, "{case}");
                }
                (Err(err), Err(why)) => assert!(err.contains(why), "{case}: {err}"),
                (other, _) => panic!("{case}: {other:?}"),
            }
        }
        let no_locations = BTreeMap::new();
        let catalog = BTreeMap::from([("gdpr-1-aa".to_string(), backup(&["EU"], true))]);
        assert!(
            plan_restore(
                &backup(&["EU"], true),
                &catalog,
                None,
                &regions(),
                &no_locations,
                &ask("", "", 0)
            )
            .unwrap_err()
            .contains("not known")
        );
        // A chain: full at 40, incrementals to 50 and 60.
        let incremental = |id: &str, parent: &str, from: u64, to: u64| crate::model::BackupRecord {
            backup_id: id.into(),
            parent: Some(parent.into()),
            from_seq: from,
            change_seq: to,
            ..backup(&["EU"], true)
        };
        let chain: BTreeMap<String, crate::model::BackupRecord> = [
            backup(&["EU"], true),
            incremental("i1", "gdpr-1-aa", 40, 50),
            incremental("i2", "i1", 50, 60),
        ]
        .into_iter()
        .map(|b| (b.backup_id.clone(), b))
        .collect();
        let plan_in = |catalog: &BTreeMap<String, crate::model::BackupRecord>, at| {
            plan_restore(
                &chain["i2"],
                catalog,
                None,
                &regions(),
                &locations,
                &ask("x", "", at),
            )
        };
        // (at, Ok(incrementals) or Err)
        let at_cases: [(u64, Result<&[&str], &str>); 6] = [
            (0, Ok(&["i1", "i2"])),
            (60, Ok(&["i1", "i2"])),
            (55, Ok(&["i1", "i2"])),
            (50, Ok(&["i1"])),
            (40, Ok(&[])),
            (39, Err("outside the chain")),
        ];
        for (at, expected) in at_cases {
            match (plan_in(&chain, at), expected) {
                (Ok(spec), Ok(incrementals)) => {
                    assert_eq!(spec.backup_id, "gdpr-1-aa");
                    assert_eq!(spec.incrementals, incrementals, "at {at}");
                    assert_eq!(spec.at_seq, if at == 0 { 60 } else { at });
                }
                (Err(err), Err(why)) => assert!(err.contains(why), "at {at}: {err}"),
                (other, _) => panic!("at {at}: {other:?}"),
            }
        }
        // Change 0 asked for explicitly is before this chain's full backup.
        let explicit_zero = plan_restore(
            &chain["i2"],
            &chain,
            None,
            &regions(),
            &locations,
            &RestoreAsk {
                as_name: "x".into(),
                region: String::new(),
                at_seq: Some(0),
            },
        );
        assert!(explicit_zero.unwrap_err().contains("outside the chain"));
        // A broken chain: a missing or unverified parent.
        let mut broken = chain.clone();
        broken.remove("i1");
        assert!(
            plan_in(&broken, 0)
                .unwrap_err()
                .contains("not in the catalog")
        );
        let mut unverified = chain.clone();
        if let Some(i1) = unverified.get_mut("i1") {
            i1.verified = false;
        }
        assert!(
            plan_in(&unverified, 0)
                .unwrap_err()
                .contains("backup i1 is not verified")
        );
    }

    #[test]
    fn retention_keeps_the_newest_backup_and_every_chain_it_needs() {
        // (id, parent, change, taken at)
        let record =
            |id: &str, parent: Option<&str>, seq: u64, at: u64| crate::model::BackupRecord {
                backup_id: id.into(),
                parent: parent.map(Into::into),
                from_seq: 0,
                change_seq: seq,
                created_unix_ms: at,
                ..backup(&["EU"], true)
            };
        let all = [
            record("f1", None, 10, 100),
            record("i1", Some("f1"), 20, 200),
            record("i2", Some("i1"), 30, 300),
            record("f2", None, 40, 400),
            record("i3", Some("f2"), 50, 500),
        ];
        let refs: Vec<&crate::model::BackupRecord> = all.iter().collect();
        // (now, keep, expired)
        let cases: [(u64, u64, &[&str]); 6] = [
            // Everything young: nothing goes.
            (500, 1_000, &[]),
            // f1..i2 old, but i2 is... old too: they go; f2's chain stays.
            (1_000, 650, &["f1", "i1", "i2"]),
            // i2 kept (taken at 300 >= 250) needs i1 and f1.
            (550, 300, &[]),
            // Only f1 and i1 are older than the cutoff, yet i2 needs them.
            (500, 250, &[]),
            // All old: the newest (i3) and its full backup (f2) stay.
            (10_000, 100, &["f1", "i1", "i2"]),
            // Keep 0 still keeps the newest chain.
            (10_000, 0, &["f1", "i1", "i2"]),
        ];
        for (now, keep, expected) in cases {
            assert_eq!(expired(&refs, now, keep), expected, "now {now} keep {keep}");
        }
        assert!(expired(&[], 10, 1).is_empty());
    }

    #[test]
    fn active_active_namespaces_are_not_backed_up() {
        use crate::model::NamespaceMode;
        let rows = [
            (NamespaceMode::RegionLocked, true),
            (NamespaceMode::ActivePassive { sync: false }, true),
            (NamespaceMode::ActivePassive { sync: true }, true),
            (NamespaceMode::ActiveActive, false),
        ];
        for (mode, allowed) in rows {
            let verdict = check_backup_mode("carts", mode);
            assert_eq!(verdict.is_ok(), allowed, "{mode:?}: {verdict:?}");
            if let Err(why) = verdict {
                assert!(
                    why.contains("\"carts\" is active-active") && why.contains("not supported"),
                    "{why}"
                );
            }
        }
    }

    #[test]
    fn scheduled_backups_are_due_once_per_interval_and_never_twice_at_once() {
        let schedule = crate::model::BackupSchedule {
            namespace: "gdpr".into(),
            location: "eu-vault".into(),
            every_ms: 100,
            keep_ms: 1_000,
            incrementals_per_full: 2,
            created_by: "t".into(),
            created_unix_ms: 0,
        };
        let schedules = BTreeMap::from([("gdpr".to_string(), schedule)]);
        let taken_at = |at: u64| {
            BTreeMap::from([(
                "b".to_string(),
                crate::model::BackupRecord {
                    created_unix_ms: at,
                    ..backup(&["EU"], true)
                },
            )])
        };
        let job = |at: u64, state: crate::model::JobState| crate::model::Job {
            id: 1,
            spec: crate::model::JobSpec::Backup(crate::model::BackupSpec {
                namespace: "gdpr".into(),
                location: "eu-vault".into(),
            }),
            state,
            step: String::new(),
            shard: String::new(),
            done_units: 0,
            total_units: 0,
            created_unix_ms: at,
            updated_unix_ms: at,
            message: String::new(),
            requested_by: String::new(),
            attempts: 0,
            cancel_requested: false,
            digest: String::new(),
            change_seq: 0,
        };
        use crate::model::JobState::{Failed, Running};
        let none = BTreeMap::new();
        // (case, backups, jobs, now, due)
        let cases = [
            ("never backed up", BTreeMap::new(), none.clone(), 5, true),
            (
                "within the interval",
                taken_at(1_000),
                none.clone(),
                1_099,
                false,
            ),
            (
                "the interval passed",
                taken_at(1_000),
                none.clone(),
                1_100,
                true,
            ),
            (
                "one is running",
                taken_at(1_000),
                BTreeMap::from([(1, job(1_050, Running))]),
                5_000,
                false,
            ),
            (
                "a failed try waits an interval",
                taken_at(1_000),
                BTreeMap::from([(1, job(1_150, Failed))]),
                1_200,
                false,
            ),
            (
                "then it is tried again",
                taken_at(1_000),
                BTreeMap::from([(1, job(1_150, Failed))]),
                1_250,
                true,
            ),
        ];
        for (case, backups, jobs, now, due) in cases {
            let found = due_backups(&schedules, &backups, &jobs, now);
            assert_eq!(found.len(), usize::from(due), "{case}");
        }
    }
}
