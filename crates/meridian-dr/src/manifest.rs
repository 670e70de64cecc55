//! A backup's manifest: what it holds and how to check it.
//!
//! JSON (readable with any tool), written last — a backup without its
//! manifest is an interrupted one and is never listed or restored. `format`
//! names the layout; readers refuse formats they do not know.

use crate::DrError;
use serde::{Deserialize, Serialize};

/// The manifest format this code writes (2: backup kind, parent and
/// starting sequence for incremental backups). Format 1 manifests (full
/// backups only) are still read.
pub const MANIFEST_FORMAT: u32 = 2;

/// The manifest format of a control-plane backup (3: the kind
/// `control-plane`, whose objects hold the control plane's stored records).
/// Namespace backups keep format 2, so older readers still read them.
pub const CONTROL_MANIFEST_FORMAT: u32 = 3;

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every key of the namespace as of `change_seq`.
    #[default]
    Full,
    /// The logged changes after `from_seq` through `change_seq`, continuing
    /// `parent`.
    Changes,
    /// The control plane's own state: every record it stores, as of one
    /// applied Raft index (see [`crate::control`]).
    #[serde(rename = "control-plane")]
    ControlPlane,
}

/// Name of the manifest object inside a backup's directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Everything a backup is and holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The backup's id (also its directory in the location).
    pub backup_id: String,
    /// The namespace backed up.
    pub namespace: String,
    /// The namespace's allowed jurisdictions when it was backed up.
    pub jurisdictions: Vec<String>,
    /// The location's name and region.
    pub location: String,
    /// The region the location is in.
    pub location_region: String,
    /// The shard and node the records were read from.
    pub source_shard: String,
    /// The node id.
    pub source_node: u64,
    /// The namespace's change sequence the backup is consistent at.
    pub change_seq: u64,
    /// Full, or the changes since the parent.
    #[serde(default)]
    pub kind: BackupKind,
    /// The backup an incremental one continues (its `change_seq` is this
    /// one's `from_seq`).
    #[serde(default)]
    pub parent: Option<String>,
    /// An incremental backup holds the changes after this sequence.
    #[serde(default)]
    pub from_seq: u64,
    /// The source's Raft applied index at that moment.
    pub applied_index: u64,
    /// When it was taken (Unix ms).
    pub created_unix_ms: u64,
    /// Keys in the namespace.
    pub key_count: u64,
    /// The namespace's digest at `change_seq` (as `CheckIntegrity` computes
    /// it), compared after every restore.
    pub digest: String,
    /// The backup's data key wrapped by the key-encryption key (hex).
    pub wrapped_key: String,
    /// How objects are compressed.
    pub compression: String,
    /// How objects are sealed.
    pub cipher: String,
    /// Every object, in order.
    pub objects: Vec<ObjectEntry>,
    /// Time marks of the changes it holds: (change sequence, Unix ms) — by
    /// then the namespace had reached that change (a full backup: its own
    /// change when it was taken). A chain restores to a time with them.
    /// Absent in manifests written before marks existed (format 2 either
    /// way: readers that do not know it ignore it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_marks: Vec<(u64, u64)>,
}

/// One object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Path inside the location.
    pub path: String,
    /// Stored size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes (hex).
    pub sha256: String,
    /// Records it holds.
    pub records: u64,
    /// Bytes of those records before compression (bounds decompression).
    pub plain_bytes: u64,
}

impl Manifest {
    /// Stored bytes of the total backup.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// The manifest as stored.
    pub fn encode(&self) -> Result<Vec<u8>, DrError> {
        serde_json::to_vec_pretty(self).map_err(|e| DrError::Manifest {
            backup: self.backup_id.clone(),
            reason: e.to_string(),
        })
    }

