//! Prometheus metrics of a control-plane member (`/metrics`).
//!
//! Most series are read from the replicated state at scrape time (every
//! member exports them; the leader's are the ones acted on): routing,
//! namespaces, failovers, jobs, backups, audit. What only happens on a
//! member — its Raft position, its probes of the shards, the leases it
//! granted, route watchers, refused calls — is counted as it happens in
//! [`ControlStats`]. Every series carries `region` and `member`.

use crate::model::{FailoverRecord, JobSpec, JobState, NamespaceMode};
use crate::node::ControlNode;
use openraft::async_runtime::WatchReceiver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Calls this process refused because they would put a namespace's data
/// outside its jurisdictions (counted where refusals become gRPC statuses).
pub static RESIDENCY_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// What a member counts as it happens (not in the replicated state).
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Lease grants sent to shard leaders.
    pub lease_grants: AtomicU64,
    /// Route subscriptions (gateways) open now.
    pub route_watchers: AtomicI64,
    /// Each shard's last probe: answered, and its round trip.
    pub probes: Mutex<BTreeMap<String, ProbeOutcome>>,
    /// Each shard leader's clock offset (ms, ahead positive), measured from
    /// its last answer.
    pub clock_offsets: Mutex<BTreeMap<String, i64>>,
}

/// One shard's last probe.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOutcome {
    /// It answered in time.
    pub up: bool,
    /// Its round trip (the timeout when it did not answer).
    pub round_trip: Duration,
}

impl ControlStats {
    /// Notes a probe of `shard`.
    pub fn probed(&self, shard: &str, outcome: ProbeOutcome) {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard.to_string(), outcome);
    }

    /// Notes `shard`'s measured clock offset.
    pub fn clock_offset(&self, shard: &str, offset_ms: i64) {
        self.clock_offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard.to_string(), offset_ms);
    }
}

/// Held while a route subscription is open: counts it in
/// [`ControlStats::route_watchers`].
pub struct WatcherGuard<'a>(&'a ControlStats);

