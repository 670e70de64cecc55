//! The routing table as a subscriber (a gateway, a shard node) knows it, kept
//! current by a `WatchRoutes` subscription.

use meridian_proto::v1 as pb;
use meridian_proto::v1::control_client::ControlClient;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_stream::StreamExt;

/// Routes by namespace and members by shard, with the table version they
/// reflect.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Version of the control plane's table last applied; 0 before the first.
    pub version: u64,
    /// Whether a full table has been received (the gateway is ready).
    pub synced: bool,
    /// Routes by namespace.
    pub routes: HashMap<String, pb::Route>,
    /// Member addresses by shard.
    pub shards: HashMap<String, Vec<String>>,
    /// The access policy (roles, grants, token hashes, revoked identities);
    /// `None` until the first push carries it.
    pub access: Option<Arc<meridian_access::AccessPolicy>>,
    /// A full table arriving in several messages, applied once complete.
    pending: Option<PendingTable>,
}

#[derive(Debug)]
struct PendingTable {
    version: u64,
    routes: HashMap<String, pb::Route>,
    shards: HashMap<String, Vec<String>>,
}

fn addresses(shard: &pb::ShardInfo) -> Vec<String> {
    shard.members.iter().map(|m| m.address.clone()).collect()
}

impl RouteTable {
    /// Applies one update from the control plane. Updates older than what is
    /// already applied (from a member that lags behind the one this gateway
    /// followed before) are ignored, so the table never goes back in time.
    pub fn apply(&mut self, update: pb::RoutingUpdate) {
        if !update.access_policy.is_empty() {
            self.apply_access(&update.access_policy);
        }
        if update.full {
            self.pending = Some(PendingTable {
                version: update.version,
                routes: HashMap::with_capacity(update.upserts.len()),
                shards: update
                    .shards
                    .iter()
                    .map(|s| (s.id.clone(), addresses(s)))
                    .collect(),
            });
        }
        if let Some(pending) = &mut self.pending {
            if update.version != pending.version {
                // Chunks of two tables mixed: only a broken stream does that.
                self.pending = None;
                return;
            }
            for route in update.upserts {
                pending.routes.insert(route.namespace.clone(), route);
            }
            if update.more {
                return;
            }
            if let Some(table) = self.pending.take()
                && (!self.synced || table.version >= self.version)
            {
                self.routes = table.routes;
                self.shards = table.shards;
                self.version = table.version;
                self.synced = true;
            }
            return;
        }
        if update.version <= self.version {
            return;
        }
        for name in update.removals {
            self.routes.remove(&name);
        }
        for route in update.upserts {
            self.routes.insert(route.namespace.clone(), route);
        }
        for shard in &update.shards {
            self.shards.insert(shard.id.clone(), addresses(shard));
        }
        self.version = update.version;
    }

    /// Takes a pushed access policy unless the one held is newer (a member
    /// that lags behind may push an older one).
    fn apply_access(&mut self, encoded: &[u8]) {
        match meridian_access::AccessPolicy::decode(encoded) {
            Ok(policy) => {
                if self
                    .access
                    .as_ref()
                    .is_none_or(|held| held.version <= policy.version)
                {
                    self.access = Some(Arc::new(policy));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "unreadable access policy in the routing push")
            }
        }
    }

    /// Adds a route learned outside the push (a `GetRoute` answer at `version`),
    /// unless the table is already newer and so knows better.
    pub fn learn(&mut self, route: pb::Route, version: u64) {
        if self.version > version {
            return;
        }
        self.shards.insert(
            route.shard.clone(),
            route.members.iter().map(|m| m.address.clone()).collect(),
        );
        self.routes.insert(route.namespace.clone(), route);
    }
}

/// Shared handle on the table.
pub type SharedRoutes = Arc<RwLock<RouteTable>>;

