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
use std::time::Instant;

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
        std::fs::create_dir_all(dir)?;
        let fresh = !dir.join("db").exists();
        let db = Database::builder(dir.join("db"))
            // Durability is decided by the flusher, not per write.
            .manual_journal_persist(true)
            .open()
            .map_err(to_io)?;
        let sealer = Arc::new(open_keys(&db, fresh, key_file)?);
        let (flush_requests, pending) = mpsc::channel();
        let flusher_db = db.clone();
        let flusher_metrics = metrics.clone();
        let mode = flush_mode();
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || run_flusher(flusher_db, pending, flusher_metrics, mode))?;
        Ok(Self {
            db,
            dir: dir.to_path_buf(),
            sealer,
            write_lock: Default::default(),
            flush_requests,
            metrics,
        })
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
        self.db.keyspace(name, options).map_err(to_io)
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
fn run_flusher(
    db: Database,
    pending: mpsc::Receiver<IOFlushed<TypeConfig>>,
    metrics: Arc<StorageMetrics>,
    mode: PersistMode,
) {
    while let Ok(first) = pending.recv() {
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
