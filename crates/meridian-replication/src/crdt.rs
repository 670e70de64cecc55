//! The value types of active-active namespaces and how two copies of a key
//! merge (pure; the merge laws are property-tested).
//!
//! Every key holds a [`KeyState`]. Each region writes its own copy and ships
//! the key's whole state after a write; a receiving region merges it into
//! its copy. The merge is a join — commutative, associative and idempotent —
//! so copies that received the same writes hold the same state whatever the
//! order or duplication of deliveries.
//!
//! - **Register** (plain `Put`/`Delete`, the default): last writer wins by
//!   (hybrid-logical stamp, origin region). A version vector per key says,
//!   per region, up to which write of that region the value has seen (a
//!   write is numbered by its place in its region's change log), so a merge
//!   tells a write that was overwritten by a later one made after seeing it
//!   (no conflict) from one that lost to a *concurrent* write: the latter is
//!   returned as a [`Conflict`], to be recorded. A delete is kept as a
//!   tombstone until every peer holds it ([`crate::tombstone`]).
//! - **Counter** (`Increment` by a signed delta): per region, the total of
//!   increments and of decrements made there; a merge keeps each region's
//!   larger totals, so no increment is ever lost or counted twice.
//! - **Set** (`SetAdd`/`SetRemove`): an add-wins observed-remove set. Every
//!   add is a unique *dot* (region, that region's count); a remove drops the
//!   dots it has seen, and the set's version vector remembers them, so a
//!   concurrent add (a dot the remover had not seen) survives.
//!
//! A key's type is fixed by its first write. Two regions may first-write a
//! key concurrently with different types; then the state keeps both and
//! the type first written (by stamp, then region) is the key's type
//! everywhere — the other is reported as a conflict once.

use crate::hlc::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The type of an active-active key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// Last-writer-wins register (`Put`/`Delete`).
    Register,
    /// PN-counter (`Increment`).
    Counter,
    /// Add-wins observed-remove set (`SetAdd`/`SetRemove`).
    Set,
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::Register => "register",
            KeyType::Counter => "counter",
            KeyType::Set => "set",
        })
    }
}

/// Why an operation on a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The key already holds another type.
    #[error(
        "the key is a {actual}; a {wanted} operation does not apply to it (its type is fixed by its first write)"
    )]
    WrongType {
        /// The key's type.
        actual: KeyType,
        /// The type the operation is for.
        wanted: KeyType,
    },
    /// A counter's total would leave the range it is kept in.
    #[error("the counter would overflow: {0}")]
    Overflow(String),
}

/// Per region, how many writes made there a state has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<String, u64>);

impl VersionVector {
    /// Writes of `region` seen.
    pub fn get(&self, region: &str) -> u64 {
        self.0.get(region).copied().unwrap_or(0)
    }

    /// Counts one more write of `region`; returns its number.
    fn bump(&mut self, region: &str) -> Result<u64, OpError> {
        let next = self
            .get(region)
            .checked_add(1)
            .ok_or_else(|| OpError::Overflow(format!("write count of region {region}")))?;
        self.0.insert(region.to_string(), next);
        Ok(next)
    }

    /// Records a register write of `region` that its log numbers `seq`:
    /// the write's count is `seq`, or one past the last count of `region`
    /// when that is larger (a state written by an older build, which
    /// counted a key's writes one by one). Returns the count.
    ///
    /// Counting by log position keeps a region's counts growing across the
    /// life of a key: a register deleted, collected and written again never
    /// reuses a count that a copy still holding the delete has seen.
    fn advance(&mut self, region: &str, seq: u64) -> Result<u64, OpError> {
        let next = self
            .get(region)
            .checked_add(1)
            .ok_or_else(|| OpError::Overflow(format!("write count of region {region}")))?
            .max(seq);
        self.0.insert(region.to_string(), next);
        Ok(next)
    }

    /// Takes in what `other` has seen (each region's larger count).
    pub fn join(&mut self, other: &VersionVector) {
        for (region, count) in &other.0 {
            let mine = self.0.entry(region.clone()).or_default();
            *mine = (*mine).max(*count);
        }
    }

    /// Whether this has seen everything `other` has.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(region, count)| self.get(region) >= *count)
    }

    fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.region) >= dot.count
    }
}

