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
//! chosen by [`crate::promotion`], but only once every lease the old primary
//! may hold has surely ended by the [`crate::lease`] ledger — every grant
//! counted from its send time, answered or not: from then on the old primary
//! cannot acknowledge another write or serve a strong read, so no two
//! primaries ever act at once.

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::model::FailoverRecord;
use crate::node::{ControlNode, now_unix_ms};
use meridian_client::{Client, ClientOptions, pb};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The wall-clock time (Unix ms) of a monotonic instant in the past.
fn unix_ms_at(at: Instant) -> u64 {
    now_unix_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// A grant request for `shard` numbered by the leader's ledger, counted
/// from `counted_from` (a revocation while the shard drains); `None` when
/// this member does not lead (no ledger).
fn grant(
    node: &ControlNode,
    config: &crate::config::FailoverSection,
    shard: &str,
    desired: Vec<pb::DesiredNamespace>,
    counted_from: Instant,
) -> Option<(pb::LeaseRequest, crate::lease::Ticket)> {
    let ticket = node
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()?
        .issue(shard, Duration::from_millis(config.lease_ms), counted_from);
    node.stats
        .lease_grants
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some((lease_request(config, ticket, desired, counted_from), ticket))
}

fn lease_request(
    config: &crate::config::FailoverSection,
    ticket: crate::lease::Ticket,
    desired: Vec<pb::DesiredNamespace>,
    counted_from: Instant,
) -> pb::LeaseRequest {
    pb::LeaseRequest {
        lease_ms: ticket.lease_ms,
        desired,
        sent_unix_ms: unix_ms_at(counted_from),
        max_clock_offset_ms: config.max_clock_offset_ms,
        grant_term: ticket.order.0,
        grant_seq: ticket.order.1,
        ..Default::default()
    }
}

/// Notes a shard's answer to a grant: an acknowledged revocation ends every
/// earlier grant; the clock offset is checked against the assumption.
fn note_answer(
    node: &ControlNode,
    config: &crate::config::FailoverSection,
    shard: &str,
    ticket: crate::lease::Ticket,
    response: &pb::LeaseResponse,
    (sent, answered): (Instant, Instant),
) -> Option<meridian_replication::hlc::Offset> {
    if ticket.is_revocation()
        && let Some(ledger) = node
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
    {
        ledger.revoked(shard, ticket);
    }
    if !response.refused.is_empty() {
        tracing::warn!(%shard, refused = %response.refused, "shard did not take its lease grant");
    }
    // The node's clock at the answer against the middle of the round trip
    // here; the round trip's half is the uncertainty. The next grant tells
    // the shard (active-active peers refuse writes while it is too far).
    if response.node_unix_ms == 0 {
        return None;
    }
    let round_trip = u64::try_from((answered - sent).as_millis()).unwrap_or(u64::MAX);
    let offset = meridian_replication::hlc::Offset::measure(
        response.node_unix_ms,
        unix_ms_at(sent),
        round_trip,
    );
    node.stats.clock_offset(shard, offset.ms);
    if offset.beyond(config.max_clock_offset_ms) {
        tracing::error!(%shard, %offset, max_clock_offset_ms = config.max_clock_offset_ms,
            "shard clock is further from the control plane's than the stated assumption; it will refuse leases and active-active writes");
    }
    Some(offset)
}

/// What the leader knows about one shard from its probes.
#[derive(Debug, Default, Clone)]
struct ShardHealth {
    failures: u32,
    /// When the last successful probe's answer arrived.
    last_ok: Option<Instant>,
    /// Recent probes: when, and the round trip if it succeeded.
    samples: std::collections::VecDeque<(Instant, Option<Duration>)>,
    /// When the shard was first seen failing in the current streak (Unix ms).
    failing_since_ms: Option<u64>,
    /// Positions from the last successful probe: namespace -> (role, seq, resync).
    positions: HashMap<String, (i32, u64, bool)>,
    /// When that probe was sent: every write the shard acknowledged before
    /// then is counted in `positions`.
    positions_at: Option<Instant>,
    /// The shard leader's clock offset, from its last answer.
    offset: Option<meridian_replication::hlc::Offset>,
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
            *node.leases.lock().unwrap_or_else(|e| e.into_inner()) = None;
            health.clear();
            tokio::time::sleep(interval).await;
            continue;
        }
        // Grants are numbered in the control plane's generation above its
        // Raft term (a restored control plane's grants order after the lost
        // one's). A new leader cannot know which leases its predecessor
        // granted: its ledger counts a whole lease for every shard from now;
        // so does a new generation.
        let grant_term = {
            use openraft::async_runtime::WatchReceiver;
            let raft_term = node.raft.raft.metrics().borrow_watched().current_term;
            let generation =
                node.with_state(|s| crate::rebuild::generation(s.counters.routing_version));
            crate::rebuild::grant_term(generation, raft_term)
        };
        let current = node
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|ledger| ledger.term());
        if leader_since.is_none() || current != Some(grant_term) {
            let now = Instant::now();
            *node.leases.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(crate::lease::LeaseLedger::new(
                    grant_term,
                    now,
                    Duration::from_millis(config.lease_ms),
                ));
            leader_since = Some(now);
        }
        if let Some(ledger) = node
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            ledger.prune(round);
        }
        // Leases are granted only by a leader that a quorum still follows: a
        // deposed leader cut off with one region must not keep that region's
        // primary writable while the others elect a new leader and fail over.
        // Each lease is shortened by the time since this confirmation began,
        // so it ends before any successor could have been elected plus a lease.
        let confirmed = Instant::now();
        if node.read_barrier().await.is_err() {
            tracing::warn!("leadership not confirmed by a quorum; no probes or leases this round");
            tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
            continue;
        }
        if node.with_state(|s| s.rebuilding().is_some()) {
            // A restored control plane grants nothing and fails nothing over
            // until its rebuild knows where every namespace lives now.
            health.clear();
            tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
            continue;
        }
        probe_all(&node, &config, &mut health, &mut clients, confirmed).await;
        apply_standby_loss_policies(&node, &config, &health).await;
        if config.automatic {
            fail_over_failed(&node, &config, &health, &mut clients).await;
        }
        tokio::time::sleep(interval.saturating_sub(round.elapsed())).await;
    }
}

