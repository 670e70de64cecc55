//! Prometheus metrics of a shard node. Every series carries `region`, `shard` and
//! `node` labels through the registry's constant labels.

use meridian_raft::metrics::StorageMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::Arc;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// gRPC method name, e.g. `Put`.
    pub method: &'static str,
    /// gRPC status code name, e.g. `Ok`, `NotFound`.
    pub code: &'static str,
}

/// Labels of a replication-lag series: one namespace, one standby.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    /// The namespace.
    pub namespace: String,
    /// The standby's region.
    pub standby_region: String,
    /// The standby's shard.
    pub standby_shard: String,
}

/// Labels of a per-namespace series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace.
    pub namespace: String,
}

/// All metrics of a shard node.
pub struct ShardMetrics {
    registry: Registry,
    /// Latency of acknowledged writes (Put, Delete, Txn).
    pub write_seconds: Histogram,
    /// Latency of reads (Get, Scan).
    pub read_seconds: Histogram,
    /// Requests by method and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// 1 while this node is the leader.
    pub is_leader: Gauge,
    /// Current Raft term.
    pub term: Gauge,
    /// Index of the last log entry.
    pub last_log_index: Gauge,
    /// Index of the last applied entry.
    pub applied_index: Gauge,
    /// Index covered by the latest snapshot.
    pub snapshot_index: Gauge,
    /// Namespaces on this shard.
    pub namespaces: Gauge,
    /// Storage (fsync) metrics.
    pub storage: Arc<StorageMetrics>,
    /// Compressed bytes shipped to standby regions.
    pub replication_bytes: Counter,
    /// Changes logged but not yet confirmed by a standby.
    pub lag_entries: Family<LagLabels, Gauge>,
    /// Age of the oldest change a standby has not confirmed.
    pub lag_seconds: Family<LagLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Each primary namespace's lag budget in seconds (`max_lag`; 0: none).
    pub lag_budget_seconds: Family<NamespaceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Each primary namespace's lag budget in changes (0: none).
    pub lag_budget_entries: Family<NamespaceLabels, Gauge>,
    /// Writes refused by the RPO gate, by namespace.
    pub rpo_refusals: Family<NamespaceLabels, Counter>,
    /// On the leader, per fenced primary namespace: 1 while it holds a
    /// valid write lease.
    pub primary_lease_valid: Family<NamespaceLabels, Gauge>,
    /// Per primary namespace: the change its newest time mark covers (a
    /// restore to a time reaches at best that far).
    pub time_mark_seq: Family<NamespaceLabels, Gauge>,
    /// Voters in the shard's membership.
    pub voters: Gauge,
    /// On the leader: voters (itself included) that answered a heartbeat
    /// lately; 0 on followers.
    pub voters_reachable: Gauge,
    /// Free bytes on the data directory's file system.
    pub disk_free_bytes: Gauge,
    /// Size of the data directory's file system.
    pub disk_capacity_bytes: Gauge,
    /// This process's resident memory.
    pub resident_memory_bytes: Gauge,
    /// When this node's TLS certificate expires (Unix seconds; absent
    /// without TLS).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// This node's clock offset from the control plane's, as last measured.
    pub clock_offset_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while that offset is surely beyond the bound (active-active writes
    /// refused here).
    pub clock_skewed: Gauge,
    /// Per active-active namespace: conflicts this copy's merges resolved
    /// (only grows; the records kept are bounded by retention).
    pub active_conflicts: Family<NamespaceLabels, Gauge>,
    /// Per active-active namespace: merged writes stamped further ahead of
    /// this node's clock than the bound (kept and flagged).
    pub active_future_stamps: Family<NamespaceLabels, Gauge>,
    /// Per active-active namespace: deleted keys this copy holds as
    /// tombstones, waiting until every copy has merged past them.
    pub active_tombstones: Family<NamespaceLabels, Gauge>,
    /// Per active-active namespace: tombstones this copy has collected
    /// (only grows).
    pub active_tombstones_collected: Family<NamespaceLabels, Gauge>,
}

/// Labels of the certificate-expiry series (none beyond the constant ones;
/// a family so a node without TLS exports no series).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// What the certificate is for (`tls`).
    pub certificate: &'static str,
}

