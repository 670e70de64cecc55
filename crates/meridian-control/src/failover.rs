//! Health probes, write leases and automatic failover, run by the control
//! plane's leader.
//!
//! Every `probe_interval_ms` the leader sends each shard's leader a `Lease`
//! probe that (1) tells it the role and epoch each of its replicated namespaces
//! must have — promoting a standby, fencing a demoted primary — then (2) grants
//! it a write lease of `lease_ms`, and (3) reports every replicated namespace's
//! change position. A shard leader without a current lease refuses writes to
//! replicated namespaces, so a primary cut off from the control plane stops
//! taking writes on its own.
//!
//! The default policy declares a shard failed after `failed_probes` consecutive
//! failed probes. Its active-passive namespaces then fail over to the standby
//! with the most data, but only once the lease the old primary last got has
//! surely expired (`last successful probe + lease_ms`, measured from when the
//! answer arrived here, which is after the shard started its lease): from then
//! on the old primary cannot acknowledge another write, so no two primaries
//! ever accept writes at once.

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::model::FailoverRecord;
use crate::node::{ControlNode, now_unix_ms};
use meridian_client::{Client, ClientOptions, pb};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra wait past a lease's end before promoting (clock-rate differences).
const LEASE_MARGIN: Duration = Duration::from_millis(250);

/// What the leader knows about one shard from its probes.
#[derive(Debug, Default, Clone)]
struct ShardHealth {
    failures: u32,
    /// When the last successful probe's answer arrived.
    last_ok: Option<Instant>,
    /// When the shard was first seen failing in the current streak (Unix ms).
    failing_since_ms: Option<u64>,
    /// Positions from the last successful probe: namespace -> (role, seq, resync).
    positions: HashMap<String, (i32, u64, bool)>,
}

/// Probes and fails over forever (acting only while this member leads).
pub async fn run(node: Arc<ControlNode>) {
    let config = node.config.failover.clone();
    let interval = Duration::from_millis(config.probe_interval_ms);
    let mut health: HashMap<String, ShardHealth> = HashMap::new();
    let mut clients: HashMap<String, (Vec<String>, Arc<Client>)> = HashMap::new();
    let mut leader_since: Option<Instant> = None;
    loop {
        let round = Instant::now();
        if !node.raft.raft.is_leader() {
            leader_since = None;
            health.clear();
            tokio::time::sleep(interval).await;
            continue;
        }
        // A new leader cannot know which leases its predecessor granted: it
        // waits a whole lease before promoting anything.
        let since = *leader_since.get_or_insert_with(Instant::now);
        probe_all(&node, &config, &mut health, &mut clients).await;
        if config.automatic {
            fail_over_failed(&node, &config, &health, since, &mut clients).await;
        }
        tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
    }
}

/// The desired role of every replicated namespace, grouped by shard.
fn desired_by_shard(node: &ControlNode) -> HashMap<String, Vec<pb::DesiredNamespace>> {
    node.with_state(|state| {
        let mut desired: HashMap<String, Vec<pb::DesiredNamespace>> = HashMap::new();
        for namespace in state.namespaces.values().filter(|n| n.replicated()) {
            desired
                .entry(namespace.shard.clone())
                .or_default()
                .push(pb::DesiredNamespace {
                    namespace: namespace.name.clone(),
                    role: pb::NamespaceRole::Primary as i32,
                    epoch: namespace.epoch,
                    fork_seq: 0,
                });
            for standby in &namespace.standbys {
                // A former primary of this namespace keeps what its successor
                // had; everything after that is set aside as lost writes.
                let fork_seq = state
                    .failovers
                    .values()
                    .rev()
                    .find(|f| f.namespace == namespace.name && f.from_shard == standby.shard)
                    .map_or(0, |f| f.promoted_seq);
                desired
                    .entry(standby.shard.clone())
                    .or_default()
                    .push(pb::DesiredNamespace {
                        namespace: namespace.name.clone(),
                        role: pb::NamespaceRole::Standby as i32,
                        epoch: namespace.epoch,
                        fork_seq,
                    });
            }
        }
        desired
    })
}

fn client_for(
    node: &ControlNode,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
    shard: &str,
    members: Vec<String>,
    timeout: Duration,
) -> Option<Arc<Client>> {
    if let Some((known, client)) = clients.get(shard)
        && *known == members
    {
        return Some(client.clone());
    }
    let client = Arc::new(
        Client::with_options(
            members.clone(),
            ClientOptions {
                attempt_timeout: timeout,
                retry_budget: timeout,
                backoff: Duration::from_millis(20),
                dialer: node.dialer.clone(),
            },
        )
        .ok()?,
    );
    clients.insert(shard.to_string(), (members, client.clone()));
    Some(client)
}

