//! The control plane's own backups: written by the leader (read back and
//! checked before it is reported), listed from a location, and restored
//! into a new control plane, which then rebuilds (see [`crate::rebuild`]).
//!
//! A backup holds every stored record of the state at one applied index,
//! taken under the state's read lock (so it is one consistent state), in
//! `meridian_dr::control`'s layout, sealed under the key-encryption key
//! (`node.encryption_key_file`: the control plane that restores it needs
//! the same key file).

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::error::ControlError;
use crate::node::{ControlNode, now_unix_ms};
use meridian_dr::DrError;
use meridian_proto::v1 as pb;

/// The largest control-plane backup a restore takes (its records before
/// compression): they travel as one replicated command.
pub const MAX_RESTORE_BYTES: u64 = 64 << 20;

fn kek(node: &ControlNode) -> Result<[u8; 32], ControlError> {
    let Some(key_file) = node.config.node.key_file() else {
        return Err(ControlError::Refused(
            "control-plane backups are sealed with the key-encryption key: set node.encryption_key_file (a control plane restoring it needs the same key file)".into(),
        ));
    };
    Ok(meridian_raft::at_rest::read_key_file(key_file)?)
}

/// A backup problem as the API reports it.
fn dr_error(err: DrError) -> ControlError {
    match err {
        DrError::Location { .. } => ControlError::Invalid(err.to_string()),
        DrError::Missing { .. } => ControlError::NotFound(err.to_string()),
        DrError::Damaged { .. }
        | DrError::Manifest { .. }
        | DrError::DigestMismatch { .. }
        | DrError::Crypto(_) => ControlError::Refused(err.to_string()),
        DrError::Store(_) => ControlError::Unavailable(err.to_string()),
    }
}

fn info(manifest: &meridian_dr::Manifest, verified: bool) -> pb::ControlBackupInfo {
    pb::ControlBackupInfo {
        backup_id: manifest.backup_id.clone(),
        location: manifest.location.clone(),
        location_region: manifest.location_region.clone(),
        records: manifest.key_count,
        stored_bytes: manifest.stored_bytes(),
        objects: u32::try_from(manifest.objects.len()).unwrap_or(u32::MAX),
        routing_version: manifest.change_seq,
        applied_index: manifest.applied_index,
        created_unix_ms: manifest.created_unix_ms,
        digest: manifest.digest.clone(),
        verified,
    }
}

/// Writes a backup of the current state to location `location_name`, reads
/// it back, checks its digest and that it decodes, and records it in the
/// audit log.
pub async fn backup(
    node: &ControlNode,
    location_name: &str,
    requester: Requester,
) -> Result<pb::ControlBackupInfo, ControlError> {
    node.read_barrier().await?;
    let location = node
        .with_state(|s| s.locations.get(location_name).cloned())
        .ok_or_else(|| {
            ControlError::NotFound(format!(
                "no backup location {location_name:?} (meridian dr location list)"
            ))
        })?;
    let kek = kek(node)?;
    let applied_index = {
        use openraft::async_runtime::WatchReceiver;
        node.raft
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |id| id.index())
    };
    // One consistent state: encoded under one read lock.
    let (records, routing_version) = node.with_state(|s| {
        (
            crate::state_machine::encode_state(s),
            s.counters.routing_version,
        )
    });
    let records = records?;
    let created_unix_ms = now_unix_ms();
    let backup_id = format!("cp-{created_unix_ms:013}-{:08x}", rand::random::<u32>());
    let opened = meridian_dr::location::open(&location.url).map_err(dr_error)?;
    let meta = meridian_dr::control::ControlBackupMeta {
        backup_id: backup_id.clone(),
        location: location.name.clone(),
        location_region: location.region.clone(),
        source_node: node.id(),
        applied_index,
        routing_version,
        created_unix_ms,
    };
    let manifest = meridian_dr::control::write(&opened, meta, records, &kek)
        .await
        .map_err(dr_error)?;
    // Verified before it is reported: every object read back against the
    // manifest, the digest recomputed, every record decoded.
    let back = meridian_dr::control::read(&opened, &manifest, &kek, u64::MAX)
        .await
        .map_err(dr_error)?;
    crate::state_machine::decode_state(&back).map_err(|e| {
        ControlError::Refused(format!(
            "control-plane backup {backup_id} was written but does not read back: {e}"
        ))
    })?;
    node.propose(ControlCommand::RecordControlBackup {
        backup_id,
        location: location.name,
        records: manifest.key_count,
        routing_version,
        requester,
    })
    .await?;
    Ok(info(&manifest, true))
}

