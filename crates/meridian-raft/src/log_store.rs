//! The Raft log, vote and commit index, stored in the node's fjall database.
//!
//! Log entries live in keyspace `raft_log` under their index (big-endian, so the
//! keyspace order is the log order); the vote, commit index and purge point live in
//! `raft_meta`. Appends are written at once (readable immediately) and made durable
//! by the engine's group-commit flusher before openraft is told they are flushed.

use crate::engine::StorageEngine;
use crate::types::{Entry, LogId, TypeConfig, Vote};
use fjall::{Keyspace, KeyspaceCreateOptions};
use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const LAST_PURGED_KEY: &str = "last_purged";

/// Format byte in front of every stored log entry and metadata value; bumped
/// (with an upgrade path) if the encoding ever changes.
const LOG_FORMAT: u8 = 1;

fn to_io(err: fjall::Error) -> io::Error {
    match err {
        fjall::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_extend(value, vec![LOG_FORMAT]).map_err(io::Error::other)
}

pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8]) -> io::Result<T> {
    match raw.split_first() {
        Some((&LOG_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "stored raft record has an unknown format version",
        )),
    }
}

/// Entries kept in memory at the tail of the log.
const CACHE_ENTRIES: usize = 16_384;

/// The newest log entries, decoded. The leader reads every entry back once per
/// follower and once to apply it, and followers once to apply it; serving those
/// reads from memory avoids decoding each entry several times.
///
/// Invariant: when not empty, the cache holds a contiguous run of entries that
/// ends at the last entry of the log.
#[derive(Default)]
struct LogCache {
    first_index: u64,
    entries: VecDeque<Entry>,
}

impl LogCache {
    fn end(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }

    fn append(&mut self, entry: &Entry) {
        let index = entry.log_id.index();
        if self.entries.is_empty() || index != self.end() {
            self.entries.clear();
            self.first_index = index;
        }
        self.entries.push_back(entry.clone());
        if self.entries.len() > CACHE_ENTRIES {
            self.entries.pop_front();
            self.first_index += 1;
        }
    }

    /// Drops entries at `index` and after.
    fn truncate_from(&mut self, index: u64) {
        while !self.entries.is_empty() && self.end() > index {
            self.entries.pop_back();
        }
    }

    /// Drops entries up to and including `index`.
    fn purge_through(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first_index <= index {
            self.entries.pop_front();
            self.first_index += 1;
        }
    }

    /// Entries in `[start, end)` (`end = None`: to the end), if all are cached.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        if self.entries.is_empty() || start < self.first_index {
            return None;
        }
        let end = end.unwrap_or(self.end()).min(self.end());
        if start >= end {
            return Some(Vec::new());
        }
        let from = (start - self.first_index) as usize;
        let to = (end - self.first_index) as usize;
        Some(self.entries.range(from..to).cloned().collect())
    }
}

/// The Raft log store of one node.
#[derive(Clone)]
pub struct LogStore {
    engine: StorageEngine,
    log: Keyspace,
    meta: Keyspace,
    cache: Arc<Mutex<LogCache>>,
}

impl LogStore {
    /// Opens the log keyspaces in `engine`.
    pub fn open(engine: &StorageEngine) -> io::Result<Self> {
        Ok(Self {
            log: engine.keyspace("raft_log", KeyspaceCreateOptions::default)?,
            meta: engine.keyspace("raft_meta", KeyspaceCreateOptions::default)?,
            engine: engine.clone(),
            cache: Arc::new(Mutex::new(LogCache::default())),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        self.meta
            .get(key)
            .map_err(to_io)?
            .map(|raw| decode(&raw))
            .transpose()
    }

    /// A stored entry (sealed when encryption at rest is on: entries carry
    /// the application's commands, values included).
    fn decode_entry(&self, raw: &[u8]) -> io::Result<Entry> {
        decode(&self.engine.sealer().open(raw)?)
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        if let Some(last) = self.cache().entries.back() {
            return Ok(Some(last.log_id));
        }
        match self.log.last_key_value() {
            Some(guard) => {
                let (_, raw) = guard.into_inner().map_err(to_io)?;
                let entry = self.decode_entry(&raw)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cached_end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.cache().get(start, cached_end) {
            return Ok(entries);
        }
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for guard in self.log.range((Bound::Included(index_key(start)), end)) {
            let (_, raw) = guard.into_inner().map_err(to_io)?;
            entries.push(self.decode_entry(&raw)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED_KEY)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta.insert(VOTE_KEY, encode(vote)?).map_err(to_io)?;
        // A forgotten vote could let this node vote twice in one term.
        self.engine.sync_now()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not fsynced: a stale commit index after a crash only means re-applying
        // less on restart; the leader re-establishes the rest.
        self.meta
            .insert(COMMITTED_KEY, encode(&committed)?)
            .map_err(to_io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.engine.database().batch();
        let entries: Vec<Entry> = entries.into_iter().collect();
        for entry in &entries {
            let stored = self.engine.sealer().seal(encode(entry)?)?;
            batch.insert(&self.log, index_key(entry.log_id.index()), stored);
        }
        batch.commit().map_err(to_io)?;
        {
            let mut cache = self.cache();
            for entry in &entries {
                cache.append(entry);
            }
        }
        self.engine.flush_then(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.cache().truncate_from(from);
        let mut batch = self.engine.database().batch();
        for guard in self.log.range(index_key(from)..) {
            batch.remove(&self.log, guard.key().map_err(to_io)?);
        }
        batch.commit().map_err(to_io)?;
        // Truncated entries must not reappear after a crash: a later append
        // at the same index will be fsynced anyway, but make it explicit.
        self.engine.sync_now()
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Everything the purged entries fed into (state machine and snapshot) must
        // be durable before the entries disappear.
        self.engine.sync_now()?;
        self.cache().purge_through(log_id.index());
        self.meta
            .insert(LAST_PURGED_KEY, encode(&log_id)?)
            .map_err(to_io)?;
        // Deleting thousands of entries takes milliseconds; doing it here would
        // stall appends (and so every write). The purge point is recorded first,
        // so the leftover entries are invisible; a later purge covers any that a
        // crash leaves behind.
        let log = self.log.clone();
        let db = self.engine.database().clone();
        let through = log_id.index();
        tokio::task::spawn_blocking(move || {
            let mut batch = db.batch();
            for guard in log.range(..=index_key(through)) {
                match guard.key() {
                    Ok(key) => batch.remove(&log, key),
                    Err(err) => {
                        tracing::warn!(error = %err, "log purge stopped early");
                        break;
                    }
                }
            }
            if let Err(err) = batch.commit() {
                tracing::warn!(error = %err, "log purge failed; it is retried with the next one");
            }
        });
        Ok(())
    }
}
