//! Writing a backup of a namespace this node holds (`Admin.Backup`): one
//! consistent view of the local copy streamed into `meridian-dr`'s writer —
//! records cross from the storage thread in bounded batches, so memory stays
//! at a few chunks whatever the namespace's size — then read back and
//! checked against the digest computed from the same view.

use crate::digest::NamespaceDigest;
use crate::error::ShardError;
use crate::node::ShardNode;
use meridian_dr::Record;
use meridian_dr::reader::RecordDigest;
use meridian_dr::writer::{BackupMeta, BackupWriter};
use meridian_proto::v1 as pb;
use std::time::Instant;

/// Records handed from the storage thread to the writer at a time.
const BATCH: usize = 1024;

/// The shard's digest as `meridian-dr`'s validation uses it.
#[derive(Default)]
struct Digest(Option<NamespaceDigest>);

impl RecordDigest for Digest {
    fn add(&mut self, record: &Record) {
        self.0.get_or_insert_with(NamespaceDigest::default).add(
            &record.key,
            record.version,
            &record.value,
        );
    }
    fn finish(&mut self) -> (u64, String) {
        let digest = self.0.take().unwrap_or_default();
        (digest.count(), digest.finish())
    }
}

/// The key-encryption key backups are sealed under: the node's key file.
pub(crate) fn backup_kek(node: &ShardNode) -> Result<[u8; 32], ShardError> {
    let Some(key_file) = node.config.node.key_file() else {
        return Err(ShardError::NotApplicable(
            "backups are encrypted with the node's key-encryption key: set node.encryption_key_file".into(),
        ));
    };
    Ok(meridian_raft::at_rest::read_key_file(key_file)?)
}

pub(crate) fn dr_error(err: meridian_dr::DrError) -> ShardError {
    use meridian_dr::DrError as E;
    match err {
        E::Missing { .. } | E::Damaged { .. } | E::Manifest { .. } | E::DigestMismatch { .. } => {
            ShardError::BackupDamaged(err.to_string())
        }
        E::Location { .. } => ShardError::NotApplicable(err.to_string()),
        E::Store(_) | E::Crypto(_) => ShardError::Backup(err.to_string()),
    }
}

/// A backup id names a directory in the location: 1-128 characters from
/// `A-Z a-z 0-9 - _ .`, not starting with `.` (no path tricks).
pub(crate) fn check_backup_id(id: &str) -> Result<(), ShardError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || id.starts_with('.')
    {
        return Err(ShardError::Invalid(crate::limits::LimitError::Conflict {
            message: "backup_id: 1-128 characters from A-Z, a-z, 0-9, '-', '_', '.', not starting with '.'".into(),
        }));
    }
    Ok(())
}

/// Reads backup `request` back and checks it; a problem is the answer (not
/// an error), naming the object at fault.
pub async fn validate(
    node: &ShardNode,
    request: pb::ValidateBackupRequest,
) -> Result<pb::BackupValidation, ShardError> {
    crate::limits::validate_namespace_name(&request.namespace)?;
    check_backup_id(&request.backup_id)?;
    let kek = backup_kek(node)?;
    let location = meridian_dr::location::open(&request.location_url).map_err(dr_error)?;
    let node_id = node.id();
    let checked = async {
        let manifest =
            meridian_dr::reader::read_manifest(&location, &request.namespace, &request.backup_id)
                .await?;
        meridian_dr::reader::validate(&location, &manifest, &kek, &mut Digest::default()).await
    }
    .await;
    Ok(match checked {
        Ok(done) => pb::BackupValidation {
            ok: true,
            objects: u32::try_from(done.objects).unwrap_or(u32::MAX),
            records: done.records,
            stored_bytes: done.stored_bytes,
            node_id,
            ..Default::default()
        },
        Err(err) => {
            use meridian_dr::DrError as E;
            let (problem, object) = match &err {
                E::Missing { object, .. } => ("missing", object.clone()),
                E::Damaged { object, .. } => ("damaged", object.clone()),
                E::Manifest { .. } => ("manifest", String::new()),
                E::DigestMismatch { .. } => ("digest", String::new()),
                E::Crypto(_) => ("key", String::new()),
                E::Location { .. } | E::Store(_) => return Err(dr_error(err)),
            };
            pb::BackupValidation {
                ok: false,
                problem: problem.into(),
                object,
                message: err.to_string(),
                node_id,
                ..Default::default()
            }
        }
    })
}