impl ShardMetrics {
    /// Creates and registers every metric with constant labels for this node.
    pub fn new(region: &str, shard: &str, node_id: u64) -> Self {
        let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = vec![
            ("region".into(), region.to_string().into()),
            ("shard".into(), shard.to_string().into()),
            ("node".into(), node_id.to_string().into()),
        ];
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let mut metrics = Self {
            registry: Registry::default(),
            write_seconds: latency(),
            read_seconds: latency(),
            requests: Family::default(),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            applied_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            namespaces: Gauge::default(),
            storage: Arc::new(StorageMetrics::default()),
            replication_bytes: Counter::default(),
            lag_entries: Family::default(),
            lag_seconds: Family::default(),
            lag_budget_seconds: Family::default(),
            lag_budget_entries: Family::default(),
            rpo_refusals: Family::default(),
            primary_lease_valid: Family::default(),
            time_mark_seq: Family::default(),
            voters: Gauge::default(),
            voters_reachable: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            disk_capacity_bytes: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            certificate_expiry: Family::default(),
            clock_offset_seconds: Gauge::default(),
            clock_skewed: Gauge::default(),
            active_conflicts: Family::default(),
            active_future_stamps: Family::default(),
            active_tombstones: Family::default(),
            active_tombstones_collected: Family::default(),
        };
        // Metrics are shared handles: the clones registered here are the same
        // series the fields update.
        let mut root = Registry::default();
        let registry = root.sub_registry_with_labels(labels.into_iter());
        registry.register(
            "meridian_write_latency_seconds",
            "Latency of acknowledged writes",
            metrics.write_seconds.clone(),
        );
        registry.register(
            "meridian_read_latency_seconds",
            "Latency of reads",
            metrics.read_seconds.clone(),
        );
        registry.register(
            "meridian_requests",
            "gRPC requests by method and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "meridian_raft_leader",
            "1 while this node is the shard leader",
            metrics.is_leader.clone(),
        );
        registry.register(
            "meridian_raft_term",
            "Current Raft term",
            metrics.term.clone(),
        );
        registry.register(
            "meridian_raft_log_index",
            "Index of the last Raft log entry",
            metrics.last_log_index.clone(),
        );
        registry.register(
            "meridian_raft_applied_index",
            "Index of the last applied Raft entry",
            metrics.applied_index.clone(),
        );
        registry.register(
            "meridian_raft_snapshot_index",
            "Last index covered by the latest snapshot",
            metrics.snapshot_index.clone(),
        );
        registry.register(
            "meridian_namespaces",
            "Namespaces held by this shard",
            metrics.namespaces.clone(),
        );
        registry.register(
            "meridian_clock_offset_seconds",
            "This node's clock offset from the control plane's as last measured (ahead positive)",
            metrics.clock_offset_seconds.clone(),
        );
        registry.register(
            "meridian_clock_skewed",
            "1 while this node's clock is surely beyond max_clock_offset_ms (active-active writes refused here)",
            metrics.clock_skewed.clone(),
        );
        registry.register(
            "meridian_active_conflicts",
            "Conflicts resolved by this copy's merges of an active-active namespace (only grows)",
            metrics.active_conflicts.clone(),
        );
        registry.register(
            "meridian_active_future_stamps",
            "Merged writes of an active-active namespace stamped further ahead of this node's clock than the bound (kept, flagged)",
            metrics.active_future_stamps.clone(),
        );
        registry.register(
            "meridian_active_tombstones",
            "Deleted keys of an active-active namespace this copy holds until every copy has merged past them",
            metrics.active_tombstones.clone(),
        );
        registry.register(
            "meridian_active_tombstones_collected",
            "Deleted keys of an active-active namespace this copy has dropped once every copy held the delete (only grows)",
            metrics.active_tombstones_collected.clone(),
        );
        registry.register(
            "meridian_replication_sent_bytes",
            "Compressed bytes shipped to standby regions",
            metrics.replication_bytes.clone(),
        );
        registry.register(
            "meridian_replication_lag_entries",
            "Changes logged on the primary and not yet confirmed by the standby",
            metrics.lag_entries.clone(),
        );
        registry.register(
            "meridian_replication_lag_seconds",
            "Age of the oldest change the standby has not confirmed",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "meridian_replication_lag_budget_seconds",
            "Each primary namespace's max_lag in seconds (0: no time budget)",
            metrics.lag_budget_seconds.clone(),
        );
        registry.register(
            "meridian_replication_lag_budget_entries",
            "Each primary namespace's max_lag in changes (0: no change budget)",
            metrics.lag_budget_entries.clone(),
        );
        registry.register(
            "meridian_rpo_gate_refusals",
            "Writes refused because a standby was further behind than the namespace's max_lag",
            metrics.rpo_refusals.clone(),
        );
        registry.register(
            "meridian_primary_lease_valid",
            "On the shard leader, per fenced primary namespace: 1 while it holds a valid write lease",
            metrics.primary_lease_valid.clone(),
        );
        registry.register(
            "meridian_time_mark_change_seq",
            "Per primary namespace, the change its newest time mark covers (the latest a restore to a time can reach)",
            metrics.time_mark_seq.clone(),
        );
        registry.register(
            "meridian_raft_voters",
            "Voters in the shard's Raft membership",
            metrics.voters.clone(),
        );
        registry.register(
            "meridian_raft_voters_reachable",
            "On the leader, voters (itself included) that acknowledged a heartbeat lately; 0 on followers",
            metrics.voters_reachable.clone(),
        );
        registry.register(
            "meridian_storage_disk_free_bytes",
            "Bytes available on the data directory's file system",
            metrics.disk_free_bytes.clone(),
        );
        registry.register(
            "meridian_storage_disk_capacity_bytes",
            "Size of the data directory's file system in bytes",
            metrics.disk_capacity_bytes.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process",
            metrics.resident_memory_bytes.clone(),
        );
        registry.register(
            "meridian_tls_certificate_expiry_timestamp_seconds",
            "When this process's TLS certificate stops being valid (Unix time)",
            metrics.certificate_expiry.clone(),
        );
        metrics.storage.register(registry);
        metrics.registry = root;
        metrics
    }

    /// Counts one finished request.
    pub fn count(&self, method: &'static str, code: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// Sets the lag gauges from the replicator's progress (called before each
    /// scrape, so the age in seconds is current).
    pub fn set_replication_lag(
        &self,
        progress: &std::collections::HashMap<
            (String, String),
            meridian_replication::progress::StandbyProgress,
        >,
    ) {
        self.lag_entries.clear();
        self.lag_seconds.clear();
        for ((namespace, shard), p) in progress {
            let labels = LagLabels {
                namespace: namespace.clone(),
                standby_region: p.region.clone(),
                standby_shard: shard.clone(),
            };
            self.lag_entries
                .get_or_create(&labels)
                .set(p.lag_entries() as i64);
            self.lag_seconds.get_or_create(&labels).set(p.lag_seconds());
        }
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        meridian_net::metrics_text::encode(&self.registry)
    }
}

/// Static names of gRPC codes, so counting a request allocates nothing.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
