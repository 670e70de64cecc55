//! Long-running jobs (restores, scheduled backups, migrations), driven by the control-plane leader.
//!
//! A job is a record in the control plane's replicated state; the leader's
//! driver carries it out step by step and records its progress. When the
//! leader changes, the new leader's driver finds the job still running and
//! starts it again from its first step: every step is made so that doing
//! it again is harmless (a restore clears its target on the shard before
//! loading), so a job ends with the same result however often it was
//! restarted — nothing is lost or loaded twice. A job that fails or is
//! cancelled records any shard that may hold part of what it made as a
//! deletion, which the deletion worker finishes.

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::model::{Job, JobOutcome, JobProgress, JobSpec, JobState, RestoreSpec};
use crate::node::{ControlNode, now_unix_ms};
use meridian_client::ClientError;
use meridian_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// How often the leader looks for jobs to drive.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often a running job's progress is recorded.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Starts (by any leader) after which a job that keeps failing on
/// transient errors is given up.
pub const MAX_ATTEMPTS: u32 = 30;
/// Pause before a job that hit a transient error is started again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Drives running jobs, forever (acting only while this member leads).
pub async fn run(node: Arc<ControlNode>) {
    let mut driving: HashMap<u64, meridian_net::workers::WorkerStop> = HashMap::new();
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        if node.raft.raft.is_leader() && node.with_state(|s| s.rebuilding().is_none()) {
            start_due_backups(&node).await;
        }
        driving.retain(|_, task| task.is_running());
        if !node.raft.raft.is_leader() {
            // The new leader drives them; stopping here drops any call in
            // flight, and the shard cleans up what it was loading.
            for (_, task) in driving.drain() {
                task.stop();
            }
            continue;
        }
        let running: Vec<Job> = node.with_state(|s| {
            s.jobs
                .values()
                .filter(|job| job.is_running())
                .cloned()
                .collect()
        });
        for job in running {
            if driving.contains_key(&job.id) {
                continue;
            }
            let (id, name) = (job.id, job_worker_name(&job));
            let worker = node
                .raft
                .workers
                .spawn_stoppable(name, drive(node.clone(), job));
            driving.insert(id, worker);
        }
    }
}

/// The worker name of a job's driver: `job:ID:KIND[:NAMESPACE]`.
fn job_worker_name(job: &Job) -> String {
    match job.spec.namespace() {
        "" => format!("job:{}:{}", job.id, job.spec.kind()),
        namespace => format!("job:{}:{}:{namespace}", job.id, job.spec.kind()),
    }
}

/// Starts a job for every scheduled backup that is due.
async fn start_due_backups(node: &ControlNode) {
    let due = node
        .with_state(|s| crate::dr::due_backups(&s.schedules, &s.backups, &s.jobs, now_unix_ms()));
    for spec in due {
        let namespace = spec.namespace.clone();
        if let Err(err) = node
            .propose(ControlCommand::StartJob {
                spec: JobSpec::Backup(spec),
                requester: requester(node),
            })
            .await
        {
            tracing::warn!(%namespace, %err, "scheduled backup not started");
        }
    }
}

pub(crate) fn requester(node: &ControlNode) -> Requester {
    Requester {
        actor: format!("control-plane jobs (member {})", node.id()),
        at_unix_ms: now_unix_ms(),
    }
}

/// What one start of a job came to.
pub(crate) enum Attempt {
    /// It ended (succeeded, failed or was cancelled).
    Ended(JobOutcome),
    /// A transient problem: start again later.
    Retry(String),
}

/// The shard a job has worked on, if it chose one yet.
fn shard_of(job: &Job) -> Option<String> {
    (!job.shard.is_empty()).then(|| job.shard.clone())
}

pub(crate) fn ended(state: JobState, message: String, leftover_on: Option<String>) -> Attempt {
    Attempt::Ended(JobOutcome {
        state,
        message,
        digest: String::new(),
        change_seq: 0,
        place_on: None,
        leftover_on,
    })
}

