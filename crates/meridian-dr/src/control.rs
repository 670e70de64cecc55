//! The control plane's own backups.
//!
//! A control-plane backup holds every record the control plane stores
//! (regions, shards, namespaces and their routes and epochs, failovers,
//! deletions, the access policy, the audit chain, backup catalog, jobs,
//! schedules, erasures, counters) exactly as its state machine encodes
//! them, each with the name of its keyspace: a restore writes them back
//! through the same versioned decoders, so a backup taken by an older build
//! restores through the upgrades those decoders already do.
//!
//! It uses the namespace backups' object layout (compressed, sealed chunks
//! and a JSON manifest with every object's SHA-256) under
//! `control-plane/ID/` in the location, with the manifest kind
//! `control-plane` (format [`CONTROL_MANIFEST_FORMAT`]). Its digest is a
//! SHA-256 over every record in order, checked whenever it is read.

use crate::location::Opened;
use crate::manifest::{BackupKind, CONTROL_MANIFEST_FORMAT, MANIFEST_NAME, Manifest};
use crate::reader::ChunkReader;
use crate::writer::{BackupMeta, BackupWriter};
use crate::{BackupItem, DrError};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Directory of the control plane's backups inside a location.
pub const CONTROL_DIR: &str = "control-plane";

/// One stored record of the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRecord {
    /// The keyspace it is stored in (e.g. `control_namespaces`).
    pub keyspace: String,
    /// Its key.
    pub key: Vec<u8>,
    /// Its stored value (not sealed: the backup's own key seals it).
    pub value: Vec<u8>,
}

impl BackupItem for ControlRecord {
    fn plain_size(&self) -> usize {
        self.keyspace.len() + self.key.len() + self.value.len() + 16
    }
}

/// The digest of a control-plane backup: SHA-256 over every record's
/// keyspace, key and value, each length-prefixed, in order.
#[derive(Default)]
pub struct ControlDigest {
    hash: Sha256,
    records: u64,
}

impl ControlDigest {
    /// Adds one record.
    pub fn add(&mut self, record: &ControlRecord) {
        for part in [record.keyspace.as_bytes(), &record.key, &record.value] {
            self.hash.update((part.len() as u64).to_be_bytes());
            self.hash.update(part);
        }
        self.records += 1;
    }

    /// Records added and the hex digest.
    pub fn finish(self) -> (u64, String) {
        (self.records, hex::encode(self.hash.finalize()))
    }
}

/// What a control-plane backup is of.
#[derive(Debug, Clone)]
pub struct ControlBackupMeta {
    /// Its id (a directory name: `A-Z a-z 0-9 - _ .`).
    pub backup_id: String,
    /// The location's name, as the control plane knew it.
    pub location: String,
    /// The region the location is in.
    pub location_region: String,
    /// The control-plane member that wrote it.
    pub source_node: u64,
    /// The Raft index the records were read at.
    pub applied_index: u64,
    /// The routing-table version then (kept in `change_seq`).
    pub routing_version: u64,
    /// When (Unix ms).
    pub created_unix_ms: u64,
}

/// The directory of control-plane backup `backup_id` in a location.
pub fn control_dir(prefix: &Path, backup_id: &str) -> Path {
    let mut parts: Vec<String> = prefix.parts().map(|p| p.as_ref().to_string()).collect();
    parts.extend([CONTROL_DIR.to_string(), backup_id.to_string()]);
    Path::from_iter(parts)
}

/// Writes `records` as control-plane backup `meta`, sealed under `kek`;
/// the manifest last. A failure removes what was written.
pub async fn write(
    location: &Opened,
    meta: ControlBackupMeta,
    records: Vec<ControlRecord>,
    kek: &[u8; 32],
) -> Result<Manifest, DrError> {
    let dir = control_dir(&location.prefix, &meta.backup_id);
    let backup = BackupMeta {
        backup_id: meta.backup_id,
        namespace: String::new(),
        jurisdictions: Vec::new(),
        location: meta.location,
        location_region: meta.location_region,
        source_shard: "control-plane".into(),
        source_node: meta.source_node,
        change_seq: meta.routing_version,
        kind: BackupKind::ControlPlane,
        parent: None,
        from_seq: 0,
        applied_index: meta.applied_index,
        created_unix_ms: meta.created_unix_ms,
        time_marks: Vec::new(),
    };
    let mut writer: BackupWriter<ControlRecord> = BackupWriter::new_in(location, dir, backup, kek)?;
    let mut digest = ControlDigest::default();
    for record in records {
        digest.add(&record);
        if let Err(err) = writer.push(record).await {
            writer.abort().await;
            return Err(err);
        }
    }
    let (count, digest) = digest.finish();
    writer.finish(count, digest).await
}

/// Removes control-plane backup `backup_id` from `location` (retention):
/// the manifest first, so it is never listed or restored again, then its
/// objects. Returns the objects removed.
pub async fn delete(location: &Opened, backup_id: &str) -> Result<usize, DrError> {
    crate::writer::delete_dir(location, control_dir(&location.prefix, backup_id)).await
}

