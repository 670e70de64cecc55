//! Changes to the control plane's state, replicated through its Raft log, and
//! their results. Serialized with postcard: new variants go at the end.

use crate::model::{AuditRecord, Namespace, PlacementPolicy, Region, ShardMember};
use crate::placement::PlacementError;
use serde::{Deserialize, Serialize};

/// Who asked and when; recorded in the audit log. The time is taken by the leader
/// when it accepts the request, so every replica records the same value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Requester {
    /// Client identity (certificate subject, or `cli`).
    pub actor: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A failover: which standby takes over a namespace, why, and the positions
/// that bound what may be lost. Encoded exactly like the fields of the first
/// `Failover` command, so logs written before it was a struct still decode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverMove {
    /// The namespace.
    pub namespace: String,
    /// The standby shard to promote.
    pub to_shard: String,
    /// Why.
    pub cause: String,
    /// When the primary was declared failed (Unix ms).
    pub detected_at_ms: u64,
    /// The old primary's last known sequence number.
    pub primary_seq: u64,
    /// The promoted standby's sequence number.
    pub promoted_seq: u64,
    /// Who asked.
    pub requester: Requester,
}

/// A change to the control plane's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlCommand {
    /// Adds a region or updates its location and jurisdictions.
    PutRegion {
        /// The region.
        region: Region,
        /// Who asked.
        requester: Requester,
    },
    /// A node announces itself as a member of a shard (creating the shard).
    RegisterMember {
        /// Shard id.
        shard: String,
        /// Region of the shard.
        region: String,
        /// The member.
        member: ShardMember,
        /// Who asked.
        requester: Requester,
    },
    /// Places a new namespace and publishes its route.
    CreateNamespace {
        /// Name.
        name: String,
        /// Requested policy (allowed jurisdictions may be empty: home's apply).
        policy: PlacementPolicy,
        /// The shard the leader chose and already created the namespace on; `None`
        /// lets the state machine choose (no shard-side creation happened).
        shard: Option<String>,
        /// Who asked.
        requester: Requester,
    },
    /// Removes a namespace and its route.
    DeleteNamespace {
        /// Name.
        name: String,
        /// Who asked.
        requester: Requester,
    },
    /// Makes a standby the namespace's primary: bumps the epoch (fencing the
    /// old primary), swaps the roles, publishes the route, records the failover
    /// (the loss window's time bounds unknown; see `FailoverBounded`).
    Failover(FailoverMove),
    /// Sets a namespace's failover policy.
    SetFailoverPolicy {
        /// The namespace.
        namespace: String,
        /// Its policy over the global one.
        policy: crate::model::FailoverOverride,
        /// Who asked.
        requester: Requester,
    },
    /// Sets a namespace's RPO gate.
    SetMaxLag {
        /// The namespace.
        namespace: String,
        /// The bound.
        max_lag: crate::model::MaxLag,
        /// Who asked.
        requester: Requester,
    },
    /// Places a new namespace with its RPO gate and failover policy in one
    /// step, so no route is ever published without the bound it was asked
    /// with (what `CreateNamespace` followed by `SetMaxLag` could not promise).
    PlaceNamespace {
        /// Name.
        name: String,
        /// Requested policy (allowed jurisdictions may be empty: home's apply).
        policy: PlacementPolicy,
        /// The shard the leader chose and already created the namespace on.
        shard: Option<String>,
        /// The RPO gate.
        max_lag: crate::model::MaxLag,
        /// Its failover policy over the global one.
        failover: crate::model::FailoverOverride,
        /// Who asked.
        requester: Requester,
    },
    /// [`ControlCommand::Failover`] that also records the loss window's time
    /// bounds (what the leader proposes now).
    FailoverBounded(FailoverMove, crate::model::LossWindow),
    /// [`ControlCommand::PlaceNamespace`] carrying every shard the leader
    /// created a copy on (home and standbys), which the state machine
    /// applies as they are (after re-checking region and residency) instead
    /// of choosing again — with two shards in a region it could choose
    /// another one than the copy was created on.
    PlaceNamespaceOn {
        /// Name.
        name: String,
        /// Requested policy (allowed jurisdictions may be empty: home's apply).
        policy: PlacementPolicy,
        /// The home shard the copy was created on.
        shard: String,
        /// The standby shards copies were created on.
        standbys: Vec<crate::model::StandbyCopy>,
        /// The RPO gate.
        max_lag: crate::model::MaxLag,
        /// Its failover policy over the global one.
        failover: crate::model::FailoverOverride,
        /// What it does when too few standbys can confirm sync writes.
        on_standby_loss: crate::model::StandbyLossPolicy,
        /// Who asked.
        requester: Requester,
    },
    /// A deleted namespace's copy (data, change log, lost writes) is gone
    /// from `shard`; once every copy is, the deletion is complete and the
    /// name may be used again.
    NamespaceCopyDeleted {
        /// The namespace.
        name: String,
        /// The shard that no longer holds it.
        shard: String,
        /// Who finished it (the control plane's deletion worker, or an operator).
        requester: Requester,
    },
    /// The standby-loss policy switches a sync namespace to async
    /// (`degraded`) or back; recorded in the audit log and the failover
    /// history.
    SetSyncDegraded {
        /// The namespace.
        namespace: String,
        /// Async for now (true) or sync again (false).
        degraded: bool,
        /// Why, in words.
        cause: String,
        /// Who decided (the control plane's prober).
        requester: Requester,
    },
    /// The new primary of a failover reported where it took over: the fork
    /// point every other copy of the namespace is cut back to.
    ConfirmTakeover {
        /// The namespace.
        namespace: String,
        /// The epoch the failover created.
        epoch: u64,
        /// Where its primary took over.
        takeover: crate::model::Takeover,
        /// Who reported it (the control plane's prober).
        requester: Requester,
    },
    /// A change to roles, grants, tokens or revoked identities.
    Access {
        /// The change.
        change: meridian_access::AccessChange,
        /// Who asked.
        requester: Requester,
    },
    /// Calls this control plane refused, for the audit log (each becomes a
    /// record under the refused caller's name).
    RecordRefusals {
        /// The calls.
        refusals: Vec<RefusedCall>,
        /// Refusals not recorded because more came than the log takes.
        dropped: u64,
        /// Who records them (the leader).
        requester: Requester,
    },
    /// Adds a backup location (never changes one).
    PutLocation {
        /// The location.
        location: crate::model::BackupLocation,
        /// Who asked.
        requester: Requester,
    },
    /// Records a backup written and verified by a node (format 1 entries,
    /// as older logs hold them; new ones are [`ControlCommand::CatalogBackup`]).
    RecordBackup {
        /// The backup.
        backup: crate::model::BackupRecordV1,
        /// Who asked for it.
        requester: Requester,
    },
    /// Records a backup written and verified by a node (or a new check's
    /// result for one in the catalog).
    CatalogBackup {
        /// The backup.
        backup: crate::model::BackupRecord,
        /// Who asked for it.
        requester: Requester,
    },
    /// Starts a job (its id is the next after the highest so far). A
    /// restore reserves its target's name until it ends.
    StartJob {
        /// What it does.
        spec: crate::model::JobSpec,
        /// Who asked.
        requester: Requester,
    },
    /// Records a running job's progress (not audited: it only moves a bar).
    UpdateJob {
        /// The job.
        id: u64,
        /// Where it is.
        progress: crate::model::JobProgress,
        /// The leader driving it.
        requester: Requester,
    },
    /// Ends a running job; a restore that succeeded places and routes its
    /// namespace in the same step.
    EndJob {
        /// The job.
        id: u64,
        /// How it ended.
        outcome: crate::model::JobOutcome,
        /// The leader driving it.
        requester: Requester,
    },
    /// Asks a running job to stop.
    CancelJob {
        /// The job.
        id: u64,
        /// Who asked.
        requester: Requester,
    },
    /// Sets a namespace's backup schedule (replacing one it had).
    PutSchedule {
        /// The schedule.
        schedule: crate::model::BackupSchedule,
        /// Who asked.
        requester: Requester,
    },
    /// Removes a namespace's backup schedule (its backups stay).
    RemoveSchedule {
        /// The namespace.
        namespace: String,
        /// Who asked.
        requester: Requester,
    },
    /// Removes a backup from the catalog once its objects are gone
    /// (retention).
    ForgetBackup {
        /// The backup.
        backup_id: String,
        /// Who removed it.
        requester: Requester,
    },
    /// Records the copy a migration uses in its target region; a shard that
    /// holds no copy yet becomes a standby of the namespace (a region-locked
    /// namespace ships to it as active-passive until the migration ends).
    AddMigrationTarget {
        /// The migration's job.
        job: u64,
        /// The shard (created on it already when new).
        shard: String,
        /// Whether the migration added the copy.
        added: bool,
        /// The leader driving it.
        requester: Requester,
    },
    /// A migration's cutover: the drained move to its target (as
    /// `FailoverBounded`), recorded in the job with the write block so far.
    MigrationCutover {
        /// The migration's job.
        job: u64,
        /// The move.
        step: FailoverMove,
        /// Its loss window (nothing: drained).
        window: crate::model::LossWindow,
        /// The change both copies held and their digest.
        change_seq: u64,
        /// The digest both copies had.
        digest: String,
        /// Writes blocked until the route switch (ms).
        blocked_ms: u64,
    },
    /// The full write block of a migration's cutover, once the new primary
    /// holds its lease.
    MigrationBlocked {
        /// The migration's job.
        job: u64,
        /// Writes were blocked this long (ms).
        blocked_ms: u64,
        /// The leader driving it.
        requester: Requester,
    },
    /// Removes one copy of a live namespace that a migration no longer
    /// needs (its source after the grace period, or its added target on a
    /// rollback): out of the standbys, handed to the deletion worker, the
    /// erasure recorded; a region-locked namespace left without standbys is
    /// region-locked again.
    DropMigrationCopy {
        /// The migration's job.
        job: u64,
        /// The shard whose copy goes.
        shard: String,
        /// The leader driving it.
        requester: Requester,
    },
    /// Replaces the state of a control plane that holds no namespaces yet
    /// with a backup's stored records, starts a new generation (routing
    /// version, access policy version, lease numbering) and starts the
    /// rebuild job. Running jobs of the backup end as failed.
    RestoreControlPlane {
        /// Every stored record of the backup.
        records: Vec<meridian_dr::control::ControlRecord>,
        /// The rebuild job to start.
        rebuild: crate::model::Rebuild,
        /// The admin.
        requester: Requester,
    },
    /// Names more shards lost for the running rebuild (not waited for).
    NameLostShards {
        /// The rebuild's job.
        job: u64,
        /// The shards.
        shards: Vec<String>,
        /// The admin.
        requester: Requester,
    },
    /// Places the namespaces that moved after the backup where the shards
    /// say they live (with their takeovers, so every copy finds its fork
    /// point), and records every namespace's outcome in the rebuild job.
    FinishRebuild {
        /// The rebuild's job.
        job: u64,
        /// Namespaces placed anew.
        adoptions: Vec<crate::model::Adoption>,
        /// Every namespace's outcome.
        outcome: Vec<crate::model::RebuildOutcome>,
        /// The leader driving it.
        requester: Requester,
    },
    /// A control-plane backup was written and checked (for the audit log).
    RecordControlBackup {
        /// The backup.
        backup_id: String,
        /// The location.
        location: String,
        /// Records it holds.
        records: u64,
        /// The routing version it holds.
        routing_version: u64,
        /// Who asked.
        requester: Requester,
    },
    /// Adds a standby to a namespace a migration moved into its only
    /// standby's region, before the source copy (then its only other
    /// standby) is erased.
    AddMigrationStandby {
        /// The migration's job.
        job: u64,
        /// The shard (the namespace already created there).
        shard: String,
        /// The leader driving it.
        requester: Requester,
    },
    /// Sets (or, with `None`, removes) the control plane's own backup
    /// schedule.
    SetControlBackupSchedule {
        /// The schedule.
        schedule: Option<crate::model::ControlBackupSchedule>,
        /// The admin.
        requester: Requester,
    },
}

