//! A write batch that can be read through.
//!
//! The state machine applies a run of committed entries into one atomic batch
//! (one journal write instead of one per entry). Later entries of the run must see
//! what earlier ones wrote, which is not in the engine yet: reads go through an
//! overlay of the batch's pending writes first.

use crate::at_rest::Sealer;
use crate::engine::StorageEngine;
use fjall::{Keyspace, OwnedWriteBatch};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

fn to_io(err: fjall::Error) -> io::Error {
    match err {
        fjall::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

/// Pending writes of one keyspace: `None` marks a removal.
type Overlay = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// An atomic batch of writes across keyspaces, readable before it is committed.
///
/// Values are sealed on the way in and opened on the way out when encryption
/// at rest is on ([`crate::at_rest`]); the overlay holds them plain.
pub struct ApplyBatch {
    batch: OwnedWriteBatch,
    overlays: Vec<(Keyspace, Overlay)>,
    writes: usize,
    sealer: Arc<Sealer>,
    /// The engine's write lock, held while committing.
    write_lock: Arc<std::sync::Mutex<()>>,
    /// A value that could not be sealed: the batch must not commit.
    failed: Option<io::Error>,
}

impl ApplyBatch {
    /// An empty batch on `engine`'s database.
    pub fn new(engine: &StorageEngine) -> Self {
        Self {
            batch: engine.database().batch(),
            overlays: Vec::new(),
            writes: 0,
            sealer: engine.sealer().clone(),
            write_lock: engine.write_lock_handle(),
            failed: None,
        }
    }

    fn overlay(&self, keyspace: &Keyspace) -> Option<&Overlay> {
        self.overlays
            .iter()
            .find(|(k, _)| k.name() == keyspace.name())
            .map(|(_, overlay)| overlay)
    }

    fn overlay_mut(&mut self, keyspace: &Keyspace) -> &mut Overlay {
        let position = match self
            .overlays
            .iter()
            .position(|(k, _)| k.name() == keyspace.name())
        {
            Some(position) => position,
            None => {
                self.overlays.push((keyspace.clone(), HashMap::new()));
                self.overlays.len() - 1
            }
        };
        &mut self.overlays[position].1
    }

    /// Reads `key` as it will be once the batch commits.
    pub fn get(&self, keyspace: &Keyspace, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if let Some(pending) = self.overlay(keyspace).and_then(|o| o.get(key)) {
            return Ok(pending.clone());
        }
        match keyspace.get(key).map_err(to_io)? {
            Some(stored) => Ok(Some(self.sealer.open(&stored)?.into_owned())),
            None => Ok(None),
        }
    }

    /// Writes `key` (sealed when encryption at rest is on).
    pub fn insert(&mut self, keyspace: &Keyspace, key: Vec<u8>, value: Vec<u8>) {
        match self.sealer.seal(value.clone()) {
            Ok(sealed) => self.batch.insert(keyspace, key.clone(), sealed),
            Err(err) => {
                self.failed.get_or_insert(err);
            }
        }
        self.overlay_mut(keyspace).insert(key, Some(value));
        self.writes += 1;
    }

    /// Writes `key` as it is, never sealed: for the Raft adapter's own
    /// bookkeeping (applied log id, membership), which holds no user data and
    /// is also written outside batches.
    pub fn insert_plain(&mut self, keyspace: &Keyspace, key: Vec<u8>, value: Vec<u8>) {
        self.batch.insert(keyspace, key.clone(), value.clone());
        self.overlay_mut(keyspace).insert(key, Some(value));
        self.writes += 1;
    }

    /// Removes `key`.
    pub fn remove(&mut self, keyspace: &Keyspace, key: Vec<u8>) {
        self.batch.remove(keyspace, key.clone());
        self.overlay_mut(keyspace).insert(key, None);
        self.writes += 1;
    }

    /// Every key starting with `prefix` as it will be once the batch commits
    /// (stored keys not removed by the batch, plus keys the batch inserted).
    pub fn keys_with_prefix(&self, keyspace: &Keyspace, prefix: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        self.first_keys_with_prefix(keyspace, prefix, usize::MAX)
    }

    /// The first `max` keys of [`Self::keys_with_prefix`], in order,
    /// reading about that many from storage rather than every one.
    pub fn first_keys_with_prefix(
        &self,
        keyspace: &Keyspace,
        prefix: &[u8],
        max: usize,
    ) -> io::Result<Vec<Vec<u8>>> {
        let overlay = self.overlay(keyspace);
        let mut keys = std::collections::BTreeSet::new();
        for guard in keyspace.prefix(prefix) {
            if keys.len() >= max {
                break;
            }
            let key = guard.key().map_err(to_io)?.to_vec();
            if !matches!(overlay.and_then(|o| o.get(&key)), Some(None)) {
                keys.insert(key);
            }
        }
        if let Some(overlay) = overlay {
            for (key, value) in overlay {
                if value.is_some() && key.starts_with(prefix) {
                    keys.insert(key.clone());
                }
            }
        }
        Ok(keys.into_iter().take(max).collect())
    }

    /// Writes made so far.
    pub fn len(&self) -> usize {
        self.writes
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes == 0
    }

    /// Commits every write atomically.
    pub fn commit(self) -> io::Result<()> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let _writing = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.batch.commit().map_err(to_io)
    }
}
