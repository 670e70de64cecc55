//! What must hold after every run, whatever the faults were.
//!
//! 1. Every replica of a shard holds exactly the same bytes (so the same
//!    lost-write set), however its entries were batched.
//! 2. No byte of a namespace outside its jurisdictions.
//! 3. Every write that took effect on a primary is either in the final
//!    primary's history or in a lost-write record — never both, never
//!    neither — and every record is such a write: async losses equal the
//!    record exactly.
//! 4. No acknowledged sync write is lost.
//! 5. No two primaries acknowledge writes in overlapping time: every
//!    acknowledged write of an epoch took effect before every acknowledged
//!    write of a later epoch.
//! 6. Copies at the same position hold the same data.
//! 7. Strong reads are linearizable (async: leaving out the writes the
//!    failover lost, which are recorded, and reads that saw them).

use crate::world::{KEYS, NS, OTHER, OUTSIDE, REGIONS, World};
use meridian_check::{Input, Operation, Output, Verdict};
use meridian_raft::Application;
use meridian_shard::command::NamespaceRole;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// Every (keyspace, key, value) a replica stores, in order.
type Dump = Vec<(String, Vec<u8>, Vec<u8>)>;

/// A broken invariant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

/// Counts from one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Client calls completed (answered or timed out).
    pub operations: usize,
    /// Writes that took effect on a primary.
    pub writes_applied: usize,
    /// Writes acknowledged to their client.
    pub writes_acknowledged: usize,
    /// Calls whose outcome the client could not know.
    pub unknown_outcomes: usize,
    /// Strong reads that returned a value.
    pub reads_served: usize,
    /// Failovers carried out.
    pub failovers: usize,
    /// Writes in lost-write records at the end.
    pub lost_writes: usize,
    /// Copies still catching up at the end (not a violation: time ran out).
    pub copies_not_converged: usize,
    /// The linearizability search ran out of steps (not a violation).
    pub linearizability_inconclusive: bool,
}

