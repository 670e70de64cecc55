//! The control plane's data.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A region: a place where shards run, with the jurisdictions it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Region {
    /// Name, e.g. `eu-west`.
    pub name: String,
    /// Jurisdiction tags, e.g. `EU`, or `US` and `US-CA`.
    pub jurisdictions: BTreeSet<String>,
    /// Latitude in degrees, for nearest-region decisions.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
}

/// One member node of a shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardMember {
    /// Raft node id within the shard.
    pub node_id: u64,
    /// gRPC address.
    pub address: String,
}

/// A shard: one Raft group in one region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shard {
    /// Shard id, e.g. `eu-west-s1`.
    pub id: String,
    /// Region it runs in.
    pub region: String,
    /// Members by node id.
    pub members: BTreeMap<u64, ShardMember>,
}

/// How a namespace is replicated across regions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NamespaceMode {
    /// Only in its home region; unavailable if that region is lost.
    RegionLocked,
    /// A primary in the home region, standbys elsewhere; `sync` acknowledges a
    /// write only once a standby region has it.
    ActivePassive {
        /// Synchronous replication to at least one standby region.
        sync: bool,
    },
    /// Writable in every region of its set, merged as CRDTs.
    ActiveActive,
}

/// Where a namespace may and must live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlacementPolicy {
    /// The region holding the primary copy.
    pub home_region: String,
    /// Replication mode.
    pub mode: NamespaceMode,
    /// Regions holding standby (or, active-active, peer) copies.
    pub standby_regions: Vec<String>,
    /// Jurisdictions the namespace's data may be stored in. Never empty once
    /// created: when a request gives none, the home region's jurisdictions apply.
    pub allowed_jurisdictions: BTreeSet<String>,
}

/// A namespace and where it lives now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Placement policy.
    pub policy: PlacementPolicy,
    /// The shard holding the primary copy.
    pub shard: String,
    /// Bumped on every change of primary; a shard refuses writes carrying an
    /// older epoch.
    pub epoch: u64,
    /// Standby copies (active-passive), one per standby region.
    pub standbys: Vec<StandbyCopy>,
    /// The RPO gate: how far a standby may fall behind before writes stop.
    pub max_lag: MaxLag,
    /// This namespace's failover policy over the global one.
    pub failover: FailoverOverride,
    /// What a sync namespace does when too few standbys can confirm writes.
    pub on_standby_loss: StandbyLossPolicy,
    /// Whether the standby-loss policy has switched this sync namespace to
    /// async for now (recorded in the audit log and the failover history).
    pub sync_degraded: bool,
}

/// What a sync namespace does when too few standbys can confirm writes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum StandbyLossPolicy {
    /// Writes are refused before anything is applied until standbys return.
    #[default]
    Refuse,
    /// Switch to async (audited, in the failover history, exported as a
    /// metric) and back to sync once enough standbys are current again.
    Degrade,
}

/// The second stored form of [`Namespace`] (before the standby-loss
/// policy), upgraded on load.
#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceV2 {
    /// Name.
    pub name: String,
    /// Placement policy.
    pub policy: PlacementPolicy,
    /// Primary shard.
    pub shard: String,
    /// Epoch.
    pub epoch: u64,
    /// Standby copies.
    pub standbys: Vec<StandbyCopy>,
    /// RPO gate.
    pub max_lag: MaxLag,
    /// Failover policy.
    pub failover: FailoverOverride,
}

/// A namespace's failover policy; zero fields take the global setting.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailoverOverride {
    /// Consecutive failed probes that fail its primary (0: global).
    pub failed_probes: u32,
    /// Probe p99 round trip that fails its primary (0: global).
    pub p99_latency_ms: u64,
    /// Never fail over automatically; only an operator may.
    pub manual_only: bool,
}

impl FailoverOverride {
    /// The global policy with this namespace's settings applied.
    pub fn apply(&self, global: &crate::config::FailoverSection) -> crate::config::FailoverSection {
        let mut policy = global.clone();
        if self.failed_probes > 0 {
            policy.failed_probes = self.failed_probes;
        }
        if self.p99_latency_ms > 0 {
            policy.p99_latency_ms = self.p99_latency_ms;
        }
        if self.manual_only {
            policy.automatic = false;
        }
        policy
    }
}

