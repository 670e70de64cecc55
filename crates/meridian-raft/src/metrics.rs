//! Storage metrics of a Raft node, registered by the owning server.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Counters and histograms the log store updates on every flush.
#[derive(Clone)]
pub struct StorageMetrics {
    /// Time one fsync of the journal took.
    pub fsync_seconds: Histogram,
    /// Log appends made durable by one fsync (the group-commit factor).
    pub appends_per_fsync: Histogram,
    /// Failed fsyncs.
    pub fsync_errors: Counter,
    /// Unflushed writes held in memtables, in bytes.
    pub memtable_bytes: Gauge,
    /// The memtable budget (`storage.memtable_bytes`).
    pub memtable_budget_bytes: Gauge,
    /// Bytes held in the block cache.
    pub cache_bytes: Gauge,
    /// The block cache's capacity (`storage.cache_bytes`).
    pub cache_capacity_bytes: Gauge,
    /// The journal's size on disk.
    pub journal_bytes: Gauge,
    /// The journal's cap (`storage.journal_bytes`).
    pub journal_limit_bytes: Gauge,
    /// The whole database on disk (tables and journal).
    pub disk_bytes: Gauge,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self {
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            appends_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            fsync_errors: Counter::default(),
            memtable_bytes: Gauge::default(),
            memtable_budget_bytes: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_capacity_bytes: Gauge::default(),
            journal_bytes: Gauge::default(),
            journal_limit_bytes: Gauge::default(),
            disk_bytes: Gauge::default(),
        }
    }
}

fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl StorageMetrics {
    /// Records the configured limits.
    pub fn limits(&self, storage: &crate::config::StorageSection) {
        self.memtable_budget_bytes
            .set(gauge_value(storage.memtable_bytes));
        self.cache_capacity_bytes
            .set(gauge_value(storage.cache_bytes));
        self.journal_limit_bytes
            .set(gauge_value(storage.journal_bytes));
    }

    /// Records the engine's current memory and disk use.
    pub fn observe(&self, memtables: u64, cache: u64, journal: u64, disk: u64) {
        self.memtable_bytes.set(gauge_value(memtables));
        self.cache_bytes.set(gauge_value(cache));
        self.journal_bytes.set(gauge_value(journal));
        self.disk_bytes.set(gauge_value(disk));
    }

    /// Registers the metrics under `meridian_storage_*`.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register(
            "meridian_storage_fsync_seconds",
            "Latency of one journal fsync",
            self.fsync_seconds.clone(),
        );
        registry.register(
            "meridian_storage_appends_per_fsync",
            "Raft log appends made durable by one fsync (group commit)",
            self.appends_per_fsync.clone(),
        );
        registry.register(
            "meridian_storage_fsync_errors",
            "Journal fsyncs that failed",
            self.fsync_errors.clone(),
        );
        for (name, help, gauge) in [
            (
                "meridian_storage_memtable_bytes",
                "Unflushed writes held in memtables",
                &self.memtable_bytes,
            ),
            (
                "meridian_storage_memtable_budget_bytes",
                "Budget for all memtables together (storage.memtable_bytes)",
                &self.memtable_budget_bytes,
            ),
            (
                "meridian_storage_block_cache_bytes",
                "Bytes held in the block cache",
                &self.cache_bytes,
            ),
            (
                "meridian_storage_block_cache_capacity_bytes",
                "Capacity of the block cache (storage.cache_bytes)",
                &self.cache_capacity_bytes,
            ),
            (
                "meridian_storage_journal_bytes",
                "Size of the journal on disk",
                &self.journal_bytes,
            ),
            (
                "meridian_storage_journal_limit_bytes",
                "Cap on the journal (storage.journal_bytes)",
                &self.journal_limit_bytes,
            ),
            (
                "meridian_storage_disk_bytes",
                "The database on disk: tables and journal",
                &self.disk_bytes,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
    }
}
