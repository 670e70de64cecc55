//! Taking backups: the steps `dr snapshot` and scheduled backups share.

use crate::command::{ControlCommand, Requester};
use crate::error::ControlError;
use crate::node::{ControlNode, now_unix_ms};
use crate::service::shard_admin_client;

/// Asks `shard`'s leader to keep `namespace`'s change log (`release`
/// `None`) or to let go of what a backup holds through `release`.
pub(crate) async fn hold_on_shard(
    shard: &crate::model::Shard,
    namespace: &str,
    release: Option<u64>,
    dialer: &meridian_net::Dialer,
) -> Result<meridian_proto::v1::HoldChangesResponse, ControlError> {
    let client = shard_admin_client(shard, dialer)?;
    client
        .hold_changes(meridian_proto::v1::HoldChangesRequest {
            namespace: namespace.to_string(),
            release: release.is_some(),
            release_through: release.unwrap_or(0),
        })
        .await
        .map_err(|err| {
            ControlError::Unavailable(format!(
                "shard {} could not keep the change log of {namespace:?}: {err}",
                shard.id
            ))
        })
}

/// Asks a node of `shard` to write a backup: a follower where one answers
/// (the leader's write path is not slowed), else any member.
async fn backup_on_shard(
    shard: &crate::model::Shard,
    request: meridian_proto::v1::BackupRequest,
    dialer: &meridian_net::Dialer,
) -> Result<meridian_proto::v1::BackupResponse, ControlError> {
    let client = shard_admin_client(shard, dialer)?;
    let leader = client
        .cluster_status()
        .await
        .map(|s| s.leader_id)
        .unwrap_or(0);
    let mut members: Vec<&crate::model::ShardMember> = shard.members.values().collect();
    // Followers first, the leader last.
    members.sort_by_key(|m| m.node_id == leader);
    let mut last = None;
    for member in members {
        match client.backup_on(&member.address, request.clone()).await {
            Ok(written) => return Ok(written),
            Err(err) => {
                tracing::warn!(node = member.node_id, %err, "backup not taken on this member");
                last = Some(err);
            }
        }
    }
    Err(match last {
        Some(meridian_client::ClientError::FailedPrecondition(refusal)) => {
            ControlError::Invalid(refusal.message)
        }
        Some(err) => ControlError::Unavailable(format!(
            "no member of shard {} took the backup: {err}",
            shard.id
        )),
        None => ControlError::Unavailable(format!("shard {} has no members", shard.id)),
    })
}

/// Takes a backup of `namespace` to `location_name` — the changes since its
/// latest verified backup there when `incremental` — and catalogues it:
/// residency first (never a fallback location), the backup hold on the
/// shard's leader, the backup written and verified by a follower, the
/// catalog entry, then the hold released through the backup's change.
pub async fn take(
    node: &ControlNode,
    namespace: &str,
    location_name: &str,
    incremental: bool,
    requester: Requester,
) -> Result<crate::model::BackupRecord, ControlError> {
    node.read_barrier().await?;
    let (ns, location, shard, parent) = node.with_state(|s| {
        let ns = s.namespaces.get(namespace).cloned();
        let location = s.locations.get(location_name).cloned();
        let shard = ns.as_ref().and_then(|n| s.shards.get(&n.shard).cloned());
        // An incremental backup continues the namespace's latest
        // verified backup in this location.
        let parent = s.latest_backup(namespace, location_name).cloned();
        (ns, location, shard, parent)
    });
    let Some(ns) = ns else {
        return Err(ControlError::Rejected(
            crate::command::ControlRejection::NamespaceNotFound(namespace.to_string()),
        ));
    };
    let Some(location) = location else {
        return Err(ControlError::NotFound(format!(
            "no backup location {location_name:?} (meridian dr location list)"
        )));
    };
    let Some(shard) = shard else {
        return Err(ControlError::Unavailable(format!(
            "the shard of namespace {namespace:?} is not known yet"
        )));
    };
    crate::dr::check_backup_mode(namespace, ns.policy.mode).map_err(ControlError::Refused)?;
    crate::dr::check_backup_target(namespace, &ns.policy.allowed_jurisdictions, &location)
        .map_err(ControlError::Refused)?;
    let parent = match (incremental, parent) {
        (false, _) => None,
        (true, Some(parent)) => Some(parent),
        (true, None) => {
            return Err(ControlError::Refused(format!(
                "no verified backup of {namespace:?} in location {location_name:?} to continue; take a full backup first"
            )));
        }
    };
    // Every backup starts (or keeps) the namespace's change log, so the
    // next one can be incremental: the node reads only once it has
    // applied this.
    hold_on_shard(&shard, namespace, None, &node.dialer).await?;
    let backup_id = format!(
        "{namespace}-{}-{:08x}",
        now_unix_ms(),
        rand::random::<u32>()
    );
    let node_request = meridian_proto::v1::BackupRequest {
        namespace: namespace.to_string(),
        backup_id: backup_id.clone(),
        location_name: location.name.clone(),
        location_url: location.url.clone(),
        location_region: location.region.clone(),
        jurisdictions: ns.policy.allowed_jurisdictions.iter().cloned().collect(),
        incremental: parent.is_some(),
        parent_backup_id: parent
            .as_ref()
            .map(|p| p.backup_id.clone())
            .unwrap_or_default(),
        from_seq: parent.as_ref().map_or(0, |p| p.change_seq),
        require_hold: true,
    };
    let written = backup_on_shard(&shard, node_request, &node.dialer).await?;
    let record = crate::model::BackupRecord {
        backup_id,
        namespace: namespace.to_string(),
        location: location.name.clone(),
        location_region: location.region.clone(),
        shard: shard.id.clone(),
        node_id: written.node_id,
        change_seq: written.change_seq,
        key_count: written.key_count,
        digest: written.digest,
        stored_bytes: written.stored_bytes,
        objects: written.objects,
        verified: written.verified,
        created_unix_ms: requester.at_unix_ms,
        elapsed_ms: written.elapsed_ms,
        jurisdictions: ns.policy.allowed_jurisdictions.clone(),
        parent: parent.as_ref().map(|p| p.backup_id.clone()),
        from_seq: written.from_seq,
    };
    node.propose(ControlCommand::CatalogBackup {
        backup: record.clone(),
        requester,
    })
    .await?;
    // The log up to the backup's change is held by the backup now.
    if let Err(err) = hold_on_shard(&shard, namespace, Some(record.change_seq), &node.dialer).await
    {
        tracing::warn!(%namespace, %err, "backup taken, but the change log it holds was not released yet");
    }
    Ok(record)
}
