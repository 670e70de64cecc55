//! The `meridian.v1.Control` gRPC service. Protobuf conversions live here.

use crate::command::{ControlCommand, ControlRejection, ControlResult, RefusedCall, Requester};
use crate::error::ControlError;
use crate::model::{Namespace, NamespaceMode, PlacementPolicy, Region, ShardMember};
use crate::node::{ControlNode, now_unix_ms};
use crate::route_log::RouteKey;
use crate::state::ControlState;
use meridian_access::{Caller, Permission, Target};
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
    /// The member this service runs on.
    pub fn node(&self) -> &ControlNode {
        &self.node
    }

    /// The change `backup`'s chain is restored to for wall-clock time
    /// `at_ms`, from the time marks its backups' manifests carry (read from
    /// the location: the catalog does not keep them).
    async fn seq_at_time(
        &self,
        backup: &crate::model::BackupRecord,
        at_ms: u64,
    ) -> Result<u64, ControlError> {
        let (chain, location) = self.node.with_state(|s| {
            (
                crate::dr::chain_of(backup, &s.backups)
                    .map(|c| c.into_iter().cloned().collect::<Vec<_>>()),
                s.locations.get(&backup.location).cloned(),
            )
        });
        let chain = chain.map_err(ControlError::Refused)?;
        let location = location.ok_or_else(|| {
            ControlError::Refused(format!("location {:?} is gone", backup.location))
        })?;
        let opened = meridian_dr::location::open(&location.url)
            .map_err(|e| ControlError::Refused(e.to_string()))?;
        let mut marks = Vec::new();
        let mut start = None;
        for record in &chain {
            let manifest =
                meridian_dr::reader::read_manifest(&opened, &record.namespace, &record.backup_id)
                    .await
                    .map_err(|e| ControlError::Refused(e.to_string()))?;
            if start.is_none() {
                // When the full backup had surely reached its change: its
                // own mark.
                let Some(&(_, reached)) = manifest
                    .time_marks
                    .iter()
                    .find(|(seq, _)| *seq == manifest.change_seq)
                else {
                    return Err(ControlError::Refused(format!(
                        "backup {} was taken before backups carried time marks: restore its chain to a change sequence (--at SEQ)",
                        manifest.backup_id
                    )));
                };
                start = Some((manifest.change_seq, reached));
            }
            marks.extend(manifest.time_marks.iter().copied());
        }
        let start = start.ok_or_else(|| ControlError::Refused("an empty backup chain".into()))?;
        crate::dr::seq_at_time(start, &marks, backup.change_seq, at_ms)
            .map_err(ControlError::Refused)
    }
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
        // Active-active: every copy is a peer from the start (each takes
        // writes and ships them to the others once the route is published).
        // Active-passive: a primary and its standbys, with its settings.
        let (home_role, copy_role, settings) = match policy.mode {
            _ if standbys.is_empty() => return Ok(()),
            NamespaceMode::ActiveActive => (
                pb::NamespaceRole::Peer,
                pb::NamespaceRole::Peer,
                Default::default(),
            ),
            NamespaceMode::ActivePassive { sync } => (
                pb::NamespaceRole::Primary,
                pb::NamespaceRole::Standby,
                meridian_client::ReplicationSettings {
                    sync,
                    max_lag_entries: max_lag.entries,
                    max_lag_ms: max_lag.ms,
                },
            ),
            NamespaceMode::RegionLocked => return Ok(()),
        };
        configure_on_shard(shard, name, home_role, 1, settings, dialer).await?;
        for standby in standbys {
            let standby_shard = self.registered_shard(&standby.shard)?;
            create_on_shard(&standby_shard, name, dialer).await?;
            configure_on_shard(&standby_shard, name, copy_role, 1, settings, dialer).await?;
        }
        Ok(())
    }

    /// A registered shard by id.
    fn registered_shard(&self, id: &str) -> Result<crate::model::Shard, ControlError> {
        self.node
            .with_state(|s| s.shards.get(id).cloned())
            .ok_or_else(|| ControlError::Unavailable(format!("shard {id} is not registered")))
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

    /// Decides whether the caller of `request` may `need` on `target`
    /// (`meridian_access::decide` over the replicated policy). Allowed: who
    /// made the call, as the audit log records it — the identity the
    /// transport authenticated, never something the caller states. Refused:
    /// UNAUTHENTICATED or PERMISSION_DENIED naming the identity and what it
    /// lacks, and the refusal is queued for the audit log.
    ///
    /// Calls the leader serves are decided on the leader (a follower
    /// redirects first), so every refusal of them reaches the audit log.
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        api: &str,
        need: Permission,
        target: Target<'_>,
    ) -> Result<Requester, Status> {
        self.node.require_leader()?;
        self.authorize_here(request, api, need, target)
    }

    /// [`ControlService::authorize`] for calls any member serves (route
    /// watches, status): decided where they arrive; a follower's refusals are
    /// logged, not audited (only the leader writes the log).
    pub fn authorize_here<T>(
        &self,
        request: &Request<T>,
        api: &str,
        need: Permission,
        target: Target<'_>,
    ) -> Result<Requester, Status> {
        let caller = meridian_access::caller::of_grpc(request);
        let now = now_unix_ms();
        let decided = self
            .node
            .with_state(|s| meridian_access::decide(Some(&s.access), &caller, need, target, now));
        match decided {
            Ok(()) => Ok(Requester {
                actor: caller.name(),
                at_unix_ms: now,
            }),
            Err(refusal) => Err(self.refuse(&caller, api, &target.to_string(), &refusal)),
        }
    }

    /// Queues a refused call for the audit log and returns its status.
    fn refuse(
        &self,
        caller: &Caller,
        api: &str,
        target: &str,
        refusal: &meridian_access::Refusal,
    ) -> Status {
        tracing::info!(caller = %caller.name(), api, target, %refusal, "call refused");
        self.node
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RefusedCall {
                at_unix_ms: now_unix_ms(),
                actor: caller.name(),
                api: api.to_string(),
                target: target.to_string(),
                reason: refusal.to_string(),
            });
        meridian_access::caller::status(refusal)
    }
}

