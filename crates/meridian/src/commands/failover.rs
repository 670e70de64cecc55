//! `meridian failover [--namespace NS | --from R] [--to R] [--force]`,
//! `meridian failover history`, `meridian failover lost NS [--reapply]`.

use crate::cli::{FailoverArgs, FailoverCommand, OutputFormat, TargetArgs};
use crate::output::{emit, emit_message};
use crate::target;
use meridian_client::{Client, pb};
use serde_json::json;

fn info_json(f: &pb::FailoverInfo) -> serde_json::Value {
    json!({
        "id": f.id,
        "namespace": f.namespace,
        "from_region": f.from_region,
        "from_shard": f.from_shard,
        "to_region": f.to_region,
        "to_shard": f.to_shard,
        "epoch": f.epoch,
        "cause": f.cause,
        "detected_at_ms": f.detected_at_ms,
        "promoted_at_ms": f.promoted_at_ms,
        "primary_seq": f.primary_seq,
        "promoted_seq": f.promoted_seq,
        "known_lost_changes": f.primary_seq.saturating_sub(f.promoted_seq),
        "reported_at_ms": f.reported_at_ms,
        "writes_until_ms": f.writes_until_ms,
    })
}

/// The loss window in words: the changes known to be missing from the new
/// primary, then the writes the old primary may have acknowledged after it
/// last reported its position (until its write lease ran out).
fn loss_window(f: &pb::FailoverInfo) -> String {
    let known = if f.primary_seq > f.promoted_seq {
        format!(
            "changes {}..{} ({} known)",
            f.promoted_seq + 1,
            f.primary_seq,
            f.primary_seq - f.promoted_seq
        )
    } else {
        format!("none known after change {}", f.promoted_seq)
    };
    let unreported = if f.writes_until_ms == 0 {
        " + any acknowledged after its last report".to_string()
    } else if f.reported_at_ms == 0 {
        format!(
            " + any acknowledged before {}",
            utc_clock(f.writes_until_ms)
        )
    } else if f.writes_until_ms > f.reported_at_ms {
        format!(
            " + any acknowledged in the {} ms after its last report ({})",
            f.writes_until_ms - f.reported_at_ms,
            utc_clock(f.reported_at_ms)
        )
    } else {
        String::new()
    };
    known + &unreported
}

/// `HH:MM:SS.mmm UTC` of a Unix time in milliseconds.
fn utc_clock(unix_ms: u64) -> String {
    let ms_of_day = unix_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

fn info_row(f: &pb::FailoverInfo) -> Vec<String> {
    vec![
        f.id.to_string(),
        f.namespace.clone(),
        format!("{} -> {}", f.from_region, f.to_region),
        f.epoch.to_string(),
        format!("{} ms", f.promoted_at_ms.saturating_sub(f.detected_at_ms)),
        loss_window(f),
        f.cause.clone(),
    ]
}

const HEADERS: [&str; 7] = [
    "id",
    "namespace",
    "move",
    "epoch",
    "decided in",
    "possibly lost",
    "cause",
];

pub async fn run(format: OutputFormat, args: FailoverArgs) -> anyhow::Result<()> {
    match args.command {
        Some(FailoverCommand::History { namespace }) => {
            let control = target::control_client(&args.target)?;
            let failovers = control.list_failovers(namespace.as_deref()).await?;
            emit(
                format,
                json!({ "failovers": failovers.iter().map(info_json).collect::<Vec<_>>() }),
                &HEADERS,
                failovers.iter().map(info_row).collect(),
            );
            Ok(())
        }
        Some(FailoverCommand::Lost {
            namespace,
            reapply,
            discard,
        }) => {
            let action = match (reapply, discard) {
                (true, _) => LostAction::Reapply,
                (_, true) => LostAction::Discard,
                _ => LostAction::List,
            };
            lost(format, &args.target, &namespace, action).await
        }
        None => {
            if args.namespace.is_none() && args.from.is_none() {
                anyhow::bail!(
                    "name what to move: --namespace NS or --from REGION (and optionally --to REGION); see also `failover history`"
                );
            }
            let control = target::long_control_client(&args.target)?;
            let moved = control
                .failover(pb::FailoverRequest {
                    namespace: args.namespace.unwrap_or_default(),
                    from_region: args.from.unwrap_or_default(),
                    to_region: args.to.unwrap_or_default(),
                    force: args.force,
                })
                .await?;
            report(format, &moved);
            Ok(())
        }
    }
}

/// Prints what a failover, drain or promotion moved.
pub fn report(format: OutputFormat, moved: &[pb::FailoverInfo]) {
    emit(
        format,
        json!({ "failovers": moved.iter().map(info_json).collect::<Vec<_>>() }),
        &HEADERS,
        moved.iter().map(info_row).collect(),
    );
}

/// What `failover lost` does besides listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostAction {
    List,
    Reapply,
    Discard,
}

