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
///
/// Records written before targets were recorded have an empty `target` and
/// hash as they always did (`meridian-audit-v1`); records with a target hash
/// it too, under `meridian-audit-v2`. Blanking or adding a target therefore
/// changes which form applies, and the stored hash no longer matches.
pub fn record_hash(fields: &AuditFields<'_>, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let texts: &[&str] = if fields.target.is_empty() {
        hasher.update(b"meridian-audit-v1\0");
        &[fields.actor, fields.action, fields.outcome]
    } else {
        hasher.update(b"meridian-audit-v2\0");
        &[fields.actor, fields.target, fields.action, fields.outcome]
    };
    hasher.update(fields.sequence.to_be_bytes());
    hasher.update(fields.at_unix_ms.to_be_bytes());
    for text in texts {
        // Length-prefixed, so fields cannot shift into one another.
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(prev_hash);
    hasher.finalize().into()
}

/// The fields of an audit record that its hash covers (with its link).
#[derive(Debug, Clone, Copy)]
pub struct AuditFields<'a> {
    /// Sequence number.
    pub sequence: u64,
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// Who.
    pub actor: &'a str,
    /// What it was about (`namespace orders`, `region eu-west`, ...).
    pub target: &'a str,
    /// What was done.
    pub action: &'a str,
    /// How it ended.
    pub outcome: &'a str,
}

impl AuditRecord {
    /// The fields its hash covers.
    pub fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            sequence: self.sequence,
            at_unix_ms: self.at_unix_ms,
            actor: &self.actor,
            target: &self.target,
            action: &self.action,
            outcome: &self.outcome,
        }
    }
}

/// A record with its link and hash filled in.
pub fn sealed(fields: AuditFields<'_>, prev_hash: [u8; 32]) -> AuditRecord {
    let hash = record_hash(&fields, &prev_hash);
    AuditRecord {
        sequence: fields.sequence,
        at_unix_ms: fields.at_unix_ms,
        actor: fields.actor.to_string(),
        target: fields.target.to_string(),
        action: fields.action.to_string(),
        outcome: fields.outcome.to_string(),
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
        let hash = record_hash(&record.fields(), &record.prev_hash);
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
                let action = format!("act {i}");
                let r = sealed(
                    AuditFields {
                        sequence: i,
                        at_unix_ms: 1_000 + i,
                        actor: "alice",
                        target: if i % 2 == 0 { "namespace orders" } else { "" },
                        action: &action,
                        outcome: "ok",
                    },
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
            AuditFields {
                actor: "mallory",
                ..good[1].fields()
            },
            good[0].hash,
        );
        let mut retargeted = good.clone();
        retargeted[1].target = "namespace payments".into();
        let mut untargeted = good.clone();
        untargeted[1].target.clear();
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
                "a changed target",
                GENESIS,
                retargeted,
                Err(ChainBreak::Altered { sequence: 2 }),
            ),
            (
                "a blanked target (posing as a record from before targets)",
                GENESIS,
                untargeted,
                Err(ChainBreak::Altered { sequence: 2 }),
            ),
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
                    sealed(
                        AuditFields {
                            sequence: i,
                            at_unix_ms: 5,
                            actor: "",
                            target: "",
                            action: "",
                            outcome: "",
                        },
                        GENESIS,
                    ),
                )
            })
            .collect();
        assert_eq!(expired(&many, 5), [1, 2]);
    }
}
