//! `meridian namespace create|list|show|delete`: through the control plane in a
//! lab (placement with residency rules), or directly on a shard with
//! `--endpoint`.

use crate::cli::{ModeArg, NamespaceArgs, NamespaceCommand, OutputFormat};
use crate::output::{emit, emit_message};
use crate::target::{self, Target};
use meridian_client::{Client, pb};
use serde_json::json;

fn mode(mode: ModeArg) -> pb::NamespaceMode {
    match mode {
        ModeArg::RegionLocked => pb::NamespaceMode::RegionLocked,
        ModeArg::ActivePassive => pb::NamespaceMode::ActivePassive,
        ModeArg::ActiveActive => pb::NamespaceMode::ActiveActive,
    }
}

fn mode_name(mode: i32) -> &'static str {
    match pb::NamespaceMode::try_from(mode) {
        Ok(pb::NamespaceMode::RegionLocked) => "region-locked",
        Ok(pb::NamespaceMode::ActivePassive) => "active-passive",
        Ok(pb::NamespaceMode::ActiveActive) => "active-active",
        Err(_) => "unknown",
    }
}

fn placement_json(p: &pb::Placement) -> serde_json::Value {
    json!({
        "name": p.name,
        "home_region": p.home_region,
        "mode": mode_name(p.mode),
        "sync": p.sync,
        "standby_regions": p.standby_regions,
        "allowed_jurisdictions": p.allowed_jurisdictions,
        "shard": p.shard,
        "epoch": p.epoch,
        "max_lag_entries": p.max_lag_entries,
        "max_lag_ms": p.max_lag_ms,
        "failover_probes": p.failover_probes,
        "failover_p99_ms": p.failover_p99_ms,
        "manual_failover_only": p.manual_failover_only,
        "on_standby_loss": if p.on_standby_loss == pb::StandbyLossPolicy::Degrade as i32 { "degrade" } else { "refuse" },
        "sync_degraded": p.sync_degraded,
    })
}

fn placement_row(p: &pb::Placement) -> Vec<String> {
    vec![
        p.name.clone(),
        p.home_region.clone(),
        p.shard.clone(),
        mode_name(p.mode).to_string(),
        p.standby_regions.join(","),
        p.allowed_jurisdictions.join(","),
        p.epoch.to_string(),
    ]
}

const PLACEMENT_HEADERS: [&str; 7] = [
    "name",
    "region",
    "shard",
    "mode",
    "standbys",
    "jurisdictions",
    "epoch",
];

pub async fn run(format: OutputFormat, args: NamespaceArgs) -> anyhow::Result<()> {
    let dialer = target::dialer(&args.target)?;
    match target::resolve(&args.target, None)? {
        Target::Direct(shard) => run_on_shard(format, args.command, &shard, dialer).await,
        Target::Lab {
            control,
            gateway,
            regions,
        } => run_on_control(format, args.command, &control, &gateway, &regions, dialer).await,
    }
}