/// The desired role of every replicated namespace, grouped by shard.
fn desired_by_shard(node: &ControlNode) -> HashMap<String, Vec<pb::DesiredNamespace>> {
    node.with_state(|state| {
        let mut desired: HashMap<String, Vec<pb::DesiredNamespace>> = HashMap::new();
        // Active-active: every copy is a peer (no lease is needed to write,
        // nothing is fenced); the probe keeps each one configured so.
        for namespace in state
            .namespaces
            .values()
            .filter(|n| n.policy.mode == crate::model::NamespaceMode::ActiveActive)
        {
            let shards = std::iter::once(&namespace.shard)
                .chain(namespace.standbys.iter().map(|s| &s.shard));
            for shard in shards {
                desired
                    .entry(shard.clone())
                    .or_default()
                    .push(pb::DesiredNamespace {
                        namespace: namespace.name.clone(),
                        role: pb::NamespaceRole::Peer as i32,
                        epoch: namespace.epoch,
                        ..Default::default()
                    });
            }
        }
        for namespace in state.namespaces.values().filter(|n| state.fenced(n)) {
            // A sync namespace switched to async by its standby-loss policy
            // is configured as async until restored.
            let sync = namespace.sync_in_force();
            // Only while it is still a copy: a migration erases it.
            let former_primary = state
                .failovers
                .values()
                .rev()
                .filter(|f| f.is_move())
                .find(|f| f.namespace == namespace.name)
                .filter(|f| f.to_shard == namespace.shard)
                .filter(|f| namespace.standbys.iter().any(|s| s.shard == f.from_shard))
                .map(|f| f.from_shard.clone())
                .unwrap_or_default();
            // Every failover whose new primary reported where it took over:
            // each copy computes its fork point from them.
            let takeovers: Vec<pb::Takeover> = state
                .failovers
                .values()
                .filter(|f| f.namespace == namespace.name && f.is_move())
                .filter_map(|f| {
                    f.takeover.map(|t| pb::Takeover {
                        epoch: f.epoch,
                        source_epoch: t.source_epoch,
                        seq: t.seq,
                    })
                })
                .collect();
            desired
                .entry(namespace.shard.clone())
                .or_default()
                .push(pb::DesiredNamespace {
                    namespace: namespace.name.clone(),
                    role: pb::NamespaceRole::Primary as i32,
                    epoch: namespace.epoch,
                    fork_seq: 0,
                    sync,
                    max_lag_entries: namespace.max_lag.entries,
                    max_lag_ms: namespace.max_lag.ms,
                    sync_confirmations: if sync {
                        crate::promotion::sync_confirmations(namespace.standbys.len()) as u32
                    } else {
                        0
                    },
                    former_primary,
                    takeovers: takeovers.clone(),
                    fork_from_takeovers: true,
                    without_standbys: namespace.standbys.is_empty(),
                });
            for standby in &namespace.standbys {
                // A former primary of this namespace keeps what its successor
                // had; everything after that is set aside as lost writes.
                let fork_seq = state
                    .failovers
                    .values()
                    .rev()
                    .filter(|f| f.is_move())
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
                        sync,
                        max_lag_entries: namespace.max_lag.entries,
                        max_lag_ms: namespace.max_lag.ms,
                        sync_confirmations: 0,
                        former_primary: String::new(),
                        takeovers: takeovers.clone(),
                        fork_from_takeovers: true,
                        without_standbys: false,
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
                ..ClientOptions::default()
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
    confirmed: Instant,
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
        // Counted from the start of the leadership confirmation (so it ends
        // before any successor could have been elected plus a lease). A
        // shard being drained keeps answering probes but gets revocations.
        let wanted = desired.remove(&shard).unwrap_or_default();
        let failing = health.get(&shard).is_some_and(|h| h.failures > 0);
        let (request, ticket) = if failing {
            // Its last probe failed: probe it without a grant. Its current
            // lease runs on; a grant it might receive late would only push
            // back the moment it surely holds none (and a failover with it).
            let ticket = crate::lease::Ticket::NO_GRANT;
            (lease_request(config, ticket, wanted, confirmed), ticket)
        } else {
            let Some(granted) = grant(node, config, &shard, wanted, confirmed) else {
                continue;
            };
            granted
        };
        let mut request = request;
        if let Some(offset) = health.get(&shard).and_then(|h| h.offset) {
            request.offset_measured = true;
            request.measured_offset_ms = offset.ms;
            request.offset_uncertainty_ms = offset.uncertainty_ms;
        }
        probes.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = tokio::time::timeout(timeout * 2, client.lease(request)).await;
            (shard, answer, sent, Instant::now(), ticket)
        }));
    }
    let window = Duration::from_millis(config.latency_window_ms.max(config.error_window_ms));
    let mut takeovers = Vec::new();
    for probe in probes {
        let Ok((shard, answer, sent, at, ticket)) = probe.await else {
            continue;
        };
        let entry = health.entry(shard.clone()).or_default();
        let ok = matches!(answer, Ok(Ok(_)));
        node.stats.probed(
            &shard,
            crate::metrics::ProbeOutcome {
                up: ok,
                round_trip: at - sent,
            },
        );
        entry.samples.push_back((at, ok.then(|| at - sent)));
        while entry
            .samples
            .front()
            .is_some_and(|(when, _)| at.duration_since(*when) > window)
        {
            entry.samples.pop_front();
        }
        match answer {
            Ok(Ok(response)) => {
                entry.offset = note_answer(node, config, &shard, ticket, &response, (sent, at));
                takeovers.extend(reported_takeovers(&response));
                if entry.failures >= config.failed_probes {
                    tracing::info!(%shard, "shard answers probes again");
                }
                entry.failures = 0;
                entry.failing_since_ms = None;
                entry.last_ok = Some(at);
                entry.positions_at = Some(sent);
                entry.positions = response
                    .positions
                    .into_iter()
                    .map(|p| (p.namespace, (p.role, p.change_seq, p.resync_needed)))
                    .collect();
                node.positions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        shard.clone(),
                        entry
                            .positions
                            .iter()
                            .map(|(ns, (_, seq, _))| (ns.clone(), *seq))
                            .collect(),
                    );
            }
            Ok(Err(err)) => note_failure(entry, &shard, config, &err.to_string()),
            Err(_) => note_failure(entry, &shard, config, "probe timed out"),
        }
    }
    confirm_takeovers(node, takeovers).await;
}