/// A bound on standby lag; zero fields mean "no bound".
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MaxLag {
    /// Changes not yet confirmed by a standby.
    pub entries: u64,
    /// Age of the oldest change not yet confirmed, in milliseconds.
    pub ms: u64,
}

/// Where a standby copy of a namespace lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StandbyCopy {
    /// Its region.
    pub region: String,
    /// Its shard.
    pub shard: String,
}

/// The first stored form of [`Namespace`] (before standbys), upgraded on load.
#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceV1 {
    /// Name.
    pub name: String,
    /// Placement policy.
    pub policy: PlacementPolicy,
    /// Primary shard.
    pub shard: String,
    /// Epoch.
    pub epoch: u64,
}

impl Namespace {
    /// Whether changes ship to standbys (active-passive with standbys).
    pub fn replicated(&self) -> bool {
        matches!(self.policy.mode, NamespaceMode::ActivePassive { .. }) && !self.standbys.is_empty()
    }

    /// Whether the namespace asks for sync replication.
    pub fn wants_sync(&self) -> bool {
        matches!(
            self.policy.mode,
            NamespaceMode::ActivePassive { sync: true }
        )
    }

    /// Whether writes are acknowledged in sync mode now (asked for, and not
    /// degraded by the standby-loss policy).
    pub fn sync_in_force(&self) -> bool {
        self.wants_sync() && !self.sync_degraded
    }
}

impl FailoverRecord {
    /// Whether the record is a move of the primary (not a sync-mode change
    /// recorded in the history, whose two shards are the same).
    pub fn is_move(&self) -> bool {
        // A rebuild can record a primary that left its shard and came back
        // after the backup (same shard, new epoch): its takeover makes it
        // a move.
        self.from_shard != self.to_shard || self.takeover.is_some()
    }
}

/// A place backups go: an object-store URL in a region, allowed to hold
/// the data of namespaces whose jurisdictions include one of its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupLocation {
    /// Its name (`eu-vault`).
    pub name: String,
    /// The object-store URL (`file:///...`, `s3://bucket/prefix`).
    pub url: String,
    /// The region it is in.
    pub region: String,
    /// Jurisdictions it may hold data of (a subset of its region's).
    pub jurisdictions: BTreeSet<String>,
}

/// Format 1 of [`BackupRecord`] (before jurisdictions were recorded): read
/// from older catalogs and Raft logs, upgraded with none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRecordV1 {
    /// Its id.
    pub backup_id: String,
    /// The namespace.
    pub namespace: String,
    /// The location it is in.
    pub location: String,
    /// The location's region.
    pub location_region: String,
    /// The shard and node that wrote it.
    pub shard: String,
    /// The node.
    pub node_id: u64,
    /// The change sequence it is consistent at.
    pub change_seq: u64,
    /// Keys.
    pub key_count: u64,
    /// The namespace's digest at `change_seq`.
    pub digest: String,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Objects (chunks).
    pub objects: u32,
    /// Read back and digest-checked after writing.
    pub verified: bool,
    /// When it was taken (Unix ms).
    pub created_unix_ms: u64,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// A backup in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRecord {
    /// Its id.
    pub backup_id: String,
    /// The namespace.
    pub namespace: String,
    /// The location it is in.
    pub location: String,
    /// The location's region.
    pub location_region: String,
    /// The shard and node that wrote it.
    pub shard: String,
    /// The node.
    pub node_id: u64,
    /// The change sequence it is consistent at.
    pub change_seq: u64,
    /// Keys.
    pub key_count: u64,
    /// The namespace's digest at `change_seq`.
    pub digest: String,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Objects (chunks).
    pub objects: u32,
    /// Read back and digest-checked after writing.
    pub verified: bool,
    /// When it was taken (Unix ms).
    pub created_unix_ms: u64,
    /// How long it took.
    pub elapsed_ms: u64,
    /// The namespace's allowed jurisdictions when it was backed up: where a
    /// restore may put it (empty for format-1 entries, which restore only
    /// under the namespace's current policy).
    pub jurisdictions: BTreeSet<String>,
    /// An incremental backup: the backup it continues (`None`: a full one).
    pub parent: Option<String>,
    /// An incremental backup holds the changes after this sequence (its
    /// parent's); a full one, 0.
    pub from_seq: u64,
}

impl BackupRecord {
    /// Whether it holds only the changes since its parent.
    pub fn is_incremental(&self) -> bool {
        self.parent.is_some()
    }
}