/// What a re-application did, per key.
#[derive(Debug, Default)]
struct Outcome {
    reapplied: Vec<String>,
    skipped_changed: Vec<String>,
    skipped_unknown: Vec<String>,
    discarded: u64,
}

/// Lists the lost writes of `namespace` held by any shard; optionally
/// re-applies them (conditionally, see `meridian_client::lost`) or discards
/// them.
async fn lost(
    format: OutputFormat,
    target: &TargetArgs,
    namespace: &str,
    action: LostAction,
) -> anyhow::Result<()> {
    let control = target::control_client(target)?;
    let dialer = target::dialer(target)?;
    let mut writes = Vec::new();
    let mut shards = Vec::new();
    for shard in control.list_shards().await? {
        let members: Vec<String> = shard.members.iter().map(|m| m.address.clone()).collect();
        let Ok(client) = Client::with_dialer(members, dialer.clone()) else {
            continue;
        };
        match client.lost_writes(namespace).await {
            Ok(found) => {
                writes.extend(found.iter().cloned().map(|w| (shard.id.clone(), w)));
                if !found.is_empty() {
                    shards.push((shard.id.clone(), client, found));
                }
            }
            // A shard without the namespace has nothing to report.
            Err(meridian_client::ClientError::NotFound(_)) => {}
            Err(err) => anyhow::bail!("shard {}: {err}", shard.id),
        }
    }
    let mut outcome = Outcome::default();
    if action != LostAction::List {
        let data = target::data_client(target)?;
        // The same lost write can be recorded on several copies (the former
        // primary and a standby that had received it); once handled from
        // one, its other records go too.
        let mut handled = std::collections::HashSet::new();
        for (_, client, found) in &shards {
            let mut done = Vec::new();
            for step in meridian_client::lost::plan(found) {
                match step {
                    meridian_client::lost::Step::Reapply {
                        key,
                        value,
                        base,
                        changes,
                    } => {
                        let name = String::from_utf8_lossy(&key).into_owned();
                        let identity = (key.clone(), value.clone(), base);
                        if handled.contains(&identity) {
                            done.extend(changes);
                        } else if action == LostAction::Reapply {
                            let txn = meridian_client::lost::transaction(
                                namespace,
                                &key,
                                value.as_deref(),
                                base,
                            );
                            // Records go once re-applied; a key changed
                            // since the failover keeps them for the operator.
                            if data.txn(txn).await?.succeeded {
                                outcome.reapplied.push(name);
                                done.extend(changes);
                                handled.insert(identity);
                            } else {
                                outcome.skipped_changed.push(name);
                            }
                        } else {
                            done.extend(changes);
                            handled.insert(identity);
                        }
                    }
                    meridian_client::lost::Step::Unknown { key, changes } => {
                        if action == LostAction::Discard {
                            done.extend(changes);
                        } else {
                            outcome
                                .skipped_unknown
                                .push(String::from_utf8_lossy(&key).into_owned());
                        }
                    }
                }
            }
            for chunk in done.chunks(512) {
                outcome.discarded += client.discard_lost_writes(namespace, chunk).await?;
            }
        }
    }
    let rows = writes
        .iter()
        .map(|(shard, w)| {
            vec![
                shard.clone(),
                w.epoch.to_string(),
                w.seq.to_string(),
                String::from_utf8_lossy(&w.key).into_owned(),
                w.value.as_ref().map_or("(deleted)".into(), |v| {
                    String::from_utf8_lossy(v).into_owned()
                }),
                w.version.to_string(),
            ]
        })
        .collect();
    let json_writes: Vec<_> = writes
        .iter()
        .map(|(shard, w)| {
            json!({
                "shard": shard,
                "epoch": w.epoch,
                "seq": w.seq,
                "key": String::from_utf8_lossy(&w.key),
                "value": w.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
                "version": w.version,
            })
        })
        .collect();
    if format == OutputFormat::Table && writes.is_empty() {
        emit_message(
            format,
            json!({}),
            &format!("no lost writes recorded for {namespace}"),
        );
        return Ok(());
    }
    emit(
        format,
        json!({
            "namespace": namespace,
            "lost_writes": json_writes,
            "reapplied": outcome.reapplied,
            "skipped_changed_since_failover": outcome.skipped_changed,
            "skipped_base_version_unknown": outcome.skipped_unknown,
            "records_removed": outcome.discarded,
        }),
        &["shard", "epoch", "seq", "key", "value", "version"],
        rows,
    );
    if action != LostAction::List && format == OutputFormat::Table {
        println!(
            "re-applied {} key(s); skipped {} changed since the failover{}; skipped {} recorded without a base version (use --discard); removed {} lost change record(s)",
            outcome.reapplied.len(),
            outcome.skipped_changed.len(),
            if outcome.skipped_changed.is_empty() {
                String::new()
            } else {
                format!(" ({})", outcome.skipped_changed.join(", "))
            },
            outcome.skipped_unknown.len(),
            outcome.discarded
        );
    }
    Ok(())
}