/// Follows the control plane's routing table forever: subscribes to any member,
/// resumes from the applied version after a disconnect, and rotates through the
/// members when one is unreachable.
pub async fn follow(
    endpoints: Vec<String>,
    dialer: meridian_net::Dialer,
    subscriber: String,
    table: SharedRoutes,
    on_update: impl Fn(u64) + Send,
) {
    let mut next = 0usize;
    loop {
        let endpoint = &endpoints[next % endpoints.len()];
        next = next.wrapping_add(1);
        let since_version = table.read().unwrap_or_else(|e| e.into_inner()).version;
        let channel = match dialer.endpoint(endpoint) {
            Ok(e) => dialer.lazy(
                &e.connect_timeout(Duration::from_secs(1))
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(3)),
            ),
            Err(err) => {
                tracing::error!(endpoint, error = %err, "bad control-plane address");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let request = pb::WatchRoutesRequest {
            since_version,
            subscriber: subscriber.clone(),
        };
        match ControlClient::new(channel).watch_routes(request).await {
            Ok(response) => {
                let mut updates = response.into_inner();
                while let Some(update) = updates.next().await {
                    match update {
                        Ok(update) => {
                            let version = {
                                let mut table = table.write().unwrap_or_else(|e| e.into_inner());
                                table.apply(update);
                                table.version
                            };
                            on_update(version);
                        }
                        Err(status) => {
                            tracing::warn!(endpoint, error = %status, "route subscription ended");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::debug!(endpoint, error = %status, "cannot subscribe to routes"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, shard: &str) -> pb::Route {
        pb::Route {
            namespace: name.into(),
            shard: shard.into(),
            region: "r".into(),
            epoch: 1,
            ..Default::default()
        }
    }

    fn shard(id: &str, address: &str) -> pb::ShardInfo {
        pb::ShardInfo {
            id: id.into(),
            region: "r".into(),
            members: vec![pb::Member {
                node_id: 1,
                address: address.into(),
                voter: true,
            }],
        }
    }

    fn names(table: &RouteTable) -> Vec<&str> {
        let mut names: Vec<&str> = table.routes.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    #[test]
    fn full_tables_replace_and_deltas_merge() {
        let mut table = RouteTable::default();
        table.apply(pb::RoutingUpdate {
            version: 3,
            full: true,
            upserts: vec![route("a", "s1"), route("b", "s1")],
            shards: vec![shard("s1", "h:1")],
            ..Default::default()
        });
        table.apply(pb::RoutingUpdate {
            version: 4,
            upserts: vec![route("c", "s2")],
            removals: vec!["a".into()],
            shards: vec![shard("s2", "h:2")],
            ..Default::default()
        });
        assert_eq!(table.version, 4);
        assert_eq!(names(&table), ["b", "c"]);
        assert_eq!(table.shards["s2"], ["h:2"]);
        table.apply(pb::RoutingUpdate {
            version: 9,
            full: true,
            upserts: vec![route("z", "s3")],
            ..Default::default()
        });
        assert_eq!(names(&table), ["z"]);
        assert!(table.synced);
    }

    #[test]
    fn the_newest_access_policy_is_kept() {
        let policy = |version| meridian_access::AccessPolicy {
            version,
            ..Default::default()
        };
        let mut table = RouteTable::default();
        assert!(table.access.is_none());
        table.apply(pb::RoutingUpdate {
            version: 3,
            full: true,
            access_policy: policy(5).encode(),
            ..Default::default()
        });
        assert_eq!(table.access.as_ref().map(|p| p.version), Some(5));
        table.apply(pb::RoutingUpdate {
            version: 4,
            access_policy: policy(4).encode(),
            ..Default::default()
        });
        assert_eq!(
            table.access.as_ref().map(|p| p.version),
            Some(5),
            "older: ignored"
        );
        table.apply(pb::RoutingUpdate {
            version: 5,
            access_policy: policy(6).encode(),
            ..Default::default()
        });
        assert_eq!(table.access.as_ref().map(|p| p.version), Some(6));
    }

    #[test]
    fn chunked_tables_apply_when_complete_and_old_updates_are_ignored() {
        let mut table = RouteTable::default();
        table.apply(pb::RoutingUpdate {
            version: 7,
            full: true,
            more: true,
            upserts: vec![route("a", "s1")],
            ..Default::default()
        });
        assert!(!table.synced, "half a table is not a table");
        table.apply(pb::RoutingUpdate {
            version: 7,
            upserts: vec![route("b", "s1")],
            ..Default::default()
        });
        assert!(table.synced);
        assert_eq!(names(&table), ["a", "b"]);
        // A lagging member's older table and deltas change nothing.
        table.apply(pb::RoutingUpdate {
            version: 5,
            full: true,
            upserts: vec![route("old", "s1")],
            ..Default::default()
        });
        table.apply(pb::RoutingUpdate {
            version: 6,
            removals: vec!["a".into()],
            ..Default::default()
        });
        assert_eq!(names(&table), ["a", "b"]);
        assert_eq!(table.version, 7);
    }
}
