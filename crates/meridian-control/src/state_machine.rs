//! The control plane as a Raft [`Application`]: commands are applied to the
//! in-memory [`ControlState`] and every record they change is written to the
//! engine in the same batch, so the stored state always equals the in-memory
//! one at the applied index.

use crate::command::ControlCommand;
use crate::route_log::{RouteKey, RouteLog};
use crate::state::{Change, ControlState, Counters};
use fjall::{Keyspace, KeyspaceCreateOptions};
use meridian_dr::control::ControlRecord;
use meridian_raft::{Application, ApplyBatch, StorageEngine};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io;
use std::sync::{Arc, Mutex, RwLock};

/// Format byte in front of every stored control-plane record.
const RECORD_FORMAT: u8 = 1;
const COUNTERS_KEY: &[u8] = b"counters";

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_extend(value, vec![RECORD_FORMAT]).map_err(io::Error::other)
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> io::Result<T> {
    match raw.split_first() {
        Some((&RECORD_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control-plane record has an unknown format",
        )),
    }
}

/// Where the audit chain's anchor is kept.
const AUDIT_ANCHOR_KEY: &[u8] = b"audit_anchor";
/// The access policy, in `meridian_access`'s own versioned format.
const ACCESS_KEY: &[u8] = b"access";
/// The backup locations: a format byte, then postcard.
const LOCATIONS_KEY: &[u8] = b"dr_locations";
/// Format of the stored backup locations.
const LOCATIONS_FORMAT: u8 = 1;
/// Catalog entries: `dr_backup/ID`, a format byte, then postcard.
const BACKUP_PREFIX: &[u8] = b"dr_backup/";
/// Format of a stored catalog entry (2: with jurisdictions).
const BACKUP_FORMAT: u8 = 2;
/// The catalog format before jurisdictions, read and upgraded.
const BACKUP_FORMAT_V1: u8 = 1;
/// Jobs: `job/ID` (big-endian), a format byte, then postcard.
const JOB_PREFIX: &[u8] = b"job/";
/// Format of a stored job.
const JOB_FORMAT: u8 = 1;

/// Backup schedules: `dr_schedule/NAMESPACE`, a format byte, then postcard.
const SCHEDULE_PREFIX: &[u8] = b"dr_schedule/";
/// Format of a stored schedule.
const SCHEDULE_FORMAT: u8 = 1;

/// Erasure records of a live namespace: `erasures/NAMESPACE`, a format
/// byte, then postcard.
const ERASURE_PREFIX: &[u8] = b"erasures/";
/// Format of stored erasure records.
const ERASURE_FORMAT: u8 = 1;

/// The control plane's own backup schedule: a format byte, then postcard.
const CONTROL_SCHEDULE_KEY: &[u8] = b"control_backup_schedule";
/// Format of the stored control-plane backup schedule.
const CONTROL_SCHEDULE_FORMAT: u8 = 1;

fn encode_control_schedule(schedule: &crate::model::ControlBackupSchedule) -> io::Result<Vec<u8>> {
    postcard::to_extend(schedule, vec![CONTROL_SCHEDULE_FORMAT]).map_err(io::Error::other)
}

fn decode_control_schedule(raw: &[u8]) -> io::Result<crate::model::ControlBackupSchedule> {
    match raw.split_first() {
        Some((&CONTROL_SCHEDULE_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the control-plane backup schedule has an unknown format",
        )),
    }
}

fn erasure_key(namespace: &str) -> Vec<u8> {
    let mut key = ERASURE_PREFIX.to_vec();
    key.extend_from_slice(namespace.as_bytes());
    key
}

fn encode_erasures(erasures: &[crate::model::Erasure]) -> io::Result<Vec<u8>> {
    postcard::to_extend(erasures, vec![ERASURE_FORMAT]).map_err(io::Error::other)
}

fn decode_erasures(raw: &[u8]) -> io::Result<Vec<crate::model::Erasure>> {
    match raw.split_first() {
        Some((&ERASURE_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "stored erasure records have an unknown format",
        )),
    }
}

fn schedule_key(namespace: &str) -> Vec<u8> {
    let mut key = SCHEDULE_PREFIX.to_vec();
    key.extend_from_slice(namespace.as_bytes());
    key
}

fn encode_schedule(schedule: &crate::model::BackupSchedule) -> io::Result<Vec<u8>> {
    postcard::to_extend(schedule, vec![SCHEDULE_FORMAT]).map_err(io::Error::other)
}

fn decode_schedule(raw: &[u8]) -> io::Result<crate::model::BackupSchedule> {
    match raw.split_first() {
        Some((&SCHEDULE_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a stored backup schedule has an unknown format",
        )),
    }
}