/// The manifest of control-plane backup `backup_id` in `location`.
pub async fn read_manifest(location: &Opened, backup_id: &str) -> Result<Manifest, DrError> {
    let path = control_dir(&location.prefix, backup_id).join(MANIFEST_NAME);
    let bytes = match location.store.get(&path).await {
        Ok(result) => result.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(DrError::Missing {
                backup: backup_id.to_string(),
                object: path.to_string(),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let manifest = Manifest::decode(backup_id, &bytes)?;
    if manifest.kind != BackupKind::ControlPlane || manifest.format != CONTROL_MANIFEST_FORMAT {
        return Err(DrError::Manifest {
            backup: backup_id.to_string(),
            reason: "not a control-plane backup".into(),
        });
    }
    Ok(manifest)
}

/// Reads control-plane backup `manifest` back: every object checked
/// against the manifest, the records' count and digest against what it
/// recorded. Refuses backups whose records exceed `max_plain_bytes`.
pub async fn read(
    location: &Opened,
    manifest: &Manifest,
    kek: &[u8; 32],
    max_plain_bytes: u64,
) -> Result<Vec<ControlRecord>, DrError> {
    let plain: u64 = manifest.objects.iter().map(|o| o.plain_bytes).sum();
    if plain > max_plain_bytes {
        return Err(DrError::Manifest {
            backup: manifest.backup_id.clone(),
            reason: format!(
                "its records take {plain} bytes; a control-plane restore takes at most {max_plain_bytes}"
            ),
        });
    }
    let mut reader = ChunkReader::new(location, manifest, kek)?;
    let mut digest = ControlDigest::default();
    let mut records = Vec::new();
    while let Some(chunk) = reader.next_chunk::<ControlRecord>().await? {
        for record in chunk {
            digest.add(&record);
            records.push(record);
        }
    }
    let (count, found) = digest.finish();
    if count != manifest.key_count || found != manifest.digest {
        return Err(DrError::DigestMismatch {
            backup: manifest.backup_id.clone(),
            expected: format!("{} ({} records)", manifest.digest, manifest.key_count),
            found: format!("{found} ({count} records)"),
        });
    }
    Ok(records)
}

/// Every control-plane backup in `location` whose manifest reads, oldest
/// first (by creation time, then id). Unreadable manifests are skipped
/// with a warning: one damaged backup does not hide the others.
pub async fn list(location: &Opened) -> Result<Vec<Manifest>, DrError> {
    let mut parts: Vec<String> = location
        .prefix
        .parts()
        .map(|p| p.as_ref().to_string())
        .collect();
    parts.push(CONTROL_DIR.to_string());
    let dir = Path::from_iter(parts);
    let objects: Vec<object_store::ObjectMeta> =
        location.store.list(Some(&dir)).try_collect().await?;
    let mut manifests = Vec::new();
    for object in objects {
        if object.location.filename() != Some(MANIFEST_NAME) {
            continue;
        }
        let Some(backup_id) = object
            .location
            .parts()
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .nth(1)
            .map(|p| p.as_ref().to_string())
        else {
            continue;
        };
        match read_manifest(location, &backup_id).await {
            Ok(manifest) => manifests.push(manifest),
            Err(err) => {
                tracing::warn!(%backup_id, %err, "skipping an unreadable control-plane backup")
            }
        }
    }
    manifests
        .sort_by(|a, b| (a.created_unix_ms, &a.backup_id).cmp(&(b.created_unix_ms, &b.backup_id)));
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<ControlRecord> {
        (0..50u8)
            .map(|i| ControlRecord {
                keyspace: if i % 2 == 0 {
                    "control_namespaces"
                } else {
                    "control_meta"
                }
                .into(),
                key: vec![i],
                value: vec![i; 100],
            })
            .collect()
    }

    fn meta(id: &str, at: u64) -> ControlBackupMeta {
        ControlBackupMeta {
            backup_id: id.into(),
            location: "vault".into(),
            location_region: "eu-west".into(),
            source_node: 1,
            applied_index: 77,
            routing_version: 12,
            created_unix_ms: at,
        }
    }

    #[tokio::test]
    async fn written_records_read_back_listed_oldest_first_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let location = crate::location::open(&url).unwrap();
        let kek = [7u8; 32];
        write(&location, meta("cp-2", 2_000), records(), &kek)
            .await
            .unwrap();
        let manifest = write(&location, meta("cp-1", 1_000), records(), &kek)
            .await
            .unwrap();
        assert_eq!(manifest.format, CONTROL_MANIFEST_FORMAT);
        assert_eq!(manifest.kind, BackupKind::ControlPlane);
        assert_eq!(manifest.key_count, 50);
        let listed: Vec<String> = list(&location)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.backup_id)
            .collect();
        assert_eq!(listed, ["cp-1", "cp-2"]);
        let read_back = read_manifest(&location, "cp-1").await.unwrap();
        assert_eq!(read_back, manifest);
        assert_eq!(
            read(&location, &read_back, &kek, 1 << 20).await.unwrap(),
            records()
        );
        // A limit below its size is refused, naming the limit.
        let err = read(&location, &read_back, &kek, 100).await.unwrap_err();
        assert!(err.to_string().contains("at most 100"), "{err}");
        // Another key-encryption key opens nothing.
        assert!(
            read(&location, &read_back, &[8u8; 32], 1 << 20)
                .await
                .is_err()
        );
        // A damaged object is named.
        let object = &manifest.objects[0].path;
        let file = dir.path().join(object);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let err = read(&location, &read_back, &kek, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, DrError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains(object.as_str()), "{err}");
        // A namespace backup's manifest is not a control-plane backup.
        assert!(read_manifest(&location, "missing").await.is_err());
        // Deleted: no longer listed, its objects gone.
        assert!(delete(&location, "cp-1").await.unwrap() >= 2);
        let listed: Vec<String> = list(&location)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.backup_id)
            .collect();
        assert_eq!(listed, ["cp-2"]);
        assert!(
            !dir.path()
                .join(CONTROL_DIR)
                .join("cp-1")
                .join(MANIFEST_NAME)
                .exists()
        );
    }
}
