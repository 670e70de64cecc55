//! `meridian dr location add|list`, `dr snapshot`, `dr list`: where backups
//! go, taking them, and the catalog.

use crate::cli::{DrArgs, DrCommand, LocationCommand, OutputFormat};
use crate::output::emit;
use crate::target;
use meridian_client::pb;
use serde_json::json;

pub async fn run(format: OutputFormat, args: DrArgs) -> anyhow::Result<()> {
    let control = target::control_client(&args.target)?;
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
            let (at_seq, at_unix_ms) = match at.as_deref() {
                None => (None, None),
                Some(text) => parse_restore_point(text)?,
            };
            let job = control
                .start_restore(pb::RestoreBackupRequest {
                    backup_id: backup,
                    as_name: as_name.unwrap_or_default(),
                    region: region.unwrap_or_default(),
                    at_seq,
                    at_unix_ms,
                })
                .await?;
            crate::commands::jobs::print_started(
                format,
                &control,
                job,
                no_wait,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
        }
        DrCommand::Schedule {
            namespace,
            off: true,
            ..
        } => {
            control.remove_schedule(&namespace).await?;
            crate::output::emit_message(
                format,
                json!({ "namespace": namespace, "schedule": null }),
                &format!("backups of {namespace} are no longer scheduled (its backups stay)"),
            );
        }
        DrCommand::Schedule {
            namespace,
            location,
            every,
            keep,
            incrementals,
            ..
        } => {
            let every = parse_duration_ms("--every", every.as_deref().unwrap_or_default())?;
            let keep = parse_duration_ms("--keep", keep.as_deref().unwrap_or_default())?;
            let schedule = control
                .set_schedule(pb::ScheduleInfo {
                    namespace,
                    location: location.unwrap_or_default(),
                    every_ms: every,
                    keep_ms: keep,
                    incrementals_per_full: incrementals,
                    ..Default::default()
                })
                .await?;
            print_schedules(format, &[schedule]);
        }
        DrCommand::Schedules => {
            let schedules = control.list_schedules().await?;
            print_schedules(format, &schedules);
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

/// A duration given as a number and a unit (`500ms`, `90s`, `15m`, `6h`,
/// `30d`), in milliseconds.
/// `--at`: a change sequence (a number), or a UTC time in RFC 3339
/// (`2026-12-01T07:30:00Z`, fractions of a second allowed) as Unix ms.
fn parse_restore_point(text: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok((Some(seq), None));
    }
    let time = humantime::parse_rfc3339(text).map_err(|e| {
        anyhow::anyhow!(
            "--at {text:?}: give a change sequence (a number; `meridian dr list` shows each backup's) or a UTC time like 2026-12-01T07:30:00Z ({e})"
        )
    })?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("--at {text:?}: a time before 1970"))?
        .as_millis();
    let ms = u64::try_from(ms).map_err(|_| anyhow::anyhow!("--at {text:?}: too far ahead"))?;
    Ok((None, Some(ms)))
}

pub(crate) fn parse_duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("{flag} {text:?}: a number and a unit: ms, s, m, h or d (e.g. 6h, 30d)"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} {text:?}: a number and a unit: ms, s, m, h or d"))?;
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| anyhow::anyhow!("{flag} {text:?}: too long"))
}

fn print_schedules(format: OutputFormat, schedules: &[pb::ScheduleInfo]) {
    let rows = schedules
        .iter()
        .map(|s| {
            vec![
                s.namespace.clone(),
                s.location.clone(),
                format!("{} s", s.every_ms / 1_000),
                format!("{} s", s.keep_ms / 1_000),
                s.incrementals_per_full.to_string(),
                s.last_backup_id.clone(),
            ]
        })
        .collect();
    let list: Vec<_> = schedules
        .iter()
        .map(|s| {
            json!({
                "namespace": s.namespace,
                "location": s.location,
                "every_ms": s.every_ms,
                "keep_ms": s.keep_ms,
                "incrementals_per_full": s.incrementals_per_full,
                "created_by": s.created_by,
                "created_unix_ms": s.created_unix_ms,
                "last_backup_id": s.last_backup_id,
                "last_backup_unix_ms": s.last_backup_unix_ms,
            })
        })
        .collect();
    emit(
        format,
        json!({ "schedules": list }),
        &[
            "NAMESPACE",
            "LOCATION",
            "EVERY",
            "KEEP",
            "INCREMENTALS",
            "LAST BACKUP",
        ],
        rows,
    );
}

#[cfg(test)]
mod tests {
    use super::{parse_duration_ms, parse_restore_point};

    #[test]
    fn restore_points_are_a_change_or_a_utc_time() {
        let cases = [
            ("42", Some((Some(42), None))),
            ("1970-01-01T00:00:01Z", Some((None, Some(1_000)))),
            (
                "2026-12-01T07:30:00Z",
                Some((None, Some(1_796_110_200_000))),
            ),
            (
                "2026-12-01T07:30:00.250Z",
                Some((None, Some(1_796_110_200_250))),
            ),
            ("yesterday", None),
            ("2026-13-01T07:30:00Z", None),
            ("-3", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_restore_point(text).ok(), expected, "{text}");
        }
    }

    #[test]
    fn durations_take_a_number_and_a_unit() {
        let cases = [
            ("90s", Some(90_000)),
            ("15m", Some(900_000)),
            ("6h", Some(21_600_000)),
            ("30d", Some(2_592_000_000)),
            ("6", None),
            ("h", None),
            ("1.5h", None),
            ("-1h", None),
            ("99999999999999999999d", None),
            ("7w", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration_ms("--every", text).ok(), expected, "{text}");
        }
    }
}