/// A call refused by authorization, as the audit log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedCall {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// The caller as authenticated (identity URI, `token:ID`, `unidentified`).
    pub actor: String,
    /// The API (`Control.PutRegion`, `GET /v1/namespaces`).
    pub api: String,
    /// What it acted on (`the cluster`, `namespace orders`).
    pub target: String,
    /// Why it was refused.
    pub reason: String,
}

/// Why the control plane refused a command; decided identically on every replica.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum ControlRejection {
    /// Placement or residency refused it.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The namespace exists already.
    #[error("namespace {0:?} already exists")]
    NamespaceExists(String),
    /// No such namespace.
    #[error("namespace {0:?} not found")]
    NamespaceNotFound(String),
    /// The shard belongs to another region.
    #[error("shard {shard:?} is in region {existing:?}, not {requested:?}")]
    ShardRegionMismatch {
        /// The shard.
        shard: String,
        /// Its region.
        existing: String,
        /// The region claimed.
        requested: String,
    },
    /// The region is not known.
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
    /// A failover target that is not one of the namespace's standbys.
    #[error(
        "shard {shard:?} holds no standby copy of namespace {namespace:?}; standbys: {standbys}"
    )]
    NotAStandby {
        /// The namespace.
        namespace: String,
        /// The shard asked for.
        shard: String,
        /// Its standby shards.
        standbys: String,
    },
    /// An access change was refused (the message names the rule).
    #[error(transparent)]
    Access(#[from] meridian_access::AccessError),
    /// A region's new jurisdictions would leave namespaces outside theirs.
    #[error(
        "region {region:?} cannot change its jurisdictions to {jurisdictions:?}: namespaces [{}] have copies there and do not allow those jurisdictions — move them first (failover or migration)",
        namespaces.join(", ")
    )]
    RegionInUse {
        /// The region.
        region: String,
        /// The jurisdictions asked for.
        jurisdictions: Vec<String>,
        /// Namespaces it would strand.
        namespaces: Vec<String>,
    },
    /// A registered member cannot move itself to another address.
    #[error(
        "node {node_id} of shard {shard:?} is registered at {registered}; a node cannot re-register at another address ({requested}) — remove it from the shard and add it again"
    )]
    MemberMoved {
        /// The shard.
        shard: String,
        /// The node.
        node_id: u64,
        /// Where it is registered.
        registered: String,
        /// Where it claims to be.
        requested: String,
    },
    /// The name belongs to a namespace still being deleted: some copies are
    /// not gone yet, and a new namespace must never adopt one.
    #[error(
        "namespace {name:?} is still being deleted (copies remain on {shards}); it can be created again once every copy is gone — retry the removal to finish it"
    )]
    BeingDeleted {
        /// The namespace.
        name: String,
        /// Shards that still hold a copy.
        shards: String,
    },
    /// A backup location breaks a rule (the message names it).
    #[error("backup location {name:?}: {reason}")]
    Location {
        /// The location.
        name: String,
        /// The rule.
        reason: String,
    },
    /// No job with this id.
    #[error("no job {0} (meridian jobs list)")]
    JobNotFound(u64),
    /// The job has ended; it takes no more changes.
    #[error("job {id} has ended ({state})")]
    JobEnded {
        /// The job.
        id: u64,
        /// How it ended.
        state: String,
    },
    /// A backup schedule breaks a rule (the message names it).
    #[error("backup schedule of {namespace:?}: {reason}")]
    Schedule {
        /// The namespace.
        namespace: String,
        /// The rule.
        reason: String,
    },
    /// No schedule for this namespace.
    #[error("namespace {0:?} has no backup schedule")]
    NoSchedule(String),
    /// A migration cannot start or go on (the message says why).
    #[error("migration of {namespace:?} refused: {reason}")]
    Migration {
        /// The namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// A running job is making a namespace of this name.
    #[error("namespace name {name:?} is reserved by running job {job} (meridian jobs show {job})")]
    NameReserved {
        /// The name.
        name: String,
        /// The job.
        job: u64,
    },
    /// A control-plane backup restores only into a control plane that
    /// holds nothing it would overwrite.
    #[error(
        "a control-plane backup restores only into a new control plane; this one already holds {0}"
    )]
    NotEmpty(String),
    /// The backup's records do not decode (the message says which).
    #[error("control-plane backup {backup}: {reason}")]
    BadControlBackup {
        /// The backup.
        backup: String,
        /// Why.
        reason: String,
    },
    /// A rebuild after a restore is running: no changes until it ends.
    #[error(
        "the control plane is rebuilding after a restore (job {0}): changes wait until every shard has reported what it holds (meridian jobs show {0}; name unreachable shards lost with `meridian control restore --lost SHARD`)"
    )]
    Rebuilding(u64),
}

