//! Loading a backup into a namespace of this shard (`Admin.Restore`).
//!
//! The leader reads the backup's objects one at a time (each checked
//! against the manifest and opened with the backup's key) and proposes
//! their records through Raft in batches, so every member ends with the
//! same copy and memory stays at one object. The target is cleared first:
//! a restore asked again — after a control-plane leader change, say —
//! starts over and ends with the same copy, never a doubled one. The
//! stored digest is compared with the backup's at the end; a restore that
//! fails, or whose caller goes away, removes what it loaded.

use crate::backup::{backup_kek, check_backup_id, dr_error};
use crate::command::{Command, CommandResult, Rejection, VersionedEntry};
use crate::error::ShardError;
use crate::node::ShardNode;
use meridian_proto::v1 as pb;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::Stream;
use tonic::Status;

/// The progress stream of a restore.
pub type RestoreStream = Pin<Box<dyn Stream<Item = Result<pb::RestoreProgress, Status>> + Send>>;

/// One lock per target namespace: a restore asked again waits until the
/// one it replaces has stopped and cleaned up.
#[derive(Default)]
pub struct RestoreLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl RestoreLocks {
    fn of(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds or waits for.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(namespace.to_string()).or_default().clone()
    }
}

/// Why a restore stopped, for the cleanup decision.
enum Stop {
    /// The caller went away: clean up quietly.
    CallerGone,
    /// An error to report.
    Failed(ShardError),
}

impl From<ShardError> for Stop {
    fn from(err: ShardError) -> Self {
        Stop::Failed(err)
    }
}

/// Record bytes proposed in one Raft entry at most: keeps entries small
/// and progress fine-grained whatever the backup's object size.
const PART_BYTES: usize = 256 << 10;

