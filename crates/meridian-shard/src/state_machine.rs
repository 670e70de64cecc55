//! The shard's replicated state machine: namespaces of versioned keys.
//!
//! Every replica applies the same committed [`Command`]s in the same order, so
//! every decision here (versions, rejections, transaction branches) must depend
//! only on the stored state and the command — never on local configuration, time or
//! randomness.

use crate::command::{
    Command, CommandResult, Compare, CompareOp, CompareTarget, DeleteOutcome, PutOutcome,
    Rejection, VersionedEntry, WriteOp, WriteOutcome,
};
use crate::keys;
use fjall::{Keyspace, KeyspaceCreateOptions};
use meridian_raft::{Application, ApplyBatch, StorageEngine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::sync::RwLock;

/// What the shard knows about one namespace, stored under its name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// Log index at which the namespace was created.
    pub created_index: u64,
    /// Keys currently in the namespace.
    pub key_count: u64,
}

/// Format of stored [`NamespaceRecord`]s; bumped on any change, with an upgrade.
const NAMESPACE_RECORD_FORMAT: u8 = 1;

/// The key-value state machine of a shard.
pub struct KvStateMachine {
    db: fjall::Database,
    data: Keyspace,
    namespaces: Keyspace,
    /// All namespace records, mirrored in memory: every request checks its
    /// namespace, and the list is small (bounded by `max_namespaces`).
    cache: RwLock<BTreeMap<String, NamespaceRecord>>,
}

/// A stored key's current version and value.
pub type StoredValue = (u64, Vec<u8>);

/// One page of a scan: `(key, version, value)` entries and, if more remain, the
/// key to continue from.
pub type ScanPage = (Vec<(Vec<u8>, u64, Vec<u8>)>, Option<Vec<u8>>);

fn storage_error(err: fjall::Error) -> io::Error {
    io::Error::other(err)
}

impl KvStateMachine {
    /// Opens (or creates) the state machine's keyspaces in `engine`.
    pub fn open(engine: &StorageEngine) -> io::Result<Self> {
        let data = engine.keyspace("kv_data", KeyspaceCreateOptions::default)?;
        let namespaces = engine.keyspace("kv_namespaces", KeyspaceCreateOptions::default)?;
        let machine = Self {
            db: engine.database().clone(),
            data,
            namespaces,
            cache: RwLock::new(BTreeMap::new()),
        };
        machine.reload_cache()?;
        Ok(machine)
    }

