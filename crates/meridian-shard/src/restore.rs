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
use crate::command::{
    ChangeRecord, Command, CommandResult, Rejection, ReplicatedWrite, VersionedEntry,
};
use crate::error::ShardError;
use crate::node::ShardNode;
use futures::StreamExt;
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
/// Raft entries of a full backup's records proposed at once.
const IMPORTS_IN_FLIGHT: usize = 4;

/// `entries` cut into runs of at most `max_ops` entries and about
/// `max_bytes` bytes by `size` (a single larger entry makes a run of its own).
fn parts<T>(
    entries: &[T],
    max_ops: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, entry) in entries.iter().enumerate() {
        let size = size(entry);
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

/// The backups a restore replays: a full one, then incremental ones each
/// continuing the one before, and the sequence to stop at.
struct Chain {
    manifests: Vec<meridian_dr::Manifest>,
    at_seq: u64,
}

/// Reads and checks the manifests of `request`'s chain.
async fn read_chain(
    location: &meridian_dr::location::Opened,
    request: &pb::RestoreRequest,
) -> Result<Chain, ShardError> {
    use meridian_dr::manifest::BackupKind;
    let mut manifests = Vec::with_capacity(1 + request.incrementals.len());
    for id in std::iter::once(&request.backup_id).chain(&request.incrementals) {
        check_backup_id(id)?;
        let manifest = meridian_dr::reader::read_manifest(location, &request.source_namespace, id)
            .await
            .map_err(dr_error)?;
        let broken = |why: String| ShardError::BackupDamaged(format!("backup {id}: {why}"));
        if manifest.namespace != request.source_namespace {
            return Err(broken(format!(
                "it is of namespace {:?}, not {:?}",
                manifest.namespace, request.source_namespace
            )));
        }
        match (manifests.last(), manifest.kind) {
            (_, BackupKind::ControlPlane) => {
                return Err(broken(
                    "it is a control-plane backup (restore it with `meridian control restore`)"
                        .into(),
                ));
            }
            (None, BackupKind::Full) => {}
            (None, BackupKind::Changes) => {
                return Err(broken("a chain starts with a full backup".into()));
            }
            (Some(_), BackupKind::Full) => {
                return Err(broken("a full backup cannot continue a chain".into()));
            }
            (Some(previous), BackupKind::Changes) => {
                let previous: &meridian_dr::Manifest = previous;
                if manifest.parent.as_deref() != Some(previous.backup_id.as_str())
                    || manifest.from_seq != previous.change_seq
                {
                    return Err(broken(format!(
                        "it continues {:?} from change {}, not {} at change {}",
                        manifest.parent, manifest.from_seq, previous.backup_id, previous.change_seq
                    )));
                }
            }
        }
        manifests.push(manifest);
    }
    let (first, last) = match (manifests.first(), manifests.last()) {
        (Some(first), Some(last)) => (first.change_seq, last.change_seq),
        _ => return Err(ShardError::Backup("no backup to restore".into())),
    };
    let at_seq = request.at_seq.unwrap_or(last);
    if at_seq < first || at_seq > last {
        return Err(ShardError::NotApplicable(format!(
            "change {at_seq} is outside the chain, which reaches changes {first} through {last}"
        )));
    }
    Ok(Chain { manifests, at_seq })
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
    let chain = read_chain(&location, &request).await?;
    if !request.replace && node.machine.namespace(&request.namespace).is_some() {
        return Err(Rejection::NamespaceExists {
            name: request.namespace,
        }
        .into());
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let workers = node.raft.workers.clone();
    workers.spawn(format!("restore:{}", request.namespace), async move {
        let lock = node.restores.of(&request.namespace);
        let _only_one = lock.lock().await;
        let target = request.namespace.clone();
        let result = run(&node, &request, &location, &chain, &kek, &sender).await;
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
    chain: &Chain,
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
        records_total: chain
            .manifests
            .iter()
            .flat_map(|m| &m.objects)
            .map(|o| o.records)
            .sum(),
        bytes_total: chain.manifests.iter().map(|m| m.stored_bytes()).sum(),
        change_seq: chain.at_seq,
        ..Default::default()
    };
    let batch = node.config.limits.max_batch_ops.max(1);
    let mut bytes_before = 0u64;
    let mut reached = 0u64;
    for manifest in &chain.manifests {
        if manifest.kind == meridian_dr::manifest::BackupKind::Changes
            && manifest.from_seq >= chain.at_seq
        {
            break;
        }
        let mut reader = meridian_dr::reader::ChunkReader::new(location, manifest, kek)
            .map_err(|e| Stop::Failed(dr_error(e)))?;
        match manifest.kind {
            meridian_dr::manifest::BackupKind::Full => {
                while let Some(records) = reader
                    .next_chunk::<meridian_dr::Record>()
                    .await
                    .map_err(|e| Stop::Failed(dr_error(e)))?
                {
                    let entries: Vec<VersionedEntry> = records
                        .into_iter()
                        .map(|r| VersionedEntry {
                            key: r.key,
                            value: r.value,
                            version: r.version,
                        })
                        .collect();
                    // A full backup's keys are distinct, so the order its
                    // parts commit in does not matter: several in flight
                    // keep Raft's pipeline full.
                    let mut loading = futures::stream::FuturesUnordered::new();
                    for part in parts(&entries, batch, PART_BYTES, entry_size) {
                        if loading.len() >= IMPORTS_IN_FLIGHT
                            && let Some(loaded) = loading.next().await
                        {
                            report.records_loaded += loaded?;
                            report.bytes_read = bytes_before + reader.bytes_read();
                            send(progress, &report).await?;
                        }
                        loading.push(import_part(node, target, part));
                    }
                    while let Some(loaded) = loading.next().await {
                        report.records_loaded += loaded?;
                        report.bytes_read = bytes_before + reader.bytes_read();
                        send(progress, &report).await?;
                    }
                }
                reached = manifest.change_seq;
            }
            meridian_dr::manifest::BackupKind::Changes => {
                let size = |c: &ChangeRecord| {
                    c.writes
                        .iter()
                        .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len))
                        .sum::<usize>()
                };
                reached = manifest.from_seq;
                while let Some(changes) = reader
                    .next_chunk::<meridian_dr::Change>()
                    .await
                    .map_err(|e| Stop::Failed(dr_error(e)))?
                {
                    // Every change after the parent's, in order: a gap or a
                    // repeat would restore a state the source never had.
                    let mut expected = reached;
                    for change in &changes {
                        if change.seq > chain.at_seq {
                            break;
                        }
                        if Some(change.seq) != expected.checked_add(1) {
                            return Err(ShardError::BackupDamaged(format!(
                                "backup {}: change {} follows change {expected}",
                                manifest.backup_id, change.seq
                            ))
                            .into());
                        }
                        expected = change.seq;
                    }
                    let changes: Vec<ChangeRecord> = changes
                        .into_iter()
                        .take_while(|c| c.seq <= chain.at_seq)
                        .map(|c| ChangeRecord {
                            seq: c.seq,
                            writes: c
                                .writes
                                .into_iter()
                                .map(|w| ReplicatedWrite {
                                    key: w.key,
                                    value: w.value,
                                    version: w.version,
                                    previous_version: None,
                                })
                                .collect(),
                        })
                        .collect();
                    let last = changes.last().map(|c| c.seq);
                    for part in parts(&changes, batch, PART_BYTES, size) {
                        node.restore_cap.take(part_size(part, size)).await;
                        let command = Command::LoadChanges {
                            namespace: target.clone(),
                            changes: part.to_vec(),
                        };
                        load(node, command).await?;
                        report.records_loaded += part.len() as u64;
                        report.bytes_read = bytes_before + reader.bytes_read();
                        send(progress, &report).await?;
                    }
                    if let Some(last) = last {
                        reached = last;
                    }
                    if reached >= chain.at_seq {
                        break;
                    }
                }
            }
            // Refused when the chain was put together.
            meridian_dr::manifest::BackupKind::ControlPlane => {
                return Err(ShardError::BackupDamaged(format!(
                    "backup {} is a control-plane backup",
                    manifest.backup_id
                ))
                .into());
            }
        }
        bytes_before += manifest.stored_bytes();
    }
    if reached != chain.at_seq {
        return Err(ShardError::BackupDamaged(format!(
            "the chain ends at change {reached}, not at {}",
            chain.at_seq
        ))
        .into());
    }
    // Compare what is stored, not what was read: with the source's digest
    // where a backup of the chain ends at this change.
    let machine = node.machine.clone();
    let namespace = target.clone();
    let (digest, key_count) = tokio::task::spawn_blocking(move || machine.digest(&namespace))
        .await
        .map_err(|e| ShardError::Storage(std::io::Error::other(e)))?
        .map_err(ShardError::Storage)?;
    let ends_here = chain
        .manifests
        .iter()
        .rev()
        .find(|m| m.change_seq == chain.at_seq);
    if let Some(source) = ends_here
        && (digest != source.digest || key_count != source.key_count)
    {
        return Err(ShardError::BackupDamaged(format!(
            "backup {}: restored digest {digest} ({key_count} keys) differs from the source's {} ({} keys) at change {}",
            source.backup_id, source.digest, source.key_count, source.change_seq
        ))
        .into());
    }
    report.done = true;
    report.digest = digest;
    report.key_count = key_count;
    report.digest_checked = ends_here.is_some();
    tracing::info!(
        namespace = %target,
        backup = %request.backup_id,
        incrementals = request.incrementals.len(),
        at_seq = chain.at_seq,
        records = report.records_loaded,
        digest_checked = report.digest_checked,
        "restore finished"
    );
    Ok(report)
}

/// Record bytes of one key-value.
fn entry_size(entry: &VersionedEntry) -> usize {
    entry.key.len() + entry.value.len()
}

fn part_size<T>(part: &[T], size: impl Fn(&T) -> usize) -> usize {
    part.iter().map(size).sum()
}

/// Loads one part of a full backup's records; the records loaded.
async fn import_part(node: &ShardNode, target: &str, part: &[VersionedEntry]) -> Result<u64, Stop> {
    node.restore_cap.take(part_size(part, entry_size)).await;
    let command = Command::Import {
        namespace: target.to_string(),
        entries: part.to_vec(),
    };
    load(node, command).await?;
    Ok(part.len() as u64)
}

/// Proposes one load step; a refusal is the restore's failure.
async fn load(node: &ShardNode, command: Command) -> Result<(), Stop> {
    match node.propose(command).await? {
        CommandResult::Imported { .. } => Ok(()),
        CommandResult::Rejected(rejection) => Err(ShardError::from(rejection).into()),
        other => Err(ShardError::Backup(format!("unexpected result {other:?}")).into()),
    }
}

async fn send(
    progress: &tokio::sync::mpsc::Sender<Result<pb::RestoreProgress, Status>>,
    report: &pb::RestoreProgress,
) -> Result<(), Stop> {
    progress
        .send(Ok(report.clone()))
        .await
        .map_err(|_| Stop::CallerGone)
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
            let runs = parts(&entries, ops, bytes, entry_size);
            let lengths: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            assert_eq!(lengths, expected, "{sizes:?} ops {ops} bytes {bytes}");
            assert_eq!(lengths.iter().sum::<usize>(), entries.len());
        }
    }
}
