//! `meridian control`: run one control-plane member until SIGINT or
//! SIGTERM, or back the control plane up and rebuild it from a backup
//! (`backup`, `backups`, `restore`).

use crate::cli::{ControlArgs, ControlPlaneCommand, OutputFormat};
use crate::output::emit;
use crate::target;
use anyhow::Context;
use meridian_client::pb;
use meridian_control::config::ControlConfig;
use serde_json::json;
use std::time::Duration;

pub async fn run(format: OutputFormat, args: ControlArgs) -> anyhow::Result<()> {
    match args.command {
        None => {
            let config = ControlConfig::load(args.run.config.as_deref())?;
            if args.run.check {
                let summary = format!(
                    "control-plane member {} in {}, {} initial member(s), {} region(s)",
                    config.node.id,
                    config.node.region,
                    config.cluster.initial_members.len(),
                    config.regions.len()
                );
                return super::node::checked(format, &config, &summary);
            }
            meridian_control::server::run(config, super::node::shutdown_signal())
                .await
                .context("control-plane member stopped with an error")
        }
        Some(ControlPlaneCommand::Backup { target, location }) => {
            let control = target::control_client(&target)?;
            if format == OutputFormat::Table {
                eprintln!(
                    "backing the control plane up to {location} (read back and checked before it is listed)..."
                );
            }
            let backup = control.backup_control_plane(&location).await?;
            print_backups(format, &[backup], None);
            Ok(())
        }
        Some(ControlPlaneCommand::Schedule {
            target,
            location,
            every,
            keep,
            off,
        }) => {
            let control = target::control_client(&target)?;
            let schedule = if off {
                None
            } else {
                let duration = crate::commands::dr::parse_duration_ms;
                Some(pb::ControlBackupSchedule {
                    location: location.unwrap_or_default(),
                    every_ms: duration("--every", every.as_deref().unwrap_or_default())?,
                    keep_ms: duration("--keep", keep.as_deref().unwrap_or_default())?,
                    ..Default::default()
                })
            };
            let schedule = control.set_control_backup_schedule(schedule).await?;
            let message = match &schedule {
                Some(s) => format!(
                    "the control plane is backed up to {} every {} s; backups are kept {} s",
                    s.location,
                    s.every_ms / 1_000,
                    s.keep_ms / 1_000
                ),
                None => "control-plane backups are no longer scheduled (its backups stay)".into(),
            };
            crate::output::emit_message(
                format,
                json!({ "schedule": schedule.as_ref().map(schedule_json) }),
                &message,
            );
            Ok(())
        }
        Some(ControlPlaneCommand::Backups {
            target,
            location,
            from,
        }) => {
            let control = target::control_client(&target)?;
            let listed = control
                .control_backups_and_schedule(pb::ListControlBackupsRequest {
                    location: location.unwrap_or_default(),
                    url: from.unwrap_or_default(),
                })
                .await?;
            print_backups(format, &listed.backups, listed.schedule.as_ref());
            if format == OutputFormat::Table
                && let Some(schedule) = &listed.schedule
            {
                eprintln!(
                    "scheduled: to {} every {} s, kept {} s (last: {})",
                    schedule.location,
                    schedule.every_ms / 1_000,
                    schedule.keep_ms / 1_000,
                    if schedule.last_backup_id.is_empty() {
                        "none yet"
                    } else {
                        &schedule.last_backup_id
                    }
                );
            }
            Ok(())
        }
        Some(ControlPlaneCommand::Restore {
            target,
            from,
            backup,
            lost,
            no_wait,
            timeout,
        }) => {
            let control = target::control_client(&target)?;
            let job = control
                .restore_control_plane(pb::RestoreControlPlaneRequest {
                    url: from.unwrap_or_default(),
                    backup_id: backup.unwrap_or_default(),
                    lost_shards: lost,
                })
                .await?;
            crate::commands::jobs::print_started(
                format,
                &control,
                job,
                no_wait,
                Duration::from_secs(timeout),
            )
            .await
        }
    }
}

fn schedule_json(schedule: &pb::ControlBackupSchedule) -> serde_json::Value {
    json!({
        "location": schedule.location,
        "every_ms": schedule.every_ms,
        "keep_ms": schedule.keep_ms,
        "created_by": schedule.created_by,
        "created_unix_ms": schedule.created_unix_ms,
        "last_backup_id": schedule.last_backup_id,
        "last_backup_unix_ms": schedule.last_backup_unix_ms,
    })
}

fn print_backups(
    format: OutputFormat,
    backups: &[pb::ControlBackupInfo],
    schedule: Option<&pb::ControlBackupSchedule>,
) {
    let list: Vec<_> = backups
        .iter()
        .map(|b| {
            json!({
                "backup_id": b.backup_id,
                "location": b.location,
                "location_region": b.location_region,
                "records": b.records,
                "stored_bytes": b.stored_bytes,
                "objects": b.objects,
                "routing_version": b.routing_version,
                "applied_index": b.applied_index,
                "created_unix_ms": b.created_unix_ms,
                "digest": b.digest,
                "verified": b.verified,
            })
        })
        .collect();
    let rows = backups
        .iter()
        .map(|b| {
            vec![
                b.backup_id.clone(),
                b.location.clone(),
                b.records.to_string(),
                b.stored_bytes.to_string(),
                b.routing_version.to_string(),
                if b.verified { "yes" } else { "-" }.to_string(),
            ]
        })
        .collect();
    emit(
        format,
        json!({ "backups": list, "schedule": schedule.map(schedule_json) }),
        &[
            "BACKUP",
            "LOCATION",
            "RECORDS",
            "BYTES",
            "ROUTING VERSION",
            "VERIFIED",
        ],
        rows,
    );
}
