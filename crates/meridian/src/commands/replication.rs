//! `meridian replication lag [--namespace NS]`: every standby's lag, asked of
//! each shard's leader (primaries know their standbys' positions).

use crate::cli::{OutputFormat, ReplicationArgs, ReplicationCommand};
use crate::output::emit;
use crate::target;
use meridian_client::{Client, pb};
use serde_json::json;

pub async fn run(format: OutputFormat, args: ReplicationArgs) -> anyhow::Result<()> {
    let ReplicationCommand::Lag { namespace } = args.command;
    let control = crate::target::control_client(&args.target)?;
    let dialer = target::dialer(&args.target)?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for shard in control.list_shards().await? {
        let members: Vec<String> = shard.members.iter().map(|m| m.address.clone()).collect();
        let client = Client::with_dialer(members, dialer.clone())?;
        let status = match client.replication_status().await {
            Ok(status) => status,
            Err(err) => {
                rows.push(vec![
                    "-".into(),
                    shard.id.clone(),
                    "unreachable".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    err.to_string(),
                ]);
                continue;
            }
        };
        for ns in status.namespaces {
            if namespace.as_deref().is_some_and(|n| n != ns.namespace)
                || ns.role != pb::NamespaceRole::Primary as i32
            {
                continue;
            }
            for standby in &ns.standbys {
                rows.push(vec![
                    ns.namespace.clone(),
                    format!("{} ({})", shard.id, shard.region),
                    format!("{} ({})", standby.shard, standby.region),
                    ns.change_seq.to_string(),
                    standby.lag_entries.to_string(),
                    format!("{:.3}", standby.lag_seconds),
                    standby.bytes_sent.to_string(),
                ]);
                json_rows.push(json!({
                    "namespace": ns.namespace,
                    "epoch": ns.epoch,
                    "primary_shard": shard.id,
                    "primary_region": shard.region,
                    "standby_shard": standby.shard,
                    "standby_region": standby.region,
                    "primary_seq": ns.change_seq,
                    "acked_seq": standby.acked_seq,
                    "lag_entries": standby.lag_entries,
                    "lag_seconds": standby.lag_seconds,
                    "bytes_sent": standby.bytes_sent,
                }));
            }
        }
    }
    emit(
        format,
        json!({ "lag": json_rows }),
        &[
            "namespace",
            "primary",
            "standby",
            "primary seq",
            "lag (changes)",
            "lag (s)",
            "bytes sent",
        ],
        rows,
    );
    Ok(())
}
