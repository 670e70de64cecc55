//! Writing a backup of a namespace this node holds (`Admin.Backup`): one
//! consistent view of the local copy streamed into `meridian-dr`'s writer —
//! records cross from the storage thread in bounded batches, so memory stays
//! at a few chunks whatever the namespace's size — then read back and
//! checked against the digest computed from the same view.

use crate::digest::NamespaceDigest;
use crate::error::ShardError;
use crate::node::ShardNode;
use meridian_dr::manifest::BackupKind;
use meridian_dr::reader::RecordDigest;
use meridian_dr::writer::{BackupMeta, BackupWriter};
use meridian_dr::{Change, ChangeWrite, Record};
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

/// Removes a backup from its location (retention; the control plane
/// decided it expired).
pub async fn delete(
    node: &ShardNode,
    request: pb::DeleteBackupRequest,
) -> Result<pb::DeleteBackupResponse, ShardError> {
    crate::limits::validate_namespace_name(&request.namespace)?;
    check_backup_id(&request.backup_id)?;
    let location = meridian_dr::location::open(&request.location_url).map_err(dr_error)?;
    let removed =
        meridian_dr::writer::delete_backup(&location, &request.namespace, &request.backup_id)
            .await
            .map_err(dr_error)?;
    tracing::info!(backup = %request.backup_id, namespace = %request.namespace, removed, "backup removed");
    Ok(pb::DeleteBackupResponse {
        node_id: node.id(),
        objects_removed: removed as u64,
    })
}

/// How long a backup waits for this node to apply the namespace's backup
/// hold (a follower a little behind its leader).
const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until this node has applied `namespace`'s backup hold: from then
/// on every change after the view a backup reads is logged for the next.
async fn wait_for_hold(node: &ShardNode, namespace: &str) -> Result<(), ShardError> {
    let deadline = Instant::now() + HOLD_WAIT;
    loop {
        match node.machine.namespace(namespace) {
            None => {
                return Err(crate::command::Rejection::NamespaceNotFound {
                    name: namespace.to_string(),
                }
                .into());
            }
            Some(record) if record.backup_hold.is_some() => return Ok(()),
            Some(_) if Instant::now() >= deadline => {
                return Err(ShardError::NotApplicable(format!(
                    "node {} has not applied the backup hold of {namespace:?} within {} s; another member may take the backup",
                    node.id(),
                    HOLD_WAIT.as_secs()
                )));
            }
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

/// Writes backup `request` of a namespace this node holds — every key
/// (full) or the changes since its parent (incremental) — then validates it.
pub async fn write(
    node: &ShardNode,
    request: pb::BackupRequest,
) -> Result<pb::BackupResponse, ShardError> {
    let started = Instant::now();
    crate::limits::validate_namespace_name(&request.namespace)?;
    if node.is_peer(&request.namespace) {
        // Refused here as well as by the control plane: this copy holds
        // typed key states and logs only its own region's writes, so what
        // it would write is not a backup of the namespace.
        return Err(ShardError::NotApplicable(
            meridian_replication::mode::ActiveActive::backup_refusal(&request.namespace),
        ));
    }
    check_backup_id(&request.backup_id)?;
    if request.incremental {
        check_backup_id(&request.parent_backup_id)?;
    }
    let kek = backup_kek(node)?;
    let location = meridian_dr::location::open(&request.location_url).map_err(dr_error)?;
    if request.require_hold || request.incremental {
        wait_for_hold(node, &request.namespace).await?;
    }
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
        kind: BackupKind::Full,
        parent: None,
        from_seq: 0,
        applied_index,
        created_unix_ms: meridian_access::now_unix_ms(),
        time_marks: Vec::new(),
    };
    let manifest = if request.incremental {
        write_changes(node, &request, &location, meta, &kek).await?
    } else {
        write_full(node, &request, &location, meta, &kek).await?
    };
    // Verified by default: read every object back (a full backup's digest
    // compared, an incremental one's changes checked for gaps).
    // Paced like the writing: a capped backup stays gentle to the end.
    let verified = meridian_dr::reader::validate_paced(
        &location,
        &manifest,
        &kek,
        &mut Digest::default(),
        |bytes| node.backup_cap.take(bytes),
    )
    .await
    .map_err(dr_error)?;
    tracing::info!(
        backup = %manifest.backup_id,
        namespace = %manifest.namespace,
        kind = ?manifest.kind,
        change_seq = manifest.change_seq,
        key_count = manifest.key_count,
        bytes = verified.stored_bytes,
        "backup written and verified"
    );
    Ok(pb::BackupResponse {
        backup_id: manifest.backup_id.clone(),
        node_id: node.id(),
        change_seq: manifest.change_seq,
        applied_index,
        key_count: manifest.key_count,
        digest: manifest.digest.clone(),
        stored_bytes: verified.stored_bytes,
        objects: u32::try_from(verified.objects).unwrap_or(u32::MAX),
        verified: true,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        kind: match manifest.kind {
            BackupKind::Full => "full",
            BackupKind::Changes => "changes",
            BackupKind::ControlPlane => "control-plane",
        }
        .into(),
        from_seq: manifest.from_seq,
        parent_backup_id: manifest.parent.clone().unwrap_or_default(),
    })
}

fn read_failed(namespace: &str, err: std::io::Error) -> ShardError {
    if err.kind() == std::io::ErrorKind::NotFound {
        crate::command::Rejection::NamespaceNotFound {
            name: namespace.to_string(),
        }
        .into()
    } else {
        ShardError::Storage(err)
    }
}

/// A full backup: every key from one view, streamed from the storage
/// thread in bounded batches.
async fn write_full(
    node: &ShardNode,
    request: &pb::BackupRequest,
    location: &meridian_dr::location::Opened,
    meta: BackupMeta,
    kek: &[u8; 32],
) -> Result<meridian_dr::Manifest, ShardError> {
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
    let mut writer: BackupWriter = BackupWriter::new(location, meta, kek).map_err(dr_error)?;
    let mut failed = None;
    while let Some(batch) = batches.recv().await {
        let bytes: usize = batch.iter().map(|r| r.key.len() + r.value.len()).sum();
        node.backup_cap.take(bytes).await;
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
                (Ok(Err(err)), None) => read_failed(&request.namespace, err),
                (Err(err), None) => err,
                (Ok(Ok(_)), None) => ShardError::Backup("unreachable".into()),
            });
        }
    };
    // By now the namespace had surely reached the view's change.
    writer
        .at_seq(change_seq)
        .with_time_marks(vec![(change_seq, meridian_access::now_unix_ms())])
        .finish(key_count, digest)
        .await
        .map_err(dr_error)
}

