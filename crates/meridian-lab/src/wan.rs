//! The lab's WAN: round-trip times between regions, the emulator's links, and
//! talking to a running emulator (`lab partition|heal`, `lab status`).
//!
//! Every process that dials a process of another region goes through a link of
//! its own source region: link `FROM->TO:NAME` listens on a port of its own and
//! forwards to process `NAME` with half the round trip added each way. Each
//! process's dial-via table maps the remote process's advertised address to its
//! region's link, so a partition of `A` and `B` cuts exactly the traffic between
//! them, in both directions.

use crate::error::LabError;
use crate::process::free_port;
use crate::state::{ProcessRecord, ProcessRole};
use meridian_wan::{LinkSpec, LinkStatus, WanConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Round-trip times between regions. The file form (`lab up --wan FILE`):
///
/// ```toml
/// default_rtt_ms = 100
/// [[link]]
/// a = "us-east"
/// b = "eu-west"
/// rtt_ms = 80
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WanSettings {
    /// Round trip for pairs not listed.
    #[serde(default = "default_rtt")]
    pub default_rtt_ms: u64,
    /// Listed pairs (either order).
    #[serde(default, rename = "link")]
    pub links: Vec<RegionPair>,
}

/// The round trip between two regions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionPair {
    /// One region.
    pub a: String,
    /// The other.
    pub b: String,
    /// Round-trip time in milliseconds.
    pub rtt_ms: u64,
}

fn default_rtt() -> u64 {
    100
}

/// Longest round trip accepted: beyond it Raft timings would need retuning.
const MAX_RTT_MS: u64 = 2_000;

impl Default for WanSettings {
    /// us-east<->eu-west 80 ms, us-east<->ap-south 190 ms, eu-west<->ap-south 120 ms.
    fn default() -> Self {
        let pair = |a: &str, b: &str, rtt_ms| RegionPair {
            a: a.into(),
            b: b.into(),
            rtt_ms,
        };
        Self {
            default_rtt_ms: default_rtt(),
            links: vec![
                pair("us-east", "eu-west", 80),
                pair("us-east", "ap-south", 190),
                pair("eu-west", "ap-south", 120),
            ],
        }
    }
}

impl WanSettings {
    /// Reads a settings file, checking every round trip.
    pub fn load(path: &Path) -> Result<Self, LabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
        let settings: Self = toml::from_str(&text)
            .map_err(|e| LabError::Invalid(format!("WAN file {}: {e}", path.display())))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that round trips are within `0..=MAX_RTT_MS`.
    pub fn validate(&self) -> Result<(), LabError> {
        let too_long = std::iter::once(self.default_rtt_ms)
            .chain(self.links.iter().map(|l| l.rtt_ms))
            .any(|rtt| rtt > MAX_RTT_MS);
        if too_long {
            return Err(LabError::Invalid(format!(
                "WAN round trips are limited to {MAX_RTT_MS} ms"
            )));
        }
        Ok(())
    }

    /// The round trip between `a` and `b`.
    pub fn rtt_ms(&self, a: &str, b: &str) -> u64 {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
            .map_or(self.default_rtt_ms, |l| l.rtt_ms)
    }
}

/// Plans the emulator for `processes`: one link per (source region, process of
/// another region that others dial). Returns its configuration.
pub fn plan_links(
    processes: &[ProcessRecord],
    regions: &[String],
    settings: &WanSettings,
    http_listen: std::net::SocketAddr,
) -> Result<WanConfig, LabError> {
    let mut links = Vec::new();
    for source in regions {
        for target in processes.iter().filter(|p| dialed_by_peers(p)) {
            if &target.region == source {
                continue;
            }
            links.push(LinkSpec {
                name: format!("{source}->{}:{}", target.region, target.name),
                listen: format!("127.0.0.1:{}", free_port()?)
                    .parse()
                    .map_err(|e| LabError::Invalid(format!("link address: {e}")))?,
                target: target
                    .grpc
                    .parse()
                    .map_err(|e| LabError::Invalid(format!("address {}: {e}", target.grpc)))?,
                one_way_delay_ms: settings.rtt_ms(source, &target.region) / 2,
            });
        }
    }
    Ok(WanConfig { http_listen, links })
}

/// Shard nodes and control-plane members are dialed by other processes;
/// gateways only by clients, which sit outside the emulated WAN.
fn dialed_by_peers(process: &ProcessRecord) -> bool {
    matches!(process.role, ProcessRole::Node | ProcessRole::Control)
}

/// The dial-via table of a process in `region`: remote advertised address ->
/// the local end of that region's link to it.
pub fn dial_via(config: &WanConfig, region: &str) -> BTreeMap<String, String> {
    let prefix = format!("{region}->");
    config
        .links
        .iter()
        .filter(|l| l.name.starts_with(&prefix))
        .map(|l| (l.target.to_string(), l.listen.to_string()))
        .collect()
}

/// Lists the links of the emulator whose control API is at `address`.
pub fn links(address: &str) -> Result<Vec<LinkStatus>, LabError> {
    let body = request(address, "GET", "/links")?;
    serde_json::from_str(&body).map_err(|e| LabError::Invalid(format!("WAN emulator answer: {e}")))
}

/// Cuts (`partitioned`) or restores every link between regions `a` and `b`.
pub fn set_partition(
    address: &str,
    a: &str,
    b: &str,
    partitioned: bool,
) -> Result<String, LabError> {
    let verb = if partitioned { "partition" } else { "heal" };
    request(address, "POST", &format!("/{verb}?a={a}&b={b}"))
}

/// One HTTP/1.1 request to the emulator's control API. Region names are
/// validated (`[a-z0-9-]`), so they need no escaping in the query.
fn request(address: &str, method: &str, path: &str) -> Result<String, LabError> {
    let io = |e| LabError::io(format!("WAN emulator at {address}"), e);
    let mut stream = TcpStream::connect(address).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(LabError::Invalid(format!(
            "WAN emulator refused {method} {path}: {status} {}",
            body.trim()
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_are_symmetric() {
        let settings = WanSettings::default();
        assert_eq!(settings.rtt_ms("us-east", "eu-west"), 80);
        assert_eq!(settings.rtt_ms("eu-west", "us-east"), 80);
        assert_eq!(settings.rtt_ms("ap-south", "us-east"), 190);
        assert_eq!(settings.rtt_ms("eu-west", "ap-south"), 120);
        assert_eq!(settings.rtt_ms("eu-west", "sa-east"), 100);
    }

    #[test]
    fn settings_file_round_trips_are_bounded() {
        let settings: WanSettings =
            toml::from_str("default_rtt_ms = 50\n[[link]]\na = \"x\"\nb = \"y\"\nrtt_ms = 5000\n")
                .expect("parse");
        assert!(settings.validate().is_err());
    }
}
