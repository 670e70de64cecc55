//! Time marks: about once a second the shard's leader notes, for each
//! primary whose change log moved, that its current change was reached by
//! now ([`Command::MarkTime`]). Backups carry the marks, so a backup chain
//! restores to a wall-clock time: the last change marked at or before it.
//!
//! A mark names the change the leader had applied when it read its clock:
//! every change up to it was written before the mark's time. Restoring to
//! the last mark at or before a time therefore includes nothing written
//! after that time, and leaves out at most the writes of about one mark
//! interval before it.

use crate::command::{Command, NamespaceRole};
use crate::node::ShardNode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often marks are proposed (the resolution of a restore to a time).
pub const MARK_EVERY: Duration = Duration::from_secs(1);

/// The namespaces due a mark (pure): primaries that keep a change log and
/// moved past what was marked last.
pub fn due(
    records: &[(String, crate::state_machine::NamespaceRecord)],
    marked: &HashMap<String, u64>,
) -> Vec<(String, u64)> {
    records
        .iter()
        .filter(|(_, r)| r.role == NamespaceRole::Primary)
        .filter(|(_, r)| r.log_changes || r.backup_hold.is_some())
        .filter(|(_, r)| r.change_seq > r.trimmed_through)
        .filter(|(name, r)| marked.get(name) != Some(&r.change_seq))
        .map(|(name, r)| (name.clone(), r.change_seq))
        .collect()
}

/// Proposes marks while this node leads its shard; runs until the process
/// stops.
pub async fn run(node: Arc<ShardNode>) {
    let mut marked: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::time::sleep(MARK_EVERY).await;
        if !node.raft.raft.is_leader() {
            marked.clear();
            continue;
        }
        let due = due(&node.machine.namespaces(), &marked);
        if due.is_empty() {
            continue;
        }
        // Read after the changes were applied here: each was written by then.
        let command = Command::MarkTime {
            unix_ms: crate::lease::now_unix_ms(),
            namespaces: due.clone(),
        };
        match node.propose(command).await {
            Ok(_) => marked.extend(due),
            Err(err) => tracing::debug!(%err, "time marks not recorded this round"),
        }
        marked.retain(|name, _| node.machine.namespace(name).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::NamespaceRecord;

    fn record(role: NamespaceRole, log: bool, seq: u64, trimmed: u64) -> NamespaceRecord {
        NamespaceRecord {
            created_index: 1,
            key_count: 0,
            role,
            epoch: 1,
            change_seq: seq,
            log_changes: log,
            trimmed_through: trimmed,
            resync_needed: false,
            sync: false,
            max_lag_entries: 0,
            max_lag_ms: 0,
            promoted_seq: 0,
            promoted_from_epoch: 0,
            backup_hold: None,
            content_sum: None,
        }
    }

    #[test]
    fn due_table() {
        let marked: HashMap<String, u64> = [("same".to_string(), 7)].into();
        // (case, record, due)
        let cases = [
            (
                "a primary that moved",
                record(NamespaceRole::Primary, true, 9, 0),
                true,
            ),
            (
                "nothing logged",
                record(NamespaceRole::Primary, false, 9, 0),
                false,
            ),
            (
                "all trimmed",
                record(NamespaceRole::Primary, true, 9, 9),
                false,
            ),
            (
                "a standby",
                record(NamespaceRole::Standby, true, 9, 0),
                false,
            ),
        ];
        for (case, record, expected) in cases {
            let found = due(&[("ns".to_string(), record)], &marked);
            assert_eq!(!found.is_empty(), expected, "{case}");
        }
        let unchanged = due(
            &[(
                "same".to_string(),
                record(NamespaceRole::Primary, true, 7, 0),
            )],
            &marked,
        );
        assert!(unchanged.is_empty(), "marked at this change already");
    }
}
