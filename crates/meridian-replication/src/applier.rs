//! The standby's side: applying what a primary ships, in order, through the
//! standby's own Raft log.
//!
//! Batches arrive pipelined (several on the wire at once) and may overtake
//! each other; [`ApplyLanes`] puts them back in sequence order per namespace
//! before they reach the log. A batch whose changes are all held already, or
//! any batch while the copy waits for a full copy, is answered with the
//! position after a read barrier, without a Raft round. A full copy comes
//! in chunks: the first empties the copy, the last sets its position.

use crate::ReplicationError;
use crate::replica::{ApplyStep, Sink};
use crate::wire;
use meridian_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Applies one replication request on a standby; answers its position (and
/// whether it needs a full copy).
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
    if !request.origin_region.is_empty() {
        return merge(sink, state, request).await;
    }
    if let Some(resync) = request.resync {
        return resync_chunk(
            sink,
            &request.namespace,
            request.epoch,
            resync,
            &request.payload,
        )
        .await;
    }
    let changes = wire::decode_batch(&request.payload, request.payload_format).map_err(|e| {
        ReplicationError::Malformed(format!(
            "replication payload (at most {} bytes decompressed): {e}",
            wire::MAX_BATCH_BYTES
        ))
    })?;
    if changes.len() != request.count as usize {
        return Err(ReplicationError::Malformed(format!(
            "replication batch holds {} changes, the request says {}",
            changes.len(),
            request.count
        ))
        .into());
    }
    if state.epoch != request.epoch {
        return Err(ReplicationError::StaleEpoch {
            name: request.namespace.clone(),
            current: state.epoch,
            requested: request.epoch,
        }
        .into());
    }
    // Pipelined batches apply one at a time and in order; one that
    // overtook its predecessor on the way waits for it.
    let first = changes.first().map_or(0, |c| c.seq);
    let mut lane = sink
        .lanes()
        .enter(&request.namespace, first, || {
            sink.namespace(&request.namespace)
                .map_or(0, |s| s.change_seq)
        })
        .await;
    let state = sink.namespace(&request.namespace).unwrap_or(state);
    // Nothing new (or a copy waiting for a rebuild): answer the position
    // without a Raft round, after a barrier so it is what a quorum has.
    if state.resync_needed || changes.iter().all(|c| c.seq <= state.change_seq) {
        sink.read_barrier().await?;
        let now = sink.namespace(&request.namespace);
        let applied_seq = now.as_ref().map_or(0, |s| s.change_seq);
        let resync_needed = now.is_some_and(|s| s.resync_needed);
        if !resync_needed && applied_seq >= request.primary_seq {
            sink.note_current(&request.namespace);
        }
        return Ok(pb::ReplicateResponse {
            applied_seq,
            resync_needed,
        });
    }
    let last = changes.last().map_or(0, |c| c.seq);
    // Queue it for the log in order, then let the next batch in while this
    // one commits.
    let pending = sink
        .submit(ApplyStep::Changes {
            namespace: request.namespace.clone(),
            epoch: request.epoch,
            changes,
        })
        .await?;
    *lane = last;
    drop(lane);
    let applied_seq = sink.committed(pending).await?;
    if applied_seq >= request.primary_seq {
        sink.note_current(&request.namespace);
    }
    Ok(pb::ReplicateResponse {
        applied_seq,
        resync_needed: false,
    })
}

