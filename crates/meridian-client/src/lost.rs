//! Re-applying the writes a failover lost, safely (pure planning; the caller
//! performs the plan).
//!
//! A returning former primary keeps the writes its successor never received
//! ("lost writes"). Re-applying one blindly could overwrite a newer value
//! written on the new primary since the failover. So a key's lost writes
//! become one conditional transaction: its final lost value is written only
//! if the key still has the version it had at the failover (the version
//! before its first lost write — identical on both copies up to the fork,
//! since standbys keep their primary's versions). A key changed since is
//! skipped and reported. Records are removed once re-applied (or skipped as
//! superseded), so running it twice does nothing the second time.

use crate::pb;
use std::collections::BTreeMap;

/// What to do about one key's lost writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write `value` (`None`: delete) if the key's version is still `base`
    /// (0: absent); then remove the records.
    Reapply {
        /// The key.
        key: Vec<u8>,
        /// The final lost value.
        value: Option<Vec<u8>>,
        /// The version the key must still have.
        base: u64,
        /// The lost changes `(epoch, seq)` this covers.
        changes: Vec<(u64, u64)>,
    },
    /// The records do not say the key's version at the failover (recorded
    /// by a build before format 2): not re-applied; the operator decides
    /// (`--discard` removes them).
    Unknown {
        /// The key.
        key: Vec<u8>,
        /// The lost changes `(epoch, seq)` concerned.
        changes: Vec<(u64, u64)>,
    },
}

/// Plans the re-application of `writes` (one shard's lost writes of a
/// namespace), one step per key, in key order.
pub fn plan(writes: &[pb::LostWrite]) -> Vec<Step> {
    let mut by_key: BTreeMap<&[u8], Vec<&pb::LostWrite>> = BTreeMap::new();
    for write in writes {
        by_key.entry(&write.key).or_default().push(write);
    }
    by_key
        .into_iter()
        .map(|(key, mut writes)| {
            writes.sort_by_key(|w| (w.epoch, w.seq));
            let changes = writes.iter().map(|w| (w.epoch, w.seq)).collect();
            let first = writes[0];
            let last = writes[writes.len() - 1];
            match first.previous_version {
                Some(base) => Step::Reapply {
                    key: key.to_vec(),
                    value: last.value.clone(),
                    base,
                    changes,
                },
                None => Step::Unknown {
                    key: key.to_vec(),
                    changes,
                },
            }
        })
        .collect()
}

/// The conditional transaction of a [`Step::Reapply`].
pub fn transaction(namespace: &str, key: &[u8], value: Option<&[u8]>, base: u64) -> pb::TxnRequest {
    let op = match value {
        Some(value) => pb::txn_op::Op::Put(pb::PutRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
            value: value.to_vec(),
        }),
        None => pb::txn_op::Op::Delete(pb::DeleteRequest {
            namespace: namespace.to_string(),
            key: key.to_vec(),
        }),
    };
    pb::TxnRequest {
        namespace: namespace.to_string(),
        compare: vec![pb::Compare {
            key: key.to_vec(),
            op: pb::CompareOp::Equal as i32,
            target: Some(pb::compare::Target::Version(base)),
        }],
        success: vec![pb::TxnOp { op: Some(op) }],
        failure: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(
        epoch: u64,
        seq: u64,
        key: &str,
        value: Option<&str>,
        previous: Option<u64>,
    ) -> pb::LostWrite {
        pb::LostWrite {
            epoch,
            seq,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            version: 100 + seq,
            previous_version: previous,
        }
    }

    #[test]
    fn one_conditional_step_per_key_with_the_version_before_its_first_lost_write() {
        let writes = vec![
            lost(1, 12, "a", Some("a2"), Some(111)),
            lost(1, 11, "a", Some("a1"), Some(9)),
            lost(1, 13, "b", None, Some(7)),
            lost(1, 14, "c", Some("c1"), Some(0)),
            lost(1, 15, "old", Some("x"), None),
        ];
        assert_eq!(
            plan(&writes),
            vec![
                Step::Reapply {
                    key: b"a".to_vec(),
                    value: Some(b"a2".to_vec()),
                    base: 9,
                    changes: vec![(1, 11), (1, 12)],
                },
                Step::Reapply {
                    key: b"b".to_vec(),
                    value: None,
                    base: 7,
                    changes: vec![(1, 13)],
                },
                Step::Reapply {
                    key: b"c".to_vec(),
                    value: Some(b"c1".to_vec()),
                    base: 0,
                    changes: vec![(1, 14)],
                },
                Step::Unknown {
                    key: b"old".to_vec(),
                    changes: vec![(1, 15)],
                },
            ]
        );
        assert!(plan(&[]).is_empty());
    }
}