fn job_key(id: u64) -> Vec<u8> {
    let mut key = JOB_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn encode_job(job: &crate::model::Job) -> io::Result<Vec<u8>> {
    postcard::to_extend(job, vec![JOB_FORMAT]).map_err(io::Error::other)
}

fn decode_job(raw: &[u8]) -> io::Result<crate::model::Job> {
    match raw.split_first() {
        Some((&JOB_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a stored job has an unknown format",
        )),
    }
}

fn backup_key(id: &str) -> Vec<u8> {
    let mut key = BACKUP_PREFIX.to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

fn encode_backup(record: &crate::model::BackupRecord) -> io::Result<Vec<u8>> {
    postcard::to_extend(record, vec![BACKUP_FORMAT]).map_err(io::Error::other)
}

fn decode_backup(raw: &[u8]) -> io::Result<crate::model::BackupRecord> {
    match raw.split_first() {
        Some((&BACKUP_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        Some((&BACKUP_FORMAT_V1, body)) => {
            postcard::from_bytes::<crate::model::BackupRecordV1>(body)
                .map(Into::into)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a backup catalog entry has an unknown format",
        )),
    }
}

fn encode_locations(
    locations: &std::collections::BTreeMap<String, crate::model::BackupLocation>,
) -> io::Result<Vec<u8>> {
    postcard::to_extend(locations, vec![LOCATIONS_FORMAT]).map_err(io::Error::other)
}

fn decode_locations(
    raw: &[u8],
) -> io::Result<std::collections::BTreeMap<String, crate::model::BackupLocation>> {
    match raw.split_first() {
        Some((&LOCATIONS_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "backup locations have an unknown format",
        )),
    }
}

/// Audit records are stored in format 3 (with the target); format 2
/// records (hash chain, no target) load with an empty target; format 1
/// records get their links and hashes computed on load.
const AUDIT_FORMAT: u8 = 3;
/// The audit format before targets.
const AUDIT_FORMAT_V2: u8 = 2;

fn encode_audit(record: &crate::model::AuditRecord) -> io::Result<Vec<u8>> {
    postcard::to_extend(record, vec![AUDIT_FORMAT]).map_err(io::Error::other)
}

/// Decodes a stored audit record; a format-1 record is sealed linking to
/// `prev` (the record loaded before it).
fn decode_audit(raw: &[u8], prev: [u8; 32]) -> io::Result<crate::model::AuditRecord> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    match raw.split_first() {
        Some((&AUDIT_FORMAT, body)) => postcard::from_bytes(body).map_err(invalid),
        Some((&AUDIT_FORMAT_V2, body)) => {
            let old: crate::model::AuditRecordV2 = postcard::from_bytes(body).map_err(invalid)?;
            Ok(crate::model::AuditRecord {
                sequence: old.sequence,
                at_unix_ms: old.at_unix_ms,
                actor: old.actor,
                target: String::new(),
                action: old.action,
                outcome: old.outcome,
                prev_hash: old.prev_hash,
                hash: old.hash,
            })
        }
        Some((&RECORD_FORMAT, body)) => {
            let old: crate::model::AuditRecordV1 = postcard::from_bytes(body).map_err(invalid)?;
            Ok(crate::audit::sealed(
                crate::audit::AuditFields {
                    sequence: old.sequence,
                    at_unix_ms: old.at_unix_ms,
                    actor: &old.actor,
                    target: "",
                    action: &old.action,
                    outcome: &old.outcome,
                },
                prev,
            ))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "audit record has an unknown format",
        )),
    }
}

/// Failover records are stored in format 3 (with the takeover); format 2
/// (before it) and format 1 (before the loss window's time bounds) are
/// upgraded.
const FAILOVER_FORMAT: u8 = 3;

fn encode_failover(record: &crate::model::FailoverRecord) -> io::Result<Vec<u8>> {
    postcard::to_extend(record, vec![FAILOVER_FORMAT]).map_err(io::Error::other)
}

fn decode_failover(raw: &[u8]) -> io::Result<crate::model::FailoverRecord> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    match raw.split_first() {
        Some((&FAILOVER_FORMAT, body)) => postcard::from_bytes(body).map_err(invalid),
        Some((&2, body)) => {
            let old: crate::model::FailoverRecordV2 =
                postcard::from_bytes(body).map_err(invalid)?;
            Ok(old.upgrade())
        }
        Some((&1, body)) => {
            let old: crate::model::FailoverRecordV1 =
                postcard::from_bytes(body).map_err(invalid)?;
            Ok(crate::model::FailoverRecordV2 {
                id: old.id,
                namespace: old.namespace,
                from_region: old.from_region,
                from_shard: old.from_shard,
                to_region: old.to_region,
                to_shard: old.to_shard,
                epoch: old.epoch,
                cause: old.cause,
                detected_at_ms: old.detected_at_ms,
                promoted_at_ms: old.promoted_at_ms,
                primary_seq: old.primary_seq,
                promoted_seq: old.promoted_seq,
                loss_window: crate::model::LossWindow::default(),
            }
            .upgrade())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "failover record has an unknown format",
        )),
    }
}

/// Namespaces are stored in format 3 (with the standby-loss policy); formats
/// 1 (before standbys) and 2 are upgraded.
const NAMESPACE_FORMAT: u8 = 3;

fn encode_namespace(namespace: &crate::model::Namespace) -> io::Result<Vec<u8>> {
    postcard::to_extend(namespace, vec![NAMESPACE_FORMAT]).map_err(io::Error::other)
}

