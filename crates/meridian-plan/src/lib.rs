//! Capacity and cost planning for a Meridian topology (`meridian plan`).
//!
//! - [`topology`]: the TOML description (regions, machines, namespaces and
//!   their modes, the workload, a price table) and its rules.
//! - [`plan`]: the arithmetic — monthly cost (compute, storage,
//!   cross-region transfer, backups), each namespace's expected recovery
//!   point and time from its mode, the measured lag and the failover
//!   policy — and typed warnings about targets the topology cannot meet.
//!
//! Everything here is a pure function of the description; the command only
//! reads the file and prints the result.

pub mod topology;

use serde::Serialize;
use topology::{ASSUMED_LAG_MS, Mode, Topology};

/// Why a description cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// Not valid TOML, or not the expected shape (the message says where).
    #[error("topology: {0}")]
    Syntax(String),
    /// A rule is broken (the message names it).
    #[error("topology: {0}")]
    Invalid(String),
}

/// Bytes in a GB (decimal, as clouds bill).
const GB: f64 = 1e9;

/// What a topology costs a month, and what it recovers from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// Monthly cost, by kind.
    pub cost: Cost,
    /// Per region.
    pub regions: Vec<RegionPlan>,
    /// Per namespace: recovery point and time.
    pub namespaces: Vec<NamespacePlan>,
    /// What the topology cannot do, typed.
    pub warnings: Vec<Warning>,
}

/// Monthly cost by kind.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cost {
    /// Machines: shard nodes, gateways, control-plane members.
    pub compute: f64,
    /// Block storage of every copy on every node.
    pub storage: f64,
    /// Replication between regions.
    pub transfer: f64,
    /// Backup objects kept.
    pub backups: f64,
    /// The sum.
    pub total: f64,
}

/// One region's share.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegionPlan {
    /// The region.
    pub name: String,
    /// Machines in it.
    pub instances: u32,
    /// Their monthly cost.
    pub compute: f64,
    /// GB stored on its nodes.
    pub stored_gb: f64,
}

/// One namespace's recovery.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NamespacePlan {
    /// The namespace.
    pub name: String,
    /// Its mode (`sync` shown for synchronous active-passive).
    pub mode: String,
    /// Writes that may be lost when its home region is lost, in seconds of
    /// writes (`None`: unbounded — no copy elsewhere and no backups).
    pub rpo_seconds: Option<f64>,
    /// Whether the RPO rests on an assumed lag rather than a measured one.
    pub rpo_assumed: bool,
    /// Time until it takes writes again after losing its home region
    /// (`None`: only by hand or when the region returns).
    pub rto_seconds: Option<f64>,
    /// Its replication traffic between regions, GB a month.
    pub transfer_gb: f64,
}

/// A warning, typed so scripts act on `kind`, not on the words.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// The namespace or region it concerns (empty: the deployment).
    pub subject: String,
    /// In words.
    pub message: String,
}

/// Kinds of warnings.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// A sync namespace with one standby region stops taking writes when
    /// that region (or its home) is lost.
    SyncSingleStandby,
    /// The expected recovery point is worse than the namespace's target.
    RpoTargetMissed,
    /// The expected recovery time is worse than the namespace's target.
    RtoTargetMissed,
    /// The control plane loses its quorum with one region.
    ControlQuorumAtRisk,
    /// A shard with fewer than three voters stops with one node.
    SmallShard,
    /// A namespace held in one region without backups: losing the region
    /// loses it.
    NoRecoveryCopy,
    /// An asynchronous namespace's RPO rests on an assumed lag.
    LagAssumed,
}