fn op_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix(&format!("{NS}-v"))?
        .parse()
        .ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl World {
    /// Brings every replica up to date (random batch splits), then checks
    /// every invariant.
    pub fn check(&mut self) -> io::Result<(Vec<Violation>, Stats)> {
        let mut violations = Vec::new();
        let mut stats = Stats::default();
        let v = |violations: &mut Vec<Violation>, invariant, detail: String| {
            violations.push(Violation { invariant, detail })
        };

        // 1 and 2: every replica's bytes.
        #[allow(clippy::needless_range_loop)] // `r` indexes shards and names alike
        for r in 0..REGIONS.len() {
            for replica in 0..3 {
                while self.shards[r].replicas[replica].applied < self.shards[r].log.len() {
                    let pending =
                        self.shards[r].log.len() - self.shards[r].replicas[replica].applied;
                    let count = self.rng.range(1, pending as u64) as usize;
                    let through = self.shards[r].replicas[replica].applied + count;
                    self.shards[r].apply_to(replica, through)?;
                }
            }
            let dumps: Vec<Dump> = self.shards[r]
                .replicas
                .iter()
                .map(|replica| {
                    let mut out = Vec::new();
                    for keyspace in replica.machine.keyspaces() {
                        for guard in keyspace.iter() {
                            let (key, value) = guard.into_inner().map_err(io::Error::other)?;
                            out.push((keyspace.name().to_string(), key.to_vec(), value.to_vec()));
                        }
                    }
                    Ok(out)
                })
                .collect::<io::Result<_>>()?;
            for (i, dump) in dumps.iter().enumerate().skip(1) {
                if *dump != dumps[0] {
                    let lost = |i: usize| {
                        self.shards[r].replicas[i]
                            .machine
                            .lost_writes(NS)
                            .map(|l| l.iter().map(|(e, c)| (*e, c.seq)).collect::<Vec<_>>())
                            .unwrap_or_default()
                    };
                    v(
                        &mut violations,
                        "replicas hold the same bytes",
                        format!(
                            "{} replica {i} differs from replica 0 (lost writes {:?} vs {:?})",
                            REGIONS[r],
                            lost(i),
                            lost(0)
                        ),
                    );
                }
            }
            let forbidden: &[u8] = if r == OUTSIDE { b"ns-v" } else { b"other-v" };
            for (keyspace, key, value) in &dumps[0] {
                if contains(key, forbidden) || contains(value, forbidden) {
                    v(
                        &mut violations,
                        "no byte outside its jurisdictions",
                        format!(
                            "{} holds {:?} bytes in {keyspace}",
                            REGIONS[r],
                            String::from_utf8_lossy(forbidden)
                        ),
                    );
                    break;
                }
            }
            if r == OUTSIDE && self.shards[r].machine().namespace(NS).is_some() {
                v(
                    &mut violations,
                    "no byte outside its jurisdictions",
                    format!("{} holds a copy of {NS}", REGIONS[r]),
                );
            }
            if r != OUTSIDE && self.shards[r].machine().namespace(OTHER).is_some() {
                v(
                    &mut violations,
                    "no byte outside its jurisdictions",
                    format!("{} holds a copy of {OTHER}", REGIONS[r]),
                );
            }
        }

        // 3 and 4: the final history and the lost-write records.
        let primary = self.control.placement.primary;
        // The final history: walk from the final epoch up through the
        // takeovers; a write of epoch `e` at `seq` is in it exactly when the
        // walk reaches `e` and `seq` is at most every takeover position on
        // the way (a write of an epoch off the walk never is: it came after
        // that epoch's own takeover).
        let final_epoch = self.shards[primary]
            .record()
            .filter(|c| c.role == NamespaceRole::Primary)
            .map(|c| c.epoch)
            .or_else(|| self.took_over_at.keys().next_back().copied())
            .unwrap_or(1);
        let took_over_at = self.took_over_at.clone();
        let in_history_of = |target: u64, epoch: u64, seq: u64| {
            let (mut at, mut limit) = (target, u64::MAX);
            while at > epoch {
                let Some(&(source, position)) = took_over_at.get(&at) else {
                    return false;
                };
                limit = limit.min(position);
                at = source;
            }
            at == epoch && seq <= limit
        };
        let in_history = |epoch: u64, seq: u64| in_history_of(final_epoch, epoch, seq);
        let kept: BTreeSet<u64> = self
            .applied
            .iter()
            .filter(|(_, a)| in_history(a.epoch, a.seq))
            .map(|(op, _)| *op)
            .collect();
        let mut recorded: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for r in 0..REGIONS.len() {
            for (_, change) in self.shards[r].machine().lost_writes(NS)? {
                for write in change.writes {
                    if let Some(op) = write.value.as_deref().and_then(op_of) {
                        recorded.entry(op).or_default().push(r);
                    }
                }
            }
        }
        stats.lost_writes = recorded.len();
        for (op, applied) in &self.applied {
            match (kept.contains(op), recorded.contains_key(op)) {
                (true, true) => v(
                    &mut violations,
                    "a lost write is recorded exactly when it is lost",
                    format!(
                        "write {op} (epoch {} seq {} on {}) is in the final history and recorded lost on {:?}",
                        applied.epoch, applied.seq, REGIONS[applied.region], recorded[op]
                    ),
                ),
                (false, false) => v(
                    &mut violations,
                    "a lost write is recorded exactly when it is lost",
                    format!(
                        "write {op} (epoch {} seq {} on {}, acknowledged: {}) is neither in the final history nor recorded lost",
                        applied.epoch,
                        applied.seq,
                        REGIONS[applied.region],
                        self.acked.contains_key(op)
                    ),
                ),
                _ => {}
            }
        }
        for op in recorded.keys() {
            if !self.applied.contains_key(op) {
                v(
                    &mut violations,
                    "a lost write is recorded exactly when it is lost",
                    format!("recorded lost write {op} never took effect on a primary"),
                );
            }
        }
        if self.scenario.sync {
            for op in self.acked.keys() {
                if !kept.contains(op) {
                    v(
                        &mut violations,
                        "no acknowledged sync write lost",
                        format!("write {op} was acknowledged and is not in the final history"),
                    );
                }
            }
        }

        // 5: acknowledged writes of different epochs do not overlap in time.
        let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for op in self.acked.keys() {
            if let Some(a) = self.applied.get(op) {
                let span = spans.entry(a.epoch).or_insert((a.at_ms, a.at_ms));
                span.0 = span.0.min(a.at_ms);
                span.1 = span.1.max(a.at_ms);
            }
        }
        let spans: Vec<(u64, (u64, u64))> = spans.into_iter().collect();
        for pair in spans.windows(2) {
            let ((early, (_, early_last)), (late, (late_first, _))) = (pair[0], pair[1]);
            if early_last >= late_first {
                v(
                    &mut violations,
                    "no two primaries acknowledge writes in overlapping time",
                    format!(
                        "epoch {early} acknowledged a write applied at {early_last} ms; epoch {late} one applied at {late_first} ms"
                    ),
                );
            }
        }

        // 6: copies at the same position agree.
        if let Some(head) = self.shards[primary].record() {
            for &s in &self.control.placement.standbys {
                match self.shards[s].record() {
                    Some(c)
                        if c.role == NamespaceRole::Standby
                            && c.epoch == head.epoch
                            && !c.resync_needed
                            && c.change_seq == head.change_seq =>
                    {
                        let (theirs, _) = self.shards[s].machine().digest(NS)?;
                        let (ours, _) = self.shards[primary].machine().digest(NS)?;
                        if theirs != ours {
                            v(
                                &mut violations,
                                "copies at the same position hold the same data",
                                format!(
                                    "{} and {} are both at change {} of epoch {} with different digests",
                                    REGIONS[s], REGIONS[primary], c.change_seq, c.epoch
                                ),
                            );
                        }
                    }
                    _ => stats.copies_not_converged += 1,
                }
            }
        }

        // 7: linearizability, with a final read of every key.
        let mut history: Vec<Operation> = self.history.clone();
        for key in KEYS {
            let value = self.shards[primary]
                .machine()
                .get(NS, key.as_bytes())?
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
            let at = self.now * 1_000_000 + 1;
            history.push(Operation {
                client: u64::MAX,
                key: key.to_string(),
                input: Input::Get,
                output: Output::Value(value),
                called_ns: at,
                returned_ns: at,
            });
        }
        if !self.scenario.sync {
            // Async failovers may lose writes (recorded), and a write an
            // intermediate epoch lacked comes back when a later failover
            // promotes a copy that has it: such writes, and reads that saw
            // them, are left out.
            let missed: BTreeSet<u64> = self
                .applied
                .iter()
                .filter(|(_, a)| {
                    self.took_over_at
                        .range(a.epoch + 1..)
                        .any(|(&later, _)| !in_history_of(later, a.epoch, a.seq))
                })
                .map(|(op, _)| *op)
                .collect();
            let lost = |value: &str| {
                op_of(value.as_bytes())
                    .is_some_and(|op| recorded.contains_key(&op) || missed.contains(&op))
            };
            history.retain(|o| match (&o.input, &o.output) {
                (Input::Put(value), _) => !lost(value),
                (_, Output::Value(Some(value))) => !lost(value),
                _ => true,
            });
        }
        match meridian_check::check(&history, 5_000_000) {
            Verdict::Linearizable => {}
            Verdict::Violation { key, explanation } => v(
                &mut violations,
                "strong reads are linearizable",
                format!("key {key}: {explanation}"),
            ),
            Verdict::Inconclusive { .. } => stats.linearizability_inconclusive = true,
        }

        stats.operations = self.history.len();
        stats.writes_applied = self.applied.len();
        stats.writes_acknowledged = self.acked.len();
        stats.unknown_outcomes = self
            .history
            .iter()
            .filter(|o| o.output == Output::Unknown)
            .count();
        stats.reads_served = self
            .history
            .iter()
            .filter(|o| matches!(o.output, Output::Value(_)))
            .count();
        stats.failovers = self.moves.len();
        Ok((violations, stats))
    }
}
