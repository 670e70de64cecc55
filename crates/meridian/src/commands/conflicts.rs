//! `meridian conflicts list NAMESPACE`: the writes of an active-active
//! namespace that lost to a concurrent write, gathered from every peer.
//!
//! Each peer records the conflicts its own merges resolved; the same
//! conflict is usually resolved (and recorded) in several regions, so the
//! lists are merged and each conflict shown once, with the regions that
//! recorded it.

use crate::cli::{ConflictsArgs, ConflictsCommand, OutputFormat};
use crate::output::{emit, show_bytes};
use crate::target;
use meridian_client::{Client, pb};
use serde_json::json;
use std::collections::BTreeMap;

/// A conflict's identity across peers: key, winner's and loser's stamps.
type ConflictId = (Vec<u8>, String, String);

pub async fn run(format: OutputFormat, args: ConflictsArgs) -> anyhow::Result<()> {
    let ConflictsCommand::List {
        namespace,
        limit,
        all,
    } = args.command;
    let control = target::control_client(&args.target)?;
    let dialer = target::dialer(&args.target)?;
    let route = control
        .get_route(&namespace)
        .await?
        .route
        .ok_or_else(|| anyhow::anyhow!("namespace {namespace:?} not found"))?;
    if !route.active_active {
        anyhow::bail!(
            "namespace {namespace:?} is not active-active: only merges of concurrent writes make conflicts"
        );
    }
    let peers: Vec<String> = std::iter::once(route.shard.clone())
        .chain(route.standbys.iter().map(|s| s.shard.clone()))
        .collect();
    let shards = control.list_shards().await?;
    // One row per conflict: (key, winner, loser) -> the record and where.
    let mut merged: BTreeMap<ConflictId, (pb::Conflict, Vec<String>)> = BTreeMap::new();
    let mut unreachable = Vec::new();
    let mut dropped = 0;
    let mut truncated = false;
    for peer in &peers {
        let Some(shard) = shards.iter().find(|s| &s.id == peer) else {
            unreachable.push(peer.clone());
            continue;
        };
        let members: Vec<String> = shard.members.iter().map(|m| m.address.clone()).collect();
        let Ok(client) = Client::with_dialer(members, dialer.clone()) else {
            unreachable.push(peer.clone());
            continue;
        };
        match read_peer(&client, &namespace, limit, all).await {
            Ok((conflicts, peer_dropped, peer_truncated)) => {
                dropped += peer_dropped;
                truncated |= peer_truncated;
                for conflict in conflicts {
                    let side = |s: &Option<pb::ConflictSide>| {
                        s.as_ref().map_or(String::new(), |s| {
                            format!("{}.{}@{}", s.wall_ms, s.logical, s.region)
                        })
                    };
                    let id = (
                        conflict.key.clone(),
                        side(&conflict.winner),
                        side(&conflict.loser),
                    );
                    let region = conflict.resolved_in.clone();
                    let entry = merged
                        .entry(id)
                        .or_insert_with(|| (conflict.clone(), Vec::new()));
                    // The earliest resolution is shown.
                    if conflict.resolved_at_ms < entry.0.resolved_at_ms {
                        entry.0 = conflict;
                    }
                    entry.1.push(region);
                }
            }
            Err(err) => unreachable.push(format!("{peer} ({err})")),
        }
    }
    let mut rows: Vec<(pb::Conflict, Vec<String>)> = merged.into_values().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0.resolved_at_ms));
    if limit > 0 && !all {
        rows.truncate(limit as usize);
    }
    let value = |s: &Option<pb::ConflictSide>| {
        s.as_ref()
            .and_then(|s| s.value.as_deref())
            .map_or("(deleted)".to_string(), show_bytes)
    };
    let stamp = |s: &Option<pb::ConflictSide>| {
        s.as_ref().map_or(String::new(), |s| {
            format!("{}.{:04} {}", s.wall_ms, s.logical, s.region)
        })
    };
    let json_rows: Vec<_> = rows
        .iter()
        .map(|(c, regions)| {
            let side = |s: &Option<pb::ConflictSide>| {
                s.as_ref().map(|s| {
                    json!({
                        "value": s.value.as_deref().map(show_bytes),
                        "wall_ms": s.wall_ms,
                        "logical": s.logical,
                        "region": s.region,
                    })
                })
            };
            json!({
                "key": show_bytes(&c.key),
                "kind": c.kind,
                "loser_type": (!c.loser_type.is_empty()).then_some(&c.loser_type),
                "winner": side(&c.winner),
                "loser": side(&c.loser),
                "resolved_at_ms": c.resolved_at_ms,
                "recorded_in": regions,
            })
        })
        .collect();
    let table = rows
        .iter()
        .map(|(c, regions)| {
            vec![
                show_bytes(&c.key),
                value(&c.winner),
                stamp(&c.winner),
                if c.kind == "type" {
                    format!("(a {})", c.loser_type)
                } else {
                    value(&c.loser)
                },
                stamp(&c.loser),
                regions.join(","),
            ]
        })
        .collect();
    emit(
        format,
        json!({
            "namespace": namespace,
            "conflicts": json_rows,
            "dropped_by_retention": dropped,
            "truncated": truncated,
            "unreachable_peers": unreachable,
        }),
        &[
            "key",
            "kept",
            "kept stamp",
            "overwritten",
            "overwritten stamp",
            "recorded in",
        ],
        table,
    );
    if truncated && format != OutputFormat::Json {
        eprintln!(
            "more conflicts are kept than shown (newest first); raise --limit or pass --all to see older ones"
        );
    }
    if !unreachable.is_empty() && format != OutputFormat::Json {
        eprintln!(
            "not asked (unreachable): {}; their records are missing above",
            unreachable.join(", ")
        );
    }
    Ok(())
}

/// One peer's records: a page of `limit`, or with `all` every page down to
/// the oldest it keeps (following its cursor). With what its retention
/// dropped and whether it keeps more than was read.
async fn read_peer(
    client: &Client,
    namespace: &str,
    limit: u32,
    all: bool,
) -> Result<(Vec<pb::Conflict>, u64, bool), meridian_client::ClientError> {
    let mut conflicts = Vec::new();
    let mut before = 0;
    loop {
        let page = client.list_conflicts(namespace, before, limit).await?;
        conflicts.extend(page.conflicts);
        // A cursor that does not move down would loop: stop there.
        let moves_on = page.next_before > 0 && (before == 0 || page.next_before < before);
        if !(all && page.truncated && moves_on) {
            return Ok((conflicts, page.dropped, page.truncated));
        }
        before = page.next_before;
    }
}