fn location_info(location: &crate::model::BackupLocation) -> pb::LocationInfo {
    pb::LocationInfo {
        name: location.name.clone(),
        url: location.url.clone(),
        region: location.region.clone(),
        jurisdictions: location.jurisdictions.iter().cloned().collect(),
    }
}

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
    let standbys = standby_routes(&route);
    pb::Route {
        members: members(state, &route.shard),
        namespace: route.namespace,
        shard: route.shard,
        region: route.region,
        epoch: route.epoch,
        standbys,
        jurisdictions: route.jurisdictions.into_iter().collect(),
        active_active: route.active_active,
        home_jurisdictions: route.home_jurisdictions.into_iter().collect(),
    }
}

fn standby_routes(route: &crate::model::Route) -> Vec<pb::StandbyRoute> {
    route
        .standbys
        .iter()
        .map(|s| pb::StandbyRoute {
            region: s.region.clone(),
            shard: s.shard.clone(),
            jurisdictions: route
                .standby_jurisdictions
                .get(&s.region)
                .map(|j| j.iter().cloned().collect())
                .unwrap_or_default(),
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
pub(crate) fn shard_admin_client(
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

fn backup_info(b: &crate::model::BackupRecord) -> pb::BackupInfo {
    pb::BackupInfo {
        backup_id: b.backup_id.clone(),
        namespace: b.namespace.clone(),
        location: b.location.clone(),
        location_region: b.location_region.clone(),
        shard: b.shard.clone(),
        node_id: b.node_id,
        change_seq: b.change_seq,
        key_count: b.key_count,
        digest: b.digest.clone(),
        stored_bytes: b.stored_bytes,
        objects: b.objects,
        verified: b.verified,
        created_unix_ms: b.created_unix_ms,
        elapsed_ms: b.elapsed_ms,
        jurisdictions: b.jurisdictions.iter().cloned().collect(),
        kind: if b.is_incremental() {
            "changes"
        } else {
            "full"
        }
        .into(),
        parent: b.parent.clone().unwrap_or_default(),
        from_seq: b.from_seq,
    }
}

/// A schedule as the API shows it, with its latest backup.
fn schedule_info(
    state: &ControlState,
    schedule: &crate::model::BackupSchedule,
) -> pb::ScheduleInfo {
    let latest = state
        .backups
        .values()
        .filter(|b| b.namespace == schedule.namespace && b.location == schedule.location)
        .max_by_key(|b| b.created_unix_ms);
    pb::ScheduleInfo {
        namespace: schedule.namespace.clone(),
        location: schedule.location.clone(),
        every_ms: schedule.every_ms,
        keep_ms: schedule.keep_ms,
        incrementals_per_full: schedule.incrementals_per_full,
        created_by: schedule.created_by.clone(),
        created_unix_ms: schedule.created_unix_ms,
        last_backup_id: latest.map(|b| b.backup_id.clone()).unwrap_or_default(),
        last_backup_unix_ms: latest.map_or(0, |b| b.created_unix_ms),
    }
}

/// A migration's write-block budget when none is given.
const DEFAULT_MAX_BLOCKED_MS: u64 = 1_000;
/// How long a migration keeps the source copy when not told.
const DEFAULT_KEEP_SOURCE_MS: u64 = 3_600_000;
/// How long a migration's new copy may take to come within reach.
const DEFAULT_CATCH_UP_TIMEOUT_MS: u64 = 1_800_000;

/// A job as the API shows it.
pub fn job_info(job: &crate::model::Job) -> pb::JobInfo {
    use crate::model::{JobSpec, JobState};
    let (source, region) = match &job.spec {
        JobSpec::Restore(r) => (r.backup_id.clone(), r.policy.home_region.clone()),
        JobSpec::Backup(b) => (b.location.clone(), String::new()),
        JobSpec::Migrate(m) => (m.source_region.clone(), m.to_region.clone()),
        JobSpec::Rebuild(r) => (r.backup_id.clone(), String::new()),
    };
    let rebuild = match &job.spec {
        JobSpec::Rebuild(r) => Some(pb::RebuildInfo {
            backup_id: r.backup_id.clone(),
            location_url: r.location_url.clone(),
            backup_created_unix_ms: r.backup_created_unix_ms,
            backup_routing_version: r.backup_routing_version,
            lost_shards: r.lost.clone(),
            outcome: r
                .outcome
                .iter()
                .map(|o| pb::RebuildOutcome {
                    namespace: o.namespace.clone(),
                    verdict: o.verdict.clone(),
                    shard: o.shard.clone(),
                    epoch: o.epoch,
                })
                .collect(),
        }),
        _ => None,
    };
    let migration = match &job.spec {
        JobSpec::Migrate(m) => Some(pb::MigrationInfo {
            from_region: m.source_region.clone(),
            from_shard: m.source_shard.clone(),
            to_region: m.to_region.clone(),
            to_shard: m.target_shard.clone(),
            max_blocked_ms: m.max_blocked_ms,
            keep_source_ms: m.keep_source_ms,
            cut_over: m.cutover.is_some(),
            blocked_ms: m.cutover.as_ref().map_or(0, |c| c.blocked_ms),
            cutover_unix_ms: m.cutover.as_ref().map_or(0, |c| c.at_unix_ms),
            cutover_seq: m.cutover.as_ref().map_or(0, |c| c.change_seq),
            epoch: m.cutover.as_ref().map_or(0, |c| c.epoch),
            source_released: m.source_released,
        }),
        _ => None,
    };
    pb::JobInfo {
        id: job.id,
        kind: job.spec.kind().into(),
        state: match job.state {
            JobState::Running => pb::JobState::Running,
            JobState::Succeeded => pb::JobState::Succeeded,
            JobState::Failed => pb::JobState::Failed,
            JobState::Cancelled => pb::JobState::Cancelled,
        } as i32,
        namespace: job.spec.namespace().into(),
        source,
        region,
        shard: job.shard.clone(),
        step: if job.cancel_requested && job.is_running() {
            format!("{} (cancelling)", job.step)
        } else {
            job.step.clone()
        },
        done_units: job.done_units,
        total_units: job.total_units,
        units: match job.spec {
            JobSpec::Restore(_) => "records",
            JobSpec::Backup(_) => "steps",
            JobSpec::Migrate(_) => "changes",
            JobSpec::Rebuild(_) => "shards",
        }
        .into(),
        created_unix_ms: job.created_unix_ms,
        updated_unix_ms: job.updated_unix_ms,
        message: job.message.clone(),
        requested_by: job.requested_by.clone(),
        attempts: job.attempts,
        digest: job.digest.clone(),
        change_seq: job.change_seq,
        migration,
        rebuild,
    }
}

/// Creates `namespace` on `shard` (an existing one is fine: a retried placement).
pub(crate) async fn create_on_shard(
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
                RouteKey::Access => update.access_policy = state.access.encode(),
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
    let (version, routes, shards, access) = node.with_state(|state| {
        (
            state.counters.routing_version,
            state
                .namespaces
                .values()
                .map(|ns| pushed_route(state.route_of(ns)))
                .collect::<Vec<_>>(),
            state.shards.values().map(shard_info).collect::<Vec<_>>(),
            state.access.encode(),
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
    updates[0].access_policy = access;
    if let Some(last) = updates.last_mut() {
        last.more = false;
    }
    updates
}

/// A route as pushed: members travel once per shard, not once per route.
fn pushed_route(route: crate::model::Route) -> pb::Route {
    let standbys = standby_routes(&route);
    pb::Route {
        namespace: route.namespace,
        shard: route.shard,
        region: route.region,
        epoch: route.epoch,
        members: Vec::new(),
        standbys,
        jurisdictions: route.jurisdictions.into_iter().collect(),
        active_active: route.active_active,
        home_jurisdictions: route.home_jurisdictions.into_iter().collect(),
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
        let requester = self.authorize(
            &request,
            "Control.PutRegion",
            Permission::Admin,
            Target::Cluster,
        )?;
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
        request: Request<pb::ListRegionsRequest>,
    ) -> Result<Response<pb::ListRegionsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListRegions",
            Permission::View,
            Target::Cluster,
        )?;
        self.node.read_barrier().await?;
        let regions = self
            .node
            .with_state(|s| s.regions.values().map(region_info).collect());
        Ok(Response::new(pb::ListRegionsResponse { regions }))
    }

    async fn put_location(
        &self,
        request: Request<pb::PutLocationRequest>,
    ) -> Result<Response<pb::PutLocationResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.PutLocation",
            Permission::Admin,
            Target::Cluster,
        )?;
        let info = request
            .into_inner()
            .location
            .ok_or_else(|| ControlError::Invalid("location is required".into()))?;
        // The URL's scheme and path are checked here (what this build can
        // open); the rules that need the cluster's state, in the state machine.
        meridian_dr::location::check(&info.url)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let command = ControlCommand::PutLocation {
            location: crate::model::BackupLocation {
                name: info.name,
                url: info.url,
                region: info.region,
                jurisdictions: info.jurisdictions.into_iter().collect(),
            },
            requester,
        };
        match self.node.propose(command).await? {
            ControlResult::LocationStored(location) => Ok(Response::new(pb::PutLocationResponse {
                location: Some(location_info(&location)),
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let namespace = request.get_ref().namespace.clone();
        let requester = self.authorize(
            &request,
            "Control.Snapshot",
            Permission::Admin,
            Target::Namespace(&namespace),
        )?;
        let asked = request.into_inner();
        let location_name = asked.location;
        let record = crate::backups::take(
            &self.node,
            &namespace,
            &location_name,
            asked.incremental,
            requester,
        )
        .await?;
        Ok(Response::new(pb::SnapshotResponse {
            backup: Some(backup_info(&record)),
        }))
    }

    async fn validate_backup(
        &self,
        request: Request<pb::ValidateCatalogBackupRequest>,
    ) -> Result<Response<pb::ValidateCatalogBackupResponse>, Status> {
        let backup_id = request.get_ref().backup_id.clone();
        self.node.read_barrier().await?;
        let (record, location, shard) = self.node.with_state(|s| {
            let record = s.backups.get(&backup_id).cloned();
            let location = record
                .as_ref()
                .and_then(|r| s.locations.get(&r.location).cloned());
            let shard = record.as_ref().and_then(|r| {
                s.namespaces
                    .get(&r.namespace)
                    .and_then(|ns| s.shards.get(&ns.shard))
                    .or_else(|| s.shards.get(&r.shard))
                    .cloned()
            });
            (record, location, shard)
        });
        let Some(record) = record else {
            return Err(Status::not_found(format!(
                "no backup {backup_id:?} in the catalog (meridian dr list)"
            )));
        };
        let requester = self.authorize(
            &request,
            "Control.ValidateBackup",
            Permission::Admin,
            Target::Namespace(&record.namespace),
        )?;
        let (Some(location), Some(shard)) = (location, shard) else {
            return Err(Status::unavailable(format!(
                "backup {backup_id}: its location or a shard to read it from is not known"
            )));
        };
        let client = shard_admin_client(&shard, &self.node.dialer)?;
        let node_request = meridian_proto::v1::ValidateBackupRequest {
            namespace: record.namespace.clone(),
            backup_id: backup_id.clone(),
            location_url: location.url.clone(),
        };
        let mut validation = None;
        let mut last_error = None;
        for member in shard.members.values() {
            match client
                .validate_backup_on(&member.address, node_request.clone())
                .await
            {
                Ok(found) => {
                    validation = Some(found);
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some(validation) = validation else {
            return Err(Status::unavailable(format!(
                "no member of shard {} could read backup {backup_id}: {}",
                shard.id,
                last_error.map(|e| e.to_string()).unwrap_or_default()
            )));
        };
        let mut record = record;
        if record.verified != validation.ok {
            // The catalog says what the last check found.
            record.verified = validation.ok;
            self.node
                .propose(ControlCommand::CatalogBackup {
                    backup: record.clone(),
                    requester,
                })
                .await?;
        }
        Ok(Response::new(pb::ValidateCatalogBackupResponse {
            backup: Some(backup_info(&record)),
            validation: Some(validation),
        }))
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::RestoreBackupResponse>, Status> {
        let backup_id = request.get_ref().backup_id.clone();
        self.node.read_barrier().await?;
        let Some(record) = self.node.with_state(|s| s.backups.get(&backup_id).cloned()) else {
            return Err(Status::not_found(format!(
                "no backup {backup_id:?} in the catalog (meridian dr list)"
            )));
        };
        // Reading the backup needs admin on its namespace; making the
        // target, admin on the target.
        let requester = self.authorize(
            &request,
            "Control.Restore",
            Permission::Admin,
            Target::Namespace(&record.namespace),
        )?;
        let as_name = request.get_ref().as_name.clone();
        if !as_name.is_empty() && as_name != record.namespace {
            self.authorize(
                &request,
                "Control.Restore",
                Permission::Admin,
                Target::Namespace(&as_name),
            )?;
        }
        let asked = request.into_inner();
        let at_seq = match (asked.at_seq, asked.at_unix_ms) {
            (Some(_), Some(_)) => {
                return Err(ControlError::Invalid(
                    "give a change sequence or a time to restore to, not both".into(),
                )
                .into());
            }
            (seq, None) => seq,
            (None, Some(at_ms)) => Some(self.seq_at_time(&record, at_ms).await?),
        };
        let ask = crate::dr::RestoreAsk {
            as_name: asked.as_name,
            region: asked.region,
            at_seq,
        };
        let spec = self
            .node
            .with_state(|s| {
                crate::dr::plan_restore(
                    &record,
                    &s.backups,
                    s.namespaces.get(&record.namespace),
                    &s.regions,
                    &s.locations,
                    &ask,
                )
            })
            .map_err(Status::failed_precondition)?;
        match self
            .node
            .propose(ControlCommand::StartJob {
                spec: crate::model::JobSpec::Restore(spec),
                requester,
            })
            .await?
        {
            ControlResult::Job(job) => Ok(Response::new(pb::RestoreBackupResponse {
                job: Some(job_info(&job)),
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn migrate_namespace(
        &self,
        request: Request<pb::MigrateNamespaceRequest>,
    ) -> Result<Response<pb::MigrateNamespaceResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.MigrateNamespace",
            Permission::Admin,
            Target::Namespace(&request.get_ref().namespace),
        )?;
        let asked = request.into_inner();
        let or = |value: u64, default: u64| if value == 0 { default } else { value };
        let migration = crate::model::Migration {
            namespace: asked.namespace,
            to_region: asked.to_region,
            max_blocked_ms: or(asked.max_blocked_ms, DEFAULT_MAX_BLOCKED_MS),
            keep_source_ms: asked.keep_source_ms.unwrap_or(DEFAULT_KEEP_SOURCE_MS),
            catch_up_timeout_ms: or(asked.catch_up_timeout_ms, DEFAULT_CATCH_UP_TIMEOUT_MS),
            // Filled in by the state machine from the namespace as it is.
            source_shard: String::new(),
            source_region: String::new(),
            original_mode: crate::model::NamespaceMode::RegionLocked,
            target_shard: String::new(),
            added_target: false,
            cutover: None,
            source_released: false,
        };
        self.node.read_barrier().await?;
        match self
            .node
            .propose(ControlCommand::StartJob {
                spec: crate::model::JobSpec::Migrate(migration),
                requester,
            })
            .await?
        {
            ControlResult::Job(job) => Ok(Response::new(pb::MigrateNamespaceResponse {
                job: Some(job_info(&job)),
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn set_schedule(
        &self,
        request: Request<pb::SetScheduleRequest>,
    ) -> Result<Response<pb::SetScheduleResponse>, Status> {
        let asked = request.get_ref().schedule.clone().unwrap_or_default();
        let requester = self.authorize(
            &request,
            "Control.SetSchedule",
            Permission::Admin,
            Target::Namespace(&asked.namespace),
        )?;
        let schedule = crate::model::BackupSchedule {
            namespace: asked.namespace.clone(),
            location: asked.location,
            every_ms: asked.every_ms,
            keep_ms: asked.keep_ms,
            incrementals_per_full: asked.incrementals_per_full,
            created_by: requester.actor.clone(),
            created_unix_ms: requester.at_unix_ms,
        };
        self.node.read_barrier().await?;
        self.node
            .propose(ControlCommand::PutSchedule {
                schedule,
                requester,
            })
            .await?;
        let info = self.node.with_state(|s| {
            s.schedules
                .get(&asked.namespace)
                .map(|schedule| schedule_info(s, schedule))
        });
        Ok(Response::new(pb::SetScheduleResponse { schedule: info }))
    }

    async fn remove_schedule(
        &self,
        request: Request<pb::RemoveScheduleRequest>,
    ) -> Result<Response<pb::RemoveScheduleResponse>, Status> {
        let namespace = request.get_ref().namespace.clone();
        let requester = self.authorize(
            &request,
            "Control.RemoveSchedule",
            Permission::Admin,
            Target::Namespace(&namespace),
        )?;
        self.node
            .propose(ControlCommand::RemoveSchedule {
                namespace,
                requester,
            })
            .await?;
        Ok(Response::new(pb::RemoveScheduleResponse {}))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListSchedules",
            Permission::View,
            Target::Cluster,
        )?;
        self.node.read_barrier().await?;
        let schedules = self.node.with_state(|s| {
            s.schedules
                .values()
                .map(|schedule| schedule_info(s, schedule))
                .collect()
        });
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListJobs",
            Permission::View,
            Target::Cluster,
        )?;
        self.node.read_barrier().await?;
        let jobs = self
            .node
            .with_state(|s| s.jobs.values().map(job_info).collect());
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let id = request.get_ref().id;
        self.node.read_barrier().await?;
        let Some(job) = self.node.with_state(|s| s.jobs.get(&id).cloned()) else {
            return Err(ControlError::Rejected(ControlRejection::JobNotFound(id)).into());
        };
        self.authorize(
            &request,
            "Control.GetJob",
            Permission::View,
            Target::Namespace(job.spec.namespace()),
        )?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_info(&job)),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = request.get_ref().id;
        self.node.read_barrier().await?;
        let Some(job) = self.node.with_state(|s| s.jobs.get(&id).cloned()) else {
            return Err(ControlError::Rejected(ControlRejection::JobNotFound(id)).into());
        };
        let requester = self.authorize(
            &request,
            "Control.CancelJob",
            Permission::Admin,
            Target::Namespace(job.spec.namespace()),
        )?;
        match self
            .node
            .propose(ControlCommand::CancelJob { id, requester })
            .await?
        {
            ControlResult::Job(job) => Ok(Response::new(pb::CancelJobResponse {
                job: Some(job_info(&job)),
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let namespace = request.get_ref().namespace.clone();
        let target = if namespace.is_empty() {
            Target::Cluster
        } else {
            Target::Namespace(&namespace)
        };
        self.authorize(&request, "Control.ListBackups", Permission::View, target)?;
        self.node.read_barrier().await?;
        let backups = self.node.with_state(|s| {
            s.backups
                .values()
                .filter(|b| namespace.is_empty() || b.namespace == namespace)
                .map(backup_info)
                .collect()
        });
        Ok(Response::new(pb::ListBackupsResponse { backups }))
    }

    async fn backup_control_plane(
        &self,
        request: Request<pb::BackupControlPlaneRequest>,
    ) -> Result<Response<pb::ControlBackupInfo>, Status> {
        let requester = self.authorize(
            &request,
            "Control.BackupControlPlane",
            Permission::Admin,
            Target::Cluster,
        )?;
        let request = request.into_inner();
        let info = crate::control_backup::backup(&self.node, &request.location, requester).await?;
        Ok(Response::new(info))
    }

    async fn list_control_backups(
        &self,
        request: Request<pb::ListControlBackupsRequest>,
    ) -> Result<Response<pb::ListControlBackupsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListControlBackups",
            Permission::Admin,
            Target::Cluster,
        )?;
        let request = request.into_inner();
        let backups =
            crate::control_backup::list(&self.node, &request.location, &request.url).await?;
        let schedule = self.node.with_state(|s| {
            s.control_schedule
                .as_ref()
                .map(crate::control_backup::schedule_info)
        });
        Ok(Response::new(pb::ListControlBackupsResponse {
            backups,
            schedule,
        }))
    }

    async fn set_control_backup_schedule(
        &self,
        request: Request<pb::SetControlBackupScheduleRequest>,
    ) -> Result<Response<pb::SetControlBackupScheduleResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.SetControlBackupSchedule",
            Permission::Admin,
            Target::Cluster,
        )?;
        let schedule = request
            .into_inner()
            .schedule
            .map(|s| crate::model::ControlBackupSchedule {
                location: s.location,
                every_ms: s.every_ms,
                keep_ms: s.keep_ms,
                created_by: requester.actor.clone(),
                created_unix_ms: requester.at_unix_ms,
                last_backup_id: String::new(),
                last_backup_unix_ms: 0,
            });
        self.node
            .propose(ControlCommand::SetControlBackupSchedule {
                schedule,
                requester,
            })
            .await?;
        let schedule = self.node.with_state(|s| {
            s.control_schedule
                .as_ref()
                .map(crate::control_backup::schedule_info)
        });
        Ok(Response::new(pb::SetControlBackupScheduleResponse {
            schedule,
        }))
    }

    async fn restore_control_plane(
        &self,
        request: Request<pb::RestoreControlPlaneRequest>,
    ) -> Result<Response<pb::RestoreControlPlaneResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.RestoreControlPlane",
            Permission::Admin,
            Target::Cluster,
        )?;
        let request = request.into_inner();
        let job = crate::control_backup::restore(
            &self.node,
            &request.url,
            &request.backup_id,
            request.lost_shards,
            requester,
        )
        .await?;
        Ok(Response::new(pb::RestoreControlPlaneResponse {
            job: Some(job),
        }))
    }

    async fn list_locations(
        &self,
        request: Request<pb::ListLocationsRequest>,
    ) -> Result<Response<pb::ListLocationsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListLocations",
            Permission::View,
            Target::Cluster,
        )?;
        self.node.read_barrier().await?;
        let locations = self
            .node
            .with_state(|s| s.locations.values().map(location_info).collect());
        Ok(Response::new(pb::ListLocationsResponse { locations }))
    }

    async fn register_member(
        &self,
        request: Request<pb::RegisterMemberRequest>,
    ) -> Result<Response<pb::RegisterMemberResponse>, Status> {
        self.node.require_leader()?;
        let caller = meridian_access::caller::of_grpc(&request);
        let requester = Requester {
            actor: caller.name(),
            at_unix_ms: now_unix_ms(),
        };
        let request = request.into_inner();
        // A member's region is the one its certificate names.
        if let Err(denied) = crate::authz::may_register(&caller, &request.region) {
            let target = format!("shard {} in region {}", request.shard, request.region);
            let refusal = meridian_access::Refusal::Denied {
                who: denied.identity.clone(),
                action: denied.action.clone(),
                lacks: denied.lacks.clone(),
            };
            return Err(self.refuse(&caller, "Control.RegisterMember", &target, &refusal));
        }
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
        request: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListShards",
            Permission::View,
            Target::Cluster,
        )?;
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
        let name = request
            .get_ref()
            .placement
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let requester = self.authorize(
            &request,
            "Control.PlaceNamespace",
            Permission::Admin,
            Target::Namespace(&name),
        )?;
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
        let requester = self.authorize(
            &request,
            "Control.RemoveNamespace",
            Permission::Admin,
            Target::Namespace(&request.get_ref().name),
        )?;
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
        request: Request<pb::ListPlacementsRequest>,
    ) -> Result<Response<pb::ListPlacementsResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListPlacements",
            Permission::View,
            Target::Cluster,
        )?;
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
        self.authorize(
            &request,
            "Control.GetRoute",
            Permission::View,
            Target::Namespace(&request.get_ref().namespace),
        )?;
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
        let target = match request.get_ref().namespace.as_str() {
            "" => Target::Cluster,
            name => Target::Namespace(name),
        };
        self.authorize(&request, "Control.ListFailovers", Permission::View, target)?;
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
        let target = match request.get_ref().namespace.as_str() {
            "" => Target::Cluster,
            name => Target::Namespace(name),
        };
        let actor = self
            .authorize(&request, "Control.Failover", Permission::Admin, target)?
            .actor;
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
                reason: String::new(),
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
        self.authorize_here(
            &request,
            "Control.WatchRoutes",
            Permission::View,
            Target::Cluster,
        )?;
        let request = request.into_inner();
        let node = self.node.clone();
        let mut versions = node.machine.subscribe_versions();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _watching = crate::metrics::WatcherGuard::new(&node.stats);
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
        self.authorize(
            &request,
            "Control.AuditLog",
            Permission::View,
            Target::Cluster,
        )?;
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
                    target: r.target.clone(),
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
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.authorize_here(
            &request,
            "Control.ControlStatus",
            Permission::View,
            Target::Cluster,
        )?;
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

    async fn change_access(
        &self,
        request: Request<pb::ChangeAccessRequest>,
    ) -> Result<Response<pb::ChangeAccessResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.ChangeAccess",
            Permission::Admin,
            Target::Cluster,
        )?;
        let change = access_change(request.into_inner())?;
        self.node.read_barrier().await?;
        match self
            .node
            .propose(ControlCommand::Access { change, requester })
            .await?
        {
            ControlResult::AccessChanged {
                policy_version,
                routing_version,
            } => Ok(Response::new(pb::ChangeAccessResponse {
                policy_version,
                routing_version,
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn list_access(
        &self,
        request: Request<pb::ListAccessRequest>,
    ) -> Result<Response<pb::ListAccessResponse>, Status> {
        self.authorize(
            &request,
            "Control.ListAccess",
            Permission::View,
            Target::Cluster,
        )?;
        self.node.read_barrier().await?;
        let now = now_unix_ms();
        let response = self.node.with_state(|s| {
            let policy = &s.access;
            pb::ListAccessResponse {
                roles: policy
                    .role_names()
                    .into_iter()
                    .map(|name| pb::RoleInfo {
                        permissions: policy
                            .role(&name)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|p| p.name().to_string())
                            .collect(),
                        built_in: meridian_access::policy::built_in_role(&name).is_some(),
                        name,
                    })
                    .collect(),
                grants: policy.grants.iter().map(grant_info).collect(),
                tokens: policy
                    .tokens
                    .values()
                    .filter(|t| t.expires_at_ms > now)
                    .map(token_info)
                    .collect(),
                revoked: policy
                    .revoked
                    .iter()
                    .map(|(identity, r)| pb::RevokedIdentity {
                        identity: identity.clone(),
                        revoked_by: r.by.clone(),
                        at_unix_ms: r.at_ms,
                    })
                    .collect(),
                policy_version: policy.version,
            }
        });
        Ok(Response::new(response))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let requester = self.authorize(
            &request,
            "Control.CreateToken",
            Permission::Admin,
            Target::Cluster,
        )?;
        let request = request.into_inner();
        let scope = meridian_access::Scope::parse(Some(&request.scope)).map_err(access_invalid)?;
        if request.ttl_seconds == 0 || request.ttl_seconds > MAX_TOKEN_TTL_SECONDS {
            return Err(ControlError::Invalid(format!(
                "ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECONDS} (90 days)"
            ))
            .into());
        }
        let minted = meridian_access::token::mint();
        let token = meridian_access::policy::ApiToken {
            id: minted.id.clone(),
            secret_sha256: minted.secret_sha256,
            role: request.role,
            scope,
            created_by: requester.actor.clone(),
            created_at_ms: requester.at_unix_ms,
            // Bounded above, so this cannot overflow.
            expires_at_ms: requester.at_unix_ms + request.ttl_seconds * 1000,
        };
        let info = token_info(&token);
        self.node.read_barrier().await?;
        match self
            .node
            .propose(ControlCommand::Access {
                change: meridian_access::AccessChange::CreateToken(token),
                requester,
            })
            .await?
        {
            ControlResult::AccessChanged {
                routing_version, ..
            } => Ok(Response::new(pb::CreateTokenResponse {
                token: minted.token,
                info: Some(info),
                routing_version,
            })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn namespace_residency(
        &self,
        request: Request<pb::NamespaceResidencyRequest>,
    ) -> Result<Response<pb::NamespaceResidencyResponse>, Status> {
        let name = request.get_ref().namespace.clone();
        self.authorize(
            &request,
            "Control.NamespaceResidency",
            Permission::View,
            Target::Namespace(&name),
        )?;
        self.node.read_barrier().await?;
        let response = self
            .node
            .with_state(|s| crate::residency::report(s, &name))
            .ok_or_else(|| {
                ControlError::Rejected(crate::command::ControlRejection::NamespaceNotFound(
                    name.clone(),
                ))
            })?;
        let copies = response
            .copies
            .iter()
            .map(|copy| pb::ResidencyCopy {
                shard: copy.shard.clone(),
                region: copy.region.clone(),
                region_jurisdictions: copy.region_jurisdictions.iter().cloned().collect(),
                role: copy.role.to_string(),
                members: self.node.with_state(|s| members(s, &copy.shard)),
                allowed: copy.allowed,
            })
            .collect();
        let (shards, regions) = self.node.with_state(|s| {
            (
                s.shards.values().map(shard_info).collect(),
                s.regions.values().map(region_info).collect(),
            )
        });
        Ok(Response::new(pb::NamespaceResidencyResponse {
            namespace: name,
            allowed_jurisdictions: response.allowed.into_iter().collect(),
            copies,
            shards,
            regions,
        }))
    }

    async fn report_refusals(
        &self,
        request: Request<pb::ReportRefusalsRequest>,
    ) -> Result<Response<pb::ReportRefusalsResponse>, Status> {
        meridian_net::peers::check(
            &request,
            &meridian_net::peers::Peers::NodesAndGateways,
            "Control.ReportRefusals",
        )?;
        self.node.require_leader()?;
        let reporter = meridian_access::caller::of_grpc(&request).name();
        let request = request.into_inner();
        if request.refused.len() > crate::node::REFUSALS_QUEUED {
            return Err(ControlError::Invalid(format!(
                "at most {} refused calls per report",
                crate::node::REFUSALS_QUEUED
            ))
            .into());
        }
        let mut queue = self.node.refusals.lock().unwrap_or_else(|e| e.into_inner());
        for refused in request.refused {
            queue.push(RefusedCall {
                at_unix_ms: refused.at_unix_ms,
                actor: refused.actor,
                // Where it was refused is part of what happened.
                api: format!("{} (refused by {reporter})", refused.api),
                target: refused.target,
                reason: refused.reason,
            });
        }
        queue.count_dropped(request.dropped);
        Ok(Response::new(pb::ReportRefusalsResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = meridian_access::caller::of_grpc(&request);
        let grants = self.node.with_state(|s| match &caller {
            Caller::Certificate(identity) => {
                let uri = identity.uri();
                s.access.grants_of(&uri).map(grant_info).collect()
            }
            Caller::Token(presented) => s
                .access
                .tokens
                .get(&presented.id)
                .filter(|t| presented.matches(&t.secret_sha256))
                .map(|t| {
                    vec![pb::GrantInfo {
                        identity: caller.name(),
                        role: t.role.clone(),
                        scope: t.scope.spec(),
                    }]
                })
                .unwrap_or_default(),
            Caller::Plain | Caller::Unidentified(_) => Vec::new(),
        });
        match &caller {
            Caller::Unidentified(why) => Err(Status::unauthenticated(why.clone())),
            Caller::Token(_) if grants.is_empty() => Err(Status::unauthenticated(
                "unknown, revoked or expired API token",
            )),
            _ => Ok(Response::new(pb::WhoAmIResponse {
                caller: caller.name(),
                grants,
                plain_text: caller == Caller::Plain,
            })),
        }
    }
}

/// Tokens live at most this long (90 days): a forgotten token expires.
pub const MAX_TOKEN_TTL_SECONDS: u64 = 90 * 24 * 3600;

fn access_invalid(err: meridian_access::AccessError) -> ControlError {
    ControlError::Invalid(err.to_string())
}

fn grant_info(grant: &meridian_access::Grant) -> pb::GrantInfo {
    pb::GrantInfo {
        identity: grant.identity.clone(),
        role: grant.role.clone(),
        scope: grant.scope.spec(),
    }
}

fn token_info(token: &meridian_access::policy::ApiToken) -> pb::TokenInfo {
    pb::TokenInfo {
        id: token.id.clone(),
        role: token.role.clone(),
        scope: token.scope.spec(),
        created_by: token.created_by.clone(),
        created_at_unix_ms: token.created_at_ms,
        expires_at_unix_ms: token.expires_at_ms,
    }
}

fn grant_from(info: pb::GrantInfo) -> Result<meridian_access::Grant, ControlError> {
    let scope = meridian_access::Scope::parse(Some(&info.scope)).map_err(access_invalid)?;
    meridian_access::Grant::new(&info.identity, &info.role, scope).map_err(access_invalid)
}

/// The requested change, checked for shape (the state machine checks the rules).
fn access_change(
    request: pb::ChangeAccessRequest,
) -> Result<meridian_access::AccessChange, ControlError> {
    use meridian_access::AccessChange;
    use pb::change_access_request::Change;
    let change = request
        .change
        .ok_or_else(|| ControlError::Invalid("no change given".into()))?;
    Ok(match change {
        Change::PutRole(role) => AccessChange::PutRole {
            permissions: role
                .permissions
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<_, _>>()
                .map_err(access_invalid)?,
            name: role.name,
        },
        Change::DeleteRole(name) => AccessChange::DeleteRole { name },
        Change::Grant(grant) => AccessChange::Grant(grant_from(grant)?),
        Change::Revoke(grant) => AccessChange::Revoke(grant_from(grant)?),
        Change::RevokeToken(id) => AccessChange::RevokeToken { id },
        Change::RevokeIdentity(identity) => AccessChange::RevokeIdentity {
            identity: meridian_access::policy::normalize_identity(&identity)
                .map_err(access_invalid)?,
        },
        Change::RestoreIdentity(identity) => AccessChange::RestoreIdentity {
            identity: meridian_access::policy::normalize_identity(&identity)
                .map_err(access_invalid)?,
        },
    })
}
