//! Carries out a migration job (`namespace migrate`): the leader's driver
//! asks [`crate::migration::next_step`] what to do from what the job has
//! recorded, does it, records it, and asks again. A new leader starts from
//! the last recorded step; every step is safe to do twice.

use crate::command::{ControlCommand, ControlResult};
use crate::jobs::{Attempt, ended, report, requester};
use crate::migration::Step;
use crate::model::{Job, JobProgress, JobSpec, JobState, Migration, StandbyCopy};
use crate::node::{ControlNode, now_unix_ms};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Cutover tries that may run over the budget before the migration rolls
/// back.
pub const MAX_CUTOVER_TRIES: u32 = 3;
/// How often the driver looks again while it waits.
const WAIT_STEP: Duration = Duration::from_millis(200);

/// One start of a migration job.
pub(crate) async fn drive(node: &Arc<ControlNode>, job: &Job, attempts: u32) -> Attempt {
    let id = job.id;
    let mut over_budget = 0u32;
    let mut last_report = None::<std::time::Instant>;
    let mut clients = HashMap::new();
    // Record this start, so `jobs show` counts the leaders that drove it.
    report(
        node,
        id,
        JobProgress {
            step: job.step.clone(),
            shard: job.shard.clone(),
            done_units: job.done_units,
            total_units: job.total_units,
            attempts,
        },
    )
    .await;
    loop {
        let Some((job, migration, namespace, deleting)) = node.with_state(|s| {
            let job = s.jobs.get(&id).filter(|j| j.is_running())?.clone();
            let JobSpec::Migrate(migration) = &job.spec else {
                return None;
            };
            let migration = migration.clone();
            let deleting: BTreeSet<String> = s
                .deletions
                .get(&migration.namespace)
                .map(|d| d.shards.clone())
                .unwrap_or_default();
            let namespace = s.namespaces.get(&migration.namespace).cloned();
            Some((job, migration, namespace, deleting))
        }) else {
            return Attempt::Retry("the job is not running any more".into());
        };
        let mut step = crate::migration::next_step(
            &migration,
            job.created_unix_ms,
            namespace.as_ref(),
            &deleting,
            job.cancel_requested,
            now_unix_ms(),
        );
        if attempts > crate::jobs::MAX_ATTEMPTS && migration.cutover.is_none() {
            step = Step::RollBack(format!(
                "gave up after {} starts; last step {:?}",
                crate::jobs::MAX_ATTEMPTS,
                job.step
            ));
        }
        match step {
            Step::AddTarget => {
                if let Err(why) = add_target(node, id, &migration, namespace.as_ref()).await {
                    return why;
                }
            }
            Step::CatchUp { deadline_ms } => {
                let (primary, copy) = positions(node, &migration);
                let ready = matches!((primary, copy), (Some(p), Some(c)) if crate::migration::within_reach(p, c));
                if ready {
                    if let Some(handed) = hand_leadership_over(node, &migration).await {
                        return Attempt::Retry(handed);
                    }
                    match cut_over(node, &migration, id, &mut clients).await {
                        Ok(()) => continue,
                        Err(crate::failover::MoveError::OverBudget(why)) => {
                            over_budget += 1;
                            // The source's lease back now, not at the next
                            // probe round: its writes resume at once.
                            let config = node.config.failover.clone();
                            if let Err(err) = crate::failover::probe_now(
                                node,
                                &config,
                                &migration.source_shard,
                                &mut clients,
                            )
                            .await
                            {
                                tracing::warn!(%err, "lease not given back at once; the next round does");
                            }
                            tracing::warn!(job = id, tries = over_budget, %why, "cutover over budget; writes resume on the source");
                            if over_budget >= MAX_CUTOVER_TRIES {
                                let why = format!(
                                    "{over_budget} cutovers ran over the budget; the last: {why}"
                                );
                                return roll_back(node, id, &migration, why, JobState::Failed)
                                    .await;
                            }
                        }
                        Err(crate::failover::MoveError::Differ(why)) => {
                            return roll_back(node, id, &migration, why, JobState::Failed).await;
                        }
                        Err(crate::failover::MoveError::Control(err)) => {
                            return Attempt::Retry(format!("cutover: {err}"));
                        }
                    }
                } else if now_unix_ms() > deadline_ms {
                    let why = format!(
                        "the new copy on {} did not come within {} changes of the primary in {} ms (primary at {primary:?}, copy at {copy:?})",
                        migration.target_shard,
                        crate::migration::CUTOVER_LAG_ENTRIES,
                        migration.catch_up_timeout_ms
                    );
                    return roll_back(node, id, &migration, why, JobState::Failed).await;
                }
                if last_report
                    .is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(1))
                {
                    last_report = Some(std::time::Instant::now());
                    let progress = JobProgress {
                        step: "copying".into(),
                        shard: migration.target_shard.clone(),
                        done_units: copy.unwrap_or(0),
                        total_units: primary.unwrap_or(0),
                        attempts,
                    };
                    // A cancel is seen by the next step.
                    report(node, id, progress).await;
                }
                tokio::time::sleep(WAIT_STEP).await;
            }
            Step::KeepSource { until_ms } => {
                let wait = until_ms.saturating_sub(now_unix_ms()).min(1_000);
                tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
            }
            Step::ReleaseSource => {
                // Standbys are carried over; one moved into becomes the
                // primary, so a namespace left with no other is given a new
                // one, caught up before the source goes.
                match replace_standby(node, id, &migration, namespace.as_ref(), &deleting).await {
                    Ok(None) => {}
                    Ok(Some(waiting)) => {
                        let progress = JobProgress {
                            step: waiting,
                            shard: migration.target_shard.clone(),
                            done_units: job.done_units,
                            total_units: job.total_units,
                            attempts,
                        };
                        report(node, id, progress).await;
                        tokio::time::sleep(WAIT_STEP).await;
                        continue;
                    }
                    Err(attempt) => return attempt,
                }
                let dropped = node
                    .propose(ControlCommand::DropMigrationCopy {
                        job: id,
                        shard: migration.source_shard.clone(),
                        requester: requester(node),
                    })
                    .await;
                if let Err(err) = dropped {
                    return Attempt::Retry(format!("releasing the source copy: {err}"));
                }
                crate::deletion::finish(node, &migration.namespace).await;
            }
            Step::AwaitErasure => {
                crate::deletion::finish(node, &migration.namespace).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Step::Finished => {
                let cutover = migration.cutover.clone().unwrap_or_else(|| {
                    // Unreachable by `next_step`; say so rather than panic.
                    crate::model::Cutover {
                        at_unix_ms: 0,
                        change_seq: 0,
                        digest: String::new(),
                        epoch: 0,
                        blocked_ms: 0,
                    }
                });
                return Attempt::Ended(crate::model::JobOutcome {
                    state: JobState::Succeeded,
                    message: format!(
                        "moved {} from {} ({}) to {} ({}) at change {}, epoch {}; writes blocked {} ms; the copy on {} is erased",
                        migration.namespace,
                        migration.source_region,
                        migration.source_shard,
                        migration.to_region,
                        migration.target_shard,
                        cutover.change_seq,
                        cutover.epoch,
                        cutover.blocked_ms,
                        migration.source_shard
                    ),
                    digest: cutover.digest,
                    change_seq: cutover.change_seq,
                    place_on: None,
                    leftover_on: None,
                });
            }
            Step::RollBack(why) => {
                let state = if job.cancel_requested && migration.cutover.is_none() {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                return roll_back(node, id, &migration, why, state).await;
            }
        }
    }
}

/// Chooses the copy in the target region, creates it when new, and records
/// it (the namespace then ships to it).
async fn add_target(
    node: &Arc<ControlNode>,
    id: u64,
    migration: &Migration,
    namespace: Option<&crate::model::Namespace>,
) -> Result<(), Attempt> {
    let Some(namespace) = namespace else {
        return Err(Attempt::Retry("the namespace is gone".into()));
    };
    let chosen = node.with_state(|s| {
        let deleting = s
            .deletions
            .get(&migration.namespace)
            .map(|d| d.shards.clone())
            .unwrap_or_default();
        let load = s.shard_load();
        crate::migration::choose_target(migration, namespace, &s.shards, load, &deleting)
            .map(|(shard, added)| (s.shards.get(&shard).cloned(), shard, added))
    });
    let (shard, shard_id, added) = match chosen {
        Ok(chosen) => chosen,
        Err(rejection) => {
            return Err(Attempt::Retry(rejection.to_string()));
        }
    };
    if added {
        let Some(shard) = shard else {
            return Err(Attempt::Retry(format!("shard {shard_id} is gone")));
        };
        if let Err(err) =
            crate::service::create_on_shard(&shard, &migration.namespace, &node.dialer).await
        {
            return Err(Attempt::Retry(err.to_string()));
        }
    }
    match node
        .propose(ControlCommand::AddMigrationTarget {
            job: id,
            shard: shard_id,
            added,
            requester: requester(node),
        })
        .await
    {
        Ok(ControlResult::Job(_)) => Ok(()),
        Ok(other) => Err(Attempt::Retry(format!("unexpected result {other:?}"))),
        Err(crate::error::ControlError::Rejected(rejection)) => {
            Err(roll_back(node, id, migration, rejection.to_string(), JobState::Failed).await)
        }
        Err(err) => Err(Attempt::Retry(err.to_string())),
    }
}

/// Before the source copy goes: a namespace that shipped to standbys and
/// has none left but the source gets a new standby (created, added), and
/// the source stays until that one is within reach of the primary.
/// `Ok(None)`: release the source now; `Ok(Some(why))`: wait.
async fn replace_standby(
    node: &Arc<ControlNode>,
    id: u64,
    migration: &Migration,
    namespace: Option<&crate::model::Namespace>,
    deleting: &BTreeSet<String>,
) -> Result<Option<String>, Attempt> {
    let Some(namespace) = namespace else {
        return Ok(None);
    };
    if !matches!(
        migration.original_mode,
        crate::model::NamespaceMode::ActivePassive { .. }
    ) {
        return Ok(None);
    }
    let others: Vec<&crate::model::StandbyCopy> = namespace
        .standbys
        .iter()
        .filter(|s| s.shard != migration.source_shard)
        .collect();
    if !others.is_empty() {
        let positions = node.positions.lock().unwrap_or_else(|e| e.into_inner());
        let of = |shard: &str| {
            positions
                .get(shard)
                .and_then(|p| p.get(&migration.namespace).copied())
        };
        let primary = of(&namespace.shard);
        let caught_up = others.iter().any(|s| match (primary, of(&s.shard)) {
            (Some(primary), Some(copy)) => crate::migration::within_reach(primary, copy),
            _ => false,
        });
        return Ok((!caught_up).then(|| {
            format!(
                "waiting for the standby on {} to catch up before the source goes",
                others
                    .iter()
                    .map(|s| s.shard.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }));
    }
    let chosen = node.with_state(|s| {
        let load = s.shard_load();
        crate::migration::replacement_standby(
            migration, namespace, &s.regions, &s.shards, load, deleting,
        )
        .and_then(|(shard, _)| s.shards.get(&shard).cloned())
    });
    let Some(shard) = chosen else {
        tracing::warn!(namespace = %migration.namespace, "no allowed region left for a standby; the namespace keeps none");
        return Ok(None);
    };
    if let Err(err) =
        crate::service::create_on_shard(&shard, &migration.namespace, &node.dialer).await
    {
        return Err(Attempt::Retry(err.to_string()));
    }
    match node
        .propose(ControlCommand::AddMigrationStandby {
            job: id,
            shard: shard.id.clone(),
            requester: requester(node),
        })
        .await
    {
        Ok(_) => Ok(Some(format!("filling a new standby on {}", shard.id))),
        Err(err) => Err(Attempt::Retry(format!(
            "adding a standby on {}: {err}",
            shard.id
        ))),
    }
}

/// The primary's and the new copy's change positions from the last probes
/// (`None`: not reported yet, e.g. not configured yet).
fn positions(node: &ControlNode, migration: &Migration) -> (Option<u64>, Option<u64>) {
    let positions = node.positions.lock().unwrap_or_else(|e| e.into_inner());
    let of = |shard: &str| {
        positions
            .get(shard)
            .and_then(|p| p.get(&migration.namespace).copied())
    };
    (of(&migration.source_shard), of(&migration.target_shard))
}

/// Hands the control-plane leadership to a member in the migration's
/// source (or target) region when this one is elsewhere
/// ([`crate::migration::cutover_leader`]), so the cutover's round trips
/// are short. `Some(why)` once leadership moved: the new leader resumes
/// the job. `None` to cut over here: already near, nobody nearer, or the
/// hand-over did not take within a few seconds (then not tried again).
async fn hand_leadership_over(node: &Arc<ControlNode>, migration: &Migration) -> Option<String> {
    use openraft::async_runtime::WatchReceiver;
    let mine = node.config.node.region.clone();
    if mine == migration.source_region || mine == migration.to_region {
        return None;
    }
    let others: Vec<(u64, String)> = {
        let metrics = node.raft.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| **id != node.id() && voters.contains(id))
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
    let mut regions = Vec::with_capacity(others.len());
    for (id, address) in others {
        let client = meridian_client::Client::with_options(
            vec![address.clone()],
            meridian_client::ClientOptions {
                attempt_timeout: Duration::from_secs(2),
                retry_budget: Duration::from_secs(2),
                dialer: node.dialer.clone(),
                ..Default::default()
            },
        )
        .ok()?;
        if let Ok(status) = client.control_status_of(&address).await {
            regions.push((id, status.region));
        }
    }
    let to = crate::migration::cutover_leader(
        &mine,
        &regions,
        &migration.source_region,
        &migration.to_region,
    )?;
    let region = regions
        .iter()
        .find(|(id, _)| *id == to)
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    tracing::info!(to, %region, namespace = %migration.namespace, "handing control-plane leadership over for the cutover");
    if let Err(err) = node.raft.raft.trigger().transfer_leader(to).await {
        tracing::warn!(%err, "leadership hand-over refused; cutting over from here");
        return None;
    }
    let deadline = std::time::Instant::now() + LEADERSHIP_HANDOVER_WAIT;
    while std::time::Instant::now() < deadline {
        if !node.raft.raft.is_leader() {
            return Some(format!(
                "control-plane leadership handed to member {to} in {region}, next to the move, to drive the cutover"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(to, "leadership did not move; cutting over from here");
    None
}

/// How long a leadership hand-over may take before the cutover goes on
/// from where it is.
const LEADERSHIP_HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// The cutover: the drained move with the migration's budget, recorded in
/// the job; then the new primary is given its lease at once and the whole
/// write block recorded.
async fn cut_over(
    node: &Arc<ControlNode>,
    migration: &Migration,
    id: u64,
    clients: &mut HashMap<String, (Vec<String>, Arc<meridian_client::Client>)>,
) -> Result<(), crate::failover::MoveError> {
    let config = node.config.failover.clone();
    let Some(namespace) = node.with_state(|s| s.namespaces.get(&migration.namespace).cloned())
    else {
        return Err(crate::error::ControlError::Unavailable("the namespace is gone".into()).into());
    };
    let target = StandbyCopy {
        region: migration.to_region.clone(),
        shard: migration.target_shard.clone(),
    };
    let request = crate::failover::ManualFailover {
        namespace: migration.namespace.clone(),
        from_region: String::new(),
        to_region: migration.to_region.clone(),
        force: false,
        actor: format!("migration job {id}"),
        reason: format!("migration {id} to {}", migration.to_region),
    };
    let moved = crate::failover::move_one(
        node,
        &config,
        &namespace,
        &target,
        &request,
        Duration::from_millis(migration.max_blocked_ms),
        clients,
        |drained| ControlCommand::MigrationCutover {
            job: id,
            blocked_ms: u64::try_from(drained.revoked_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            step: drained.step,
            window: drained.window,
            change_seq: drained.change_seq,
            digest: drained.digest,
        },
    )
    .await?;
    let switched_ms = u64::try_from(moved.revoked_at.elapsed().as_millis()).unwrap_or(u64::MAX);
    let ControlResult::FailedOver { record, .. } = &moved.result else {
        return Err(crate::error::ControlError::Unavailable(format!(
            "unexpected result {:?}",
            moved.result
        ))
        .into());
    };
    // Writes flow again once the new primary holds its lease (the
    // gateways have the route by then or are told by the push).
    let Some(promoted) = crate::failover::promote_now(node, &config, record, clients).await else {
        // The next probe round promotes it; the route-switch measure stays.
        return Ok(());
    };
    let blocked_ms =
        u64::try_from(promoted.duration_since(moved.revoked_at).as_millis()).unwrap_or(u64::MAX);
    // The source learns at once that it is a standby now: gateways still
    // sending to it are told to refresh their route.
    if let Err(err) =
        crate::failover::probe_now(node, &config, &migration.source_shard, clients).await
    {
        tracing::warn!(shard = %migration.source_shard, %err, "demotion probe failed; the next round demotes it");
    }
    tracing::info!(job = id, namespace = %migration.namespace, switched_ms, blocked_ms, "migration cut over");
    // Lost, the route-switch measure stays recorded.
    let _ = node
        .propose(ControlCommand::MigrationBlocked {
            job: id,
            blocked_ms,
            requester: requester(node),
        })
        .await;
    Ok(())
}

/// Undoes a migration that did not cut over: the copy it added goes (and
/// a region-locked namespace is region-locked again); the source stays
/// primary throughout.
async fn roll_back(
    node: &Arc<ControlNode>,
    id: u64,
    migration: &Migration,
    why: String,
    state: JobState,
) -> Attempt {
    // Read the recorded state again: the caller's copy may predate the
    // target's choice.
    let current = node.with_state(|s| match s.jobs.get(&id).map(|j| &j.spec) {
        Some(JobSpec::Migrate(m)) => Some(m.clone()),
        _ => None,
    });
    let migration = current.unwrap_or_else(|| migration.clone());
    if migration.cutover.is_none() && migration.added_target && !migration.target_shard.is_empty() {
        let dropped = node
            .propose(ControlCommand::DropMigrationCopy {
                job: id,
                shard: migration.target_shard.clone(),
                requester: requester(node),
            })
            .await;
        if let Err(err) = dropped {
            return Attempt::Retry(format!("rolling back ({why}): {err}"));
        }
        crate::deletion::finish(node, &migration.namespace).await;
    }
    tracing::warn!(job = id, namespace = %migration.namespace, %why, "migration rolled back; the source stays primary");
    ended(
        state,
        format!(
            "rolled back, {} stays primary on {}: {why}",
            migration.namespace, migration.source_shard
        ),
        None,
    )
}