    fn reload_cache(&self) -> io::Result<()> {
        let mut fresh = BTreeMap::new();
        for guard in self.namespaces.iter() {
            let (name, raw) = guard.into_inner().map_err(storage_error)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "namespace name"))?;
            fresh.insert(name, decode_record(&raw)?);
        }
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The record of `namespace`, if it exists.
    pub fn namespace(&self, namespace: &str) -> Option<NamespaceRecord> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .copied()
    }

    /// How many namespaces the shard holds.
    pub fn namespace_count(&self) -> usize {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Every namespace with its record, in name order.
    pub fn namespaces(&self) -> Vec<(String, NamespaceRecord)> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, record)| (name.clone(), *record))
            .collect()
    }

    /// Reads one key as of everything applied so far.
    pub fn get(&self, namespace: &str, key: &[u8]) -> io::Result<Option<StoredValue>> {
        let raw = self
            .data
            .get(keys::data_key(namespace, key))
            .map_err(storage_error)?;
        raw.map(|raw| decode_stored(&raw)).transpose()
    }

    /// Reads up to `limit` keys of `namespace` in `[start, end)` (`end = None`: to
    /// the end of the namespace). Returns the entries and, if more remain, the key
    /// to continue from.
    pub fn scan(
        &self,
        namespace: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> io::Result<ScanPage> {
        let lower = keys::data_key(namespace, start);
        let upper = match end {
            Some(end) => keys::data_key(namespace, end),
            None => keys::prefix_end(&keys::namespace_prefix(namespace))
                .ok_or_else(|| io::Error::other("namespace prefix has no end"))?,
        };
        let mut out = Vec::new();
        for guard in self.data.range(lower..upper) {
            let (stored_key, raw) = guard.into_inner().map_err(storage_error)?;
            let user_key = keys::user_key(namespace, &stored_key).to_vec();
            if out.len() == limit {
                return Ok((out, Some(user_key)));
            }
            let (version, value) = decode_stored(&raw)?;
            out.push((user_key, version, value));
        }
        Ok((out, None))
    }

    /// Calls `visit` with every `(key, version, value)` of `namespace` in key order,
    /// from one consistent point-in-time view, until `visit` returns false.
    pub fn visit_namespace(
        &self,
        namespace: &str,
        mut visit: impl FnMut(Vec<u8>, u64, Vec<u8>) -> bool,
    ) -> io::Result<()> {
        use fjall::Readable;
        let view = self.db.snapshot();
        for guard in view.prefix(&self.data, keys::namespace_prefix(namespace)) {
            let (stored_key, raw) = guard.into_inner().map_err(storage_error)?;
            let (version, value) = decode_stored(&raw)?;
            let key = keys::user_key(namespace, &stored_key).to_vec();
            if !visit(key, version, value) {
                break;
            }
        }
        Ok(())
    }

    /// The integrity digest of `namespace` as this replica holds it now.
    pub fn digest(&self, namespace: &str) -> io::Result<(String, u64)> {
        let mut digest = crate::digest::NamespaceDigest::default();
        self.visit_namespace(namespace, |key, version, value| {
            digest.add(&key, version, &value);
            true
        })?;
        let count = digest.count();
        Ok((digest.finish(), count))
    }

    /// Reads a key through the pending batch (for use while applying).
    fn pending_get(
        &self,
        batch: &ApplyBatch,
        namespace: &str,
        key: &[u8],
    ) -> io::Result<Option<StoredValue>> {
        batch
            .get(&self.data, &keys::data_key(namespace, key))?
            .map(|raw| decode_stored(&raw))
            .transpose()
    }

    fn apply_command(
        &self,
        index: u64,
        command: Command,
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        match command {
            Command::CreateNamespace {
                name,
                max_namespaces,
            } => {
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                if cache.contains_key(&name) {
                    return Ok(CommandResult::Rejected(Rejection::NamespaceExists { name }));
                }
                let count = cache.len() as u64;
                if count >= max_namespaces {
                    return Ok(CommandResult::Rejected(Rejection::TooManyNamespaces {
                        count,
                        limit: max_namespaces,
                    }));
                }
                let record = NamespaceRecord {
                    created_index: index,
                    key_count: 0,
                };
                batch.insert(
                    &self.namespaces,
                    name.as_bytes().to_vec(),
                    encode_record(&record)?,
                );
                cache.insert(name, record);
                Ok(CommandResult::NamespaceCreated {
                    created_index: index,
                })
            }
            Command::DeleteNamespace { name } => {
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                if !cache.contains_key(&name) {
                    return Ok(CommandResult::Rejected(Rejection::NamespaceNotFound {
                        name,
                    }));
                }
                let mut keys_deleted = 0;
                for key in batch.keys_with_prefix(&self.data, &keys::namespace_prefix(&name))? {
                    batch.remove(&self.data, key);
                    keys_deleted += 1;
                }
                batch.remove(&self.namespaces, name.as_bytes().to_vec());
                cache.remove(&name);
                Ok(CommandResult::NamespaceDeleted { keys_deleted })
            }
            Command::Put {
                namespace,
                key,
                value,
            } => self.with_namespace(&namespace, batch, |machine, batch, counter| {
                let previous = machine.pending_get(batch, &namespace, &key)?;
                let outcome = machine.put(index, &namespace, key, &value, previous, batch, counter);
                Ok(CommandResult::Put(outcome))
            }),
            Command::Delete { namespace, key } => {
                self.with_namespace(&namespace, batch, |machine, batch, counter| {
                    let previous = machine.pending_get(batch, &namespace, &key)?;
                    let outcome = machine.delete(&namespace, &key, previous, batch, counter);
                    Ok(CommandResult::Delete(outcome))
                })
            }
            Command::Txn {
                namespace,
                compares,
                success,
                failure,
            } => self.with_namespace(&namespace, batch, |machine, batch, counter| {
                machine.apply_txn(
                    index, &namespace, &compares, success, failure, batch, counter,
                )
            }),
            Command::Import { namespace, entries } => {
                self.with_namespace(&namespace, batch, |machine, batch, counter| {
                    machine.apply_import(&namespace, entries, batch, counter)
                })
            }
        }
    }

    /// Runs `body` if `namespace` exists, then stores its updated key count.
    fn with_namespace(
        &self,
        namespace: &str,
        batch: &mut ApplyBatch,
        body: impl FnOnce(&Self, &mut ApplyBatch, &mut i64) -> io::Result<CommandResult>,
    ) -> io::Result<CommandResult> {
        let Some(mut record) = self.namespace(namespace) else {
            return Ok(CommandResult::Rejected(Rejection::NamespaceNotFound {
                name: namespace.to_string(),
            }));
        };
        let mut key_delta = 0i64;
        let result = body(self, batch, &mut key_delta)?;
        if key_delta != 0 {
            record.key_count = record.key_count.saturating_add_signed(key_delta);
            batch.insert(
                &self.namespaces,
                namespace.as_bytes().to_vec(),
                encode_record(&record)?,
            );
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(namespace.to_string(), record);
        }
        Ok(result)
    }

    /// Writes a key. Its new version is the log index, unless an imported version
    /// is already at or above it: versions only ever grow.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        index: u64,
        namespace: &str,
        key: Vec<u8>,
        value: &[u8],
        previous: Option<StoredValue>,
        batch: &mut ApplyBatch,
        key_delta: &mut i64,
    ) -> PutOutcome {
        let previous_version = previous.map_or(0, |(version, _)| version);
        let version = index.max(previous_version + 1);
        if previous_version == 0 {
            *key_delta += 1;
        }
        batch.insert(
            &self.data,
            keys::data_key(namespace, &key),
            keys::encode_value(version, value),
        );
        PutOutcome {
            version,
            previous_version,
        }
    }

    fn delete(
        &self,
        namespace: &str,
        key: &[u8],
        previous: Option<StoredValue>,
        batch: &mut ApplyBatch,
        key_delta: &mut i64,
    ) -> DeleteOutcome {
        match previous {
            Some((previous_version, _)) => {
                batch.remove(&self.data, keys::data_key(namespace, key));
                *key_delta -= 1;
                DeleteOutcome {
                    deleted: true,
                    previous_version,
                }
            }
            None => DeleteOutcome {
                deleted: false,
                previous_version: 0,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_txn(
        &self,
        index: u64,
        namespace: &str,
        compares: &[Compare],
        success: Vec<WriteOp>,
        failure: Vec<WriteOp>,
        batch: &mut ApplyBatch,
        key_delta: &mut i64,
    ) -> io::Result<CommandResult> {
        let mut succeeded = true;
        for compare in compares {
            let current = self.pending_get(batch, namespace, &compare.key)?;
            if !compare_holds(compare, current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded { success } else { failure };
        // Later writes in the branch see earlier ones through the batch.
        let mut outcomes = Vec::with_capacity(branch.len());
        for op in branch {
            match op {
                WriteOp::Put { key, value } => {
                    let previous = self.pending_get(batch, namespace, &key)?;
                    let outcome =
                        self.put(index, namespace, key, &value, previous, batch, key_delta);
                    outcomes.push(WriteOutcome::Put(outcome));
                }
                WriteOp::Delete { key } => {
                    let previous = self.pending_get(batch, namespace, &key)?;
                    let outcome = self.delete(namespace, &key, previous, batch, key_delta);
                    outcomes.push(WriteOutcome::Delete(outcome));
                }
            }
        }
        Ok(CommandResult::Txn {
            succeeded,
            outcomes,
        })
    }

    fn apply_import(
        &self,
        namespace: &str,
        entries: Vec<VersionedEntry>,
        batch: &mut ApplyBatch,
        key_delta: &mut i64,
    ) -> io::Result<CommandResult> {
        let mut seen = std::collections::HashSet::new();
        let count = entries.len() as u64;
        for entry in entries {
            let existed = self.pending_get(batch, namespace, &entry.key)?.is_some();
            if !existed && seen.insert(entry.key.clone()) {
                *key_delta += 1;
            }
            batch.insert(
                &self.data,
                keys::data_key(namespace, &entry.key),
                keys::encode_value(entry.version, &entry.value),
            );
        }
        Ok(CommandResult::Imported { count })
    }
}

fn compare_holds(compare: &Compare, current: Option<&StoredValue>) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match &compare.target {
        CompareTarget::Version(target) => Some(current.map_or(0, |(v, _)| *v).cmp(target)),
        CompareTarget::Value(target) => current.map(|(_, value)| value.as_slice().cmp(target)),
        CompareTarget::Exists(target) => Some(current.is_some().cmp(target)),
    };
    match (compare.op, ordering) {
        (CompareOp::Equal, Some(o)) => o == Ordering::Equal,
        (CompareOp::NotEqual, Some(o)) => o != Ordering::Equal,
        (CompareOp::Greater, Some(o)) => o == Ordering::Greater,
        (CompareOp::Less, Some(o)) => o == Ordering::Less,
        // A missing key has no value: only "not equal" holds.
        (CompareOp::NotEqual, None) => true,
        (_, None) => false,
    }
}

fn encode_record(record: &NamespaceRecord) -> io::Result<Vec<u8>> {
    let mut out = vec![NAMESPACE_RECORD_FORMAT];
    out.extend(postcard::to_stdvec(record).map_err(io::Error::other)?);
    Ok(out)
}

fn decode_record(raw: &[u8]) -> io::Result<NamespaceRecord> {
    match raw.split_first() {
        Some((&NAMESPACE_RECORD_FORMAT, body)) => {
            postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unknown namespace record format",
        )),
    }
}

fn decode_stored(raw: &[u8]) -> io::Result<StoredValue> {
    keys::decode_value(raw)
        .map(|(version, value)| (version, value.to_vec()))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "stored value too short"))
}