fn decode_namespace(raw: &[u8]) -> io::Result<crate::model::Namespace> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    match raw.split_first() {
        Some((&NAMESPACE_FORMAT, body)) => postcard::from_bytes(body).map_err(invalid),
        Some((&1, body)) => {
            let old: crate::model::NamespaceV1 = postcard::from_bytes(body).map_err(invalid)?;
            Ok(crate::model::Namespace {
                name: old.name,
                policy: old.policy,
                shard: old.shard,
                epoch: old.epoch,
                standbys: Vec::new(),
                max_lag: crate::model::MaxLag::default(),
                failover: crate::model::FailoverOverride::default(),
                on_standby_loss: Default::default(),
                sync_degraded: false,
            })
        }
        Some((&2, body)) => {
            let old: crate::model::NamespaceV2 = postcard::from_bytes(body).map_err(invalid)?;
            Ok(crate::model::Namespace {
                name: old.name,
                policy: old.policy,
                shard: old.shard,
                epoch: old.epoch,
                standbys: old.standbys,
                max_lag: old.max_lag,
                failover: old.failover,
                on_standby_loss: Default::default(),
                sync_degraded: false,
            })
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "namespace record has an unknown format",
        )),
    }
}

fn to_io(err: fjall::Error) -> io::Error {
    io::Error::other(err)
}

/// The control plane's replicated state machine.
pub struct ControlStateMachine {
    regions: Keyspace,
    shards: Keyspace,
    namespaces: Keyspace,
    audit: Keyspace,
    failovers: Keyspace,
    /// Namespaces being deleted, by name.
    deletions: Keyspace,
    meta: Keyspace,
    /// Opens stored records (sealed when encryption at rest is on).
    sealer: Arc<meridian_raft::at_rest::Sealer>,
    state: Arc<RwLock<ControlState>>,
    /// The routing-table version, announced after every applied command so
    /// route watchers wake up without polling.
    versions: tokio::sync::watch::Sender<u64>,
    /// What changed at each recent routing version. Written under the state's
    /// write lock, so a reader holding the state's read lock sees both agree.
    route_log: Mutex<RouteLog>,
}

impl ControlStateMachine {
    /// Opens the control plane's keyspaces in `engine` and loads the state.
    pub fn open(engine: &StorageEngine) -> io::Result<Self> {
        let keyspace = |name| engine.keyspace(name, KeyspaceCreateOptions::default);
        let machine = Self {
            regions: keyspace(REGIONS)?,
            shards: keyspace(SHARDS)?,
            namespaces: keyspace(NAMESPACES)?,
            audit: keyspace(AUDIT)?,
            failovers: keyspace(FAILOVERS)?,
            deletions: keyspace(DELETIONS)?,
            meta: keyspace(META)?,
            sealer: engine.sealer().clone(),
            state: Arc::new(RwLock::new(ControlState::default())),
            versions: tokio::sync::watch::channel(0).0,
            route_log: Mutex::new(RouteLog::default()),
        };
        machine.reload()?;
        Ok(machine)
    }

    /// A shared handle on the current state, for readers.
    pub fn state(&self) -> Arc<RwLock<ControlState>> {
        self.state.clone()
    }

    /// Routes and shards changed after routing `version`, or `None` when the
    /// recent-change log does not reach back that far (send the full table).
    /// Call it while holding the state's read lock (e.g. inside
    /// `ControlNode::with_state`) so the answer matches the state being read.
    pub fn route_changes_since(&self, version: u64) -> Option<Vec<RouteKey>> {
        self.route_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(version)
    }

    /// Follows the routing-table version.
    pub fn subscribe_versions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.versions.subscribe()
    }

    fn keyspace(&self, name: &str) -> io::Result<&Keyspace> {
        Ok(match name {
            REGIONS => &self.regions,
            SHARDS => &self.shards,
            NAMESPACES => &self.namespaces,
            AUDIT => &self.audit,
            FAILOVERS => &self.failovers,
            DELETIONS => &self.deletions,
            META => &self.meta,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no control-plane keyspace {other:?}"),
                ));
            }
        })
    }

    fn reload(&self) -> io::Result<()> {
        let mut records = Vec::new();
        for (name, keyspace) in [
            (REGIONS, &self.regions),
            (SHARDS, &self.shards),
            (NAMESPACES, &self.namespaces),
            (AUDIT, &self.audit),
            (FAILOVERS, &self.failovers),
            (DELETIONS, &self.deletions),
            (META, &self.meta),
        ] {
            for guard in keyspace.iter() {
                let (key, raw) = guard.into_inner().map_err(to_io)?;
                records.push(ControlRecord {
                    keyspace: name.to_string(),
                    key: key.to_vec(),
                    value: self.sealer.open(&raw)?.into_owned(),
                });
            }
        }
        let state = decode_state(&records)?;
        let version = state.counters.routing_version;
        let mut current = self.state.write().unwrap_or_else(|e| e.into_inner());
        *current = state;
        // Changes before a reload (e.g. a snapshot install) are unknown here.
        *self.route_log.lock().unwrap_or_else(|e| e.into_inner()) = RouteLog::starting_at(version);
        drop(current);
        self.versions.send_replace(version);
        Ok(())
    }

    fn persist(
        &self,
        state: &ControlState,
        change: &Change,
        batch: &mut ApplyBatch,
    ) -> io::Result<()> {
        match stored(state, change)? {
            Some((keyspace, key, Some(value))) => {
                batch.insert(self.keyspace(keyspace)?, key, value)
            }
            Some((keyspace, key, None)) => batch.remove(self.keyspace(keyspace)?, key),
            None => {}
        }
        Ok(())
    }

    /// Every record of the current state as stored (not sealed), read at
    /// one applied index: what a control-plane backup holds.
    pub fn backup_records(&self) -> io::Result<Vec<ControlRecord>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        encode_state(&state)
    }
}

