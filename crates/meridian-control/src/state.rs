//! The control plane's state and how commands change it. Pure and deterministic:
//! the same commands in the same order give the same state on every replica.

use crate::command::{ControlCommand, ControlRejection, ControlResult, Requester};
use crate::model::{AuditRecord, Namespace, Region, Route, Shard};
use crate::placement::{self, PlacementError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Ended jobs kept (the oldest beyond this are dropped as new ones start).
pub const MAX_ENDED_JOBS: usize = 1_000;

/// A stored record that changed, for the persistence layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A region was written.
    Region(String),
    /// A shard was written.
    Shard(String),
    /// A namespace was written (or deleted, if absent now).
    Namespace(String),
    /// An audit record was appended.
    Audit(u64),
    /// A failover record was appended.
    Failover(u64),
    /// An audit record was dropped by retention.
    AuditRemoved(u64),
    /// The audit chain's anchor moved (retention).
    AuditAnchor,
    /// The routing version or audit counter moved.
    Counters,
    /// A deletion was written (or completed, if absent now).
    Deletion(String),
    /// The access policy changed.
    Access,
    /// The backup locations changed.
    Locations,
    /// A backup was added to the catalog.
    Backup(String),
    /// A job was started or changed.
    Job(u64),
    /// A backup schedule was set or removed.
    Schedule(String),
    /// A namespace's erasure records changed.
    Erasures(String),
    /// The control plane's backup schedule changed.
    ControlSchedule,
}

/// A new namespace's settings besides its placement: RPO gate, failover
/// policy, standby-loss policy.
type Settings = (
    crate::model::MaxLag,
    crate::model::FailoverOverride,
    crate::model::StandbyLossPolicy,
);

/// Counters kept next to the tables.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Routing-table version; increases with every route change.
    pub routing_version: u64,
    /// Last audit sequence number.
    pub audit_sequence: u64,
}

/// Everything the control plane knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlState {
    /// Regions by name.
    pub regions: BTreeMap<String, Region>,
    /// Shards by id.
    pub shards: BTreeMap<String, Shard>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Audit records by sequence number.
    pub audit: BTreeMap<u64, AuditRecord>,
    /// The hash the first kept audit record links to (see `crate::audit`).
    pub audit_anchor: [u8; 32],
    /// Counters.
    pub counters: Counters,
    /// Failovers by sequence number.
    pub failovers: BTreeMap<u64, crate::model::FailoverRecord>,
    /// Namespaces being deleted: shards that may still hold a copy.
    pub deletions: BTreeMap<String, crate::model::Deletion>,
    /// Roles, grants, tokens and revoked identities.
    pub access: meridian_access::AccessPolicy,
    /// Backup locations by name.
    pub locations: BTreeMap<String, crate::model::BackupLocation>,
    /// The backup catalog by id.
    pub backups: BTreeMap<String, crate::model::BackupRecord>,
    /// Long-running jobs by id.
    pub jobs: BTreeMap<u64, crate::model::Job>,
    /// Backup schedules by namespace.
    pub schedules: BTreeMap<String, crate::model::BackupSchedule>,
    /// Copies of live namespaces erased by migrations, by namespace.
    pub erasures: BTreeMap<String, Vec<crate::model::Erasure>>,
    /// The control plane's own backup schedule.
    pub control_schedule: Option<crate::model::ControlBackupSchedule>,
    /// Namespaces per shard, derived from `namespaces` (placement picks the
    /// least-loaded shard; counting on every placement would cost O(namespaces)).
    /// Kept by `apply`; rebuilt by [`ControlState::rebuild_derived`] after loading.
    shard_load: BTreeMap<String, usize>,
}

impl ControlState {
    /// Primary copies placed on each shard (what placement balances).
    pub fn shard_load(&self) -> &BTreeMap<String, usize> {
        &self.shard_load
    }

    /// The route of every namespace, in name order.
    pub fn routes(&self) -> Vec<Route> {
        self.namespaces
            .values()
            .map(|ns| self.route_of(ns))
            .collect()
    }

    /// Whether `namespace`'s copies are configured on their shards (role,
    /// epoch, write lease), so the lease grants must list it: replicated
    /// now, or touched by a migration (moved: a later epoch; or a copy added
    /// and erased again, which the erasure records show). A copy once
    /// configured stays fenced by its epoch and needs the lease like any
    /// primary, with or without standbys.
    pub fn fenced(&self, namespace: &Namespace) -> bool {
        namespace.replicated() || namespace.epoch > 1 || self.erasures.contains_key(&namespace.name)
    }

    /// The route of one namespace.
    pub fn route_of(&self, namespace: &Namespace) -> Route {
        Route {
            namespace: namespace.name.clone(),
            shard: namespace.shard.clone(),
            region: namespace.policy.home_region.clone(),
            epoch: namespace.epoch,
            standbys: namespace.standbys.clone(),
            jurisdictions: namespace.policy.allowed_jurisdictions.clone(),
            standby_jurisdictions: namespace
                .standbys
                .iter()
                .filter_map(|s| {
                    let region = self.regions.get(&s.region)?;
                    Some((s.region.clone(), region.jurisdictions.clone()))
                })
                .collect(),
            active_active: namespace.policy.mode == crate::model::NamespaceMode::ActiveActive,
            home_jurisdictions: self
                .regions
                .get(&namespace.policy.home_region)
                .map(|r| r.jurisdictions.clone())
                .unwrap_or_default(),
        }
    }

    fn audit(
        &mut self,
        requester: &Requester,
        target: &str,
        action: String,
        outcome: String,
        changes: &mut Vec<Change>,
    ) -> AuditRecord {
        self.counters.audit_sequence += 1;
        let prev_hash = self
            .audit
            .values()
            .next_back()
            .map_or(self.audit_anchor, |last| last.hash);
        let record = crate::audit::sealed(
            crate::audit::AuditFields {
                sequence: self.counters.audit_sequence,
                at_unix_ms: requester.at_unix_ms,
                actor: &requester.actor,
                target,
                action: &action,
                outcome: &outcome,
            },
            prev_hash,
        );
        self.audit.insert(record.sequence, record.clone());
        changes.push(Change::Audit(record.sequence));
        changes.push(Change::Counters);
        // Bounded: the oldest records go, their last hash becomes the anchor.
        let expired = crate::audit::expired(&self.audit, record.at_unix_ms);
        for sequence in expired {
            if let Some(dropped) = self.audit.remove(&sequence) {
                self.audit_anchor = dropped.hash;
                changes.push(Change::AuditRemoved(sequence));
                changes.push(Change::AuditAnchor);
            }
        }
        record
    }

    /// Namespaces with a copy in `region` (as primary or standby) that its
    /// jurisdictions, if changed to `region`'s, would not allow.
    fn namespaces_stranded_by(&self, region: &Region) -> Vec<String> {
        self.namespaces
            .values()
            .filter(|ns| {
                let home_here = self
                    .shards
                    .get(&ns.shard)
                    .is_some_and(|s| s.region == region.name);
                let standby_here = ns.standbys.iter().any(|s| s.region == region.name);
                (home_here || standby_here)
                    && crate::residency::check_region(
                        &ns.name,
                        &ns.policy.allowed_jurisdictions,
                        region,
                        "copy",
                    )
                    .is_err()
            })
            .map(|ns| ns.name.clone())
            .collect()
    }

    /// Recomputes what is derived from the tables; call after filling them
    /// directly (loading from storage).
    pub fn rebuild_derived(&mut self) {
        self.shard_load.clear();
        for namespace in self.namespaces.values() {
            *self.shard_load.entry(namespace.shard.clone()).or_insert(0) += 1;
        }
    }

    /// The shard a new namespace with `policy` would get now, or why it cannot be
    /// placed — the same decision `apply` makes, without changing anything.
    pub fn plan_placement(
        &self,
        name: &str,
        policy: crate::model::PlacementPolicy,
    ) -> Result<
        (
            crate::model::PlacementPolicy,
            Shard,
            Vec<crate::model::StandbyCopy>,
        ),
        ControlRejection,
    > {
        if self.namespaces.contains_key(name) {
            return Err(ControlRejection::NamespaceExists(name.to_string()));
        }
        self.check_not_being_deleted(name)?;
        let policy = placement::resolve_policy(name, policy, &self.regions)?;
        let (shard, standbys) = self.choose_shards(&policy)?;
        let shard = self
            .shards
            .get(&shard)
            .cloned()
            .ok_or(ControlRejection::Placement(
                placement::PlacementError::NoShard {
                    region: policy.home_region.clone(),
                    reason: "the chosen shard vanished".into(),
                },
            ))?;
        Ok((policy, shard, standbys))
    }

    /// The least-loaded shard of the home region and of each standby region.
    fn choose_shards(
        &self,
        policy: &crate::model::PlacementPolicy,
    ) -> Result<(String, Vec<crate::model::StandbyCopy>), ControlRejection> {
        let shard = placement::choose_shard(&policy.home_region, &self.shards, &self.shard_load)?
            .id
            .clone();
        let mut standbys = Vec::with_capacity(policy.standby_regions.len());
        for region in &policy.standby_regions {
            let standby = placement::choose_shard(region, &self.shards, &self.shard_load)?;
            standbys.push(crate::model::StandbyCopy {
                region: region.clone(),
                shard: standby.id.clone(),
            });
        }
        Ok((shard, standbys))
    }

    /// Applies one command, returning its result and the records it changed.
    pub fn apply(&mut self, command: ControlCommand) -> (ControlResult, Vec<Change>) {
        let mut changes = Vec::new();
        if let ControlCommand::RecordRefusals {
            refusals,
            dropped,
            requester,
        } = command
        {
            // One record per refused call, under the caller's name (no
            // record of the recording itself).
            for refused in refusals {
                let caller = Requester {
                    actor: refused.actor,
                    at_unix_ms: refused.at_unix_ms,
                };
                self.audit(
                    &caller,
                    &refused.target,
                    format!("call {} on {}", refused.api, refused.target),
                    format!("refused: {}", refused.reason),
                    &mut changes,
                );
            }
            if dropped > 0 {
                self.audit(
                    &requester,
                    "cluster",
                    "record refused calls".into(),
                    format!(
                        "{dropped} refused calls not recorded: more came than the audit log takes"
                    ),
                    &mut changes,
                );
            }
            return (ControlResult::Updated, changes);
        }
        if let ControlCommand::UpdateJob {
            id,
            progress,
            requester,
        } = command
        {
            // Progress only moves a bar: not audited.
            let result = match self.update_job(id, progress, requester.at_unix_ms, &mut changes) {
                Ok(job) => ControlResult::Job(job),
                Err(rejection) => {
                    let audit = self.audit(
                        &requester,
                        &format!("job {id}"),
                        format!("progress of job {id}"),
                        format!("refused: {rejection}"),
                        &mut changes,
                    );
                    ControlResult::Rejected { rejection, audit }
                }
            };
            return (result, changes);
        }
        if let ControlCommand::RestoreControlPlane {
            records,
            rebuild,
            requester,
        } = command
        {
            return self.restore_control_plane(&records, rebuild, &requester);
        }
        let (requester, target, action) = describe(&command);
        if let Some(job) = self.rebuilding()
            && !allowed_while_rebuilding(&command)
        {
            let rejection = ControlRejection::Rebuilding(job);
            let audit = self.audit(
                &requester,
                &target,
                action,
                format!("refused: {rejection}"),
                &mut changes,
            );
            return (ControlResult::Rejected { rejection, audit }, changes);
        }
        let outcome = self.apply_inner(command, &mut changes);
        let result = match outcome {
            Ok(result) => {
                self.audit(&requester, &target, action, "ok".into(), &mut changes);
                result
            }
            Err(rejection) => {
                let audit = self.audit(
                    &requester,
                    &target,
                    action,
                    format!("refused: {rejection}"),
                    &mut changes,
                );
                ControlResult::Rejected { rejection, audit }
            }
        };
        (result, changes)
    }