/// Takeovers a shard's answer reports: every namespace it holds as a
/// primary promoted by a failover, with the epoch and position it took over
/// at.
fn reported_takeovers(
    response: &pb::LeaseResponse,
) -> impl Iterator<Item = (String, u64, crate::model::Takeover)> + '_ {
    response
        .positions
        .iter()
        .filter(|p| p.role == pb::NamespaceRole::Primary as i32 && p.promoted_from_epoch > 0)
        .map(|p| {
            (
                p.namespace.clone(),
                p.epoch,
                crate::model::Takeover {
                    source_epoch: p.promoted_from_epoch,
                    seq: p.promoted_seq,
                },
            )
        })
}

/// Records the takeovers reported that the failover history lacks (each
/// failover's first report only).
async fn confirm_takeovers(
    node: &Arc<ControlNode>,
    reported: Vec<(String, u64, crate::model::Takeover)>,
) {
    for (namespace, epoch, takeover) in reported {
        let unknown = node.with_state(|state| {
            state.failovers.values().rev().any(|f| {
                f.namespace == namespace && f.epoch == epoch && f.is_move() && f.takeover.is_none()
            })
        });
        if !unknown {
            continue;
        }
        let command = ControlCommand::ConfirmTakeover {
            namespace: namespace.clone(),
            epoch,
            takeover,
            requester: Requester {
                actor: "failover-policy".into(),
                at_unix_ms: now_unix_ms(),
            },
        };
        match node.propose(command).await {
            Ok(_) => {
                tracing::info!(%namespace, epoch, seq = takeover.seq, source_epoch = takeover.source_epoch, "new primary's takeover recorded")
            }
            Err(err) => {
                tracing::warn!(%namespace, epoch, error = %err, "cannot record a takeover; the next probe retries")
            }
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
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) {
    for (shard, shard_health) in health {
        // Each namespace is judged by its own policy (the global one with its
        // overrides) against the same probes.
        let victims: Vec<(crate::model::Namespace, String)> = node.with_state(|state| {
            state
                .namespaces
                .values()
                .filter(|n| &n.shard == shard && n.replicated())
                .filter_map(|n| {
                    let policy = n.failover.apply(config);
                    if !policy.automatic {
                        return None;
                    }
                    let cause = policy_verdict(shard, shard_health, &policy)?;
                    candidates(n, health, config, None)
                        .iter()
                        .any(|c| c.eligible)
                        .then(|| (n.clone(), cause))
                })
                .collect()
        });
        if victims.is_empty() {
            continue;
        }
        // A shard failed by latency or errors still answers probes: stop
        // granting it leases (until its namespaces have moved), then wait out
        // the last one.
        let lease_end = {
            let mut leases = node.leases.lock().unwrap_or_else(|e| e.into_inner());
            let Some(ledger) = leases.as_mut() else {
                return;
            };
            ledger.start_drain(shard);
            if ledger.may_hold_until(shard, Instant::now()).is_some() {
                continue;
            }
            ledger.lease_end(shard)
        };
        let mut all_moved = true;
        for (namespace, cause) in victims {
            let sync = namespace.sync_in_force();
            let candidates = candidates(&namespace, health, config, lease_end);
            let choice = crate::promotion::choose_target(&candidates, sync);
            let (target, promoted_seq) = match choice {
                Ok(choice) => choice,
                Err(why) => {
                    tracing::warn!(namespace = %namespace.name, ?why, ?candidates, "primary failed; no standby may be promoted yet");
                    all_moved = false;
                    continue;
                }
            };
            let primary_seq = shard_health
                .positions
                .get(&namespace.name)
                .map_or(0, |(_, seq, _)| *seq);
            // The old primary reported its position with its last good probe
            // and may have acknowledged writes until its last lease ran out:
            // those writes are in the loss window although no position
            // counted them.
            let window = crate::model::LossWindow {
                reported_at_ms: shard_health.positions_at.map_or(0, unix_ms_at),
                writes_until_ms: lease_end.map_or_else(now_unix_ms, unix_ms_at),
            };
            let command = ControlCommand::FailoverBounded(
                crate::command::FailoverMove {
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
                },
                window,
            );
            match node.propose(command).await {
                Ok(ControlResult::FailedOver { record, .. }) => {
                    log_failover(&record);
                    promote_now(node, config, &record, clients).await;
                }
                Ok(other) => {
                    all_moved = false;
                    tracing::error!(?other, "unexpected failover result")
                }
                Err(err) => {
                    all_moved = false;
                    tracing::warn!(namespace = %namespace.name, error = %err, "failover refused")
                }
            }
        }
        // Until every failed namespace has moved, the shard stays drained
        // (no new lease), so the wait for its lease to end is not restarted.
        if !all_moved {
            continue;
        }
        // Its replicated namespaces have moved; what it still hosts needs no
        // lease or will be re-checked next round.
        if let Some(ledger) = node
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            ledger.end_drain(shard);
        }
    }
}

/// Sync namespaces whose policy is `on_standby_loss = degrade`: switched to
/// async when too few standbys can confirm writes, back to sync once enough
/// are current again (`promotion::standby_loss_verdict`); each switch is a
/// command, so it is audited and in the failover history.
async fn apply_standby_loss_policies(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    health: &HashMap<String, ShardHealth>,
) {
    let decisions: Vec<(String, bool, String)> = node.with_state(|state| {
        state
            .namespaces
            .values()
            .filter(|n| {
                n.replicated()
                    && n.wants_sync()
                    && n.on_standby_loss == crate::model::StandbyLossPolicy::Degrade
            })
            .filter_map(|n| {
                let primary_seq = health
                    .get(&n.shard)
                    .and_then(|h| h.positions.get(&n.name))
                    .map(|(_, seq, _)| *seq)?;
                let states: Vec<crate::promotion::StandbyState> = n
                    .standbys
                    .iter()
                    .map(|standby| {
                        let h = health.get(&standby.shard);
                        let position = h.and_then(|h| h.positions.get(&n.name));
                        let able = h.is_some_and(|h| {
                            h.failures < config.failed_probes && h.last_ok.is_some()
                        }) && position.is_some_and(|(role, _, resync)| {
                            *role == pb::NamespaceRole::Standby as i32 && !resync
                        });
                        crate::promotion::StandbyState {
                            able,
                            current: position.is_some_and(|(_, seq, _)| *seq >= primary_seq),
                        }
                    })
                    .collect();
                let change = crate::promotion::standby_loss_verdict(&states, n.sync_degraded)?;
                let lost: Vec<&str> = n
                    .standbys
                    .iter()
                    .zip(&states)
                    .filter(|(_, s)| !s.able)
                    .map(|(c, _)| c.shard.as_str())
                    .collect();
                Some(match change {
                    crate::promotion::SyncChange::Degrade => (
                        n.name.clone(),
                        true,
                        format!(
                            "sync switched to async by policy on-standby-loss=degrade: standbys that cannot confirm: {}",
                            lost.join(", ")
                        ),
                    ),
                    crate::promotion::SyncChange::Restore => (
                        n.name.clone(),
                        false,
                        "sync restored: enough standbys are current again".to_string(),
                    ),
                })
            })
            .collect()
    });
    for (namespace, degraded, cause) in decisions {
        tracing::warn!(%namespace, degraded, %cause, "standby-loss policy");
        let command = ControlCommand::SetSyncDegraded {
            namespace: namespace.clone(),
            degraded,
            cause,
            requester: Requester {
                actor: "standby-loss-policy".into(),
                at_unix_ms: now_unix_ms(),
            },
        };
        if let Err(err) = node.propose(command).await {
            tracing::warn!(%namespace, error = %err, "could not record the standby-loss switch");
        }
    }
}

/// Whether the failover policy declares `shard` failed, and why: consecutive
/// failed probes; or, when configured, the p99 probe round trip or the share of
/// failed probes above its threshold over a full window.
fn policy_verdict(
    shard: &str,
    health: &ShardHealth,
    config: &crate::config::FailoverSection,
) -> Option<String> {
    if health.failures >= config.failed_probes {
        return Some(format!(
            "primary shard {shard} failed {} consecutive probes (policy: {} failed probes at {} ms)",
            health.failures, config.failed_probes, config.probe_interval_ms
        ));
    }
    let now = Instant::now();
    let covering = |window_ms: u64| -> Option<Vec<&(Instant, Option<Duration>)>> {
        let window = Duration::from_millis(window_ms);
        let samples: Vec<_> = health
            .samples
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= window)
            .collect();
        // Only a window the samples actually span counts ("for a duration").
        let oldest = samples.first()?.0;
        (now.duration_since(oldest) + Duration::from_millis(config.probe_interval_ms) >= window)
            .then_some(samples)
    };
    if config.p99_latency_ms > 0
        && let Some(samples) = covering(config.latency_window_ms)
    {
        let mut latencies: Vec<Duration> = samples.iter().filter_map(|(_, l)| *l).collect();
        latencies.sort();
        if let Some(p99) = latencies
            .get((latencies.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            && p99 > Duration::from_millis(config.p99_latency_ms)
        {
            return Some(format!(
                "primary shard {shard}: probe p99 {} ms above {} ms for {} ms",
                p99.as_millis(),
                config.p99_latency_ms,
                config.latency_window_ms
            ));
        }
    }
    if config.error_rate > 0.0
        && let Some(samples) = covering(config.error_window_ms)
    {
        let failed = samples.iter().filter(|(_, l)| l.is_none()).count();
        let rate = failed as f64 / samples.len() as f64;
        if rate > config.error_rate {
            return Some(format!(
                "primary shard {shard}: {:.0} % of probes failed over {} ms (policy: above {:.0} %)",
                rate * 100.0,
                config.error_window_ms,
                config.error_rate * 100.0
            ));
        }
    }
    None
}

/// Every standby of `namespace` as the promotion rule sees it; a position
/// counts as reported after the old primary's lease when its probe was sent
/// after `lease_end`.
fn candidates(
    namespace: &crate::model::Namespace,
    health: &HashMap<String, ShardHealth>,
    config: &crate::config::FailoverSection,
    lease_end: Option<Instant>,
) -> Vec<crate::promotion::Candidate> {
    namespace
        .standbys
        .iter()
        .map(|standby| {
            let h = health.get(&standby.shard);
            let position = h.and_then(|h| h.positions.get(&namespace.name));
            let healthy = h.is_some_and(|h| h.failures == 0 && h.last_ok.is_some());
            let eligible = healthy
                && h.is_some_and(|h| h.failures < config.failed_probes)
                && position.is_some_and(|(role, _, resync)| {
                    *role == pb::NamespaceRole::Standby as i32 && !resync
                });
            let reported_after_lease = h
                .and_then(|h| h.positions_at)
                .is_some_and(|at| lease_end.is_none_or(|end| at > end));
            crate::promotion::Candidate {
                shard: standby.shard.clone(),
                position: position.map_or(0, |(_, seq, _)| *seq),
                eligible,
                reported_after_lease,
            }
        })
        .collect()
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
/// lease) without waiting for the next round. Returns when its answer came
/// (`None`: it did not; the next round retries).
pub async fn promote_now(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    record: &FailoverRecord,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) -> Option<Instant> {
    match probe_now(node, config, &record.to_shard, clients).await {
        // The new primary says where it took over: other copies can be
        // cut back to it from the next round on.
        Ok(response) => {
            let answered = Instant::now();
            confirm_takeovers(node, reported_takeovers(&response).collect()).await;
            Some(answered)
        }
        Err(err) => {
            tracing::warn!(shard = %record.to_shard, error = %err, "promotion probe failed; the next round retries");
            None
        }
    }
}

/// Sends `shard` the grant and roles of a probe round now (what the next
/// round would send), so a change of roles takes effect without waiting
/// for it: a demoted primary then refuses with `not-primary`, which sends
/// gateways to the new route at once.
pub async fn probe_now(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    shard: &str,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
) -> Result<pb::LeaseResponse, String> {
    let members: Vec<String> = node.with_state(|state| {
        state
            .shards
            .get(shard)
            .map(|s| s.members.values().map(|m| m.address.clone()).collect())
            .unwrap_or_default()
    });
    let timeout = Duration::from_millis(config.probe_timeout_ms);
    let client = client_for(node, clients, shard, members, timeout)
        .ok_or_else(|| format!("shard {shard} has no members"))?;
    let desired = desired_by_shard(node).remove(shard).unwrap_or_default();
    let (request, _) = grant(node, config, shard, desired, Instant::now())
        .ok_or_else(|| "not leading with a lease ledger".to_string())?;
    client.lease(request).await.map_err(|e| e.to_string())
}

/// A manual failover, drain or promotion: which namespaces, to where.
#[derive(Debug, Clone)]
pub struct ManualFailover {
    /// One namespace, or empty for every namespace matching `from_region`.
    pub namespace: String,
    /// Only namespaces homed here (empty: any).
    pub from_region: String,
    /// The standby region to promote (empty: the standby with the most data).
    pub to_region: String,
    /// Skip the drain (the primary is gone): wait out its lease instead.
    pub force: bool,
    /// Who asked.
    pub actor: String,
    /// Why, in words (empty: a manual failover by `actor`).
    pub reason: String,
}

impl ManualFailover {
    /// The cause recorded in the failover history.
    fn cause(&self) -> String {
        if self.reason.is_empty() {
            format!("manual failover by {}", self.actor)
        } else {
            self.reason.clone()
        }
    }
}

/// How long a drain waits for the standby to catch up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a manual failover through the same path as the automatic one. With a
/// reachable primary it drains first: the primary's write lease is revoked (it
/// refuses writes), the standby catches up to the primary's last change, and
/// only then is the standby promoted — nothing acknowledged is lost, even in
/// async mode. Residency is checked for every target.
pub async fn manual(
    node: &Arc<ControlNode>,
    request: ManualFailover,
) -> Result<Vec<FailoverRecord>, crate::error::ControlError> {
    use crate::error::ControlError;
    let config = node.config.failover.clone();
    let plans: Vec<(crate::model::Namespace, crate::model::StandbyCopy)> =
        node.with_state(|state| {
            let mut plans = Vec::new();
            for namespace in state.namespaces.values() {
                let selected = if request.namespace.is_empty() {
                    request.from_region.is_empty()
                        || namespace.policy.home_region == request.from_region
                } else {
                    namespace.name == request.namespace
                };
                if !selected || !namespace.replicated() {
                    continue;
                }
                let target = if request.to_region.is_empty() {
                    namespace.standbys.first().cloned()
                } else {
                    namespace
                        .standbys
                        .iter()
                        .find(|s| s.region == request.to_region)
                        .cloned()
                };
                if let Some(target) = target {
                    plans.push((namespace.clone(), target));
                }
            }
            Ok::<_, ControlError>(plans)
        })?;
    if plans.is_empty() {
        // Say exactly why: unknown namespace, residency, or no such standby.
        return Err(explain_no_plan(node, &request));
    }
    let mut records = Vec::new();
    let mut clients = HashMap::new();
    for (namespace, target) in plans {
        let moved = move_one(
            node,
            &config,
            &namespace,
            &target,
            &request,
            DRAIN_TIMEOUT,
            &mut clients,
            |drained| ControlCommand::FailoverBounded(drained.step, drained.window),
        )
        .await?;
        let ControlResult::FailedOver { record, .. } = moved.result else {
            return Err(ControlError::Unavailable(format!(
                "unexpected result {:?}",
                moved.result
            )));
        };
        log_failover(&record);
        promote_now(node, &config, &record, &mut clients).await;
        records.push(record);
    }
    Ok(records)
}

fn explain_no_plan(node: &ControlNode, request: &ManualFailover) -> crate::error::ControlError {
    use crate::command::ControlRejection;
    use crate::error::ControlError;
    node.with_state(|state| {
        if !request.namespace.is_empty() {
            let Some(namespace) = state.namespaces.get(&request.namespace) else {
                return ControlRejection::NamespaceNotFound(request.namespace.clone()).into();
            };
            if !request.to_region.is_empty() {
                if let Some(region) = state.regions.get(&request.to_region)
                    && let Err(violation) = crate::residency::check_region(
                        &namespace.name,
                        &namespace.policy.allowed_jurisdictions,
                        region,
                        "failover target",
                    )
                {
                    return ControlRejection::Placement(
                        crate::placement::PlacementError::Residency(violation.to_string()),
                    )
                    .into();
                }
                return ControlRejection::NotAStandby {
                    namespace: namespace.name.clone(),
                    shard: format!("(region {})", request.to_region),
                    standbys: namespace
                        .standbys
                        .iter()
                        .map(|s| format!("{} ({})", s.shard, s.region))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into();
            }
            if namespace.policy.mode == crate::model::NamespaceMode::ActiveActive {
                return ControlError::Invalid(format!(
                    "namespace {:?} is active-active: every peer region takes writes, so there is nothing to fail over; gateways send a lost region's clients to the nearest healthy peer",
                    namespace.name
                ));
            }
            return ControlError::Invalid(format!(
                "namespace {:?} has no standby to fail over to (mode {:?})",
                namespace.name, namespace.policy.mode
            ));
        }
        ControlError::Invalid(format!(
            "no active-passive namespace homed in {:?} has a standby in {:?}",
            request.from_region, request.to_region
        ))
    })
}

/// A drained move, ready to be committed: the primary's lease is revoked,
/// the target holds its last change and both digests agree.
pub struct Drained {
    /// The move to commit.
    pub step: crate::command::FailoverMove,
    /// Its loss window (none: drained).
    pub window: crate::model::LossWindow,
    /// The change both copies hold (the promoted standby's, when forced).
    pub change_seq: u64,
    /// Their digest at that change (empty when forced: not compared).
    pub digest: String,
    /// When the revocation was sent.
    pub revoked_at: Instant,
}

/// How long the full integrity scans before a drained move may take (a
/// large namespace scans for seconds; writes still flow meanwhile).
const PRE_MOVE_SCAN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a copy may take to come within reach before a drained move.
const PRE_MOVE_REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the copy is within reach of the primary
/// ([`crate::migration::within_reach`], the rule the migration's catch-up
/// uses; both positions read from their kept records, one round trip each).
async fn wait_within_reach(
    namespace: &str,
    primary: &Client,
    standby: &Client,
) -> Result<(), MoveError> {
    let deadline = Instant::now() + PRE_MOVE_REACH_TIMEOUT;
    let mut last = (0, 0);
    loop {
        let (ours, theirs) = tokio::join!(
            primary.content_sum_at(namespace, 0, Duration::ZERO),
            standby.content_sum_at(namespace, 0, Duration::ZERO)
        );
        if let (Ok(ours), Ok(theirs)) = (&ours, &theirs) {
            last = (ours.change_seq, theirs.change_seq);
            if crate::migration::within_reach(ours.change_seq, theirs.change_seq) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(MoveError::OverBudget(format!(
                "the copy of {namespace:?} did not come within {} changes of the primary in {}s (last seen at change {} of {}); writes were not blocked",
                crate::migration::CUTOVER_LAG_ENTRIES,
                PRE_MOVE_REACH_TIMEOUT.as_secs(),
                last.1,
                last.0
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why a drained move did not happen (the source stays primary).
#[derive(Debug)]
pub enum MoveError {
    /// The target was not caught up and verified within the budget.
    OverBudget(String),
    /// The copies' digests differ at the same change.
    Differ(String),
    /// Anything else (unreachable shard, lost leadership, a refusal).
    Control(crate::error::ControlError),
}

impl From<crate::error::ControlError> for MoveError {
    fn from(err: crate::error::ControlError) -> Self {
        MoveError::Control(err)
    }
}

impl From<MoveError> for crate::error::ControlError {
    fn from(err: MoveError) -> Self {
        match err {
            MoveError::OverBudget(why) | MoveError::Differ(why) => {
                crate::error::ControlError::Unavailable(why)
            }
            MoveError::Control(err) => err,
        }
    }
}

/// What a committed move came to.
pub struct Moved {
    /// The committed command's result.
    pub result: ControlResult,
    /// When the revocation was sent (for the write-block measure).
    pub revoked_at: Instant,
}

/// Moves `namespace`'s primary to `target`: revokes the primary's lease
/// (its answer is its last change), waits until the target holds that
/// change, compares both digests, and commits the command `commit` makes
/// of it. Gives up — the lease is granted again by the next probe round,
/// nothing was acknowledged that the primary lacks — when the target is not
/// there within `budget` of the revocation or the digests differ.
#[allow(clippy::too_many_arguments)]
pub async fn move_one(
    node: &Arc<ControlNode>,
    config: &crate::config::FailoverSection,
    namespace: &crate::model::Namespace,
    target: &crate::model::StandbyCopy,
    request: &ManualFailover,
    budget: Duration,
    clients: &mut HashMap<String, (Vec<String>, Arc<Client>)>,
    commit: impl FnOnce(Drained) -> ControlCommand,
) -> Result<Moved, MoveError> {
    use crate::error::ControlError;
    use crate::migration::CutoverVerdict;
    let timeout = Duration::from_millis(config.probe_timeout_ms);
    let members = |shard: &str| -> Vec<String> {
        node.with_state(|state| {
            state
                .shards
                .get(shard)
                .map(|s| s.members.values().map(|m| m.address.clone()).collect())
                .unwrap_or_default()
        })
    };
    let primary = client_for(
        node,
        clients,
        &namespace.shard,
        members(&namespace.shard),
        timeout,
    )
    .ok_or_else(|| ControlError::Unavailable("primary shard has no members".into()))?;
    let standby = client_for(
        node,
        clients,
        &target.shard,
        members(&target.shard),
        timeout,
    )
    .ok_or_else(|| ControlError::Unavailable("standby shard has no members".into()))?;
    // Digests can take longer than a probe: their own clients, with the
    // budget as their timeout.
    let budget_client = |shard: &str| {
        Client::with_options(
            members(shard),
            meridian_client::ClientOptions {
                attempt_timeout: budget.max(Duration::from_secs(1)),
                retry_budget: budget.max(Duration::from_secs(1)),
                dialer: node.dialer.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| ControlError::Unavailable(format!("shard {shard}: {e}")))
    };
    let (primary_digests, standby_digests) = (
        budget_client(&namespace.shard)?,
        budget_client(&target.shard)?,
    );
    // Connections up before writes stop: a handshake over the WAN would
    // otherwise be part of the block. The second call measures the round
    // trip to the target, which the route switch and the promotion take
    // after the decision: kept in reserve within the budget.
    let _ = tokio::join!(
        primary.cluster_status(),
        primary_digests.cluster_status(),
        standby.cluster_status(),
        standby_digests.cluster_status()
    );
    let measured = Instant::now();
    let _ = standby.cluster_status().await;
    let reserve_ms = crate::migration::switch_reserve_ms(
        u64::try_from(measured.elapsed().as_millis()).unwrap_or(u64::MAX),
        &node.recent_commit_ms(),
    );
    // Both copies check their running content sums against a full scan
    // now, while writes still flow: inside the block the two sums are then
    // compared without scanning anything. A copy that keeps no sum (stored
    // before sums existed) is compared by full digests in the block.
    let compare_sums = if request.force {
        false
    } else {
        // A full scan takes as long as the namespace is large: not bounded
        // by the block's budget (nothing is blocked yet).
        let scan_client = |shard: &str| {
            Client::with_options(
                members(shard),
                meridian_client::ClientOptions {
                    attempt_timeout: PRE_MOVE_SCAN_TIMEOUT,
                    retry_budget: PRE_MOVE_SCAN_TIMEOUT,
                    dialer: node.dialer.clone(),
                    ..Default::default()
                },
            )
            .map_err(|e| ControlError::Unavailable(format!("shard {shard}: {e}")))
        };
        let (primary_scan, standby_scan) =
            (scan_client(&namespace.shard)?, scan_client(&target.shard)?);
        let (ours, theirs) = tokio::join!(
            primary_scan.check_integrity(&namespace.name),
            standby_scan.check_integrity(&namespace.name)
        );
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                !ours.content_sum.is_empty() && !theirs.content_sum.is_empty()
            }
            (Err(meridian_client::ClientError::DataLoss(why)), _)
            | (_, Err(meridian_client::ClientError::DataLoss(why))) => {
                return Err(MoveError::Differ(format!(
                    "a copy of {:?} failed its integrity check before the move: {why}",
                    namespace.name
                )));
            }
            (Err(err), _) | (_, Err(err)) => {
                return Err(ControlError::Unavailable(format!(
                    "cannot check the integrity of {:?} before moving it: {err}",
                    namespace.name
                ))
                .into());
            }
        }
    };
    if compare_sums {
        // The scans took a while and writes went on: the copy comes within
        // reach again before writes stop, or the block would be spent
        // shipping what piled up meanwhile.
        wait_within_reach(&namespace.name, &primary_digests, &standby_digests).await?;
    }
    let revoke = node
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .map(|ledger| ledger.revoke(&namespace.shard))
        .ok_or_else(|| {
            ControlError::Unavailable(
                "this control-plane member is not yet leading with a lease ledger; retry".into(),
            )
        })?;
    let revoked_at = Instant::now();
    let result = async {
        let detected_at_ms = now_unix_ms();
        let position = |response: &pb::LeaseResponse| {
            response
                .positions
                .iter()
                .find(|p| p.namespace == namespace.name)
                .map_or(0, |p| p.change_seq)
        };
        // Revoke the primary's lease; the answer is its final position. The
        // revocation is numbered after every grant sent so far, so a grant
        // still on its way is ignored when it lands: once the shard answers,
        // it holds no lease.
        let revocation = lease_request(config, revoke, Vec::new(), Instant::now());
        let (primary_seq, cause, window) = match primary.lease(revocation).await {
            // Drained: without a lease it acknowledges nothing more.
            Ok(response) => {
                if let Some(ledger) = node.leases.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    ledger.revoked(&namespace.shard, revoke);
                }
                (
                Some(position(&response)),
                format!("{} (drained)", request.cause()),
                crate::model::LossWindow {
                    reported_at_ms: now_unix_ms(),
                    writes_until_ms: now_unix_ms(),
                },
            )
            }
            Err(err) if request.force => {
                tracing::warn!(error = %err, "primary unreachable; waiting out its lease");
                // Until every grant it may hold has surely ended.
                loop {
                    let until = node
                        .leases
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_ref()
                        .and_then(|l| l.may_hold_until(&namespace.shard, Instant::now()));
                    let Some(until) = until else { break };
                    tokio::time::sleep_until(until.into()).await;
                }
                (
                    None,
                    format!("{} (forced: primary unreachable)", request.cause()),
                    crate::model::LossWindow {
                        reported_at_ms: 0,
                        writes_until_ms: now_unix_ms(),
                    },
                )
            }
            Err(err) => {
                return Err(ControlError::Unavailable(format!(
                    "the primary of {:?} cannot be drained ({err}); retry, or pass --force to fail over without draining",
                    namespace.name
                ))
                .into());
            }
        };
        let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
        let elapsed_ms = || u64::try_from(revoked_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Wait until the standby has everything the primary logged; then,
        // moving back to a former primary (failback) or to any standby, only
        // a faithful copy may take over: with a drained primary both copies
        // are still, so their digests must be equal.
        let (promoted_seq, digest) = match primary_seq {
            // Forced: the primary is gone; the standby has what it has.
            None => {
                let desired = desired_by_shard(node)
                    .remove(&target.shard)
                    .unwrap_or_default();
                let (grant_request, _) =
                    grant(node, config, &target.shard, desired, Instant::now()).ok_or_else(
                        || ControlError::Unavailable("leadership lost during the move".into()),
                    )?;
                let standby_seq = standby
                    .lease(grant_request)
                    .await
                    .map(|r| position(&r))
                    .map_err(|e| {
                        ControlError::Unavailable(format!("standby {}: {e}", target.shard))
                    })?;
                (standby_seq, String::new())
            }
            Some(mut goal) => loop {
                // One round trip each: the standby answers once it holds
                // the primary's last change (or the budget is spent).
                let wait = budget
                    .saturating_sub(revoked_at.elapsed())
                    .saturating_sub(Duration::from_millis(reserve_ms))
                    .min(Duration::from_secs(10));
                let (theirs, ours) = if compare_sums {
                    tokio::join!(
                        standby_digests.content_sum_at(&namespace.name, goal, wait),
                        primary_digests.content_sum_at(&namespace.name, 0, Duration::ZERO)
                    )
                } else {
                    tokio::join!(
                        standby_digests.check_integrity_at(&namespace.name, goal, wait),
                        primary_digests.check_integrity(&namespace.name)
                    )
                };
                let (standby_seq, digests) = match (theirs, ours) {
                    // A write that passed the lease check before the
                    // revocation may still have landed after its answer:
                    // the primary's last change is what it reports now, and
                    // the copies are compared at the same change only.
                    (Ok(_), Ok(ours)) if ours.change_seq > goal => {
                        goal = ours.change_seq;
                        (0, None)
                    }
                    // A copy that moved while its digest was computed
                    // reports no position: asked again.
                    (Ok(theirs), Ok(ours))
                        if goal > 0 && (ours.change_seq == 0 || theirs.change_seq == 0) =>
                    {
                        (0, None)
                    }
                    (Ok(theirs), Ok(ours)) if compare_sums => (
                        theirs.change_seq,
                        Some((
                            format!("content-sum:{}/{}", ours.content_sum, ours.key_count),
                            format!("content-sum:{}/{}", theirs.content_sum, theirs.key_count),
                        )),
                    ),
                    (Ok(theirs), Ok(ours)) => {
                        (theirs.change_seq, Some((ours.digest, theirs.digest)))
                    }
                    // Not there yet (or a leader change): asked again
                    // while the budget lasts.
                    (Err(meridian_client::ClientError::Unavailable(_)), Ok(_)) => (0, None),
                    (Err(err), _) | (_, Err(err)) => {
                        return Err(ControlError::Unavailable(format!(
                            "cannot compare integrity digests of {:?} before moving it: {err}",
                            namespace.name
                        ))
                        .into());
                    }
                };
                tracing::debug!(
                    namespace = %namespace.name,
                    elapsed_ms = elapsed_ms(),
                    standby_seq,
                    goal,
                    compared = digests.is_some(),
                    "drained move: target position"
                );
                let verdict = crate::migration::cutover_verdict(
                    elapsed_ms(),
                    reserve_ms,
                    budget_ms,
                    goal,
                    standby_seq,
                    digests.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                );
                match verdict {
                    CutoverVerdict::Wait => tokio::time::sleep(Duration::from_millis(20)).await,
                    CutoverVerdict::OverBudget(why) => {
                        return Err(MoveError::OverBudget(format!(
                            "standby {} of {:?} not ready in time: {why}; writes resume on the primary",
                            target.shard, namespace.name
                        )));
                    }
                    CutoverVerdict::Differ(why) => {
                        return Err(MoveError::Differ(format!(
                            "standby {} of {:?} is at the primary's position but its integrity digest differs ({why}); not moving",
                            target.shard, namespace.name
                        )));
                    }
                    CutoverVerdict::Switch => {
                        break (standby_seq, digests.map(|(a, _)| a).unwrap_or_default());
                    }
                }
            },
        };
        let last_known = node
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&namespace.shard)
            .and_then(|p| p.get(&namespace.name).copied())
            .unwrap_or(0);
        let drained = Drained {
            step: crate::command::FailoverMove {
                namespace: namespace.name.clone(),
                to_shard: target.shard.clone(),
                cause,
                detected_at_ms,
                primary_seq: primary_seq.unwrap_or(last_known),
                promoted_seq,
                requester: Requester {
                    actor: request.actor.clone(),
                    at_unix_ms: now_unix_ms(),
                },
            },
            window,
            change_seq: promoted_seq,
            digest,
            revoked_at,
        };
        let result = node.propose(commit(drained)).await?;
        Ok(Moved { result, revoked_at })
    }
    .await;
    if let Some(ledger) = node
        .leases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
    {
        ledger.end_drain(&namespace.shard);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailoverSection;

    fn health(span: Duration, every: Duration, latency: Option<Duration>) -> ShardHealth {
        let now = Instant::now();
        let mut health = ShardHealth::default();
        let mut age = span;
        loop {
            health.samples.push_back((now - age, latency));
            if age < every {
                break;
            }
            age -= every;
        }
        health
    }

    #[test]
    fn policies_fire_only_over_a_full_window() {
        let config = FailoverSection {
            p99_latency_ms: 100,
            latency_window_ms: 3_000,
            error_rate: 0.5,
            error_window_ms: 3_000,
            ..FailoverSection::default()
        };
        let second = Duration::from_secs(1);
        let slow = Some(Duration::from_millis(250));
        let fast = Some(Duration::from_millis(5));
        assert!(
            policy_verdict("s", &health(Duration::from_secs(3), second, slow), &config)
                .is_some_and(|why| why.contains("p99"))
        );
        assert!(policy_verdict("s", &health(second, second, slow), &config).is_none());
        assert!(
            policy_verdict("s", &health(Duration::from_secs(3), second, fast), &config).is_none()
        );
        assert!(
            policy_verdict("s", &health(Duration::from_secs(3), second, None), &config)
                .is_some_and(|why| why.contains("probes failed"))
        );
        let mut failing = ShardHealth {
            failures: 3,
            ..ShardHealth::default()
        };
        assert!(
            policy_verdict("s", &failing, &FailoverSection::default())
                .is_some_and(|why| why.contains("3 consecutive"))
        );
        failing.failures = 2;
        assert!(policy_verdict("s", &failing, &FailoverSection::default()).is_none());
    }
}