/// The result of a command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ControlResult {
    /// The region was stored.
    RegionStored,
    /// The member was registered.
    MemberRegistered,
    /// The namespace was placed; its route is live from `routing_version`.
    NamespaceCreated {
        /// The namespace as placed.
        namespace: Namespace,
        /// Routing-table version that first contains it.
        routing_version: u64,
    },
    /// The namespace and its route are gone from `routing_version`; its
    /// copies are deleted on `pending` (none left: complete).
    NamespaceDeleted {
        /// Routing-table version without it.
        routing_version: u64,
    },
    /// One copy of a deleted namespace is gone; `remaining` shards still hold one.
    CopyDeleted {
        /// Shards still holding a copy.
        remaining: Vec<String>,
    },
    /// A namespace setting changed.
    Updated,
    /// The namespace failed over.
    FailedOver {
        /// The record.
        record: crate::model::FailoverRecord,
        /// Routing-table version with the new primary.
        routing_version: u64,
    },
    /// The access policy changed; gateways and nodes get it from
    /// `routing_version`.
    AccessChanged {
        /// The policy's version.
        policy_version: u64,
        /// Routing version that carries it.
        routing_version: u64,
    },
    /// Refused; the audit log records the refusal too.
    Rejected {
        /// Why.
        rejection: ControlRejection,
        /// The audit record of the refusal.
        audit: AuditRecord,
    },
    /// The backup location is stored (as given, or as it already was).
    LocationStored(crate::model::BackupLocation),
    /// The backup is in the catalog.
    BackupRecorded,
    /// The job as it now stands.
    Job(crate::model::Job),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Failover` entry already in a Raft log was written as a struct
    /// variant: its index, then the fields in order. The newtype form must
    /// produce the same bytes.
    #[test]
    fn a_failover_encodes_as_the_original_struct_variant() {
        let step = FailoverMove {
            namespace: "orders".into(),
            to_shard: "eu-west-s1".into(),
            cause: "test".into(),
            detected_at_ms: 1,
            primary_seq: 7,
            promoted_seq: 5,
            requester: Requester {
                actor: "cli".into(),
                at_unix_ms: 2,
            },
        };
        let mut expected = vec![4u8];
        expected.extend(postcard::to_stdvec(&step).unwrap());
        let encoded = postcard::to_stdvec(&ControlCommand::Failover(step.clone())).unwrap();
        assert_eq!(encoded, expected);
        let decoded: ControlCommand = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(decoded, ControlCommand::Failover(step));
    }
}
