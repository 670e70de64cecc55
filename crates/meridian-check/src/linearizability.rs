//! Is a history linearizable? A depth-first search for a legal order (the
//! Wing–Gong algorithm with Lowe's memoization of `(linearized set, state)`,
//! as Porcupine does it), one key at a time over a register model.
//!
//! Linearizability is compositional, so keys are checked separately.
//! Operations refused before doing anything are left out; reads with unknown
//! outcome constrain nothing and are left out; writes with unknown outcome
//! stay, returning at "infinity" — the search may place them anywhere after
//! their invocation, including after everything else (never happened).
//! An unknown write whose value no read returned is left out too: with unique
//! values, a history is linearizable with it exactly when it is without it
//! (put it last), and such writes are what make the search explode.

use crate::history::{Input, Operation, Output};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key has a legal order.
    Linearizable,
    /// No legal order exists for `key`.
    Violation {
        /// The key.
        key: String,
        /// The deepest legal prefix found, then the operation that could not
        /// follow it (for a person to read).
        explanation: String,
    },
    /// The search for `key` ran out of its step budget.
    Inconclusive {
        /// The key.
        key: String,
    },
}

/// Checks `operations` against a register per key (every key absent at the
/// start), with at most `max_steps` search steps per key.
pub fn check(operations: &[Operation], max_steps: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in operations {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        match check_key(&ops, max_steps) {
            KeyVerdict::Ok => {}
            KeyVerdict::Stuck(explanation) => {
                return Verdict::Violation {
                    key: key.to_string(),
                    explanation,
                };
            }
            KeyVerdict::OutOfSteps => {
                return Verdict::Inconclusive {
                    key: key.to_string(),
                };
            }
        }
    }
    Verdict::Linearizable
}

/// One operation in the model's terms: values interned, 0 = absent.
#[derive(Debug, Clone, Copy)]
enum Step {
    Write(u32),
    Read(u32),
}

