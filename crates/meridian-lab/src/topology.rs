//! Planning a lab: names, ids, ports and configuration files for every process.

use crate::error::LabError;
use crate::process::free_port;
use crate::state::{ProcessRecord, ProcessRole};
use meridian_net::TlsFiles;
use meridian_shard::config::{InitialMember, NodeConfig};
use meridian_wan::WanConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Shard name of the `index`-th (1-based) shard of `region`.
pub fn shard_name(region: &str, index: usize) -> String {
    format!("{region}-s{index}")
}

/// Checks a region name: it becomes part of process names, paths and labels.
pub fn validate_region(region: &str) -> Result<(), LabError> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && region.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "region name {region:?}: use 1 to 32 characters from a-z, 0-9 and '-', starting with a letter"
        )))
    }
}

/// Everything a process's configuration depends on besides its own record: the
/// control-plane endpoints, TLS, and the WAN emulator's dial-via tables.
#[derive(Debug, Clone, Default)]
pub struct Wiring {
    /// Control-plane gRPC addresses.
    pub control: Vec<String>,
    /// Region of each control-plane address.
    pub control_regions: BTreeMap<String, String>,
    /// The lab's certificate directory, when mTLS is on.
    pub certs: Option<PathBuf>,
    /// The emulator's configuration, when the WAN is emulated.
    pub wan: Option<WanConfig>,
    /// Regions of the lab.
    pub regions: Vec<String>,
    /// The lab's encryption-at-rest key file (one key-encryption key for
    /// every process: shards and the control plane share it).
    pub key_file: Option<PathBuf>,
}

/// File name of the lab's encryption-at-rest key, in the lab directory.
pub const KEY_FILE: &str = "at-rest.key";

impl Wiring {
    /// The TLS files of process `name`.
    pub fn tls(&self, name: &str) -> Option<TlsFiles> {
        self.certs
            .as_deref()
            .map(|certs| TlsFiles::in_dir(certs, name))
    }

    /// Control endpoints for a process in `region`, its own region's member
    /// first: route pushes and registrations then stay inside the region when
    /// they can (clients try endpoints in order).
    pub fn control_for(&self, region: &str) -> Vec<String> {
        let (mut local, remote): (Vec<String>, Vec<String>) =
            self.control.iter().cloned().partition(|address| {
                self.control_regions.get(address).map(String::as_str) == Some(region)
            });
        local.extend(remote);
        local
    }

    /// The dial-via table of a process in `region`.
    pub fn dial_via(&self, region: &str) -> BTreeMap<String, String> {
        self.wan
            .as_ref()
            .map(|wan| crate::wan::dial_via(wan, region))
            .unwrap_or_default()
    }
}

/// Allocates one shard of `nodes` members in `region`: names, ids, ports and
/// directories (configurations are written by [`write_config`]).
pub fn allocate_region(
    dir: &Path,
    region: &str,
    nodes: usize,
) -> Result<Vec<ProcessRecord>, LabError> {
    validate_region(region)?;
    if nodes == 0 || nodes > 9 {
        return Err(LabError::Invalid(format!(
            "--nodes {nodes}: a lab shard has 1 to 9 nodes"
        )));
    }
    let shard = shard_name(region, 1);
    (1..=nodes)
        .map(|index| node_record(dir, region, &shard, index as u64))
        .collect()
}

/// Plans one more node for an existing shard: it starts empty, outside the
/// membership, and waits to be added with `AddNode`.
pub fn plan_extra_node(
    dir: &Path,
    region: &str,
    shard: &str,
    node_id: u64,
    wiring: &Wiring,
) -> Result<ProcessRecord, LabError> {
    let record = node_record(dir, region, shard, node_id)?;
    write_node_config(&record, Vec::new(), wiring)?;
    Ok(record)
}

/// The record of shard node `node_id` of `region`, with fresh ports and its
/// directory under `dir/nodes/`.
fn node_record(
    dir: &Path,
    region: &str,
    shard: &str,
    node_id: u64,
) -> Result<ProcessRecord, LabError> {
    let name = format!("{region}-{node_id}");
    let node_dir = dir.join("nodes").join(&name);
    std::fs::create_dir_all(&node_dir)
        .map_err(|e| LabError::io(format!("creating {}", node_dir.display()), e))?;
    Ok(ProcessRecord {
        name,
        role: ProcessRole::Node,
        region: region.to_string(),
        shard: Some(shard.to_string()),
        node_id: Some(node_id),
        grpc: format!("127.0.0.1:{}", free_port()?),
        http: format!("127.0.0.1:{}", free_port()?),
        pid: None,
        config: node_dir.join("node.toml"),
        log: node_dir.join("node.log"),
    })
}

