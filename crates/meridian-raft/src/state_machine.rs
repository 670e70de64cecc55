//! Applying committed entries to an [`Application`], and snapshots of it.
//!
//! Each run of entries that are ready together is applied in one atomic fjall batch
//! together with the new "last applied" id, so the stored state is always exactly
//! some prefix of the log, whatever moment a crash picks; responses go out only
//! after the batch is committed, so a client never reads behind its own write. Nothing here fsyncs: the journal is made durable
//! by the log flusher, and a state machine that lost its tail in a crash is rebuilt
//! from the (durable) log or the (durable) snapshot on restart.

use crate::apply_batch::ApplyBatch;
use crate::engine::StorageEngine;
use crate::log_store::{decode, encode};
use crate::snapshot::{self, SnapshotFile, SnapshotReader, SnapshotWriter};
use crate::types::{Entry, LogId, Response, SnapshotMeta, StoredMembership, TypeConfig};
use fjall::{Keyspace, KeyspaceCreateOptions, Readable};
use futures::{FutureExt, Stream, TryStreamExt};
use openraft::Snapshot;
use openraft::alias::SnapshotOf;
use openraft::storage::ApplyResponder;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A replicated state machine hosted by the Raft machinery.
///
/// Implementations keep their data in their own keyspaces of the node's
/// [`StorageEngine`]; snapshots copy those keyspaces wholesale, so an application
/// writes no snapshot code.
pub trait Application: Send + Sync + 'static {
    /// The keyspaces holding this state machine's data, in a fixed order (the
    /// position is the keyspace's number in snapshot files).
    fn keyspaces(&self) -> Vec<Keyspace>;

    /// Applies one committed command at log `index`. Every change must go into
    /// `batch`, which is committed atomically with the applied index; reads must go
    /// through `batch`, which holds the not-yet-committed writes of earlier entries
    /// of the same run. The result is
    /// returned to the client that proposed the command.
    ///
    /// Must be deterministic: every replica applies the same commands in the same
    /// order and must reach the same state. An error stops the node.
    fn apply(&self, index: u64, command: &[u8], batch: &mut ApplyBatch) -> io::Result<Vec<u8>>;

    /// Called after a snapshot replaced the keyspaces' contents, to rebuild any
    /// in-memory view.
    fn restored(&self) -> io::Result<()>;
}

const LAST_APPLIED_KEY: &str = "last_applied";
const MEMBERSHIP_KEY: &str = "membership";
const CURRENT_SNAPSHOT_KEY: &str = "current_snapshot";
const INSTALLING_KEY: &str = "installing_snapshot";

/// Records per batch when loading a snapshot.
const LOAD_BATCH: usize = 4096;

fn to_io(err: fjall::Error) -> io::Error {
    match err {
        fjall::Error::Io(err) => err,
        other => io::Error::other(other),
    }
}

struct Inner {
    engine: StorageEngine,
    app: Arc<dyn Application>,
    meta: Keyspace,
    snapshot_dir: PathBuf,
    /// Serializes snapshot builds and installs, which both replace the current
    /// snapshot file.
    snapshot_lock: Mutex<()>,
}

/// openraft's view of an [`Application`]: applies entries, builds and installs
/// snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

impl StateMachineStore {
    /// Opens the state-machine metadata in `engine`, finishing a snapshot install
    /// that a crash interrupted.
    pub fn open(engine: &StorageEngine, app: Arc<dyn Application>) -> io::Result<Self> {
        let snapshot_dir = engine.dir().join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        let store = Self {
            inner: Arc::new(Inner {
                meta: engine.keyspace("sm_meta", KeyspaceCreateOptions::default)?,
                engine: engine.clone(),
                app,
                snapshot_dir,
                snapshot_lock: Mutex::new(()),
            }),
        };
        if let Some(file) = store.read_meta::<String>(INSTALLING_KEY)? {
            let path = store.inner.snapshot_dir.join(file);
            tracing::warn!(path = %path.display(), "finishing a snapshot install interrupted by a crash");
            store.load_snapshot(&path)?;
        }
        Ok(store)
    }

    /// The application this store feeds.
    pub fn application(&self) -> &Arc<dyn Application> {
        &self.inner.app
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        self.inner
            .meta
            .get(key)
            .map_err(to_io)?
            .map(|raw| decode(&raw))
            .transpose()
    }

