//! The `meridian.v1.Control` gRPC service. Protobuf conversions live here.

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::error::ControlError;
use crate::model::{Namespace, NamespaceMode, PlacementPolicy, Region, ShardMember};
use crate::node::{ControlNode, now_unix_ms};
use crate::route_log::RouteKey;
use crate::state::ControlState;
use meridian_proto::v1 as pb;
use meridian_proto::v1::control_server::Control;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Serves the control plane from one member.
pub struct ControlService {
    node: Arc<ControlNode>,
}

impl ControlService {
    /// A service over `node`.
    pub fn new(node: Arc<ControlNode>) -> Self {
        Self { node }
    }

    /// Creates the namespace on its primary shard and on every standby shard,
    /// and, for an active-passive namespace, sets each copy's role at epoch 1.
    async fn create_copies(
        &self,
        name: &str,
        policy: &PlacementPolicy,
        shard: &crate::model::Shard,
        standbys: &[crate::model::StandbyCopy],
        max_lag: crate::model::MaxLag,
    ) -> Result<(), ControlError> {
        let dialer = &self.node.dialer;
        create_on_shard(shard, name, dialer).await?;
        let replicated =
            matches!(policy.mode, NamespaceMode::ActivePassive { .. }) && !standbys.is_empty();
        if !replicated {
            return Ok(());
        }
        let settings = meridian_client::ReplicationSettings {
            sync: matches!(policy.mode, NamespaceMode::ActivePassive { sync: true }),
            max_lag_entries: max_lag.entries,
            max_lag_ms: max_lag.ms,
        };
        configure_on_shard(shard, name, pb::NamespaceRole::Primary, 1, settings, dialer).await?;
        for standby in standbys {
            let Some(standby_shard) = self
                .node
                .with_state(|s| s.shards.get(&standby.shard).cloned())
            else {
                return Err(ControlError::Unavailable(format!(
                    "standby shard {} is not registered",
                    standby.shard
                )));
            };
            create_on_shard(&standby_shard, name, dialer).await?;
            configure_on_shard(
                &standby_shard,
                name,
                pb::NamespaceRole::Standby,
                1,
                settings,
                dialer,
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until the local state may be read linearizably.
    pub async fn barrier(&self) -> Result<(), Status> {
        self.node.read_barrier().await.map_err(Status::from)
    }

    /// The routing version and table as this member holds them.
    pub fn routes(&self) -> (u64, BTreeMap<String, pb::Route>) {
        self.node
            .with_state(|s| (s.counters.routing_version, route_table(s)))
    }

    /// Who made the call, as the audit log records it: the identity in the
    /// caller's certificate (mutual TLS), never something the caller states.
    fn requester<T>(request: &Request<T>) -> Requester {
        let actor = if let Some(LocalActor(local)) = request.extensions().get::<LocalActor>() {
            local.clone()
        } else {
            match meridian_net::peers::caller(request) {
                Some(Ok(identity)) => identity.uri(),
                Some(Err(_)) => "certificate-without-identity".to_string(),
                // Plain text: nobody is authenticated.
                None => "unauthenticated".to_string(),
            }
        };
        Requester {
            actor,
            at_unix_ms: now_unix_ms(),
        }
    }
}

/// The actor of a call this process makes to its own service (its HTTP
/// admin API), carried as a request extension — which a remote caller cannot
/// set, unlike metadata.
#[derive(Debug, Clone)]
pub struct LocalActor(pub String);

fn region_info(region: &Region) -> pb::RegionInfo {
    pb::RegionInfo {
        name: region.name.clone(),
        jurisdictions: region.jurisdictions.iter().cloned().collect(),
        latitude: region.latitude,
        longitude: region.longitude,
    }
}

fn placement(namespace: &Namespace) -> pb::Placement {
    let (mode, sync) = match namespace.policy.mode {
        NamespaceMode::RegionLocked => (pb::NamespaceMode::RegionLocked, false),
        NamespaceMode::ActivePassive { sync } => (pb::NamespaceMode::ActivePassive, sync),
        NamespaceMode::ActiveActive => (pb::NamespaceMode::ActiveActive, false),
    };
    pb::Placement {
        name: namespace.name.clone(),
        home_region: namespace.policy.home_region.clone(),
        mode: mode as i32,
        sync,
        standby_regions: namespace.policy.standby_regions.clone(),
        allowed_jurisdictions: namespace
            .policy
            .allowed_jurisdictions
            .iter()
            .cloned()
            .collect(),
        shard: namespace.shard.clone(),
        epoch: namespace.epoch,
        max_lag_entries: namespace.max_lag.entries,
        max_lag_ms: namespace.max_lag.ms,
        on_standby_loss: match namespace.on_standby_loss {
            crate::model::StandbyLossPolicy::Refuse => pb::StandbyLossPolicy::Refuse,
            crate::model::StandbyLossPolicy::Degrade => pb::StandbyLossPolicy::Degrade,
        } as i32,
        sync_degraded: namespace.sync_degraded,
        failover_probes: namespace.failover.failed_probes,
        failover_p99_ms: namespace.failover.p99_latency_ms,
        manual_failover_only: namespace.failover.manual_only,
    }
}

fn members(state: &ControlState, shard: &str) -> Vec<pb::Member> {
    state
        .shards
        .get(shard)
        .map(|shard| shard_info(shard).members)
        .unwrap_or_default()
}

/// A shard and its members on the wire.
fn shard_info(shard: &crate::model::Shard) -> pb::ShardInfo {
    pb::ShardInfo {
        id: shard.id.clone(),
        region: shard.region.clone(),
        members: shard
            .members
            .values()
            .map(|m| pb::Member {
                node_id: m.node_id,
                address: m.address.clone(),
                voter: true,
            })
            .collect(),
    }
}

/// The whole routing table with each route's shard members (admin API).
pub fn route_table(state: &ControlState) -> BTreeMap<String, pb::Route> {
    state
        .routes()
        .into_iter()
        .map(|route| (route.namespace.clone(), wire_route(state, route)))
        .collect()
}

/// A route as sent to gateways: with the members of its shard.
fn wire_route(state: &ControlState, route: crate::model::Route) -> pb::Route {
    pb::Route {
        members: members(state, &route.shard),
        namespace: route.namespace,
        shard: route.shard,
        region: route.region,
        epoch: route.epoch,
        standbys: standby_routes(&route.standbys),
    }
}

fn standby_routes(standbys: &[crate::model::StandbyCopy]) -> Vec<pb::StandbyRoute> {
    standbys
        .iter()
        .map(|s| pb::StandbyRoute {
            region: s.region.clone(),
            shard: s.shard.clone(),
        })
        .collect()
}

fn policy_from(placement: pb::Placement) -> Result<(String, PlacementPolicy), ControlError> {
    if placement.name.is_empty() || placement.home_region.is_empty() {
        return Err(ControlError::Invalid(
            "placement needs a name and a home_region".into(),
        ));
    }
    let mode = match pb::NamespaceMode::try_from(placement.mode) {
        Ok(pb::NamespaceMode::RegionLocked) => NamespaceMode::RegionLocked,
        Ok(pb::NamespaceMode::ActivePassive) => NamespaceMode::ActivePassive {
            sync: placement.sync,
        },
        Ok(pb::NamespaceMode::ActiveActive) => NamespaceMode::ActiveActive,
        Err(_) => {
            return Err(ControlError::Invalid(format!(
                "unknown namespace mode {}",
                placement.mode
            )));
        }
    };
    Ok((
        placement.name,
        PlacementPolicy {
            home_region: placement.home_region,
            mode,
            standby_regions: placement.standby_regions,
            allowed_jurisdictions: placement.allowed_jurisdictions.into_iter().collect(),
        },
    ))
}

/// A client for administrative calls on `shard`'s members.
fn shard_admin_client(
    shard: &crate::model::Shard,
    dialer: &meridian_net::Dialer,
) -> Result<meridian_client::Client, ControlError> {
    let addresses: Vec<String> = shard.members.values().map(|m| m.address.clone()).collect();
    let options = meridian_client::ClientOptions {
        retry_budget: std::time::Duration::from_secs(10),
        dialer: dialer.clone(),
        ..Default::default()
    };
    meridian_client::Client::with_options(addresses, options)
        .map_err(|e| ControlError::Unavailable(format!("shard {}: {e}", shard.id)))
}

/// Creates `namespace` on `shard` (an existing one is fine: a retried placement).
async fn create_on_shard(
    shard: &crate::model::Shard,
    namespace: &str,
    dialer: &meridian_net::Dialer,
) -> Result<(), ControlError> {
    let client = shard_admin_client(shard, dialer)?;
    match client.create_namespace(namespace).await {
        Ok(_) | Err(meridian_client::ClientError::AlreadyExists(_)) => Ok(()),
        Err(err) => Err(ControlError::Unavailable(format!(
            "could not create namespace {namespace:?} on shard {}: {err}",
            shard.id
        ))),
    }
}

fn failover_info(record: &crate::model::FailoverRecord) -> pb::FailoverInfo {
    pb::FailoverInfo {
        id: record.id,
        namespace: record.namespace.clone(),
        from_region: record.from_region.clone(),
        from_shard: record.from_shard.clone(),
        to_region: record.to_region.clone(),
        to_shard: record.to_shard.clone(),
        epoch: record.epoch,
        cause: record.cause.clone(),
        detected_at_ms: record.detected_at_ms,
        promoted_at_ms: record.promoted_at_ms,
        primary_seq: record.primary_seq,
        promoted_seq: record.promoted_seq,
        reported_at_ms: record.loss_window.reported_at_ms,
        writes_until_ms: record.loss_window.writes_until_ms,
    }
}

/// Routes per message of a full table, so a large table stays far below gRPC's
/// message size limit (and a slow subscriber is fed incrementally).
const FULL_TABLE_CHUNK: usize = 10_000;

/// What a watcher that has sent `sent` (None: nothing yet) should send now: the
/// changes since then if the recent-change log covers them, else the whole
/// table in chunks. Empty when nothing changed.
fn next_updates(node: &crate::node::ControlNode, sent: Option<u64>) -> Vec<pb::RoutingUpdate> {
    // One read of the state, with the change log read under the same lock, so
    // the version sent matches the routes sent.
    let delta = node.with_state(|state| {
        let version = state.counters.routing_version;
        let since = sent?;
        if since == version {
            return Some(None);
        }
        let keys = node.machine.route_changes_since(since)?;
        let mut update = pb::RoutingUpdate {
            version,
            ..Default::default()
        };
        for key in keys {
            match key {
                RouteKey::Namespace(name) => match state.namespaces.get(&name) {
                    Some(namespace) => update.upserts.push(pushed_route(state.route_of(namespace))),
                    None => update.removals.push(name),
                },
                RouteKey::Shard(id) => {
                    if let Some(shard) = state.shards.get(&id) {
                        update.shards.push(shard_info(shard));
                    }
                }
            }
        }
        Some(Some(update))
    });
    match delta {
        Some(None) if sent.is_some() => Vec::new(),
        Some(Some(update)) => vec![update],
        _ => full_table(node),
    }
}

/// The whole table as a sequence of messages (see `RoutingUpdate.more`).
fn full_table(node: &crate::node::ControlNode) -> Vec<pb::RoutingUpdate> {
    let (version, routes, shards) = node.with_state(|state| {
        (
            state.counters.routing_version,
            state
                .namespaces
                .values()
                .map(|ns| pushed_route(state.route_of(ns)))
                .collect::<Vec<_>>(),
            state.shards.values().map(shard_info).collect::<Vec<_>>(),
        )
    });
    let mut updates: Vec<pb::RoutingUpdate> = routes
        .chunks(FULL_TABLE_CHUNK)
        .map(|chunk| pb::RoutingUpdate {
            version,
            upserts: chunk.to_vec(),
            more: true,
            ..Default::default()
        })
        .collect();
    if updates.is_empty() {
        updates.push(pb::RoutingUpdate {
            version,
            ..Default::default()
        });
    }
    updates[0].full = true;
    updates[0].shards = shards;
    if let Some(last) = updates.last_mut() {
        last.more = false;
    }
    updates
}

/// A route as pushed: members travel once per shard, not once per route.
fn pushed_route(route: crate::model::Route) -> pb::Route {
    pb::Route {
        namespace: route.namespace,
        shard: route.shard,
        region: route.region,
        epoch: route.epoch,
        members: Vec::new(),
        standbys: standby_routes(&route.standbys),
    }
}

/// Sets `namespace`'s role and epoch on `shard`.
async fn configure_on_shard(
    shard: &crate::model::Shard,
    namespace: &str,
    role: pb::NamespaceRole,
    epoch: u64,
    settings: meridian_client::ReplicationSettings,
    dialer: &meridian_net::Dialer,
) -> Result<(), ControlError> {
    let client = shard_admin_client(shard, dialer)?;
    client
        .configure_namespace(namespace, role, epoch, settings)
        .await
        .map(|_| ())
        .map_err(|err| {
            ControlError::Unavailable(format!(
                "could not set namespace {namespace:?} to {role:?} at epoch {epoch} on shard {}: {err}",
                shard.id
            ))
        })
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<pb::RoutingUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn put_region(
        &self,
        request: Request<pb::PutRegionRequest>,
    ) -> Result<Response<pb::PutRegionResponse>, Status> {
        let requester = Self::requester(&request);
        let region = request
            .into_inner()
            .region
            .ok_or_else(|| ControlError::Invalid("region is required".into()))?;
        if region.name.is_empty() || region.jurisdictions.is_empty() {
            return Err(ControlError::Invalid(
                "a region needs a name and at least one jurisdiction".into(),
            )
            .into());
        }
        let command = ControlCommand::PutRegion {
            region: Region {
                name: region.name,
                jurisdictions: region.jurisdictions.into_iter().collect(),
                latitude: region.latitude,
                longitude: region.longitude,
            },
            requester,
        };
        self.node.propose(command).await?;
        Ok(Response::new(pb::PutRegionResponse {}))
    }

    async fn list_regions(
        &self,
        _request: Request<pb::ListRegionsRequest>,
    ) -> Result<Response<pb::ListRegionsResponse>, Status> {
        self.node.read_barrier().await?;
        let regions = self
            .node
            .with_state(|s| s.regions.values().map(region_info).collect());
        Ok(Response::new(pb::ListRegionsResponse { regions }))
    }

    async fn register_member(
        &self,
        request: Request<pb::RegisterMemberRequest>,
    ) -> Result<Response<pb::RegisterMemberResponse>, Status> {
        let requester = Self::requester(&request);
        let caller = meridian_net::peers::caller(&request);
        let request = request.into_inner();
        // A member's region is the one its certificate names.
        crate::authz::may_register(caller.as_ref(), &request.region).map_err(ControlError::from)?;
        if request.shard.is_empty()
            || request.region.is_empty()
            || request.node_id == 0
            || request.address.is_empty()
        {
            return Err(ControlError::Invalid(
                "shard, region, node_id and address are required".into(),
            )
            .into());
        }
        let command = ControlCommand::RegisterMember {
            shard: request.shard,
            region: request.region,
            member: ShardMember {
                node_id: request.node_id,
                address: request.address,
            },
            requester,
        };
        self.node.propose(command).await?;
        Ok(Response::new(pb::RegisterMemberResponse {}))
    }

    async fn list_shards(
        &self,
        _request: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        self.node.read_barrier().await?;
        let shards = self
            .node
            .with_state(|s| s.shards.values().map(shard_info).collect());
        Ok(Response::new(pb::ListShardsResponse { shards }))
    }

    async fn place_namespace(
        &self,
        request: Request<pb::PlaceNamespaceRequest>,
    ) -> Result<Response<pb::PlaceNamespaceResponse>, Status> {
        let requester = Self::requester(&request);
        let requested = request
            .into_inner()
            .placement
            .ok_or_else(|| ControlError::Invalid("placement is required".into()))?;
        let max_lag = crate::model::MaxLag {
            entries: requested.max_lag_entries,
            ms: requested.max_lag_ms,
        };
        let failover = crate::model::FailoverOverride {
            failed_probes: requested.failover_probes,
            p99_latency_ms: requested.failover_p99_ms,
            manual_only: requested.manual_failover_only,
        };
        let on_standby_loss = match pb::StandbyLossPolicy::try_from(requested.on_standby_loss) {
            Ok(pb::StandbyLossPolicy::Refuse) => crate::model::StandbyLossPolicy::Refuse,
            Ok(pb::StandbyLossPolicy::Degrade) if requested.sync => {
                crate::model::StandbyLossPolicy::Degrade
            }
            Ok(pb::StandbyLossPolicy::Degrade) => {
                return Err(ControlError::Invalid(
                    "on_standby_loss = degrade applies to sync namespaces only (add sync)".into(),
                )
                .into());
            }
            Err(_) => {
                return Err(ControlError::Invalid(format!(
                    "unknown on_standby_loss {}",
                    requested.on_standby_loss
                ))
                .into());
            }
        };
        let (name, policy) = policy_from(requested)?;
        // Decide on the (up-to-date) leader, create the namespace on the chosen
        // shard, and only then publish the route: a route never points at a
        // namespace its shard does not have. A refused placement is still
        // proposed, so the refusal is decided and audited by the state machine.
        self.node.read_barrier().await?;
        let planned = self
            .node
            .with_state(|s| s.plan_placement(&name, policy.clone()));
        let command = match planned {
            Ok((resolved, shard, standbys)) => {
                self.create_copies(&name, &resolved, &shard, &standbys, max_lag)
                    .await?;
                // The state machine applies exactly the shards created on.
                ControlCommand::PlaceNamespaceOn {
                    name,
                    policy,
                    shard: shard.id,
                    standbys,
                    max_lag,
                    failover,
                    on_standby_loss,
                    requester,
                }
            }
            Err(_) => ControlCommand::PlaceNamespace {
                name,
                policy,
                shard: None,
                max_lag,
                failover,
                requester,
            },
        };
        match self.node.propose(command).await? {
            ControlResult::NamespaceCreated {
                namespace,
                routing_version,
            } => Ok(Response::new(pb::PlaceNamespaceResponse {
                placement: Some(placement(&namespace)),
                routing_version,
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn remove_namespace(
        &self,
        request: Request<pb::RemoveNamespaceRequest>,
    ) -> Result<Response<pb::RemoveNamespaceResponse>, Status> {
        let requester = Self::requester(&request);
        let name = request.into_inner().name;
        self.node.read_barrier().await?;
        let routing_version = match self
            .node
            .propose(ControlCommand::DeleteNamespace {
                name: name.clone(),
                requester,
            })
            .await?
        {
            ControlResult::NamespaceDeleted { routing_version } => routing_version,
            other => return Err(Status::internal(format!("unexpected result {other:?}"))),
        };
        // The route is gone first, so no gateway sends new writes; then
        // every copy. What cannot be reached now is finished by the leader's
        // deletion worker (and by asking again).
        let remaining = crate::deletion::finish(&self.node, &name).await;
        if !remaining.is_empty() {
            return Err(ControlError::Unavailable(format!(
                "route of {name:?} removed, but copies remain on {} (unreachable now); they are deleted in the background, and the name stays reserved until then — retry to finish now",
                remaining.join(", ")
            ))
            .into());
        }
        Ok(Response::new(pb::RemoveNamespaceResponse {
            routing_version,
        }))
    }

    async fn list_placements(
        &self,
        _request: Request<pb::ListPlacementsRequest>,
    ) -> Result<Response<pb::ListPlacementsResponse>, Status> {
        self.node.read_barrier().await?;
        let (placements, routing_version) = self.node.with_state(|s| {
            (
                s.namespaces.values().map(placement).collect(),
                s.counters.routing_version,
            )
        });
        Ok(Response::new(pb::ListPlacementsResponse {
            placements,
            routing_version,
        }))
    }

    async fn get_route(
        &self,
        request: Request<pb::GetRouteRequest>,
    ) -> Result<Response<pb::GetRouteResponse>, Status> {
        let namespace = request.into_inner().namespace;
        self.node.read_barrier().await?;
        let response = self.node.with_state(|s| pb::GetRouteResponse {
            route: s
                .namespaces
                .get(&namespace)
                .map(|ns| wire_route(s, s.route_of(ns))),
            version: s.counters.routing_version,
        });
        Ok(Response::new(response))
    }

    async fn list_failovers(
        &self,
        request: Request<pb::ListFailoversRequest>,
    ) -> Result<Response<pb::ListFailoversResponse>, Status> {
        let namespace = request.into_inner().namespace;
        self.node.read_barrier().await?;
        let failovers = self.node.with_state(|s| {
            s.failovers
                .values()
                .filter(|f| namespace.is_empty() || f.namespace == namespace)
                .map(failover_info)
                .collect()
        });
        Ok(Response::new(pb::ListFailoversResponse { failovers }))
    }

    async fn failover(
        &self,
        request: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::FailoverResponse>, Status> {
        let actor = Self::requester(&request).actor;
        let request = request.into_inner();
        if request.namespace.is_empty()
            && request.from_region.is_empty()
            && request.to_region.is_empty()
        {
            return Err(ControlError::Invalid(
                "name a namespace, a region to move from, or a region to promote".into(),
            )
            .into());
        }
        self.node.read_barrier().await?;
        let records = crate::failover::manual(
            &self.node,
            crate::failover::ManualFailover {
                namespace: request.namespace,
                from_region: request.from_region,
                to_region: request.to_region,
                force: request.force,
                actor,
            },
        )
        .await?;
        Ok(Response::new(pb::FailoverResponse {
            failovers: records.iter().map(failover_info).collect(),
        }))
    }

    type WatchRoutesStream = RouteStream;

    async fn watch_routes(
        &self,
        request: Request<pb::WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        let request = request.into_inner();
        let node = self.node.clone();
        let mut versions = node.machine.subscribe_versions();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            versions.borrow_and_update();
            // 0 means "nothing yet": always a full table first.
            let mut sent = (request.since_version != 0).then_some(request.since_version);
            // A subscriber resuming at the current version still gets one
            // (empty) update at once: confirmation that it is current.
            let mut updates = next_updates(&node, sent);
            if updates.is_empty() {
                updates.push(pb::RoutingUpdate {
                    version: node.with_state(|s| s.counters.routing_version),
                    ..Default::default()
                });
            }
            loop {
                for update in updates {
                    let version = update.version;
                    if sender.send(Ok(update)).await.is_err() {
                        return;
                    }
                    sent = Some(version);
                }
                // Stop as soon as the subscriber goes away, not at the next change.
                tokio::select! {
                    changed = versions.changed() => if changed.is_err() { return },
                    _ = sender.closed() => return,
                }
                updates = next_updates(&node, sent);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn audit_log(
        &self,
        request: Request<pb::AuditLogRequest>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        let request = request.into_inner();
        self.node.read_barrier().await?;
        let limit = match request.limit {
            0 => 1000,
            n => n.min(10_000) as usize,
        };
        let (records, anchor, last_sequence) = self.node.with_state(|s| {
            let records = s
                .audit
                .range(request.after.saturating_add(1)..)
                .take(limit)
                .map(|(_, r)| pb::AuditRecord {
                    sequence: r.sequence,
                    at_unix_ms: r.at_unix_ms,
                    actor: r.actor.clone(),
                    action: r.action.clone(),
                    outcome: r.outcome.clone(),
                    prev_hash: r.prev_hash.to_vec(),
                    hash: r.hash.to_vec(),
                })
                .collect();
            (records, s.audit_anchor.to_vec(), s.counters.audit_sequence)
        });
        Ok(Response::new(pb::AuditLogResponse {
            records,
            anchor,
            last_sequence,
        }))
    }

    async fn control_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        use openraft::async_runtime::WatchReceiver;
        let metrics = self.node.raft.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                node_id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            node_id: self.node.id(),
            shard: "control".into(),
            region: self.node.config.node.region.clone(),
            leader_id: metrics.current_leader.unwrap_or(0),
            leader_address: self.node.leader_address().unwrap_or_default(),
            term: metrics.current_term,
            role: format!("{:?}", metrics.state),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index()),
            snapshot_index: metrics.snapshot.map_or(0, |id| id.index()),
            purged_index: metrics.purged.map_or(0, |id| id.index()),
            members,
        }))
    }
}
