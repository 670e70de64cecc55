//! Writing a backup: records in, objects out, manifest last.

use crate::chunk::DataKey;
use crate::location::Opened;
use crate::manifest::{
    BackupKind, CONTROL_MANIFEST_FORMAT, MANIFEST_FORMAT, MANIFEST_NAME, Manifest, ObjectEntry,
};
use crate::{BackupItem, DrError, Record};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Plain bytes of records gathered before an object is written: bounds the
/// memory a backup uses, whatever the namespace's size.
pub const CHUNK_PLAIN_BYTES: usize = 4 << 20;

/// What a backup is of, known before its records are read.
#[derive(Debug, Clone)]
pub struct BackupMeta {
    /// The backup's id.
    pub backup_id: String,
    /// The namespace.
    pub namespace: String,
    /// Its allowed jurisdictions.
    pub jurisdictions: Vec<String>,
    /// The location's name.
    pub location: String,
    /// The location's region.
    pub location_region: String,
    /// The shard read from.
    pub source_shard: String,
    /// The node read from.
    pub source_node: u64,
    /// The change sequence the records are consistent at.
    pub change_seq: u64,
    /// Full, or the changes since `parent`.
    pub kind: BackupKind,
    /// The backup an incremental one continues.
    pub parent: Option<String>,
    /// An incremental backup holds the changes after this sequence.
    pub from_seq: u64,
    /// The source's applied index then.
    pub applied_index: u64,
    /// When (Unix ms).
    pub created_unix_ms: u64,
    /// Time marks of the changes it holds (see [`Manifest::time_marks`]).
    pub time_marks: Vec<(u64, u64)>,
}

/// The directory of backup `backup_id` of `namespace` inside a location.
pub fn backup_dir(prefix: &Path, namespace: &str, backup_id: &str) -> Path {
    let mut parts: Vec<String> = prefix.parts().map(|p| p.as_ref().to_string()).collect();
    parts.extend([
        "backups".to_string(),
        namespace.to_string(),
        backup_id.to_string(),
    ]);
    Path::from_iter(parts)
}

/// A backup being written: key [`Record`]s for a full backup,
/// [`crate::Change`]s for an incremental one.
pub struct BackupWriter<T: BackupItem = Record> {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    meta: BackupMeta,
    key: DataKey,
    wrapped_key: Vec<u8>,
    pending: Vec<T>,
    pending_bytes: usize,
    chunk_plain_bytes: usize,
    objects: Vec<ObjectEntry>,
}

impl<T: BackupItem> BackupWriter<T> {
    /// Starts backup `meta` in `location`, sealed with a new data key wrapped
    /// by `kek`.
    pub fn new(location: &Opened, meta: BackupMeta, kek: &[u8; 32]) -> Result<Self, DrError> {
        let dir = backup_dir(&location.prefix, &meta.namespace, &meta.backup_id);
        Self::new_in(location, dir, meta, kek)
    }

    /// Starts backup `meta` in directory `dir` of `location` (the control
    /// plane's backups live apart from the namespaces').
    pub fn new_in(
        location: &Opened,
        dir: Path,
        meta: BackupMeta,
        kek: &[u8; 32],
    ) -> Result<Self, DrError> {
        let (key, wrapped_key) = DataKey::generate(kek, &meta.backup_id)?;
        Ok(Self {
            store: location.store.clone(),
            dir,
            meta,
            key,
            wrapped_key,
            pending: Vec::new(),
            pending_bytes: 0,
            chunk_plain_bytes: CHUNK_PLAIN_BYTES,
            objects: Vec::new(),
        })
    }

