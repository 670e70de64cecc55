//! The lab's state file, `lab.json`: every process with its role, region,
//! endpoints and pid. Versioned so a newer `meridian` can refuse or upgrade an older
//! lab instead of misreading it.

use crate::error::LabError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Current `lab.json` format.
pub const STATE_FORMAT: u32 = 2;
/// Name of the certificate clients of a TLS lab use by default
/// (`certs/admin.pem`, identity `user/admin`, granted the admin role).
pub const CLIENT_CERT: &str = "admin";
/// A read-only user of the lab (`certs/reader.pem`, identity `user/reader`,
/// granted the reader role): reads and views, and is refused the rest.
pub const READER_CERT: &str = "reader";
/// File name of the state inside the lab directory.
pub const STATE_FILE: &str = "lab.json";

/// What a lab process does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessRole {
    /// A shard member (`meridian node`).
    Node,
    /// A control-plane member (`meridian control`).
    Control,
    /// A gateway (`meridian gateway`).
    Gateway,
    /// The WAN emulator between regions (`meridian wan`).
    Wan,
}

impl ProcessRole {
    /// The `meridian` subcommand that runs this role.
    pub fn command(self) -> &'static str {
        match self {
            ProcessRole::Node => "node",
            ProcessRole::Control => "control",
            ProcessRole::Gateway => "gateway",
            ProcessRole::Wan => "wan",
        }
    }
}

/// One process of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Unique name, e.g. `us-east-1`.
    pub name: String,
    /// What it does.
    pub role: ProcessRole,
    /// Region it belongs to.
    pub region: String,
    /// Shard it is a member of (nodes only).
    pub shard: Option<String>,
    /// Raft node id (nodes only).
    pub node_id: Option<u64>,
    /// gRPC address.
    pub grpc: String,
    /// HTTP address (`/health/*`, `/metrics`).
    pub http: String,
    /// Process id while running; `None` once stopped or killed.
    pub pid: Option<u32>,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// The whole lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabState {
    /// Format of this file.
    pub format: u32,
    /// The lab directory.
    pub dir: PathBuf,
    /// Regions in start order.
    pub regions: Vec<String>,
    /// Directory of the lab's CA and certificates when mutual TLS is on; clients
    /// use its `client.pem`/`client.key`.
    pub certs: Option<PathBuf>,
    /// Every process.
    pub processes: Vec<ProcessRecord>,
    /// Settings (`MERIDIAN__...` variables) every shard node is started
    /// with, kept so a restart from another command starts it the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_env: Vec<(String, String)>,
}

impl LabState {
    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state of the lab in `dir`.
    pub fn load(dir: &Path) -> Result<Self, LabError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(LabError::io(format!("reading {}", path.display()), e)),
        };
        let state: LabState = serde_json::from_str(&text).map_err(|e| LabError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.format != STATE_FORMAT {
            return Err(LabError::State {
                path,
                message: format!(
                    "format {} is not supported by this build (reads {STATE_FORMAT}); stop that lab with the meridian that started it",
                    state.format
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state atomically (temp file, then rename).
    pub fn save(&self) -> Result<(), LabError> {
        let path = Self::path(&self.dir);
        let temp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&temp, text)
            .map_err(|e| LabError::io(format!("writing {}", temp.display()), e))?;
        std::fs::rename(&temp, &path)
            .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
    }

    /// gRPC addresses of every process with `role`, in `region` if given.
    pub fn endpoints(&self, role: ProcessRole, region: Option<&str>) -> Vec<String> {
        self.processes
            .iter()
            .filter(|p| p.role == role)
            .filter(|p| region.is_none() || Some(p.region.as_str()) == region)
            .map(|p| p.grpc.clone())
            .collect()
    }

    /// The WAN emulator's record, if the lab emulates one.
    pub fn wan(&self) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.role == ProcessRole::Wan)
    }

    /// A dialer for clients of this lab: the lab's client certificate when
    /// mutual TLS is on. Clients sit outside the emulated WAN (no rewrites).
    pub fn client_dialer(&self) -> Result<meridian_net::Dialer, LabError> {
        self.client_dialer_as(CLIENT_CERT)
    }

    /// [`LabState::client_dialer`] with the lab certificate `name`
    /// ([`CLIENT_CERT`], [`READER_CERT`], or one issued later).
    pub fn client_dialer_as(&self, name: &str) -> Result<meridian_net::Dialer, LabError> {
        let Some(certs) = &self.certs else {
            return Ok(meridian_net::Dialer::plaintext());
        };
        let material = meridian_net::TlsFiles::in_dir(certs, name)
            .load()
            .map_err(|e| LabError::Invalid(format!("lab certificate {name:?}: {e}")))?;
        Ok(meridian_net::Dialer::new(
            Default::default(),
            Some(&material),
        ))
    }

    /// gRPC addresses of every node of `shard` (all shards if `None`).
    pub fn node_endpoints(&self, shard: Option<&str>) -> Vec<String> {
        self.processes
            .iter()
            .filter(|p| p.role == ProcessRole::Node)
            .filter(|p| shard.is_none() || p.shard.as_deref() == shard)
            .map(|p| p.grpc.clone())
            .collect()
    }
}
