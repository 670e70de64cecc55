//! Finishing namespace deletions: every copy goes.
//!
//! Deleting a namespace removes its route at once and records a
//! [`Deletion`](crate::model::Deletion) naming every shard that may hold a
//! copy (primary, standbys, former primaries with their lost writes). This
//! module asks each of those shards to delete its copy and records each
//! confirmation (`NamespaceCopyDeleted`); the deletion is complete, and the
//! name free again, only when every shard confirmed. The removal call does it
//! at once; the leader's prober loop retries what was unreachable, so a
//! deletion always finishes once the shards are back.

use crate::command::{ControlCommand, Requester};
use crate::node::{ControlNode, now_unix_ms};

/// Deletes the copies of `name` that are still recorded, and returns the
/// shards that still hold one (could not be reached or answered an error).
pub async fn finish(node: &ControlNode, name: &str) -> Vec<String> {
    let pending: Vec<(String, Vec<String>)> = node.with_state(|state| {
        state
            .deletions
            .get(name)
            .map(|deletion| {
                deletion
                    .shards
                    .iter()
                    .map(|shard| {
                        let members = state
                            .shards
                            .get(shard)
                            .map(|s| s.members.values().map(|m| m.address.clone()).collect())
                            .unwrap_or_default();
                        (shard.clone(), members)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let mut remaining = Vec::new();
    for (shard, members) in pending {
        let deleted = if members.is_empty() {
            // A shard without members holds nothing any more.
            true
        } else {
            let options = meridian_client::ClientOptions {
                attempt_timeout: std::time::Duration::from_secs(1),
                retry_budget: std::time::Duration::from_secs(2),
                dialer: node.dialer.clone(),
                ..Default::default()
            };
            match meridian_client::Client::with_options(members, options) {
                Ok(client) => match client.delete_namespace(name).await {
                    Ok(_) | Err(meridian_client::ClientError::NotFound(_)) => true,
                    Err(err) => {
                        tracing::warn!(namespace = %name, %shard, error = %err, "copy of a deleted namespace not deleted yet");
                        false
                    }
                },
                Err(_) => false,
            }
        };
        if !deleted {
            remaining.push(shard);
            continue;
        }
        let recorded = node
            .propose(ControlCommand::NamespaceCopyDeleted {
                name: name.to_string(),
                shard: shard.clone(),
                requester: Requester {
                    actor: "control-plane deletion".into(),
                    at_unix_ms: now_unix_ms(),
                },
            })
            .await;
        if recorded.is_err() {
            remaining.push(shard);
        }
    }
    remaining
}

/// How often the leader retries deletions that are not finished.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Finishes deletions under way, forever (acting only while this member
/// leads). Its own task: an unreachable shard must not hold up the probes
/// and leases.
pub async fn run(node: std::sync::Arc<ControlNode>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        if !node.raft.raft.is_leader() {
            continue;
        }
        let names: Vec<String> = node.with_state(|state| state.deletions.keys().cloned().collect());
        for name in names {
            finish(&node, &name).await;
        }
    }
}
