//! When a deleted register of an active-active namespace may be dropped
//! (pure; the rule is table-tested and a model of three copies checks that
//! collecting never changes what a key reads or whether copies converge).
//!
//! A delete is kept as a *tombstone* — the key's state with no value —
//! because a write of the key that the delete has not seen (an older
//! value, made concurrently) may still be on its way to some copy, and only
//! the tombstone makes the delete win over it there. Keeping every
//! tombstone forever would let a namespace that writes and deletes keys
//! grow without end, so a copy drops one once nothing it has not seen can
//! reach any copy any more.
//!
//! Copies say where they stand in their replication answers: a *frontier*
//! — how far each other region's own writes have been merged, and how far
//! the copy's own log reaches. Collection works in rounds against a
//! *checkpoint*, the frontiers of every copy at some earlier moment:
//!
//! 1. A register's version vector says, per region, up to which write of
//!    that region's change log the state has seen (writes are counted by
//!    log position). If a copy's checkpoint frontier covers a tombstone's
//!    vector, that copy held the delete then, so every write it made after
//!    its checkpoint log position was made after seeing the delete.
//! 2. Once every copy has merged every other copy's log through that
//!    copy's checkpoint position (a later round shows it), every write made
//!    before seeing the delete has reached every copy and been merged into
//!    the tombstone. A tombstone whose vector is at most the *stable*
//!    frontier (the least of the checkpoint frontiers) may then go: all
//!    that can still arrive was made after seeing it, merges the same into
//!    it as into nothing, and a full copy of any copy already holds it.
//!    The round's frontiers become the next checkpoint.
//! 3. **The clock is past it.** A write of the key made here later is
//!    stamped after this copy's clock; a delete stamped ahead of the clock
//!    (a flagged, future stamp) could otherwise beat that write on copies
//!    that still hold it.
//!
//! A write of a key whose tombstone was dropped starts from the *floor* —
//! the join of the version vectors of every tombstone dropped here — so it
//! counts as made after those deletes (see
//! [`crate::crdt::KeyState::apply_logged`]); counted by log position, that
//! claim is exact: this copy has merged every write the floor covers.

use crate::hlc::Timestamp;
use std::collections::BTreeMap;

/// Per region, how far a copy has merged that region's own writes, and
/// under its own region, how far its own log reaches (log positions).
pub type Frontier = BTreeMap<String, u64>;

/// Every copy's frontier at one moment, by region.
pub type Frontiers = BTreeMap<String, Frontier>;

/// A copy's frontier: the positions it has merged, and its own log's.
pub fn frontier(merged: &BTreeMap<String, u64>, own_region: &str, own_seq: u64) -> Frontier {
    let mut out = merged.clone();
    out.insert(own_region.to_string(), own_seq);
    out
}

/// What a round of collection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// A copy has not said where it stands: nothing yet.
    Unheard {
        /// The copy's region.
        copy: String,
    },
    /// No checkpoint (or one naming other copies): this round's frontiers
    /// become the checkpoint.
    Start,
    /// A copy has not merged another's writes through the checkpoint yet.
    Behind {
        /// The copy's region.
        copy: String,
        /// Whose writes it lacks.
        region: String,
        /// How far it has merged them.
        merged: u64,
        /// The checkpoint's position.
        needed: u64,
    },
    /// Every copy has merged every other's writes through the checkpoint:
    /// tombstones at most `stable` may go, and this round's frontiers
    /// become the next checkpoint.
    Stable {
        /// The least of the checkpoint frontiers.
        stable: Frontier,
    },
}

