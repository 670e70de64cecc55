//! `meridian dr location add|list`, `dr snapshot`, `dr list`: where backups
//! go, taking them, and the catalog.

use crate::cli::{DrArgs, DrCommand, LocationCommand, OutputFormat};
use crate::output::emit;
use crate::target::{self, Target};
use meridian_client::pb;
use serde_json::json;

pub async fn run(format: OutputFormat, args: DrArgs) -> anyhow::Result<()> {
    let control = match target::resolve(&args.target, None)? {
        Target::Lab { control, .. } => control,
        Target::Direct(client) => client,
    };
    match args.command {
        DrCommand::Snapshot {
            namespace: Some(namespace),
            location,
            incremental,
            ..
        } => {
            if format == OutputFormat::Table {
                eprintln!(
                    "backing up {}{namespace} to {location} (read back and checked before it is listed)...",
                    if incremental { "the changes of " } else { "" }
                );
            }
            let backup = control
                .snapshot_with(pb::SnapshotRequest {
                    namespace,
                    location,
                    incremental,
                })
                .await?;
            print_backups(format, &[backup]);
        }
        DrCommand::Snapshot {
            namespace: None,
            location,
            incremental,
            ..
        } => snapshot_all(format, &control, &location, incremental).await?,
        DrCommand::Validate { backup } => {
            let answer = control.validate_backup(&backup).await?;
            let validation = answer.validation.unwrap_or_default();
            let message = if validation.ok {
                format!(
                    "backup {backup}: {} objects, {} records, {} bytes read back; digest matches",
                    validation.objects, validation.records, validation.stored_bytes
                )
            } else {
                validation.message.clone()
            };
            crate::output::emit_message(
                format,
                json!({
                    "backup_id": backup,
                    "ok": validation.ok,
                    "objects": validation.objects,
                    "records": validation.records,
                    "stored_bytes": validation.stored_bytes,
                    "problem": validation.problem,
                    "object": validation.object,
                    "message": validation.message,
                    "node_id": validation.node_id,
                }),
                &message,
            );
            if !validation.ok {
                anyhow::bail!("backup {backup} failed validation ({})", validation.problem);
            }
        }
        DrCommand::Restore {
            backup,
            as_name,
            region,
            at,
            no_wait,
            timeout,
        } => {
            let at_seq = match at.as_deref() {
                None => None,
                Some(text) => Some(text.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!(
                        "--at {text:?}: give a change sequence (a number; `meridian dr list` shows each backup's); restoring to a wall-clock time is not supported: changes are not stamped with one"
                    )
                })?),
            };
            let job = control
                .start_restore(pb::RestoreBackupRequest {
                    backup_id: backup,
                    as_name: as_name.unwrap_or_default(),
                    region: region.unwrap_or_default(),
                    at_seq,
                })
                .await?;
            if no_wait {
                crate::commands::jobs::print_jobs(format, &[job]);
                return Ok(());
            }
            let job = crate::commands::jobs::follow_job(
                format,
                &control,
                job,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
            crate::commands::jobs::print_jobs(format, std::slice::from_ref(&job));
            crate::commands::jobs::check_succeeded(&job)?;
        }
        DrCommand::List { namespace } => {
            let backups = control
                .list_backups(namespace.as_deref().unwrap_or_default())
                .await?;
            print_backups(format, &backups);
        }
        DrCommand::Location { command } => match command {
            LocationCommand::Add {
                name,
                url,
                region,
                jurisdictions,
            } => {
                let stored = control
                    .put_location(pb::LocationInfo {
                        name,
                        url,
                        region,
                        jurisdictions,
                    })
                    .await?;
                print_locations(format, &[stored]);
            }
            LocationCommand::List => {
                let locations = control.list_locations().await?;
                print_locations(format, &locations);
            }
        },
    }
    Ok(())
}

/// Backs every namespace up to `location`, one after another; refusals are
/// collected, reported, and make the command fail at the end.
async fn snapshot_all(
    format: OutputFormat,
    control: &meridian_client::Client,
    location: &str,
    incremental: bool,
) -> anyhow::Result<()> {
    let placements = control.list_placements().await?.placements;
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    for (i, placement) in placements.iter().enumerate() {
        if format == OutputFormat::Table {
            eprintln!(
                "[{}/{}] backing up {} to {location}...",
                i + 1,
                placements.len(),
                placement.name
            );
        }
        let request = pb::SnapshotRequest {
            namespace: placement.name.clone(),
            location: location.to_string(),
            incremental,
        };
        match control.snapshot_with(request).await {
            Ok(backup) => taken.push(backup),
            Err(err) => refused.push((placement.name.clone(), err.to_string())),
        }
    }
    match format {
        OutputFormat::Json => {
            let mut report = backups_json(&taken);
            report["refused"] = json!(
                refused
                    .iter()
                    .map(|(namespace, error)| json!({ "namespace": namespace, "error": error }))
                    .collect::<Vec<_>>()
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        OutputFormat::Table => {
            print_backups(format, &taken);
            for (namespace, error) in &refused {
                eprintln!("not backed up: {namespace}: {error}");
            }
        }
    }
    if !refused.is_empty() {
        anyhow::bail!(
            "{} of {} namespaces were not backed up",
            refused.len(),
            placements.len()
        );
    }
    Ok(())
}

fn backups_json(backups: &[pb::BackupInfo]) -> serde_json::Value {
    let json_backups: Vec<_> = backups
        .iter()
        .map(|b| {
            json!({
                "backup_id": b.backup_id,
                "namespace": b.namespace,
                "location": b.location,
                "location_region": b.location_region,
                "shard": b.shard,
                "node_id": b.node_id,
                "change_seq": b.change_seq,
                "key_count": b.key_count,
                "digest": b.digest,
                "stored_bytes": b.stored_bytes,
                "objects": b.objects,
                "verified": b.verified,
                "created_unix_ms": b.created_unix_ms,
                "elapsed_ms": b.elapsed_ms,
                "jurisdictions": b.jurisdictions,
                "kind": b.kind,
                "parent": b.parent,
                "from_seq": b.from_seq,
            })
        })
        .collect();
    json!({ "backups": json_backups })
}

fn print_backups(format: OutputFormat, backups: &[pb::BackupInfo]) {
    let rows = backups
        .iter()
        .map(|b| {
            vec![
                b.backup_id.clone(),
                b.namespace.clone(),
                b.location.clone(),
                if b.kind == "changes" {
                    format!("changes {}..{}", b.from_seq, b.change_seq)
                } else {
                    "full".to_string()
                },
                b.change_seq.to_string(),
                b.key_count.to_string(),
                b.stored_bytes.to_string(),
                if b.verified { "yes" } else { "no" }.to_string(),
                format!("{}/{}", b.shard, b.node_id),
            ]
        })
        .collect();
    emit(
        format,
        backups_json(backups),
        &[
            "BACKUP",
            "NAMESPACE",
            "LOCATION",
            "KIND",
            "SEQ",
            "KEYS",
            "BYTES",
            "VERIFIED",
            "TAKEN BY",
        ],
        rows,
    );
}

fn print_locations(format: OutputFormat, locations: &[pb::LocationInfo]) {
    let rows = locations
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.region.clone(),
                l.jurisdictions.join(","),
                l.url.clone(),
            ]
        })
        .collect();
    let json_locations: Vec<_> = locations
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "url": l.url,
                "region": l.region,
                "jurisdictions": l.jurisdictions,
            })
        })
        .collect();
    emit(
        format,
        json!({ "locations": json_locations }),
        &["NAME", "REGION", "JURISDICTIONS", "URL"],
        rows,
    );
}