impl From<BackupRecordV1> for BackupRecord {
    fn from(old: BackupRecordV1) -> Self {
        BackupRecord {
            backup_id: old.backup_id,
            namespace: old.namespace,
            location: old.location,
            location_region: old.location_region,
            shard: old.shard,
            node_id: old.node_id,
            change_seq: old.change_seq,
            key_count: old.key_count,
            digest: old.digest,
            stored_bytes: old.stored_bytes,
            objects: old.objects,
            verified: old.verified,
            created_unix_ms: old.created_unix_ms,
            elapsed_ms: old.elapsed_ms,
            jurisdictions: BTreeSet::new(),
            parent: None,
            from_seq: 0,
        }
    }
}

/// What a long-running job does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobSpec {
    /// Restores a catalogued backup into a namespace.
    Restore(RestoreSpec),
    /// A scheduled backup of a namespace, then retention.
    Backup(BackupSpec),
    /// Moves a namespace's primary copy to another region online.
    Migrate(Migration),
    /// Rebuilds a control plane restored from its backup: asks every shard
    /// what it holds before any lease is granted (see `crate::rebuild`).
    Rebuild(Rebuild),
}

/// A control plane restored from a backup, rebuilding what happened after
/// the backup from the shards' reports. While it runs, no lease is granted
/// and no failover, migration or other change is made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rebuild {
    /// The backup restored.
    pub backup_id: String,
    /// Where it was read from.
    pub location_url: String,
    /// When it was taken (Unix ms).
    pub backup_created_unix_ms: u64,
    /// The routing version it held.
    pub backup_routing_version: u64,
    /// Shards an operator named lost: not waited for.
    pub lost: Vec<String>,
    /// The outcome, once decided: each namespace with what became of it.
    pub outcome: Vec<RebuildOutcome>,
}

/// What a rebuild decided for one namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RebuildOutcome {
    /// The namespace.
    pub namespace: String,
    /// `kept`, `adopted`, `promoted`, `missing`, or `unknown` (held by a
    /// shard, absent from the backup: not routed).
    pub verdict: String,
    /// Its primary's shard afterwards (empty when not routed).
    pub shard: String,
    /// Its epoch afterwards.
    pub epoch: u64,
}

/// Where a rebuild places one namespace that moved after the backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Adoption {
    /// The namespace.
    pub namespace: String,
    /// Its primary's shard.
    pub shard: String,
    /// That shard's region.
    pub region: String,
    /// The epoch to configure.
    pub epoch: u64,
    /// The other copies, as standbys.
    pub standbys: Vec<StandbyCopy>,
    /// Where the primary took over, when known: (source epoch, position).
    pub takeover: Option<Takeover>,
    /// Whether the rebuild chose the primary (a promotion).
    pub promoted: bool,
}

/// An online migration (`namespace migrate`): what was asked and how far it
/// got. The driver records each step here, so a new control-plane leader
/// carries on from the last one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Migration {
    /// The namespace.
    pub namespace: String,
    /// The region it moves to.
    pub to_region: String,
    /// Longest write block allowed at the cutover (ms).
    pub max_blocked_ms: u64,
    /// How long the former primary's copy is kept after the cutover (ms).
    pub keep_source_ms: u64,
    /// How long the new copy may take to come within reach of the primary
    /// before the migration gives up (ms).
    pub catch_up_timeout_ms: u64,
    /// The primary's shard when it started.
    pub source_shard: String,
    /// Its region.
    pub source_region: String,
    /// The mode to return to once the source copy is gone (a region-locked
    /// namespace ships to its new copy as active-passive for the move).
    pub original_mode: NamespaceMode,
    /// The copy in the target region (empty until chosen).
    pub target_shard: String,
    /// Whether the migration added that copy (and so removes it on a
    /// rollback) rather than finding a standby there.
    pub added_target: bool,
    /// The cutover, once it happened.
    pub cutover: Option<Cutover>,
    /// The source copy was handed to the deletion worker.
    pub source_released: bool,
}

/// A migration's cutover: where and how long writes were blocked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cutover {
    /// When the route switched (Unix ms).
    pub at_unix_ms: u64,
    /// The change sequence both copies held, verified by digest.
    pub change_seq: u64,
    /// Their digest at that sequence.
    pub digest: String,
    /// The namespace's epoch after it.
    pub epoch: u64,
    /// Writes were blocked this long: from the source's lease revocation to
    /// the new primary holding its lease (ms); until the latter is
    /// confirmed, the time to the route switch.
    pub blocked_ms: u64,
}