async fn probe_all(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    health: &mut HashMap<String, ShardHealth>,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) {
    let shards: Vec<(String, Vec<String>)> = node.with_state(|state| {
        state
            .shards
            .values()
            .map(|s| {
                (
                    s.id.clone(),
                    s.members.values().map(|m| m.address.clone()).collect(),
                )
            })
            .collect()
    });
    let mut desired = desired_by_shard(node);
    let timeout = Duration::from_millis(config.probe_timeout_ms);
    let mut probes = Vec::with_capacity(shards.len());
    for (shard, members) in shards {
        let Some(client) = client_for(node, clients, &shard, members, timeout) else {
            continue;
        };
        let request = pb::LeaseRequest {
            lease_ms: config.lease_ms,
            desired: desired.remove(&shard).unwrap_or_default(),
        };
        probes.push(tokio::spawn(async move {
            let answer = tokio::time::timeout(timeout * 2, client.lease(request)).await;
            (shard, answer, Instant::now())
        }));
    }
    for probe in probes {
        let Ok((shard, answer, at)) = probe.await else {
            continue;
        };
        let entry = health.entry(shard.clone()).or_default();
        match answer {
            Ok(Ok(response)) => {
                if entry.failures >= config.failed_probes {
                    tracing::info!(%shard, "shard answers probes again");
                }
                entry.failures = 0;
                entry.failing_since_ms = None;
                entry.last_ok = Some(at);
                entry.positions = response
                    .positions
                    .into_iter()
                    .map(|p| (p.namespace, (p.role, p.change_seq, p.resync_needed)))
                    .collect();
            }
            Ok(Err(err)) => note_failure(entry, &shard, config, &err.to_string()),
            Err(_) => note_failure(entry, &shard, config, "probe timed out"),
        }
    }
}

fn note_failure(
    entry: &mut ShardHealth,
    shard: &str,
    config: &crate::config::FailoverSection,
    error: &str,
) {
    entry.failures += 1;
    entry.failing_since_ms.get_or_insert_with(now_unix_ms);
    if entry.failures == config.failed_probes {
        tracing::warn!(%shard, failures = entry.failures, error, "shard failed its probes");
    }
}

async fn fail_over_failed(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    health: &HashMap<String, ShardHealth>,
    leader_since: Instant,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) {
    let lease = Duration::from_millis(config.lease_ms) + LEASE_MARGIN;
    for (shard, shard_health) in health {
        if shard_health.failures < config.failed_probes {
            continue;
        }
        let last_grant = shard_health
            .last_ok
            .unwrap_or(leader_since)
            .max(leader_since);
        if last_grant.elapsed() < lease {
            continue;
        }
        let victims: Vec<crate::model::Namespace> = node.with_state(|state| {
            state
                .namespaces
                .values()
                .filter(|n| &n.shard == shard && n.replicated())
                .cloned()
                .collect()
        });
        for namespace in victims {
            let Some((target, promoted_seq)) = best_standby(&namespace, health, config) else {
                tracing::warn!(namespace = %namespace.name, "primary failed and no standby is healthy");
                continue;
            };
            let primary_seq = shard_health
                .positions
                .get(&namespace.name)
                .map_or(0, |(_, seq, _)| *seq);
            let cause = format!(
                "primary shard {shard} failed {} consecutive probes (policy: {} failed probes at {} ms)",
                shard_health.failures, config.failed_probes, config.probe_interval_ms
            );
            let command = ControlCommand::Failover {
                namespace: namespace.name.clone(),
                to_shard: target.clone(),
                cause,
                detected_at_ms: shard_health.failing_since_ms.unwrap_or_else(now_unix_ms),
                primary_seq,
                promoted_seq,
                requester: Requester {
                    actor: "failover-policy".into(),
                    at_unix_ms: now_unix_ms(),
                },
            };
            match node.propose(command).await {
                Ok(ControlResult::FailedOver { record, .. }) => {
                    log_failover(&record);
                    promote_now(node, config, &record, clients).await;
                }
                Ok(other) => tracing::error!(?other, "unexpected failover result"),
                Err(err) => {
                    tracing::warn!(namespace = %namespace.name, error = %err, "failover refused")
                }
            }
        }
    }
}

/// The healthy standby with the most data, and its position.
fn best_standby(
    namespace: &crate::model::Namespace,
    health: &HashMap<String, ShardHealth>,
    config: &crate::config::FailoverSection,
) -> Option<(String, u64)> {
    namespace
        .standbys
        .iter()
        .filter_map(|standby| {
            let h = health.get(&standby.shard)?;
            if h.failures >= config.failed_probes || h.last_ok.is_none() {
                return None;
            }
            let (role, seq, resync) = h.positions.get(&namespace.name)?;
            (*role == pb::NamespaceRole::Standby as i32 && !resync)
                .then(|| (standby.shard.clone(), *seq))
        })
        .max_by_key(|(shard, seq)| (*seq, std::cmp::Reverse(shard.clone())))
}

fn log_failover(record: &FailoverRecord) {
    tracing::warn!(
        namespace = %record.namespace,
        from = %record.from_region,
        to = %record.to_region,
        epoch = record.epoch,
        primary_seq = record.primary_seq,
        promoted_seq = record.promoted_seq,
        "failed over"
    );
}

/// Probes the promoted shard at once, so it becomes primary (and gets its
/// lease) without waiting for the next round.
pub async fn promote_now(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    record: &FailoverRecord,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) {
    let members: Vec<String> = node.with_state(|state| {
        state
            .shards
            .get(&record.to_shard)
            .map(|s| s.members.values().map(|m| m.address.clone()).collect())
            .unwrap_or_default()
    });
    let timeout = Duration::from_millis(config.probe_timeout_ms);
    let Some(client) = client_for(node, clients, &record.to_shard, members, timeout) else {
        return;
    };
    let desired = desired_by_shard(node)
        .remove(&record.to_shard)
        .unwrap_or_default();
    if let Err(err) = client
        .lease(pb::LeaseRequest {
            lease_ms: config.lease_ms,
            desired,
        })
        .await
    {
        tracing::warn!(shard = %record.to_shard, error = %err, "promotion probe failed; the next round retries");
    }
}
