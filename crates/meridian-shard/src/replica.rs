//! The shard's side of replication: [`ShardNode`] as a
//! [`meridian_replication::Source`] (its change log read from a sequence
//! number, trimmed through Raft) and a [`meridian_replication::Sink`]
//! (batches and full copies proposed through its own Raft log).

use crate::command::{Command, CommandResult, NamespaceRole, Rejection};
use crate::error::ShardError;
use crate::limits::LimitError;
use crate::node::{Pending, ShardNode};
use crate::state_machine::NamespaceRecord;
use meridian_replication::{
    ApplyStep, NamespaceState, ReplicationError, Role, Sink, Source, applier::ApplyLanes,
    bandwidth::BandwidthCap, change::ChangeRecord, progress::ReplicationProgress,
};

fn state(record: NamespaceRecord) -> NamespaceState {
    NamespaceState {
        role: match record.role {
            NamespaceRole::Primary => Role::Primary,
            NamespaceRole::Standby => Role::Standby,
            NamespaceRole::Peer => Role::Peer,
        },
        epoch: record.epoch,
        change_seq: record.change_seq,
        trimmed_through: record.trimmed_through,
        log_changes: record.log_changes,
        resync_needed: record.resync_needed,
    }
}

impl From<ReplicationError> for ShardError {
    fn from(error: ReplicationError) -> Self {
        match error {
            ReplicationError::Malformed(why) => ShardError::Invalid(LimitError::Malformed(why)),
            ReplicationError::NamespaceNotFound { name } => {
                ShardError::Rejected(Rejection::NamespaceNotFound { name })
            }
            ReplicationError::StaleEpoch {
                name,
                current,
                requested,
            } => ShardError::Rejected(Rejection::StaleEpoch {
                name,
                current,
                requested,
            }),
        }
    }
}

impl Source for ShardNode {
    type Error = ShardError;

    fn shard(&self) -> &str {
        &self.config.node.shard
    }

    fn region(&self) -> &str {
        &self.config.node.region
    }

    fn is_leader(&self) -> bool {
        self.raft.raft.is_leader()
    }

    fn namespace(&self, namespace: &str) -> Option<NamespaceState> {
        self.machine.namespace(namespace).map(state)
    }

    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.machine.subscribe_changes()
    }

    fn changes_after(
        &self,
        namespace: &str,
        after: u64,
        max: usize,
    ) -> std::io::Result<Vec<ChangeRecord>> {
        self.machine.changes_after(namespace, after, max)
    }

    fn visit_copy(
        &self,
        namespace: &str,
        visit: &mut dyn FnMut(u64, Vec<u8>, u64, Vec<u8>) -> bool,
    ) -> std::io::Result<u64> {
        self.machine.visit_namespace_at_seq(namespace, visit)
    }

    async fn trim(&self, namespace: &str, through: u64) -> Result<(), ShardError> {
        self.propose(Command::TrimChanges {
            namespace: namespace.to_string(),
            through,
        })
        .await
        .map(drop)
    }

    fn progress(&self) -> &ReplicationProgress {
        &self.replication
    }

    fn bandwidth(&self) -> &BandwidthCap {
        &self.bandwidth
    }

    fn workers(&self) -> &meridian_net::workers::Workers {
        &self.raft.workers
    }

    fn shipped(&self, bytes: u64) {
        self.metrics.replication_bytes.inc_by(bytes);
    }
}

/// The Raft command of an apply step (merges carry the leader's clock).
fn command(step: ApplyStep) -> Command {
    match step {
        ApplyStep::Merge {
            namespace,
            epoch,
            origin,
            changes,
        } => Command::MergeChanges {
            namespace,
            epoch,
            origin,
            changes,
            physical_ms: crate::lease::now_unix_ms(),
        },
        ApplyStep::MergeCopy {
            namespace,
            epoch,
            origin,
            entries,
            through_seq,
        } => Command::MergeCopy {
            namespace,
            epoch,
            origin,
            entries,
            through_seq,
            physical_ms: crate::lease::now_unix_ms(),
        },
        ApplyStep::Changes {
            namespace,
            epoch,
            changes,
        } => Command::ApplyChanges {
            namespace,
            epoch,
            changes,
        },
        ApplyStep::ResyncBegin { namespace, epoch } => Command::ResyncBegin { namespace, epoch },
        ApplyStep::ResyncEntries {
            namespace,
            epoch,
            entries,
        } => Command::ResyncEntries {
            namespace,
            epoch,
            entries,
        },
        ApplyStep::ResyncEnd {
            namespace,
            epoch,
            through_seq,
        } => Command::ResyncEnd {
            namespace,
            epoch,
            through_seq,
        },
    }
}

impl Sink for ShardNode {
    type Error = ShardError;
    type Pending = (Command, Pending);

    fn namespace(&self, namespace: &str) -> Option<NamespaceState> {
        self.machine.namespace(namespace).map(state)
    }

    fn merged(&self, namespace: &str, origin: &str) -> u64 {
        // A read failure counts as nothing merged: the shipper then resends
        // what is there, and merges skip what they hold.
        self.machine
            .active_meta(namespace)
            .ok()
            .flatten()
            .and_then(|meta| meta.merged.get(origin).copied())
            .unwrap_or(0)
    }

    fn frontier(&self, namespace: &str) -> Option<meridian_replication::tombstone::Frontier> {
        // The merged positions first, the log's head after: a head read
        // later than the positions is only more cautious (writes past it
        // were surely made after them); the other order could claim writes
        // saw merges they did not.
        let meta = self.machine.active_meta(namespace).ok().flatten()?;
        if !meta.counts_by_position {
            return None;
        }
        let head = self.machine.namespace(namespace)?.change_seq;
        Some(meta.frontier(head))
    }

    async fn read_barrier(&self) -> Result<(), ShardError> {
        ShardNode::read_barrier(self, None).await
    }

    async fn submit(&self, step: ApplyStep) -> Result<(Command, Pending), ShardError> {
        let command = command(step);
        let pending = ShardNode::submit(self, &command).await?;
        Ok((command, pending))
    }

    async fn committed(&self, (command, pending): (Command, Pending)) -> Result<u64, ShardError> {
        match ShardNode::committed(self, &command, pending).await? {
            CommandResult::Replicated { applied_seq } => Ok(applied_seq),
            other => Err(crate::api::kv::unexpected(other)),
        }
    }

    fn note_current(&self, namespace: &str) {
        self.note_standby_current(namespace);
    }

    fn lanes(&self) -> &ApplyLanes {
        &self.apply_lanes
    }

    fn note_merged(&self, namespace: &str, origin: &str, origin_head: u64, merged: u64) {
        let mut heard = self.peer_heard.lock().unwrap_or_else(|e| e.into_inner());
        let entry = heard
            .entry((namespace.to_string(), origin.to_string()))
            .or_default();
        entry.origin_head = entry.origin_head.max(origin_head);
        entry.merged = entry.merged.max(merged);
        if entry.merged >= entry.origin_head {
            entry.current_at = Some(std::time::Instant::now());
        }
    }
}
