//! Tombstone collection rounds: every [`COLLECT_EVERY`] the shard's leader
//! proposes, for each active-active namespace held here with tombstones, a
//! [`Command::CollectTombstones`] carrying what every other peer last said
//! of its frontier (its replication answers, as this node's shippers heard
//! them). The state machine decides the round (see
//! `meridian_replication::tombstone`), so every member of the shard drops
//! the same tombstones; this worker only carries the peers' words to it.

use crate::command::{Command, CommandResult};
use crate::node::ShardNode;
use meridian_client::routes::SharedRoutes;
use meridian_proto::v1 as pb;
use meridian_replication::replica::Source;
use meridian_replication::tombstone::Frontier;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a round is proposed per namespace with tombstones.
pub const COLLECT_EVERY: Duration = Duration::from_secs(2);

/// The other regions of `route`'s namespace if it is active-active and
/// this shard (in `region`) holds one of its copies (pure).
pub fn peer_regions(route: &pb::Route, shard: &str, region: &str) -> Option<Vec<String>> {
    if !route.active_active {
        return None;
    }
    let (copies, _) = meridian_replication::mode::of(route).receivers(route, shard, region)?;
    let mut regions: Vec<String> = copies.into_iter().map(|c| c.region).collect();
    regions.sort();
    regions.dedup();
    Some(regions)
}

/// What a round carries (pure): every peer region with the frontier last
/// heard from it (`None`: not heard, the round then waits).
pub fn round_peers(
    peers: &[String],
    heard: &BTreeMap<String, Frontier>,
) -> BTreeMap<String, Option<Frontier>> {
    peers
        .iter()
        .map(|region| (region.clone(), heard.get(region).cloned()))
        .collect()
}

/// Proposes rounds while this node leads its shard; runs until the process
/// stops.
pub async fn run(node: Arc<ShardNode>, routes: SharedRoutes) {
    // Per namespace, why the last round kept everything (logged when it
    // changes, so a stalled collection is visible without debug logs).
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::time::sleep(COLLECT_EVERY).await;
        if !node.raft.raft.is_leader() {
            continue;
        }
        let namespaces: Vec<(String, Vec<String>)> = {
            let table = routes.read().unwrap_or_else(|e| e.into_inner());
            table
                .routes
                .values()
                .filter_map(|route| {
                    peer_regions(route, node.shard(), node.region())
                        .map(|peers| (route.namespace.clone(), peers))
                })
                .collect()
        };
        for (namespace, peers) in namespaces {
            let Ok(Some(meta)) = node.machine.active_meta(&namespace) else {
                continue;
            };
            if !meta.counts_by_position || meta.tombstones == 0 {
                continue;
            }
            let heard = node.progress().frontiers(&namespace);
            let command = Command::CollectTombstones {
                namespace: namespace.clone(),
                peers: round_peers(&peers, &heard),
                limit: crate::state_machine::MAX_TOMBSTONES_PER_ROUND,
                physical_ms: crate::lease::now_unix_ms(),
            };
            match node.propose(command).await {
                Ok(CommandResult::TombstonesCollected { collected, waiting }) => {
                    if collected > 0 {
                        tracing::debug!(%namespace, collected, "tombstones collected");
                    }
                    match waiting {
                        Some(why) => {
                            if kept.get(&namespace) != Some(&why) {
                                tracing::info!(%namespace, %why, tombstones = meta.tombstones, "tombstones kept");
                                kept.insert(namespace.clone(), why);
                            }
                        }
                        None => {
                            kept.remove(&namespace);
                        }
                    }
                }
                Ok(other) => tracing::debug!(%namespace, ?other, "tombstone round refused"),
                Err(err) => tracing::debug!(%namespace, %err, "tombstone round not run"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(active_active: bool) -> pb::Route {
        pb::Route {
            namespace: "carts".into(),
            region: "us-east".into(),
            shard: "us-east-1".into(),
            active_active,
            standbys: vec![
                pb::StandbyRoute {
                    region: "eu-west".into(),
                    shard: "eu-west-1".into(),
                    jurisdictions: vec![],
                },
                pb::StandbyRoute {
                    region: "ap-south".into(),
                    shard: "ap-south-1".into(),
                    jurisdictions: vec![],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_peers_of_a_copy() {
        let rows = [
            (
                "the home copy",
                route(true),
                "us-east-1",
                "us-east",
                Some(vec!["ap-south", "eu-west"]),
            ),
            (
                "another copy",
                route(true),
                "eu-west-1",
                "eu-west",
                Some(vec!["ap-south", "us-east"]),
            ),
            (
                "a shard holding no copy",
                route(true),
                "us-west-1",
                "us-west",
                None,
            ),
            (
                "an active-passive namespace",
                route(false),
                "us-east-1",
                "us-east",
                None,
            ),
        ];
        for (name, route, shard, region, expected) in rows {
            let expected =
                expected.map(|r: Vec<&str>| r.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(peer_regions(&route, shard, region), expected, "{name}");
        }
    }

    #[test]
    fn a_round_names_every_peer_heard_or_not() {
        let peers = vec!["ap-south".to_string(), "eu-west".to_string()];
        let heard = BTreeMap::from([(
            "eu-west".to_string(),
            Frontier::from([("eu-west".to_string(), 4)]),
        )]);
        let round = round_peers(&peers, &heard);
        assert_eq!(round.len(), 2);
        assert_eq!(round["ap-south"], None);
        assert_eq!(round["eu-west"].as_ref().map(|f| f["eu-west"]), Some(4));
    }
}
