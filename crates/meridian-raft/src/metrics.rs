//! Storage metrics of a Raft node, registered by the owning server.

use prometheus_client::metrics::counter::Counter;
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
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self {
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            appends_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            fsync_errors: Counter::default(),
        }
    }
}

impl StorageMetrics {
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
    }
}