/// The control-plane backups at a location (by name, or by URL for a
/// control plane that knows no locations yet), oldest first.
pub async fn list(
    node: &ControlNode,
    location_name: &str,
    url: &str,
) -> Result<Vec<pb::ControlBackupInfo>, ControlError> {
    let url = resolve_url(node, location_name, url).await?;
    let opened = meridian_dr::location::open(&url).map_err(dr_error)?;
    let manifests = meridian_dr::control::list(&opened)
        .await
        .map_err(dr_error)?;
    // A verified backup was read back by the member that wrote it; a
    // listing only reads manifests.
    Ok(manifests.iter().map(|m| info(m, false)).collect())
}

async fn resolve_url(
    node: &ControlNode,
    location_name: &str,
    url: &str,
) -> Result<String, ControlError> {
    match (location_name.is_empty(), url.is_empty()) {
        (true, false) => Ok(url.to_string()),
        (false, true) => {
            node.read_barrier().await?;
            node.with_state(|s| s.locations.get(location_name).map(|l| l.url.clone()))
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "no backup location {location_name:?} (give its URL instead)"
                    ))
                })
        }
        _ => Err(ControlError::Invalid(
            "give a location's name or its URL (one of them)".into(),
        )),
    }
}

/// Restores a control-plane backup from `url` (the newest there when
/// `backup_id` is empty) into this control plane, which must be new, and
/// starts the rebuild. While a rebuild runs, names more shards lost.
pub async fn restore(
    node: &ControlNode,
    url: &str,
    backup_id: &str,
    lost: Vec<String>,
    requester: Requester,
) -> Result<pb::JobInfo, ControlError> {
    node.read_barrier().await?;
    if let Some(job) = node.with_state(|s| s.rebuilding()) {
        if lost.is_empty() {
            return node
                .with_state(|s| s.jobs.get(&job).map(crate::service::job_info))
                .ok_or_else(|| ControlError::NotFound(format!("job {job}")));
        }
        let unknown: Vec<String> = node.with_state(|s| {
            lost.iter()
                .filter(|shard| !s.shards.contains_key(*shard))
                .cloned()
                .collect()
        });
        if !unknown.is_empty() {
            return Err(ControlError::NotFound(format!(
                "no shard {} in the restored control plane (meridian region list shows its shards)",
                unknown.join(", ")
            )));
        }
        return match node
            .propose(ControlCommand::NameLostShards {
                job,
                shards: lost,
                requester,
            })
            .await?
        {
            ControlResult::Job(job) => Ok(crate::service::job_info(&job)),
            other => Err(ControlError::Unavailable(format!(
                "unexpected result {other:?}"
            ))),
        };
    }
    if url.is_empty() {
        return Err(ControlError::Invalid(
            "url: where the control-plane backup is (file:///dir or s3://bucket/prefix)".into(),
        ));
    }
    let kek = kek(node)?;
    let opened = meridian_dr::location::open(url).map_err(dr_error)?;
    let manifest = if backup_id.is_empty() {
        meridian_dr::control::list(&opened)
            .await
            .map_err(dr_error)?
            .pop()
            .ok_or_else(|| ControlError::NotFound(format!("no control-plane backup at {url}")))?
    } else {
        meridian_dr::control::read_manifest(&opened, backup_id)
            .await
            .map_err(dr_error)?
    };
    let records = meridian_dr::control::read(&opened, &manifest, &kek, MAX_RESTORE_BYTES)
        .await
        .map_err(dr_error)?;
    let rebuild = crate::model::Rebuild {
        backup_id: manifest.backup_id.clone(),
        location_url: url.to_string(),
        backup_created_unix_ms: manifest.created_unix_ms,
        backup_routing_version: manifest.change_seq,
        lost,
        outcome: Vec::new(),
    };
    match node
        .propose(ControlCommand::RestoreControlPlane {
            records,
            rebuild,
            requester,
        })
        .await?
    {
        ControlResult::Job(job) => Ok(crate::service::job_info(&job)),
        other => Err(ControlError::Unavailable(format!(
            "unexpected result {other:?}"
        ))),
    }
}

