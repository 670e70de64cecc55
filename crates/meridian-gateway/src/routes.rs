//! The routing table as this gateway knows it, kept current by a subscription.

use meridian_proto::v1 as pb;
use meridian_proto::v1::control_client::ControlClient;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_stream::StreamExt;

/// Routes by namespace, with the table version they reflect.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Version of the control plane's table last applied; 0 before the first.
    pub version: u64,
    /// Whether a full table has been received (the gateway is ready).
    pub synced: bool,
    /// Routes by namespace.
    pub routes: BTreeMap<String, pb::Route>,
}

impl RouteTable {
    /// Applies one update from the control plane.
    pub fn apply(&mut self, update: pb::RoutingUpdate) {
        if update.full {
            self.routes.clear();
            self.synced = true;
        }
        for name in update.removals {
            self.routes.remove(&name);
        }
        for route in update.upserts {
            self.routes.insert(route.namespace.clone(), route);
        }
        self.version = update.version;
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
            Ok(e) => e
                .connect_timeout(Duration::from_secs(1))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .connect_lazy(),
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
                            let version = update.version;
                            table
                                .write()
                                .unwrap_or_else(|e| e.into_inner())
                                .apply(update);
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
            members: vec![],
        }
    }

    #[test]
    fn full_tables_replace_and_deltas_merge() {
        let mut table = RouteTable::default();
        table.apply(pb::RoutingUpdate {
            version: 3,
            full: true,
            upserts: vec![route("a", "s1"), route("b", "s1")],
            removals: vec![],
        });
        table.apply(pb::RoutingUpdate {
            version: 4,
            full: false,
            upserts: vec![route("c", "s2")],
            removals: vec!["a".into()],
        });
        assert_eq!(table.version, 4);
        assert_eq!(table.routes.keys().collect::<Vec<_>>(), ["b", "c"]);
        table.apply(pb::RoutingUpdate {
            version: 9,
            full: true,
            upserts: vec![route("z", "s3")],
            removals: vec![],
        });
        assert_eq!(table.routes.keys().collect::<Vec<_>>(), ["z"]);
        assert!(table.synced);
    }
}
