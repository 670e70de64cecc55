//! The node's storage engine: one fjall database holding the Raft log, the Raft
//! metadata and the application's keyspaces, plus the group-commit flusher.
//!
//! Everything shares fjall's single journal, so one fsync makes every write before
//! it durable — log entries and state-machine changes alike. Writes themselves only
//! reach the OS page cache (which survives a process crash); durability comes from
//! the flusher.

use crate::at_rest::Sealer;
use crate::metrics::StorageMetrics;
use crate::types::TypeConfig;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::IOFlushed;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::StorageSection;

/// How often the flusher looks at the memtable budget at most.
const BUDGET_CHECK_EVERY: Duration = Duration::from_millis(100);

/// The keyspaces opened through the engine, so the memtable budget can seal
/// every one of them.
type Keyspaces = Arc<std::sync::Mutex<Vec<(String, Keyspace)>>>;

/// The node's database and its flusher.
#[derive(Clone)]
pub struct StorageEngine {
    db: Database,
    dir: PathBuf,
    /// Seals every stored value when encryption at rest is on.
    sealer: Arc<Sealer>,
    write_lock: Arc<std::sync::Mutex<()>>,
    flush_requests: mpsc::Sender<IOFlushed<TypeConfig>>,
    metrics: Arc<StorageMetrics>,
    storage: StorageSection,
    keyspaces: Keyspaces,
}