    fn build(&self) -> io::Result<(SnapshotMeta, PathBuf)> {
        let inner = &self.inner;
        let _guard = inner
            .snapshot_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // One engine snapshot gives a state that matches its applied index exactly,
        // while entries keep being applied.
        let view = inner.engine.database().snapshot();
        let last_log_id: Option<LogId> =
            match view.get(&inner.meta, LAST_APPLIED_KEY).map_err(to_io)? {
                Some(raw) => decode(&raw)?,
                None => None,
            };
        let last_membership: StoredMembership =
            match view.get(&inner.meta, MEMBERSHIP_KEY).map_err(to_io)? {
                Some(raw) => decode(&raw)?,
                None => StoredMembership::default(),
            };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        let name = snapshot_name(&meta);
        let temp = inner.snapshot_dir.join(format!("{name}.building"));
        let mut writer = SnapshotWriter::create(&temp, &meta)?;
        // Values are copied as stored (sealed when encryption at rest is on):
        // the file carries the wrapped data keys they are sealed with, so the
        // node that installs it (same key-encryption key) can open them.
        for (id, wrapped) in inner.engine.sealer().wrapped_keys() {
            writer.record(KEYRING_RECORD, &id.to_be_bytes(), &wrapped)?;
        }
        for (number, keyspace) in inner.app.keyspaces().iter().enumerate() {
            let number = u8::try_from(number)
                .ok()
                .filter(|n| *n != KEYRING_RECORD)
                .ok_or_else(|| io::Error::other("too many keyspaces"))?;
            for guard in view.iter(keyspace) {
                let (key, value) = guard.into_inner().map_err(to_io)?;
                writer.record(number, &key, &value)?;
            }
        }
        writer.finish()?;
        let path = inner.snapshot_dir.join(&name);
        std::fs::rename(&temp, &path)?;
        sync_dir(&inner.snapshot_dir)?;
        self.set_current(&meta, &name)?;
        tracing::info!(snapshot = %name, "built snapshot");
        Ok((meta, path))
    }

    /// Records `name` as the current snapshot and removes files older than the
    /// previous one (which may still be in flight to a follower).
    fn set_current(&self, meta: &SnapshotMeta, name: &str) -> io::Result<()> {
        let previous: Option<(SnapshotMeta, String)> = self.read_meta(CURRENT_SNAPSHOT_KEY)?;
        self.inner
            .meta
            .insert(CURRENT_SNAPSHOT_KEY, encode(&(meta, name))?)
            .map_err(to_io)?;
        self.inner.engine.sync_now()?;
        let keep: Vec<String> = previous
            .map(|(_, previous)| previous)
            .into_iter()
            .chain([name.to_string()])
            .collect();
        for entry in std::fs::read_dir(&self.inner.snapshot_dir)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().to_string();
            if file.ends_with(".snap") && !keep.contains(&file) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Replaces the application's keyspaces with the contents of the snapshot at
    /// `path`. Crash-safe: a marker makes the next start redo an interrupted load.
    fn load_snapshot(&self, path: &Path) -> io::Result<SnapshotMeta> {
        let inner = &self.inner;
        let meta = snapshot::verify(path)?;
        let name = snapshot_name(&meta);
        let final_path = inner.snapshot_dir.join(&name);
        if path != final_path {
            std::fs::rename(path, &final_path)?;
            sync_dir(&inner.snapshot_dir)?;
        }
        inner
            .meta
            .insert(INSTALLING_KEY, encode(&name)?)
            .map_err(to_io)?;
        inner.engine.sync_now()?;

        // The whole replacement under the write lock: a re-encryption
        // running now must not write back a value from before it.
        let _writing = inner.engine.write_lock();
        let keyspaces = inner.app.keyspaces();
        for keyspace in &keyspaces {
            keyspace.clear().map_err(to_io)?;
        }
        let mut reader = SnapshotReader::open(&final_path)?;
        let mut batch = inner.engine.database().batch();
        let mut in_batch = 0;
        while let Some((number, key, value)) = reader.next_record()? {
            if number == KEYRING_RECORD {
                let id = <[u8; 8]>::try_from(key.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            "malformed data key id in snapshot",
                        )
                    })?;
                inner.engine.learn_key(id, &value)?;
                continue;
            }
            let keyspace = keyspaces.get(number as usize).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("snapshot names unknown keyspace {number}"),
                )
            })?;
            batch.insert(keyspace, key, value);
            in_batch += 1;
            if in_batch == LOAD_BATCH {
                batch.commit().map_err(to_io)?;
                batch = inner.engine.database().batch();
                in_batch = 0;
            }
        }
        batch.insert(&inner.meta, LAST_APPLIED_KEY, encode(&meta.last_log_id)?);
        batch.insert(&inner.meta, MEMBERSHIP_KEY, encode(&meta.last_membership)?);
        batch.remove(&inner.meta, INSTALLING_KEY);
        batch.commit().map_err(to_io)?;
        inner.engine.sync_now()?;
        inner.app.restored()?;
        self.set_current(&meta, &name)?;
        tracing::info!(snapshot = %name, "installed snapshot");
        Ok(meta)
    }

    fn apply_entry(&self, entry: &Entry, batch: &mut ApplyBatch) -> io::Result<Response> {
        let inner = &self.inner;
        Ok(match &entry.payload {
            EntryPayload::Blank => Response::default(),
            EntryPayload::Normal(request) => {
                Response(inner.app.apply(entry.log_id.index(), &request.0, batch)?)
            }
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                batch.insert_plain(
                    &inner.meta,
                    MEMBERSHIP_KEY.as_bytes().to_vec(),
                    encode(&stored)?,
                );
                Response::default()
            }
        })
    }

    /// Commits `batch` with `last_applied`, then answers the waiting clients.
    fn commit_run(
        &self,
        mut batch: ApplyBatch,
        last_applied: LogId,
        responses: &mut Vec<(ApplyResponder<TypeConfig>, Response)>,
    ) -> io::Result<()> {
        batch.insert_plain(
            &self.inner.meta,
            LAST_APPLIED_KEY.as_bytes().to_vec(),
            encode(&Some(last_applied))?,
        );
        batch.commit()?;
        for (responder, response) in responses.drain(..) {
            responder.send(response);
        }
        Ok(())
    }
}