/// Shortest interval between scheduled control-plane backups.
pub const MIN_SCHEDULE_EVERY_MS: u64 = 1_000;

/// `schedule` checked: its location exists, at least
/// [`MIN_SCHEDULE_EVERY_MS`] between backups, backups kept at least one
/// interval.
pub fn check_schedule(
    schedule: &crate::model::ControlBackupSchedule,
    locations: &std::collections::BTreeMap<String, crate::model::BackupLocation>,
) -> Result<(), crate::command::ControlRejection> {
    let refuse = |reason: String| crate::command::ControlRejection::Schedule {
        namespace: "(the control plane)".into(),
        reason,
    };
    if !locations.contains_key(&schedule.location) {
        return Err(refuse(format!(
            "no backup location {:?} (meridian dr location list)",
            schedule.location
        )));
    }
    if schedule.every_ms < MIN_SCHEDULE_EVERY_MS {
        return Err(refuse(format!(
            "backups at most once a second (every >= {MIN_SCHEDULE_EVERY_MS} ms; asked {} ms)",
            schedule.every_ms
        )));
    }
    if schedule.keep_ms < schedule.every_ms {
        return Err(refuse(format!(
            "keep ({} ms) must be at least the interval ({} ms), or no backup would outlive the next",
            schedule.keep_ms, schedule.every_ms
        )));
    }
    Ok(())
}

/// Whether a scheduled backup is due at `now_ms` (pure): its interval has
/// passed since the later of the last backup and the last attempt this
/// member made (so a failing backup is tried at the schedule's pace).
pub fn due(
    schedule: &crate::model::ControlBackupSchedule,
    last_attempt_ms: u64,
    now_ms: u64,
) -> bool {
    let last = schedule.last_backup_unix_ms.max(last_attempt_ms);
    last == 0 || now_ms >= last.saturating_add(schedule.every_ms)
}

/// Which control-plane backups retention removes at `now_ms` (pure): those
/// taken more than `keep_ms` ago, except the newest. `backups` are (id,
/// taken at); the answer is oldest first.
pub fn expired(backups: &[(String, u64)], now_ms: u64, keep_ms: u64) -> Vec<String> {
    let cutoff = now_ms.saturating_sub(keep_ms);
    let newest = backups
        .iter()
        .max_by_key(|(id, at)| (*at, id.clone()))
        .map(|(id, _)| id.clone());
    let mut gone: Vec<&(String, u64)> = backups
        .iter()
        .filter(|(id, at)| *at < cutoff && Some(id) != newest.as_ref())
        .collect();
    gone.sort_by_key(|(id, at)| (*at, id.clone()));
    gone.into_iter().map(|(id, _)| id.clone()).collect()
}

/// How often the leader looks at the schedule.
const SCHEDULE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the scheduled control-plane backups and applies retention, while
/// this member leads (not during a rebuild: the state is not settled).
/// Runs until the process stops.
pub async fn run_schedule(node: std::sync::Arc<ControlNode>) {
    let mut last_attempt_ms = 0u64;
    loop {
        tokio::time::sleep(SCHEDULE_POLL).await;
        if !node.raft.raft.is_leader() {
            last_attempt_ms = 0;
            continue;
        }
        let Some(schedule) = node.with_state(|s| {
            s.control_schedule
                .clone()
                .filter(|_| s.rebuilding().is_none())
        }) else {
            continue;
        };
        let now = now_unix_ms();
        if !due(&schedule, last_attempt_ms, now) {
            continue;
        }
        last_attempt_ms = now;
        let requester = Requester {
            actor: format!("control-plane backup schedule (member {})", node.id()),
            at_unix_ms: now,
        };
        match backup(&node, &schedule.location, requester).await {
            Ok(info) => {
                tracing::info!(backup = %info.backup_id, records = info.records, "scheduled control-plane backup written");
                if let Err(err) = apply_retention(&node, &schedule).await {
                    tracing::warn!(%err, "control-plane backup retention failed; tried again after the next backup");
                }
            }
            Err(err) => tracing::warn!(%err, "scheduled control-plane backup failed"),
        }
    }
}