fn to_io(err: fjall::Error) -> io::Error {
    match err {
        fjall::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

impl StorageEngine {
    /// Opens (or creates) the database under `dir/db` without encryption at
    /// rest and starts the flusher thread.
    pub fn open(dir: &Path, metrics: Arc<StorageMetrics>) -> io::Result<Self> {
        Self::open_with(dir, metrics, None)
    }

    /// [`StorageEngine::open`] with encryption at rest when `key_file` is
    /// given (see [`crate::at_rest`]). A new database gets a fresh data key;
    /// an encrypted one needs its key file; encryption cannot be turned on or
    /// off for an existing database (both are refused, naming the setting).
    pub fn open_with(
        dir: &Path,
        metrics: Arc<StorageMetrics>,
        key_file: Option<&Path>,
    ) -> io::Result<Self> {
        Self::open_configured(dir, metrics, key_file, StorageSection::default())
    }

    /// [`StorageEngine::open_with`] with the memory and journal limits of
    /// `storage` (refused, naming the setting, if it breaks a floor).
    pub fn open_configured(
        dir: &Path,
        metrics: Arc<StorageMetrics>,
        key_file: Option<&Path>,
        storage: StorageSection,
    ) -> io::Result<Self> {
        storage.validate().map_err(|(key, rule)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{key} {rule}"))
        })?;
        std::fs::create_dir_all(dir)?;
        let fresh = !dir.join("db").exists();
        let db = Database::builder(dir.join("db"))
            // Durability is decided by the flusher, not per write.
            .manual_journal_persist(true)
            .cache_size(storage.cache_bytes)
            .max_journaling_size(storage.journal_bytes)
            .worker_threads(storage.background_threads)
            .open()
            .map_err(to_io)?;
        let sealer = Arc::new(open_keys(&db, fresh, key_file)?);
        let (flush_requests, pending) = mpsc::channel();
        let flusher_db = db.clone();
        let flusher_metrics = metrics.clone();
        let mode = flush_mode();
        let keyspaces: Keyspaces = Default::default();
        let budget = MemtableBudget {
            limit: storage.memtable_bytes,
            keyspaces: keyspaces.clone(),
            checked: Instant::now(),
        };
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || run_flusher(flusher_db, pending, flusher_metrics, mode, budget))?;
        metrics.limits(&storage);
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            sealer,
            write_lock: Default::default(),
            flush_requests,
            metrics,
            storage,
            keyspaces,
        })
    }

    /// The memory and journal limits the engine runs with.
    pub fn storage(&self) -> StorageSection {
        self.storage
    }

    /// Sets the storage gauges (memtables, block cache, journal, disk) from
    /// the engine's current state; called at scrape time.
    pub fn refresh_metrics(&self) {
        self.metrics.observe(
            self.db.write_buffer_size(),
            self.db.cache_size(),
            self.db.journal_disk_space().unwrap_or(0),
            self.db.disk_space().unwrap_or(0),
        );
    }

    /// Held while a batch of the application's values is committed (and
    /// while a snapshot replaces them), so the re-encryption worker's
    /// read-then-rewrite of a value never crosses a write of it.
    pub fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock of [`StorageEngine::write_lock`], for batches that outlive a
    /// borrow of the engine.
    pub(crate) fn write_lock_handle(&self) -> Arc<std::sync::Mutex<()>> {
        self.write_lock.clone()
    }

    /// Makes a new data key the one new values are sealed with (stored
    /// wrapped, durable before it is used); old values stay readable under
    /// their keys. Refused when encryption at rest is off.
    pub fn rotate_data_key(&self) -> io::Result<u64> {
        let keys = self.keys_keyspace()?;
        let (id, wrapped) = self.sealer.new_data_key()?;
        keys.insert(key_entry(id), wrapped).map_err(to_io)?;
        keys.insert(CURRENT_KEY, id.to_be_bytes()).map_err(to_io)?;
        self.sync_now()?;
        Ok(id)
    }

    /// Seals and opens stored values (a pass-through when encryption at rest is off).
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// Stores a data key learned from a snapshot (wrapped), so values sealed
    /// with it stay readable after a restart.
    pub fn learn_key(&self, id: u64, wrapped: &[u8]) -> io::Result<()> {
        self.sealer.learn(id, wrapped)?;
        let keys = self.keys_keyspace()?;
        keys.insert(key_entry(id), wrapped).map_err(to_io)?;
        self.sync_now()
    }

    fn keys_keyspace(&self) -> io::Result<Keyspace> {
        self.db
            .keyspace(KEYS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(to_io)
    }

    /// Opens (or creates) a keyspace.
    pub fn keyspace(
        &self,
        name: &str,
        options: impl FnOnce() -> KeyspaceCreateOptions,
    ) -> io::Result<Keyspace> {
        // A keyspace keeps the memtable size it was created with; the
        // budget (see `MemtableBudget`) holds all of them together either way.
        let memtable = self.storage.keyspace_memtable_bytes();
        let keyspace = self
            .db
            .keyspace(name, || options().max_memtable_size(memtable))
            .map_err(to_io)?;
        let mut known = self.keyspaces.lock().unwrap_or_else(|e| e.into_inner());
        if !known.iter().any(|(n, _)| n == name) {
            known.push((name.to_string(), keyspace.clone()));
        }
        Ok(keyspace)
    }

    /// The underlying database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The node's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Storage metrics.
    pub fn metrics(&self) -> &Arc<StorageMetrics> {
        &self.metrics
    }

    /// Makes every write so far durable before returning (for rare writes such as
    /// the vote, which must never be forgotten).
    pub fn sync_now(&self) -> io::Result<()> {
        let started = Instant::now();
        let result = self.db.persist(PersistMode::SyncAll).map_err(to_io);
        self.metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Queues `callback` to fire once every write made before this call is
    /// durable. Callbacks queued while an fsync runs share the next one: that is
    /// the group commit.
    pub fn flush_then(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.flush_requests.send(callback) {
            callback.io_completed(Err(io::Error::other("log flusher has stopped")));
        }
    }
}

/// Keyspace of wrapped data keys (and which one new values are sealed with).
const KEYS_KEYSPACE: &str = "at_rest_keys";
const CURRENT_KEY: &[u8] = b"current";

fn key_entry(id: u64) -> Vec<u8> {
    let mut key = b"k".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The sealer for a database: its stored keys unwrapped with the key file's
/// KEK, a first data key for a new encrypted database, or none.
fn open_keys(db: &Database, fresh: bool, key_file: Option<&Path>) -> io::Result<Sealer> {
    let keys = db
        .keyspace(KEYS_KEYSPACE, KeyspaceCreateOptions::default)
        .map_err(to_io)?;
    let current = keys.get(CURRENT_KEY).map_err(to_io)?;
    let refuse = |message: &str| io::Error::new(io::ErrorKind::InvalidInput, message.to_string());
    match (key_file, current) {
        (None, None) => Ok(Sealer::plain()),
        (None, Some(_)) => Err(refuse(
            "this data directory is encrypted at rest: set node.encryption_key_file to its key file",
        )),
        (Some(path), current) => {
            let sealer = Sealer::with_kek(&crate::at_rest::read_key_file(path)?)?;
            match current {
                Some(current) => {
                    for guard in keys.prefix(b"k") {
                        let (key, wrapped) = guard.into_inner().map_err(to_io)?;
                        let id = key
                            .get(1..)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_be_bytes)
                            .ok_or_else(|| refuse("a stored data key has a malformed id"))?;
                        sealer.learn(id, &wrapped)?;
                    }
                    let id = <[u8; 8]>::try_from(&*current)
                        .map(u64::from_be_bytes)
                        .map_err(|_| refuse("the current data key id is malformed"))?;
                    sealer.use_key(id)?;
                    // A fresh data key every start: how many values the old
                    // one sealed is not counted across restarts, and GCM's
                    // random nonces need that bounded (ROTATE_AFTER_SEALS).
                    let (id, wrapped) = sealer.new_data_key()?;
                    keys.insert(key_entry(id), wrapped).map_err(to_io)?;
                    keys.insert(CURRENT_KEY, id.to_be_bytes()).map_err(to_io)?;
                    db.persist(PersistMode::SyncAll).map_err(to_io)?;
                }
                None if fresh => {
                    let (id, wrapped) = sealer.new_data_key()?;
                    keys.insert(key_entry(id), wrapped).map_err(to_io)?;
                    keys.insert(CURRENT_KEY, id.to_be_bytes()).map_err(to_io)?;
                    db.persist(PersistMode::SyncAll).map_err(to_io)?;
                }
                None => {
                    return Err(refuse(
                        "encryption at rest cannot be turned on for an existing data directory (its data is stored in clear); start the node with an empty data_dir, or remove node.encryption_key_file",
                    ));
                }
            }
            Ok(sealer)
        }
    }
}

/// Environment variable that makes the log flusher skip its fsync (hand the
/// journal to the OS only). It exists for one purpose: the power-loss test
/// shows that acknowledged writes are lost without the fsync, which proves the
/// test can see a missing fsync. Never set it anywhere else.
pub const UNSAFE_SKIP_LOG_FSYNC: &str = "MERIDIAN_UNSAFE_SKIP_LOG_FSYNC";

fn flush_mode() -> PersistMode {
    if std::env::var_os(UNSAFE_SKIP_LOG_FSYNC).is_some_and(|v| v == "1") {
        tracing::error!(
            "{UNSAFE_SKIP_LOG_FSYNC}=1: the Raft log is NOT fsynced; acknowledged writes can be lost on power failure (test use only)"
        );
        PersistMode::Buffer
    } else {
        PersistMode::SyncData
    }
}

/// Waits for flush requests, then makes everything written so far durable with one
/// fsync and completes every request that was waiting.
/// Keeps the unflushed writes of every keyspace together under a budget:
/// fjall bounds each keyspace's memtable on its own, and its database-wide
/// write buffer limit is not enforced, so several busy keyspaces (the Raft
/// log, the data, the change log) would each grow to their own limit.
struct MemtableBudget {
    limit: u64,
    keyspaces: Keyspaces,
    checked: Instant,
}

impl MemtableBudget {
    /// Seals every keyspace's memtable (fjall flushes sealed ones in the
    /// background) when the unflushed writes are over the budget; at most
    /// every [`BUDGET_CHECK_EVERY`].
    fn enforce(&mut self, db: &Database) {
        if self.checked.elapsed() < BUDGET_CHECK_EVERY {
            return;
        }
        self.checked = Instant::now();
        if !over_budget(db.write_buffer_size(), self.limit) {
            return;
        }
        let keyspaces = self
            .keyspaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, keyspace) in keyspaces {
            if let Err(err) = keyspace.rotate_memtable() {
                tracing::warn!(keyspace = %name, error = %err, "cannot seal a memtable");
            }
        }
    }
}