/// Snapshot record "keyspace" number of a wrapped data key (never an
/// application keyspace).
const KEYRING_RECORD: u8 = u8::MAX;

/// Most entries applied in one batch before it is committed.
const MAX_APPLY_RUN: usize = 1024;

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!(
            "snapshot-{:020}-{:020}-{:020}.snap",
            id.index(),
            id.leader_id.term,
            id.leader_id.node_id
        ),
        None => "snapshot-empty.snap".to_string(),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(format!("snapshot task failed: {e}")))?
}

/// Nice value of the thread that builds a snapshot (0 is normal; 19 lowest).
const SNAPSHOT_NICE: i32 = 10;

/// Runs `work` on a thread of its own at a lower CPU priority
/// ([`SNAPSHOT_NICE`]). Building a snapshot reads and writes the whole state
/// and every member of a shard reaches the threshold at the same entry, so
/// all of them build at once: measured under the active-active benchmark
/// (2 cores, six shard nodes), 150–600 ms of full-speed CPU per node every
/// ~7 s, during which replication and client writes stalled (the convergence
/// lag's tail). At a lower priority it takes what the latency-bound work
/// leaves. A thread of its own because an unprivileged process cannot raise a
/// thread's priority back, so a pooled thread would stay lowered.
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot-builder".into())
        .spawn(move || {
            lower_this_threads_priority(SNAPSHOT_NICE);
            let _ = done.send(work());
        })?;
    result
        .await
        .map_err(|_| io::Error::other("the snapshot thread ended without an answer"))?
}

/// Lowers the calling thread's CPU priority to `nice` (Linux keeps a nice
/// value per thread). A failure only costs the priority: logged, not fatal.
fn lower_this_threads_priority(nice: i32) {
    // SAFETY: setpriority reads no memory of ours; `who` 0 is the calling
    // thread on Linux.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if status != 0 {
        tracing::debug!(
            error = %io::Error::last_os_error(),
            nice,
            "could not lower the snapshot thread's priority"
        );
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let store = self.clone();
        let (meta, path) = in_background(move || store.build()).await?;
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.read_meta::<Option<LogId>>(LAST_APPLIED_KEY)?.flatten();
        let membership = self.read_meta(MEMBERSHIP_KEY)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let engine = self.inner.engine.clone();
        let mut batch = ApplyBatch::new(&engine);
        let mut last_applied: Option<LogId> = None;
        let mut run = 0;
        let mut responses = Vec::new();
        loop {
            // Take entries while they are ready; when the stream would wait (or the
            // run is long), commit what was applied and answer its clients first.
            let next = match entries.try_next().now_or_never() {
                Some(next) if run < MAX_APPLY_RUN => next?,
                pending => {
                    if let Some(last) = last_applied.take() {
                        let full = std::mem::replace(&mut batch, ApplyBatch::new(&engine));
                        self.commit_run(full, last, &mut responses)?;
                        run = 0;
                    }
                    match pending {
                        Some(next) => next?,
                        None => entries.try_next().await?,
                    }
                }
            };
            let Some((entry, responder)) = next else {
                break;
            };
            let response = self.apply_entry(&entry, &mut batch)?;
            last_applied = Some(entry.log_id);
            run += 1;
            if let Some(responder) = responder {
                responses.push((responder, response));
            }
        }
        if let Some(last) = last_applied {
            self.commit_run(batch, last, &mut responses)?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.clone();
        blocking(move || store.load_snapshot(&snapshot.path).map(|_| ())).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let Some((meta, name)) = self.read_meta::<(SnapshotMeta, String)>(CURRENT_SNAPSHOT_KEY)?
        else {
            return Ok(None);
        };
        let path = self.inner.snapshot_dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFile { path },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_threads_nice() -> i32 {
        // SAFETY: getpriority reads no memory of ours.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[tokio::test]
    async fn snapshots_are_built_at_a_lower_priority_on_a_thread_of_their_own() {
        let before = this_threads_nice();
        let (nice, name) = in_background(|| {
            Ok((
                this_threads_nice(),
                std::thread::current().name().map(String::from),
            ))
        })
        .await
        .unwrap();
        assert_eq!(nice, SNAPSHOT_NICE.max(before));
        assert_eq!(name.as_deref(), Some("snapshot-builder"));
        assert_eq!(
            this_threads_nice(),
            before,
            "the caller's priority is unchanged"
        );
        let failed = in_background(|| Err::<(), _>(io::Error::other("disk gone"))).await;
        assert_eq!(failed.unwrap_err().to_string(), "disk gone");
    }
}
