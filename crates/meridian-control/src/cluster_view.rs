//! The live view of the shards the admin API's `/v1/members` and
//! `/v1/replication` (and the web console) show: asked of the shards
//! themselves at request time, by the member serving the request.
//!
//! The replicated state knows which shards and members exist; only the
//! members know their Raft role, and only a primary's leader knows how far
//! each standby has confirmed. Every member is asked at once with a short
//! deadline, so one unreachable region costs the page one deadline, not one
//! per member.

use crate::node::ControlNode;
use meridian_client::{Client, ClientOptions};
use meridian_proto::v1 as pb;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinSet;

/// How long one member gets to answer.
const ASK_DEADLINE: Duration = Duration::from_secs(1);

fn client(node: &ControlNode, members: Vec<String>) -> Result<Client, String> {
    Client::with_options(
        members,
        ClientOptions {
            attempt_timeout: ASK_DEADLINE,
            retry_budget: ASK_DEADLINE,
            dialer: node.dialer.clone(),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// Every shard with its last probe (from this member's prober; the leader
/// probes) and every member with its Raft state as the member reports it.
pub async fn members(node: &ControlNode) -> Value {
    let shards = node.with_state(|s| s.shards.values().cloned().collect::<Vec<_>>());
    let probes = node
        .stats
        .probes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut asks = JoinSet::new();
    for shard in &shards {
        for member in shard.members.values() {
            let (shard_id, address) = (shard.id.clone(), member.address.clone());
            let client = client(node, vec![address.clone()]);
            asks.spawn(async move {
                let status = match client {
                    Ok(client) => {
                        tokio::time::timeout(ASK_DEADLINE, client.cluster_status_of(&address))
                            .await
                            .map_err(|_| {
                                format!("no answer within {} ms", ASK_DEADLINE.as_millis())
                            })
                            .and_then(|r| r.map_err(|e| e.to_string()))
                    }
                    Err(err) => Err(err),
                };
                (shard_id, address, status)
            });
        }
    }
    let mut answers = std::collections::HashMap::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok((shard, address, status)) = joined {
            answers.insert((shard, address), status);
        }
    }
    let shards: Vec<Value> = shards
        .iter()
        .map(|shard| {
            let probe = probes
                .get(&shard.id)
                .map(|p| json!({ "up": p.up, "round_trip_ms": p.round_trip.as_secs_f64() * 1e3 }));
            let members: Vec<Value> = shard
                .members
                .values()
                .map(
                    |m| match answers.get(&(shard.id.clone(), m.address.clone())) {
                        Some(Ok(status)) => json!({
                            "node_id": m.node_id,
                            "address": m.address,
                            "reachable": true,
                            "raft_role": status.role.to_lowercase(),
                            "term": status.term,
                            "leader_id": status.leader_id,
                            "last_log_index": status.last_log_index,
                            "applied_index": status.applied_index,
                        }),
                        Some(Err(error)) => json!({
                            "node_id": m.node_id,
                            "address": m.address,
                            "reachable": false,
                            "error": error,
                        }),
                        None => json!({
                            "node_id": m.node_id,
                            "address": m.address,
                            "reachable": false,
                            "error": "not asked",
                        }),
                    },
                )
                .collect();
            json!({
                "id": shard.id,
                "region": shard.region,
                "probe": probe,
                "members": members,
            })
        })
        .collect();
    json!({ "shards": shards })
}

/// Every replicated namespace's standbys with their confirmed position and
/// lag, as each primary shard's leader reports them; shards that did not
/// answer are listed apart.
pub async fn replication(node: &ControlNode) -> Value {
    let shards = node.with_state(|s| {
        s.shards
            .values()
            .map(|shard| {
                (
                    shard.id.clone(),
                    shard.region.clone(),
                    shard
                        .members
                        .values()
                        .map(|m| m.address.clone())
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    });
    let mut asks = JoinSet::new();
    for (shard, region, members) in shards {
        let client = client(node, members);
        asks.spawn(async move {
            let status = match client {
                Ok(client) => tokio::time::timeout(ASK_DEADLINE * 2, client.replication_status())
                    .await
                    .map_err(|_| format!("no answer within {} ms", (ASK_DEADLINE * 2).as_millis()))
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(err) => Err(err),
            };
            (shard, region, status)
        });
    }
    let mut namespaces = Vec::new();
    let mut unreachable = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let Ok((shard, region, status)) = joined else {
            continue;
        };
        match status {
            Ok(status) => {
                for ns in status.namespaces {
                    if ns.role != pb::NamespaceRole::Primary as i32 || ns.standbys.is_empty() {
                        continue;
                    }
                    namespaces.push(json!({
                        "namespace": ns.namespace,
                        "epoch": ns.epoch,
                        "primary_shard": shard,
                        "primary_region": region,
                        "primary_seq": ns.change_seq,
                        "standbys": ns.standbys.iter().map(|s| json!({
                            "shard": s.shard,
                            "region": s.region,
                            "acked_seq": s.acked_seq,
                            "lag_entries": s.lag_entries,
                            "lag_seconds": s.lag_seconds,
                            "bytes_sent": s.bytes_sent,
                        })).collect::<Vec<_>>(),
                    }));
                }
            }
            Err(error) => {
                unreachable.push(json!({ "shard": shard, "region": region, "error": error }))
            }
        }
    }
    namespaces.sort_by(|a, b| a["namespace"].as_str().cmp(&b["namespace"].as_str()));
    unreachable.sort_by(|a, b| a["shard"].as_str().cmp(&b["shard"].as_str()));
    json!({ "namespaces": namespaces, "unreachable": unreachable })
}