/// Writes backup `request` of a namespace this node holds, then validates it.
pub async fn write(
    node: &ShardNode,
    request: pb::BackupRequest,
) -> Result<pb::BackupResponse, ShardError> {
    let started = Instant::now();
    crate::limits::validate_namespace_name(&request.namespace)?;
    check_backup_id(&request.backup_id)?;
    let kek = backup_kek(node)?;
    let location = meridian_dr::location::open(&request.location_url).map_err(dr_error)?;
    let applied_index = node.header().applied_index;
    let meta = BackupMeta {
        backup_id: request.backup_id.clone(),
        namespace: request.namespace.clone(),
        jurisdictions: request.jurisdictions.clone(),
        location: request.location_name.clone(),
        location_region: request.location_region.clone(),
        source_shard: node.config.node.shard.clone(),
        source_node: node.id(),
        change_seq: 0,
        applied_index,
        created_unix_ms: meridian_access::now_unix_ms(),
    };

    // The storage thread reads one view and sends batches; it returns the
    // view's change sequence and the digest of what it sent.
    let (sender, mut batches) = tokio::sync::mpsc::channel::<Vec<Record>>(4);
    let machine = node.machine.clone();
    let namespace = request.namespace.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let mut digest = NamespaceDigest::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut writer_gone = false;
        let seq = machine.visit_namespace_at_seq(&namespace, |_, key, version, value| {
            digest.add(&key, version, &value);
            batch.push(Record {
                key,
                version,
                value,
            });
            if batch.len() == BATCH && sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                writer_gone = true;
                return false;
            }
            true
        })?;
        if !writer_gone && !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
        Ok::<_, std::io::Error>((seq, digest.count(), digest.finish()))
    });
    let mut writer = BackupWriter::new(&location, meta, &kek).map_err(dr_error)?;
    let mut failed = None;
    while let Some(batch) = batches.recv().await {
        for record in batch {
            if let Err(err) = writer.push(record).await {
                failed = Some(err);
                break;
            }
        }
        if failed.is_some() {
            break;
        }
    }
    drop(batches);
    let read = reading
        .await
        .map_err(|e| ShardError::Backup(format!("the reading task stopped: {e}")));
    let (change_seq, key_count, digest) = match (read, failed) {
        (Ok(Ok(done)), None) => done,
        (read, failed) => {
            writer.abort().await;
            return Err(match (read, failed) {
                (_, Some(err)) => dr_error(err),
                (Ok(Err(err)), None) if err.kind() == std::io::ErrorKind::NotFound => {
                    crate::command::Rejection::NamespaceNotFound {
                        name: request.namespace.clone(),
                    }
                    .into()
                }
                (Ok(Err(err)), None) => ShardError::Storage(err),
                (Err(err), None) => err,
                (Ok(Ok(_)), None) => ShardError::Backup("unreachable".into()),
            });
        }
    };
    let writer = writer.at_seq(change_seq);
    let manifest = writer
        .finish(key_count, digest.clone())
        .await
        .map_err(dr_error)?;
    // Verified by default: read every object back and compare digests.
    let verified =
        meridian_dr::reader::validate(&location, &manifest, &kek, &mut Digest::default())
            .await
            .map_err(dr_error)?;
    tracing::info!(
        backup = %manifest.backup_id,
        namespace = %manifest.namespace,
        change_seq,
        key_count,
        bytes = verified.stored_bytes,
        "backup written and verified"
    );
    Ok(pb::BackupResponse {
        backup_id: manifest.backup_id.clone(),
        node_id: node.id(),
        change_seq,
        applied_index,
        key_count,
        digest,
        stored_bytes: verified.stored_bytes,
        objects: u32::try_from(verified.objects).unwrap_or(u32::MAX),
        verified: true,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