    /// A stored manifest of backup `backup` (for errors), refusing unknown
    /// formats.
    pub fn decode(backup: &str, bytes: &[u8]) -> Result<Self, DrError> {
        let invalid = |reason: String| DrError::Manifest {
            backup: backup.to_string(),
            reason,
        };
        let probe: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        match probe.get("format").and_then(serde_json::Value::as_u64) {
            Some(1..=3) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "format {other} is not supported (this build reads 1 to {CONTROL_MANIFEST_FORMAT})"
                )));
            }
            None => return Err(invalid("no format field".into())),
        }
        serde_json::from_value(probe).map_err(|e| invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest with every field set.
    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            backup_id: "orders-20261130T120000Z-1a2b3c4d".into(),
            namespace: "orders".into(),
            jurisdictions: vec!["EU".into()],
            location: "eu-vault".into(),
            location_region: "eu-west".into(),
            source_shard: "eu-west-a".into(),
            source_node: 2,
            change_seq: 1_234,
            kind: BackupKind::Changes,
            parent: Some("orders-20261130T060000Z-0a0b0c0d".into()),
            from_seq: 1_000,
            applied_index: 5_678,
            created_unix_ms: 1_796_040_000_000,
            key_count: 2,
            digest: "ab".repeat(32),
            wrapped_key: "cd".repeat(60),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            objects: vec![ObjectEntry {
                path: "backups/orders/orders-20261130T120000Z-1a2b3c4d/chunk-000000".into(),
                size: 321,
                sha256: "ef".repeat(32),
                records: 2,
                plain_bytes: 600,
            }],
            time_marks: Vec::new(),
        }
    }

    #[test]
    fn time_marks_match_their_golden_sample() {
        let marked = Manifest {
            time_marks: vec![(1_100, 1_796_040_001_000), (1_234, 1_796_040_002_000)],
            ..sample()
        };
        let encoded = marked.encode().unwrap();
        let current = golden("dr-manifest-v2-marks.json", &encoded);
        assert_eq!(encoded, current, "the manifest format changed");
        assert_eq!(Manifest::decode("b", &current).unwrap(), marked);
    }

    fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/formats")
            .join(name);
        if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some_and(|v| v == "1") {
            std::fs::write(&path, bytes).unwrap();
        }
        std::fs::read(&path).unwrap_or_else(|e| panic!("golden sample {}: {e}", path.display()))
    }

    #[test]
    fn control_plane_manifests_match_their_golden_sample() {
        let manifest = Manifest {
            format: CONTROL_MANIFEST_FORMAT,
            backup_id: "cp-1796040000000-0a1b2c3d".into(),
            namespace: String::new(),
            jurisdictions: Vec::new(),
            location: "eu-vault".into(),
            location_region: "eu-west".into(),
            source_shard: "control-plane".into(),
            source_node: 2,
            change_seq: 41,
            kind: BackupKind::ControlPlane,
            parent: None,
            from_seq: 0,
            applied_index: 5_678,
            created_unix_ms: 1_796_040_000_000,
            key_count: 120,
            digest: "ab".repeat(32),
            wrapped_key: "cd".repeat(60),
            compression: "zstd".into(),
            cipher: "aes-256-gcm".into(),
            objects: vec![ObjectEntry {
                path: "control-plane/cp-1796040000000-0a1b2c3d/chunk-000000".into(),
                size: 4_321,
                sha256: "ef".repeat(32),
                records: 120,
                plain_bytes: 20_000,
            }],
            time_marks: Vec::new(),
        };
        let encoded = manifest.encode().unwrap();
        let current = golden("dr-manifest-control-v3.json", &encoded);
        assert!(!String::from_utf8_lossy(&encoded).contains("time_marks"));
        assert_eq!(
            encoded, current,
            "the control-plane manifest format changed"
        );
        assert_eq!(Manifest::decode("b", &current).unwrap(), manifest);
    }

    #[test]
    fn manifest_matches_its_golden_sample_and_refuses_other_formats() {
        let encoded = sample().encode().unwrap();
        let current = golden("dr-manifest-v2.json", &encoded);
        assert_eq!(encoded, current, "the manifest format changed");
        assert_eq!(Manifest::decode("b", &current).unwrap(), sample());
        // Format 1 (full backups only) reads as a full backup.
        let v1 = Manifest {
            format: 1,
            kind: BackupKind::Full,
            parent: None,
            from_seq: 0,
            ..sample()
        };
        // (Read as stored, never rewritten: it is what older builds wrote.)
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/formats/dr-manifest-v1.json");
        let old = std::fs::read(&path).unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("from_seq"));
        assert_eq!(Manifest::decode("b", &old).unwrap(), v1);
        let newer =
            String::from_utf8(current)
                .unwrap()
                .replacen("\"format\": 2", "\"format\": 4", 1);
        let err = Manifest::decode("b", newer.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("format 4 is not supported"),
            "{err}"
        );
        assert!(Manifest::decode("b", b"{").is_err());
    }
}