/// Decides a round from the `checkpoint` and what every copy of the
/// namespace (this one included) says `now` (`None`: not heard yet).
///
/// `now` must name every region of the namespace: a copy left out could
/// still hold a write no other copy has seen.
pub fn round(checkpoint: Option<&Frontiers>, now: &BTreeMap<String, Option<Frontier>>) -> Round {
    for (copy, said) in now {
        if said.is_none() {
            return Round::Unheard { copy: copy.clone() };
        }
    }
    let Some(checkpoint) = checkpoint.filter(|c| c.keys().eq(now.keys())) else {
        return Round::Start;
    };
    for (copy, said) in now {
        let said = said.as_ref().map_or_else(Frontier::new, Clone::clone);
        for (region, then) in checkpoint {
            if region == copy {
                continue;
            }
            let needed = then.get(region).copied().unwrap_or(0);
            let merged = said.get(region).copied().unwrap_or(0);
            if merged < needed {
                return Round::Behind {
                    copy: copy.clone(),
                    region: region.clone(),
                    merged,
                    needed,
                };
            }
        }
    }
    let mut stable: Option<Frontier> = None;
    for then in checkpoint.values() {
        stable = Some(match stable {
            None => then.clone(),
            Some(least) => {
                let regions: std::collections::BTreeSet<&String> =
                    least.keys().chain(then.keys()).collect();
                regions
                    .into_iter()
                    .map(|r| {
                        let a = least.get(r).copied().unwrap_or(0);
                        let b = then.get(r).copied().unwrap_or(0);
                        (r.clone(), a.min(b))
                    })
                    .collect()
            }
        });
    }
    Round::Stable {
        stable: stable.unwrap_or_default(),
    }
}

/// Why a tombstone is kept in a stable round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// It holds a write past the stable frontier.
    Unstable {
        /// Whose write.
        region: String,
        /// The write's log position.
        needed: u64,
        /// The stable frontier's.
        stable: u64,
    },
    /// The delete is stamped ahead of this copy's clock.
    ClockBehind {
        /// The tombstone's newest stamp.
        stamp: Timestamp,
        /// This copy's clock.
        clock: Timestamp,
    },
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::Unstable {
                region,
                needed,
                stable,
            } => write!(
                f,
                "it holds {region}'s write {needed}, past the stable frontier ({stable})"
            ),
            Keep::ClockBehind { stamp, clock } => write!(
                f,
                "the delete is stamped {stamp}, ahead of this copy's clock {clock}"
            ),
        }
    }
}

