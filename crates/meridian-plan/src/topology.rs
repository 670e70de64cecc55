//! The description `meridian plan` reads (TOML), and its checks.

use crate::PlanError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A described deployment: regions, namespaces, the workload, prices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Data size and write rate of the whole deployment.
    pub workload: Workload,
    /// The price table the arithmetic uses.
    pub prices: Prices,
    /// The control plane's failover settings (as in its `[failover]`).
    #[serde(default)]
    pub failover: Failover,
    /// Backup schedule applied to every namespace (none: no backups).
    #[serde(default)]
    pub backups: Option<Backups>,
    /// The regions, with their machines.
    #[serde(rename = "region")]
    pub regions: Vec<Region>,
    /// The namespaces, with their modes and shares of the workload.
    #[serde(rename = "namespace")]
    pub namespaces: Vec<Namespace>,
}

/// The workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Logical data (keys and values), in GB.
    pub data_gb: f64,
    /// Writes per second, all namespaces together.
    pub writes_per_second: f64,
    /// Average bytes a write carries (key and value).
    pub write_bytes: f64,
    /// Stored bytes per logical byte on a node (Raft log, change log, LSM
    /// space amplification); default 1.5.
    #[serde(default = "default_storage_overhead")]
    pub storage_overhead: f64,
    /// Bytes shipped per logical byte replicated (compression, framing);
    /// default 1.0 (values that do not compress).
    #[serde(default = "default_one")]
    pub replication_ratio: f64,
}

/// Prices, in one currency (the output names none).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Hours in a billed month; default 730.
    #[serde(default = "default_hours")]
    pub hours_per_month: f64,
    /// Per instance type, per hour.
    pub instance_hour: BTreeMap<String, f64>,
    /// Block storage per GB-month.
    pub storage_gb_month: f64,
    /// Object storage (backups) per GB-month.
    #[serde(default)]
    pub backup_gb_month: f64,
    /// Transfer between regions per GB, unless listed below.
    pub transfer_gb: f64,
    /// Transfer per GB between two regions, keyed `"a/b"` (either direction).
    #[serde(default)]
    pub transfer_gb_between: BTreeMap<String, f64>,
}

/// The control plane's failover settings that bound recovery time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// Probe interval, ms.
    pub probe_interval_ms: u64,
    /// Failed probes in a row that declare a shard down.
    pub failed_probes: u32,
    /// Write lease length, ms (a forced failover waits it out).
    pub lease_ms: u64,
    /// Whether failover is automatic.
    pub automatic: bool,
}

impl Default for Failover {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            failed_probes: 3,
            lease_ms: 3_000,
            automatic: true,
        }
    }
}

/// The backup schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backups {
    /// A backup this often, hours.
    pub every_hours: f64,
    /// Backups kept this long, days.
    pub keep_days: f64,
    /// Incremental backups between two full ones.
    #[serde(default)]
    pub incrementals_per_full: u32,
    /// Restore speed into one shard, MB/s (measured: BENCHMARKS.md);
    /// default 20.
    #[serde(default = "default_restore_rate")]
    pub restore_mb_per_second: f64,
}

/// A region and the machines in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Instance type of every machine in it (a key of `prices.instance_hour`).
    pub instance: String,
    /// Raft voters per shard.
    pub nodes_per_shard: u32,
    /// Shards in the region; default 1.
    #[serde(default = "default_one_u32")]
    pub shards: u32,
    /// Gateways; default 2.
    #[serde(default = "default_two")]
    pub gateways: u32,
    /// Whether a control-plane member runs here; default true.
    #[serde(default = "default_true")]
    pub control_member: bool,
}

/// How a namespace is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only in its home region.
    RegionLocked,
    /// A primary at home, standbys elsewhere.
    ActivePassive,
    /// Writable in every region of its set.
    ActiveActive,
}

/// A namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Home region (active-active: one of its peers).
    pub home: String,
    /// Replication mode.
    pub mode: Mode,
    /// Active-passive: acknowledge writes only once a standby has them.
    #[serde(default)]
    pub sync: bool,
    /// Standby regions (active-passive) or the other peers (active-active).
    #[serde(default)]
    pub standbys: Vec<String>,
    /// Its share of `workload.data_gb` (0..=1).
    pub data_share: f64,
    /// Its share of `workload.writes_per_second` (0..=1).
    pub write_share: f64,
    /// Replication lag measured for it (`meridian replication lag`), ms;
    /// without it the plan assumes [`ASSUMED_LAG_MS`] and says so.
    #[serde(default)]
    pub measured_lag_ms: Option<f64>,
    /// The recovery point it must meet, seconds.
    #[serde(default)]
    pub rpo_target_seconds: Option<f64>,
    /// The recovery time it must meet, seconds.
    #[serde(default)]
    pub rto_target_seconds: Option<f64>,
}

/// The lag assumed for an asynchronous namespace without a measurement.
pub const ASSUMED_LAG_MS: f64 = 1_000.0;

fn default_storage_overhead() -> f64 {
    1.5
}
fn default_one() -> f64 {
    1.0
}
fn default_hours() -> f64 {
    730.0
}
fn default_restore_rate() -> f64 {
    20.0
}
fn default_one_u32() -> u32 {
    1
}
fn default_two() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