/// An incremental backup: the namespace's digest and sequence from one
/// view, then the logged changes after the parent's sequence through it.
async fn write_changes(
    node: &ShardNode,
    request: &pb::BackupRequest,
    location: &meridian_dr::location::Opened,
    mut meta: BackupMeta,
    kek: &[u8; 32],
) -> Result<meridian_dr::Manifest, ShardError> {
    let from = request.from_seq;
    let namespace = request.namespace.clone();
    let Some(record) = node.machine.namespace(&namespace) else {
        return Err(read_failed(
            &namespace,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    };
    if record.trimmed_through > from || record.backup_hold.is_none_or(|hold| hold > from) {
        return Err(ShardError::NotApplicable(format!(
            "the change log of {namespace:?} on node {} no longer reaches back to change {from} (backup {}); take a full backup",
            node.id(),
            request.parent_backup_id
        )));
    }
    let machine = node.machine.clone();
    let scanned = namespace.clone();
    let (seq, key_count, digest) = tokio::task::spawn_blocking(move || {
        let mut digest = NamespaceDigest::default();
        let seq = machine.visit_namespace_at_seq(&scanned, |_, key, version, value| {
            digest.add(&key, version, &value);
            true
        })?;
        Ok::<_, std::io::Error>((seq, digest.count(), digest.finish()))
    })
    .await
    .map_err(|e| ShardError::Backup(format!("the reading task stopped: {e}")))?
    .map_err(|e| read_failed(&namespace, e))?;
    if seq < from {
        return Err(ShardError::NotApplicable(format!(
            "node {} is at change {seq} of {namespace:?}, behind the parent backup's {from}; another member may take the backup",
            node.id()
        )));
    }
    meta.kind = BackupKind::Changes;
    meta.parent = Some(request.parent_backup_id.clone());
    meta.from_seq = from;
    meta.change_seq = seq;
    let mut writer: BackupWriter<Change> =
        BackupWriter::new(location, meta, kek).map_err(dr_error)?;
    let mut next = from;
    let copied = async {
        while next < seq {
            let changes = node
                .machine
                .changes_after(&namespace, next, BATCH)
                .map_err(ShardError::Storage)?;
            if changes.first().is_none_or(|c| c.seq != next + 1) {
                return Err(ShardError::NotApplicable(format!(
                    "the change log of {namespace:?} lacks change {} (trimmed meanwhile); take a full backup",
                    next + 1
                )));
            }
            let bytes: usize = changes
                .iter()
                .flat_map(|c| &c.writes)
                .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len))
                .sum();
            node.backup_cap.take(bytes).await;
            for change in changes.into_iter().take_while(|c| c.seq <= seq) {
                next = change.seq;
                writer
                    .push(Change {
                        seq: change.seq,
                        writes: change
                            .writes
                            .into_iter()
                            .map(|w| ChangeWrite {
                                key: w.key,
                                value: w.value,
                                version: w.version,
                            })
                            .collect(),
                    })
                    .await
                    .map_err(dr_error)?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = copied {
        writer.abort().await;
        return Err(err);
    }
    // The marks of the changes it holds, and its own end: by now the
    // namespace had surely reached the view's change.
    let mut marks = node
        .machine
        .time_marks(&namespace, from, seq)
        .map_err(ShardError::Storage)?;
    marks.push((seq, meridian_access::now_unix_ms()));
    writer
        .with_time_marks(marks)
        .finish(key_count, digest)
        .await
        .map_err(dr_error)
}