/// A copy of a namespace erased from a shard while the namespace lives on
/// (a migration's source copy): shown by `namespace residency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Erasure {
    /// The shard that held the copy.
    pub shard: String,
    /// Its region.
    pub region: String,
    /// Why (`migration 7 to eu-west`).
    pub cause: String,
    /// When its deletion was asked for (Unix ms).
    pub requested_at_ms: u64,
    /// When the shard confirmed it (Unix ms; 0 while under way).
    pub erased_at_ms: u64,
}

/// A scheduled backup: which namespace, where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupSpec {
    /// The namespace.
    pub namespace: String,
    /// The location.
    pub location: String,
}

/// Backups of a namespace taken by the control plane on a schedule, with
/// retention.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupSchedule {
    /// The namespace (one schedule each).
    pub namespace: String,
    /// The location backups go to.
    pub location: String,
    /// A backup this often (ms).
    pub every_ms: u64,
    /// Backups older than this (ms) are removed, unless a kept backup's
    /// chain needs them; the newest backup always stays.
    pub keep_ms: u64,
    /// Incremental backups between two full ones (0: every backup full).
    pub incrementals_per_full: u32,
    /// Who set it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_unix_ms: u64,
}

/// The control plane's own backup schedule (`meridian control schedule`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlBackupSchedule {
    /// The location backups go to.
    pub location: String,
    /// A backup this often (ms).
    pub every_ms: u64,
    /// Backups older than this (ms) are removed; the newest always stays.
    pub keep_ms: u64,
    /// Who set it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_unix_ms: u64,
    /// The last control-plane backup written (scheduled or not).
    pub last_backup_id: String,
    /// When it was taken (Unix ms; 0: none yet).
    pub last_backup_unix_ms: u64,
}

/// A restore: which backup, into which name and region, under which policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreSpec {
    /// The backup.
    pub backup_id: String,
    /// The namespace it was taken of.
    pub source_namespace: String,
    /// The namespace it makes.
    pub target: String,
    /// The location it is read from.
    pub location: String,
    /// Incremental backups replayed after it, in order.
    pub incrementals: Vec<String>,
    /// The change sequence it restores to.
    pub at_seq: u64,
    /// The target's placement (home = the region restored into, the
    /// backup's jurisdictions), decided when the job started.
    pub policy: PlacementPolicy,
}

impl JobSpec {
    /// The namespace the job makes or changes.
    pub fn namespace(&self) -> &str {
        match self {
            JobSpec::Restore(restore) => &restore.target,
            JobSpec::Backup(backup) => &backup.namespace,
            JobSpec::Migrate(migration) => &migration.namespace,
            JobSpec::Rebuild(_) => "",
        }
    }

    /// The kind, as `jobs list` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Restore(_) => "restore",
            JobSpec::Backup(_) => "backup",
            JobSpec::Migrate(_) => "migrate",
            JobSpec::Rebuild(_) => "rebuild",
        }
    }

    /// Whether the job makes its namespace (and so reserves the name).
    pub fn makes_namespace(&self) -> bool {
        matches!(self, JobSpec::Restore(_))
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobState {
    /// The leader drives it (a new leader picks it up).
    Running,
    /// It finished.
    Succeeded,
    /// It stopped on an error and undid what it made.
    Failed,
    /// It was cancelled and undid what it made.
    Cancelled,
}

/// A long-running job the control-plane leader drives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    /// Its id (1, 2, ...).
    pub id: u64,
    /// What it does.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// The step it is at.
    pub step: String,
    /// The shard it works on (empty until chosen).
    pub shard: String,
    /// Progress: units done of the total.
    pub done_units: u64,
    /// Units in all (0: not known yet).
    pub total_units: u64,
    /// When it was started (Unix ms, the requester's clock).
    pub created_unix_ms: u64,
    /// When it last changed.
    pub updated_unix_ms: u64,
    /// The outcome or the reason it stopped.
    pub message: String,
    /// Who started it.
    pub requested_by: String,
    /// Times a leader (re)started it.
    pub attempts: u32,
    /// Someone asked it to stop.
    pub cancel_requested: bool,
    /// The digest it ended with (restores).
    pub digest: String,
    /// The change sequence it ended at (restores).
    pub change_seq: u64,
}

impl Job {
    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }
}