    fn apply_inner(
        &mut self,
        command: ControlCommand,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        match command {
            ControlCommand::PutRegion { region, .. } => {
                // Changing a region's jurisdictions must not leave a copy of
                // any namespace outside the jurisdictions it allows: that
                // would make a residency violation out of a rename.
                if self
                    .regions
                    .get(&region.name)
                    .is_some_and(|r| r.jurisdictions != region.jurisdictions)
                {
                    let stranded = self.namespaces_stranded_by(&region);
                    if !stranded.is_empty() {
                        return Err(ControlRejection::RegionInUse {
                            region: region.name,
                            jurisdictions: region.jurisdictions.into_iter().collect(),
                            namespaces: stranded,
                        });
                    }
                }
                changes.push(Change::Region(region.name.clone()));
                self.regions.insert(region.name.clone(), region);
                Ok(ControlResult::RegionStored)
            }
            ControlCommand::RegisterMember {
                shard,
                region,
                member,
                ..
            } => {
                if !self.regions.contains_key(&region) {
                    return Err(ControlRejection::UnknownRegion(region));
                }
                let entry = self.shards.entry(shard.clone()).or_insert_with(|| Shard {
                    id: shard.clone(),
                    region: region.clone(),
                    members: BTreeMap::new(),
                });
                if entry.region != region {
                    return Err(ControlRejection::ShardRegionMismatch {
                        shard,
                        existing: entry.region.clone(),
                        requested: region,
                    });
                }
                // A member cannot move itself: an address change would let
                // whoever holds a node certificate of the region take over
                // another node's place.
                if let Some(registered) = entry.members.get(&member.node_id)
                    && registered.address != member.address
                {
                    return Err(ControlRejection::MemberMoved {
                        shard,
                        node_id: member.node_id,
                        registered: registered.address.clone(),
                        requested: member.address,
                    });
                }
                // Gateways dial members from the routing table, so a new
                // member is a routing change; a re-registration is not.
                let moved = !entry.members.contains_key(&member.node_id);
                entry.members.insert(member.node_id, member);
                changes.push(Change::Shard(shard));
                if moved {
                    self.counters.routing_version += 1;
                    changes.push(Change::Counters);
                }
                Ok(ControlResult::MemberRegistered)
            }
            ControlCommand::CreateNamespace {
                name,
                policy,
                shard,
                ..
            } => {
                let settings = (Default::default(), Default::default(), Default::default());
                self.place(name, policy, shard.map(|s| (s, None)), settings, changes)
            }
            ControlCommand::PlaceNamespace {
                name,
                policy,
                shard,
                max_lag,
                failover,
                ..
            } => self.place(
                name,
                policy,
                shard.map(|s| (s, None)),
                (max_lag, failover, Default::default()),
                changes,
            ),
            ControlCommand::PlaceNamespaceOn {
                name,
                policy,
                shard,
                standbys,
                max_lag,
                failover,
                on_standby_loss,
                ..
            } => self.place(
                name,
                policy,
                Some((shard, Some(standbys))),
                (max_lag, failover, on_standby_loss),
                changes,
            ),
            ControlCommand::SetSyncDegraded {
                namespace,
                degraded,
                cause,
                requester,
            } => self.set_sync_degraded(namespace, degraded, cause, requester, changes),
            ControlCommand::Failover(step) => {
                self.fail_over(step, crate::model::LossWindow::default(), changes)
            }
            ControlCommand::FailoverBounded(step, window) => self.fail_over(step, window, changes),
            ControlCommand::SetFailoverPolicy {
                namespace, policy, ..
            } => self.update_namespace(namespace, changes, |entry| entry.failover = policy),
            ControlCommand::SetMaxLag {
                namespace, max_lag, ..
            } => self.update_namespace(namespace, changes, |entry| entry.max_lag = max_lag),
            ControlCommand::DeleteNamespace { name, requester } => {
                let Some(removed) = self.namespaces.remove(&name) else {
                    // Asking again finishes a deletion under way.
                    if self.deletions.contains_key(&name) {
                        return Ok(ControlResult::NamespaceDeleted {
                            routing_version: self.counters.routing_version,
                        });
                    }
                    return Err(ControlRejection::NamespaceNotFound(name));
                };
                if let Some(load) = self.shard_load.get_mut(&removed.shard) {
                    *load = load.saturating_sub(1);
                }
                // Every shard that may hold a copy: the primary, the standbys
                // (former primaries among them, with their lost writes).
                let shards = std::iter::once(removed.shard.clone())
                    .chain(removed.standbys.iter().map(|s| s.shard.clone()))
                    .chain(
                        self.failovers
                            .values()
                            .filter(|f| f.namespace == name)
                            .flat_map(|f| [f.from_shard.clone(), f.to_shard.clone()]),
                    )
                    .collect::<Vec<String>>();
                // A copy a migration is still erasing stays on the list.
                self.record_deletion(&name, shards, requester.at_unix_ms);
                self.erasures.remove(&name);
                changes.push(Change::Erasures(name.clone()));
                self.counters.routing_version += 1;
                changes.push(Change::Namespace(name.clone()));
                changes.push(Change::Deletion(name));
                changes.push(Change::Counters);
                Ok(ControlResult::NamespaceDeleted {
                    routing_version: self.counters.routing_version,
                })
            }
            ControlCommand::ConfirmTakeover {
                namespace,
                epoch,
                takeover,
                ..
            } => {
                // Only the first report counts: the position a primary took
                // over at never changes.
                let record = self
                    .failovers
                    .values_mut()
                    .rev()
                    .find(|f| f.namespace == namespace && f.epoch == epoch && f.is_move());
                match record {
                    Some(record) if record.takeover.is_none() => {
                        record.takeover = Some(takeover);
                        changes.push(Change::Failover(record.id));
                    }
                    Some(_) => {}
                    None => return Err(ControlRejection::NamespaceNotFound(namespace)),
                }
                Ok(ControlResult::Updated)
            }
            ControlCommand::Access { change, requester } => {
                self.access
                    .apply_by(&change, &requester.actor, requester.at_unix_ms)?;
                // Gateways and nodes get the policy with the routing push.
                self.counters.routing_version += 1;
                changes.push(Change::Access);
                changes.push(Change::Counters);
                Ok(ControlResult::AccessChanged {
                    policy_version: self.access.version,
                    routing_version: self.counters.routing_version,
                })
            }
            ControlCommand::RecordRefusals { .. } => Ok(ControlResult::Updated),
            ControlCommand::PutLocation { location, .. } => {
                let location = crate::dr::check_location(location, &self.regions, &self.locations)?;
                if self.locations.get(&location.name) != Some(&location) {
                    self.locations
                        .insert(location.name.clone(), location.clone());
                    changes.push(Change::Locations);
                }
                Ok(ControlResult::LocationStored(location))
            }
            ControlCommand::RecordBackup { backup, .. } => {
                changes.push(Change::Backup(backup.backup_id.clone()));
                self.backups.insert(backup.backup_id.clone(), backup.into());
                Ok(ControlResult::BackupRecorded)
            }
            ControlCommand::CatalogBackup { backup, .. } => {
                changes.push(Change::Backup(backup.backup_id.clone()));
                self.backups.insert(backup.backup_id.clone(), backup);
                Ok(ControlResult::BackupRecorded)
            }
            ControlCommand::StartJob { spec, requester } => {
                self.start_job(spec, &requester, changes)
            }
            ControlCommand::UpdateJob {
                id,
                progress,
                requester,
            } => self
                .update_job(id, progress, requester.at_unix_ms, changes)
                .map(ControlResult::Job),
            ControlCommand::EndJob {
                id,
                outcome,
                requester,
            } => self.end_job(id, outcome, requester.at_unix_ms, changes),
            ControlCommand::PutSchedule { schedule, .. } => {
                let schedule =
                    crate::dr::check_schedule(schedule, &self.namespaces, &self.locations)?;
                changes.push(Change::Schedule(schedule.namespace.clone()));
                self.schedules.insert(schedule.namespace.clone(), schedule);
                Ok(ControlResult::Updated)
            }
            ControlCommand::RemoveSchedule { namespace, .. } => {
                if self.schedules.remove(&namespace).is_none() {
                    return Err(ControlRejection::NoSchedule(namespace));
                }
                changes.push(Change::Schedule(namespace));
                Ok(ControlResult::Updated)
            }
            ControlCommand::ForgetBackup { backup_id, .. } => {
                if self.backups.remove(&backup_id).is_some() {
                    changes.push(Change::Backup(backup_id));
                }
                Ok(ControlResult::Updated)
            }
            ControlCommand::CancelJob { id, requester } => {
                let job = self.running_job(id)?;
                if let crate::model::JobSpec::Rebuild(_) = job.spec {
                    // Cancelling would leave a control plane that never
                    // grants a lease; shards that cannot answer are named
                    // lost instead.
                    return Err(ControlRejection::Rebuilding(id));
                }
                job.cancel_requested = true;
                job.updated_unix_ms = requester.at_unix_ms;
                let job = job.clone();
                changes.push(Change::Job(id));
                Ok(ControlResult::Job(job))
            }
            ControlCommand::AddMigrationTarget {
                job,
                shard,
                added,
                requester,
            } => self.add_migration_target(job, shard, added, &requester, changes),
            ControlCommand::MigrationCutover {
                job,
                step,
                window,
                change_seq,
                digest,
                blocked_ms,
            } => {
                self.migration_cutover(job, step, window, (change_seq, digest, blocked_ms), changes)
            }
            ControlCommand::MigrationBlocked {
                job, blocked_ms, ..
            } => {
                let running = self.running_job(job)?;
                if let crate::model::JobSpec::Migrate(migration) = &mut running.spec
                    && let Some(cutover) = &mut migration.cutover
                {
                    cutover.blocked_ms = blocked_ms;
                }
                changes.push(Change::Job(job));
                Ok(ControlResult::Updated)
            }
            ControlCommand::DropMigrationCopy {
                job,
                shard,
                requester,
            } => self.drop_migration_copy(job, shard, &requester, changes),
            ControlCommand::AddMigrationStandby { job, shard, .. } => {
                self.add_migration_standby(job, shard, changes)
            }
            ControlCommand::NameLostShards { job, shards, .. } => {
                let running = self.running_job(job)?;
                let crate::model::JobSpec::Rebuild(rebuild) = &mut running.spec else {
                    return Err(ControlRejection::JobNotFound(job));
                };
                for shard in shards {
                    if !rebuild.lost.contains(&shard) {
                        rebuild.lost.push(shard);
                    }
                }
                let job = running.clone();
                changes.push(Change::Job(job.id));
                Ok(ControlResult::Job(job))
            }
            ControlCommand::FinishRebuild {
                job,
                adoptions,
                outcome,
                requester,
            } => self.finish_rebuild(job, adoptions, outcome, &requester, changes),
            ControlCommand::RecordControlBackup {
                backup_id,
                requester,
                ..
            } => {
                if let Some(schedule) = &mut self.control_schedule {
                    schedule.last_backup_id = backup_id;
                    schedule.last_backup_unix_ms = requester.at_unix_ms;
                    changes.push(Change::ControlSchedule);
                }
                Ok(ControlResult::Updated)
            }
            ControlCommand::SetControlBackupSchedule { schedule, .. } => {
                if let Some(schedule) = &schedule {
                    crate::control_backup::check_schedule(schedule, &self.locations)?;
                }
                // Setting it again keeps what it knows of the last backup.
                let last = self
                    .control_schedule
                    .as_ref()
                    .map(|s| (s.last_backup_id.clone(), s.last_backup_unix_ms));
                self.control_schedule = schedule.map(|mut schedule| {
                    if let Some((id, at)) = last {
                        schedule.last_backup_id = id;
                        schedule.last_backup_unix_ms = at;
                    }
                    schedule
                });
                changes.push(Change::ControlSchedule);
                Ok(ControlResult::Updated)
            }
            // Handled before (it replaces the whole state).
            ControlCommand::RestoreControlPlane { rebuild, .. } => {
                Err(ControlRejection::BadControlBackup {
                    backup: rebuild.backup_id,
                    reason: "not applied here".into(),
                })
            }
            ControlCommand::NamespaceCopyDeleted {
                name,
                shard,
                requester,
            } => {
                // A live namespace's copy (a migration's): the erasure is
                // recorded as done.
                if self.namespaces.contains_key(&name)
                    && let Some(erasures) = self.erasures.get_mut(&name)
                {
                    for erasure in erasures
                        .iter_mut()
                        .filter(|e| e.shard == shard && e.erased_at_ms == 0)
                    {
                        erasure.erased_at_ms = requester.at_unix_ms.max(1);
                    }
                    changes.push(Change::Erasures(name.clone()));
                }
                let Some(deletion) = self.deletions.get_mut(&name) else {
                    return Ok(ControlResult::CopyDeleted {
                        remaining: Vec::new(),
                    });
                };
                deletion.shards.remove(&shard);
                let remaining: Vec<String> = deletion.shards.iter().cloned().collect();
                if remaining.is_empty() {
                    self.deletions.remove(&name);
                }
                changes.push(Change::Deletion(name));
                Ok(ControlResult::CopyDeleted { remaining })
            }
        }
    }