impl<'a> WatcherGuard<'a> {
    /// Counts a subscription until the guard drops.
    pub fn new(stats: &'a ControlStats) -> Self {
        stats.route_watchers.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for WatcherGuard<'_> {
    fn drop(&mut self) {
        self.0.route_watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What kind of primary move a failover record is, for the
/// `meridian_failovers_total` `cause` label. Every cause string is written
/// by this crate (`failover::ManualFailover::cause`, the policies, the
/// migration cutover): the prefix or suffix it gives each kind is what is
/// matched here.
pub fn cause_kind(cause: &str) -> &'static str {
    if cause.starts_with("migration ") || cause == "migration" {
        "migration"
    } else if cause.contains("(forced") {
        "forced"
    } else if cause.starts_with("manual failover") || cause.contains("(drained)") {
        // `failover`, `region drain` and `region promote` alike: an
        // operator's drained move.
        "manual"
    } else {
        "automatic"
    }
}

/// The `mode` label of a namespace.
pub fn mode_label(mode: NamespaceMode) -> &'static str {
    match mode {
        NamespaceMode::RegionLocked => "region-locked",
        NamespaceMode::ActivePassive { sync: true } => "sync",
        NamespaceMode::ActivePassive { sync: false } => "async",
        NamespaceMode::ActiveActive => "active-active",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    cause: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
    shard_region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

fn job_kind(spec: &JobSpec) -> &'static str {
    match spec {
        JobSpec::Restore(_) => "restore",
        JobSpec::Backup(_) => "backup",
        JobSpec::Migrate(_) => "migrate",
        JobSpec::Rebuild(_) => "rebuild",
    }
}

fn job_state(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1e3
}

fn gauge(value: i64) -> ConstGauge {
    ConstGauge::new(value)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The failovers the history holds, by kind and the namespace's mode.
fn failovers_by_kind(
    failovers: &BTreeMap<u64, FailoverRecord>,
    mode_of: impl Fn(&str) -> &'static str,
) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut counts = BTreeMap::new();
    for record in failovers.values().filter(|f| f.is_move()) {
        *counts
            .entry((cause_kind(&record.cause), mode_of(&record.namespace)))
            .or_insert(0) += 1;
    }
    counts
}

/// The member's metrics in Prometheus text format.
pub fn render(node: &ControlNode) -> String {
    let mut root = Registry::default();
    let registry = root.sub_registry_with_labels(
        [
            ("region".into(), node.config.node.region.clone().into()),
            ("member".into(), node.id().to_string().into()),
        ]
        .into_iter(),
    );
    let raft = node.raft.raft.metrics().borrow_watched().clone();
    let leading = node.raft.raft.is_leader();
    // The storage engine: fsyncs, memtables against their budget, block
    // cache, journal and disk; and the process's resident memory.
    node.raft.engine.refresh_metrics();
    node.raft.engine.metrics().register(registry);
    if let Some(rss) = meridian_net::metrics_text::resident_memory_bytes() {
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process",
            gauge(i64::try_from(rss).unwrap_or(i64::MAX)),
        );
    }
    registry.register(
        "meridian_control_leader",
        "1 while this member leads the control plane",
        gauge(i64::from(leading)),
    );
    registry.register(
        "meridian_control_raft_term",
        "Current Raft term of the control plane as this member sees it",
        gauge(i64::try_from(raft.current_term).unwrap_or(i64::MAX)),
    );
    registry.register(
        "meridian_control_raft_log_index",
        "Index of this member's last control-plane log entry",
        gauge(i64::try_from(raft.last_log_index.unwrap_or(0)).unwrap_or(i64::MAX)),
    );
    registry.register(
        "meridian_control_raft_applied_index",
        "Index of the last control-plane entry this member applied",
        gauge(i64::try_from(raft.last_applied.map_or(0, |id| id.index())).unwrap_or(i64::MAX)),
    );
    let stats = &node.stats;
    registry.register(
        "meridian_control_lease_grants",
        "Write-lease grants this member sent to shard leaders",
        ConstCounter::new(stats.lease_grants.load(Ordering::Relaxed)),
    );
    registry.register(
        "meridian_residency_refusals",
        "Calls refused because they would put a namespace's data outside its jurisdictions",
        ConstCounter::new(RESIDENCY_REFUSALS.load(Ordering::Relaxed)),
    );
    registry.register(
        "meridian_control_route_watchers",
        "Route subscriptions (gateways) open on this member",
        gauge(stats.route_watchers.load(Ordering::Relaxed)),
    );
    let probe_up = Family::<ShardLabels, Gauge>::default();
    let probe_seconds = Family::<ShardLabels, Gauge<f64, AtomicU64>>::default();
    let lease_left = Family::<ShardLabels, Gauge<f64, AtomicU64>>::default();
    let clock_offset = Family::<ShardLabels, Gauge<f64, AtomicU64>>::default();
    let now = std::time::Instant::now();
    node.with_state(|state| {
        let region_of = |shard: &str| {
            state
                .shards
                .get(shard)
                .map(|s| s.region.clone())
                .unwrap_or_default()
        };
        let probes = stats.probes.lock().unwrap_or_else(|e| e.into_inner());
        for (shard, outcome) in probes.iter() {
            let labels = ShardLabels {
                shard: shard.clone(),
                shard_region: region_of(shard),
            };
            probe_up.get_or_create(&labels).set(i64::from(outcome.up));
            probe_seconds
                .get_or_create(&labels)
                .set(outcome.round_trip.as_secs_f64());
        }
        let offsets = stats.clock_offsets.lock().unwrap_or_else(|e| e.into_inner());
        for (shard, ms) in offsets.iter() {
            clock_offset
                .get_or_create(&ShardLabels {
                    shard: shard.clone(),
                    shard_region: region_of(shard),
                })
                .set(*ms as f64 / 1_000.0);
        }
        if let Some(ledger) = node
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            for shard in state.shards.keys() {
                let left = ledger
                    .may_hold_until(shard, now)
                    .map_or(0.0, |until| until.saturating_duration_since(now).as_secs_f64());
                lease_left
                    .get_or_create(&ShardLabels {
                        shard: shard.clone(),
                        shard_region: region_of(shard),
                    })
                    .set(left);
            }
        }
        registry.register(
            "meridian_routing_version",
            "Routing-table version this member has applied",
            gauge(i64::try_from(state.counters.routing_version).unwrap_or(i64::MAX)),
        );
        registry.register(
            "meridian_routing_table_namespaces",
            "Namespaces in the routing table",
            gauge(count(state.namespaces.len())),
        );
        registry.register(
            "meridian_namespaces",
            "Namespaces placed",
            gauge(count(state.namespaces.len())),
        );
        registry.register(
            "meridian_control_regions",
            "Regions the control plane knows",
            gauge(count(state.regions.len())),
        );
        registry.register(
            "meridian_control_shards",
            "Shards the control plane knows",
            gauge(count(state.shards.len())),
        );
        let mode_of = |namespace: &str| {
            state
                .namespaces
                .get(namespace)
                .map_or("deleted", |n| mode_label(n.policy.mode))
        };
        let failovers = Family::<FailoverLabels, Counter>::default();
        for ((cause, mode), n) in failovers_by_kind(&state.failovers, mode_of) {
            failovers
                .get_or_create(&FailoverLabels { cause, mode })
                .inc_by(n);
        }
        registry.register(
            "meridian_failovers",
            "Primary moves in the failover history, by cause (automatic, manual, forced, migration) and the namespace's mode",
            failovers,
        );
        let degraded = Family::<NamespaceLabels, Gauge>::default();
        for namespace in state.namespaces.values().filter(|n| n.wants_sync()) {
            degraded
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.name.clone(),
                })
                .set(i64::from(namespace.sync_degraded));
        }
        registry.register(
            "meridian_namespace_sync_degraded",
            "1 while a sync namespace runs async under its on-standby-loss=degrade policy",
            degraded,
        );
        registry.register(
            "meridian_namespace_deletions_pending",
            "Deleted namespaces whose copies are not all gone yet",
            gauge(count(state.deletions.len())),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        for job in state.jobs.values() {
            jobs.get_or_create(&JobLabels {
                kind: job_kind(&job.spec),
                state: job_state(job.state),
            })
            .inc();
        }
        registry.register(
            "meridian_control_jobs",
            "Jobs by kind and state",
            jobs,
        );
        registry.register(
            "meridian_control_audit_records",
            "Records in the audit log",
            gauge(i64::try_from(state.counters.audit_sequence).unwrap_or(i64::MAX)),
        );
        let last_backup = Family::<NamespaceLabels, Gauge<f64, AtomicU64>>::default();
        for backup in state.backups.values() {
            let labels = NamespaceLabels {
                namespace: backup.namespace.clone(),
            };
            let at = seconds(backup.created_unix_ms);
            let latest = last_backup.get_or_create(&labels);
            if at > latest.get() {
                latest.set(at);
            }
        }
        registry.register(
            "meridian_backup_last_success_timestamp_seconds",
            "When the newest catalogued backup of each namespace was taken (Unix time)",
            last_backup,
        );
        let interval = Family::<NamespaceLabels, Gauge<f64, AtomicU64>>::default();
        let since = Family::<NamespaceLabels, Gauge<f64, AtomicU64>>::default();
        for schedule in state.schedules.values() {
            let labels = NamespaceLabels {
                namespace: schedule.namespace.clone(),
            };
            interval
                .get_or_create(&labels)
                .set(seconds(schedule.every_ms));
            since
                .get_or_create(&labels)
                .set(seconds(schedule.created_unix_ms));
        }
        registry.register(
            "meridian_backup_schedule_interval_seconds",
            "Each backup schedule's interval",
            interval,
        );
        registry.register(
            "meridian_backup_schedule_since_timestamp_seconds",
            "When each backup schedule was set (Unix time)",
            since,
        );
    });
    registry.register(
        "meridian_control_shard_probe_up",
        "1 when the shard leader answered this member's last probe",
        probe_up,
    );
    registry.register(
        "meridian_control_shard_probe_round_trip_seconds",
        "Round trip of this member's last probe of each shard",
        probe_seconds,
    );
    registry.register(
        "meridian_control_shard_clock_offset_seconds",
        "Each shard leader's clock offset from this member's (ahead positive), measured at its last answer",
        clock_offset,
    );
    registry.register(
        "meridian_control_shard_lease_remaining_seconds",
        "How long each shard may still hold a write lease this member granted",
        lease_left,
    );
    let certificate = Family::<CertificateLabels, Gauge>::default();
    if let Some(expiry) = node
        .config
        .network
        .tls
        .as_ref()
        .and_then(|tls| tls.certificate_expiry_unix())
    {
        certificate
            .get_or_create(&CertificateLabels { certificate: "tls" })
            .set(expiry);
    }
    registry.register(
        "meridian_tls_certificate_expiry_timestamp_seconds",
        "When this process's TLS certificate stops being valid (Unix time)",
        certificate,
    );
    meridian_net::metrics_text::encode(&root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_causes_are_classified() {
        for (cause, kind) in [
            ("migration 4 to eu-west", "migration"),
            ("migration", "migration"),
            ("manual failover by user/alice (drained)", "manual"),
            ("policy move (drained)", "manual"),
            (
                "manual failover by user/alice (forced: primary unreachable)",
                "forced",
            ),
            ("manual failover by user/alice", "manual"),
            ("shard us-east-s1 failed 3 probes in a row", "automatic"),
            ("", "automatic"),
        ] {
            assert_eq!(cause_kind(cause), kind, "{cause:?}");
        }
    }

    #[test]
    fn modes_are_labelled() {
        assert_eq!(mode_label(NamespaceMode::RegionLocked), "region-locked");
        assert_eq!(
            mode_label(NamespaceMode::ActivePassive { sync: true }),
            "sync"
        );
        assert_eq!(
            mode_label(NamespaceMode::ActivePassive { sync: false }),
            "async"
        );
        assert_eq!(mode_label(NamespaceMode::ActiveActive), "active-active");
    }
}