async fn drive(node: Arc<ControlNode>, job: Job) {
    let attempts = job.attempts.saturating_add(1);
    let id = job.id;
    // A migration undoes what it did itself on a cancel or when it gives up.
    let attempt = if let JobSpec::Migrate(_) = &job.spec {
        crate::migrate_job::drive(&node, &job, attempts).await
    } else if let JobSpec::Rebuild(_) = &job.spec {
        // Waits as long as shards are silent; never given up or cancelled.
        crate::rebuild_job::drive(&node, &job, attempts).await
    } else if job.cancel_requested {
        let leftover = shard_of(&job);
        ended(JobState::Cancelled, "cancelled".into(), leftover)
    } else if attempts > MAX_ATTEMPTS {
        let leftover = shard_of(&job);
        ended(
            JobState::Failed,
            format!(
                "gave up after {MAX_ATTEMPTS} starts; last step {:?}",
                job.step
            ),
            leftover,
        )
    } else {
        match &job.spec {
            JobSpec::Restore(spec) => restore(&node, &job, spec, attempts).await,
            JobSpec::Backup(spec) => scheduled_backup(&node, &job, spec, attempts).await,
            JobSpec::Migrate(_) => crate::migrate_job::drive(&node, &job, attempts).await,
            JobSpec::Rebuild(_) => crate::rebuild_job::drive(&node, &job, attempts).await,
        }
    };
    match attempt {
        Attempt::Ended(outcome) => {
            let state = outcome.state;
            match node
                .propose(ControlCommand::EndJob {
                    id,
                    outcome,
                    requester: requester(&node),
                })
                .await
            {
                Ok(ControlResult::Rejected { rejection, .. }) => {
                    tracing::warn!(job = id, %rejection, "job could not be ended as it came out; it is ended as failed");
                    let _ = node
                        .propose(ControlCommand::EndJob {
                            id,
                            outcome: JobOutcome {
                                state: JobState::Failed,
                                message: format!("its result could not be applied: {rejection}"),
                                digest: String::new(),
                                change_seq: 0,
                                place_on: None,
                                leftover_on: shard_of(&job),
                            },
                            requester: requester(&node),
                        })
                        .await;
                }
                Ok(_) => tracing::info!(job = id, ?state, "job ended"),
                Err(err) => tracing::warn!(job = id, %err, "job end not recorded; it runs again"),
            }
        }
        Attempt::Retry(why) => {
            tracing::warn!(job = id, attempts, %why, "job step failed; it starts again");
            let _ = node
                .propose(ControlCommand::UpdateJob {
                    id,
                    progress: JobProgress {
                        step: format!("retrying: {why}"),
                        shard: job.shard.clone(),
                        done_units: job.done_units,
                        total_units: job.total_units,
                        attempts,
                    },
                    requester: requester(&node),
                })
                .await;
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Whether a shard's refusal is final for this job (not worth a retry).
fn is_final(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::InvalidArgument(_)
            | ClientError::NotFound(_)
            | ClientError::AlreadyExists(_)
            | ClientError::FailedPrecondition(_)
            | ClientError::DataLoss(_)
            | ClientError::PermissionDenied(_)
            | ClientError::Unauthenticated(_)
    )
}

/// Records progress; `false` when the job was cancelled (or ended) meanwhile.
pub(crate) async fn report(node: &ControlNode, id: u64, progress: JobProgress) -> bool {
    let cancelled = node.with_state(|s| {
        s.jobs
            .get(&id)
            .is_none_or(|job| job.cancel_requested || !job.is_running())
    });
    if cancelled {
        return false;
    }
    // A lost progress record is harmless: the next one carries it.
    let _ = node
        .propose(ControlCommand::UpdateJob {
            id,
            progress,
            requester: requester(node),
        })
        .await;
    true
}

/// One start of a restore: choose the shard, have its leader load the
/// backup (it clears the target first), compare digests, then end the job
/// with the namespace placed on that shard.
async fn restore(node: &ControlNode, job: &Job, spec: &RestoreSpec, attempts: u32) -> Attempt {
    let found = node.with_state(|s| {
        let shard = s.job_shard(&job.shard, &spec.policy.home_region);
        let location = s.locations.get(&spec.location).cloned();
        let chain: Option<Vec<crate::model::BackupRecord>> = std::iter::once(&spec.backup_id)
            .chain(&spec.incrementals)
            .map(|id| s.backups.get(id).cloned())
            .collect();
        (shard, location, chain)
    });
    let leftover = shard_of(job);
    let (shard, location, chain_records) = match found {
        (Err(no_shard), _, _) => return Attempt::Retry(no_shard.to_string()),
        (_, None, _) => {
            return ended(
                JobState::Failed,
                format!("location {:?} is gone", spec.location),
                leftover,
            );
        }
        (_, _, None) => {
            return ended(
                JobState::Failed,
                format!(
                    "a backup of the chain of {} left the catalog",
                    spec.backup_id
                ),
                leftover,
            );
        }
        (Ok(shard), Some(location), Some(chain)) => (shard, location, chain),
    };
    let leftover = Some(shard.id.clone());
    let mut progress = JobProgress {
        step: "loading".into(),
        shard: shard.id.clone(),
        done_units: 0,
        total_units: 0,
        attempts,
    };
    if !report(node, job.id, progress.clone()).await {
        return ended(JobState::Cancelled, "cancelled".into(), leftover);
    }
    let client = match crate::service::shard_admin_client(&shard, &node.dialer) {
        Ok(client) => client,
        Err(err) => return Attempt::Retry(err.to_string()),
    };
    let request = pb::RestoreRequest {
        namespace: spec.target.clone(),
        location_url: location.url.clone(),
        source_namespace: spec.source_namespace.clone(),
        backup_id: spec.backup_id.clone(),
        replace: true,
        incrementals: spec.incrementals.clone(),
        at_seq: Some(spec.at_seq),
    };
    let failed = |err: ClientError| {
        if is_final(&err) {
            ended(
                JobState::Failed,
                format!("shard {}: {err}", shard.id),
                Some(shard.id.clone()),
            )
        } else {
            Attempt::Retry(format!("shard {}: {err}", shard.id))
        }
    };
    let mut stream = match client.restore(request).await {
        Ok(stream) => stream,
        Err(err) => return failed(err),
    };
    let mut last_report = Instant::now();
    let done = loop {
        match stream.next().await {
            Some(Ok(step)) if step.done => break step,
            Some(Ok(step)) => {
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    progress.done_units = step.records_loaded;
                    progress.total_units = step.records_total;
                    // Dropping the stream stops the shard's load; it
                    // removes what it loaded.
                    if !report(node, job.id, progress.clone()).await {
                        drop(stream);
                        return ended(JobState::Cancelled, "cancelled".into(), leftover);
                    }
                }
            }
            Some(Err(status)) => return failed(ClientError::from(status)),
            None => return Attempt::Retry("the shard's restore stream ended early".into()),
        }
    };
    // The catalog's word too, where a backup of the chain ends at this
    // change (the shard compared with the manifests already).
    let ends_here = chain_records
        .iter()
        .rev()
        .find(|b| b.change_seq == spec.at_seq);
    if let Some(source) = ends_here
        && (done.digest != source.digest || done.key_count != source.key_count)
    {
        return ended(
            JobState::Failed,
            format!(
                "restored digest {} ({} keys) differs from backup {}'s {} ({} keys)",
                done.digest, done.key_count, source.backup_id, source.digest, source.key_count
            ),
            leftover,
        );
    }
    let checked = if ends_here.is_some() && done.digest_checked {
        "digest matches the source's"
    } else {
        "no backup ends at this change, so there is no source digest to compare"
    };
    Attempt::Ended(JobOutcome {
        state: JobState::Succeeded,
        message: format!(
            "restored {} keys of backup {} (+{} incremental) at change {} into namespace {} on shard {}; {checked}",
            done.key_count,
            spec.backup_id,
            spec.incrementals.len(),
            done.change_seq,
            spec.target,
            shard.id
        ),
        digest: done.digest,
        change_seq: done.change_seq,
        place_on: Some(shard.id.clone()),
        leftover_on: None,
    })
}

/// A scheduled backup: incremental while the chain of the latest backup in
/// the location is shorter than the schedule allows (full when the change
/// log no longer reaches back), then retention.
async fn scheduled_backup(
    node: &ControlNode,
    job: &Job,
    spec: &crate::model::BackupSpec,
    attempts: u32,
) -> Attempt {
    use crate::error::ControlError;
    let (schedule, chain_len) = node.with_state(|s| {
        let latest = s.latest_backup(&spec.namespace, &spec.location);
        let chain_len = latest
            .and_then(|b| crate::dr::chain_of(b, &s.backups).ok())
            .map_or(0, |chain| chain.len());
        (s.schedules.get(&spec.namespace).cloned(), chain_len)
    });
    let Some(schedule) = schedule else {
        return ended(JobState::Cancelled, "the schedule was removed".into(), None);
    };
    if !report(
        node,
        job.id,
        JobProgress {
            step: "backing up".into(),
            shard: String::new(),
            done_units: 0,
            total_units: 2,
            attempts,
        },
    )
    .await
    {
        return ended(JobState::Cancelled, "cancelled".into(), None);
    }
    let per_full = usize::try_from(schedule.incrementals_per_full).unwrap_or(usize::MAX);
    let incremental = chain_len > 0 && chain_len <= per_full;
    let take = |incremental| {
        crate::backups::take(
            node,
            &spec.namespace,
            &spec.location,
            incremental,
            requester(node),
        )
    };
    let classify = |err: ControlError| match err {
        ControlError::Unavailable(_) | ControlError::NotLeader { .. } => {
            Attempt::Retry(err.to_string())
        }
        other => ended(JobState::Failed, other.to_string(), None),
    };
    let taken = match take(incremental).await {
        Ok(taken) => taken,
        // The change log no longer reaches the parent: a full one instead.
        Err(ControlError::Refused(why)) if incremental => {
            tracing::info!(namespace = %spec.namespace, %why, "incremental backup refused; taking a full one");
            match take(false).await {
                Ok(taken) => taken,
                Err(err) => return classify(err),
            }
        }
        Err(err) => return classify(err),
    };
    let _ = report(
        node,
        job.id,
        JobProgress {
            step: "retention".into(),
            shard: taken.shard.clone(),
            done_units: 1,
            total_units: 2,
            attempts,
        },
    )
    .await;
    let removed = match retention(node, &schedule).await {
        Ok(removed) => removed,
        Err(why) => {
            // The backup is taken; expired ones go on the next run.
            tracing::warn!(namespace = %spec.namespace, %why, "retention did not finish");
            Vec::new()
        }
    };
    Attempt::Ended(JobOutcome {
        state: JobState::Succeeded,
        message: format!(
            "backup {} ({}, change {}, {} bytes); {} expired removed{}",
            taken.backup_id,
            if taken.is_incremental() {
                "incremental"
            } else {
                "full"
            },
            taken.change_seq,
            taken.stored_bytes,
            removed.len(),
            if removed.is_empty() {
                String::new()
            } else {
                format!(": {}", removed.join(", "))
            }
        ),
        digest: taken.digest,
        change_seq: taken.change_seq,
        place_on: None,
        leftover_on: None,
    })
}

/// Removes `schedule`'s expired backups: the objects first (by a member of
/// the namespace's shard, which reaches the location), then the catalog
/// entry. Returns the ids removed.
async fn retention(
    node: &ControlNode,
    schedule: &crate::model::BackupSchedule,
) -> Result<Vec<String>, String> {
    let (expired, location, shard) = node.with_state(|s| {
        let here: Vec<&crate::model::BackupRecord> = s
            .backups
            .values()
            .filter(|b| b.namespace == schedule.namespace && b.location == schedule.location)
            .collect();
        let expired = crate::dr::expired(&here, now_unix_ms(), schedule.keep_ms);
        let location = s.locations.get(&schedule.location).cloned();
        let shard = s
            .namespaces
            .get(&schedule.namespace)
            .and_then(|ns| s.shards.get(&ns.shard).cloned());
        (expired, location, shard)
    });
    if expired.is_empty() {
        return Ok(Vec::new());
    }
    let (Some(location), Some(shard)) = (location, shard) else {
        return Err("the location or the namespace's shard is not known".into());
    };
    let client =
        crate::service::shard_admin_client(&shard, &node.dialer).map_err(|e| e.to_string())?;
    let mut removed = Vec::new();
    for backup_id in expired {
        let request = pb::DeleteBackupRequest {
            namespace: schedule.namespace.clone(),
            backup_id: backup_id.clone(),
            location_url: location.url.clone(),
        };
        let mut deleted = false;
        for member in shard.members.values() {
            match client
                .delete_backup_on(&member.address, request.clone())
                .await
            {
                Ok(_) => {
                    deleted = true;
                    break;
                }
                Err(err) => {
                    tracing::warn!(node = member.node_id, %err, "expired backup not removed by this member")
                }
            }
        }
        if !deleted {
            return Err(format!(
                "no member of shard {} removed backup {backup_id}",
                shard.id
            ));
        }
        node.propose(ControlCommand::ForgetBackup {
            backup_id: backup_id.clone(),
            requester: requester(node),
        })
        .await
        .map_err(|e| e.to_string())?;
        removed.push(backup_id);
    }
    Ok(removed)
}