impl Application for KvStateMachine {
    fn keyspaces(&self) -> Vec<Keyspace> {
        vec![self.data.clone(), self.namespaces.clone()]
    }

    fn apply(&self, index: u64, command: &[u8], batch: &mut ApplyBatch) -> io::Result<Vec<u8>> {
        let command: Command = postcard::from_bytes(command)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let result = self.apply_command(index, command, batch)?;
        postcard::to_stdvec(&result).map_err(io::Error::other)
    }

    fn restored(&self) -> io::Result<()> {
        self.reload_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_raft::metrics::StorageMetrics;
    use std::sync::Arc;

    struct Harness {
        _dir: tempfile::TempDir,
        engine: StorageEngine,
        machine: KvStateMachine,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine =
                StorageEngine::open(dir.path(), Arc::new(StorageMetrics::default())).unwrap();
            let machine = KvStateMachine::open(&engine).unwrap();
            Self {
                _dir: dir,
                engine,
                machine,
                index: 0,
            }
        }

        fn apply(&mut self, command: Command) -> CommandResult {
            self.index += 1;
            let mut batch = ApplyBatch::new(self.engine.database());
            let encoded = postcard::to_stdvec(&command).unwrap();
            let raw = self
                .machine
                .apply(self.index, &encoded, &mut batch)
                .unwrap();
            batch.commit().unwrap();
            postcard::from_bytes(&raw).unwrap()
        }

        fn create(&mut self, name: &str) {
            let result = self.apply(Command::CreateNamespace {
                name: name.into(),
                max_namespaces: 10,
            });
            assert!(
                matches!(result, CommandResult::NamespaceCreated { .. }),
                "{result:?}"
            );
        }

        fn put(&mut self, key: &str, value: &str) -> PutOutcome {
            match self.apply(Command::Put {
                namespace: "ns".into(),
                key: key.into(),
                value: value.into(),
            }) {
                CommandResult::Put(outcome) => outcome,
                other => panic!("{other:?}"),
            }
        }
    }

