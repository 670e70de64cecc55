//! Planning a lab: names, ids, ports and configuration files for every process.

use crate::error::LabError;
use crate::process::free_port;
use crate::state::{ProcessRecord, ProcessRole};
use meridian_shard::config::{InitialMember, NodeConfig};
use std::path::Path;

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

/// Plans one shard of `nodes` members in `region`: chooses ports, writes each
/// node's `node.toml` under `dir/nodes/NAME/`, and returns the process records
/// (without pids).
pub fn plan_region(
    dir: &Path,
    region: &str,
    nodes: usize,
    control: &[String],
) -> Result<Vec<ProcessRecord>, LabError> {
    validate_region(region)?;
    if nodes == 0 || nodes > 9 {
        return Err(LabError::Invalid(format!(
            "--nodes {nodes}: a lab shard has 1 to 9 nodes"
        )));
    }
    let shard = shard_name(region, 1);
    let mut records = Vec::with_capacity(nodes);
    for index in 1..=nodes {
        records.push(node_record(dir, region, &shard, index as u64)?);
    }
    let members: Vec<InitialMember> = records
        .iter()
        .map(|r| InitialMember {
            id: r.node_id.unwrap_or_default(),
            address: r.grpc.clone(),
        })
        .collect();
    for record in &records {
        write_node_config(record, &shard, region, members.clone(), control)?;
    }
    Ok(records)
}

/// Plans one more node for an existing shard: it starts empty, outside the
/// membership, and waits to be added with `AddNode`.
pub fn plan_extra_node(
    dir: &Path,
    region: &str,
    shard: &str,
    node_id: u64,
    control: &[String],
) -> Result<ProcessRecord, LabError> {
    let record = node_record(dir, region, shard, node_id)?;
    write_node_config(&record, shard, region, Vec::new(), control)?;
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

fn write_node_config(
    record: &ProcessRecord,
    shard: &str,
    region: &str,
    members: Vec<InitialMember>,
    control: &[String],
) -> Result<(), LabError> {
    let mut config = NodeConfig::default();
    config.node.id = record.node_id.unwrap_or_default();
    config.node.shard = shard.to_string();
    config.node.region = region.to_string();
    config.node.data_dir = record.config.with_file_name("data");
    config.network.grpc_listen = parse_addr(&record.grpc)?;
    config.network.http_listen = parse_addr(&record.http)?;
    config.cluster.initial_members = members;
    config.control.endpoints = control.to_vec();
    write_config(record, &config)
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

fn write_config<T: serde::Serialize>(record: &ProcessRecord, config: &T) -> Result<(), LabError> {
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

/// Plans the control plane: three members spread round-robin over `regions`
/// (one per region for three regions, so losing a region keeps a quorum).
pub fn plan_control(dir: &Path, regions: &[String]) -> Result<Vec<ProcessRecord>, LabError> {
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
    let members: Vec<InitialMember> = records
        .iter()
        .map(|r| InitialMember {
            id: r.node_id.unwrap_or_default(),
            address: r.grpc.clone(),
        })
        .collect();
    for record in &records {
        let mut config = meridian_control::config::ControlConfig::default();
        config.node.id = record.node_id.unwrap_or_default();
        config.node.region = record.region.clone();
        config.node.data_dir = record.config.with_file_name("data");
        config.network.grpc_listen = parse_addr(&record.grpc)?;
        config.network.http_listen = parse_addr(&record.http)?;
        config.cluster.initial_members = members.clone();
        config.regions = regions.iter().map(|r| region_seed(r)).collect();
        write_config(record, &config)?;
    }
    Ok(records)
}

/// Plans the gateway of `region`.
pub fn plan_gateway(
    dir: &Path,
    region: &str,
    control: &[String],
) -> Result<ProcessRecord, LabError> {
    let name = format!("gateway-{region}");
    let process_dir = process_dir(dir, &name)?;
    let record = ProcessRecord {
        name: name.clone(),
        role: ProcessRole::Gateway,
        region: region.to_string(),
        shard: None,
        node_id: None,
        grpc: format!("127.0.0.1:{}", free_port()?),
        http: format!("127.0.0.1:{}", free_port()?),
        pid: None,
        config: process_dir.join("gateway.toml"),
        log: process_dir.join("gateway.log"),
    };
    let mut config = meridian_gateway::config::GatewayConfig::default();
    config.gateway.name = name;
    config.gateway.region = region.to_string();
    config.network.grpc_listen = parse_addr(&record.grpc)?;
    config.network.http_listen = parse_addr(&record.http)?;
    config.control.endpoints = control.to_vec();
    write_config(&record, &config)?;
    Ok(record)
}

fn parse_addr(address: &str) -> Result<std::net::SocketAddr, LabError> {
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
