//! Configuration of a control-plane member: a TOML file, then
//! `MERIDIAN__SECTION__KEY` environment variables, then validation.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use meridian_raft::config::{ClusterSection, NetworkSection, RaftSection, StorageSection};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a `meridian control` member needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Identity and storage.
    pub node: ControlNodeSection,
    /// Listen addresses.
    pub network: NetworkSection,
    /// Control-plane membership at first start.
    pub cluster: ClusterSection,
    /// Consensus tuning.
    pub raft: RaftSection,
    /// Regions to make known at start-up (written by the leader if missing or
    /// different).
    pub regions: Vec<RegionSeed>,
    /// Probing shards, write leases and automatic failover.
    pub failover: FailoverSection,
    /// Access control: the first grants of a new cluster.
    pub auth: AuthSection,
    /// The storage engine's memory (block cache, memtables) and journal.
    pub storage: StorageSection,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            node: ControlNodeSection::default(),
            network: NetworkSection::default(),
            cluster: ClusterSection::default(),
            raft: RaftSection {
                // Control-plane members sit in different regions and write
                // rarely: batching gains nothing there, while a full window on
                // a 100+ ms link would hold a failover's commit back a round
                // trip.
                append_window: 0,
                ..RaftSection::default()
            },
            regions: Vec::new(),
            failover: FailoverSection::default(),
            auth: AuthSection::default(),
            storage: StorageSection::default(),
        }
    }
}

/// `[auth]`: who administers a new cluster. The grants are made once, when
/// the cluster's access policy is first created (revoking one later sticks);
/// from then on `meridian auth grant|revoke` changes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// The first grants.
    pub bootstrap: Vec<BootstrapGrant>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            bootstrap: vec![BootstrapGrant {
                identity: "user/admin".into(),
                role: "admin".into(),
                namespace: None,
            }],
        }
    }
}

/// One first grant: `{ identity = "user/admin", role = "admin" }`, optionally
/// limited to a namespace (or `PREFIX*`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootstrapGrant {
    /// The identity (`user/NAME` or its `spiffe://` URI).
    pub identity: String,
    /// A built-in role (admin, writer, reader, viewer).
    pub role: String,
    /// Where (absent: everywhere).
    #[serde(default)]
    pub namespace: Option<String>,
}

impl AuthSection {
    /// The first grants, checked.
    pub fn bootstrap_grants(
        &self,
    ) -> Result<Vec<meridian_access::Grant>, meridian_access::AccessError> {
        self.bootstrap
            .iter()
            .map(|g| {
                let scope = meridian_access::Scope::parse(g.namespace.as_deref())?;
                if meridian_access::policy::built_in_role(&g.role).is_none() {
                    return Err(meridian_access::AccessError::Invalid(format!(
                        "auth.bootstrap: role {:?} is not a built-in role (admin, writer, reader, viewer)",
                        g.role
                    )));
                }
                meridian_access::Grant::new(&g.identity, &g.role, scope)
            })
            .collect()
    }
}

/// The global failover policy and the probes behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverSection {
    /// How often the leader probes every shard.
    pub probe_interval_ms: u64,
    /// A probe without an answer in this time counts as failed.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probes after which a shard is failed.
    pub failed_probes: u32,
    /// Write lease each successful probe grants the shard's leader. A standby is
    /// promoted only once the old primary's lease has surely run out.
    pub lease_ms: u64,
    /// Fail over automatically; otherwise only record that the shard failed.
    pub automatic: bool,
    /// Also failed: the p99 of probe round trips above this (0: off)...
    pub p99_latency_ms: u64,
    /// ...throughout this window.
    pub latency_window_ms: u64,
    /// Also failed: the share of failed probes above this (0.0: off)...
    pub error_rate: f64,
    /// ...throughout this window.
    pub error_window_ms: u64,
    /// The clock assumption: the largest offset between any shard node's
    /// wall clock and the control plane's (as CockroachDB's `max-offset`).
    /// Sent with every lease grant; a shard holds a grant for
    /// `lease_ms - measured age - max_clock_offset_ms` and refuses grants
    /// that come from further in its future than this.
    pub max_clock_offset_ms: u64,
}

