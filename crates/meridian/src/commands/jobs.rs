//! `meridian jobs list|show|cancel`, and following a job with a progress
//! bar (`dr restore` uses it too).

use crate::cli::{JobsArgs, JobsCommand, OutputFormat};
use crate::output::emit;
use crate::target;
use meridian_client::pb;
use serde_json::json;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub async fn run(format: OutputFormat, args: JobsArgs) -> anyhow::Result<()> {
    let control = target::control_client(&args.target)?;
    match args.command {
        JobsCommand::List => {
            let jobs = control.list_jobs().await?;
            print_jobs(format, &jobs);
        }
        JobsCommand::Show {
            id,
            follow,
            timeout,
        } => {
            let job = control.get_job(id).await?;
            let job = if follow {
                follow_job(format, &control, job, Duration::from_secs(timeout)).await?
            } else {
                job
            };
            print_jobs(format, std::slice::from_ref(&job));
            if follow {
                check_succeeded(&job)?;
            }
        }
        JobsCommand::Cancel { id } => {
            let job = control.cancel_job(id).await?;
            print_jobs(format, &[job]);
        }
    }
    Ok(())
}

fn state_name(job: &pb::JobInfo) -> &'static str {
    match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        Err(_) => "unknown",
    }
}

fn is_running(job: &pb::JobInfo) -> bool {
    job.state == pb::JobState::Running as i32
}

/// An error unless `job` succeeded.
pub fn check_succeeded(job: &pb::JobInfo) -> anyhow::Result<()> {
    if job.state == pb::JobState::Succeeded as i32 {
        Ok(())
    } else {
        anyhow::bail!("job {} {}: {}", job.id, state_name(job), job.message)
    }
}

/// What a command that starts a job prints: the job at once with
/// `no_wait`, else the job followed to its end (an error unless it
/// succeeded).
pub async fn print_started(
    format: OutputFormat,
    control: &meridian_client::Client,
    job: pb::JobInfo,
    no_wait: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    if no_wait {
        print_jobs(format, &[job]);
        return Ok(());
    }
    let job = follow_job(format, control, job, timeout).await?;
    print_jobs(format, std::slice::from_ref(&job));
    check_succeeded(&job)
}

/// Polls `job` until it ends (or `timeout`), showing its progress.
pub async fn follow_job(
    format: OutputFormat,
    control: &meridian_client::Client,
    mut job: pb::JobInfo,
    timeout: Duration,
) -> anyhow::Result<pb::JobInfo> {
    let interactive = std::io::stderr().is_terminal() && format == OutputFormat::Table;
    let bar = interactive.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} job {prefix} {msg} [{bar:20}] {pos}/{len} ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(job.id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    while is_running(&job) {
        if Instant::now() >= deadline {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            anyhow::bail!(
                "job {} still running after {} s (it goes on; `meridian jobs show {} --follow`)",
                job.id,
                timeout.as_secs(),
                job.id
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A control-plane leader change is a moment without an answer.
        match control.get_job(job.id).await {
            Ok(now) => job = now,
            Err(err) if err.is_retryable() => continue,
            Err(err) => return Err(err.into()),
        }
        match &bar {
            Some(bar) => {
                bar.set_message(job.step.clone());
                bar.set_length(job.total_units.max(job.done_units));
                bar.set_position(job.done_units);
            }
            None if format == OutputFormat::Table => {
                let line = format!(
                    "job {}: {} {}/{} {}",
                    job.id, job.step, job.done_units, job.total_units, job.units
                );
                if line != last_line {
                    eprintln!("{line}");
                    last_line = line;
                }
            }
            None => {}
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    Ok(job)
}

pub fn jobs_json(jobs: &[pb::JobInfo]) -> serde_json::Value {
    let list: Vec<_> = jobs
        .iter()
        .map(|j| {
            json!({
                "id": j.id,
                "kind": j.kind,
                "state": state_name(j),
                "namespace": j.namespace,
                "source": j.source,
                "region": j.region,
                "shard": j.shard,
                "step": j.step,
                "done_units": j.done_units,
                "total_units": j.total_units,
                "units": j.units,
                "created_unix_ms": j.created_unix_ms,
                "updated_unix_ms": j.updated_unix_ms,
                "message": j.message,
                "requested_by": j.requested_by,
                "attempts": j.attempts,
                "digest": j.digest,
                "change_seq": j.change_seq,
                "migration": j.migration.as_ref().map(|m| json!({
                    "from_region": m.from_region,
                    "from_shard": m.from_shard,
                    "to_region": m.to_region,
                    "to_shard": m.to_shard,
                    "max_blocked_ms": m.max_blocked_ms,
                    "keep_source_ms": m.keep_source_ms,
                    "cut_over": m.cut_over,
                    "blocked_ms": m.blocked_ms,
                    "cutover_unix_ms": m.cutover_unix_ms,
                    "cutover_seq": m.cutover_seq,
                    "epoch": m.epoch,
                    "source_released": m.source_released,
                })),
                "rebuild": j.rebuild.as_ref().map(|r| json!({
                    "backup_id": r.backup_id,
                    "location_url": r.location_url,
                    "backup_created_unix_ms": r.backup_created_unix_ms,
                    "backup_routing_version": r.backup_routing_version,
                    "lost_shards": r.lost_shards,
                    "outcome": r.outcome.iter().map(|o| json!({
                        "namespace": o.namespace,
                        "verdict": o.verdict,
                        "shard": o.shard,
                        "epoch": o.epoch,
                    })).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    json!({ "jobs": list })
}

pub fn print_jobs(format: OutputFormat, jobs: &[pb::JobInfo]) {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.kind.clone(),
                state_name(j).to_string(),
                j.namespace.clone(),
                j.source.clone(),
                format!("{}/{}", j.region, j.shard),
                j.step.clone(),
                format!("{}/{}", j.done_units, j.total_units),
                j.attempts.to_string(),
                j.message.clone(),
            ]
        })
        .collect();
    emit(
        format,
        jobs_json(jobs),
        &[
            "ID",
            "KIND",
            "STATE",
            "NAMESPACE",
            "SOURCE",
            "WHERE",
            "STEP",
            "PROGRESS",
            "STARTS",
            "MESSAGE",
        ],
        rows,
    );
}