/// The control plane's keyspaces, by name (also the names in backups).
const REGIONS: &str = "control_regions";
const SHARDS: &str = "control_shards";
const NAMESPACES: &str = "control_namespaces";
const AUDIT: &str = "control_audit";
const FAILOVERS: &str = "control_failovers";
const DELETIONS: &str = "control_deletions";
const META: &str = "control_meta";

/// Where one change of `state` is stored: keyspace, key, and the value
/// (`None`: removed); `None` when the change stores nothing.
type Stored = Option<(&'static str, Vec<u8>, Option<Vec<u8>>)>;

fn stored(state: &ControlState, change: &Change) -> io::Result<Stored> {
    let put = |keyspace, key: Vec<u8>, value| Ok(Some((keyspace, key, Some(value))));
    let remove = |keyspace, key: Vec<u8>| Ok(Some((keyspace, key, None)));
    match change {
        Change::Region(name) => match state.regions.get(name) {
            Some(region) => put(REGIONS, name.as_bytes().to_vec(), encode(region)?),
            None => remove(REGIONS, name.as_bytes().to_vec()),
        },
        Change::Shard(id) => match state.shards.get(id) {
            Some(shard) => put(SHARDS, id.as_bytes().to_vec(), encode(shard)?),
            None => remove(SHARDS, id.as_bytes().to_vec()),
        },
        Change::Namespace(name) => match state.namespaces.get(name) {
            Some(namespace) => put(
                NAMESPACES,
                name.as_bytes().to_vec(),
                encode_namespace(namespace)?,
            ),
            None => remove(NAMESPACES, name.as_bytes().to_vec()),
        },
        Change::Audit(sequence) => match state.audit.get(sequence) {
            Some(record) => put(
                AUDIT,
                sequence.to_be_bytes().to_vec(),
                encode_audit(record)?,
            ),
            None => Ok(None),
        },
        Change::AuditRemoved(sequence) => remove(AUDIT, sequence.to_be_bytes().to_vec()),
        Change::AuditAnchor => put(
            META,
            AUDIT_ANCHOR_KEY.to_vec(),
            encode(&state.audit_anchor)?,
        ),
        Change::Failover(id) => match state.failovers.get(id) {
            Some(record) => put(
                FAILOVERS,
                id.to_be_bytes().to_vec(),
                encode_failover(record)?,
            ),
            None => remove(FAILOVERS, id.to_be_bytes().to_vec()),
        },
        Change::Counters => put(META, COUNTERS_KEY.to_vec(), encode(&state.counters)?),
        Change::Deletion(name) => match state.deletions.get(name) {
            Some(deletion) => put(DELETIONS, name.as_bytes().to_vec(), encode(deletion)?),
            None => remove(DELETIONS, name.as_bytes().to_vec()),
        },
        Change::Access => put(META, ACCESS_KEY.to_vec(), state.access.encode()),
        Change::Backup(id) => match state.backups.get(id) {
            Some(record) => put(META, backup_key(id), encode_backup(record)?),
            None => remove(META, backup_key(id)),
        },
        Change::Schedule(namespace) => match state.schedules.get(namespace) {
            Some(schedule) => put(META, schedule_key(namespace), encode_schedule(schedule)?),
            None => remove(META, schedule_key(namespace)),
        },
        Change::Erasures(namespace) => match state.erasures.get(namespace) {
            Some(erasures) => put(META, erasure_key(namespace), encode_erasures(erasures)?),
            None => remove(META, erasure_key(namespace)),
        },
        Change::Job(id) => match state.jobs.get(id) {
            Some(job) => put(META, job_key(*id), encode_job(job)?),
            None => remove(META, job_key(*id)),
        },
        Change::Locations => put(
            META,
            LOCATIONS_KEY.to_vec(),
            encode_locations(&state.locations)?,
        ),
        Change::ControlSchedule => match &state.control_schedule {
            Some(schedule) => put(
                META,
                CONTROL_SCHEDULE_KEY.to_vec(),
                encode_control_schedule(schedule)?,
            ),
            None => remove(META, CONTROL_SCHEDULE_KEY.to_vec()),
        },
    }
}

/// Every record of `state` in its stored form, keyspace by keyspace in key
/// order (what a control-plane backup holds).
pub fn encode_state(state: &ControlState) -> io::Result<Vec<ControlRecord>> {
    let mut records = Vec::new();
    for change in state.every_record() {
        if let Some((keyspace, key, Some(value))) = stored(state, &change)? {
            records.push(ControlRecord {
                keyspace: keyspace.to_string(),
                key,
                value,
            });
        }
    }
    records.sort_by(|a, b| (&a.keyspace, &a.key).cmp(&(&b.keyspace, &b.key)));
    Ok(records)
}

/// The state that stored (unsealed) `records` hold, in any order. Every
/// record goes through its versioned decoder (older formats are upgraded);
/// a record of a keyspace or key this build does not know is refused.
pub fn decode_state(records: &[ControlRecord]) -> io::Result<ControlState> {
    let mut sorted: Vec<&ControlRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (&a.keyspace, &a.key).cmp(&(&b.keyspace, &b.key)));
    let mut state = ControlState::default();
    // The audit chain's anchor first: the first kept record links to it.
    if let Some(anchor) = sorted
        .iter()
        .find(|r| r.keyspace == META && r.key == AUDIT_ANCHOR_KEY)
    {
        state.audit_anchor = decode(&anchor.value)?;
    }
    for record in sorted {
        let raw = record.value.as_slice();
        let key = record.key.as_slice();
        match record.keyspace.as_str() {
            REGIONS => {
                let region: crate::model::Region = decode(raw)?;
                state.regions.insert(region.name.clone(), region);
            }
            SHARDS => {
                let shard: crate::model::Shard = decode(raw)?;
                state.shards.insert(shard.id.clone(), shard);
            }
            NAMESPACES => {
                let namespace = decode_namespace(raw)?;
                state.namespaces.insert(namespace.name.clone(), namespace);
            }
            AUDIT => {
                // In sequence order (big-endian keys): a record from before
                // the chain links to the one loaded just before it.
                let prev = state
                    .audit
                    .values()
                    .next_back()
                    .map_or(state.audit_anchor, |r| r.hash);
                let record = decode_audit(raw, prev)?;
                state.audit.insert(record.sequence, record);
            }
            FAILOVERS => {
                let record = decode_failover(raw)?;
                state.failovers.insert(record.id, record);
            }
            DELETIONS => {
                let deletion: crate::model::Deletion = decode(raw)?;
                state.deletions.insert(deletion.name.clone(), deletion);
            }
            META if key == AUDIT_ANCHOR_KEY => {}
            META if key == ACCESS_KEY => {
                state.access = meridian_access::AccessPolicy::decode(raw)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            META if key == LOCATIONS_KEY => state.locations = decode_locations(raw)?,
            META if key == COUNTERS_KEY => state.counters = decode::<Counters>(raw)?,
            META if key == CONTROL_SCHEDULE_KEY => {
                state.control_schedule = Some(decode_control_schedule(raw)?)
            }
            META if key.starts_with(BACKUP_PREFIX) => {
                let backup = decode_backup(raw)?;
                state.backups.insert(backup.backup_id.clone(), backup);
            }
            META if key.starts_with(SCHEDULE_PREFIX) => {
                let schedule = decode_schedule(raw)?;
                state.schedules.insert(schedule.namespace.clone(), schedule);
            }
            META if key.starts_with(ERASURE_PREFIX) => {
                let name = String::from_utf8_lossy(&key[ERASURE_PREFIX.len()..]).into_owned();
                state.erasures.insert(name, decode_erasures(raw)?);
            }
            META if key.starts_with(JOB_PREFIX) => {
                let job = decode_job(raw)?;
                state.jobs.insert(job.id, job);
            }
            META => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a control-plane record this build does not know: {}",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a control-plane keyspace this build does not know: {other:?}"),
                ));
            }
        }
    }
    state.rebuild_derived();
    Ok(state)
}