    /// Changes one setting of an existing namespace (no route change).
    fn update_namespace(
        &mut self,
        namespace: String,
        changes: &mut Vec<Change>,
        update: impl FnOnce(&mut Namespace),
    ) -> Result<ControlResult, ControlRejection> {
        let Some(entry) = self.namespaces.get_mut(&namespace) else {
            return Err(ControlRejection::NamespaceNotFound(namespace));
        };
        update(entry);
        changes.push(Change::Namespace(namespace));
        Ok(ControlResult::Updated)
    }

    /// Applies a failover: the standby becomes the primary at a new epoch.
    fn fail_over(
        &mut self,
        step: crate::command::FailoverMove,
        window: crate::model::LossWindow,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let crate::command::FailoverMove {
            namespace,
            to_shard,
            cause,
            detected_at_ms,
            primary_seq,
            promoted_seq,
            requester,
        } = step;
        let Some(current) = self.namespaces.get(&namespace).cloned() else {
            return Err(ControlRejection::NamespaceNotFound(namespace));
        };
        let Some(target) = current
            .standbys
            .iter()
            .find(|s| s.shard == to_shard)
            .cloned()
        else {
            return Err(ControlRejection::NotAStandby {
                namespace,
                shard: to_shard,
                standbys: current
                    .standbys
                    .iter()
                    .map(|s| format!("{} ({})", s.shard, s.region))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // Residency is re-checked at every move, not trusted from placement.
        let region = self
            .regions
            .get(&target.region)
            .ok_or_else(|| ControlRejection::UnknownRegion(target.region.clone()))?;
        crate::residency::check_region(
            &namespace,
            &current.policy.allowed_jurisdictions,
            region,
            "failover target",
        )
        .map_err(|e| ControlRejection::Placement(PlacementError::Residency(e.to_string())))?;
        let mut moved = current.clone();
        let old = crate::model::StandbyCopy {
            region: current.policy.home_region.clone(),
            shard: current.shard.clone(),
        };
        moved.epoch += 1;
        moved.shard = target.shard.clone();
        moved.policy.home_region = target.region.clone();
        moved.standbys.retain(|s| s.shard != target.shard);
        moved.standbys.push(old.clone());
        moved.policy.standby_regions = moved.standbys.iter().map(|s| s.region.clone()).collect();
        if let Some(load) = self.shard_load.get_mut(&old.shard) {
            *load = load.saturating_sub(1);
        }
        *self.shard_load.entry(target.shard.clone()).or_insert(0) += 1;
        let id = self.failovers.keys().next_back().copied().unwrap_or(0) + 1;
        let record = crate::model::FailoverRecord {
            id,
            namespace: namespace.clone(),
            from_region: old.region,
            from_shard: old.shard,
            to_region: target.region,
            to_shard: target.shard,
            epoch: moved.epoch,
            cause,
            detected_at_ms,
            promoted_at_ms: requester.at_unix_ms,
            primary_seq,
            promoted_seq,
            loss_window: window,
            // Known once the new primary reports it (`ConfirmTakeover`).
            takeover: None,
        };
        self.namespaces.insert(namespace.clone(), moved);
        self.failovers.insert(id, record.clone());
        self.counters.routing_version += 1;
        changes.push(Change::Namespace(namespace));
        changes.push(Change::Failover(id));
        changes.push(Change::Counters);
        Ok(ControlResult::FailedOver {
            record,
            routing_version: self.counters.routing_version,
        })
    }

    /// Places a new namespace (residency checked, least-loaded shards) and
    /// publishes its route.
    /// Switches a sync namespace to async (or back) under its standby-loss
    /// policy, and records it in the failover history (a record whose two
    /// shards are the namespace's primary: not a move).
    fn set_sync_degraded(
        &mut self,
        namespace: String,
        degraded: bool,
        cause: String,
        requester: Requester,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let Some(entry) = self.namespaces.get_mut(&namespace) else {
            return Err(ControlRejection::NamespaceNotFound(namespace));
        };
        if !entry.wants_sync() || entry.sync_degraded == degraded {
            return Ok(ControlResult::Updated);
        }
        entry.sync_degraded = degraded;
        let region = self
            .shards
            .get(&entry.shard)
            .map(|s| s.region.clone())
            .unwrap_or_default();
        let id = self.failovers.keys().next_back().map_or(1, |last| last + 1);
        let record = crate::model::FailoverRecord {
            id,
            namespace: namespace.clone(),
            from_region: region.clone(),
            from_shard: entry.shard.clone(),
            to_region: region,
            to_shard: entry.shard.clone(),
            epoch: entry.epoch,
            cause,
            detected_at_ms: requester.at_unix_ms,
            promoted_at_ms: requester.at_unix_ms,
            primary_seq: 0,
            promoted_seq: 0,
            loss_window: Default::default(),
            takeover: None,
        };
        self.failovers.insert(id, record);
        changes.push(Change::Namespace(namespace));
        changes.push(Change::Failover(id));
        Ok(ControlResult::Updated)
    }

    /// A name whose earlier namespace still has copies somewhere cannot be
    /// placed: the new one must never adopt an old copy.
    fn check_not_being_deleted(&self, name: &str) -> Result<(), ControlRejection> {
        if let Some(job) = self
            .jobs
            .values()
            .find(|j| j.is_running() && j.spec.makes_namespace() && j.spec.namespace() == name)
        {
            return Err(ControlRejection::NameReserved {
                name: name.to_string(),
                job: job.id,
            });
        }
        match self.deletions.get(name) {
            Some(deletion) => Err(ControlRejection::BeingDeleted {
                name: name.to_string(),
                shards: deletion
                    .shards
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            None => Ok(()),
        }
    }

    /// `namespace`'s latest verified backup in `location`: the one an
    /// incremental backup continues.
    pub fn latest_backup(
        &self,
        namespace: &str,
        location: &str,
    ) -> Option<&crate::model::BackupRecord> {
        self.backups
            .values()
            .filter(|b| b.namespace == namespace && b.location == location && b.verified)
            .max_by_key(|b| (b.change_seq, b.created_unix_ms))
    }

    /// The shard a job should work on in `region`: `current` while it is
    /// still a shard of that region with members, else the least-loaded one.
    pub fn job_shard(&self, current: &str, region: &str) -> Result<Shard, ControlRejection> {
        if let Some(shard) = self.shards.get(current)
            && shard.region == region
            && !shard.members.is_empty()
        {
            return Ok(shard.clone());
        }
        Ok(placement::choose_shard(region, &self.shards, &self.shard_load)?.clone())
    }

    /// Records that `shards` may hold a copy of `name` to be deleted (added
    /// to a deletion under way, if any).
    fn record_deletion(
        &mut self,
        name: &str,
        shards: impl IntoIterator<Item = String>,
        at_unix_ms: u64,
    ) {
        self.deletions
            .entry(name.to_string())
            .or_insert_with(|| crate::model::Deletion {
                name: name.to_string(),
                shards: Default::default(),
                requested_at_ms: at_unix_ms,
            })
            .shards
            .extend(shards);
    }

    /// The running migration `id`, mutable.
    fn running_migration(
        &mut self,
        id: u64,
    ) -> Result<&mut crate::model::Migration, ControlRejection> {
        match &mut self.running_job(id)?.spec {
            crate::model::JobSpec::Migrate(migration) => Ok(migration),
            other => Err(ControlRejection::Migration {
                namespace: other.namespace().to_string(),
                reason: format!("job {id} is a {}, not a migration", other.kind()),
            }),
        }
    }

    fn add_migration_target(
        &mut self,
        job: u64,
        shard: String,
        added: bool,
        requester: &Requester,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let migration = self.running_migration(job)?.clone();
        let refuse = |reason: String| ControlRejection::Migration {
            namespace: migration.namespace.clone(),
            reason,
        };
        if migration.cutover.is_some() || !migration.target_shard.is_empty() {
            return Err(refuse("its target copy is chosen already".into()));
        }
        let Some(mut namespace) = self.namespaces.get(&migration.namespace).cloned() else {
            return Err(ControlRejection::NamespaceNotFound(migration.namespace));
        };
        if namespace.shard != migration.source_shard {
            return Err(refuse(format!(
                "its primary moved to {} meanwhile",
                namespace.shard
            )));
        }
        let target = self
            .shards
            .get(&shard)
            .ok_or_else(|| refuse(format!("unknown shard {shard}")))?;
        if target.region != migration.to_region {
            return Err(refuse(format!(
                "shard {shard} is in {}, not {}",
                target.region, migration.to_region
            )));
        }
        // Residency is checked again at the moment the copy is made.
        let region = self
            .regions
            .get(&target.region)
            .ok_or_else(|| ControlRejection::UnknownRegion(target.region.clone()))?;
        crate::residency::check_region(
            &namespace.name,
            &namespace.policy.allowed_jurisdictions,
            region,
            "migration target",
        )
        .map_err(|e| ControlRejection::Placement(PlacementError::Residency(e.to_string())))?;
        let is_standby = namespace.standbys.iter().any(|s| s.shard == shard);
        if added == is_standby {
            return Err(refuse(format!(
                "shard {shard} {} a standby of it",
                if is_standby { "is already" } else { "is not" }
            )));
        }
        if added {
            namespace.standbys.push(crate::model::StandbyCopy {
                region: target.region.clone(),
                shard: shard.clone(),
            });
            namespace.policy.standby_regions = namespace
                .standbys
                .iter()
                .map(|s| s.region.clone())
                .collect();
            namespace.policy.mode = crate::migration::mode_during(namespace.policy.mode);
            self.namespaces
                .insert(namespace.name.clone(), namespace.clone());
            self.counters.routing_version += 1;
            changes.push(Change::Namespace(namespace.name.clone()));
            changes.push(Change::Counters);
        }
        let running = self.running_job(job)?;
        if let crate::model::JobSpec::Migrate(m) = &mut running.spec {
            m.target_shard = shard.clone();
            m.added_target = added;
        }
        running.shard = shard;
        running.step = "copying".into();
        running.updated_unix_ms = requester.at_unix_ms;
        let job_record = running.clone();
        changes.push(Change::Job(job));
        Ok(ControlResult::Job(job_record))
    }

    fn migration_cutover(
        &mut self,
        job: u64,
        step: crate::command::FailoverMove,
        window: crate::model::LossWindow,
        (change_seq, digest, blocked_ms): (u64, String, u64),
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let migration = self.running_migration(job)?.clone();
        if migration.cutover.is_some()
            || step.namespace != migration.namespace
            || step.to_shard != migration.target_shard
        {
            return Err(ControlRejection::Migration {
                namespace: migration.namespace,
                reason: format!(
                    "cutover to {} does not match job {job} (target {}, cut over: {})",
                    step.to_shard,
                    migration.target_shard,
                    migration.cutover.is_some()
                ),
            });
        }
        let at_unix_ms = step.requester.at_unix_ms;
        let result = self.fail_over(step, window, changes)?;
        let ControlResult::FailedOver { record, .. } = &result else {
            return Ok(result);
        };
        let epoch = record.epoch;
        let running = self.running_job(job)?;
        if let crate::model::JobSpec::Migrate(m) = &mut running.spec {
            m.cutover = Some(crate::model::Cutover {
                at_unix_ms,
                change_seq,
                digest,
                epoch,
                blocked_ms,
            });
        }
        running.step = "cut over; keeping the source copy".into();
        running.change_seq = change_seq;
        running.done_units = change_seq;
        running.total_units = change_seq;
        running.updated_unix_ms = at_unix_ms;
        changes.push(Change::Job(job));
        Ok(result)
    }

    /// A standby for a namespace a migration moved into its only standby's
    /// region (see `migration::replacement_standby`): after the cutover,
    /// in an allowed region that is neither its home nor the one it left.
    fn add_migration_standby(
        &mut self,
        job: u64,
        shard: String,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let migration = self.running_migration(job)?.clone();
        let name = migration.namespace.clone();
        let refuse = |reason: String| ControlRejection::Migration {
            namespace: name.clone(),
            reason,
        };
        if migration.cutover.is_none() || migration.source_released {
            return Err(refuse(format!(
                "job {job} adds a standby only between its cutover and the source's release"
            )));
        }
        let Some(mut namespace) = self.namespaces.get(&name).cloned() else {
            return Err(ControlRejection::NamespaceNotFound(name));
        };
        if namespace.standbys.iter().any(|s| s.shard == shard) {
            return Ok(ControlResult::Updated);
        }
        let target = self
            .shards
            .get(&shard)
            .ok_or_else(|| refuse(format!("unknown shard {shard}")))?;
        if shard == namespace.shard
            || target.region == namespace.policy.home_region
            || target.region == migration.source_region
            || namespace.standbys.iter().any(|s| s.region == target.region)
        {
            return Err(refuse(format!(
                "shard {shard} in {} cannot hold its standby (its home, the region it left, or a region with a standby already)",
                target.region
            )));
        }
        let region = self
            .regions
            .get(&target.region)
            .ok_or_else(|| ControlRejection::UnknownRegion(target.region.clone()))?;
        crate::residency::check_region(
            &name,
            &namespace.policy.allowed_jurisdictions,
            region,
            "standby",
        )
        .map_err(|e| ControlRejection::Placement(PlacementError::Residency(e.to_string())))?;
        namespace.standbys.push(crate::model::StandbyCopy {
            region: target.region.clone(),
            shard: shard.clone(),
        });
        namespace.policy.standby_regions = namespace
            .standbys
            .iter()
            .map(|s| s.region.clone())
            .collect();
        self.namespaces.insert(name.clone(), namespace);
        self.counters.routing_version += 1;
        changes.push(Change::Namespace(name));
        changes.push(Change::Counters);
        Ok(ControlResult::Updated)
    }

    fn drop_migration_copy(
        &mut self,
        job: u64,
        shard: String,
        requester: &Requester,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let migration = self.running_migration(job)?.clone();
        let name = migration.namespace.clone();
        let refuse = |reason: String| ControlRejection::Migration {
            namespace: name.clone(),
            reason,
        };
        // Only the source after the cutover, or the added target before it.
        let allowed = match &migration.cutover {
            Some(_) => shard == migration.source_shard,
            None => migration.added_target && shard == migration.target_shard,
        };
        if !allowed {
            return Err(refuse(format!(
                "job {job} may not drop the copy on {shard} at this step"
            )));
        }
        if let Some(mut namespace) = self.namespaces.get(&name).cloned() {
            if namespace.shard == shard {
                return Err(refuse(format!("{shard} holds its primary copy")));
            }
            if namespace.standbys.iter().any(|s| s.shard == shard) {
                namespace.standbys.retain(|s| s.shard != shard);
                namespace.policy.standby_regions = namespace
                    .standbys
                    .iter()
                    .map(|s| s.region.clone())
                    .collect();
                if namespace.standbys.is_empty() {
                    namespace.policy.mode = migration.original_mode;
                }
                self.namespaces.insert(name.clone(), namespace);
                self.counters.routing_version += 1;
                changes.push(Change::Namespace(name.clone()));
                changes.push(Change::Counters);
            }
            let region = self
                .shards
                .get(&shard)
                .map(|s| s.region.clone())
                .unwrap_or_default();
            let erasures = self.erasures.entry(name.clone()).or_default();
            let under_way = erasures
                .iter()
                .any(|e| e.shard == shard && e.erased_at_ms == 0);
            if !under_way {
                erasures.push(crate::model::Erasure {
                    shard: shard.clone(),
                    region,
                    cause: format!("migration {job} to {}", migration.to_region),
                    requested_at_ms: requester.at_unix_ms,
                    erased_at_ms: 0,
                });
            }
            changes.push(Change::Erasures(name.clone()));
        }
        self.record_deletion(&name, [shard.clone()], requester.at_unix_ms);
        changes.push(Change::Deletion(name));
        let running = self.running_job(job)?;
        if let crate::model::JobSpec::Migrate(m) = &mut running.spec
            && m.cutover.is_some()
        {
            m.source_released = true;
        }
        running.step = format!("erasing the copy on {shard}");
        running.updated_unix_ms = requester.at_unix_ms;
        let job_record = running.clone();
        changes.push(Change::Job(job));
        Ok(ControlResult::Job(job_record))
    }

    /// The running rebuild's job, while a restored control plane waits
    /// for the shards' reports (no leases, no changes meanwhile).
    pub fn rebuilding(&self) -> Option<u64> {
        self.jobs
            .values()
            .find(|j| j.is_running() && matches!(j.spec, crate::model::JobSpec::Rebuild(_)))
            .map(|j| j.id)
    }

    /// Every stored record of the state, as changes (a backup, or the
    /// records a restore rewrites).
    pub fn every_record(&self) -> Vec<Change> {
        let mut changes = vec![
            Change::Counters,
            Change::AuditAnchor,
            Change::Access,
            Change::Locations,
            Change::ControlSchedule,
        ];
        changes.extend(self.regions.keys().cloned().map(Change::Region));
        changes.extend(self.shards.keys().cloned().map(Change::Shard));
        changes.extend(self.namespaces.keys().cloned().map(Change::Namespace));
        changes.extend(self.audit.keys().copied().map(Change::Audit));
        changes.extend(self.failovers.keys().copied().map(Change::Failover));
        changes.extend(self.deletions.keys().cloned().map(Change::Deletion));
        changes.extend(self.backups.keys().cloned().map(Change::Backup));
        changes.extend(self.jobs.keys().copied().map(Change::Job));
        changes.extend(self.schedules.keys().cloned().map(Change::Schedule));
        changes.extend(self.erasures.keys().cloned().map(Change::Erasures));
        changes
    }

    /// What this control plane holds that a restore would overwrite
    /// (`None`: it is new — regions from its configuration, members that
    /// registered and its first grants do not count).
    fn restore_blocker(&self) -> Option<String> {
        let counts = [
            (self.namespaces.len(), "namespaces"),
            (self.deletions.len(), "namespaces being deleted"),
            (self.locations.len(), "backup locations"),
            (self.backups.len(), "catalogued backups"),
            (self.jobs.len(), "jobs"),
            (self.schedules.len(), "backup schedules"),
            (self.failovers.len(), "failover records"),
        ];
        let held: Vec<String> = counts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        (!held.is_empty()).then(|| held.join(", "))
    }

    /// Replaces this (new) control plane's state with a backup's records in
    /// a new generation and starts the rebuild job (see `crate::rebuild`).
    fn restore_control_plane(
        &mut self,
        records: &[meridian_dr::control::ControlRecord],
        rebuild: crate::model::Rebuild,
        requester: &Requester,
    ) -> (ControlResult, Vec<Change>) {
        let mut changes = Vec::new();
        let action = format!(
            "restore the control plane from backup {} at {} ({} records)",
            rebuild.backup_id,
            rebuild.location_url,
            records.len()
        );
        let restored = match self.restored_state(records, &rebuild, requester) {
            Ok(restored) => restored,
            Err(rejection) => {
                let audit = self.audit(
                    requester,
                    "cluster",
                    action,
                    format!("refused: {rejection}"),
                    &mut changes,
                );
                return (ControlResult::Rejected { rejection, audit }, changes);
            }
        };
        // Every record of the old state and of the new one is rewritten or
        // removed, so storage holds exactly the restored state.
        let old_audit: Vec<u64> = self.audit.keys().copied().collect();
        changes.extend(self.every_record());
        *self = restored;
        changes.extend(
            old_audit
                .into_iter()
                .filter(|s| !self.audit.contains_key(s))
                .map(Change::AuditRemoved),
        );
        changes.extend(self.every_record());
        let job = self.insert_job(
            crate::model::JobSpec::Rebuild(rebuild),
            requester,
            &mut changes,
        );
        self.audit(
            requester,
            "cluster",
            action,
            format!(
                "ok: routing version {}, rebuild job {}",
                self.counters.routing_version, job.id
            ),
            &mut changes,
        );
        (ControlResult::Job(job), changes)
    }

    /// The state a restore makes of `records`: a new generation, this
    /// control plane's own regions and members kept where the backup lacks
    /// them, the backup's running jobs ended.
    fn restored_state(
        &self,
        records: &[meridian_dr::control::ControlRecord],
        rebuild: &crate::model::Rebuild,
        requester: &Requester,
    ) -> Result<ControlState, ControlRejection> {
        let bad = |reason: String| ControlRejection::BadControlBackup {
            backup: rebuild.backup_id.clone(),
            reason,
        };
        if let Some(held) = self.restore_blocker() {
            return Err(ControlRejection::NotEmpty(held));
        }
        let mut restored =
            crate::state_machine::decode_state(records).map_err(|e| bad(e.to_string()))?;
        let version = crate::rebuild::next_generation(
            restored
                .counters
                .routing_version
                .max(self.counters.routing_version),
        )
        .ok_or_else(|| bad("its routing version has no generation left".into()))?;
        restored.counters.routing_version = version;
        restored.access.version =
            crate::rebuild::next_generation(restored.access.version.max(self.access.version))
                .ok_or_else(|| bad("its access policy version has no generation left".into()))?;
        for (name, region) in &self.regions {
            restored
                .regions
                .entry(name.clone())
                .or_insert_with(|| region.clone());
        }
        for (id, shard) in &self.shards {
            let entry = restored
                .shards
                .entry(id.clone())
                .or_insert_with(|| shard.clone());
            if entry.region == shard.region {
                for (node, member) in &shard.members {
                    entry.members.entry(*node).or_insert_with(|| member.clone());
                }
            }
        }
        for job in restored.jobs.values_mut().filter(|j| j.is_running()) {
            job.state = crate::model::JobState::Failed;
            job.step = "done".into();
            job.message = format!(
                "interrupted: the control plane was restored from backup {}, taken while this job ran; start it again",
                rebuild.backup_id
            );
            job.updated_unix_ms = requester.at_unix_ms;
        }
        restored.rebuild_derived();
        Ok(restored)
    }

    /// Places the namespaces a rebuild adopts and records its outcome.
    fn finish_rebuild(
        &mut self,
        job: u64,
        adoptions: Vec<crate::model::Adoption>,
        outcome: Vec<crate::model::RebuildOutcome>,
        requester: &Requester,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        if !matches!(
            self.running_job(job)?.spec,
            crate::model::JobSpec::Rebuild(_)
        ) {
            return Err(ControlRejection::JobNotFound(job));
        }
        // Checked before anything changes: all or nothing.
        for adoption in &adoptions {
            let namespace = self
                .namespaces
                .get(&adoption.namespace)
                .ok_or_else(|| ControlRejection::NamespaceNotFound(adoption.namespace.clone()))?;
            for region in
                std::iter::once(&adoption.region).chain(adoption.standbys.iter().map(|s| &s.region))
            {
                let known = self
                    .regions
                    .get(region)
                    .ok_or_else(|| ControlRejection::UnknownRegion(region.clone()))?;
                crate::residency::check_region(
                    &adoption.namespace,
                    &namespace.policy.allowed_jurisdictions,
                    known,
                    "rebuilt copy",
                )
                .map_err(|e| {
                    ControlRejection::Placement(PlacementError::Residency(e.to_string()))
                })?;
            }
        }
        for adoption in adoptions {
            let Some(current) = self.namespaces.get(&adoption.namespace).cloned() else {
                continue;
            };
            let mut placed = current.clone();
            placed.shard = adoption.shard.clone();
            placed.policy.home_region = adoption.region.clone();
            placed.epoch = adoption.epoch;
            placed.standbys = adoption.standbys.clone();
            placed.policy.standby_regions =
                placed.standbys.iter().map(|s| s.region.clone()).collect();
            if !placed.standbys.is_empty()
                && placed.policy.mode == crate::model::NamespaceMode::RegionLocked
            {
                // Copies elsewhere that the shards still hold (a migration
                // after the backup): shipped to asynchronously until an
                // operator drops them.
                placed.policy.mode = crate::model::NamespaceMode::ActivePassive { sync: false };
            }
            let id = self.failovers.keys().next_back().map_or(1, |last| last + 1);
            let record = crate::model::FailoverRecord {
                id,
                namespace: adoption.namespace.clone(),
                from_region: current.policy.home_region.clone(),
                from_shard: current.shard.clone(),
                to_region: adoption.region.clone(),
                to_shard: adoption.shard.clone(),
                epoch: adoption.epoch,
                cause: if adoption.promoted {
                    "control-plane rebuild: promoted (the primary's shard was named lost or no copy was primary)".into()
                } else {
                    "control-plane rebuild: adopted where the shards report its newest primary"
                        .into()
                },
                detected_at_ms: requester.at_unix_ms,
                promoted_at_ms: requester.at_unix_ms,
                primary_seq: 0,
                promoted_seq: adoption.takeover.map_or(0, |t| t.seq),
                loss_window: Default::default(),
                takeover: adoption.takeover,
            };
            self.failovers.insert(id, record);
            self.namespaces.insert(adoption.namespace.clone(), placed);
            changes.push(Change::Failover(id));
            changes.push(Change::Namespace(adoption.namespace));
        }
        self.rebuild_derived();
        self.counters.routing_version += 1;
        changes.push(Change::Counters);
        let running = self.running_job(job)?;
        if let crate::model::JobSpec::Rebuild(rebuild) = &mut running.spec {
            rebuild.outcome = outcome;
        }
        changes.push(Change::Job(job));
        Ok(ControlResult::Updated)
    }

    fn running_job(&mut self, id: u64) -> Result<&mut crate::model::Job, ControlRejection> {
        let job = self
            .jobs
            .get_mut(&id)
            .ok_or(ControlRejection::JobNotFound(id))?;
        if !job.is_running() {
            return Err(ControlRejection::JobEnded {
                id,
                state: format!("{:?}", job.state).to_lowercase(),
            });
        }
        Ok(job)
    }

    fn start_job(
        &mut self,
        mut spec: crate::model::JobSpec,
        requester: &Requester,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let target = spec.namespace().to_string();
        match &spec {
            crate::model::JobSpec::Restore(restore) => {
                if self.namespaces.contains_key(&target) {
                    return Err(ControlRejection::NamespaceExists(target));
                }
                self.check_not_being_deleted(&target)?;
                // The policy must hold now (regions can change while it
                // runs; the final placement checks again).
                placement::resolve_policy(&target, restore.policy.clone(), &self.regions)?;
            }
            crate::model::JobSpec::Backup(_) => {
                if !self.namespaces.contains_key(&target) {
                    return Err(ControlRejection::NamespaceNotFound(target));
                }
            }
            crate::model::JobSpec::Rebuild(rebuild) => {
                // Only a restore starts one (RestoreControlPlane).
                return Err(ControlRejection::BadControlBackup {
                    backup: rebuild.backup_id.clone(),
                    reason: "a rebuild starts only with the restore of a control-plane backup"
                        .into(),
                });
            }
            crate::model::JobSpec::Migrate(migration) => {
                let running: Vec<&crate::model::Migration> = self
                    .jobs
                    .values()
                    .filter(|j| j.is_running())
                    .filter_map(|j| match &j.spec {
                        crate::model::JobSpec::Migrate(m) => Some(m),
                        _ => None,
                    })
                    .collect();
                let planned = crate::migration::plan(
                    migration.clone(),
                    &self.namespaces,
                    &self.regions,
                    &running,
                )?;
                spec = crate::model::JobSpec::Migrate(planned);
            }
        }
        Ok(ControlResult::Job(
            self.insert_job(spec, requester, changes),
        ))
    }

    /// Adds a running job for `spec` (checked by the caller).
    fn insert_job(
        &mut self,
        spec: crate::model::JobSpec,
        requester: &Requester,
        changes: &mut Vec<Change>,
    ) -> crate::model::Job {
        let id = self.jobs.keys().next_back().map_or(1, |last| last + 1);
        // Ended jobs are history: the oldest go beyond a bound (scheduled
        // backups add one per interval).
        let ended: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| !j.is_running())
            .map(|j| j.id)
            .collect();
        for old in ended
            .iter()
            .take(ended.len().saturating_sub(MAX_ENDED_JOBS - 1))
        {
            self.jobs.remove(old);
            changes.push(Change::Job(*old));
        }
        let job = crate::model::Job {
            id,
            spec,
            state: crate::model::JobState::Running,
            step: "starting".into(),
            shard: String::new(),
            done_units: 0,
            total_units: 0,
            created_unix_ms: requester.at_unix_ms,
            updated_unix_ms: requester.at_unix_ms,
            message: String::new(),
            requested_by: requester.actor.clone(),
            attempts: 0,
            cancel_requested: false,
            digest: String::new(),
            change_seq: 0,
        };
        self.jobs.insert(id, job.clone());
        changes.push(Change::Job(id));
        job
    }

    fn update_job(
        &mut self,
        id: u64,
        progress: crate::model::JobProgress,
        at_unix_ms: u64,
        changes: &mut Vec<Change>,
    ) -> Result<crate::model::Job, ControlRejection> {
        let job = self.running_job(id)?;
        job.step = progress.step;
        job.shard = progress.shard;
        job.done_units = progress.done_units;
        job.total_units = progress.total_units;
        job.attempts = progress.attempts;
        job.updated_unix_ms = at_unix_ms;
        let job = job.clone();
        changes.push(Change::Job(id));
        Ok(job)
    }

    fn end_job(
        &mut self,
        id: u64,
        outcome: crate::model::JobOutcome,
        at_unix_ms: u64,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        let mut job = self.running_job(id)?.clone();
        let placed = match (&job.spec, &outcome.place_on) {
            (crate::model::JobSpec::Restore(restore), Some(shard))
                if outcome.state == crate::model::JobState::Succeeded =>
            {
                // The job's reservation ends with the placement it makes.
                self.jobs.remove(&id);
                let placed = self.place(
                    restore.target.clone(),
                    restore.policy.clone(),
                    Some((shard.clone(), Some(Vec::new()))),
                    (Default::default(), Default::default(), Default::default()),
                    changes,
                );
                let original = job.clone();
                if placed.is_err() {
                    self.jobs.insert(id, original);
                }
                Some(placed?)
            }
            (_, Some(_)) => {
                return Err(ControlRejection::Placement(PlacementError::InvalidPolicy(
                    "only a restore that succeeded places a namespace".into(),
                )));
            }
            (_, None) => None,
        };
        if let Some(shard) = &outcome.leftover_on
            && outcome.state != crate::model::JobState::Succeeded
            && !self.namespaces.contains_key(job.spec.namespace())
        {
            let name = job.spec.namespace().to_string();
            self.record_deletion(&name, [shard.clone()], at_unix_ms);
            changes.push(Change::Deletion(name));
        }
        job.state = outcome.state;
        job.message = outcome.message;
        job.digest = outcome.digest;
        job.change_seq = outcome.change_seq;
        job.step = "done".into();
        job.updated_unix_ms = at_unix_ms;
        if let Some(shard) = outcome.place_on {
            job.shard = shard;
        }
        self.jobs.insert(id, job.clone());
        changes.push(Change::Job(id));
        Ok(placed.unwrap_or(ControlResult::Job(job)))
    }

    fn mismatch(&self, shard: &str, region: &str) -> ControlRejection {
        ControlRejection::ShardRegionMismatch {
            shard: shard.to_string(),
            existing: self
                .shards
                .get(shard)
                .map_or_else(|| "(no such shard)".to_string(), |s| s.region.clone()),
            requested: region.to_string(),
        }
    }

    /// Places `name`: on the shards the leader created its copies on
    /// (`created`: home shard, and standby shards when known), checked to be
    /// in the right regions, or on the least-loaded ones.
    fn place(
        &mut self,
        name: String,
        policy: crate::model::PlacementPolicy,
        created: Option<(String, Option<Vec<crate::model::StandbyCopy>>)>,
        (max_lag, failover, on_standby_loss): Settings,
        changes: &mut Vec<Change>,
    ) -> Result<ControlResult, ControlRejection> {
        if self.namespaces.contains_key(&name) {
            return Err(ControlRejection::NamespaceExists(name));
        }
        self.check_not_being_deleted(&name)?;
        let policy = placement::resolve_policy(&name, policy, &self.regions)?;
        let (chosen_shard, chosen_standbys) = self.choose_shards(&policy)?;
        let in_region =
            |shard: &str, region: &str| self.shards.get(shard).is_some_and(|s| s.region == region);
        let (shard, standbys) = match created {
            None => (chosen_shard, chosen_standbys),
            Some((shard, standbys)) => {
                if !in_region(&shard, &policy.home_region) {
                    return Err(self.mismatch(&shard, &policy.home_region));
                }
                let standbys = standbys.unwrap_or(chosen_standbys);
                let regions: Vec<&String> = standbys.iter().map(|s| &s.region).collect();
                if regions != policy.standby_regions.iter().collect::<Vec<_>>() {
                    return Err(ControlRejection::Placement(
                        placement::PlacementError::InvalidPolicy(format!(
                            "standby copies {regions:?} do not match the standby regions {:?}",
                            policy.standby_regions
                        )),
                    ));
                }
                if let Some(bad) = standbys.iter().find(|s| !in_region(&s.shard, &s.region)) {
                    return Err(self.mismatch(&bad.shard, &bad.region));
                }
                (shard, standbys)
            }
        };
        *self.shard_load.entry(shard.clone()).or_insert(0) += 1;
        let namespace = Namespace {
            name: name.clone(),
            policy,
            shard,
            epoch: 1,
            standbys,
            max_lag,
            failover,
            on_standby_loss,
            sync_degraded: false,
        };
        self.counters.routing_version += 1;
        self.namespaces.insert(name.clone(), namespace.clone());
        changes.push(Change::Namespace(name));
        changes.push(Change::Counters);
        Ok(ControlResult::NamespaceCreated {
            namespace,
            routing_version: self.counters.routing_version,
        })
    }
}

/// How a catalogued backup reads in the audit log (either format).
fn describe_backup(
    requester: &Requester,
    backup: &crate::model::BackupRecord,
) -> (Requester, String, String) {
    (
        requester.clone(),
        format!("namespace {}", backup.namespace),
        format!(
            "backup {} of namespace {} at change {} to location {} ({} keys, {} bytes, verified {})",
            backup.backup_id,
            backup.namespace,
            backup.change_seq,
            backup.location,
            backup.key_count,
            backup.stored_bytes,
            backup.verified
        ),
    )
}

/// Whether `command` may run while a rebuild waits for the shards: what
/// registers members and regions, finishes deletions and drives the
/// rebuild itself. Everything that places, moves or changes namespaces
/// waits.
fn allowed_while_rebuilding(command: &ControlCommand) -> bool {
    matches!(
        command,
        ControlCommand::RegisterMember { .. }
            | ControlCommand::PutRegion { .. }
            | ControlCommand::NamespaceCopyDeleted { .. }
            | ControlCommand::EndJob { .. }
            | ControlCommand::CancelJob { .. }
            | ControlCommand::NameLostShards { .. }
            | ControlCommand::FinishRebuild { .. }
            | ControlCommand::RecordControlBackup { .. }
            | ControlCommand::SetControlBackupSchedule { .. }
    )
}

/// The requester and a one-line description of a command, for the audit log.
fn describe(command: &ControlCommand) -> (Requester, String, String) {
    match command {
        ControlCommand::PutRegion { region, requester } => (
            requester.clone(),
            format!("region {}", region.name),
            format!("put region {} {:?}", region.name, region.jurisdictions),
        ),
        ControlCommand::RegisterMember {
            shard,
            member,
            requester,
            ..
        } => (
            requester.clone(),
            format!("shard {shard}"),
            format!(
                "register node {} of shard {shard} at {}",
                member.node_id, member.address
            ),
        ),
        ControlCommand::CreateNamespace {
            name,
            policy,
            requester,
            ..
        }
        | ControlCommand::PlaceNamespace {
            name,
            policy,
            requester,
            ..
        }
        | ControlCommand::PlaceNamespaceOn {
            name,
            policy,
            requester,
            ..
        } => (
            requester.clone(),
            format!("namespace {name}"),
            format!(
                "create namespace {name} home={} mode={:?} standbys={:?} jurisdictions={:?}",
                policy.home_region,
                policy.mode,
                policy.standby_regions,
                policy.allowed_jurisdictions
            ),
        ),
        ControlCommand::Failover(step) | ControlCommand::FailoverBounded(step, _) => (
            step.requester.clone(),
            format!("namespace {}", step.namespace),
            format!(
                "failover namespace {} to shard {}: {}",
                step.namespace, step.to_shard, step.cause
            ),
        ),
        ControlCommand::SetFailoverPolicy {
            namespace,
            policy,
            requester,
        } => (
            requester.clone(),
            format!("namespace {namespace}"),
            format!("set failover policy of {namespace}: {policy:?}"),
        ),
        ControlCommand::SetMaxLag {
            namespace,
            max_lag,
            requester,
        } => (
            requester.clone(),
            format!("namespace {namespace}"),
            format!(
                "set max_lag of {namespace}: {} changes, {} ms",
                max_lag.entries, max_lag.ms
            ),
        ),
        ControlCommand::DeleteNamespace { name, requester } => (
            requester.clone(),
            format!("namespace {name}"),
            format!("delete namespace {name}"),
        ),
        ControlCommand::SetSyncDegraded {
            namespace,
            degraded,
            cause,
            requester,
        } => (
            requester.clone(),
            format!("namespace {namespace}"),
            format!(
                "namespace {namespace}: {} ({cause})",
                if *degraded {
                    "sync switched to async by its standby-loss policy"
                } else {
                    "sync restored"
                }
            ),
        ),
        ControlCommand::NamespaceCopyDeleted {
            name,
            shard,
            requester,
        } => (
            requester.clone(),
            format!("namespace {name}"),
            format!("copy of deleted namespace {name} removed from shard {shard}"),
        ),
        ControlCommand::Access { change, requester } => {
            (requester.clone(), change.target(), change.describe())
        }
        ControlCommand::RecordRefusals { requester, .. } => (
            requester.clone(),
            "cluster".into(),
            "record refused calls".into(),
        ),
        ControlCommand::RecordBackup { backup, requester } => {
            describe_backup(requester, &backup.clone().into())
        }
        ControlCommand::CatalogBackup { backup, requester } => describe_backup(requester, backup),
        ControlCommand::StartJob { spec, requester } => (
            requester.clone(),
            format!("namespace {}", spec.namespace()),
            match spec {
                crate::model::JobSpec::Restore(r) => format!(
                    "start restore of backup {} (namespace {}) into namespace {} in region {} at change {}",
                    r.backup_id, r.source_namespace, r.target, r.policy.home_region, r.at_seq
                ),
                crate::model::JobSpec::Backup(b) => format!(
                    "start scheduled backup of namespace {} to {}",
                    b.namespace, b.location
                ),
                crate::model::JobSpec::Migrate(m) => format!(
                    "start migration of namespace {} to region {} (max blocked {} ms, source kept {} ms)",
                    m.namespace, m.to_region, m.max_blocked_ms, m.keep_source_ms
                ),
                crate::model::JobSpec::Rebuild(r) => {
                    format!("start the rebuild after restoring backup {}", r.backup_id)
                }
            },
        ),
        ControlCommand::UpdateJob { id, requester, .. } => (
            requester.clone(),
            format!("job {id}"),
            format!("progress of job {id}"),
        ),
        ControlCommand::EndJob {
            id,
            outcome,
            requester,
        } => (
            requester.clone(),
            format!("job {id}"),
            format!(
                "end job {id}: {:?}{}{}",
                outcome.state,
                if outcome.message.is_empty() { "" } else { ": " },
                outcome.message
            ),
        ),
        ControlCommand::CancelJob { id, requester } => (
            requester.clone(),
            format!("job {id}"),
            format!("cancel job {id}"),
        ),
        ControlCommand::PutSchedule {
            schedule,
            requester,
        } => (
            requester.clone(),
            format!("namespace {}", schedule.namespace),
            format!(
                "schedule backups of {} to {} every {} ms, keep {} ms, {} incremental per full",
                schedule.namespace,
                schedule.location,
                schedule.every_ms,
                schedule.keep_ms,
                schedule.incrementals_per_full
            ),
        ),
        ControlCommand::RemoveSchedule {
            namespace,
            requester,
        } => (
            requester.clone(),
            format!("namespace {namespace}"),
            format!("remove the backup schedule of {namespace}"),
        ),
        ControlCommand::ForgetBackup {
            backup_id,
            requester,
        } => (
            requester.clone(),
            "cluster".into(),
            format!("remove expired backup {backup_id}"),
        ),
        ControlCommand::AddMigrationTarget {
            job,
            shard,
            added,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!(
                "migration {job}: {} copy on shard {shard}",
                if *added { "new" } else { "standby" }
            ),
        ),
        ControlCommand::MigrationCutover {
            job,
            step,
            change_seq,
            blocked_ms,
            ..
        } => (
            step.requester.clone(),
            format!("namespace {}", step.namespace),
            format!(
                "migration {job}: cut namespace {} over to shard {} at change {change_seq} ({blocked_ms} ms blocked until the route switch)",
                step.namespace, step.to_shard
            ),
        ),
        ControlCommand::MigrationBlocked {
            job,
            blocked_ms,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!("migration {job}: writes were blocked {blocked_ms} ms"),
        ),
        ControlCommand::DropMigrationCopy {
            job,
            shard,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!("migration {job}: erase the copy on shard {shard}"),
        ),
        ControlCommand::AddMigrationStandby {
            job,
            shard,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!("migration {job}: a standby on shard {shard} in place of the source's"),
        ),
        ControlCommand::RestoreControlPlane {
            rebuild, requester, ..
        } => (
            requester.clone(),
            "cluster".into(),
            format!(
                "restore the control plane from backup {}",
                rebuild.backup_id
            ),
        ),
        ControlCommand::NameLostShards {
            job,
            shards,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!("rebuild {job}: shards named lost: {}", shards.join(", ")),
        ),
        ControlCommand::FinishRebuild {
            job,
            adoptions,
            outcome,
            requester,
        } => (
            requester.clone(),
            format!("job {job}"),
            format!(
                "rebuild {job}: {} namespaces decided, {} placed where the shards report them{}",
                outcome.len(),
                adoptions.len(),
                adoptions
                    .iter()
                    .map(|a| format!(" [{} on {} epoch {}]", a.namespace, a.shard, a.epoch))
                    .collect::<String>()
            ),
        ),
        ControlCommand::SetControlBackupSchedule {
            schedule,
            requester,
        } => (
            requester.clone(),
            "cluster".into(),
            match schedule {
                Some(s) => format!(
                    "schedule control-plane backups to {} every {} ms, kept {} ms",
                    s.location, s.every_ms, s.keep_ms
                ),
                None => "stop scheduled control-plane backups".into(),
            },
        ),
        ControlCommand::RecordControlBackup {
            backup_id,
            location,
            records,
            routing_version,
            requester,
        } => (
            requester.clone(),
            format!("location {location}"),
            format!(
                "control-plane backup {backup_id} to location {location}: {records} records at routing version {routing_version}"
            ),
        ),
        ControlCommand::PutLocation {
            location,
            requester,
        } => (
            requester.clone(),
            format!("location {}", location.name),
            format!(
                "put backup location {} at {} in region {} jurisdictions={:?}",
                location.name, location.url, location.region, location.jurisdictions
            ),
        ),
        ControlCommand::ConfirmTakeover {
            namespace,
            epoch,
            takeover,
            requester,
        } => (
            requester.clone(),
            format!("namespace {namespace}"),
            format!(
                "primary of namespace {namespace} at epoch {epoch} took over at change {} of epoch {}",
                takeover.seq, takeover.source_epoch
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NamespaceMode, PlacementPolicy, ShardMember};

    fn requester() -> Requester {
        Requester {
            actor: "test".into(),
            at_unix_ms: 1,
        }
    }

    fn lab_state() -> ControlState {
        let mut state = ControlState::default();
        for (name, tag) in [("us-east", "US"), ("eu-west", "EU"), ("ap-south", "IN")] {
            state.apply(ControlCommand::PutRegion {
                region: Region {
                    name: name.into(),
                    jurisdictions: [tag.to_string()].into(),
                    latitude: 0.0,
                    longitude: 0.0,
                },
                requester: requester(),
            });
            let (result, _) = state.apply(ControlCommand::RegisterMember {
                shard: format!("{name}-s1"),
                region: name.into(),
                member: ShardMember {
                    node_id: 1,
                    address: format!("{name}:1"),
                },
                requester: requester(),
            });
            assert_eq!(result, ControlResult::MemberRegistered);
        }
        state
    }

    fn create(
        state: &mut ControlState,
        name: &str,
        home: &str,
        standbys: &[&str],
        allowed: &[&str],
    ) -> ControlResult {
        state
            .apply(ControlCommand::CreateNamespace {
                name: name.into(),
                policy: PlacementPolicy {
                    home_region: home.into(),
                    mode: if standbys.is_empty() {
                        NamespaceMode::RegionLocked
                    } else {
                        NamespaceMode::ActivePassive { sync: false }
                    },
                    standby_regions: standbys.iter().map(|s| s.to_string()).collect(),
                    allowed_jurisdictions: allowed.iter().map(|s| s.to_string()).collect(),
                },
                requester: requester(),
                shard: None,
            })
            .0
    }

    fn restore_spec(target: &str) -> crate::model::JobSpec {
        crate::model::JobSpec::Restore(crate::model::RestoreSpec {
            backup_id: "b1".into(),
            source_namespace: "orders".into(),
            target: target.into(),
            location: "eu-vault".into(),
            incrementals: Vec::new(),
            at_seq: 0,
            policy: PlacementPolicy {
                home_region: "eu-west".into(),
                mode: NamespaceMode::RegionLocked,
                standby_regions: Vec::new(),
                allowed_jurisdictions: ["EU".to_string()].into(),
            },
        })
    }

    fn outcome(
        state: crate::model::JobState,
        place_on: Option<&str>,
        leftover_on: Option<&str>,
    ) -> crate::model::JobOutcome {
        crate::model::JobOutcome {
            state,
            message: String::new(),
            digest: "d".into(),
            change_seq: 0,
            place_on: place_on.map(Into::into),
            leftover_on: leftover_on.map(Into::into),
        }
    }

    #[test]
    fn a_restore_job_reserves_its_name_and_places_it_when_it_succeeds() {
        use crate::model::JobState;
        let mut state = lab_state();
        let start = |state: &mut ControlState, target: &str| {
            state
                .apply(ControlCommand::StartJob {
                    spec: restore_spec(target),
                    requester: requester(),
                })
                .0
        };
        let ControlResult::Job(job) = start(&mut state, "restored") else {
            panic!("not started");
        };
        assert_eq!((job.id, job.state), (1, JobState::Running));
        // The name is reserved: neither a placement nor a second restore.
        assert!(matches!(
            create(&mut state, "restored", "eu-west", &[], &["EU"]),
            ControlResult::Rejected {
                rejection: ControlRejection::NameReserved { job: 1, .. },
                ..
            }
        ));
        assert!(matches!(
            start(&mut state, "restored"),
            ControlResult::Rejected {
                rejection: ControlRejection::NameReserved { .. },
                ..
            }
        ));
        // A live namespace's name cannot be a target.
        create(&mut state, "live", "eu-west", &[], &["EU"]);
        assert!(matches!(
            start(&mut state, "live"),
            ControlResult::Rejected {
                rejection: ControlRejection::NamespaceExists(_),
                ..
            }
        ));
        // Progress is recorded without an audit record.
        let audited = state.audit.len();
        let (result, _) = state.apply(ControlCommand::UpdateJob {
            id: 1,
            progress: crate::model::JobProgress {
                step: "loading".into(),
                shard: "eu-west-s1".into(),
                done_units: 5,
                total_units: 10,
                attempts: 1,
            },
            requester: requester(),
        });
        assert!(matches!(result, ControlResult::Job(ref j) if j.done_units == 5));
        assert_eq!(state.audit.len(), audited);
        // Success places the namespace on the job's shard, in one step.
        let (result, _) = state.apply(ControlCommand::EndJob {
            id: 1,
            outcome: outcome(JobState::Succeeded, Some("eu-west-s1"), None),
            requester: requester(),
        });
        assert!(
            matches!(result, ControlResult::NamespaceCreated { ref namespace, .. } if namespace.shard == "eu-west-s1"),
            "{result:?}"
        );
        assert_eq!(state.jobs[&1].state, JobState::Succeeded);
        assert_eq!(state.namespaces["restored"].policy.home_region, "eu-west");
        // An ended job takes no more changes.
        assert!(matches!(
            state
                .apply(ControlCommand::CancelJob {
                    id: 1,
                    requester: requester(),
                })
                .0,
            ControlResult::Rejected {
                rejection: ControlRejection::JobEnded { .. },
                ..
            }
        ));
    }

    #[test]
    fn ended_jobs_are_kept_up_to_a_bound() {
        use crate::model::JobState;
        let mut state = lab_state();
        create(&mut state, "live", "eu-west", &[], &["EU"]);
        let spec = crate::model::JobSpec::Backup(crate::model::BackupSpec {
            namespace: "live".into(),
            location: "eu-vault".into(),
        });
        for id in 1..=(MAX_ENDED_JOBS as u64 + 5) {
            let (result, _) = state.apply(ControlCommand::StartJob {
                spec: spec.clone(),
                requester: requester(),
            });
            assert!(
                matches!(result, ControlResult::Job(ref j) if j.id == id),
                "{result:?}"
            );
            state.apply(ControlCommand::EndJob {
                id,
                outcome: outcome(JobState::Succeeded, None, None),
                requester: requester(),
            });
        }
        assert_eq!(state.jobs.len(), MAX_ENDED_JOBS);
        assert_eq!(state.jobs.keys().next(), Some(&6));
        // A backup job needs its namespace.
        let (result, _) = state.apply(ControlCommand::StartJob {
            spec: crate::model::JobSpec::Backup(crate::model::BackupSpec {
                namespace: "gone".into(),
                location: "eu-vault".into(),
            }),
            requester: requester(),
        });
        assert!(matches!(
            result,
            ControlResult::Rejected {
                rejection: ControlRejection::NamespaceNotFound(_),
                ..
            }
        ));
    }

    fn migration_to(namespace: &str, region: &str) -> crate::model::JobSpec {
        crate::model::JobSpec::Migrate(crate::model::Migration {
            namespace: namespace.into(),
            to_region: region.into(),
            max_blocked_ms: 1000,
            keep_source_ms: 0,
            catch_up_timeout_ms: 60_000,
            source_shard: String::new(),
            source_region: String::new(),
            original_mode: NamespaceMode::RegionLocked,
            target_shard: String::new(),
            added_target: false,
            cutover: None,
            source_released: false,
        })
    }

    #[test]
    fn a_migration_adds_a_copy_cuts_over_and_erases_the_source() {
        let mut state = lab_state();
        create(&mut state, "orders", "us-east", &[], &["US", "EU"]);
        let (started, _) = state.apply(ControlCommand::StartJob {
            spec: migration_to("orders", "eu-west"),
            requester: requester(),
        });
        let ControlResult::Job(job) = started else {
            panic!("{started:?}")
        };
        let id = job.id;
        // Dropping the source before the cutover is refused.
        let (refused, _) = state.apply(ControlCommand::DropMigrationCopy {
            job: id,
            shard: "us-east-s1".into(),
            requester: requester(),
        });
        assert!(
            matches!(refused, ControlResult::Rejected { .. }),
            "{refused:?}"
        );
        state.apply(ControlCommand::AddMigrationTarget {
            job: id,
            shard: "eu-west-s1".into(),
            added: true,
            requester: requester(),
        });
        let ns = state.namespaces["orders"].clone();
        assert_eq!(ns.policy.mode, NamespaceMode::ActivePassive { sync: false });
        assert_eq!(ns.standbys.len(), 1);
        assert!(state.fenced(&ns));
        let step = crate::command::FailoverMove {
            namespace: "orders".into(),
            to_shard: "eu-west-s1".into(),
            cause: "migration".into(),
            detected_at_ms: 1,
            primary_seq: 40,
            promoted_seq: 40,
            requester: requester(),
        };
        let (cut, _) = state.apply(ControlCommand::MigrationCutover {
            job: id,
            step: step.clone(),
            window: Default::default(),
            change_seq: 40,
            digest: "d".into(),
            blocked_ms: 90,
        });
        assert!(matches!(cut, ControlResult::FailedOver { .. }), "{cut:?}");
        // Only once.
        let (again, _) = state.apply(ControlCommand::MigrationCutover {
            job: id,
            step,
            window: Default::default(),
            change_seq: 40,
            digest: "d".into(),
            blocked_ms: 90,
        });
        assert!(matches!(again, ControlResult::Rejected { .. }));
        let ns = state.namespaces["orders"].clone();
        assert_eq!((ns.shard.as_str(), ns.epoch), ("eu-west-s1", 2));
        state.apply(ControlCommand::MigrationBlocked {
            job: id,
            blocked_ms: 130,
            requester: requester(),
        });
        state.apply(ControlCommand::DropMigrationCopy {
            job: id,
            shard: "us-east-s1".into(),
            requester: requester(),
        });
        let ns = state.namespaces["orders"].clone();
        assert!(ns.standbys.is_empty());
        assert_eq!(ns.policy.mode, NamespaceMode::RegionLocked);
        assert!(
            state.fenced(&ns),
            "moved: its copy is configured at epoch 2"
        );
        assert!(state.deletions["orders"].shards.contains("us-east-s1"));
        let report = crate::residency::report(&state, "orders").unwrap();
        let role = |report: &crate::residency::Residency, shard: &str| {
            report
                .copies
                .iter()
                .find(|c| c.shard == shard)
                .map(|c| c.role)
        };
        assert_eq!(role(&report, "us-east-s1"), Some("erasing"));
        state.apply(ControlCommand::NamespaceCopyDeleted {
            name: "orders".into(),
            shard: "us-east-s1".into(),
            requester: requester(),
        });
        assert!(!state.deletions.contains_key("orders"));
        let report = crate::residency::report(&state, "orders").unwrap();
        assert_eq!(role(&report, "us-east-s1"), Some("erased"));
        assert_eq!(role(&report, "eu-west-s1"), Some("primary"));
        let crate::model::JobSpec::Migrate(m) = &state.jobs[&id].spec else {
            panic!()
        };
        assert_eq!(m.cutover.as_ref().map(|c| c.blocked_ms), Some(130));
        assert!(m.source_released);
    }

    #[test]
    fn a_rolled_back_migration_leaves_the_namespace_where_it_was() {
        let mut state = lab_state();
        create(&mut state, "orders", "us-east", &[], &["US", "EU"]);
        // Residency: not into India.
        let (refused, _) = state.apply(ControlCommand::StartJob {
            spec: migration_to("orders", "ap-south"),
            requester: requester(),
        });
        assert!(
            matches!(refused, ControlResult::Rejected { .. }),
            "{refused:?}"
        );
        state.apply(ControlCommand::StartJob {
            spec: migration_to("orders", "eu-west"),
            requester: requester(),
        });
        let id = *state.jobs.keys().next_back().unwrap();
        state.apply(ControlCommand::AddMigrationTarget {
            job: id,
            shard: "eu-west-s1".into(),
            added: true,
            requester: requester(),
        });
        state.apply(ControlCommand::DropMigrationCopy {
            job: id,
            shard: "eu-west-s1".into(),
            requester: requester(),
        });
        let ns = state.namespaces["orders"].clone();
        assert_eq!((ns.shard.as_str(), ns.epoch), ("us-east-s1", 1));
        assert_eq!(ns.policy.mode, NamespaceMode::RegionLocked);
        assert!(ns.standbys.is_empty());
        // Its copy was configured for the move: it stays under the lease.
        assert!(state.fenced(&ns));
        assert!(state.deletions["orders"].shards.contains("eu-west-s1"));
    }

    #[test]
    fn a_failed_or_cancelled_restore_leaves_its_copy_to_the_deletion_worker() {
        use crate::model::JobState;
        let mut state = lab_state();
        for (id, target, end) in [
            (1, "failed", JobState::Failed),
            (2, "cancelled", JobState::Cancelled),
        ] {
            state.apply(ControlCommand::StartJob {
                spec: restore_spec(target),
                requester: requester(),
            });
            if end == JobState::Cancelled {
                let (result, _) = state.apply(ControlCommand::CancelJob {
                    id,
                    requester: requester(),
                });
                assert!(matches!(result, ControlResult::Job(ref j) if j.cancel_requested));
            }
            state.apply(ControlCommand::EndJob {
                id,
                outcome: outcome(end, None, Some("eu-west-s1")),
                requester: requester(),
            });
            assert_eq!(state.jobs[&id].state, end);
            assert!(!state.namespaces.contains_key(target));
            // The partial copy is recorded for deletion, so the name is not
            // free (and never adopts it) until the copy is gone.
            assert!(state.deletions[target].shards.contains("eu-west-s1"));
            assert!(matches!(
                create(&mut state, target, "eu-west", &[], &["EU"]),
                ControlResult::Rejected {
                    rejection: ControlRejection::BeingDeleted { .. },
                    ..
                }
            ));
        }
        // Only a successful restore may place.
        state.apply(ControlCommand::StartJob {
            spec: restore_spec("third"),
            requester: requester(),
        });
        assert!(matches!(
            state
                .apply(ControlCommand::EndJob {
                    id: 3,
                    outcome: outcome(JobState::Failed, Some("eu-west-s1"), None),
                    requester: requester(),
                })
                .0,
            ControlResult::Rejected { .. }
        ));
        assert!(state.jobs[&3].is_running());
    }

    #[test]
    fn regions_cannot_strand_namespaces_and_members_cannot_move() {
        let mut state = lab_state();
        assert!(matches!(
            create(&mut state, "eu-data", "eu-west", &[], &["EU"]),
            ControlResult::NamespaceCreated { .. }
        ));
        let put = |name: &str, tags: &[&str]| ControlCommand::PutRegion {
            region: Region {
                name: name.into(),
                jurisdictions: tags.iter().map(|t| t.to_string()).collect(),
                latitude: 0.0,
                longitude: 0.0,
            },
            requester: requester(),
        };
        // (case, command, refused)
        let cases = [
            (
                "re-tag a region that holds EU data as US",
                put("eu-west", &["US"]),
                true,
            ),
            (
                "add a jurisdiction it keeps",
                put("eu-west", &["EU", "UK"]),
                false,
            ),
            ("re-tag an empty region", put("ap-south", &["SG"]), false),
            ("a new region", put("me-central", &["AE"]), false),
            (
                "move a member to another address",
                ControlCommand::RegisterMember {
                    shard: "us-east-s1".into(),
                    region: "us-east".into(),
                    member: ShardMember {
                        node_id: 1,
                        address: "elsewhere:1".into(),
                    },
                    requester: requester(),
                },
                true,
            ),
            (
                "re-register at the same address",
                ControlCommand::RegisterMember {
                    shard: "us-east-s1".into(),
                    region: "us-east".into(),
                    member: ShardMember {
                        node_id: 1,
                        address: "us-east:1".into(),
                    },
                    requester: requester(),
                },
                false,
            ),
        ];
        for (case, command, refused) in cases {
            let before = state.clone();
            let (result, _) = state.apply(command);
            let was_refused = matches!(result, ControlResult::Rejected { .. });
            assert_eq!(was_refused, refused, "{case}: {result:?}");
            if refused {
                assert_eq!(state.regions, before.regions, "{case}");
                assert_eq!(state.shards, before.shards, "{case}");
            }
        }
        let (result, _) = state.apply(put("eu-west", &["US"]));
        let ControlResult::Rejected { rejection, audit } = result else {
            panic!("{result:?}")
        };
        assert!(rejection.to_string().contains("eu-data"), "{rejection}");
        assert!(audit.outcome.starts_with("refused"), "{audit:?}");
    }

    #[test]
    fn a_failover_records_its_takeover_once_the_new_primary_reports_it() {
        let mut state = lab_state();
        create(&mut state, "ns", "us-east", &["eu-west"], &["US", "EU"]);
        let (result, _) = state.apply(ControlCommand::FailoverBounded(
            crate::command::FailoverMove {
                namespace: "ns".into(),
                to_shard: "eu-west-s1".into(),
                cause: "test".into(),
                detected_at_ms: 1,
                primary_seq: 10,
                promoted_seq: 7,
                requester: requester(),
            },
            Default::default(),
        ));
        let ControlResult::FailedOver { record, .. } = result else {
            panic!("{result:?}");
        };
        assert_eq!((record.epoch, record.takeover), (2, None));
        let confirm = |seq| ControlCommand::ConfirmTakeover {
            namespace: "ns".into(),
            epoch: 2,
            takeover: crate::model::Takeover {
                source_epoch: 1,
                seq,
            },
            requester: requester(),
        };
        // It had applied two more of the old primary's changes by then.
        let (_, changes) = state.apply(confirm(9));
        assert!(changes.contains(&Change::Failover(record.id)));
        // Only the first report counts.
        state.apply(confirm(12));
        let stored = state.failovers[&record.id].takeover;
        assert_eq!(
            stored,
            Some(crate::model::Takeover {
                source_epoch: 1,
                seq: 9
            })
        );
        // An epoch no failover created is refused.
        let (result, _) = state.apply(ControlCommand::ConfirmTakeover {
            namespace: "ns".into(),
            epoch: 5,
            takeover: crate::model::Takeover {
                source_epoch: 1,
                seq: 1,
            },
            requester: requester(),
        });
        assert!(
            matches!(result, ControlResult::Rejected { .. }),
            "{result:?}"
        );
    }

    fn rebuild_spec() -> crate::model::Rebuild {
        crate::model::Rebuild {
            backup_id: "cp-1".into(),
            location_url: "file:///vault".into(),
            backup_created_unix_ms: 1,
            backup_routing_version: 0,
            lost: Vec::new(),
            outcome: Vec::new(),
        }
    }

    #[test]
    fn a_restore_replaces_a_new_control_plane_in_a_new_generation_and_holds_changes_until_rebuilt()
    {
        // The lost control plane, as its backup holds it.
        let mut lost = lab_state();
        create(&mut lost, "ledger", "us-east", &["eu-west"], &["US", "EU"]);
        create(&mut lost, "orders", "us-east", &[], &["US"]);
        lost.apply(ControlCommand::StartJob {
            spec: restore_spec("orders-copy"),
            requester: requester(),
        });
        let records = crate::state_machine::encode_state(&lost).unwrap();
        // Encoded and decoded, it is the same state.
        assert_eq!(crate::state_machine::decode_state(&records).unwrap(), lost);

        // A new control plane that has only its configured regions and a
        // member that registered.
        let mut fresh = lab_state();
        let before = fresh.counters.routing_version;
        // One that holds a namespace already is refused.
        let mut used = lab_state();
        create(&mut used, "mine", "us-east", &[], &["US"]);
        let (result, changes) = used.apply(ControlCommand::RestoreControlPlane {
            records: records.clone(),
            rebuild: rebuild_spec(),
            requester: requester(),
        });
        let ControlResult::Rejected { rejection, .. } = result else {
            panic!("{result:?}");
        };
        assert_eq!(rejection, ControlRejection::NotEmpty("1 namespaces".into()));
        assert!(used.namespaces.contains_key("mine"));
        assert!(!changes.contains(&Change::Namespace("ledger".into())));
        // Records this build does not know are refused.
        let mut odd = records.clone();
        odd.push(meridian_dr::control::ControlRecord {
            keyspace: "control_meta".into(),
            key: b"from-the-future".to_vec(),
            value: vec![1],
        });
        let (result, _) = fresh.clone().apply(ControlCommand::RestoreControlPlane {
            records: odd,
            rebuild: rebuild_spec(),
            requester: requester(),
        });
        assert!(
            matches!(
                result,
                ControlResult::Rejected {
                    rejection: ControlRejection::BadControlBackup { .. },
                    ..
                }
            ),
            "{result:?}"
        );

        let (result, changes) = fresh.apply(ControlCommand::RestoreControlPlane {
            records,
            rebuild: rebuild_spec(),
            requester: requester(),
        });
        let ControlResult::Job(job) = result else {
            panic!("{result:?}");
        };
        assert_eq!(job.spec.kind(), "rebuild");
        assert_eq!(fresh.rebuilding(), Some(job.id));
        assert_eq!(fresh.namespaces, lost.namespaces);
        // Every restored record is written.
        for change in lost.every_record() {
            if !matches!(change, Change::Job(_) | Change::Audit(_)) {
                assert!(changes.contains(&change), "{change:?} not written");
            }
        }
        // A new generation: above anything the lost one could have reached.
        assert_eq!(
            crate::rebuild::generation(fresh.counters.routing_version),
            1
        );
        assert!(fresh.counters.routing_version > lost.counters.routing_version + 1_000_000);
        assert!(fresh.counters.routing_version > before);
        assert_eq!(crate::rebuild::generation(fresh.access.version), 1);
        // The backup's running job ended; the chain of audit records goes on.
        let restore = fresh
            .jobs
            .values()
            .find(|j| j.spec.kind() == "restore")
            .unwrap();
        assert_eq!(restore.state, crate::model::JobState::Failed);
        assert!(
            restore.message.contains("interrupted"),
            "{}",
            restore.message
        );
        let chain: Vec<AuditRecord> = fresh.audit.values().cloned().collect();
        assert!(crate::audit::verify(&fresh.audit_anchor, &chain).is_ok());

        // Changes wait for the rebuild; registrations do not.
        let result = create(&mut fresh, "during", "us-east", &[], &["US"]);
        assert!(
            matches!(
                result,
                ControlResult::Rejected {
                    rejection: ControlRejection::Rebuilding(_),
                    ..
                }
            ),
            "{result:?}"
        );
        let (result, _) = fresh.apply(ControlCommand::CancelJob {
            id: job.id,
            requester: requester(),
        });
        assert!(
            matches!(result, ControlResult::Rejected { .. }),
            "{result:?}"
        );
        let (result, _) = fresh.apply(ControlCommand::RegisterMember {
            shard: "us-east-s1".into(),
            region: "us-east".into(),
            member: ShardMember {
                node_id: 2,
                address: "us-east:2".into(),
            },
            requester: requester(),
        });
        assert_eq!(result, ControlResult::MemberRegistered);

        // The rebuild places a namespace that failed over after the backup
        // where the shards say it is, with its takeover.
        let version = fresh.counters.routing_version;
        let (result, _) = fresh.apply(ControlCommand::FinishRebuild {
            job: job.id,
            adoptions: vec![crate::model::Adoption {
                namespace: "ledger".into(),
                shard: "eu-west-s1".into(),
                region: "eu-west".into(),
                epoch: 2,
                standbys: vec![crate::model::StandbyCopy {
                    region: "us-east".into(),
                    shard: "us-east-s1".into(),
                }],
                takeover: Some(crate::model::Takeover {
                    source_epoch: 1,
                    seq: 40,
                }),
                promoted: false,
            }],
            outcome: Vec::new(),
            requester: requester(),
        });
        assert_eq!(result, ControlResult::Updated);
        let ledger = &fresh.namespaces["ledger"];
        assert_eq!((ledger.shard.as_str(), ledger.epoch), ("eu-west-s1", 2));
        assert_eq!(ledger.policy.home_region, "eu-west");
        assert!(fresh.counters.routing_version > version);
        let record = fresh.failovers.values().next_back().unwrap();
        assert!(record.is_move());
        assert_eq!(record.takeover.map(|t| t.seq), Some(40));
        // An adoption outside the namespace's jurisdictions is refused whole.
        let (result, _) = fresh.apply(ControlCommand::FinishRebuild {
            job: job.id,
            adoptions: vec![crate::model::Adoption {
                namespace: "orders".into(),
                shard: "ap-south-s1".into(),
                region: "ap-south".into(),
                epoch: 3,
                standbys: Vec::new(),
                takeover: None,
                promoted: true,
            }],
            outcome: Vec::new(),
            requester: requester(),
        });
        assert!(
            matches!(result, ControlResult::Rejected { .. }),
            "{result:?}"
        );
        assert_eq!(fresh.namespaces["orders"].shard, "us-east-s1");
        // Once it ends, changes are taken again.
        fresh.apply(ControlCommand::EndJob {
            id: job.id,
            outcome: outcome(crate::model::JobState::Succeeded, None, None),
            requester: requester(),
        });
        assert_eq!(fresh.rebuilding(), None);
        assert!(matches!(
            create(&mut fresh, "after", "us-east", &[], &["US"]),
            ControlResult::NamespaceCreated { .. }
        ));
    }

    #[test]
    fn placement_publishes_a_route_and_bumps_the_version() {
        let mut state = lab_state();
        let before = state.counters.routing_version;
        let ControlResult::NamespaceCreated {
            namespace,
            routing_version,
        } = create(&mut state, "orders", "eu-west", &[], &["EU"])
        else {
            panic!("not created");
        };
        assert_eq!(namespace.shard, "eu-west-s1");
        assert_eq!(routing_version, before + 1);
        assert_eq!(state.routes().len(), 1);
        assert_eq!(state.routes()[0].region, "eu-west");
    }

    #[test]
    fn placement_keeps_the_shard_the_copy_was_created_on() {
        let mut state = lab_state();
        // A second shard in eu-west; the least-loaded rule would pick
        // eu-west-s1 (ties go to the smallest id).
        state.apply(ControlCommand::RegisterMember {
            shard: "eu-west-s2".into(),
            region: "eu-west".into(),
            member: ShardMember {
                node_id: 1,
                address: "eu-west-2:1".into(),
            },
            requester: requester(),
        });
        let policy = |standbys: &[&str]| PlacementPolicy {
            home_region: "eu-west".into(),
            mode: if standbys.is_empty() {
                NamespaceMode::RegionLocked
            } else {
                NamespaceMode::ActivePassive { sync: false }
            },
            standby_regions: standbys.iter().map(|s| s.to_string()).collect(),
            allowed_jurisdictions: ["EU".to_string(), "US".to_string()].into(),
        };
        let (result, _) = state.apply(ControlCommand::PlaceNamespace {
            name: "a".into(),
            policy: policy(&[]),
            shard: Some("eu-west-s2".into()),
            max_lag: Default::default(),
            failover: Default::default(),
            requester: requester(),
        });
        let ControlResult::NamespaceCreated { namespace, .. } = result else {
            panic!("{result:?}");
        };
        assert_eq!(namespace.shard, "eu-west-s2");
        // With standbys: home and standby copies as created.
        let (result, _) = state.apply(ControlCommand::PlaceNamespaceOn {
            name: "b".into(),
            policy: PlacementPolicy {
                home_region: "us-east".into(),
                ..policy(&["eu-west"])
            },
            shard: "us-east-s1".into(),
            standbys: vec![crate::model::StandbyCopy {
                region: "eu-west".into(),
                shard: "eu-west-s2".into(),
            }],
            max_lag: Default::default(),
            failover: Default::default(),
            on_standby_loss: Default::default(),
            requester: requester(),
        });
        let ControlResult::NamespaceCreated { namespace, .. } = result else {
            panic!("{result:?}");
        };
        assert_eq!(namespace.standbys[0].shard, "eu-west-s2");
        // A shard outside the region it is claimed for is refused.
        let (result, _) = state.apply(ControlCommand::PlaceNamespace {
            name: "c".into(),
            policy: policy(&[]),
            shard: Some("us-east-s1".into()),
            max_lag: Default::default(),
            failover: Default::default(),
            requester: requester(),
        });
        assert!(
            matches!(
                result,
                ControlResult::Rejected {
                    rejection: ControlRejection::ShardRegionMismatch { .. },
                    ..
                }
            ),
            "{result:?}"
        );
    }

    #[test]
    fn a_deleted_name_stays_reserved_until_every_copy_is_gone() {
        let mut state = lab_state();
        let created = create(&mut state, "ledger", "us-east", &["eu-west"], &["US", "EU"]);
        assert!(matches!(created, ControlResult::NamespaceCreated { .. }));
        let delete = |state: &mut ControlState| {
            state
                .apply(ControlCommand::DeleteNamespace {
                    name: "ledger".into(),
                    requester: requester(),
                })
                .0
        };
        assert!(matches!(
            delete(&mut state),
            ControlResult::NamespaceDeleted { .. }
        ));
        assert!(state.routes().is_empty());
        let shards: Vec<&String> = state.deletions["ledger"].shards.iter().collect();
        assert_eq!(shards, ["eu-west-s1", "us-east-s1"]);
        // The name cannot be placed again while a copy may remain...
        let again = create(&mut state, "ledger", "us-east", &["eu-west"], &["US", "EU"]);
        assert!(
            matches!(
                again,
                ControlResult::Rejected {
                    rejection: ControlRejection::BeingDeleted { .. },
                    ..
                }
            ),
            "{again:?}"
        );
        // ...and asking to delete again resumes instead of NOT_FOUND.
        assert!(matches!(
            delete(&mut state),
            ControlResult::NamespaceDeleted { .. }
        ));
        for shard in ["us-east-s1", "eu-west-s1"] {
            state.apply(ControlCommand::NamespaceCopyDeleted {
                name: "ledger".into(),
                shard: shard.into(),
                requester: requester(),
            });
        }
        assert!(state.deletions.is_empty());
        let again = create(&mut state, "ledger", "us-east", &["eu-west"], &["US", "EU"]);
        assert!(
            matches!(again, ControlResult::NamespaceCreated { .. }),
            "{again:?}"
        );
        // Now the name is unknown to deletion: NOT_FOUND after a real delete
        // and completion.
        assert!(matches!(
            delete(&mut state),
            ControlResult::NamespaceDeleted { .. }
        ));
    }

    #[test]
    fn residency_refusals_are_audited_and_change_no_route() {
        let mut state = lab_state();
        let version = state.counters.routing_version;
        let result = create(&mut state, "gdpr", "us-east", &[], &["EU"]);
        let ControlResult::Rejected { rejection, audit } = result else {
            panic!("must be refused");
        };
        assert!(
            rejection.to_string().contains("residency rule"),
            "{rejection}"
        );
        assert!(
            audit.outcome.starts_with("refused: residency rule"),
            "{audit:?}"
        );
        assert_eq!(state.counters.routing_version, version);
        assert!(state.namespaces.is_empty());
        let result = create(&mut state, "gdpr", "eu-west", &["us-east"], &["EU"]);
        assert!(matches!(result, ControlResult::Rejected { .. }));
    }

    #[test]
    fn same_commands_same_state() {
        let run = || {
            let mut state = lab_state();
            create(&mut state, "a", "eu-west", &[], &[]);
            create(&mut state, "b", "us-east", &["eu-west"], &["US", "EU"]);
            state.apply(ControlCommand::DeleteNamespace {
                name: "a".into(),
                requester: requester(),
            });
            state
        };
        assert_eq!(run(), run());
        assert_eq!(run().audit.len() as u64, run().counters.audit_sequence);
    }
}
