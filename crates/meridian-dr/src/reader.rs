//! Reading a backup back: every object checked against the manifest.

use crate::chunk::DataKey;
use crate::location::Opened;
use crate::manifest::{MANIFEST_NAME, Manifest};
use crate::writer::backup_dir;
use crate::{DrError, Record};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};

/// The digest a restore compares: the same function the shard's
/// `CheckIntegrity` uses, supplied by the caller.
pub trait RecordDigest {
    /// Adds one record (in key order).
    fn add(&mut self, record: &Record);
    /// Records added and the hex digest.
    fn finish(&mut self) -> (u64, String);
}

/// The manifest of backup `backup_id` of `namespace` in `location`.
pub async fn read_manifest(
    location: &Opened,
    namespace: &str,
    backup_id: &str,
) -> Result<Manifest, DrError> {
    let path = backup_dir(&location.prefix, namespace, backup_id)
        .clone()
        .join(MANIFEST_NAME);
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
    Manifest::decode(backup_id, &bytes)
}

/// Reads a backup's objects one at a time, in order: each checked for size
/// and SHA-256 against the manifest and opened with the backup's key
/// (unwrapped with the key-encryption key). The first missing or damaged
/// object ends the read, naming it. Memory stays at one object.
pub struct ChunkReader<'a> {
    location: &'a Opened,
    manifest: &'a Manifest,
    key: DataKey,
    next: usize,
}

impl<'a> ChunkReader<'a> {
    /// A reader of `manifest`'s objects in `location`.
    pub fn new(
        location: &'a Opened,
        manifest: &'a Manifest,
        kek: &[u8; 32],
    ) -> Result<Self, DrError> {
        let backup = &manifest.backup_id;
        let wrapped = hex::decode(&manifest.wrapped_key).map_err(|e| DrError::Manifest {
            backup: backup.clone(),
            reason: format!("wrapped_key is not hex: {e}"),
        })?;
        let key = DataKey::unwrap(kek, backup, &wrapped)?;
        Ok(Self {
            location,
            manifest,
            key,
            next: 0,
        })
    }

    /// Stored bytes of the objects read so far.
    pub fn bytes_read(&self) -> u64 {
        self.manifest.objects[..self.next]
            .iter()
            .map(|o| o.size)
            .sum()
    }

    /// The records of the next object ([`Record`]s of a full backup,
    /// [`crate::Change`]s of an incremental one); `None` after the last.
    pub async fn next_chunk<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Vec<T>>, DrError> {
        let Some(object) = self.manifest.objects.get(self.next) else {
            return Ok(None);
        };
        let backup = &self.manifest.backup_id;
        let damaged = |reason: String| DrError::Damaged {
            backup: backup.clone(),
            object: object.path.clone(),
            reason,
        };
        let path = Path::from(object.path.as_str());
        let stored = match self.location.store.get(&path).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(DrError::Missing {
                    backup: backup.clone(),
                    object: object.path.clone(),
                });
            }
            Err(err) => return Err(err.into()),
        };
        if stored.len() as u64 != object.size {
            return Err(damaged(format!(
                "{} bytes where the manifest lists {}",
                stored.len(),
                object.size
            )));
        }
        let sha = hex::encode(Sha256::digest(&stored));
        if sha != object.sha256 {
            return Err(damaged(format!(
                "SHA-256 {sha} where the manifest lists {}",
                object.sha256
            )));
        }
        let index = u32::try_from(self.next).map_err(|_| damaged("too many objects".into()))?;
        let max_plain = usize::try_from(object.plain_bytes)
            .map_err(|_| damaged("plain size out of range".into()))?;
        let records: Vec<T> = self
            .key
            .open(backup, index, &stored, max_plain)
            .map_err(damaged)?;
        if records.len() as u64 != object.records {
            return Err(damaged(format!(
                "{} records where the manifest lists {}",
                records.len(),
                object.records
            )));
        }
        self.next += 1;
        Ok(Some(records))
    }
}