/// Writes the configuration of `record`. Initial shard and control-plane
/// memberships are taken from `processes` (every process of the lab).
pub fn write_config(
    record: &ProcessRecord,
    processes: &[ProcessRecord],
    wiring: &Wiring,
) -> Result<(), LabError> {
    let members_of = |role: ProcessRole, shard: Option<&str>| -> Vec<InitialMember> {
        processes
            .iter()
            .filter(|p| p.role == role && p.shard.as_deref() == shard)
            .map(|p| InitialMember {
                id: p.node_id.unwrap_or_default(),
                address: p.grpc.clone(),
            })
            .collect()
    };
    match record.role {
        ProcessRole::Node => write_node_config(
            record,
            members_of(ProcessRole::Node, record.shard.as_deref()),
            wiring,
        ),
        ProcessRole::Control => {
            write_control_config(record, members_of(ProcessRole::Control, None), wiring)
        }
        ProcessRole::Gateway => write_gateway_config(record, wiring),
        ProcessRole::Wan => match &wiring.wan {
            Some(wan) => write_config_file(record, wan),
            None => Err(LabError::Invalid("a WAN process without links".into())),
        },
    }
}

fn write_node_config(
    record: &ProcessRecord,
    members: Vec<InitialMember>,
    wiring: &Wiring,
) -> Result<(), LabError> {
    let mut config = NodeConfig::default();
    config.node.id = record.node_id.unwrap_or_default();
    config.node.shard = record.shard.clone().unwrap_or_default();
    config.node.region = record.region.clone();
    config.node.data_dir = record.config.with_file_name("data");
    config.node.encryption_key_file = wiring.key_file.clone();
    config.network.grpc_listen = parse_addr(&record.grpc)?;
    config.network.http_listen = parse_addr(&record.http)?;
    config.network.tls = wiring.tls(&record.name);
    config.network.dial_via = wiring.dial_via(&record.region);
    config.cluster.initial_members = members;
    config.control.endpoints = wiring.control_for(&record.region);
    write_config_file(record, &config)
}

fn write_control_config(
    record: &ProcessRecord,
    members: Vec<InitialMember>,
    wiring: &Wiring,
) -> Result<(), LabError> {
    let mut config = meridian_control::config::ControlConfig::default();
    config.node.id = record.node_id.unwrap_or_default();
    config.node.region = record.region.clone();
    config.node.data_dir = record.config.with_file_name("data");
    config.node.encryption_key_file = wiring.key_file.clone();
    config.network.grpc_listen = parse_addr(&record.grpc)?;
    config.network.http_listen = parse_addr(&record.http)?;
    config.network.tls = wiring.tls(&record.name);
    config.network.dial_via = wiring.dial_via(&record.region);
    config.cluster.initial_members = members;
    config.regions = wiring.regions.iter().map(|r| region_seed(r)).collect();
    // The lab's two CLI users: an administrator and a read-only user.
    config.auth.bootstrap = [
        (crate::state::CLIENT_CERT, "admin"),
        (crate::state::READER_CERT, "reader"),
    ]
    .into_iter()
    .map(|(user, role)| meridian_control::config::BootstrapGrant {
        identity: format!("user/{user}"),
        role: role.into(),
        namespace: None,
    })
    .collect();
    if wiring.wan.is_some() {
        // The control plane spans regions: with round trips up to ~200 ms the
        // LAN defaults (100 ms heartbeats, 400-800 ms elections) would elect
        // on every jitter. Scale both to a few round trips.
        config.raft.heartbeat_interval_ms = 300;
        config.raft.election_timeout_min_ms = 1_500;
        config.raft.election_timeout_max_ms = 3_000;
        config.raft.rpc_timeout_ms = 5_000;
    }
    write_config_file(record, &config)
}