    /// Makes objects of about `bytes` plain bytes (tests use small ones).
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_plain_bytes = bytes.max(1);
        self
    }

    /// Adds a record; writes an object once enough have gathered.
    pub async fn push(&mut self, record: T) -> Result<(), DrError> {
        self.pending_bytes += record.plain_size();
        self.pending.push(record);
        if self.pending_bytes >= self.chunk_plain_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Records the change sequence the records were read at (known once
    /// the view that produced them is done).
    pub fn at_seq(mut self, change_seq: u64) -> Self {
        self.meta.change_seq = change_seq;
        self
    }

    /// Records the time marks of the changes the backup holds.
    pub fn with_time_marks(mut self, marks: Vec<(u64, u64)>) -> Self {
        self.meta.time_marks = marks;
        self
    }

    /// Bytes stored so far.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    async fn flush(&mut self) -> Result<(), DrError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let index = u32::try_from(self.objects.len())
            .map_err(|_| DrError::Crypto("a backup holds at most 2^32 objects".into()))?;
        let records = std::mem::take(&mut self.pending);
        let plain_bytes = std::mem::take(&mut self.pending_bytes) as u64;
        let stored = self.key.seal(&self.meta.backup_id, index, &records)?;
        let path = self.dir.clone().join(format!("chunk-{index:06}").as_str());
        let entry = ObjectEntry {
            path: path.to_string(),
            size: stored.len() as u64,
            sha256: hex::encode(Sha256::digest(&stored)),
            records: records.len() as u64,
            plain_bytes,
        };
        self.store.put(&path, PutPayload::from(stored)).await?;
        self.objects.push(entry);
        Ok(())
    }

    /// Writes what is left and then the manifest, with the namespace's
    /// `key_count` and `digest` at the backup's sequence.
    pub async fn finish(mut self, key_count: u64, digest: String) -> Result<Manifest, DrError> {
        self.flush().await?;
        let meta = self.meta;
        let format = match meta.kind {
            BackupKind::ControlPlane => CONTROL_MANIFEST_FORMAT,
            BackupKind::Full | BackupKind::Changes => MANIFEST_FORMAT,
        };
        let manifest = Manifest {
            format,
            backup_id: meta.backup_id,
            namespace: meta.namespace,
            jurisdictions: meta.jurisdictions,
            location: meta.location,
            location_region: meta.location_region,
            source_shard: meta.source_shard,
            source_node: meta.source_node,
            change_seq: meta.change_seq,
            kind: meta.kind,
            parent: meta.parent,
            from_seq: meta.from_seq,
            applied_index: meta.applied_index,
            created_unix_ms: meta.created_unix_ms,
            key_count,
            digest,
            wrapped_key: hex::encode(&self.wrapped_key),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            objects: self.objects,
            time_marks: meta.time_marks,
        };
        self.store
            .put(
                &self.dir.clone().join(MANIFEST_NAME),
                PutPayload::from(manifest.encode()?),
            )
            .await?;
        Ok(manifest)
    }

    /// Removes the objects written so far (a backup that failed midway).
    pub async fn abort(self) {
        for object in &self.objects {
            if let Err(err) = self.store.delete(&Path::from(object.path.as_str())).await {
                tracing::warn!(object = %object.path, %err, "cannot remove a partial backup object");
            }
        }
    }
}

/// Removes backup `backup_id` of `namespace` from `location` (retention):
/// the manifest first — from then on the backup is never read or restored
/// — then every object under its directory. Returns the objects removed;
/// a backup already gone removes nothing.
pub async fn delete_backup(
    location: &Opened,
    namespace: &str,
    backup_id: &str,
) -> Result<usize, DrError> {
    delete_dir(location, backup_dir(&location.prefix, namespace, backup_id)).await
}

/// Removes the backup in directory `dir`: its manifest first, then every
/// object under it. Returns the objects removed.
pub(crate) async fn delete_dir(location: &Opened, dir: Path) -> Result<usize, DrError> {
    use futures::TryStreamExt;
    let mut removed = 0;
    match location
        .store
        .delete(&dir.clone().join(MANIFEST_NAME))
        .await
    {
        Ok(()) => removed += 1,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let objects: Vec<object_store::ObjectMeta> =
        location.store.list(Some(&dir)).try_collect().await?;
    for object in objects {
        match location.store.delete(&object.location).await {
            Ok(()) => removed += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(removed)
}