/// Progress of a running job, as its driver reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobProgress {
    /// The step.
    pub step: String,
    /// The shard it works on.
    pub shard: String,
    /// Units done.
    pub done_units: u64,
    /// Units in all.
    pub total_units: u64,
    /// Times a leader (re)started it.
    pub attempts: u32,
}

/// How a job ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobOutcome {
    /// Succeeded, failed or cancelled.
    pub state: JobState,
    /// The outcome or the reason.
    pub message: String,
    /// The digest it ended with.
    pub digest: String,
    /// The change sequence it ended at.
    pub change_seq: u64,
    /// A restore that succeeded: the shard whose copy becomes the
    /// namespace (placed and routed by the same command).
    pub place_on: Option<String>,
    /// A job that failed or was cancelled: a shard that may hold part of
    /// what it made; recorded as a deletion, so the copy surely goes (and
    /// is never adopted by a namespace of the same name).
    pub leftover_on: Option<String>,
}

/// One row of the routing table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// Namespace.
    pub namespace: String,
    /// Shard holding the primary.
    pub shard: String,
    /// Region of that shard.
    pub region: String,
    /// The namespace's epoch.
    pub epoch: u64,
    /// Its standby copies.
    pub standbys: Vec<StandbyCopy>,
    /// The namespace's allowed jurisdictions (shards re-check standbys
    /// against them).
    pub jurisdictions: BTreeSet<String>,
    /// The jurisdictions of each standby's region, by region.
    pub standby_jurisdictions: BTreeMap<String, BTreeSet<String>>,
    /// Active-active: the home shard and the standbys are peers.
    #[serde(default)]
    pub active_active: bool,
    /// The jurisdictions of the home region.
    #[serde(default)]
    pub home_jurisdictions: BTreeSet<String>,
}

/// Who changed what, when, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub sequence: u64,
    /// Wall-clock time the leader accepted the request (ms since the epoch).
    pub at_unix_ms: u64,
    /// Who asked (client identity).
    pub actor: String,
    /// What it was about: `namespace orders`, `region eu-west`, `shard
    /// us-east-a`, `identity spiffe://...`, `cluster` (empty in records
    /// written before targets were recorded).
    pub target: String,
    /// What was asked, in words.
    pub action: String,
    /// `ok`, or the refusal.
    pub outcome: String,
    /// The hash of the record before it (the chain's anchor for the first
    /// record kept; zeros for the first record ever).
    pub prev_hash: [u8; 32],
    /// SHA-256 over this record's fields and `prev_hash`
    /// (`crate::audit::record_hash`).
    pub hash: [u8; 32],
}

/// The second stored form of [`AuditRecord`] (with the hash chain, before
/// targets): loaded with an empty target, its hash unchanged.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditRecordV2 {
    /// Sequence number.
    pub sequence: u64,
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// Link to the record before.
    pub prev_hash: [u8; 32],
    /// Its hash.
    pub hash: [u8; 32],
}

/// The first stored form of [`AuditRecord`] (before the hash chain); the
/// chain is computed when such records are loaded.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditRecordV1 {
    /// Sequence number.
    pub sequence: u64,
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How it ended.
    pub outcome: String,
}

/// A namespace being deleted: its route is gone; these shards may still
/// hold a copy (data, change log, lost writes) until they confirm deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deletion {
    /// The namespace.
    pub name: String,
    /// Shards that may still hold a copy.
    pub shards: std::collections::BTreeSet<String>,
    /// When the deletion was asked for (Unix ms).
    pub requested_at_ms: u64,
}

/// One failover of a namespace: why, when, from where to where, and the
/// replication positions that bound what may have been lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailoverRecord {
    /// Sequence number, from 1.
    pub id: u64,
    /// The namespace.
    pub namespace: String,
    /// Old primary.
    pub from_region: String,
    /// Old primary's shard.
    pub from_shard: String,
    /// New primary.
    pub to_region: String,
    /// New primary's shard.
    pub to_shard: String,
    /// The namespace's epoch after the failover.
    pub epoch: u64,
    /// Why (the policy that fired, or the operator's request).
    pub cause: String,
    /// When the primary was declared failed (Unix ms).
    pub detected_at_ms: u64,
    /// When the new primary was chosen (Unix ms).
    pub promoted_at_ms: u64,
    /// The old primary's last known change sequence number.
    pub primary_seq: u64,
    /// The promoted standby's change sequence number: changes after it that
    /// the old primary had are the possible loss.
    pub promoted_seq: u64,
    /// When `primary_seq` was reported and until when the old primary may
    /// have acknowledged writes beyond it. Stored inline: the bytes are those
    /// of the two fields it holds.
    pub loss_window: LossWindow,
    /// Where the new primary really took over, once it reported it (a move
    /// only; `None` until then). `promoted_seq` is the position the promotion
    /// was decided on; the standby may have applied more of the old primary's
    /// changes before it became primary, so this is what fork points use.
    pub takeover: Option<Takeover>,
}

