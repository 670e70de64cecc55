//! The receiving side: what a shipper sends, applied through the receiving
//! shard's own Raft log — in order on an active-passive standby
//! ([`in_order`]), merged on an active-active peer ([`merge`]). Which one is
//! the request's: a request naming its origin region carries a peer's writes.

mod in_order;
mod merge;

use crate::ReplicationError;
use crate::replica::{ApplyStep, Sink};
use meridian_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Applies one replication request on the receiving shard; answers its
/// position (and whether it needs a full copy).
pub async fn receive<S: Sink>(
    sink: &S,
    request: pb::ReplicateRequest,
) -> Result<pb::ReplicateResponse, S::Error> {
    let Some(state) = sink.namespace(&request.namespace) else {
        return Err(ReplicationError::NamespaceNotFound {
            name: request.namespace.clone(),
        }
        .into());
    };
    let namespace = request.namespace.clone();
    let mut response = if request.origin_region.is_empty() {
        in_order::receive(sink, state, request).await
    } else {
        let mut response = merge::merge(sink, state, request).await?;
        response.frontier = sink
            .frontier(&namespace)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(response)
    }?;
    response.max_payload_format = crate::wire::MAX_DECODED_FORMAT;
    Ok(response)
}

/// The changes a batch carries, checked against the count it states.
fn decode_changes(
    request: &pb::ReplicateRequest,
) -> Result<Vec<crate::change::ChangeRecord>, ReplicationError> {
    let changes =
        crate::wire::decode_batch(&request.payload, request.payload_format).map_err(|e| {
            ReplicationError::Malformed(format!(
                "replication payload (at most {} bytes decompressed): {e}",
                crate::wire::MAX_BATCH_BYTES
            ))
        })?;
    if changes.len() != request.count as usize {
        return Err(ReplicationError::Malformed(format!(
            "replication batch holds {} changes, the request says {}",
            changes.len(),
            request.count
        )));
    }
    Ok(changes)
}

/// Submits `step` and waits for it to apply.
async fn apply<S: Sink>(sink: &S, step: ApplyStep) -> Result<u64, S::Error> {
    let pending = sink.submit(step).await?;
    sink.committed(pending).await
}

/// Queues `step` (a batch ending at change `last`) for the Raft log while
/// holding its lane, lets the next batch in, then waits for `step` to commit
/// and apply: pipelined batches reach the log in order without waiting for
/// each other's commits.
async fn apply_in_lane<S: Sink>(
    sink: &S,
    mut lane: tokio::sync::OwnedMutexGuard<u64>,
    step: ApplyStep,
    last: u64,
) -> Result<u64, S::Error> {
    let pending = sink.submit(step).await?;
    *lane = last;
    drop(lane);
    sink.committed(pending).await
}

/// Serializes replicated batches per namespace on a standby, in the order they
/// arrive, so pipelined batches reach the Raft log in sequence order; a batch
/// that overtook its predecessor on the way waits for it briefly. A lane holds
/// the last sequence number submitted to Raft through it, so the next batch
/// need not wait for the previous one to commit.
#[derive(Debug, Default)]
pub struct ApplyLanes {
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
}

/// How long a batch waits for the batch before it before applying what it can.
const OVERTAKE_WAIT: Duration = Duration::from_secs(1);

impl ApplyLanes {
    /// Holds `namespace`'s lane once the changes before `first` are applied
    /// (`applied()`) or submitted through the lane, or once [`OVERTAKE_WAIT`]
    /// has passed. Set the guard to the batch's last sequence number once it
    /// is submitted.
    pub async fn enter(
        &self,
        namespace: &str,
        first: u64,
        applied: impl Fn() -> u64,
    ) -> tokio::sync::OwnedMutexGuard<u64> {
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(namespace.to_string())
            .or_default()
            .clone();
        let deadline = Instant::now() + OVERTAKE_WAIT;
        loop {
            let guard = lane.clone().lock_owned().await;
            let through = applied().max(*guard);
            if through.saturating_add(1) >= first || Instant::now() >= deadline {
                return guard;
            }
            drop(guard);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