enum KeyVerdict {
    Ok,
    Stuck(String),
    OutOfSteps,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

fn check_key(ops: &[&Operation], max_steps: u64) -> KeyVerdict {
    // Keep what constrains the order; intern values.
    let mut values: HashMap<String, u32> = HashMap::new();
    let intern = |v: &Option<String>, values: &mut HashMap<String, u32>| -> u32 {
        match v {
            None => 0,
            Some(text) => {
                let next = values.len() as u32 + 1;
                *values.entry(text.clone()).or_insert(next)
            }
        }
    };
    let observed: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match &op.output {
            Output::Value(Some(value)) => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let mut kept: Vec<(&Operation, Step)> = Vec::new();
    for op in ops {
        let step = match (&op.input, &op.output) {
            (_, Output::Refused) => continue,
            (Input::Put(value), Output::Unknown) if !observed.contains(value.as_str()) => continue,
            (Input::Get, Output::Value(found)) => Step::Read(intern(found, &mut values)),
            (Input::Get, _) => continue,
            (Input::Put(value), Output::Done | Output::Unknown) => {
                Step::Write(intern(&Some(value.clone()), &mut values))
            }
            (Input::Delete, Output::Done | Output::Unknown) => Step::Write(0),
            // A write answered with a value: malformed; it cannot constrain.
            (_, Output::Value(_)) => continue,
        };
        kept.push((op, step));
    }
    let n = kept.len();
    if n == 0 {
        return KeyVerdict::Ok;
    }
    // Entries in time order; at equal times calls come first (overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, (op, _)) in kept.iter().enumerate() {
        events.push((op.called_ns, true, i));
        events.push((op.returned_ns, false, i));
    }
    events.sort_by_key(|&(time, is_call, i)| (time, !is_call, i));
    // entries[0] is the head sentinel.
    let mut entries = vec![Entry {
        op: NONE,
        is_call: false,
        prev: NONE,
        next: 1,
    }];
    let mut call_entry = vec![0; n];
    let mut return_entry = vec![0; n];
    for (position, &(_, is_call, op)) in events.iter().enumerate() {
        let index = position + 1;
        entries.push(Entry {
            op,
            is_call,
            prev: index - 1,
            next: if position + 1 == events.len() {
                NONE
            } else {
                index + 1
            },
        });
        if is_call {
            call_entry[op] = index;
        } else {
            return_entry[op] = index;
        }
    }
    let lift = |entries: &mut Vec<Entry>, index: usize| {
        let (prev, next) = (entries[index].prev, entries[index].next);
        entries[prev].next = next;
        if next != NONE {
            entries[next].prev = prev;
        }
    };
    let unlift = |entries: &mut Vec<Entry>, index: usize| {
        let (prev, next) = (entries[index].prev, entries[index].next);
        entries[prev].next = index;
        if next != NONE {
            entries[next].prev = index;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = 0u32;
    let mut deepest: (usize, Vec<usize>, usize) = (0, Vec::new(), NONE);
    let mut steps = 0u64;
    let mut entry = entries[0].next;
    while entries[0].next != NONE {
        steps += 1;
        if steps > max_steps {
            return KeyVerdict::OutOfSteps;
        }
        let current = entries[entry];
        if current.is_call {
            let op = current.op;
            let next_state = match kept[op].1 {
                Step::Write(value) => Some(value),
                Step::Read(value) => (value == state).then_some(state),
            };
            if let Some(next_state) = next_state {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((op, state));
                    state = next_state;
                    lift(&mut entries, call_entry[op]);
                    lift(&mut entries, return_entry[op]);
                    entry = entries[0].next;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = current.next;
        } else {
            // An operation returned before it could be placed: backtrack.
            if stack.len() >= deepest.0 {
                deepest = (
                    stack.len(),
                    stack.iter().map(|(op, _)| *op).collect(),
                    current.op,
                );
            }
            let Some((op, previous)) = stack.pop() else {
                return KeyVerdict::Stuck(explain(&kept, &deepest));
            };
            state = previous;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut entries, return_entry[op]);
            unlift(&mut entries, call_entry[op]);
            entry = entries[call_entry[op]].next;
        }
    }
    KeyVerdict::Ok
}

fn explain(kept: &[(&Operation, Step)], deepest: &(usize, Vec<usize>, usize)) -> String {
    let describe = |op: &Operation| {
        let returned = if op.returned_ns == u64::MAX {
            "never".to_string()
        } else {
            format!("{} ns", op.returned_ns)
        };
        format!(
            "client {} {:?} -> {:?} [called {} ns, returned {returned}]",
            op.client, op.input, op.output, op.called_ns
        )
    };
    let mut lines: Vec<String> = deepest
        .1
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|&op| format!("  ok: {}", describe(kept[op].0)))
        .collect();
    if deepest.2 != NONE {
        lines.push(format!(
            "  no legal place for: {}",
            describe(kept[deepest.2].0)
        ));
    }
    format!(
        "longest legal prefix has {} operations; its last ones and the stuck one:\n{}",
        deepest.0,
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: Input, output: Output, called: u64, returned: u64) -> Operation {
        Operation {
            client,
            key: "k".into(),
            input,
            output,
            called_ns: called,
            returned_ns: returned,
        }
    }
    fn put(v: &str) -> Input {
        Input::Put(v.into())
    }
    fn read(v: Option<&str>) -> Output {
        Output::Value(v.map(str::to_string))
    }
    const NEVER: u64 = u64::MAX;

    fn verdict(ops: &[Operation]) -> bool {
        match check(ops, 1_000_000) {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            Verdict::Inconclusive { .. } => panic!("inconclusive"),
        }
    }

    #[test]
    fn known_good_and_known_bad_histories() {
        let cases: Vec<(&str, Vec<Operation>, bool)> = vec![
            (
                "sequential write then read",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(2, Input::Get, read(Some("a")), 20, 30),
                ],
                true,
            ),
            (
                "stale read: the new value was acknowledged before the read began",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(1, put("b"), Output::Done, 20, 30),
                    op(2, Input::Get, read(Some("a")), 40, 50),
                ],
                false,
            ),
            (
                "a read concurrent with a write may see either value",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(1, put("b"), Output::Done, 20, 60),
                    op(2, Input::Get, read(Some("a")), 30, 40),
                    op(3, Input::Get, read(Some("b")), 30, 50),
                ],
                true,
            ),
            (
                "values cannot go back: b seen, then a again",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(1, put("b"), Output::Done, 20, 100),
                    op(2, Input::Get, read(Some("b")), 30, 40),
                    op(3, Input::Get, read(Some("a")), 50, 60),
                ],
                false,
            ),
            (
                "an unknown write may have happened...",
                vec![
                    op(1, put("a"), Output::Unknown, 0, NEVER),
                    op(2, Input::Get, read(Some("a")), 20, 30),
                ],
                true,
            ),
            (
                "...or not",
                vec![
                    op(1, put("a"), Output::Unknown, 0, NEVER),
                    op(2, Input::Get, read(None), 20, 30),
                ],
                true,
            ),
            (
                "but not both: seen, then gone (a write a failover lost after a read saw it)",
                vec![
                    op(1, put("a"), Output::Unknown, 0, NEVER),
                    op(2, Input::Get, read(Some("a")), 20, 30),
                    op(3, Input::Get, read(None), 40, 50),
                ],
                false,
            ),
            (
                "a refused write never happened",
                vec![
                    op(1, put("a"), Output::Refused, 0, 10),
                    op(2, Input::Get, read(Some("a")), 20, 30),
                ],
                false,
            ),
            (
                "an acknowledged write must be seen by a later read",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(2, Input::Get, read(None), 20, 30),
                ],
                false,
            ),
            (
                "unknown writes nobody saw change nothing",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(2, put("x"), Output::Unknown, 5, NEVER),
                    op(3, put("y"), Output::Unknown, 6, NEVER),
                    op(4, Input::Get, read(Some("a")), 20, 30),
                    op(4, Input::Get, read(Some("b")), 40, 50),
                ],
                false,
            ),
            (
                "deletes",
                vec![
                    op(1, put("a"), Output::Done, 0, 10),
                    op(1, Input::Delete, Output::Done, 20, 30),
                    op(2, Input::Get, read(None), 40, 50),
                ],
                true,
            ),
        ];
        for (name, ops, expected) in cases {
            assert_eq!(verdict(&ops), expected, "{name}");
        }
    }

    #[test]
    fn keys_are_checked_separately_and_the_violation_is_named() {
        let mut ops = vec![
            op(1, put("a"), Output::Done, 0, 10),
            op(2, Input::Get, read(Some("a")), 20, 30),
        ];
        let mut other = op(1, put("x"), Output::Done, 0, 10);
        other.key = "j".into();
        let mut stale = op(2, Input::Get, read(None), 20, 30);
        stale.key = "j".into();
        ops.push(other);
        ops.push(stale);
        match check(&ops, 1_000_000) {
            Verdict::Violation { key, explanation } => {
                assert_eq!(key, "j");
                assert!(explanation.contains("no legal place"), "{explanation}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_concurrent_history_is_decided_quickly() {
        // 8 clients, 500 rounds: each round every client writes its own
        // value concurrently, then every client reads the last writer's.
        let mut ops = Vec::new();
        let mut t = 0;
        for round in 0..500u64 {
            for client in 0..8u64 {
                ops.push(op(
                    client,
                    put(&format!("{round}-{client}")),
                    Output::Done,
                    t,
                    t + 100,
                ));
            }
            // The writes overlap; client 7's is the last to take effect.
            t += 50;
            ops.push(op(
                9,
                put(&format!("{round}-last")),
                Output::Done,
                t + 60,
                t + 70,
            ));
            for client in 0..8u64 {
                ops.push(op(
                    client,
                    Input::Get,
                    read(Some(&format!("{round}-last"))),
                    t + 80,
                    t + 90,
                ));
            }
            t += 100;
        }
        let started = std::time::Instant::now();
        assert_eq!(check(&ops, 10_000_000), Verdict::Linearizable);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
