//! Active-active: a peer merges another region's own writes (each a key's
//! state) through its own Raft log, in that region's log order, and answers
//! how far it holds them.

use super::apply;
use crate::ReplicationError;
use crate::replica::{ApplyStep, Sink};
use crate::wire;
use meridian_proto::v1 as pb;

/// Active-active: merges another region's own writes (or a chunk of its
/// copy) and answers how far this peer holds that region's writes.
pub(super) async fn merge<S: Sink>(
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
            ..Default::default()
        });
    }
    let changes = super::decode_changes(&request)?;
    // One lane per (namespace, origin): each region's writes apply in its
    // log's order; different regions' interleave freely.
    let lane_name = format!("{}/{origin}", request.namespace);
    let merged = || sink.merged(&request.namespace, &origin);
    let first = changes.first().map_or(0, |c| c.seq);
    let lane = sink.lanes().enter(&lane_name, first, merged).await;
    let held = merged();
    if changes.iter().all(|c| c.seq <= held) {
        sink.read_barrier().await?;
        let applied_seq = merged();
        sink.note_merged(
            &request.namespace,
            &origin,
            request.primary_seq,
            applied_seq,
        );
        return Ok(pb::ReplicateResponse {
            applied_seq,
            resync_needed: false,
            ..Default::default()
        });
    }
    let last = changes.last().map_or(0, |c| c.seq);
    let step = ApplyStep::Merge {
        namespace: request.namespace.clone(),
        epoch: request.epoch,
        origin: origin.clone(),
        changes,
    };
    let applied_seq = super::apply_in_lane(sink, lane, step, last).await?;
    sink.note_merged(
        &request.namespace,
        &origin,
        request.primary_seq,
        applied_seq,
    );
    Ok(pb::ReplicateResponse {
        applied_seq,
        resync_needed: false,
        ..Default::default()
    })
}