/// Who made a write, and when: the order of last-writer-wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Its hybrid-logical stamp.
    pub stamp: Timestamp,
    /// The region it was made in (breaks ties between equal stamps).
    pub region: String,
}

/// One register value with the write that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The value; `None` for a delete (kept, so the delete wins where it
    /// should).
    pub value: Option<Vec<u8>>,
    /// Who wrote it, when.
    pub origin: Origin,
}

impl Version {
    /// The last-writer-wins order (the value breaks a tie that a correct
    /// clock never produces, so the merge is a join regardless).
    fn order_key(&self) -> (&Origin, &Option<Vec<u8>>) {
        (&self.origin, &self.value)
    }
}

/// A last-writer-wins register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The winning value.
    pub current: Version,
    /// The register writes it has seen, per region.
    pub seen: VersionVector,
}

/// A PN-counter: per region, the totals of its increments and decrements.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Sum of positive deltas made in each region.
    pub increments: BTreeMap<String, u64>,
    /// Sum of the magnitudes of negative deltas made in each region.
    pub decrements: BTreeMap<String, u64>,
}

/// One add to a set: the region and that region's count of set writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The region that added.
    pub region: String,
    /// Its count of writes to this set then.
    pub count: u64,
}

/// An add-wins observed-remove set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// Each present member with the adds that keep it there.
    pub members: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// The set writes it has seen, per region (removed adds included).
    pub seen: VersionVector,
}

/// One typed part of a key's state, with the first write into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Typed<T> {
    /// The earliest write of this type (decides the key's type).
    pub born: Origin,
    /// The state.
    pub state: T,
}

/// Everything an active-active key holds.
///
/// Normally one part is set. Concurrent first writes of different types set
/// two; the earliest-born part is the key's type everywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The register part.
    pub register: Option<Typed<Register>>,
    /// The counter part.
    pub counter: Option<Typed<Counter>>,
    /// The set part.
    pub set: Option<Typed<Set>>,
}

/// A write that lost to a concurrent one: both sides, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    /// Two concurrent register writes; `loser` was overwritten.
    Register {
        /// The value kept.
        winner: Version,
        /// The value overwritten.
        loser: Version,
    },
    /// Concurrent first writes of different types; the loser's type is
    /// hidden (its writes are kept in the state but not served).
    Type {
        /// The key's type and its first write.
        winner: (KeyType, Origin),
        /// The other type and its first write.
        loser: (KeyType, Origin),
    },
}

/// A local write to an active-active key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets the register (`None`: deletes it).
    Put(Option<Vec<u8>>),
    /// Adds a signed delta to the counter.
    Increment(i64),
    /// Adds a member to the set.
    SetAdd(Vec<u8>),
    /// Removes a member from the set.
    SetRemove(Vec<u8>),
}

impl Op {
    /// The key type the operation is for.
    pub fn key_type(&self) -> KeyType {
        match self {
            Op::Put(_) => KeyType::Register,
            Op::Increment(_) => KeyType::Counter,
            Op::SetAdd(_) | Op::SetRemove(_) => KeyType::Set,
        }
    }
}

impl KeyState {
    /// The key's type: its earliest-born part's (`None`: never written).
    pub fn key_type(&self) -> Option<KeyType> {
        let born = [
            self.register.as_ref().map(|p| (&p.born, KeyType::Register)),
            self.counter.as_ref().map(|p| (&p.born, KeyType::Counter)),
            self.set.as_ref().map(|p| (&p.born, KeyType::Set)),
        ];
        born.into_iter().flatten().min().map(|(_, t)| t)
    }

