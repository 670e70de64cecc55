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
