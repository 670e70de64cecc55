//! A backup's manifest: what it holds and how to check it.
//!
//! JSON (readable with any tool), written last — a backup without its
//! manifest is an interrupted one and is never listed or restored. `format`
//! names the layout; readers refuse formats they do not know.

use crate::DrError;
use serde::{Deserialize, Serialize};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

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
            Some(f) if f == u64::from(MANIFEST_FORMAT) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "format {other} is not supported (this build reads {MANIFEST_FORMAT})"
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
        }
    }

    #[test]
    fn manifest_matches_its_golden_sample_and_refuses_other_formats() {
        let encoded = sample().encode().unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/formats/dr-manifest-v1.json");
        if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some() {
            std::fs::write(&path, &encoded).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("golden sample {}: {e}", path.display()));
        assert_eq!(encoded, golden, "the manifest format changed");
        assert_eq!(Manifest::decode("b", &golden).unwrap(), sample());
        let newer =
            String::from_utf8(golden)
                .unwrap()
                .replacen("\"format\": 1", "\"format\": 2", 1);
        let err = Manifest::decode("b", newer.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("format 2 is not supported"),
            "{err}"
        );
        assert!(Manifest::decode("b", b"{").is_err());
    }
}