/// `namespace residency NAME [--verify]`: `control` is the control plane;
/// `dialer` reaches the nodes to scan.
async fn residency(
    format: OutputFormat,
    control: &Client,
    dialer: meridian_net::Dialer,
    name: &str,
    verify: bool,
) -> anyhow::Result<()> {
    let report = control.namespace_residency(name).await?;
    let copies: Vec<serde_json::Value> = report
        .copies
        .iter()
        .map(|c| {
            json!({
                "shard": c.shard,
                "region": c.region,
                "region_jurisdictions": c.region_jurisdictions,
                "role": c.role,
                "allowed": c.allowed,
                "nodes": c.members.iter().map(|m| json!({ "node_id": m.node_id, "address": m.address })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if !verify {
        let rows = report
            .copies
            .iter()
            .map(|c| {
                vec![
                    c.shard.clone(),
                    c.region.clone(),
                    c.region_jurisdictions.join(","),
                    c.role.clone(),
                    c.allowed.to_string(),
                    c.members.len().to_string(),
                ]
            })
            .collect();
        emit(
            format,
            json!({
                "namespace": report.namespace,
                "allowed_jurisdictions": report.allowed_jurisdictions,
                "copies": copies,
            }),
            &[
                "SHARD",
                "REGION",
                "JURISDICTIONS",
                "ROLE",
                "ALLOWED",
                "NODES",
            ],
            rows,
        );
        return Ok(());
    }
    // Scan every node of every shard, not only the recorded ones: the point
    // is to find bytes where the record says there are none.
    let allowed_region = |region: &str| {
        report
            .regions
            .iter()
            .find(|r| r.name == region)
            .is_some_and(|r| {
                r.jurisdictions
                    .iter()
                    .any(|j| report.allowed_jurisdictions.contains(j))
            })
    };
    let addresses: Vec<String> = report
        .shards
        .iter()
        .flat_map(|s| s.members.iter().map(|m| m.address.clone()))
        .collect();
    let scanner = Client::with_dialer(addresses.clone(), dialer)?;
    let mut nodes = Vec::new();
    let (mut outside, mut unreachable, mut unrecorded) = (0usize, 0usize, 0usize);
    for shard in &report.shards {
        for member in &shard.members {
            let recorded = report.copies.iter().any(|c| c.shard == shard.id);
            let allowed = allowed_region(&shard.region);
            let (holds, bytes, detail) =
                match scanner.namespace_presence_on(&member.address, name).await {
                    Ok(found) => {
                        let holds = found.record
                            || found.keys > 0
                            || found.change_log_entries > 0
                            || found.lost_writes > 0;
                        (
                            Some(holds),
                            found.bytes,
                            format!(
                                "{} keys, {} change-log entries, {} lost writes",
                                found.keys, found.change_log_entries, found.lost_writes
                            ),
                        )
                    }
                    Err(err) => (None, 0, format!("cannot scan: {err}")),
                };
            let verdict = match holds {
                None => {
                    unreachable += 1;
                    "unverified"
                }
                Some(true) if !allowed => {
                    outside += 1;
                    "OUTSIDE JURISDICTIONS"
                }
                Some(true) if !recorded => {
                    unrecorded += 1;
                    "unrecorded copy"
                }
                Some(true) => "holds (allowed)",
                Some(false) => "none",
            };
            nodes.push((
                shard.id.clone(),
                shard.region.clone(),
                member.node_id,
                member.address.clone(),
                holds,
                bytes,
                verdict,
                detail,
            ));
        }
    }
    let rows = nodes
        .iter()
        .map(|(shard, region, id, _, _, bytes, verdict, detail)| {
            vec![
                shard.clone(),
                region.clone(),
                id.to_string(),
                verdict.to_string(),
                bytes.to_string(),
                detail.clone(),
            ]
        })
        .collect();
    let verified = outside == 0 && unreachable == 0;
    emit(
        format,
        json!({
            "namespace": report.namespace,
            "allowed_jurisdictions": report.allowed_jurisdictions,
            "copies": copies,
            "verified": verified,
            "outside_jurisdictions": outside,
            "unreachable": unreachable,
            "unrecorded": unrecorded,
            "nodes": nodes.iter().map(|(shard, region, id, address, holds, bytes, verdict, detail)| json!({
                "shard": shard, "region": region, "node_id": id, "address": address,
                "holds": holds, "bytes": bytes, "verdict": verdict, "detail": detail,
            })).collect::<Vec<_>>(),
        }),
        &["SHARD", "REGION", "NODE", "VERDICT", "BYTES", "DETAIL"],
        rows,
    );
    if outside > 0 {
        anyhow::bail!("{outside} node(s) hold bytes of {name} outside its jurisdictions");
    }
    if unreachable > 0 {
        anyhow::bail!(
            "{unreachable} node(s) could not be scanned; residency of {name} is not verified"
        );
    }
    Ok(())
}

async fn run_on_control(
    format: OutputFormat,
    command: NamespaceCommand,
    control: &Client,
    gateway: &Client,
    regions: &[String],
    dialer: meridian_net::Dialer,
) -> anyhow::Result<()> {
    match command {
        NamespaceCommand::Residency { name, verify } => {
            residency(format, control, dialer, &name, verify).await?;
        }
        NamespaceCommand::Migrate {
            name,
            to,
            max_blocked_ms,
            keep_source,
            catch_up_timeout,
            no_wait,
            timeout,
        } => {
            let keep_source_ms =
                crate::commands::dr::parse_duration_ms("--keep-source", &keep_source)?;
            let catch_up_timeout_ms =
                crate::commands::dr::parse_duration_ms("--catch-up-timeout", &catch_up_timeout)?;
            if max_blocked_ms == 0 || catch_up_timeout_ms == 0 {
                anyhow::bail!("--max-blocked-ms and --catch-up-timeout must be above zero");
            }
            let job = control
                .migrate_namespace(pb::MigrateNamespaceRequest {
                    namespace: name,
                    to_region: to,
                    max_blocked_ms,
                    keep_source_ms: Some(keep_source_ms),
                    catch_up_timeout_ms,
                })
                .await?;
            crate::commands::jobs::print_started(
                format,
                control,
                job,
                no_wait,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
        }
        NamespaceCommand::Create {
            name,
            region,
            jurisdiction,
            mode: requested,
            sync,
            standby,
            max_lag,
            failover_probes,
            failover_p99_ms,
            manual_failover,
            on_standby_loss,
        } => {
            let (max_lag_entries, max_lag_ms) = match max_lag {
                Some(crate::cli::MaxLagArg::Entries(n)) => (n, 0),
                Some(crate::cli::MaxLagArg::Millis(ms)) => (0, ms),
                None => (0, 0),
            };
            let home = match region {
                Some(region) => region,
                None => regions
                    .first()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("the lab has no regions"))?,
            };
            let placed = control
                .place_namespace(pb::Placement {
                    name: name.clone(),
                    home_region: home,
                    mode: mode(requested) as i32,
                    sync,
                    standby_regions: standby,
                    allowed_jurisdictions: jurisdiction,
                    max_lag_entries,
                    max_lag_ms,
                    failover_probes: failover_probes.unwrap_or(0),
                    failover_p99_ms: failover_p99_ms.unwrap_or(0),
                    manual_failover_only: manual_failover,
                    on_standby_loss: match on_standby_loss {
                        crate::cli::StandbyLossArg::Refuse => pb::StandbyLossPolicy::Refuse,
                        crate::cli::StandbyLossArg::Degrade => pb::StandbyLossPolicy::Degrade,
                    } as i32,
                    ..Default::default()
                })
                .await?;
            let placement = placed.placement.unwrap_or_default();
            emit_message(
                format,
                json!({ "placement": placement_json(&placement), "routing_version": placed.routing_version }),
                &format!(
                    "created namespace {} on shard {} in {} (jurisdictions {}; routing version {})",
                    placement.name,
                    placement.shard,
                    placement.home_region,
                    placement.allowed_jurisdictions.join(","),
                    placed.routing_version
                ),
            );
        }
        NamespaceCommand::List => {
            let listed = control.list_placements().await?;
            emit(
                format,
                json!({
                    "namespaces": listed.placements.iter().map(placement_json).collect::<Vec<_>>(),
                    "routing_version": listed.routing_version,
                }),
                &PLACEMENT_HEADERS,
                listed.placements.iter().map(placement_row).collect(),
            );
        }
        NamespaceCommand::Show { name } => {
            let listed = control.list_placements().await?;
            let placement = listed
                .placements
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| anyhow::anyhow!("namespace {name:?} not found"))?;
            // Confirm it is reachable through the gateway with a linearizable read.
            let _ = gateway
                .scan(pb::ScanRequest {
                    namespace: name.clone(),
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            emit(
                format,
                placement_json(placement),
                &PLACEMENT_HEADERS,
                vec![placement_row(placement)],
            );
        }
        NamespaceCommand::Delete { name } => {
            let removed = control.remove_namespace(&name).await?;
            emit_message(
                format,
                json!({ "name": name, "routing_version": removed.routing_version }),
                &format!(
                    "deleted namespace {name} (routing version {})",
                    removed.routing_version
                ),
            );
        }
    }
    Ok(())
}

async fn run_on_shard(
    format: OutputFormat,
    command: NamespaceCommand,
    client: &Client,
    dialer: meridian_net::Dialer,
) -> anyhow::Result<()> {
    match command {
        // With `--endpoint`, residency asks those addresses as the control plane.
        NamespaceCommand::Residency { name, verify } => {
            residency(format, client, dialer, &name, verify).await?;
        }
        NamespaceCommand::Migrate { .. } => {
            anyhow::bail!(
                "namespace migrate needs a control plane: run it against a lab or with --control (a single shard has no other region to move to)"
            );
        }
        NamespaceCommand::Create { name, .. } => {
            let info = client.create_namespace(&name).await?;
            emit_message(
                format,
                json!({ "name": info.name, "created_index": info.created_index }),
                &format!("created namespace {}", info.name),
            );
        }
        NamespaceCommand::List => {
            let namespaces = client.list_namespaces().await?;
            let json_rows: Vec<_> = namespaces
                .iter()
                .map(|n| json!({ "name": n.name, "keys": n.key_count, "created_index": n.created_index }))
                .collect();
            let rows = namespaces
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.key_count.to_string(),
                        n.created_index.to_string(),
                    ]
                })
                .collect();
            emit(
                format,
                json!({ "namespaces": json_rows }),
                &["name", "keys", "created_index"],
                rows,
            );
        }
        NamespaceCommand::Show { name } => {
            let namespaces = client.list_namespaces().await?;
            let info = namespaces
                .into_iter()
                .find(|n| n.name == name)
                .ok_or_else(|| anyhow::anyhow!("namespace {name:?} not found"))?;
            let integrity = client.check_integrity(&name).await?;
            let applied = integrity.header.map_or(0, |h| h.applied_index);
            emit(
                format,
                json!({ "name": info.name, "keys": info.key_count, "created_index": info.created_index, "digest": integrity.digest, "applied_index": applied }),
                &["name", "keys", "created_index", "digest"],
                vec![vec![
                    info.name,
                    info.key_count.to_string(),
                    info.created_index.to_string(),
                    integrity.digest,
                ]],
            );
        }
        NamespaceCommand::Delete { name } => {
            let keys = client.delete_namespace(&name).await?;
            emit_message(
                format,
                json!({ "name": name, "keys_deleted": keys }),
                &format!("deleted namespace {name} ({keys} keys)"),
            );
        }
    }
    Ok(())
}
