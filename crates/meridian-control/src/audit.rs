//! The audit log's hash chain and retention (pure, table-tested).
//!
//! Every record carries the SHA-256 of the record before it and its own hash
//! over its fields and that link, so editing, removing or reordering a
//! stored record breaks the chain at that point ([`verify`]). Retention
//! drops the oldest records (beyond [`MAX_RECORDS`], or older than
//! [`MAX_AGE_MS`] at the newest record's time) and keeps the last dropped
//! record's hash as the chain's *anchor*, so what remains still verifies.
//! (The chain proves the log was not edited after the fact by someone who
//! cannot rewrite every later record too; an anchor kept outside the
//! cluster would be needed against that.)

use crate::model::AuditRecord;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The link of the first record ever written.
pub const GENESIS: [u8; 32] = [0; 32];
/// Records kept at most.
pub const MAX_RECORDS: usize = 100_000;
/// Records older than this (at the newest record's time) are dropped.
pub const MAX_AGE_MS: u64 = 90 * 24 * 3600 * 1000;

/// The hash of a record with these fields, linked to `prev_hash`.
pub fn record_hash(
    sequence: u64,
    at_unix_ms: u64,
    actor: &str,
    action: &str,
    outcome: &str,
    prev_hash: &[u8; 32],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"meridian-audit-v1\0");
    hasher.update(sequence.to_be_bytes());
    hasher.update(at_unix_ms.to_be_bytes());
    for text in [actor, action, outcome] {
        // Length-prefixed, so fields cannot shift into one another.
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(prev_hash);
    hasher.finalize().into()
}

/// A record with its link and hash filled in.
pub fn sealed(
    sequence: u64,
    at_unix_ms: u64,
    actor: String,
    action: String,
    outcome: String,
    prev_hash: [u8; 32],
) -> AuditRecord {
    let hash = record_hash(sequence, at_unix_ms, &actor, &action, &outcome, &prev_hash);
    AuditRecord {
        sequence,
        at_unix_ms,
        actor,
        action,
        outcome,
        prev_hash,
        hash,
    }
}

/// Where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// The record's fields do not give its hash: it was edited.
    #[error("audit record {sequence} was altered: its contents do not match its hash")]
    Altered {
        /// The record.
        sequence: u64,
    },
    /// The record does not link to the one before it (or to the anchor).
    #[error(
        "audit record {sequence} does not follow the record before it: one was removed, inserted or replaced"
    )]
    Unlinked {
        /// The record.
        sequence: u64,
    },
    /// Sequence numbers jump.
    #[error("audit records {after} to {next} are not consecutive: records are missing")]
    Gap {
        /// The last good record.
        after: u64,
        /// The next one present.
        next: u64,
    },
}

/// Checks `records` (in order) against the chain starting at `anchor`;
/// returns how many verified.
pub fn verify(anchor: &[u8; 32], records: &[AuditRecord]) -> Result<usize, ChainBreak> {
    let mut prev = *anchor;
    let mut last: Option<u64> = None;
    for record in records {
        if let Some(last) = last
            && record.sequence != last + 1
        {
            return Err(ChainBreak::Gap {
                after: last,
                next: record.sequence,
            });
        }
        let hash = record_hash(
            record.sequence,
            record.at_unix_ms,
            &record.actor,
            &record.action,
            &record.outcome,
            &record.prev_hash,
        );
        if hash != record.hash {
            return Err(ChainBreak::Altered {
                sequence: record.sequence,
            });
        }
        if record.prev_hash != prev {
            return Err(ChainBreak::Unlinked {
                sequence: record.sequence,
            });
        }
        prev = record.hash;
        last = Some(record.sequence);
    }
    Ok(records.len())
}

/// The records retention drops once a record stamped `now_unix_ms` is in:
/// the oldest ones beyond [`MAX_RECORDS`] and those older than
/// [`MAX_AGE_MS`], in order.
pub fn expired(records: &BTreeMap<u64, AuditRecord>, now_unix_ms: u64) -> Vec<u64> {
    let excess = records.len().saturating_sub(MAX_RECORDS);
    records
        .values()
        .enumerate()
        .take_while(|(i, r)| *i < excess || now_unix_ms.saturating_sub(r.at_unix_ms) > MAX_AGE_MS)
        .map(|(_, r)| r.sequence)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|i| {
                let r = sealed(
                    i,
                    1_000 + i,
                    "alice".into(),
                    format!("act {i}"),
                    "ok".into(),
                    prev,
                );
                prev = r.hash;
                r
            })
            .collect()
    }

    #[test]
    fn verify_table() {
        let good = chain(4);
        let mut edited = good.clone();
        edited[2].action = "something else".into();
        let mut resealed = good.clone();
        // Edited and re-hashed, but the next record still links to the old hash.
        resealed[1] = sealed(
            2,
            1_002,
            "mallory".into(),
            "act 2".into(),
            "ok".into(),
            good[0].hash,
        );
        let mut removed = good.clone();
        removed.remove(1);
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        /// (case, anchor, records, verdict)
        type Case = (
            &'static str,
            [u8; 32],
            Vec<AuditRecord>,
            Result<usize, ChainBreak>,
        );
        let cases: Vec<Case> = vec![
            ("an intact chain", GENESIS, good.clone(), Ok(4)),
            ("an empty log", GENESIS, vec![], Ok(0)),
            (
                "an edited field",
                GENESIS,
                edited,
                Err(ChainBreak::Altered { sequence: 3 }),
            ),
            (
                "an edited record re-hashed",
                GENESIS,
                resealed,
                Err(ChainBreak::Unlinked { sequence: 3 }),
            ),
            (
                "a removed record",
                GENESIS,
                removed,
                Err(ChainBreak::Gap { after: 1, next: 3 }),
            ),
            (
                "reordered records",
                GENESIS,
                swapped,
                Err(ChainBreak::Gap { after: 1, next: 3 }),
            ),
            (
                "a suffix from its anchor",
                good[1].hash,
                good[2..].to_vec(),
                Ok(2),
            ),
            (
                "a suffix from the wrong anchor",
                GENESIS,
                good[2..].to_vec(),
                Err(ChainBreak::Unlinked { sequence: 3 }),
            ),
        ];
        for (case, anchor, records, verdict) in cases {
            assert_eq!(verify(&anchor, &records), verdict, "{case}");
        }
    }

    #[test]
    fn retention_drops_the_oldest_beyond_the_count_or_the_age() {
        let records: BTreeMap<u64, AuditRecord> =
            chain(5).into_iter().map(|r| (r.sequence, r)).collect();
        assert!(expired(&records, 2_000).is_empty());
        // Records 1 and 2 (at 1,001 and 1,002 ms) are older than the limit
        // at 1,002 ms + MAX_AGE_MS + 1.
        assert_eq!(expired(&records, 1_002 + MAX_AGE_MS + 1), [1, 2]);
        let many: BTreeMap<u64, AuditRecord> = (1..=(MAX_RECORDS as u64 + 2))
            .map(|i| {
                (
                    i,
                    sealed(i, 5, String::new(), String::new(), String::new(), GENESIS),
                )
            })
            .collect();
        assert_eq!(expired(&many, 5), [1, 2]);
    }
}