/// Plans `topology` (checked by [`Topology::check`] first).
pub fn plan(topology: &Topology) -> Result<Plan, PlanError> {
    topology.check()?;
    let w = &topology.workload;
    let p = &topology.prices;
    let seconds_a_month = p.hours_per_month * 3_600.0;
    let mut warnings = Vec::new();

    // Compute and storage, per region.
    let mut regions: Vec<RegionPlan> = topology
        .regions
        .iter()
        .map(|r| {
            let instances = r.nodes_per_shard * r.shards + r.gateways + u32::from(r.control_member);
            let hourly = p.instance_hour.get(&r.instance).copied().unwrap_or(0.0);
            RegionPlan {
                name: r.name.clone(),
                instances,
                compute: f64::from(instances) * hourly * p.hours_per_month,
                stored_gb: 0.0,
            }
        })
        .collect();
    for ns in &topology.namespaces {
        let data = w.data_gb * ns.data_share * w.storage_overhead;
        for holder in std::iter::once(&ns.home).chain(&ns.standbys) {
            if let (Some(region), Some(row)) = (
                topology.region(holder),
                regions.iter_mut().find(|r| &r.name == holder),
            ) {
                // Every voter of the shard holds a full copy.
                row.stored_gb += data * f64::from(region.nodes_per_shard);
            }
        }
    }
    let compute: f64 = regions.iter().map(|r| r.compute).sum();
    let storage: f64 = regions.iter().map(|r| r.stored_gb).sum::<f64>() * p.storage_gb_month;

    // Replication, backups and recovery, per namespace.
    let mut namespaces = Vec::new();
    let mut transfer = 0.0;
    let mut backup_gb = 0.0;
    for ns in &topology.namespaces {
        let written_gb =
            w.writes_per_second * ns.write_share * w.write_bytes * seconds_a_month / GB;
        let shipped_gb = written_gb * w.replication_ratio;
        let (transfer_gb, transfer_cost) = match ns.mode {
            Mode::RegionLocked => (0.0, 0.0),
            // The primary ships each change to every standby.
            Mode::ActivePassive => ns.standbys.iter().fold((0.0, 0.0), |(gb, cost), s| {
                (
                    gb + shipped_gb,
                    cost + shipped_gb * topology.transfer_price(&ns.home, s),
                )
            }),
            // Writes originate evenly in every peer; each ships to all others.
            Mode::ActiveActive => {
                let peers: Vec<&String> = std::iter::once(&ns.home).chain(&ns.standbys).collect();
                let share = shipped_gb / peers.len() as f64;
                let mut gb = 0.0;
                let mut cost = 0.0;
                for from in &peers {
                    for to in peers.iter().filter(|to| *to != from) {
                        gb += share;
                        cost += share * topology.transfer_price(from, to);
                    }
                }
                (gb, cost)
            }
        };
        transfer += transfer_cost;
        if let Some(b) = &topology.backups {
            backup_gb +=
                backup_stored_gb(w.data_gb * ns.data_share, written_gb, seconds_a_month, b);
        }
        let lag_s = ns.measured_lag_ms.unwrap_or(ASSUMED_LAG_MS) / 1e3;
        let backup_rpo = topology.backups.as_ref().map(|b| b.every_hours * 3_600.0);
        let (rpo, rpo_assumed) = match (ns.mode, ns.sync) {
            (Mode::ActivePassive, true) => (Some(0.0), false),
            (Mode::ActivePassive | Mode::ActiveActive, false) => {
                (Some(lag_s), ns.measured_lag_ms.is_none())
            }
            (Mode::RegionLocked, _) => (backup_rpo, false),
            (Mode::ActiveActive, true) => (Some(0.0), false),
        };
        let f = &topology.failover;
        let detect_s = f64::from(f.failed_probes) * f.probe_interval_ms as f64 / 1e3;
        let rto = match ns.mode {
            // Detection, waiting out the old primary's lease, promotion (a
            // probe round).
            Mode::ActivePassive if f.automatic => {
                Some(detect_s + (f.lease_ms + f.probe_interval_ms) as f64 / 1e3)
            }
            Mode::ActivePassive => None,
            // No promotion: gateways send the region's clients to a peer
            // once the region is seen down.
            Mode::ActiveActive => Some(detect_s),
            // Restored from its newest backup into another allowed region.
            Mode::RegionLocked => topology
                .backups
                .as_ref()
                .map(|b| w.data_gb * ns.data_share * GB / 1e6 / b.restore_mb_per_second),
        };
        namespace_warnings(ns, rpo, rpo_assumed, rto, topology, &mut warnings);
        namespaces.push(NamespacePlan {
            name: ns.name.clone(),
            mode: match (ns.mode, ns.sync) {
                (Mode::RegionLocked, _) => "region-locked".into(),
                (Mode::ActivePassive, true) => "active-passive (sync)".into(),
                (Mode::ActivePassive, false) => "active-passive (async)".into(),
                (Mode::ActiveActive, _) => "active-active".into(),
            },
            rpo_seconds: rpo,
            rpo_assumed,
            rto_seconds: rto,
            transfer_gb,
        });
    }
    deployment_warnings(topology, &mut warnings);
    let backups = backup_gb * p.backup_gb_month;
    let cost = Cost {
        compute,
        storage,
        transfer,
        backups,
        total: compute + storage + transfer + backups,
    };
    Ok(Plan {
        cost,
        regions,
        namespaces,
        warnings,
    })
}