/// Hands `each` the records of every object of `manifest`, in order (see
/// [`ChunkReader`] for the checks).
pub async fn for_each_chunk(
    location: &Opened,
    manifest: &Manifest,
    kek: &[u8; 32],
    mut each: impl FnMut(Vec<Record>) -> Result<(), DrError>,
) -> Result<(), DrError> {
    let mut reader = ChunkReader::new(location, manifest, kek)?;
    while let Some(records) = reader.next_chunk::<Record>().await? {
        each(records)?;
    }
    Ok(())
}

/// What [`validate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// Objects checked.
    pub objects: usize,
    /// Records read.
    pub records: u64,
    /// Stored bytes read.
    pub stored_bytes: u64,
}

/// Reads the whole backup back (every object checked and opened). A full
/// backup's records must give the digest the source had at the backup's
/// sequence; an incremental backup's changes must run without a gap or a
/// repeat from just after its parent's sequence to its own (its digest is
/// compared when a restore replays it onto its parent).
pub async fn validate(
    location: &Opened,
    manifest: &Manifest,
    kek: &[u8; 32],
    digest: &mut (dyn RecordDigest + Send),
) -> Result<Validated, DrError> {
    validate_paced(location, manifest, kek, digest, |_| async {}).await
}

/// [`validate`], calling `pace` with each object's plain size after reading
/// it (a node paces its checks with its backup cap).
pub async fn validate_paced<F, Fut>(
    location: &Opened,
    manifest: &Manifest,
    kek: &[u8; 32],
    digest: &mut (dyn RecordDigest + Send),
    pace: F,
) -> Result<Validated, DrError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let plain = |index: usize| {
        manifest
            .objects
            .get(index)
            .map_or(0, |o| usize::try_from(o.plain_bytes).unwrap_or(usize::MAX))
    };
    let records = match manifest.kind {
        crate::manifest::BackupKind::Full => {
            let mut records = 0u64;
            let mut reader = ChunkReader::new(location, manifest, kek)?;
            let mut index = 0;
            while let Some(chunk) = reader.next_chunk::<Record>().await? {
                records += chunk.len() as u64;
                for record in &chunk {
                    digest.add(record);
                }
                pace(plain(index)).await;
                index += 1;
            }
            let (count, found) = digest.finish();
            if count != manifest.key_count || found != manifest.digest {
                return Err(DrError::DigestMismatch {
                    backup: manifest.backup_id.clone(),
                    expected: format!("{} ({} keys)", manifest.digest, manifest.key_count),
                    found: format!("{found} ({count} keys)"),
                });
            }
            records
        }
        crate::manifest::BackupKind::Changes => {
            let mut reader = ChunkReader::new(location, manifest, kek)?;
            let mut last = manifest.from_seq;
            let mut records = 0u64;
            let mut index = 0;
            while let Some(changes) = reader.next_chunk::<crate::Change>().await? {
                pace(plain(index)).await;
                index += 1;
                for change in changes {
                    if Some(change.seq) != last.checked_add(1) {
                        return Err(DrError::Manifest {
                            backup: manifest.backup_id.clone(),
                            reason: format!(
                                "change {} follows change {last}: the change log it holds has a gap or a repeat",
                                change.seq
                            ),
                        });
                    }
                    last = change.seq;
                    records += 1;
                }
            }
            if last != manifest.change_seq {
                return Err(DrError::Manifest {
                    backup: manifest.backup_id.clone(),
                    reason: format!(
                        "it holds changes through {last}, the manifest says through {}",
                        manifest.change_seq
                    ),
                });
            }
            records
        }
        crate::manifest::BackupKind::ControlPlane => {
            crate::control::read(location, manifest, kek, u64::MAX)
                .await?
                .len() as u64
        }
    };
    Ok(Validated {
        objects: manifest.objects.len(),
        records,
        stored_bytes: manifest.stored_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{BackupMeta, BackupWriter};

    /// A stand-in digest: SHA-256 over every record, in order.
    #[derive(Default)]
    struct Sha(Sha256, u64);

    impl RecordDigest for Sha {
        fn add(&mut self, record: &Record) {
            self.0.update(&record.key);
            self.0.update(record.version.to_be_bytes());
            self.0.update(&record.value);
            self.1 += 1;
        }
        fn finish(&mut self) -> (u64, String) {
            (self.1, hex::encode(std::mem::take(&mut self.0).finalize()))
        }
    }

    fn meta(id: &str) -> BackupMeta {
        BackupMeta {
            backup_id: id.into(),
            namespace: "orders".into(),
            jurisdictions: vec!["EU".into()],
            location: "vault".into(),
            location_region: "eu-west".into(),
            source_shard: "eu-west-a".into(),
            source_node: 2,
            change_seq: 10,
            kind: crate::manifest::BackupKind::Full,
            parent: None,
            from_seq: 0,
            applied_index: 20,
            created_unix_ms: 1,
            time_marks: Vec::new(),
        }
    }

    /// Writes a 3,000-record backup in small objects; returns the location,
    /// its directory and the manifest.
    async fn written(kek: &[u8; 32]) -> (tempfile::TempDir, Opened, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let location = crate::location::open(&url).unwrap();
        let mut writer = BackupWriter::new(&location, meta("b1"), kek)
            .unwrap()
            .with_chunk_bytes(16 << 10);
        let mut digest = Sha::default();
        for i in 0..3_000u64 {
            let record = Record {
                key: format!("key-{i:05}").into_bytes(),
                version: i,
                value: format!("MARKER-VALUE-{i}-{}", "x".repeat(40)).into_bytes(),
            };
            digest.add(&record);
            writer.push(record).await.unwrap();
        }
        let (count, hex) = digest.finish();
        let manifest = writer.finish(count, hex).await.unwrap();
        (dir, location, manifest)
    }

    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                if entry.path().is_dir() {
                    pending.push(entry.path());
                } else {
                    out.push(entry.path());
                }
            }
        }
        out
    }

    /// An incremental backup after change 10 holding changes `seqs`,
    /// claiming to end at `through`.
    async fn incremental(seqs: &[u64], through: u64) -> (tempfile::TempDir, Opened, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::location::open(&format!("file://{}", dir.path().display())).unwrap();
        let kek = [9u8; 32];
        let mut writer: BackupWriter<crate::Change> = BackupWriter::new(
            &location,
            BackupMeta {
                kind: crate::manifest::BackupKind::Changes,
                parent: Some("b0".into()),
                from_seq: 10,
                change_seq: through,
                ..meta("b1")
            },
            &kek,
        )
        .unwrap()
        .with_chunk_bytes(64);
        for seq in seqs {
            writer
                .push(crate::Change {
                    seq: *seq,
                    writes: vec![crate::ChangeWrite {
                        key: b"k".to_vec(),
                        value: (seq % 2 == 0).then(|| b"v".to_vec()),
                        version: *seq,
                    }],
                })
                .await
                .unwrap();
        }
        let manifest = writer.finish(1, "d".into()).await.unwrap();
        (dir, location, manifest)
    }

    #[tokio::test]
    async fn a_deleted_backup_leaves_no_object_and_is_not_read() {
        let kek = [9u8; 32];
        let (dir, location, _) = written(&kek).await;
        assert!(!files(dir.path()).is_empty());
        let removed = crate::writer::delete_backup(&location, "orders", "b1")
            .await
            .unwrap();
        assert!(removed > 3, "{removed}");
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        assert!(matches!(
            read_manifest(&location, "orders", "b1").await,
            Err(DrError::Missing { .. })
        ));
        // Again: nothing left to remove.
        assert_eq!(
            crate::writer::delete_backup(&location, "orders", "b1")
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn an_incremental_backup_must_hold_every_change_after_its_parent() {
        let kek = [9u8; 32];
        // (changes held, claimed end, accepted)
        let cases: [(&[u64], u64, bool); 5] = [
            (&[11, 12, 13, 14], 14, true),
            (&[], 10, true),
            (&[11, 13, 14], 14, false),
            (&[11, 12, 12, 13], 13, false),
            (&[11, 12], 14, false),
        ];
        for (seqs, through, accepted) in cases {
            let (_dir, location, manifest) = incremental(seqs, through).await;
            let read = read_manifest(&location, "orders", "b1").await.unwrap();
            assert_eq!(read.kind, crate::manifest::BackupKind::Changes);
            let result = validate(&location, &manifest, &kek, &mut Sha::default()).await;
            assert_eq!(
                result.is_ok(),
                accepted,
                "{seqs:?} through {through}: {result:?}"
            );
            if let Ok(done) = result {
                assert_eq!(done.records, seqs.len() as u64);
            }
        }
    }

    #[tokio::test]
    async fn a_backup_reads_back_to_the_same_digest_and_holds_nothing_in_clear() {
        let kek = [9u8; 32];
        let (dir, location, manifest) = written(&kek).await;
        assert!(manifest.objects.len() > 3, "{}", manifest.objects.len());
        let read = read_manifest(&location, "orders", "b1").await.unwrap();
        assert_eq!(read, manifest);
        let validated = validate(&location, &manifest, &kek, &mut Sha::default())
            .await
            .unwrap();
        assert_eq!(validated.records, 3_000);
        // No object holds a value (or key) in clear.
        for file in files(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(12).any(|w| w == b"MARKER-VALUE"),
                "{} holds values in clear",
                file.display()
            );
        }
        // The wrong key-encryption key opens nothing.
        let err = validate(&location, &manifest, &[1u8; 32], &mut Sha::default())
            .await
            .unwrap_err();
        assert!(matches!(err, DrError::Crypto(_)), "{err}");
    }

    #[tokio::test]
    async fn a_damaged_or_missing_object_is_named() {
        let kek = [9u8; 32];
        let (dir, location, manifest) = written(&kek).await;
        let root = dir.path();
        let second = root.join(&manifest.objects[1].path);
        // Damaged: one byte changed.
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[40] ^= 0xff;
        std::fs::write(&second, &bytes).unwrap();
        let err = validate(&location, &manifest, &kek, &mut Sha::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DrError::Damaged { object, .. } if *object == manifest.objects[1].path),
            "{err}"
        );
        assert!(err.to_string().contains("SHA-256"), "{err}");
        // Missing.
        std::fs::remove_file(&second).unwrap();
        let err = validate(&location, &manifest, &kek, &mut Sha::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DrError::Missing { object, .. } if *object == manifest.objects[1].path),
            "{err}"
        );
        // Two objects swapped (each intact): the place is authenticated.
        let (dir, location, manifest) = written(&kek).await;
        let a = dir.path().join(&manifest.objects[0].path);
        let b = dir.path().join(&manifest.objects[1].path);
        let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        std::fs::write(&a, &bytes_b).unwrap();
        std::fs::write(&b, &bytes_a).unwrap();
        let mut swapped = manifest.clone();
        swapped.objects[0].sha256 = manifest.objects[1].sha256.clone();
        swapped.objects[0].size = manifest.objects[1].size;
        swapped.objects[1].sha256 = manifest.objects[0].sha256.clone();
        swapped.objects[1].size = manifest.objects[0].size;
        let err = validate(&location, &swapped, &kek, &mut Sha::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("fails authentication"), "{err}");
        std::fs::write(&a, &bytes_a).unwrap();
        std::fs::write(&b, &bytes_b).unwrap();
        // A manifest whose digest does not match its records.
        let mut wrong = manifest.clone();
        wrong.digest = "00".repeat(32);
        let err = validate(&location, &wrong, &kek, &mut Sha::default())
            .await
            .unwrap_err();
        assert!(matches!(err, DrError::DigestMismatch { .. }), "{err}");
    }
}
