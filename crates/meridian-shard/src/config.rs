//! Configuration of a shard node: a TOML file, then `MERIDIAN__SECTION__KEY`
//! environment variables on top, then [`NodeConfig::validate`].

use crate::limits::Limits;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: 0,
            shard: "default-1".into(),
            region: "default".into(),
            data_dir: PathBuf::from("meridian-data"),
        }
    }
}

/// Where the node listens and how peers reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// gRPC listen address (data, admin and Raft transport).
    pub grpc_listen: SocketAddr,
    /// gRPC address peers and clients use; defaults to `grpc_listen`.
    pub advertise: Option<String>,
    /// HTTP listen address for `/health/*` and `/metrics`.
    pub http_listen: SocketAddr,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            advertise: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
        }
    }
}

impl NetworkSection {
    /// The gRPC address other processes should dial.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }
}

/// One member of the initial shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    /// Raft node id.
    pub id: u64,
    /// Its advertised gRPC address.
    pub address: String,
}

/// Shard membership at first start.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Voters of a brand-new shard. Every listed node initializes the same
    /// membership when its log is empty; a node not listed waits to be added
    /// with `AddNode`. Ignored once the node has state.
    pub initial_members: Vec<InitialMember>,
}

/// How linearizable reads are confirmed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// Confirm leadership with a quorum round per batch of reads (safe under any
    /// clock behaviour).
    ReadIndex,
    /// Trust the leader lease while it is valid (no network round; relies on
    /// bounded clock drift, which the election timeout margin covers).
    LeaseRead,
}

/// Consensus timing, snapshots and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers
    /// catch up from the log instead of a full snapshot.
    pub keep_entries_after_snapshot: u64,
    /// How linearizable reads are confirmed.
    pub read_policy: ReadPolicy,
    /// Time limit for one Raft RPC to a peer.
    pub rpc_timeout_ms: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 20_000,
            keep_entries_after_snapshot: 2_000,
            read_policy: ReadPolicy::ReadIndex,
            rpc_timeout_ms: 2_000,
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
        let raft = &self.raft;
        if raft.heartbeat_interval_ms == 0 {
            return invalid("raft.heartbeat_interval_ms", "must be positive");
        }
        if raft.election_timeout_min_ms <= raft.heartbeat_interval_ms * 2 {
            return invalid(
                "raft.election_timeout_min_ms",
                "must exceed twice raft.heartbeat_interval_ms",
            );
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return invalid(
                "raft.election_timeout_max_ms",
                "must exceed raft.election_timeout_min_ms",
            );
        }
        if raft.snapshot_after_entries == 0 {
            return invalid("raft.snapshot_after_entries", "must be positive");
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
        let mut ids = std::collections::HashSet::new();
        for member in &self.cluster.initial_members {
            if member.id == 0 || !ids.insert(member.id) {
                return invalid("cluster.initial_members", "ids must be positive and unique");
            }
        }
        if !self.cluster.initial_members.is_empty() && !ids.contains(&self.node.id) {
            return invalid(
                "cluster.initial_members",
                "must include this node's id, or be empty for a node that will be added later",
            );
        }
        Ok(())
    }
}