/// `entries` cut into runs of at most `max_ops` entries and about
/// `max_bytes` bytes (a single larger entry makes a run of its own).
fn parts(entries: &[VersionedEntry], max_ops: usize, max_bytes: usize) -> Vec<&[VersionedEntry]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, entry) in entries.iter().enumerate() {
        let size = entry.key.len() + entry.value.len();
        if i > start && (i - start >= max_ops || bytes + size > max_bytes) {
            out.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

/// Checks `request` and starts the restore; the stream reports it.
pub async fn start(
    node: Arc<ShardNode>,
    request: pb::RestoreRequest,
) -> Result<RestoreStream, ShardError> {
    crate::limits::validate_namespace_name(&request.namespace)?;
    crate::limits::validate_namespace_name(&request.source_namespace)?;
    check_backup_id(&request.backup_id)?;
    // Only the leader proposes; said before the stream starts, so the
    // caller's client follows the hint to the leader.
    if !node.raft.raft.is_leader() {
        return Err(node.not_leader());
    }
    let kek = backup_kek(&node)?;
    let location = meridian_dr::location::open(&request.location_url).map_err(dr_error)?;
    let manifest = meridian_dr::reader::read_manifest(
        &location,
        &request.source_namespace,
        &request.backup_id,
    )
    .await
    .map_err(dr_error)?;
    if manifest.namespace != request.source_namespace {
        return Err(ShardError::BackupDamaged(format!(
            "backup {} is of namespace {:?}, not {:?}",
            request.backup_id, manifest.namespace, request.source_namespace
        )));
    }
    if !request.replace && node.machine.namespace(&request.namespace).is_some() {
        return Err(Rejection::NamespaceExists {
            name: request.namespace,
        }
        .into());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let lock = node.restores.of(&request.namespace);
        let _only_one = lock.lock().await;
        let target = request.namespace.clone();
        let result = run(&node, &request, &location, &manifest, &kek, &sender).await;
        let failure = match result {
            Ok(done) => {
                let _ = sender.send(Ok(done)).await;
                return;
            }
            Err(Stop::CallerGone) => None,
            Err(Stop::Failed(err)) => Some(err),
        };
        // Leave nothing half-restored behind.
        if node.machine.namespace(&target).is_some()
            && let Err(err) = node
                .propose(Command::DeleteNamespace {
                    name: target.clone(),
                })
                .await
        {
            tracing::warn!(namespace = %target, %err, "could not remove a stopped restore's copy");
        }
        match failure {
            Some(err) => {
                tracing::warn!(namespace = %target, backup = %request.backup_id, %err, "restore failed");
                let _ = sender.send(Err(err.into())).await;
            }
            None => {
                tracing::info!(namespace = %target, backup = %request.backup_id, "restore abandoned by its caller")
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        receiver,
    )))
}

async fn run(
    node: &ShardNode,
    request: &pb::RestoreRequest,
    location: &meridian_dr::location::Opened,
    manifest: &meridian_dr::Manifest,
    kek: &[u8; 32],
    progress: &tokio::sync::mpsc::Sender<Result<pb::RestoreProgress, Status>>,
) -> Result<pb::RestoreProgress, Stop> {
    let target = &request.namespace;
    if node.machine.namespace(target).is_some() {
        if !request.replace {
            return Err(ShardError::from(Rejection::NamespaceExists {
                name: target.clone(),
            })
            .into());
        }
        node.propose(Command::DeleteNamespace {
            name: target.clone(),
        })
        .await?;
    }
    match node
        .propose(Command::CreateNamespace {
            name: target.clone(),
            max_namespaces: node.config.limits.max_namespaces as u64,
        })
        .await?
    {
        CommandResult::NamespaceCreated { .. } => {}
        CommandResult::Rejected(rejection) => return Err(ShardError::from(rejection).into()),
        other => {
            return Err(ShardError::Backup(format!("unexpected result {other:?}")).into());
        }
    }
    let mut report = pb::RestoreProgress {
        node_id: node.id(),
        records_total: manifest.objects.iter().map(|o| o.records).sum(),
        bytes_total: manifest.stored_bytes(),
        change_seq: manifest.change_seq,
        ..Default::default()
    };
    let batch = node.config.limits.max_batch_ops.max(1);
    let mut reader = meridian_dr::reader::ChunkReader::new(location, manifest, kek)
        .map_err(|e| Stop::Failed(dr_error(e)))?;
    while let Some(records) = reader
        .next_chunk()
        .await
        .map_err(|e| Stop::Failed(dr_error(e)))?
    {
        if progress.is_closed() {
            return Err(Stop::CallerGone);
        }
        let entries: Vec<VersionedEntry> = records
            .into_iter()
            .map(|r| VersionedEntry {
                key: r.key,
                value: r.value,
                version: r.version,
            })
            .collect();
        for part in parts(&entries, batch, PART_BYTES) {
            let bytes: usize = part.iter().map(|e| e.key.len() + e.value.len()).sum();
            node.restore_cap.take(bytes).await;
            match node
                .propose(Command::Import {
                    namespace: target.clone(),
                    entries: part.to_vec(),
                })
                .await?
            {
                CommandResult::Imported { .. } => {}
                CommandResult::Rejected(rejection) => {
                    return Err(ShardError::from(rejection).into());
                }
                other => {
                    return Err(ShardError::Backup(format!("unexpected result {other:?}")).into());
                }
            }
            report.records_loaded += part.len() as u64;
            report.bytes_read = reader.bytes_read();
            if progress.send(Ok(report.clone())).await.is_err() {
                return Err(Stop::CallerGone);
            }
        }
    }
    // Compare what is stored, not what was read.
    let machine = node.machine.clone();
    let namespace = target.clone();
    let (digest, key_count) = tokio::task::spawn_blocking(move || machine.digest(&namespace))
        .await
        .map_err(|e| ShardError::Storage(std::io::Error::other(e)))?
        .map_err(ShardError::Storage)?;
    if digest != manifest.digest || key_count != manifest.key_count {
        return Err(ShardError::BackupDamaged(format!(
            "backup {}: restored digest {digest} ({key_count} keys) differs from the source's {} ({} keys) at change {}",
            manifest.backup_id, manifest.digest, manifest.key_count, manifest.change_seq
        ))
        .into());
    }
    report.done = true;
    report.digest = digest;
    report.key_count = key_count;
    tracing::info!(
        namespace = %target,
        backup = %manifest.backup_id,
        records = report.records_loaded,
        "restore finished, digest matches the backup's"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> VersionedEntry {
        VersionedEntry {
            key: vec![b'k'],
            value: vec![0; size.saturating_sub(1)],
            version: 1,
        }
    }

    #[test]
    fn parts_respect_both_bounds_and_keep_every_entry() {
        // (entry sizes, max ops, max bytes, expected run lengths)
        let cases: [(&[usize], usize, usize, &[usize]); 5] = [
            (&[10; 7], 3, 1_000, &[3, 3, 1]),
            (&[10; 7], 100, 25, &[2, 2, 2, 1]),
            (&[100, 1, 1], 10, 50, &[1, 2]),
            (&[], 10, 10, &[]),
            (&[5], 1, 1, &[1]),
        ];
        for (sizes, ops, bytes, expected) in cases {
            let entries: Vec<VersionedEntry> = sizes.iter().map(|s| entry(*s)).collect();
            let runs = parts(&entries, ops, bytes);
            let lengths: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            assert_eq!(lengths, expected, "{sizes:?} ops {ops} bytes {bytes}");
            assert_eq!(lengths.iter().sum::<usize>(), entries.len());
        }
    }
}