impl Application for ControlStateMachine {
    fn keyspaces(&self) -> Vec<Keyspace> {
        vec![
            self.regions.clone(),
            self.shards.clone(),
            self.namespaces.clone(),
            self.audit.clone(),
            self.failovers.clone(),
            self.deletions.clone(),
            self.meta.clone(),
        ]
    }

    fn apply(&self, _index: u64, command: &[u8], batch: &mut ApplyBatch) -> io::Result<Vec<u8>> {
        let command: ControlCommand = postcard::from_bytes(command)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = state.counters.routing_version;
        let (result, changes) = state.apply(command);
        for change in &changes {
            self.persist(&state, change, batch)?;
        }
        let version = state.counters.routing_version;
        if crate::rebuild::generation(version) != crate::rebuild::generation(before) {
            // A restore replaced the whole state: every subscriber gets the
            // full table (the versions before it belong to another history).
            *self.route_log.lock().unwrap_or_else(|e| e.into_inner()) =
                RouteLog::starting_at(version);
        } else if version != before {
            let mut log = self.route_log.lock().unwrap_or_else(|e| e.into_inner());
            for change in &changes {
                match change {
                    Change::Namespace(name) => {
                        log.record(version, RouteKey::Namespace(name.clone()))
                    }
                    Change::Shard(id) => log.record(version, RouteKey::Shard(id.clone())),
                    Change::Access => log.record(version, RouteKey::Access),
                    Change::Region(_)
                    | Change::Audit(_)
                    | Change::AuditRemoved(_)
                    | Change::AuditAnchor
                    | Change::Failover(_)
                    | Change::Counters
                    | Change::Deletion(_)
                    | Change::Locations
                    | Change::Job(_)
                    | Change::Schedule(_)
                    | Change::Erasures(_)
                    | Change::ControlSchedule
                    | Change::Backup(_) => {}
                }
            }
        }
        drop(state);
        self.versions.send_if_modified(|current| {
            let changed = *current != version;
            *current = version;
            changed
        });
        postcard::to_stdvec(&result).map_err(io::Error::other)
    }

    fn restored(&self) -> io::Result<()> {
        self.reload()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ControlResult, Requester};
    use crate::model::Region;
    use meridian_raft::metrics::StorageMetrics;

