//! The gRPC face of a shard node. Protobuf types stay in this module: requests are
//! validated and converted to domain commands here, and domain results and errors
//! converted back.

pub mod admin;
pub mod convert;
pub mod kv;
pub mod replication;

use crate::error::ShardError;
use crate::metrics::ShardMetrics;
use prometheus_client::metrics::histogram::Histogram;
use std::time::Instant;
use tonic::{Response, Status};

/// Records the outcome of one call (count by code, latency on success) and turns
/// it into a gRPC result.
pub(crate) fn finish<T>(
    metrics: &ShardMetrics,
    method: &'static str,
    latency: Option<&Histogram>,
    started: Instant,
    result: Result<T, ShardError>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(message) => {
            metrics.count(method, tonic::Code::Ok);
            if let Some(histogram) = latency {
                histogram.observe(started.elapsed().as_secs_f64());
            }
            Ok(Response::new(message))
        }
        Err(error) => {
            metrics.count(method, error.code());
            Err(error.into())
        }
    }
}