/// Whether a tombstone whose version vector is `seen` and newest stamp
/// `stamp` may go in a [`Round::Stable`] round with frontier `stable`, on
/// a copy whose clock reads `clock`.
pub fn collectible(
    seen: &BTreeMap<String, u64>,
    stamp: Timestamp,
    clock: Timestamp,
    stable: &Frontier,
) -> Result<(), Keep> {
    for (region, needed) in seen {
        let at = stable.get(region).copied().unwrap_or(0);
        if *needed > at {
            return Err(Keep::Unstable {
                region: region.clone(),
                needed: *needed,
                stable: at,
            });
        }
    }
    if stamp > clock {
        return Err(Keep::ClockBehind { stamp, clock });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Conflict, KeyState, Op, Origin};
    use crate::hlc::Clock;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn map(pairs: &[(&str, u64)]) -> Frontier {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    }

    fn ts(wall_ms: u64) -> Timestamp {
        Timestamp {
            wall_ms,
            logical: 0,
        }
    }

    #[test]
    fn a_round() {
        let checkpoint: Frontiers = [
            ("eu", map(&[("eu", 7), ("us", 3)])),
            ("us", map(&[("eu", 5), ("us", 4)])),
        ]
        .into_iter()
        .map(|(r, f)| (r.to_string(), f))
        .collect();
        let now = |eu: Option<Frontier>, us: Option<Frontier>| {
            BTreeMap::from([("eu".to_string(), eu), ("us".to_string(), us)])
        };
        type Heard = BTreeMap<String, Option<Frontier>>;
        let rows: Vec<(&str, Option<&Frontiers>, Heard, Round)> = vec![
            (
                "a copy not heard from",
                Some(&checkpoint),
                now(Some(map(&[("eu", 9), ("us", 4)])), None),
                Round::Unheard { copy: "us".into() },
            ),
            (
                "no checkpoint yet",
                None,
                now(Some(map(&[("eu", 9)])), Some(map(&[("us", 4)]))),
                Round::Start,
            ),
            (
                "a checkpoint of other copies",
                Some(&checkpoint),
                BTreeMap::from([("eu".to_string(), Some(map(&[("eu", 9)])))]),
                Round::Start,
            ),
            (
                "eu has not merged us's writes through us's checkpoint position",
                Some(&checkpoint),
                now(
                    Some(map(&[("eu", 9), ("us", 3)])),
                    Some(map(&[("eu", 7), ("us", 6)])),
                ),
                Round::Behind {
                    copy: "eu".into(),
                    region: "us".into(),
                    merged: 3,
                    needed: 4,
                },
            ),
            (
                "us has not merged eu's writes through eu's checkpoint position",
                Some(&checkpoint),
                now(
                    Some(map(&[("eu", 9), ("us", 4)])),
                    Some(map(&[("eu", 6), ("us", 6)])),
                ),
                Round::Behind {
                    copy: "us".into(),
                    region: "eu".into(),
                    merged: 6,
                    needed: 7,
                },
            ),
            (
                "everyone through the checkpoint: the least of it is stable",
                Some(&checkpoint),
                now(
                    Some(map(&[("eu", 9), ("us", 4)])),
                    Some(map(&[("eu", 7), ("us", 6)])),
                ),
                Round::Stable {
                    stable: map(&[("eu", 5), ("us", 3)]),
                },
            ),
        ];
        for (name, checkpoint, now, expected) in rows {
            assert_eq!(round(checkpoint, &now), expected, "{name}");
        }
    }

    #[test]
    fn a_tombstone_in_a_stable_round() {
        let stable = map(&[("eu", 5), ("us", 3)]);
        let rows: Vec<(&str, Frontier, u64, Result<(), Keep>)> = vec![
            (
                "within the stable frontier",
                map(&[("eu", 5), ("us", 1)]),
                10,
                Ok(()),
            ),
            (
                "a write past it",
                map(&[("eu", 6)]),
                10,
                Err(Keep::Unstable {
                    region: "eu".into(),
                    needed: 6,
                    stable: 5,
                }),
            ),
            (
                "a region the frontier does not name",
                map(&[("ap", 1)]),
                10,
                Err(Keep::Unstable {
                    region: "ap".into(),
                    needed: 1,
                    stable: 0,
                }),
            ),
            (
                "stamped ahead of the clock",
                map(&[("eu", 2)]),
                4,
                Err(Keep::ClockBehind {
                    stamp: ts(5),
                    clock: ts(4),
                }),
            ),
        ];
        for (name, seen, clock, expected) in rows {
            assert_eq!(
                collectible(&seen, ts(5), ts(clock), &stable),
                expected,
                "{name}"
            );
        }
    }

    // A model of three copies of a namespace of register keys, run by the
    // production functions (apply_logged, merge, the clock, the rule):
    // each copy logs its own writes, merges other regions' logs in order
    // (any interleaving, any pace), may take a full copy, hears peers'
    // frontiers late, and collects tombstones whenever it likes.

    const REGIONS: [&str; 3] = ["ap", "eu", "us"];
    const KEYS: usize = 3;

    #[derive(Debug, Clone)]
    enum Step {
        Write {
            copy: usize,
            key: usize,
            value: Option<u8>,
            advance_ms: u64,
        },
        Deliver {
            from: usize,
            to: usize,
            entries: usize,
        },
        FullCopy {
            from: usize,
            to: usize,
        },
        Hear {
            from: usize,
            to: usize,
        },
        Collect {
            copy: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3usize, 0..KEYS, prop::option::weighted(0.6, 0u8..3), 0u64..3).prop_map(
                |(copy, key, value, advance_ms)| Step::Write { copy, key, value, advance_ms }
            ),
            4 => (0..3usize, 0..3usize, 1..4usize)
                .prop_map(|(from, to, entries)| Step::Deliver { from, to, entries }),
            1 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::FullCopy { from, to }),
            3 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Hear { from, to }),
            3 => (0..3usize).prop_map(|copy| Step::Collect { copy }),
        ]
    }

    struct Copy {
        region: &'static str,
        keys: Vec<Option<KeyState>>,
        /// Its own writes: (key, state after the write, the writes that
        /// state holds); seq = place + 1.
        log: Vec<(usize, KeyState, BTreeSet<Origin>)>,
        merged: BTreeMap<String, u64>,
        clock: Clock,
        physical: u64,
        floor: crate::crdt::VersionVector,
        /// The keys holding tombstones.
        index: BTreeSet<usize>,
        heard: BTreeMap<String, Option<Frontier>>,
        checkpoint: Option<Frontiers>,
        /// Per key: every register write this copy's state has seen (the
        /// truth the version vectors approximate; kept across collection).
        history: Vec<BTreeSet<Origin>>,
    }

    #[derive(Default)]
    struct Truth {
        /// Every write accepted, with the writes its copy had seen.
        writes: Vec<(usize, crate::crdt::Version, BTreeSet<Origin>)>,
        /// Every register conflict recorded: (key, winner, loser).
        conflicts: Vec<(usize, Origin, Origin)>,
        collected: usize,
    }

    impl Copy {
        fn new(index: usize) -> Self {
            let region = REGIONS[index];
            Copy {
                region,
                keys: vec![None; KEYS],
                log: Vec::new(),
                merged: BTreeMap::new(),
                clock: Clock::new(Timestamp::default(), 250),
                // us's clock runs 600 ms ahead, past the 250 ms bound: its
                // stamps are flagged elsewhere and do not move other clocks.
                physical: if region == "us" {
                    1_600
                } else {
                    1_000 + index as u64
                },
                floor: crate::crdt::VersionVector::default(),
                index: BTreeSet::new(),
                heard: REGIONS
                    .iter()
                    .filter(|r| **r != region)
                    .map(|r| (r.to_string(), None))
                    .collect(),
                history: vec![BTreeSet::new(); KEYS],
                checkpoint: None,
            }
        }

        fn frontier(&self) -> Frontier {
            frontier(&self.merged, self.region, self.log.len() as u64)
        }

        /// What the shard does on storing a key's state.
        fn store(&mut self, key: usize, state: KeyState) {
            if state.is_tombstone() {
                self.index.insert(key);
            } else {
                self.index.remove(&key);
            }
            self.keys[key] = Some(state);
        }

        fn write(&mut self, key: usize, value: Option<u8>, advance_ms: u64, truth: &mut Truth) {
            self.physical += advance_ms;
            let mut state = self.keys[key].clone().unwrap_or_default();
            let stamp = self.clock.stamp_after(self.physical, state.newest_stamp());
            let seq = self.log.len() as u64 + 1;
            state
                .apply_logged(
                    &Op::Put(value.map(|v| vec![v])),
                    self.region,
                    stamp,
                    seq,
                    &self.floor,
                )
                .expect("a register write");
            let version = state
                .register
                .as_ref()
                .expect("written")
                .state
                .current
                .clone();
            truth
                .writes
                .push((key, version.clone(), self.history[key].clone()));
            self.history[key].insert(version.origin);
            self.log
                .push((key, state.clone(), self.history[key].clone()));
            self.store(key, state);
        }

        fn merge(
            &mut self,
            key: usize,
            incoming: &KeyState,
            history: &BTreeSet<Origin>,
            truth: &mut Truth,
        ) {
            let local = self.keys[key].clone().unwrap_or_default();
            let (merged, conflicts) = local.merge(incoming);
            if let Some(stamp) = incoming.newest_stamp() {
                let _ = self.clock.observe(stamp, self.physical);
            }
            for conflict in conflicts {
                if let Conflict::Register { winner, loser } = conflict {
                    truth.conflicts.push((key, winner.origin, loser.origin));
                }
            }
            self.history[key].extend(history.iter().cloned());
            if merged != local {
                self.store(key, merged);
            }
        }

        fn collect(&mut self, truth: &mut Truth) {
            let mut now = self.heard.clone();
            now.insert(self.region.to_string(), Some(self.frontier()));
            let stable = match round(self.checkpoint.as_ref(), &now) {
                Round::Unheard { .. } | Round::Behind { .. } => return,
                Round::Start => None,
                Round::Stable { stable } => Some(stable),
            };
            self.checkpoint = Some(
                now.into_iter()
                    .map(|(r, f)| (r, f.unwrap_or_default()))
                    .collect(),
            );
            let Some(stable) = stable else { return };
            // A round is a local event: the clock reads the time.
            self.clock.tick(self.physical);
            let ready: Vec<(usize, crate::crdt::VersionVector)> = self
                .index
                .iter()
                .filter_map(|key| {
                    let state = self.keys[*key].as_ref().expect("indexed keys are held");
                    let stamp = state.newest_stamp().expect("a tombstone is stamped");
                    let seen = &state.register.as_ref().expect("a register").state.seen;
                    collectible(&seen.0, stamp, self.clock.last(), &stable)
                        .is_ok()
                        .then(|| (*key, seen.clone()))
                })
                .collect();
            for (key, seen) in ready {
                self.index.remove(&key);
                self.floor.join(&seen);
                self.keys[key] = None;
                truth.collected += 1;
            }
        }
    }

    /// `to` hears `from`'s frontier as it is now.
    fn hear(copies: &mut [Copy], from: usize, to: usize) {
        if from != to {
            let said = copies[from].frontier();
            copies[to]
                .heard
                .insert(REGIONS[from].to_string(), Some(said));
        }
    }

    fn run(steps: &[Step]) -> (Vec<Copy>, Truth) {
        let mut copies: Vec<Copy> = (0..3).map(Copy::new).collect();
        let mut truth = Truth::default();
        let deliver =
            |copies: &mut Vec<Copy>, truth: &mut Truth, from: usize, to: usize, n: usize| {
                if from == to {
                    return;
                }
                let origin = REGIONS[from];
                for _ in 0..n {
                    let position = copies[to].merged.get(origin).copied().unwrap_or(0);
                    let Some((key, state, history)) =
                        copies[from].log.get(position as usize).cloned()
                    else {
                        return;
                    };
                    copies[to].merge(key, &state, &history, truth);
                    copies[to].merged.insert(origin.to_string(), position + 1);
                }
            };
        for step in steps {
            match step {
                Step::Write {
                    copy,
                    key,
                    value,
                    advance_ms,
                } => copies[*copy].write(*key, *value, *advance_ms, &mut truth),
                Step::Deliver { from, to, entries } => {
                    deliver(&mut copies, &mut truth, *from, *to, *entries)
                }
                Step::FullCopy { from, to } => {
                    if from == to {
                        continue;
                    }
                    let states: Vec<(usize, KeyState)> = copies[*from]
                        .keys
                        .iter()
                        .enumerate()
                        .filter_map(|(k, s)| s.clone().map(|s| (k, s)))
                        .collect();
                    for (key, state) in states {
                        let history = copies[*from].history[key].clone();
                        copies[*to].merge(key, &state, &history, &mut truth);
                    }
                    let head = copies[*from].log.len() as u64;
                    let position = copies[*to]
                        .merged
                        .entry(REGIONS[*from].to_string())
                        .or_default();
                    *position = (*position).max(head);
                }
                Step::Hear { from, to } => hear(&mut copies, *from, *to),
                Step::Collect { copy } => copies[*copy].collect(&mut truth),
            }
        }
        // Links heal: every log reaches every copy, every copy hears every
        // other, and every copy collects; three times round (a checkpoint,
        // then a stable round).
        for _ in 0..3 {
            // Time passes, past any skew.
            for copy in &mut copies {
                copy.physical += 1_000;
            }
            for from in 0..3 {
                for to in 0..3 {
                    deliver(&mut copies, &mut truth, from, to, usize::MAX);
                }
            }
            for from in 0..3 {
                for to in 0..3 {
                    hear(&mut copies, from, to);
                }
            }
            for copy in &mut copies {
                copy.collect(&mut truth);
            }
        }
        (copies, truth)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Collecting tombstones whenever the rule allows: every copy ends
        /// equal, every tombstone is gone, the last writer wins, no write
        /// is overwritten unrecorded, and no conflict is recorded between
        /// writes where one was made after seeing the other.
        #[test]
        fn collecting_never_changes_what_keys_read(steps in prop::collection::vec(step(), 1..120)) {
            let (copies, truth) = run(&steps);
            for key in 0..KEYS {
                for copy in &copies[1..] {
                    prop_assert_eq!(&copy.keys[key], &copies[0].keys[key], "key {} differs between copies", key);
                }
                let writes: Vec<_> = truth.writes.iter().filter(|(k, _, _)| *k == key).collect();
                let Some(last) = writes.iter().map(|(_, v, _)| v).max_by(|a, b| {
                    (&a.origin, &a.value).cmp(&(&b.origin, &b.value))
                }) else {
                    prop_assert!(copies[0].keys[key].is_none());
                    continue;
                };
                match &copies[0].keys[key] {
                    None => prop_assert!(last.value.is_none(), "key {} collected, its last write {:?} is not a delete", key, last),
                    Some(state) => {
                        prop_assert!(!state.is_tombstone(), "key {}: a tombstone left after everyone merged everything", key);
                        prop_assert_eq!(&state.register.as_ref().unwrap().state.current, last);
                    }
                }
                for (_, write, _) in &writes {
                    if write == last {
                        continue;
                    }
                    let seen_later = writes.iter().any(|(_, _, seen)| seen.contains(&write.origin));
                    let recorded = truth.conflicts.iter().any(|(k, _, loser)| *k == key && *loser == write.origin);
                    prop_assert!(seen_later || recorded, "key {}: {:?} overwritten unrecorded", key, write);
                }
                for (k, winner, loser) in &truth.conflicts {
                    if *k != key {
                        continue;
                    }
                    let made_after = writes
                        .iter()
                        .find(|(_, v, _)| v.origin == *winner)
                        .is_some_and(|(_, _, seen)| seen.contains(loser));
                    prop_assert!(!made_after, "key {}: conflict recorded, but {:?} was made after seeing {:?}", key, winner, loser);
                }
            }
        }
    }

    #[test]
    fn a_delete_stamped_ahead_is_kept_until_the_clock_passes_it() {
        // us (600 ms ahead, flagged elsewhere) deletes; ap hears everyone
        // through two rounds, then writes the key again. Had ap dropped the
        // tombstone, its new write would be stamped before the delete and
        // lose to it on the copies still holding it.
        let mut steps = vec![
            Step::Write {
                copy: 2,
                key: 0,
                value: None,
                advance_ms: 0,
            },
            Step::Deliver {
                from: 2,
                to: 0,
                entries: 1,
            },
            Step::Deliver {
                from: 2,
                to: 1,
                entries: 1,
            },
        ];
        for _ in 0..2 {
            for (from, to) in [(1, 0), (2, 0), (0, 1), (0, 2), (1, 2), (2, 1)] {
                steps.push(Step::Hear { from, to });
            }
            steps.push(Step::Collect { copy: 0 });
        }
        steps.push(Step::Write {
            copy: 0,
            key: 0,
            value: Some(1),
            advance_ms: 1,
        });
        let (copies, _) = run(&steps);
        assert!(copies.iter().all(|c| c.keys[0] == copies[0].keys[0]));
        let state = copies[0].keys[0].as_ref().expect("the new write is kept");
        assert_eq!(state.value(), Some(&[1u8][..]));
    }

    #[test]
    fn the_model_collects() {
        // Write and delete in one region, let everything reach everyone:
        // the tombstone goes everywhere.
        let steps = vec![
            Step::Write {
                copy: 0,
                key: 0,
                value: Some(1),
                advance_ms: 1,
            },
            Step::Write {
                copy: 0,
                key: 0,
                value: None,
                advance_ms: 1,
            },
        ];
        let (copies, truth) = run(&steps);
        assert!(copies.iter().all(|c| c.keys[0].is_none()));
        assert_eq!(truth.collected, 3);
    }
}