/// Whether unflushed writes of `unflushed` bytes break a budget of `limit`.
fn over_budget(unflushed: u64, limit: u64) -> bool {
    unflushed > limit
}

fn run_flusher(
    db: Database,
    pending: mpsc::Receiver<IOFlushed<TypeConfig>>,
    metrics: Arc<StorageMetrics>,
    mode: PersistMode,
    mut budget: MemtableBudget,
) {
    loop {
        // The budget is looked at between appends too: the state machine's
        // writes (a snapshot being installed, a restore) need no log append.
        let first = match pending.recv_timeout(BUDGET_CHECK_EVERY) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                budget.enforce(&db);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        budget.enforce(&db);
        let mut group = vec![first];
        group.extend(pending.try_iter());
        let started = Instant::now();
        let result = db.persist(mode);
        metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.appends_per_fsync.observe(group.len() as f64);
        match result {
            Ok(()) => group.into_iter().for_each(|cb| cb.io_completed(Ok(()))),
            Err(err) => {
                metrics.fsync_errors.inc();
                tracing::error!(error = %err, "journal fsync failed; the node can no longer acknowledge writes");
                let message = err.to_string();
                for cb in group {
                    cb.io_completed(Err(io::Error::other(format!("fsync failed: {message}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn over_budget_is_strictly_above_the_limit() {
        for (unflushed, limit, over) in [(0, MIB, false), (MIB, MIB, false), (MIB + 1, MIB, true)] {
            assert_eq!(
                over_budget(unflushed, limit),
                over,
                "{unflushed} of {limit}"
            );
        }
    }

    /// Eight keyspaces each stay under their own memtable limit, so only the
    /// budget over all of them brings the unflushed writes down.
    #[test]
    fn the_memtable_budget_holds_every_keyspace_together() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageSection {
            memtable_bytes: 2 * MIB,
            ..StorageSection::default()
        };
        let engine = StorageEngine::open_configured(
            dir.path(),
            Arc::new(StorageMetrics::default()),
            None,
            storage,
        )
        .unwrap();
        let value = vec![7u8; 1024];
        for k in 0..8 {
            let keyspace = engine
                .keyspace(&format!("ks{k}"), KeyspaceCreateOptions::default)
                .unwrap();
            // ~1.5 MiB each: under the per-keyspace limit (2 MiB), 12 MiB in all.
            for i in 0..1536u32 {
                keyspace.insert(i.to_be_bytes(), &value).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let unflushed = engine.database().write_buffer_size();
            if unflushed <= 3 * MIB {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "unflushed writes stay at {unflushed} bytes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        engine.refresh_metrics();
        assert_eq!(engine.metrics.memtable_budget_bytes.get(), 2 * MIB as i64);
        assert!(engine.metrics.disk_bytes.get() > 0);
    }

    #[test]
    fn a_limit_below_its_floor_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageSection {
            journal_bytes: MIB,
            ..StorageSection::default()
        };
        let error = StorageEngine::open_configured(
            dir.path(),
            Arc::new(StorageMetrics::default()),
            None,
            storage,
        )
        .err()
        .unwrap();
        assert!(
            error.to_string().contains("storage.journal_bytes"),
            "{error}"
        );
    }
}
