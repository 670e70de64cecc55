//! Re-encryption after a data-key rotation: every stored value of the
//! application's keyspaces that is sealed under an older data key is sealed
//! again under the current one, in small batches, while the node serves.
//!
//! Each batch re-reads its values under the engine's write lock (which every
//! commit of applied entries and every snapshot install also holds), so a
//! value written after the worker read it is never replaced by the older
//! value re-sealed. Plaintext never changes, only its sealing.
//!
//! Raft log entries are not rewritten (a log entry may be truncated or
//! purged at any moment by Raft itself, and rewriting could resurrect one);
//! they leave with the log purge after the next snapshot, which the node
//! triggers when the pass ends. The status counts those still under older
//! keys.

use crate::StorageEngine;
use crate::at_rest::Sealer;
use fjall::Keyspace;
use std::io;
use std::sync::Mutex;

/// Milliseconds since the Unix epoch, for the status's times.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Values re-sealed per batch (one short hold of the write lock each).
pub const BATCH: usize = 256;

/// Where a re-encryption pass stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResealStatus {
    /// Whether a pass is running.
    pub running: bool,
    /// The data key values are being (or were) moved under.
    pub key_id: u64,
    /// Values in the application's keyspaces: the storage engine's estimate
    /// while the pass runs (it may count overwritten values), the exact
    /// count of values looked at once it ended.
    pub total: u64,
    /// Values looked at so far.
    pub scanned: u64,
    /// Values sealed again under the new key so far.
    pub resealed: u64,
    /// Raft log entries still sealed under older keys (counted at the end).
    pub log_entries_under_old_keys: u64,
    /// When the pass started and ended (Unix ms; 0: not yet).
    pub started_unix_ms: u64,
    /// When it ended.
    pub finished_unix_ms: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// The progress of a node's passes, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ResealProgress {
    status: Mutex<ResealStatus>,
}

impl ResealProgress {
    /// A copy of the current status.
    pub fn status(&self) -> ResealStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks a pass under `key_id` as started, unless one is running
    /// (returns `false` then).
    pub fn begin(&self, key_id: u64, now_unix_ms: u64) -> bool {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.running {
            return false;
        }
        *status = ResealStatus {
            running: true,
            key_id,
            started_unix_ms: now_unix_ms,
            ..Default::default()
        };
        true
    }