    /// The newest stamp any part of the key carries (a local write is
    /// stamped after it).
    pub fn newest_stamp(&self) -> Option<Timestamp> {
        [
            self.register.as_ref().map(|p| p.state.current.origin.stamp),
            self.register.as_ref().map(|p| p.born.stamp),
            self.counter.as_ref().map(|p| p.born.stamp),
            self.set.as_ref().map(|p| p.born.stamp),
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// A number that grows with the writes the state has taken in
    /// (register and set writes counted by their version vectors, counter
    /// totals by their magnitudes): the same on every copy holding the
    /// same state, so copies can be compared entry by entry.
    pub fn version(&self) -> u64 {
        let sum = |v: &VersionVector| v.0.values().fold(0u64, |a, b| a.saturating_add(*b));
        let totals = |m: &BTreeMap<String, u64>| m.values().fold(0u64, |a, b| a.saturating_add(*b));
        let register = self.register.as_ref().map_or(0, |p| sum(&p.state.seen));
        let set = self.set.as_ref().map_or(0, |p| sum(&p.state.seen));
        let counter = self.counter.as_ref().map_or(0, |p| {
            totals(&p.state.increments).saturating_add(totals(&p.state.decrements))
        });
        register.saturating_add(set).saturating_add(counter)
    }

    /// The register's value, if the key is a register holding one.
    pub fn value(&self) -> Option<&[u8]> {
        match (self.key_type(), &self.register) {
            (Some(KeyType::Register), Some(part)) => part.state.current.value.as_deref(),
            _ => None,
        }
    }

    /// The counter's value, if the key is a counter (`i128`: region totals
    /// are `u64` each).
    pub fn counter_value(&self) -> Option<i128> {
        match (self.key_type(), &self.counter) {
            (Some(KeyType::Counter), Some(part)) => Some(
                part.state
                    .increments
                    .values()
                    .map(|v| i128::from(*v))
                    .sum::<i128>()
                    - part
                        .state
                        .decrements
                        .values()
                        .map(|v| i128::from(*v))
                        .sum::<i128>(),
            ),
            _ => None,
        }
    }

    /// The set's members in order, if the key is a set.
    pub fn members(&self) -> Option<Vec<&[u8]>> {
        match (self.key_type(), &self.set) {
            (Some(KeyType::Set), Some(part)) => {
                Some(part.state.members.keys().map(Vec::as_slice).collect())
            }
            _ => None,
        }
    }

    /// Whether the key is a deleted register and nothing else: what
    /// [`crate::tombstone`] may collect once every peer holds it.
    pub fn is_tombstone(&self) -> bool {
        self.counter.is_none()
            && self.set.is_none()
            && self
                .register
                .as_ref()
                .is_some_and(|p| p.state.current.value.is_none())
    }

    /// Applies a local write made in `region` at `stamp` (stamped after
    /// [`Self::newest_stamp`] by the region's clock), counting a register
    /// write one past the region's last. Refused, changing nothing, when
    /// the key holds another type or a total would overflow.
    pub fn apply(&mut self, op: &Op, region: &str, stamp: Timestamp) -> Result<(), OpError> {
        self.apply_logged(op, region, stamp, 0, &VersionVector::default())
    }

    /// [`Self::apply`] for a write its region's change log numbers `seq`:
    /// a register write is counted by `seq` (see [`VersionVector`]'s
    /// `advance`), and a register written where the key is absent starts
    /// from `floor` — what this copy is known to have seen of every
    /// region's writes to keys whose deletes it has collected (see
    /// [`crate::tombstone`]), so the new write is seen as made after any
    /// such delete that another copy still holds.
    pub fn apply_logged(
        &mut self,
        op: &Op,
        region: &str,
        stamp: Timestamp,
        seq: u64,
        floor: &VersionVector,
    ) -> Result<(), OpError> {
        let wanted = op.key_type();
        if let Some(actual) = self.key_type()
            && actual != wanted
        {
            return Err(OpError::WrongType { actual, wanted });
        }
        let origin = Origin {
            stamp,
            region: region.to_string(),
        };
        match op {
            Op::Put(value) => {
                let mut part = self.register.clone().unwrap_or_else(|| Typed {
                    born: origin.clone(),
                    state: Register {
                        current: Version {
                            value: None,
                            origin: origin.clone(),
                        },
                        seen: floor.clone(),
                    },
                });
                part.state.seen.advance(region, seq)?;
                part.state.current = Version {
                    value: value.clone(),
                    origin,
                };
                self.register = Some(part);
            }
            Op::Increment(delta) => {
                let mut part = self.counter.clone().unwrap_or_else(|| Typed {
                    born: origin,
                    state: Counter::default(),
                });
                let (totals, magnitude) = if *delta >= 0 {
                    (&mut part.state.increments, delta.unsigned_abs())
                } else {
                    (&mut part.state.decrements, delta.unsigned_abs())
                };
                let total = totals.entry(region.to_string()).or_default();
                *total = total.checked_add(magnitude).ok_or_else(|| {
                    OpError::Overflow(format!(
                        "region {region}'s total would pass {} after adding {delta}",
                        u64::MAX
                    ))
                })?;
                let value = KeyState {
                    counter: Some(part.clone()),
                    ..KeyState::default()
                }
                .counter_value()
                .unwrap_or(0);
                if i64::try_from(value).is_err() {
                    return Err(OpError::Overflow(format!(
                        "its value would be {value}, outside the range of a signed 64-bit integer"
                    )));
                }
                self.counter = Some(part);
            }
            Op::SetAdd(member) => {
                let mut part = self.set.clone().unwrap_or_else(|| Typed {
                    born: origin,
                    state: Set::default(),
                });
                let count = part.state.seen.bump(region)?;
                // The adds this one observed are replaced by it.
                part.state.members.insert(
                    member.clone(),
                    BTreeSet::from([Dot {
                        region: region.to_string(),
                        count,
                    }]),
                );
                self.set = Some(part);
            }
            Op::SetRemove(member) => {
                let mut part = self.set.clone().unwrap_or_else(|| Typed {
                    born: origin,
                    state: Set::default(),
                });
                // Its adds stay counted in `seen`: they cannot come back.
                part.state.members.remove(member);
                // A remove is a write too (it fixes the key's type and is
                // shipped), but takes no dot.
                self.set = Some(part);
            }
        }
        Ok(())
    }

    /// Merges `other` into a copy of this state; returns the result and the
    /// conflicts the merge resolved (as seen from this copy: a register
    /// write that lost to a concurrent one, a type that lost).
    pub fn merge(&self, other: &KeyState) -> (KeyState, Vec<Conflict>) {
        let mut conflicts = Vec::new();
        let register = join_part(&self.register, &other.register, |a, b| {
            let (merged, conflict) = join_register(a, b);
            conflicts.extend(conflict);
            merged
        });
        let counter = join_part(&self.counter, &other.counter, join_counter);
        let set = join_part(&self.set, &other.set, join_set);
        let merged = KeyState {
            register,
            counter,
            set,
        };
        // A type hidden by this merge (each copy had a different one).
        if let (Some(mine), Some(theirs), Some(now)) =
            (self.key_type(), other.key_type(), merged.key_type())
            && mine != theirs
        {
            let loser = if mine == now { theirs } else { mine };
            if let (Some(winner_born), Some(loser_born)) = (merged.born(now), merged.born(loser)) {
                conflicts.push(Conflict::Type {
                    winner: (now, winner_born.clone()),
                    loser: (loser, loser_born.clone()),
                });
            }
        }
        (merged, conflicts)
    }

    fn born(&self, key_type: KeyType) -> Option<&Origin> {
        match key_type {
            KeyType::Register => self.register.as_ref().map(|p| &p.born),
            KeyType::Counter => self.counter.as_ref().map(|p| &p.born),
            KeyType::Set => self.set.as_ref().map(|p| &p.born),
        }
    }
}

/// Joins two optional parts: the earlier birth, the joined state.
fn join_part<T: Clone>(
    a: &Option<Typed<T>>,
    b: &Option<Typed<T>>,
    mut join: impl FnMut(&T, &T) -> T,
) -> Option<Typed<T>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (Some(a), Some(b)) => Some(Typed {
            born: a.born.clone().min(b.born.clone()),
            state: join(&a.state, &b.state),
        }),
    }
}