/// Where a failover's new primary took over: it held the history of
/// `source_epoch` up to `seq` when it became primary.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Takeover {
    /// The epoch the promoted copy held.
    pub source_epoch: u64,
    /// Its change position.
    pub seq: u64,
}

/// The second stored form of [`FailoverRecord`] (before `takeover`),
/// upgraded on load.
#[derive(Debug, Clone, Deserialize)]
pub struct FailoverRecordV2 {
    /// Sequence number.
    pub id: u64,
    /// The namespace.
    pub namespace: String,
    /// Old primary.
    pub from_region: String,
    /// Old primary's shard.
    pub from_shard: String,
    /// New primary.
    pub to_region: String,
    /// New primary's shard.
    pub to_shard: String,
    /// Epoch after the failover.
    pub epoch: u64,
    /// Why.
    pub cause: String,
    /// When the primary was declared failed (Unix ms).
    pub detected_at_ms: u64,
    /// When the new primary was chosen (Unix ms).
    pub promoted_at_ms: u64,
    /// The old primary's last known change sequence number.
    pub primary_seq: u64,
    /// The promoted standby's change sequence number.
    pub promoted_seq: u64,
    /// The loss window.
    pub loss_window: LossWindow,
}

impl FailoverRecordV2 {
    /// Upgrades to the current form. Before takeovers were reported, a
    /// promotion was assumed to continue the previous epoch at `promoted_seq`.
    pub fn upgrade(self) -> FailoverRecord {
        let takeover = (self.from_shard != self.to_shard && self.epoch > 1).then_some(Takeover {
            source_epoch: self.epoch - 1,
            seq: self.promoted_seq,
        });
        FailoverRecord {
            id: self.id,
            namespace: self.namespace,
            from_region: self.from_region,
            from_shard: self.from_shard,
            to_region: self.to_region,
            to_shard: self.to_shard,
            epoch: self.epoch,
            cause: self.cause,
            detected_at_ms: self.detected_at_ms,
            promoted_at_ms: self.promoted_at_ms,
            primary_seq: self.primary_seq,
            promoted_seq: self.promoted_seq,
            loss_window: self.loss_window,
            takeover,
        }
    }
}

/// The time bounds of a failover's loss window (Unix ms; 0: unknown).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LossWindow {
    /// When the old primary reported its last known position.
    pub reported_at_ms: u64,
    /// Until when it may have acknowledged writes: the end of the last write
    /// lease it was granted, or `reported_at_ms` when it was drained. Writes
    /// it acknowledged after reporting and before this are in the loss window
    /// too, beyond the reported position.
    pub writes_until_ms: u64,
}

/// The first stored form of [`FailoverRecord`] (before the time bounds of the
/// loss window), upgraded on load.
#[derive(Debug, Clone, Deserialize)]
pub struct FailoverRecordV1 {
    /// Sequence number.
    pub id: u64,
    /// The namespace.
    pub namespace: String,
    /// Old primary.
    pub from_region: String,
    /// Old primary's shard.
    pub from_shard: String,
    /// New primary.
    pub to_region: String,
    /// New primary's shard.
    pub to_shard: String,
    /// Epoch after the failover.
    pub epoch: u64,
    /// Why.
    pub cause: String,
    /// When the primary was declared failed (Unix ms).
    pub detected_at_ms: u64,
    /// When the new primary was chosen (Unix ms).
    pub promoted_at_ms: u64,
    /// The old primary's last known change sequence number.
    pub primary_seq: u64,
    /// The promoted standby's change sequence number.
    pub promoted_seq: u64,
}

impl FailoverRecord {
    /// Changes known to be missing from the new primary (the old primary may
    /// have logged more after its last report).
    pub fn known_loss(&self) -> u64 {
        self.primary_seq.saturating_sub(self.promoted_seq)
    }
}