/// Active-active: merges another region's own writes (or a chunk of its
/// copy) and answers how far this peer holds that region's writes.
async fn merge<S: Sink>(
    sink: &S,
    state: crate::NamespaceState,
    request: pb::ReplicateRequest,
) -> Result<pb::ReplicateResponse, S::Error> {
    let origin = request.origin_region.clone();
    if state.epoch != request.epoch {
        return Err(ReplicationError::StaleEpoch {
            name: request.namespace.clone(),
            current: state.epoch,
            requested: request.epoch,
        }
        .into());
    }
    if let Some(resync) = request.resync {
        let entries = if request.payload.is_empty() {
            Vec::new()
        } else {
            wire::decode_entries(&request.payload)
                .map_err(|e| ReplicationError::Malformed(format!("full-copy payload: {e}")))?
        };
        let applied_seq = apply(
            sink,
            ApplyStep::MergeCopy {
                namespace: request.namespace.clone(),
                epoch: request.epoch,
                origin,
                entries,
                through_seq: resync.last.then_some(resync.through_seq),
            },
        )
        .await?;
        return Ok(pb::ReplicateResponse {
            applied_seq,
            resync_needed: false,
        });
    }
    let changes = wire::decode_batch(&request.payload, request.payload_format).map_err(|e| {
        ReplicationError::Malformed(format!(
            "replication payload (at most {} bytes decompressed): {e}",
            wire::MAX_BATCH_BYTES
        ))
    })?;
    if changes.len() != request.count as usize {
        return Err(ReplicationError::Malformed(format!(
            "replication batch holds {} changes, the request says {}",
            changes.len(),
            request.count
        ))
        .into());
    }
    // One lane per (namespace, origin): each region's writes apply in its
    // log's order; different regions' interleave freely.
    let lane_name = format!("{}/{origin}", request.namespace);
    let merged = |s: &crate::NamespaceState| s.merged.get(&origin).copied().unwrap_or(0);
    let first = changes.first().map_or(0, |c| c.seq);
    let mut lane = sink
        .lanes()
        .enter(&lane_name, first, || {
            sink.namespace(&request.namespace).map_or(0, |s| merged(&s))
        })
        .await;
    let state = sink.namespace(&request.namespace).unwrap_or(state);
    if changes.iter().all(|c| c.seq <= merged(&state)) {
        sink.read_barrier().await?;
        let applied_seq = sink.namespace(&request.namespace).map_or(0, |s| merged(&s));
        sink.note_merged(
            &request.namespace,
            &origin,
            request.primary_seq,
            applied_seq,
        );
        return Ok(pb::ReplicateResponse {
            applied_seq,
            resync_needed: false,
        });
    }
    let last = changes.last().map_or(0, |c| c.seq);
    let pending = sink
        .submit(ApplyStep::Merge {
            namespace: request.namespace.clone(),
            epoch: request.epoch,
            origin: origin.clone(),
            changes,
        })
        .await?;
    *lane = last;
    drop(lane);
    let applied_seq = sink.committed(pending).await?;
    sink.note_merged(
        &request.namespace,
        &origin,
        request.primary_seq,
        applied_seq,
    );
    Ok(pb::ReplicateResponse {
        applied_seq,
        resync_needed: false,
    })
}

/// Submits `step` and waits for it to apply.
async fn apply<S: Sink>(sink: &S, step: ApplyStep) -> Result<u64, S::Error> {
    let pending = sink.submit(step).await?;
    sink.committed(pending).await
}

/// One chunk of a full copy into a diverged standby.
async fn resync_chunk<S: Sink>(
    sink: &S,
    namespace: &str,
    epoch: u64,
    resync: pb::ResyncChunk,
    payload: &[u8],
) -> Result<pb::ReplicateResponse, S::Error> {
    let mut applied_seq = 0;
    if resync.first {
        apply(
            sink,
            ApplyStep::ResyncBegin {
                namespace: namespace.to_string(),
                epoch,
            },
        )
        .await?;
    }
    if !payload.is_empty() {
        let entries = wire::decode_entries(payload)
            .map_err(|e| ReplicationError::Malformed(format!("full-copy payload: {e}")))?;
        apply(
            sink,
            ApplyStep::ResyncEntries {
                namespace: namespace.to_string(),
                epoch,
                entries,
            },
        )
        .await?;
    }
    if resync.last {
        applied_seq = apply(
            sink,
            ApplyStep::ResyncEnd {
                namespace: namespace.to_string(),
                epoch,
                through_seq: resync.through_seq,
            },
        )
        .await?;
    }
    Ok(pb::ReplicateResponse {
        applied_seq,
        resync_needed: !resync.last,
    })
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