fn join_register(a: &Register, b: &Register) -> (Register, Option<Conflict>) {
    let (winner, loser) = if a.current.order_key() >= b.current.order_key() {
        (a, b)
    } else {
        (b, a)
    };
    // The losing value's write is the last of its region that its state
    // has seen (a later write of that region would have been stamped after
    // it, and won). It lost to a concurrent write if the winning state had
    // not seen it; a state that had seen it overwrote it knowingly.
    let region = &loser.current.origin.region;
    let concurrent = winner.seen.get(region) < loser.seen.get(region);
    let conflict = (concurrent && winner.current != loser.current).then(|| Conflict::Register {
        winner: winner.current.clone(),
        loser: loser.current.clone(),
    });
    let mut seen = a.seen.clone();
    seen.join(&b.seen);
    (
        Register {
            current: winner.current.clone(),
            seen,
        },
        conflict,
    )
}

fn join_counter(a: &Counter, b: &Counter) -> Counter {
    let max = |x: &BTreeMap<String, u64>, y: &BTreeMap<String, u64>| {
        let mut out = x.clone();
        for (region, total) in y {
            let mine = out.entry(region.clone()).or_default();
            *mine = (*mine).max(*total);
        }
        out
    };
    Counter {
        increments: max(&a.increments, &b.increments),
        decrements: max(&a.decrements, &b.decrements),
    }
}