fn write_gateway_config(record: &ProcessRecord, wiring: &Wiring) -> Result<(), LabError> {
    let mut config = meridian_gateway::config::GatewayConfig::default();
    config.gateway.name = record.name.clone();
    config.gateway.region = record.region.clone();
    config.network.grpc_listen = parse_addr(&record.grpc)?;
    config.network.http_listen = parse_addr(&record.http)?;
    config.network.tls = wiring.tls(&record.name);
    config.network.dial_via = wiring.dial_via(&record.region);
    config.control.endpoints = wiring.control_for(&record.region);
    write_config_file(record, &config)
}

/// Jurisdiction and location of well-known lab region names; others get their
/// own upper-cased name as jurisdiction.
pub fn region_seed(region: &str) -> meridian_control::config::RegionSeed {
    let (jurisdiction, latitude, longitude) = match region {
        "us-east" => ("US", 38.9, -77.0),
        "us-west" => ("US", 37.4, -122.1),
        "eu-west" => ("EU", 53.3, -6.3),
        "eu-central" => ("EU", 50.1, 8.7),
        "ap-south" => ("IN", 19.1, 72.9),
        "sa-east" => ("BR", -23.5, -46.6),
        other => (other, 0.0, 0.0),
    };
    meridian_control::config::RegionSeed {
        name: region.to_string(),
        jurisdictions: vec![jurisdiction.to_uppercase()],
        latitude,
        longitude,
    }
}

fn write_config_file<T: serde::Serialize>(
    record: &ProcessRecord,
    config: &T,
) -> Result<(), LabError> {
    let text = toml::to_string_pretty(config)
        .map_err(|e| LabError::Invalid(format!("cannot render config: {e}")))?;
    std::fs::write(&record.config, text)
        .map_err(|e| LabError::io(format!("writing {}", record.config.display()), e))
}

fn process_dir(dir: &Path, name: &str) -> Result<std::path::PathBuf, LabError> {
    let process_dir = dir.join("processes").join(name);
    std::fs::create_dir_all(&process_dir)
        .map_err(|e| LabError::io(format!("creating {}", process_dir.display()), e))?;
    Ok(process_dir)
}

/// Allocates the control plane: three members spread round-robin over
/// `regions` (one per region for three regions, so losing a region keeps a
/// quorum).
pub fn allocate_control(dir: &Path, regions: &[String]) -> Result<Vec<ProcessRecord>, LabError> {
    let mut records = Vec::new();
    for id in 1..=3u64 {
        let region = &regions[(id as usize - 1) % regions.len()];
        let name = format!("control-{id}");
        let process_dir = process_dir(dir, &name)?;
        records.push(ProcessRecord {
            name,
            role: ProcessRole::Control,
            region: region.clone(),
            shard: None,
            node_id: Some(id),
            grpc: format!("127.0.0.1:{}", free_port()?),
            http: format!("127.0.0.1:{}", free_port()?),
            pid: None,
            config: process_dir.join("control.toml"),
            log: process_dir.join("control.log"),
        });
    }
    Ok(records)
}

/// Allocates the gateway of `region`.
pub fn allocate_gateway(dir: &Path, region: &str) -> Result<ProcessRecord, LabError> {
    let name = format!("gateway-{region}");
    let process_dir = process_dir(dir, &name)?;
    Ok(ProcessRecord {
        name,
        role: ProcessRole::Gateway,
        region: region.to_string(),
        shard: None,
        node_id: None,
        grpc: format!("127.0.0.1:{}", free_port()?),
        http: format!("127.0.0.1:{}", free_port()?),
        pid: None,
        config: process_dir.join("gateway.toml"),
        log: process_dir.join("gateway.log"),
    })
}

/// Allocates the WAN emulator process (it has no gRPC address; `http` is its
/// control API).
pub fn allocate_wan(dir: &Path) -> Result<ProcessRecord, LabError> {
    let name = "wan".to_string();
    let process_dir = process_dir(dir, &name)?;
    Ok(ProcessRecord {
        name,
        role: ProcessRole::Wan,
        region: String::new(),
        shard: None,
        node_id: None,
        grpc: String::new(),
        http: format!("127.0.0.1:{}", free_port()?),
        pid: None,
        config: process_dir.join("wan.toml"),
        log: process_dir.join("wan.log"),
    })
}

pub(crate) fn parse_addr(address: &str) -> Result<std::net::SocketAddr, LabError> {
    address
        .parse()
        .map_err(|e| LabError::Invalid(format!("address {address}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        assert!(validate_region("us-east").is_ok());
        for bad in ["", "US", "1abc", "a b", "a/b"] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }
}