    fn put_op(key: &str, value: &str) -> WriteOp {
        WriteOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn versions_increase_on_every_change() {
        let mut h = Harness::new();
        h.create("ns");
        let first = h.put("k", "a");
        let second = h.put("k", "b");
        assert_eq!(first.previous_version, 0);
        assert_eq!(second.previous_version, first.version);
        assert!(second.version > first.version);
        assert_eq!(
            h.machine.get("ns", b"k").unwrap(),
            Some((second.version, b"b".to_vec()))
        );
        assert_eq!(h.machine.namespace("ns").unwrap().key_count, 1);
    }

    #[test]
    fn unknown_namespace_is_rejected_identically() {
        let mut h = Harness::new();
        let result = h.apply(Command::Put {
            namespace: "nope".into(),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        });
        assert_eq!(
            result,
            CommandResult::Rejected(Rejection::NamespaceNotFound {
                name: "nope".into()
            })
        );
    }

    #[test]
    fn namespace_cap_and_duplicates() {
        let mut h = Harness::new();
        for name in ["a", "b"] {
            h.apply(Command::CreateNamespace {
                name: name.into(),
                max_namespaces: 2,
            });
        }
        let over = h.apply(Command::CreateNamespace {
            name: "c".into(),
            max_namespaces: 2,
        });
        assert!(matches!(
            over,
            CommandResult::Rejected(Rejection::TooManyNamespaces { limit: 2, .. })
        ));
        let again = h.apply(Command::CreateNamespace {
            name: "a".into(),
            max_namespaces: 5,
        });
        assert!(matches!(
            again,
            CommandResult::Rejected(Rejection::NamespaceExists { .. })
        ));
    }

    /// Table of transaction cases: (setup, compares, expected branch).
    #[test]
    fn transaction_comparisons() {
        let cases: Vec<(&str, Vec<Compare>, bool)> = vec![
            (
                "missing key has version 0",
                vec![cmp("missing", CompareOp::Equal, CompareTarget::Version(0))],
                true,
            ),
            (
                "exists true",
                vec![cmp("k", CompareOp::Equal, CompareTarget::Exists(true))],
                true,
            ),
            (
                "exists false on present key",
                vec![cmp("k", CompareOp::Equal, CompareTarget::Exists(false))],
                false,
            ),
            (
                "value equal",
                vec![cmp(
                    "k",
                    CompareOp::Equal,
                    CompareTarget::Value(b"v1".to_vec()),
                )],
                true,
            ),
            (
                "value greater",
                vec![cmp(
                    "k",
                    CompareOp::Greater,
                    CompareTarget::Value(b"v0".to_vec()),
                )],
                true,
            ),
            (
                "value less fails",
                vec![cmp(
                    "k",
                    CompareOp::Less,
                    CompareTarget::Value(b"v0".to_vec()),
                )],
                false,
            ),
            (
                "missing value never equals",
                vec![cmp(
                    "missing",
                    CompareOp::Equal,
                    CompareTarget::Value(vec![]),
                )],
                false,
            ),
            (
                "missing value is not-equal",
                vec![cmp(
                    "missing",
                    CompareOp::NotEqual,
                    CompareTarget::Value(vec![]),
                )],
                true,
            ),
            (
                "version greater than 0",
                vec![cmp("k", CompareOp::Greater, CompareTarget::Version(0))],
                true,
            ),
            (
                "all must hold",
                vec![
                    cmp("k", CompareOp::Equal, CompareTarget::Exists(true)),
                    cmp(
                        "k",
                        CompareOp::Equal,
                        CompareTarget::Value(b"other".to_vec()),
                    ),
                ],
                false,
            ),
        ];
        for (name, compares, expected) in cases {
            let mut h = Harness::new();
            h.create("ns");
            h.put("k", "v1");
            let result = h.apply(Command::Txn {
                namespace: "ns".into(),
                compares,
                success: vec![put_op("branch", "success")],
                failure: vec![put_op("branch", "failure")],
            });
            let CommandResult::Txn {
                succeeded,
                outcomes,
            } = result
            else {
                panic!("{name}: {result:?}");
            };
            assert_eq!(succeeded, expected, "{name}");
            assert_eq!(outcomes.len(), 1, "{name}");
            let branch = h.machine.get("ns", b"branch").unwrap().unwrap().1;
            assert_eq!(
                branch,
                if expected {
                    b"success".to_vec()
                } else {
                    b"failure".to_vec()
                },
                "{name}"
            );
        }
    }

    fn cmp(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    #[test]
    fn writes_inside_one_transaction_see_each_other() {
        let mut h = Harness::new();
        h.create("ns");
        let result = h.apply(Command::Txn {
            namespace: "ns".into(),
            compares: vec![],
            success: vec![
                put_op("k", "a"),
                put_op("k", "b"),
                WriteOp::Delete { key: b"k".to_vec() },
            ],
            failure: vec![],
        });
        let CommandResult::Txn { outcomes, .. } = result else {
            panic!()
        };
        let WriteOutcome::Put(first) = outcomes[0] else {
            panic!()
        };
        let WriteOutcome::Put(second) = outcomes[1] else {
            panic!()
        };
        let WriteOutcome::Delete(deleted) = outcomes[2] else {
            panic!()
        };
        assert_eq!(second.previous_version, first.version);
        assert!(second.version > first.version);
        assert!(deleted.deleted);
        assert_eq!(deleted.previous_version, second.version);
        assert_eq!(h.machine.get("ns", b"k").unwrap(), None);
        assert_eq!(h.machine.namespace("ns").unwrap().key_count, 0);
    }

    #[test]
    fn imports_keep_versions_and_later_writes_go_above_them() {
        let mut h = Harness::new();
        h.create("ns");
        h.apply(Command::Import {
            namespace: "ns".into(),
            entries: vec![VersionedEntry {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                version: 1_000,
            }],
        });
        assert_eq!(
            h.machine.get("ns", b"k").unwrap(),
            Some((1_000, b"v".to_vec()))
        );
        let next = h.put("k", "w");
        assert_eq!(next.version, 1_001);
    }

    #[test]
    fn deleting_a_namespace_removes_its_keys_only() {
        let mut h = Harness::new();
        h.create("ns");
        h.create("ns2");
        h.put("k", "v");
        h.apply(Command::Put {
            namespace: "ns2".into(),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        });
        let result = h.apply(Command::DeleteNamespace { name: "ns".into() });
        assert_eq!(result, CommandResult::NamespaceDeleted { keys_deleted: 1 });
        assert!(h.machine.namespace("ns").is_none());
        assert!(h.machine.get("ns2", b"k").unwrap().is_some());
        assert_eq!(h.machine.get("ns", b"k").unwrap(), None);
    }
}