impl Default for FailoverSection {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 800,
            failed_probes: 3,
            lease_ms: 3_500,
            automatic: true,
            p99_latency_ms: 0,
            latency_window_ms: 120_000,
            error_rate: 0.0,
            error_window_ms: 60_000,
            max_clock_offset_ms: 250,
        }
    }
}

/// Identity and storage of a control-plane member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlNodeSection {
    /// Raft node id within the control plane, > 0, never reused.
    pub id: u64,
    /// Region this member runs in.
    pub region: String,
    /// Directory for the log, state and snapshots.
    pub data_dir: PathBuf,
    /// Encryption at rest (see the node's `node.encryption_key_file`).
    pub encryption_key_file: Option<PathBuf>,
}

impl ControlNodeSection {
    /// The key file, if encryption at rest is on.
    pub fn key_file(&self) -> Option<&Path> {
        self.encryption_key_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

impl Default for ControlNodeSection {
    fn default() -> Self {
        Self {
            id: 0,
            region: "default".into(),
            data_dir: PathBuf::from("meridian-control-data"),
            encryption_key_file: None,
        }
    }
}

/// A region to register.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionSeed {
    /// Name.
    pub name: String,
    /// Jurisdiction tags.
    pub jurisdictions: Vec<String>,
    /// Latitude in degrees.
    #[serde(default)]
    pub latitude: f64,
    /// Longitude in degrees.
    #[serde(default)]
    pub longitude: f64,
}

/// A configuration that cannot work; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A key has an unusable value.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ControlConfig {
    /// Loads defaults, then `file`, then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ControlConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: ControlConfig = figment
            .merge(Env::prefixed("MERIDIAN__").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would make the member misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return Err(ConfigError::Invalid {
                key: "node.id",
                reason: "must be set to a positive integer".into(),
            });
        }
        self.raft
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid { key, reason })?;
        self.storage
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid { key, reason })?;
        self.cluster
            .validate(self.node.id)
            .map_err(|reason| ConfigError::Invalid {
                key: "cluster.initial_members",
                reason,
            })?;
        self.auth
            .bootstrap_grants()
            .map_err(|e| ConfigError::Invalid {
                key: "auth.bootstrap",
                reason: e.to_string(),
            })?;
        let failover = &self.failover;
        if failover.failed_probes == 0 || failover.probe_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "failover.failed_probes",
                reason: "probes and their interval must be positive".into(),
            });
        }
        if !(0.0..=1.0).contains(&failover.error_rate) {
            return Err(ConfigError::Invalid {
                key: "failover.error_rate",
                reason: format!("{} is not a share between 0 and 1", failover.error_rate),
            });
        }
        if failover.max_clock_offset_ms.saturating_mul(2) >= failover.lease_ms {
            return Err(ConfigError::Invalid {
                key: "failover.max_clock_offset_ms",
                reason: format!(
                    "{} leaves too little of failover.lease_ms ({}): it must be under half the lease",
                    failover.max_clock_offset_ms, failover.lease_ms
                ),
            });
        }
        if failover.lease_ms <= failover.probe_interval_ms {
            return Err(ConfigError::Invalid {
                key: "failover.lease_ms",
                reason: format!(
                    "{} must exceed failover.probe_interval_ms ({}), or healthy shards lose their lease between probes",
                    failover.lease_ms, failover.probe_interval_ms
                ),
            });
        }
        for region in &self.regions {
            if region.jurisdictions.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "regions.jurisdictions",
                    reason: format!("region {:?} needs at least one jurisdiction", region.name),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_does_not_cap_appends_even_with_a_partial_raft_section() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("control.toml");
        std::fs::write(
            &file,
            "[node]\nid = 1\n\n[raft]\nheartbeat_interval_ms = 100\n",
        )
        .expect("config written");
        let config = ControlConfig::load(Some(&file)).expect("config loads");
        assert_eq!(config.raft.append_window, 0);
        // Shards keep the window.
        assert_eq!(
            RaftSection::default().append_window,
            meridian_raft::append_window::DEFAULT_WINDOW
        );
    }
}