impl Topology {
    /// Parses and checks a description.
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        let topology: Topology =
            toml::from_str(text).map_err(|e| PlanError::Syntax(e.to_string()))?;
        topology.check()?;
        Ok(topology)
    }

    /// The rules a description must follow; the first broken one is named.
    pub fn check(&self) -> Result<(), PlanError> {
        let invalid = |what: String| Err(PlanError::Invalid(what));
        let finite_non_negative = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(PlanError::Invalid(format!(
                    "{name} must be a number at or above 0, not {value}"
                )))
            }
        };
        let w = &self.workload;
        finite_non_negative("workload.data_gb", w.data_gb)?;
        finite_non_negative("workload.writes_per_second", w.writes_per_second)?;
        finite_non_negative("workload.write_bytes", w.write_bytes)?;
        finite_non_negative("workload.storage_overhead", w.storage_overhead)?;
        finite_non_negative("workload.replication_ratio", w.replication_ratio)?;
        let p = &self.prices;
        finite_non_negative("prices.hours_per_month", p.hours_per_month)?;
        finite_non_negative("prices.storage_gb_month", p.storage_gb_month)?;
        finite_non_negative("prices.backup_gb_month", p.backup_gb_month)?;
        finite_non_negative("prices.transfer_gb", p.transfer_gb)?;
        for (name, price) in p.instance_hour.iter().chain(&p.transfer_gb_between) {
            finite_non_negative(&format!("price {name:?}"), *price)?;
        }
        for pair in p.transfer_gb_between.keys() {
            let Some((a, b)) = pair.split_once('/') else {
                return invalid(format!(
                    "prices.transfer_gb_between key {pair:?} must be \"region/region\""
                ));
            };
            for region in [a, b] {
                if !self.regions.iter().any(|r| r.name == region) {
                    return invalid(format!(
                        "prices.transfer_gb_between names region {region:?}, which is not described"
                    ));
                }
            }
        }
        if let Some(b) = &self.backups {
            if !(b.every_hours.is_finite() && b.every_hours > 0.0) {
                return invalid(format!(
                    "backups.every_hours must be above 0, not {}",
                    b.every_hours
                ));
            }
            finite_non_negative("backups.keep_days", b.keep_days)?;
            if !(b.restore_mb_per_second.is_finite() && b.restore_mb_per_second > 0.0) {
                return invalid(format!(
                    "backups.restore_mb_per_second must be above 0, not {}",
                    b.restore_mb_per_second
                ));
            }
        }
        if self.failover.failed_probes == 0 {
            return invalid("failover.failed_probes must be at least 1".into());
        }
        if self.regions.is_empty() {
            return invalid("describe at least one [[region]]".into());
        }
        let mut names = BTreeSet::new();
        for region in &self.regions {
            if !names.insert(region.name.as_str()) {
                return invalid(format!("region {:?} is described twice", region.name));
            }
            if !p.instance_hour.contains_key(&region.instance) {
                return invalid(format!(
                    "region {:?} uses instance type {:?}, which prices.instance_hour does not list",
                    region.name, region.instance
                ));
            }
            if region.nodes_per_shard == 0 || region.shards == 0 {
                return invalid(format!(
                    "region {:?} needs at least one shard of at least one node",
                    region.name
                ));
            }
        }
        let mut namespaces = BTreeSet::new();
        let (mut data, mut writes) = (0.0, 0.0);
        for ns in &self.namespaces {
            if !namespaces.insert(ns.name.as_str()) {
                return invalid(format!("namespace {:?} is described twice", ns.name));
            }
            for (what, share) in [
                ("data_share", ns.data_share),
                ("write_share", ns.write_share),
            ] {
                if !(share.is_finite() && (0.0..=1.0).contains(&share)) {
                    return invalid(format!(
                        "namespace {:?}: {what} must be between 0 and 1, not {share}",
                        ns.name
                    ));
                }
            }
            data += ns.data_share;
            writes += ns.write_share;
            if let Some(lag) = ns.measured_lag_ms {
                finite_non_negative(&format!("namespace {:?} measured_lag_ms", ns.name), lag)?;
            }
            for region in std::iter::once(&ns.home).chain(&ns.standbys) {
                if !names.contains(region.as_str()) {
                    return invalid(format!(
                        "namespace {:?} names region {region:?}, which is not described",
                        ns.name
                    ));
                }
            }
            if ns.standbys.contains(&ns.home) {
                return invalid(format!(
                    "namespace {:?} lists its home {:?} among its standbys",
                    ns.name, ns.home
                ));
            }
            match ns.mode {
                Mode::RegionLocked if !ns.standbys.is_empty() => {
                    return invalid(format!(
                        "namespace {:?} is region-locked and cannot have standbys",
                        ns.name
                    ));
                }
                Mode::ActivePassive | Mode::ActiveActive if ns.standbys.is_empty() => {
                    return invalid(format!(
                        "namespace {:?} is {:?} and needs at least one other region in standbys",
                        ns.name, ns.mode
                    ));
                }
                _ => {}
            }
            if ns.sync && ns.mode != Mode::ActivePassive {
                return invalid(format!(
                    "namespace {:?}: sync applies to active-passive namespaces only",
                    ns.name
                ));
            }
        }
        // A little slack for shares written as decimals.
        for (what, total) in [("data_share", data), ("write_share", writes)] {
            if total > 1.0 + 1e-9 {
                return invalid(format!(
                    "the namespaces' {what}s add up to {total:.3}, more than the whole workload (1)"
                ));
            }
        }
        Ok(())
    }

    /// The region named `name` (checked to exist by [`Topology::check`]).
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The transfer price between two regions.
    pub fn transfer_price(&self, a: &str, b: &str) -> f64 {
        let p = &self.prices;
        p.transfer_gb_between
            .get(&format!("{a}/{b}"))
            .or_else(|| p.transfer_gb_between.get(&format!("{b}/{a}")))
            .copied()
            .unwrap_or(p.transfer_gb)
    }
}