async fn apply_retention(
    node: &ControlNode,
    schedule: &crate::model::ControlBackupSchedule,
) -> Result<(), ControlError> {
    let Some(url) = node.with_state(|s| s.locations.get(&schedule.location).map(|l| l.url.clone()))
    else {
        return Ok(());
    };
    let opened = meridian_dr::location::open(&url).map_err(dr_error)?;
    let backups: Vec<(String, u64)> = meridian_dr::control::list(&opened)
        .await
        .map_err(dr_error)?
        .into_iter()
        .map(|m| (m.backup_id, m.created_unix_ms))
        .collect();
    for id in expired(&backups, now_unix_ms(), schedule.keep_ms) {
        let removed = meridian_dr::control::delete(&opened, &id)
            .await
            .map_err(dr_error)?;
        tracing::info!(backup = %id, objects = removed, "expired control-plane backup removed");
    }
    Ok(())
}

/// The schedule as the API shows it.
pub fn schedule_info(schedule: &crate::model::ControlBackupSchedule) -> pb::ControlBackupSchedule {
    pb::ControlBackupSchedule {
        location: schedule.location.clone(),
        every_ms: schedule.every_ms,
        keep_ms: schedule.keep_ms,
        created_by: schedule.created_by.clone(),
        created_unix_ms: schedule.created_unix_ms,
        last_backup_id: schedule.last_backup_id.clone(),
        last_backup_unix_ms: schedule.last_backup_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(every_ms: u64, keep_ms: u64, last: u64) -> crate::model::ControlBackupSchedule {
        crate::model::ControlBackupSchedule {
            location: "vault".into(),
            every_ms,
            keep_ms,
            created_by: "test".into(),
            created_unix_ms: 1,
            last_backup_id: String::new(),
            last_backup_unix_ms: last,
        }
    }

    #[test]
    fn due_table() {
        // (case, schedule, last attempt, now, due)
        let cases = [
            ("never backed up", schedule(1_000, 5_000, 0), 0, 10, true),
            (
                "interval not passed",
                schedule(1_000, 5_000, 10_000),
                0,
                10_500,
                false,
            ),
            (
                "interval passed",
                schedule(1_000, 5_000, 10_000),
                0,
                11_000,
                true,
            ),
            (
                "a recent failed attempt waits",
                schedule(1_000, 5_000, 10_000),
                11_500,
                12_000,
                false,
            ),
            (
                "the attempt's interval passed",
                schedule(1_000, 5_000, 10_000),
                11_500,
                12_500,
                true,
            ),
        ];
        for (case, schedule, attempt, now, expected) in cases {
            assert_eq!(due(&schedule, attempt, now), expected, "{case}");
        }
    }

    #[test]
    fn retention_keeps_the_young_and_the_newest() {
        let backups = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
            list.iter().map(|(id, at)| (id.to_string(), *at)).collect()
        };
        /// (case, backups, now, keep, removed)
        type Case<'a> = (&'a str, Vec<(String, u64)>, u64, u64, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("none", backups(&[]), 100, 10, vec![]),
            (
                "all young",
                backups(&[("a", 95), ("b", 99)]),
                100,
                10,
                vec![],
            ),
            (
                "the old go, oldest first",
                backups(&[("c", 95), ("b", 20), ("a", 10)]),
                100,
                10,
                vec!["a", "b"],
            ),
            (
                "the newest stays however old",
                backups(&[("a", 10), ("b", 20)]),
                100,
                10,
                vec!["a"],
            ),
        ];
        for (case, list, now, keep, removed) in cases {
            assert_eq!(expired(&list, now, keep), removed, "{case}");
        }
    }

    #[test]
    fn schedules_name_the_rule_they_break() {
        let mut locations = std::collections::BTreeMap::new();
        assert!(check_schedule(&schedule(1_000, 1_000, 0), &locations).is_err());
        locations.insert(
            "vault".to_string(),
            crate::model::BackupLocation {
                name: "vault".into(),
                url: "file:///v".into(),
                region: "eu-west".into(),
                jurisdictions: ["EU".to_string()].into(),
            },
        );
        assert!(check_schedule(&schedule(1_000, 1_000, 0), &locations).is_ok());
        let err = check_schedule(&schedule(10, 1_000, 0), &locations).unwrap_err();
        assert!(err.to_string().contains("once a second"), "{err}");
        let err = check_schedule(&schedule(2_000, 1_000, 0), &locations).unwrap_err();
        assert!(err.to_string().contains("at least the interval"), "{err}");
    }
}