/// GB a backup schedule keeps of a namespace of `data_gb` that receives
/// `written_gb` a month: full copies every `incrementals_per_full + 1`
/// backups, incrementals holding the changes between backups, each kept
/// `keep_days` (plus the newest full, always kept).
fn backup_stored_gb(
    data_gb: f64,
    written_gb: f64,
    seconds_a_month: f64,
    backups: &topology::Backups,
) -> f64 {
    let every_s = backups.every_hours * 3_600.0;
    let kept = (backups.keep_days * 86_400.0 / every_s).ceil().max(1.0);
    let per_full = f64::from(backups.incrementals_per_full) + 1.0;
    let fulls = (kept / per_full).ceil() + 1.0;
    let incrementals = (kept - kept / per_full).max(0.0);
    let changed_per_backup = written_gb * every_s / seconds_a_month.max(1.0);
    fulls * data_gb + incrementals * changed_per_backup.min(data_gb)
}

fn namespace_warnings(
    ns: &topology::Namespace,
    rpo: Option<f64>,
    rpo_assumed: bool,
    rto: Option<f64>,
    topology: &Topology,
    warnings: &mut Vec<Warning>,
) {
    let mut warn = |kind, message: String| {
        warnings.push(Warning {
            kind,
            subject: ns.name.clone(),
            message,
        })
    };
    if ns.mode == Mode::ActivePassive && ns.sync && ns.standbys.len() == 1 {
        warn(
            WarningKind::SyncSingleStandby,
            format!(
                "{} is sync with one standby region ({}): after losing either region it cannot acknowledge writes as sync (they are refused, or it runs async under on-standby-loss=degrade); give it a second standby region",
                ns.name, ns.standbys[0]
            ),
        );
    }
    if ns.mode == Mode::RegionLocked && topology.backups.is_none() {
        warn(
            WarningKind::NoRecoveryCopy,
            format!(
                "{} lives only in {} and nothing backs it up: losing the region loses it",
                ns.name, ns.home
            ),
        );
    }
    if rpo_assumed {
        warn(
            WarningKind::LagAssumed,
            format!(
                "{} is asynchronous and no lag was measured for it; its RPO assumes {} ms (measure with `meridian replication lag` and set measured_lag_ms)",
                ns.name, ASSUMED_LAG_MS
            ),
        );
    }
    if let Some(target) = ns.rpo_target_seconds {
        match rpo {
            Some(rpo) if rpo <= target => {}
            Some(rpo) => warn(
                WarningKind::RpoTargetMissed,
                format!(
                    "{}: expected RPO {rpo:.1} s misses its target of {target} s",
                    ns.name
                ),
            ),
            None => warn(
                WarningKind::RpoTargetMissed,
                format!(
                    "{}: no copy bounds its RPO; its target is {target} s",
                    ns.name
                ),
            ),
        }
    }
    if let Some(target) = ns.rto_target_seconds {
        match rto {
            Some(rto) if rto <= target => {}
            Some(rto) => warn(
                WarningKind::RtoTargetMissed,
                format!(
                    "{}: expected RTO {rto:.1} s misses its target of {target} s",
                    ns.name
                ),
            ),
            None => warn(
                WarningKind::RtoTargetMissed,
                format!(
                    "{}: it recovers only by hand (failover.automatic = false) or when its region returns; its target is {target} s",
                    ns.name
                ),
            ),
        }
    }
}

fn deployment_warnings(topology: &Topology, warnings: &mut Vec<Warning>) {
    let members: Vec<&str> = topology
        .regions
        .iter()
        .filter(|r| r.control_member)
        .map(|r| r.name.as_str())
        .collect();
    // A majority must survive the loss of any one region.
    let survives_a_region = members.len() >= 3;
    if !survives_a_region {
        warnings.push(Warning {
            kind: WarningKind::ControlQuorumAtRisk,
            subject: String::new(),
            message: format!(
                "the control plane has members in {} region(s) ({}): losing one region loses its quorum, and with it failover; run members in at least three regions (a region may hold only a member)",
                members.len(),
                members.join(", ")
            ),
        });
    }
    for region in &topology.regions {
        if region.nodes_per_shard < 3 {
            warnings.push(Warning {
                kind: WarningKind::SmallShard,
                subject: region.name.clone(),
                message: format!(
                    "shards in {} have {} voter(s): losing one node stops them; use 3 (or 5)",
                    region.name, region.nodes_per_shard
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests;
