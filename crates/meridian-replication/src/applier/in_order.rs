//! Active-passive: a standby applies its primary's history in order
//! through its own Raft log.
//!
//! Batches arrive pipelined (several on the wire at once) and may overtake
//! each other; the apply lanes put them back in sequence order per namespace
//! before they reach the log. A batch whose changes are all held already, or
//! any batch while the copy waits for a full copy, is answered with the
//! position after a read barrier, without a Raft round. A full copy comes
//! in chunks: the first empties the copy, the last sets its position.

use super::apply;
use crate::ReplicationError;
use crate::replica::{ApplyStep, Sink};
use crate::wire;
use meridian_proto::v1 as pb;

/// Applies a batch (or a full copy's chunk) from the primary, in order;
/// answers the standby's position and whether it needs a full copy.
pub(super) async fn receive<S: Sink>(
    sink: &S,
    state: crate::NamespaceState,
    request: pb::ReplicateRequest,
) -> Result<pb::ReplicateResponse, S::Error> {
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
    let changes = super::decode_changes(&request)?;
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
    let lane = sink
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
        let applied_seq = now.map_or(0, |s| s.change_seq);
        let resync_needed = now.is_some_and(|s| s.resync_needed);
        if !resync_needed && applied_seq >= request.primary_seq {
            sink.note_current(&request.namespace);
        }
        return Ok(pb::ReplicateResponse {
            applied_seq,
            resync_needed,
            ..Default::default()
        });
    }
    let last = changes.last().map_or(0, |c| c.seq);
    let step = ApplyStep::Changes {
        namespace: request.namespace.clone(),
        epoch: request.epoch,
        changes,
    };
    let applied_seq = super::apply_in_lane(sink, lane, step, last).await?;
    if applied_seq >= request.primary_seq {
        sink.note_current(&request.namespace);
    }
    Ok(pb::ReplicateResponse {
        applied_seq,
        resync_needed: false,
        ..Default::default()
    })
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
        ..Default::default()
    })
}