    fn update(&self, change: impl FnOnce(&mut ResealStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Runs one pass over `keyspaces` (blocking; run it off the async runtime),
/// then counts the entries of `log` still under older keys.
pub fn run(
    engine: &StorageEngine,
    keyspaces: &[Keyspace],
    log: &Keyspace,
    progress: &ResealProgress,
    now_unix_ms: impl Fn() -> u64,
) {
    let result = pass(engine, keyspaces, log, progress);
    progress.update(|s| {
        s.running = false;
        s.finished_unix_ms = now_unix_ms();
        if let Err(err) = result {
            s.error = Some(err.to_string());
        }
    });
}

fn pass(
    engine: &StorageEngine,
    keyspaces: &[Keyspace],
    log: &Keyspace,
    progress: &ResealProgress,
) -> io::Result<()> {
    let to_io = |e: fjall::Error| io::Error::other(e.to_string());
    let total = keyspaces
        .iter()
        .map(|k| k.approximate_len() as u64)
        .sum::<u64>();
    progress.update(|s| s.total = total);
    let sealer = engine.sealer();
    for keyspace in keyspaces {
        // Walk by key, one batch at a time, resuming after the last key.
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys: Vec<Vec<u8>> = match &after {
                None => keyspace
                    .iter()
                    .take(BATCH)
                    .map(|g| g.key().map(|k| k.to_vec()).map_err(to_io))
                    .collect::<io::Result<_>>()?,
                Some(last) => keyspace
                    .range::<&[u8], _>((
                        std::ops::Bound::Excluded(last.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take(BATCH)
                    .map(|g| g.key().map(|k| k.to_vec()).map_err(to_io))
                    .collect::<io::Result<_>>()?,
            };
            let Some(last) = keys.last().cloned() else {
                break;
            };
            let resealed = reseal_batch(engine, sealer, keyspace, &keys)?;
            let scanned = keys.len() as u64;
            progress.update(|s| {
                s.scanned += scanned;
                s.resealed += resealed;
            });
            after = Some(last);
        }
    }
    let current = sealer.current_key();
    let mut old = 0;
    for guard in log.iter() {
        let value = guard.value().map_err(to_io)?;
        if Sealer::key_of(&value).is_some_and(|id| Some(id) != current) {
            old += 1;
        }
    }
    progress.update(|s| {
        s.log_entries_under_old_keys = old;
        // The start's total was the engine's estimate; now it is known.
        s.total = s.scanned;
    });
    Ok(())
}

/// Re-seals the values of `keys` that are under an older key; returns how
/// many. Reads and writes under the write lock.
fn reseal_batch(
    engine: &StorageEngine,
    sealer: &Sealer,
    keyspace: &Keyspace,
    keys: &[Vec<u8>],
) -> io::Result<u64> {
    let to_io = |e: fjall::Error| io::Error::other(e.to_string());
    let _writing = engine.write_lock();
    let mut batch = engine.database().batch();
    let mut count = 0;
    for key in keys {
        // Gone since it was listed (deleted by an applied entry): nothing
        // to do.
        let Some(stored) = keyspace.get(key).map_err(to_io)? else {
            continue;
        };
        if let Some(sealed) = sealer.reseal(&stored)? {
            batch.insert(keyspace, key.clone(), sealed);
            count += 1;
        }
    }
    if count > 0 {
        batch.commit().map_err(to_io)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ApplyBatch;
    use fjall::KeyspaceCreateOptions;

    fn engine(dir: &std::path::Path) -> StorageEngine {
        let key_file = dir.join("kek");
        if !key_file.exists() {
            crate::at_rest::create_key_file(&key_file).unwrap();
        }
        StorageEngine::open_with(
            &dir.join("node"),
            std::sync::Arc::new(crate::metrics::StorageMetrics::default()),
            Some(&key_file),
        )
        .unwrap()
    }

    #[test]
    fn every_value_moves_under_the_new_key_and_none_is_lost_to_a_concurrent_write() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let data = engine
            .keyspace("data", KeyspaceCreateOptions::default)
            .unwrap();
        let log = engine
            .keyspace("raft_log", KeyspaceCreateOptions::default)
            .unwrap();
        let write = |key: u32, value: &str| {
            let mut batch = ApplyBatch::new(&engine);
            batch.insert(&data, key.to_be_bytes().to_vec(), value.as_bytes().to_vec());
            batch.commit().unwrap();
        };
        for key in 0..2_000u32 {
            write(key, "old");
        }
        let mut expected = vec!["old".to_string(); 2_000];
        // Several rounds: each rotates, then a writer keeps overwriting keys
        // while the pass runs; its values must be the ones left, never the
        // older ones re-sealed.
        for round in 0..6u32 {
            let old_key = engine.sealer().current_key().unwrap();
            let new_key = engine.rotate_data_key().unwrap();
            assert_ne!(old_key, new_key);
            let progress = ResealProgress::default();
            assert!(progress.begin(new_key, 1));
            assert!(!progress.begin(new_key, 1), "one pass at a time");
            let value = format!("round {round}");
            let overwritten: Vec<u32> = (0..2_000u32).filter(|k| k % 7 == round % 7).collect();
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    // From the far end, so the writes meet the pass midway.
                    for key in overwritten.iter().rev() {
                        write(*key, &value);
                        std::thread::yield_now();
                    }
                });
                run(&engine, std::slice::from_ref(&data), &log, &progress, || 2);
            });
            for key in overwritten {
                expected[key as usize] = value.clone();
            }
            let status = progress.status();
            assert!(!status.running && status.error.is_none(), "{status:?}");
            assert!(status.scanned >= 2_000, "{status:?}");
            assert!(status.resealed > 0, "{status:?}");
            for key in 0..2_000u32 {
                let stored = data.get(key.to_be_bytes()).unwrap().unwrap();
                assert_eq!(
                    Sealer::key_of(&stored),
                    Some(new_key),
                    "round {round}: key {key} still under an old key"
                );
                let plain = engine.sealer().open(&stored).unwrap();
                assert_eq!(
                    &*plain,
                    expected[key as usize].as_bytes(),
                    "round {round}: key {key} lost a write"
                );
            }
        }
        // Still readable after a restart (the keys were stored).
        drop(data);
        drop(log);
        drop(engine);
        let engine = super::tests::engine(dir.path());
        let data = engine
            .keyspace("data", KeyspaceCreateOptions::default)
            .unwrap();
        let stored = data.get(1u32.to_be_bytes()).unwrap().unwrap();
        assert_eq!(
            &*engine.sealer().open(&stored).unwrap(),
            expected[1].as_bytes()
        );
    }
}
