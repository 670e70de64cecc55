//! Configuration of a shard node: a TOML file, then `MERIDIAN__SECTION__KEY`
//! environment variables on top, then [`NodeConfig::validate`].

use crate::limits::Limits;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
pub use meridian_raft::config::{
    ClusterSection, InitialMember, NetworkSection, RaftSection, ReadPolicy, StorageSection,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a `meridian node` needs to start.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Identity and storage of this node.
    pub node: NodeSection,
    /// Where the node listens and how peers reach it.
    pub network: NetworkSection,
    /// Shard membership at first start.
    pub cluster: ClusterSection,
    /// Consensus timing, snapshots and reads.
    pub raft: RaftSection,
    /// Request limits.
    pub limits: Limits,
    /// The control plane this node registers with.
    pub control: ControlSection,
    /// Shipping active-passive namespaces to their standbys.
    pub replication: ReplicationSection,
    /// Backups and restores.
    pub dr: DrSection,
    /// The storage engine's memory (block cache, memtables) and journal.
    pub storage: StorageSection,
    /// Fault injection for the node's wall clock.
    pub clock: ClockSection,
}

/// Fault injection: shifts every wall-clock reading of this node, to show
/// what a skewed clock does (leases refused, active-active writes refused,
/// remote stamps flagged). For tests and drills; leave it at 0.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSection {
    /// Milliseconds added to every wall-clock reading (negative: behind).
    pub offset_ms: i64,
}

/// Backup and restore settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DrSection {
    /// Cap on the record bytes a restore loads per second on this node, so a
    /// restore does not crowd out the shard's other writes (0: no cap).
    pub restore_max_bytes_per_second: u64,
    /// Cap on the record bytes a backup reads per second on this node, so a
    /// backup taken on a busy machine leaves CPU and disk to the shard's
    /// writes (0: no cap).
    pub backup_max_bytes_per_second: u64,
}

/// Cross-region replication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSection {
    /// Cap on the compressed bytes this node ships to standbys per second, over
    /// all namespaces and standbys (0: no cap). Bursts of up to one second's
    /// worth pass at once.
    pub max_bytes_per_second: u64,
    /// Active-active namespaces: conflict records kept per namespace on
    /// each copy (the oldest go first; dropped ones are counted). 0 keeps
    /// them all.
    pub conflict_retention: u64,
    /// Active-active namespaces: how far ahead of this node's clock a
    /// remote write's stamp may be before it is flagged, until the control
    /// plane's lease grants say otherwise (they carry the cluster's bound).
    pub max_clock_offset_ms: u64,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        Self {
            max_bytes_per_second: 0,
            conflict_retention: 10_000,
            max_clock_offset_ms: 250,
        }
    }
}

/// The control plane this node registers with.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSection {
    /// gRPC addresses of control-plane members; empty for a standalone shard.
    pub endpoints: Vec<String>,
}

/// Identity and storage of this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Raft node id, unique within the shard and never reused. Must be > 0.
    pub id: u64,
    /// Name of the shard this node belongs to, e.g. `us-east-1`.
    pub shard: String,
    /// Region the node runs in, e.g. `us-east`.
    pub region: String,
    /// Directory for the log, state machine and snapshots.
    pub data_dir: PathBuf,
    /// Encryption at rest: the key file (`meridian-kek-v1 <64 hex digits>`)
    /// whose key wraps the data keys every stored value is sealed with. The
    /// same file on every node of a shard. Absent (or empty): values are
    /// stored in clear. Fixed for the life of a data directory.
    pub encryption_key_file: Option<PathBuf>,
}

impl NodeSection {
    /// The key file, if encryption at rest is on.
    pub fn key_file(&self) -> Option<&std::path::Path> {
        self.encryption_key_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: 0,
            shard: "default-1".into(),
            region: "default".into(),
            data_dir: PathBuf::from("meridian-data"),
            encryption_key_file: None,
        }
    }
}

/// A configuration that cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be parsed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A key has an unusable value.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The offending key, as `section.key`.
        key: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl NodeConfig {
    /// Loads defaults, then `file` (if given), then `MERIDIAN__SECTION__KEY`
    /// environment variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: NodeConfig = figment
            .merge(Env::prefixed("MERIDIAN__").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.node.id == 0 {
            return invalid("node.id", "must be set to a positive integer");
        }
        if self.node.shard.is_empty() {
            return invalid("node.shard", "must name the shard");
        }
        if let Err((key, reason)) = self.raft.validate() {
            return invalid(key, &reason);
        }
        if let Err((key, reason)) = self.storage.validate() {
            return invalid(key, &reason);
        }
        let limits = &self.limits;
        if limits.max_key_bytes == 0 || limits.max_batch_ops == 0 || limits.max_scan_limit == 0 {
            return invalid(
                "limits",
                "max_key_bytes, max_batch_ops and max_scan_limit must be positive",
            );
        }
        // A gRPC message must be able to carry the largest allowed request.
        if limits.max_value_bytes > 64 * 1024 * 1024 {
            return invalid("limits.max_value_bytes", "must be at most 64 MiB");
        }
        if let Err(reason) = self.cluster.validate(self.node.id) {
            return invalid("cluster.initial_members", &reason);
        }
        // A day either way is far past any bound a drill needs, and keeps
        // every reading far from overflow.
        if self.clock.offset_ms.unsigned_abs() > 86_400_000 {
            return invalid(
                "clock.offset_ms",
                "must be within one day (86400000 ms) either way",
            );
        }
        Ok(())
    }
}
