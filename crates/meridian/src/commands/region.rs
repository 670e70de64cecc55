//! `meridian region list|health`, from the control plane's registry.

use crate::cli::{OutputFormat, RegionArgs, RegionCommand};
use crate::output::emit;
use crate::target;
use meridian_client::{Client, ClientOptions};
use serde_json::json;
use std::time::Duration;

pub async fn run(format: OutputFormat, args: RegionArgs) -> anyhow::Result<()> {
    let control = target::control_client(&args.target)?;
    match &args.command {
        RegionCommand::Drain { region } => {
            let moved = target::long_control_client(&args.target)?
                .failover(meridian_client::pb::FailoverRequest {
                    from_region: region.clone(),
                    ..Default::default()
                })
                .await?;
            super::failover::report(format, &moved);
            return Ok(());
        }
        RegionCommand::Promote { region, force } => {
            let moved = target::long_control_client(&args.target)?
                .failover(meridian_client::pb::FailoverRequest {
                    to_region: region.clone(),
                    force: *force,
                    ..Default::default()
                })
                .await?;
            super::failover::report(format, &moved);
            return Ok(());
        }
        RegionCommand::List | RegionCommand::Health { .. } => {}
    }
    let regions = control.list_regions().await?;
    let shards = control.list_shards().await?;
    match args.command {
        RegionCommand::Drain { .. } | RegionCommand::Promote { .. } => {}
        RegionCommand::List => {
            let rows = regions
                .iter()
                .map(|r| {
                    let own: Vec<_> = shards.iter().filter(|s| s.region == r.name).collect();
                    vec![
                        r.name.clone(),
                        r.jurisdictions.join(","),
                        format!("{:.1},{:.1}", r.latitude, r.longitude),
                        own.iter()
                            .map(|s| s.id.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                        own.iter()
                            .map(|s| s.members.len())
                            .sum::<usize>()
                            .to_string(),
                    ]
                })
                .collect();
            let json_regions: Vec<_> = regions
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "jurisdictions": r.jurisdictions,
                        "latitude": r.latitude,
                        "longitude": r.longitude,
                        "shards": shards.iter().filter(|s| s.region == r.name).map(|s| json!({
                            "id": s.id,
                            "members": s.members.iter().map(|m| json!({"node_id": m.node_id, "address": m.address})).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            emit(
                format,
                json!({ "regions": json_regions }),
                &["region", "jurisdictions", "location", "shards", "nodes"],
                rows,
            );
        }
        RegionCommand::Health { region } => {
            let dialer = crate::target::dialer(&args.target)?;
            let options = ClientOptions {
                attempt_timeout: Duration::from_millis(800),
                dialer: dialer.clone(),
                ..ClientOptions::default()
            };
            let mut rows = Vec::new();
            let mut json_rows = Vec::new();
            for shard in shards
                .iter()
                .filter(|s| region.as_deref().is_none_or(|r| r == s.region))
            {
                for member in &shard.members {
                    let serving = meridian_lab::lab::is_serving(&dialer, &member.address).await;
                    let status =
                        match Client::with_options([member.address.clone()], options.clone()) {
                            Ok(client) => client.cluster_status_of(&member.address).await.ok(),
                            Err(_) => None,
                        };
                    let role = status
                        .as_ref()
                        .map_or("unreachable".to_string(), |s| s.role.to_lowercase());
                    rows.push(vec![
                        shard.region.clone(),
                        shard.id.clone(),
                        member.node_id.to_string(),
                        member.address.clone(),
                        if serving { "ready" } else { "not ready" }.to_string(),
                        role.clone(),
                        status
                            .as_ref()
                            .map_or("-".into(), |s| s.applied_index.to_string()),
                    ]);
                    json_rows.push(json!({
                        "region": shard.region,
                        "shard": shard.id,
                        "node_id": member.node_id,
                        "address": member.address,
                        "ready": serving,
                        "role": role,
                        "applied_index": status.as_ref().map(|s| s.applied_index),
                    }));
                }
            }
            emit(
                format,
                json!({ "members": json_rows }),
                &[
                    "region", "shard", "node", "address", "health", "role", "applied",
                ],
                rows,
            );
        }
    }
    Ok(())
}