fn join_set(a: &Set, b: &Set) -> Set {
    let mut members = BTreeMap::new();
    let names: BTreeSet<&Vec<u8>> = a.members.keys().chain(b.members.keys()).collect();
    let empty = BTreeSet::new();
    for name in names {
        let ours = a.members.get(name).unwrap_or(&empty);
        let theirs = b.members.get(name).unwrap_or(&empty);
        // An add survives if both have it, or if the side lacking it has
        // not seen it (so did not remove it).
        let dots: BTreeSet<Dot> = ours
            .iter()
            .filter(|d| theirs.contains(d) || !b.seen.covers(d))
            .chain(theirs.iter().filter(|d| !a.seen.covers(d)))
            .cloned()
            .collect();
        if !dots.is_empty() {
            members.insert(name.clone(), dots);
        }
    }
    let mut seen = a.seen.clone();
    seen.join(&b.seen);
    Set { members, seen }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Clock;
    use proptest::prelude::*;

    const REGIONS: [&str; 3] = ["ap-south", "eu-west", "us-east"];
    const KEYS: usize = 2;

    /// One step of a run: a local write, or a key's state delivered from
    /// one region to another (any order, any number of times).
    #[derive(Debug, Clone)]
    enum Step {
        Write {
            region: usize,
            key: usize,
            op: Op,
            /// Physical-clock step (regions' clocks drift apart).
            advance_ms: u64,
        },
        Deliver {
            from: usize,
            to: usize,
            key: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let op = prop_oneof![
            3 => (0u8..4).prop_map(|v| Op::Put(Some(vec![v]))),
            1 => Just(Op::Put(None)),
            2 => (-5i64..=5).prop_map(Op::Increment),
            2 => (0u8..3).prop_map(|m| Op::SetAdd(vec![m])),
            2 => (0u8..3).prop_map(|m| Op::SetRemove(vec![m])),
        ];
        prop_oneof![
            (0..REGIONS.len(), 0..KEYS, op, 0u64..3).prop_map(|(region, key, op, advance_ms)| {
                Step::Write {
                    region,
                    key,
                    op,
                    advance_ms,
                }
            }),
            (0..REGIONS.len(), 0..REGIONS.len(), 0..KEYS)
                .prop_map(|(from, to, key)| Step::Deliver { from, to, key }),
        ]
    }

    /// What a run did, for the oracles.
    #[derive(Default)]
    struct Run {
        /// Every state a copy held, for the merge laws.
        states: Vec<KeyState>,
        /// Per key: every register write accepted.
        puts: BTreeMap<usize, Vec<Version>>,
        /// Per key: register values overwritten by a later write made
        /// after seeing them.
        overwritten: BTreeMap<usize, Vec<Version>>,
        /// Per key: losers of register conflicts, recorded by merges.
        losers: BTreeMap<usize, Vec<Version>>,
        /// Per key: the sum of accepted increments.
        sums: BTreeMap<usize, i128>,
        /// Per key: every add (member, dot) accepted.
        adds: BTreeMap<usize, Vec<(Vec<u8>, Dot)>>,
        /// Per key: (member, what the removing copy had seen).
        removes: BTreeMap<usize, Vec<(Vec<u8>, VersionVector)>>,
    }

    fn run(steps: &[Step]) -> (Vec<Vec<KeyState>>, Run) {
        let mut copies = vec![vec![KeyState::default(); KEYS]; REGIONS.len()];
        let mut clocks = vec![Clock::new(Timestamp::default(), 250); REGIONS.len()];
        let mut physical = vec![1_000u64; REGIONS.len()];
        let mut log = Run::default();
        let deliver =
            |copies: &mut Vec<Vec<KeyState>>, log: &mut Run, from: usize, to: usize, key: usize| {
                let incoming: KeyState = copies[from][key].clone();
                let (merged, conflicts) = copies[to][key].merge(&incoming);
                for conflict in conflicts {
                    if let Conflict::Register { loser, .. } = conflict {
                        log.losers.entry(key).or_default().push(loser);
                    }
                }
                copies[to][key] = merged;
                log.states.push(copies[to][key].clone());
            };
        for step in steps {
            match step {
                Step::Write {
                    region,
                    key,
                    op,
                    advance_ms,
                } => {
                    physical[*region] += advance_ms;
                    let state = &mut copies[*region][*key];
                    let stamp =
                        clocks[*region].stamp_after(physical[*region], state.newest_stamp());
                    let before = state.clone();
                    if state.apply(op, REGIONS[*region], stamp).is_err() {
                        assert_eq!(*state, before, "a refused write changed the key");
                        continue;
                    }
                    match op {
                        Op::Put(_) => {
                            if let Some(previous) = &before.register {
                                log.overwritten
                                    .entry(*key)
                                    .or_default()
                                    .push(previous.state.current.clone());
                            }
                            let part = state.register.as_ref().unwrap();
                            log.puts
                                .entry(*key)
                                .or_default()
                                .push(part.state.current.clone());
                        }
                        Op::Increment(delta) => {
                            *log.sums.entry(*key).or_default() += i128::from(*delta);
                        }
                        Op::SetAdd(member) => {
                            let dots = &state.set.as_ref().unwrap().state.members[member];
                            let dot = dots.iter().next().unwrap().clone();
                            log.adds
                                .entry(*key)
                                .or_default()
                                .push((member.clone(), dot));
                        }
                        Op::SetRemove(member) => {
                            let seen = before
                                .set
                                .as_ref()
                                .map(|p| p.state.seen.clone())
                                .unwrap_or_default();
                            log.removes
                                .entry(*key)
                                .or_default()
                                .push((member.clone(), seen));
                        }
                    }
                    log.states.push(state.clone());
                }
                Step::Deliver { from, to, key } => deliver(&mut copies, &mut log, *from, *to, *key),
            }
        }
        // Links heal: every copy's state reaches every other, twice round.
        for _ in 0..2 {
            for key in 0..KEYS {
                for from in 0..REGIONS.len() {
                    for to in 0..REGIONS.len() {
                        deliver(&mut copies, &mut log, from, to, key);
                    }
                }
            }
        }
        (copies, log)
    }

    fn merged(a: &KeyState, b: &KeyState) -> KeyState {
        a.merge(b).0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Commutative, associative, idempotent — over states the copies
        /// really reach.
        #[test]
        fn merge_is_a_join(steps in prop::collection::vec(step(), 1..60), picks in prop::collection::vec(any::<prop::sample::Index>(), 3)) {
            let (_, log) = run(&steps);
            let pick = |i: &prop::sample::Index| &log.states[i.index(log.states.len())];
            let (a, b, c) = (pick(&picks[0]), pick(&picks[1]), pick(&picks[2]));
            prop_assert_eq!(merged(a, b), merged(b, a));
            prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
            prop_assert_eq!(&merged(a, a), a);
            prop_assert!(a.merge(a).1.is_empty(), "merging a copy with itself is no conflict");
        }

        /// Whatever the order and duplication of deliveries: one state
        /// everywhere; no increment lost; the last writer wins; every
        /// overwritten write recorded; the add-wins set.
        #[test]
        fn copies_converge_to_what_every_write_says(steps in prop::collection::vec(step(), 1..80)) {
            let (copies, log) = run(&steps);
            for key in 0..KEYS {
                for copy in &copies[1..] {
                    prop_assert_eq!(&copy[key], &copies[0][key], "key {}", key);
                }
                let state = &copies[0][key];
                if let Some(sum) = log.sums.get(&key) {
                    let part = state.counter.as_ref().unwrap();
                    let total: i128 = part.state.increments.values().map(|v| i128::from(*v)).sum::<i128>()
                        - part.state.decrements.values().map(|v| i128::from(*v)).sum::<i128>();
                    prop_assert_eq!(total, *sum);
                }
                if let Some(puts) = log.puts.get(&key) {
                    let part = state.register.as_ref().unwrap();
                    let last = puts.iter().max_by(|a, b| a.order_key().cmp(&b.order_key())).unwrap();
                    prop_assert_eq!(&part.state.current, last);
                    for put in puts {
                        let accounted = put == last
                            || log.overwritten.get(&key).is_some_and(|o| o.contains(put))
                            || log.losers.get(&key).is_some_and(|l| l.contains(put));
                        prop_assert!(accounted, "{:?} was overwritten and not recorded", put);
                    }
                }
                if let Some(part) = &state.set {
                    let adds = log.adds.get(&key).cloned().unwrap_or_default();
                    let removes = log.removes.get(&key).cloned().unwrap_or_default();
                    let expected: BTreeSet<Vec<u8>> = adds
                        .iter()
                        .filter(|(member, dot)| {
                            !removes.iter().any(|(removed, seen)| removed == member && seen.covers(dot))
                        })
                        .map(|(member, _)| member.clone())
                        .collect();
                    let actual: BTreeSet<Vec<u8>> = part.state.members.keys().cloned().collect();
                    prop_assert_eq!(actual, expected);
                }
            }
        }
    }

    #[test]
    fn a_write_of_the_wrong_type_is_refused_naming_the_keys_type() {
        let mut state = KeyState::default();
        let stamp = Timestamp {
            wall_ms: 1,
            logical: 0,
        };
        state.apply(&Op::Increment(3), "eu-west", stamp).unwrap();
        let before = state.clone();
        let refused = state
            .apply(&Op::Put(Some(b"x".to_vec())), "eu-west", stamp.next())
            .unwrap_err();
        assert_eq!(
            refused,
            OpError::WrongType {
                actual: KeyType::Counter,
                wanted: KeyType::Register
            }
        );
        assert!(
            refused.to_string().contains("the key is a counter"),
            "{refused}"
        );
        assert_eq!(state, before);
        // Overflow is refused too, and changes nothing.
        state
            .apply(&Op::Increment(i64::MAX - 3), "eu-west", stamp.next())
            .unwrap();
        assert!(matches!(
            state.apply(&Op::Increment(1), "eu-west", stamp.next().next()),
            Err(OpError::Overflow(_))
        ));
        assert_eq!(state.counter_value(), Some(i128::from(i64::MAX)));
    }

    #[test]
    fn only_a_write_that_lost_to_a_concurrent_one_is_a_conflict() {
        let at = |wall_ms| Timestamp {
            wall_ms,
            logical: 0,
        };
        let put = |state: &mut KeyState, value: &[u8], region, wall_ms| {
            state
                .apply(&Op::Put(Some(value.to_vec())), region, at(wall_ms))
                .unwrap();
        };
        // us-east writes, eu-west receives it and overwrites it knowingly:
        // no conflict either way round.
        let mut us = KeyState::default();
        put(&mut us, b"1", "us-east", 10);
        let mut eu = us.merge(&KeyState::default()).0;
        put(&mut eu, b"2", "eu-west", 20);
        assert!(us.merge(&eu).1.is_empty());
        assert!(eu.merge(&us).1.is_empty());
        assert_eq!(us.merge(&eu).0.value(), Some(&b"2"[..]));
        // Both write without having seen the other's: the older is the
        // loser, reported by either side's merge.
        let mut ap = KeyState::default();
        put(&mut ap, b"3", "ap-south", 15);
        for (a, b) in [(&eu, &ap), (&ap, &eu)] {
            let (merged, conflicts) = a.merge(b);
            assert_eq!(merged.value(), Some(&b"2"[..]));
            match conflicts.as_slice() {
                [Conflict::Register { winner, loser }] => {
                    assert_eq!(winner.value.as_deref(), Some(&b"2"[..]));
                    assert_eq!(loser.value.as_deref(), Some(&b"3"[..]));
                    assert_eq!(loser.origin.region, "ap-south");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn concurrent_first_writes_of_two_types_keep_the_earlier_and_report_the_other() {
        let at = |wall_ms| Timestamp {
            wall_ms,
            logical: 0,
        };
        let mut us = KeyState::default();
        us.apply(&Op::Put(Some(b"v".to_vec())), "us-east", at(5))
            .unwrap();
        let mut eu = KeyState::default();
        eu.apply(&Op::Increment(2), "eu-west", at(4)).unwrap();
        let (merged, conflicts) = us.merge(&eu);
        assert_eq!(merged.key_type(), Some(KeyType::Counter));
        assert_eq!(merged.counter_value(), Some(2));
        assert_eq!(merged.value(), None, "the register is hidden");
        assert!(matches!(
            conflicts.as_slice(),
            [Conflict::Type {
                winner: (KeyType::Counter, _),
                loser: (KeyType::Register, _)
            }]
        ));
    }
}