    #[test]
    fn failover_records_of_every_format_decode() {
        let record = crate::model::FailoverRecord {
            id: 3,
            namespace: "payments".into(),
            from_region: "us-east".into(),
            from_shard: "us-east-s1".into(),
            to_region: "eu-west".into(),
            to_shard: "eu-west-s1".into(),
            epoch: 2,
            cause: "test".into(),
            detected_at_ms: 10,
            promoted_at_ms: 11,
            primary_seq: 40,
            promoted_seq: 38,
            loss_window: crate::model::LossWindow {
                reported_at_ms: 12,
                writes_until_ms: 13,
            },
            takeover: Some(crate::model::Takeover {
                source_epoch: 1,
                seq: 39,
            }),
        };
        let stored = encode_failover(&record).unwrap();
        assert_eq!(
            stored,
            golden("control-failover-v3.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_failover(&stored).unwrap(), record);
        // Format 2 (before the takeover): the loss window is two plain
        // fields; upgraded assuming the promotion continued epoch 1 at
        // `promoted_seq`.
        let flat = (
            3u64,
            "payments",
            "us-east",
            "us-east-s1",
            "eu-west",
            "eu-west-s1",
            2u64,
            "test",
            (10u64, 11u64, 40u64, 38u64, 12u64, 13u64),
        );
        let mut v2 = vec![2u8];
        v2.extend(postcard::to_stdvec(&flat).unwrap());
        let v2 = golden("control-failover-v2.bin", &v2);
        assert_eq!(
            decode_failover(&v2).unwrap(),
            crate::model::FailoverRecord {
                takeover: Some(crate::model::Takeover {
                    source_epoch: 1,
                    seq: 38
                }),
                ..record
            }
        );
    }

    /// The golden sample `name` in `testdata/formats/`, written first from
    /// `bytes` when `MERIDIAN_BLESS_FORMATS=1` (a deliberate format change).
    fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/formats")
            .join(name);
        if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some_and(|v| v == "1") {
            std::fs::write(&path, bytes).unwrap();
        }
        std::fs::read(&path).unwrap_or_else(|e| panic!("golden sample {}: {e}", path.display()))
    }

    #[test]
    fn namespace_and_deletion_records_match_their_golden_samples() {
        let namespace = crate::model::Namespace {
            name: "payments".into(),
            policy: crate::model::PlacementPolicy {
                home_region: "us-east".into(),
                mode: crate::model::NamespaceMode::ActivePassive { sync: true },
                standby_regions: vec!["eu-west".into()],
                allowed_jurisdictions: ["EU".to_string(), "US".to_string()].into(),
            },
            shard: "us-east-s1".into(),
            epoch: 2,
            standbys: vec![crate::model::StandbyCopy {
                region: "eu-west".into(),
                shard: "eu-west-s1".into(),
            }],
            max_lag: crate::model::MaxLag {
                entries: 500,
                ms: 0,
            },
            failover: crate::model::FailoverOverride {
                failed_probes: 5,
                p99_latency_ms: 0,
                manual_only: false,
            },
            on_standby_loss: crate::model::StandbyLossPolicy::Degrade,
            sync_degraded: true,
        };
        let stored = encode_namespace(&namespace).unwrap();
        assert_eq!(
            stored,
            golden("control-namespace-v3.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_namespace(&stored).unwrap(), namespace);
        // Format 2 (before the standby-loss policy) upgrades to refuse, not degraded.
        let v2 = crate::model::NamespaceV2 {
            name: namespace.name.clone(),
            policy: namespace.policy.clone(),
            shard: namespace.shard.clone(),
            epoch: namespace.epoch,
            standbys: namespace.standbys.clone(),
            max_lag: namespace.max_lag,
            failover: namespace.failover,
        };
        let mut old = vec![2u8];
        old.extend(
            postcard::to_stdvec(&(
                &v2.name,
                &v2.policy,
                &v2.shard,
                v2.epoch,
                &v2.standbys,
                v2.max_lag,
                v2.failover,
            ))
            .unwrap(),
        );
        let old = golden("control-namespace-v2.bin", &old);
        let upgraded = decode_namespace(&old).unwrap();
        assert_eq!(
            upgraded.on_standby_loss,
            crate::model::StandbyLossPolicy::Refuse
        );
        assert!(!upgraded.sync_degraded);
        assert_eq!(upgraded.standbys, namespace.standbys);
        let deletion = crate::model::Deletion {
            name: "payments".into(),
            shards: ["eu-west-s1".to_string(), "us-east-s1".to_string()].into(),
            requested_at_ms: 1_700_000_000_000,
        };
        let stored = encode(&deletion).unwrap();
        assert_eq!(
            stored,
            golden("control-deletion-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode::<crate::model::Deletion>(&stored).unwrap(), deletion);
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let engine = StorageEngine::open(dir.path(), Arc::new(StorageMetrics::default())).unwrap();
        let machine = ControlStateMachine::open(&engine).unwrap();
        let command = ControlCommand::PutRegion {
            region: Region {
                name: "eu-west".into(),
                jurisdictions: ["EU".to_string()].into(),
                latitude: 53.3,
                longitude: -6.3,
            },
            requester: Requester {
                actor: "test".into(),
                at_unix_ms: 7,
            },
        };
        let mut batch = ApplyBatch::new(&engine);
        let raw = machine
            .apply(1, &postcard::to_stdvec(&command).unwrap(), &mut batch)
            .unwrap();
        batch.commit().unwrap();
        let result: ControlResult = postcard::from_bytes(&raw).unwrap();
        assert_eq!(result, ControlResult::RegionStored);
        let before = machine.state().read().unwrap().clone();

        let reopened = ControlStateMachine::open(&engine).unwrap();
        assert_eq!(*reopened.state().read().unwrap(), before);
        assert_eq!(before.audit.len(), 1);
        let records: Vec<_> = before.audit.values().cloned().collect();
        assert_eq!(crate::audit::verify(&before.audit_anchor, &records), Ok(1));
    }

    #[test]
    fn backup_locations_match_their_golden_sample() {
        let locations: std::collections::BTreeMap<String, crate::model::BackupLocation> = [(
            "eu-vault".to_string(),
            crate::model::BackupLocation {
                name: "eu-vault".into(),
                url: "file:///var/backups/eu".into(),
                region: "eu-west".into(),
                jurisdictions: ["EU".to_string()].into(),
            },
        )]
        .into();
        let stored = encode_locations(&locations).unwrap();
        assert_eq!(
            stored,
            golden("control-dr-locations-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_locations(&stored).unwrap(), locations);
        assert!(decode_locations(&[9]).is_err());
        let v1 = crate::model::BackupRecordV1 {
            backup_id: "orders-1796040000000-0a1b2c3d".into(),
            namespace: "orders".into(),
            location: "eu-vault".into(),
            location_region: "eu-west".into(),
            shard: "eu-west-a".into(),
            node_id: 2,
            change_seq: 77,
            key_count: 1_000,
            digest: "ab".repeat(32),
            stored_bytes: 123_456,
            objects: 3,
            verified: true,
            created_unix_ms: 1_796_040_000_000,
            elapsed_ms: 420,
        };
        // Format 1 (no jurisdictions) still loads, with none.
        let mut old = vec![BACKUP_FORMAT_V1];
        old.extend(postcard::to_stdvec(&v1).unwrap());
        let old = golden("control-dr-backup-v1.bin", &old);
        let upgraded: crate::model::BackupRecord = v1.into();
        assert_eq!(decode_backup(&old).unwrap(), upgraded);
        let record = crate::model::BackupRecord {
            jurisdictions: ["EU".to_string()].into(),
            parent: Some("orders-1796030000000-00aa11bb".into()),
            from_seq: 70,
            ..upgraded
        };
        let stored = encode_backup(&record).unwrap();
        assert_eq!(
            stored,
            golden("control-dr-backup-v2.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_backup(&stored).unwrap(), record);
    }

    #[test]
    fn schedules_match_their_golden_sample() {
        let schedule = crate::model::BackupSchedule {
            namespace: "orders".into(),
            location: "eu-vault".into(),
            every_ms: 6 * 3_600_000,
            keep_ms: 30 * 86_400_000,
            incrementals_per_full: 6,
            created_by: "spiffe://meridian/user/admin".into(),
            created_unix_ms: 1_796_040_000_000,
        };
        let stored = encode_schedule(&schedule).unwrap();
        assert_eq!(
            stored,
            golden("control-dr-schedule-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_schedule(&stored).unwrap(), schedule);
        assert!(decode_schedule(&[9]).is_err());
    }

    #[test]
    fn erasures_match_their_golden_sample() {
        let erasures = vec![crate::model::Erasure {
            shard: "us-east-s1".into(),
            region: "us-east".into(),
            cause: "migration 4 to eu-west".into(),
            requested_at_ms: 1_796_040_000_000,
            erased_at_ms: 1_796_040_002_500,
        }];
        let stored = encode_erasures(&erasures).unwrap();
        assert_eq!(
            stored,
            golden("control-erasures-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_erasures(&stored).unwrap(), erasures);
        assert!(decode_erasures(&[9]).is_err());
    }

    #[test]
    fn migration_jobs_match_their_golden_sample() {
        let job = crate::model::Job {
            id: 4,
            spec: crate::model::JobSpec::Migrate(crate::model::Migration {
                namespace: "orders".into(),
                to_region: "eu-west".into(),
                max_blocked_ms: 1000,
                keep_source_ms: 3_600_000,
                catch_up_timeout_ms: 1_800_000,
                source_shard: "us-east-s1".into(),
                source_region: "us-east".into(),
                original_mode: crate::model::NamespaceMode::RegionLocked,
                target_shard: "eu-west-s1".into(),
                added_target: true,
                cutover: Some(crate::model::Cutover {
                    at_unix_ms: 1_796_040_001_000,
                    change_seq: 812,
                    digest: "5f1d".into(),
                    epoch: 2,
                    blocked_ms: 143,
                }),
                source_released: false,
            }),
            state: crate::model::JobState::Running,
            step: "cut over; keeping the source copy".into(),
            shard: "eu-west-s1".into(),
            done_units: 812,
            total_units: 812,
            created_unix_ms: 1_796_040_000_000,
            updated_unix_ms: 1_796_040_001_000,
            message: String::new(),
            requested_by: "spiffe://meridian/user/admin".into(),
            attempts: 1,
            cancel_requested: false,
            digest: String::new(),
            change_seq: 812,
        };
        let stored = encode_job(&job).unwrap();
        assert_eq!(
            stored,
            golden("control-job-migrate-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_job(&stored).unwrap(), job);
    }

    #[test]
    fn rebuild_jobs_match_their_golden_sample() {
        let job = crate::model::Job {
            id: 1,
            spec: crate::model::JobSpec::Rebuild(crate::model::Rebuild {
                backup_id: "cp-1796040000000-0a1b2c3d".into(),
                location_url: "file:///var/backups/meridian".into(),
                backup_created_unix_ms: 1_796_040_000_000,
                backup_routing_version: 41,
                lost: vec!["ap-south-s1".into()],
                outcome: vec![
                    crate::model::RebuildOutcome {
                        namespace: "ledger".into(),
                        verdict: "adopted".into(),
                        shard: "eu-west-s1".into(),
                        epoch: 2,
                    },
                    crate::model::RebuildOutcome {
                        namespace: "late".into(),
                        verdict: "unknown".into(),
                        shard: "us-east-s1".into(),
                        epoch: 0,
                    },
                ],
            }),
            state: crate::model::JobState::Succeeded,
            step: "done".into(),
            shard: String::new(),
            done_units: 2,
            total_units: 3,
            created_unix_ms: 1_796_050_000_000,
            updated_unix_ms: 1_796_050_004_000,
            message: "rebuilt: 1 adopted, 1 unknown".into(),
            requested_by: "spiffe://meridian/user/admin".into(),
            attempts: 1,
            cancel_requested: false,
            digest: String::new(),
            change_seq: 0,
        };
        let stored = encode_job(&job).unwrap();
        assert_eq!(
            stored,
            golden("control-job-rebuild-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_job(&stored).unwrap(), job);
    }

    #[test]
    fn jobs_match_their_golden_sample() {
        let job = crate::model::Job {
            id: 3,
            spec: crate::model::JobSpec::Restore(crate::model::RestoreSpec {
                backup_id: "orders-1796040000000-0a1b2c3d".into(),
                source_namespace: "orders".into(),
                target: "orders-restored".into(),
                location: "eu-vault".into(),
                incrementals: vec!["orders-1796050000000-1a2b3c4d".into()],
                at_seq: 77,
                policy: crate::model::PlacementPolicy {
                    home_region: "eu-west".into(),
                    mode: crate::model::NamespaceMode::RegionLocked,
                    standby_regions: Vec::new(),
                    allowed_jurisdictions: ["EU".to_string()].into(),
                },
            }),
            state: crate::model::JobState::Running,
            step: "loading".into(),
            shard: "eu-west-a".into(),
            done_units: 512,
            total_units: 1_000,
            created_unix_ms: 1_796_040_000_000,
            updated_unix_ms: 1_796_040_001_000,
            message: String::new(),
            requested_by: "admin".into(),
            attempts: 2,
            cancel_requested: false,
            digest: String::new(),
            change_seq: 0,
        };
        let stored = encode_job(&job).unwrap();
        assert_eq!(
            stored,
            golden("control-job-v1.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_job(&stored).unwrap(), job);
        assert!(decode_job(&[9]).is_err());
    }

    #[test]
    fn audit_records_of_every_format_decode_and_chain() {
        let fields = |target| crate::audit::AuditFields {
            sequence: 4,
            at_unix_ms: 1_700_000_000_000,
            actor: "alice",
            target,
            action: "create namespace payments",
            outcome: "ok",
        };
        let record = crate::audit::sealed(fields("namespace payments"), [7; 32]);
        let stored = encode_audit(&record).unwrap();
        assert_eq!(
            stored,
            golden("control-audit-v3.bin", &stored),
            "format changed"
        );
        assert_eq!(decode_audit(&stored, [0; 32]).unwrap(), record);
        // Format 2 (before targets) loads with an empty target; its hash
        // still verifies.
        let untargeted = crate::audit::sealed(fields(""), [7; 32]);
        let mut v2 = vec![2u8];
        v2.extend(
            postcard::to_stdvec(&(
                untargeted.sequence,
                untargeted.at_unix_ms,
                &untargeted.actor,
                &untargeted.action,
                &untargeted.outcome,
                untargeted.prev_hash,
                untargeted.hash,
            ))
            .unwrap(),
        );
        let v2_golden = golden("control-audit-v2.bin", &v2);
        assert_eq!(v2, v2_golden, "the v2 sample is what v2 wrote");
        let loaded = decode_audit(&v2_golden, [0; 32]).unwrap();
        assert_eq!(loaded, untargeted);
        assert_eq!(crate::audit::verify(&[7; 32], &[loaded]), Ok(1));
        let record = untargeted;
        let stored = encode_audit(&record).unwrap();
        assert_eq!(decode_audit(&stored, [0; 32]).unwrap(), record);
        // Format 1 (before the chain) is sealed on load, linked to the
        // record loaded before it.
        let mut v1 = vec![1u8];
        v1.extend(
            postcard::to_stdvec(&(
                4u64,
                1_700_000_000_000u64,
                "alice",
                "create namespace payments",
                "ok",
            ))
            .unwrap(),
        );
        let v1 = golden("control-audit-v1.bin", &v1);
        assert_eq!(decode_audit(&v1, [7; 32]).unwrap(), record);
        assert!(decode_audit(&[9], [0; 32]).is_err());
    }
}
