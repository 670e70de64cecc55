//! Active-active namespaces in the state machine: local writes to typed
//! keys, merges of other regions' writes, and the conflicts those merges
//! resolve.
//!
//! Each key's value is its `KeyState` (see `meridian_replication::crdt`),
//! stored like any value (format byte, postcard) with a version that every
//! copy holding the same state agrees on, so digests compare copies.
//! A peer's change log holds only the writes made in its own region, each
//! as the key's state after it; `change_seq` counts them. How far a peer
//! has merged each other region's writes, its hybrid logical clock and the
//! conflict records live in `kv_active` under the namespace's prefix:
//! `m` -> [`ActiveMeta`], `c` + sequence -> [`ConflictRecord`], and the
//! tombstone index: `t` + number + key (empty) and `T` + key -> number, one
//! pair per key whose state is a deleted register, numbered in the order
//! they became one, so a collection round finds them without reading the
//! namespace's keys (see `meridian_replication::tombstone`).
//!
//! Everything a merge decides uses only the command's contents and the
//! stored state (the leader's clock travels in the command), so every
//! replica of the shard applies it the same way.

use super::{Effects, KvStateMachine, NamespaceRecord};
use crate::command::{
    ActiveOutcome, ChangeRecord, CommandResult, NamespaceRole, Rejection, ReplicatedWrite,
    VersionedEntry,
};
use crate::keys;
use meridian_raft::ApplyBatch;
use meridian_replication::crdt::{Conflict, KeyState, Op, OpError};
use meridian_replication::hlc::{Clock, Observed, Timestamp};
use meridian_replication::tombstone::{self, Frontier, Frontiers, Round};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// Format of a stored key state.
const STATE_FORMAT: u8 = 1;
/// Format of the stored [`ActiveMeta`] (1: [`ActiveMetaV1`], still read).
const META_FORMAT: u8 = 2;
/// Format of a stored [`ConflictRecord`].
const CONFLICT_FORMAT: u8 = 1;

fn invalid(what: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}"))
}

fn encode<T: Serialize>(format: u8, value: &T) -> io::Result<Vec<u8>> {
    let mut out = vec![format];
    out.extend(postcard::to_stdvec(value).map_err(io::Error::other)?);
    Ok(out)
}

fn decode<'a, T: Deserialize<'a>>(format: u8, what: &str, raw: &'a [u8]) -> io::Result<T> {
    match raw.split_first() {
        Some((found, body)) if *found == format => {
            postcard::from_bytes(body).map_err(|e| invalid(what, e))
        }
        Some((other, _)) => Err(invalid(
            what,
            format!("unknown format {other} (this build reads {format})"),
        )),
        None => Err(invalid(what, "empty")),
    }
}

/// Encodes a key's state as stored and shipped.
pub fn encode_state(state: &KeyState) -> io::Result<Vec<u8>> {
    encode(STATE_FORMAT, state)
}

/// Decodes a stored or shipped key state.
pub fn decode_state(raw: &[u8]) -> io::Result<KeyState> {
    decode(STATE_FORMAT, "active-active key state", raw)
}

#[cfg(test)]
pub(super) fn decode_meta_for_tests(raw: &[u8]) -> io::Result<ActiveMeta> {
    decode_meta(raw)
}

/// Decodes a stored [`ActiveMeta`] of either format.
fn decode_meta(raw: &[u8]) -> io::Result<ActiveMeta> {
    if raw.first() == Some(&1) {
        let old: ActiveMetaV1 = decode(1, "active-active state", raw)?;
        return Ok(old.into());
    }
    decode(META_FORMAT, "active-active state", raw)
}

/// A peer's replication and clock state for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveMeta {
    /// This copy's region: the origin of the writes made here.
    pub region: String,
    /// The last stamp the namespace's clock issued or took in.
    pub clock: Timestamp,
    /// How far each other region's own writes have been merged.
    pub merged: BTreeMap<String, u64>,
    /// Conflict records kept at most.
    pub conflict_retention: u64,
    /// Remote stamps further ahead than this are flagged.
    pub max_clock_offset_ms: u64,
    /// The next conflict record's number.
    pub next_conflict: u64,
    /// Conflict records dropped by the retention bound.
    pub dropped_conflicts: u64,
    /// Remote stamps seen too far ahead of this shard's clock.
    pub future_stamps: u64,
    /// Whether every register write of this copy has been counted by its
    /// log position (copies configured by a build from before format 2
    /// counted each key's writes one by one): only then are tombstones
    /// collected, and this copy reports its frontier to its peers.
    pub counts_by_position: bool,
    /// The join of the version vectors of the tombstones collected here: a
    /// register written where its key is absent starts from it.
    pub floor: meridian_replication::crdt::VersionVector,
    /// Every copy's frontier at the last checkpoint of collection.
    pub checkpoint: Option<Frontiers>,
    /// The next tombstone index number.
    pub next_tombstone: u64,
    /// Tombstones held (indexed) now.
    pub tombstones: u64,
    /// Tombstones collected so far.
    pub tombstones_collected: u64,
}

/// [`ActiveMeta`] as format 1 stored it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveMetaV1 {
    /// See [`ActiveMeta`].
    pub region: String,
    /// See [`ActiveMeta`].
    pub clock: Timestamp,
    /// See [`ActiveMeta`].
    pub merged: BTreeMap<String, u64>,
    /// See [`ActiveMeta`].
    pub conflict_retention: u64,
    /// See [`ActiveMeta`].
    pub max_clock_offset_ms: u64,
    /// See [`ActiveMeta`].
    pub next_conflict: u64,
    /// See [`ActiveMeta`].
    pub dropped_conflicts: u64,
    /// See [`ActiveMeta`].
    pub future_stamps: u64,
}

impl From<ActiveMetaV1> for ActiveMeta {
    fn from(old: ActiveMetaV1) -> Self {
        ActiveMeta {
            region: old.region,
            clock: old.clock,
            merged: old.merged,
            conflict_retention: old.conflict_retention,
            max_clock_offset_ms: old.max_clock_offset_ms,
            next_conflict: old.next_conflict,
            dropped_conflicts: old.dropped_conflicts,
            future_stamps: old.future_stamps,
            // Its states may hold per-key counts: never collected.
            counts_by_position: false,
            ..ActiveMeta::default()
        }
    }
}

impl ActiveMeta {
    /// This copy's frontier, its own log at `own_seq`.
    pub fn frontier(&self, own_seq: u64) -> Frontier {
        tombstone::frontier(&self.merged, &self.region, own_seq)
    }
}

/// One resolved conflict, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The key.
    pub key: Vec<u8>,
    /// Both sides.
    pub conflict: Conflict,
    /// When the merge resolved it (the leader's clock, Unix ms).
    pub resolved_at_ms: u64,
    /// The region of the copy that resolved it.
    pub resolved_in: String,
}

impl ConflictRecord {
    /// Bytes of keys and values it carries (for bounding answers).
    pub fn size(&self) -> usize {
        let values = match &self.conflict {
            Conflict::Register { winner, loser } => {
                winner.value.as_ref().map_or(0, Vec::len) + loser.value.as_ref().map_or(0, Vec::len)
            }
            Conflict::Type { .. } => 0,
        };
        self.key.len() + values + 96
    }
}

fn meta_key(namespace: &str) -> Vec<u8> {
    let mut key = keys::namespace_prefix(namespace);
    key.push(b'm');
    key
}

fn conflict_key(namespace: &str, number: u64) -> Vec<u8> {
    let mut key = keys::namespace_prefix(namespace);
    key.push(b'c');
    key.extend_from_slice(&number.to_be_bytes());
    key
}

fn tombstone_entry_key(namespace: &str, number: u64, key: &[u8]) -> Vec<u8> {
    let mut out = keys::namespace_prefix(namespace);
    out.push(b't');
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(key);
    out
}

fn tombstone_number_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = keys::namespace_prefix(namespace);
    out.push(b'T');
    out.extend_from_slice(key);
    out
}

/// Tombstones a collection round looks at, at most.
pub const MAX_TOMBSTONES_PER_ROUND: u32 = 4_096;

fn lossy(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl KvStateMachine {
    /// The peer state of `namespace`, if it is an active-active peer here.
    pub fn active_meta(&self, namespace: &str) -> io::Result<Option<ActiveMeta>> {
        let raw = self
            .active
            .get(meta_key(namespace))
            .map_err(super::storage_error)?;
        raw.map(|raw| decode_meta(&self.unseal(&raw)?)).transpose()
    }

    /// A key's active-active state (`None`: never written).
    pub fn active_state(&self, namespace: &str, key: &[u8]) -> io::Result<Option<KeyState>> {
        self.get(namespace, key)?
            .map(|(_, raw)| decode_state(&raw))
            .transpose()
    }

    /// The conflict records of `namespace` numbered below `before` (0: from
    /// the newest), newest first, each with its number: at most `limit` (0:
    /// no count limit) and about `max_bytes` of keys and values (always at
    /// least one, so a reader paging with the last number makes progress);
    /// with whether older ones are kept.
    pub fn conflicts(
        &self,
        namespace: &str,
        before: u64,
        limit: usize,
        max_bytes: usize,
    ) -> io::Result<(Vec<(u64, ConflictRecord)>, bool)> {
        let records = if before == 0 {
            let mut prefix = keys::namespace_prefix(namespace);
            prefix.push(b'c');
            self.active.prefix(prefix)
        } else {
            self.active
                .range(conflict_key(namespace, 0)..conflict_key(namespace, before))
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for guard in records.rev() {
            if (limit > 0 && out.len() >= limit) || bytes >= max_bytes {
                return Ok((out, true));
            }
            let (key, raw) = guard.into_inner().map_err(super::storage_error)?;
            let number = key
                .len()
                .checked_sub(8)
                .and_then(|at| key.get(at..))
                .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| invalid("conflict record key", "shorter than its number"))?;
            let record: ConflictRecord =
                decode(CONFLICT_FORMAT, "conflict record", &self.unseal(&raw)?)?;
            bytes = bytes.saturating_add(record.size());
            out.push((number, record));
        }
        Ok((out, false))
    }

    fn pending_meta(&self, batch: &ApplyBatch, namespace: &str) -> io::Result<Option<ActiveMeta>> {
        batch
            .get(&self.active, &meta_key(namespace))?
            .map(|raw| decode_meta(&raw))
            .transpose()
    }

    fn store_meta(
        &self,
        namespace: &str,
        meta: &ActiveMeta,
        batch: &mut ApplyBatch,
    ) -> io::Result<()> {
        batch.insert(
            &self.active,
            meta_key(namespace),
            encode(META_FORMAT, meta)?,
        );
        Ok(())
    }

    /// Removes every active-active record of `namespace` (it is deleted).
    pub(super) fn forget_active(&self, namespace: &str, batch: &mut ApplyBatch) -> io::Result<()> {
        for key in batch.keys_with_prefix(&self.active, &keys::namespace_prefix(namespace))? {
            batch.remove(&self.active, key);
        }
        Ok(())
    }

    /// [`crate::command::Command::ConfigurePeer`].
    pub(super) fn configure_peer(
        &self,
        namespace: &str,
        epoch: u64,
        region: String,
        (conflict_retention, max_clock_offset_ms): (u64, u64),
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        let Some(mut record) = self.namespace(namespace) else {
            return Ok(CommandResult::Rejected(Rejection::NamespaceNotFound {
                name: namespace.to_string(),
            }));
        };
        if epoch < record.epoch {
            return Ok(CommandResult::Rejected(Rejection::StaleEpoch {
                name: namespace.to_string(),
                current: record.epoch,
                requested: epoch,
            }));
        }
        if record.role != NamespaceRole::Peer && record.key_count > 0 {
            // Plain values are not key states: a namespace holding data
            // cannot become a peer in place.
            return Ok(CommandResult::Rejected(Rejection::RefusedActiveActive {
                name: namespace.to_string(),
                operation: "becoming an active-active peer".into(),
                why: format!(
                    "this copy already holds {} keys written as plain values",
                    record.key_count
                ),
            }));
        }
        // A copy configured now counts by log position from its first
        // write; one configured by an older build keeps what it had.
        let mut meta = self
            .pending_meta(batch, namespace)?
            .unwrap_or_else(|| ActiveMeta {
                counts_by_position: true,
                ..ActiveMeta::default()
            });
        meta.region = region;
        meta.conflict_retention = conflict_retention;
        meta.max_clock_offset_ms = max_clock_offset_ms;
        self.store_meta(namespace, &meta, batch)?;
        if !record.log_changes {
            super::start_change_log(&mut record);
        }
        record.role = NamespaceRole::Peer;
        record.epoch = epoch;
        record.log_changes = true;
        record.sync = false;
        record.max_lag_entries = 0;
        record.max_lag_ms = 0;
        self.store_record(namespace, record, batch)?;
        Ok(CommandResult::Configured)
    }

    /// The peer record and state of `namespace`, or why a write or merge
    /// may not touch it.
    fn peer(
        &self,
        namespace: &str,
        operation: &str,
        batch: &ApplyBatch,
    ) -> io::Result<Result<(NamespaceRecord, ActiveMeta), Rejection>> {
        let Some(record) = self.namespace(namespace) else {
            return Ok(Err(Rejection::NamespaceNotFound {
                name: namespace.to_string(),
            }));
        };
        match (record.role, self.pending_meta(batch, namespace)?) {
            (NamespaceRole::Peer, Some(meta)) => Ok(Ok((record, meta))),
            _ => Ok(Err(Rejection::NotActiveActive {
                name: namespace.to_string(),
                operation: operation.to_string(),
            })),
        }
    }

    /// [`crate::command::Command::ActiveWrite`].
    pub(super) fn active_write(
        &self,
        namespace: &str,
        key: Vec<u8>,
        op: Op,
        physical_ms: u64,
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        let (record, mut meta) = match self.peer(namespace, operation_name(&op), batch)? {
            Ok(peer) => peer,
            Err(rejection) => return Ok(CommandResult::Rejected(rejection)),
        };
        let previous = self.pending_get(batch, namespace, &key)?;
        let mut state = match &previous {
            Some((_, raw)) => decode_state(raw)?,
            None => KeyState::default(),
        };
        let was_tombstone = state.is_tombstone();
        let mut clock = Clock::new(meta.clock, meta.max_clock_offset_ms);
        let stamp = clock.stamp_after(physical_ms, state.newest_stamp());
        // Logged under the next number of this region's own log.
        let change_seq = record.change_seq.saturating_add(1);
        let applied = if meta.counts_by_position {
            state.apply_logged(&op, &meta.region, stamp, change_seq, &meta.floor)
        } else {
            state.apply(&op, &meta.region, stamp)
        };
        if let Err(refused) = applied {
            let why = match refused {
                OpError::WrongType { actual, wanted } => format!(
                    "the key is a {actual} (its type is fixed by its first write); a {wanted} operation does not apply"
                ),
                other => other.to_string(),
            };
            return Ok(CommandResult::Rejected(Rejection::KeyType {
                name: namespace.to_string(),
                key: lossy(&key),
                why,
            }));
        }
        meta.clock = clock.last();
        let counter = state
            .counter_value()
            .and_then(|value| i64::try_from(value).ok());
        let previous_version = previous.as_ref().map_or(0, |(version, _)| *version);
        let mut effects = Effects::default();
        let version = self.store_state(
            namespace,
            &key,
            &state,
            previous.as_ref(),
            batch,
            &mut effects,
        )?;
        self.index_tombstone(namespace, &key, was_tombstone, &state, &mut meta, batch)?;
        effects.writes.push(ReplicatedWrite {
            key,
            value: Some(encode_state(&state)?),
            version,
            previous_version: Some(previous_version),
        });
        self.store_meta(namespace, &meta, batch)?;
        self.record_effects(namespace, record, effects, batch)?;
        Ok(CommandResult::ActiveWritten(ActiveOutcome {
            version,
            previous_version,
            stamp,
            counter,
            change_seq,
        }))
    }

    /// Stores `state` as `key`'s value; returns its version.
    fn store_state(
        &self,
        namespace: &str,
        key: &[u8],
        state: &KeyState,
        previous: Option<&(u64, Vec<u8>)>,
        batch: &mut ApplyBatch,
        effects: &mut Effects,
    ) -> io::Result<u64> {
        let version = state.version();
        let encoded = encode_state(state)?;
        if previous.is_none() {
            effects.key_delta += 1;
        }
        effects.entry_changed(key, previous, Some((version, &encoded)));
        batch.insert(
            &self.data,
            keys::data_key(namespace, key),
            keys::encode_value(version, &encoded),
        );
        Ok(version)
    }

    /// Merges one incoming key state into this copy; records the conflicts
    /// it resolves and flags stamps too far ahead.
    #[allow(clippy::too_many_arguments)]
    fn merge_key(
        &self,
        namespace: &str,
        key: &[u8],
        incoming: &KeyState,
        physical_ms: u64,
        meta: &mut ActiveMeta,
        batch: &mut ApplyBatch,
        effects: &mut Effects,
    ) -> io::Result<()> {
        let previous = self.pending_get(batch, namespace, key)?;
        let local = match &previous {
            Some((_, raw)) => decode_state(raw)?,
            None => KeyState::default(),
        };
        let (merged, conflicts) = local.merge(incoming);
        if let Some(stamp) = incoming.newest_stamp() {
            let mut clock = Clock::new(meta.clock, meta.max_clock_offset_ms);
            match clock.observe(stamp, physical_ms) {
                Observed::Within => meta.clock = clock.last(),
                Observed::Flagged { ahead_ms } => {
                    meta.future_stamps = meta.future_stamps.saturating_add(1);
                    tracing::warn!(
                        %namespace,
                        key = %lossy(key),
                        ahead_ms,
                        max_clock_offset_ms = meta.max_clock_offset_ms,
                        "a merged write is stamped further ahead of this shard's clock than max_clock_offset_ms; kept, flagged, and the clock does not follow it"
                    );
                }
            }
        }
        for conflict in conflicts {
            self.record_conflict(namespace, key, conflict, physical_ms, meta, batch)?;
        }
        if merged != local {
            self.store_state(namespace, key, &merged, previous.as_ref(), batch, effects)?;
            self.index_tombstone(namespace, key, local.is_tombstone(), &merged, meta, batch)?;
        }
        Ok(())
    }

    /// Keeps the tombstone index in step with a key whose state changed
    /// from one that `was_tombstone` to `state`.
    fn index_tombstone(
        &self,
        namespace: &str,
        key: &[u8],
        was_tombstone: bool,
        state: &KeyState,
        meta: &mut ActiveMeta,
        batch: &mut ApplyBatch,
    ) -> io::Result<()> {
        match (was_tombstone, state.is_tombstone()) {
            (false, true) => {
                let number = meta.next_tombstone;
                meta.next_tombstone = number.saturating_add(1);
                meta.tombstones = meta.tombstones.saturating_add(1);
                batch.insert(
                    &self.active,
                    tombstone_entry_key(namespace, number, key),
                    Vec::new(),
                );
                batch.insert(
                    &self.active,
                    tombstone_number_key(namespace, key),
                    number.to_be_bytes().to_vec(),
                );
            }
            (true, false) => self.unindex_tombstone(namespace, key, meta, batch)?,
            _ => {}
        }
        Ok(())
    }

    fn unindex_tombstone(
        &self,
        namespace: &str,
        key: &[u8],
        meta: &mut ActiveMeta,
        batch: &mut ApplyBatch,
    ) -> io::Result<()> {
        let number_key = tombstone_number_key(namespace, key);
        // A tombstone stored by a build without the index has no entry.
        if let Some(raw) = batch.get(&self.active, &number_key)? {
            let number = <[u8; 8]>::try_from(raw.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| invalid("tombstone index", "a number is not 8 bytes"))?;
            batch.remove(&self.active, tombstone_entry_key(namespace, number, key));
            batch.remove(&self.active, number_key);
            meta.tombstones = meta.tombstones.saturating_sub(1);
        }
        Ok(())
    }

    /// [`crate::command::Command::CollectTombstones`]: one round (see
    /// `meridian_replication::tombstone`).
    pub(super) fn collect_tombstones(
        &self,
        namespace: &str,
        peers: BTreeMap<String, Option<Frontier>>,
        limit: u32,
        physical_ms: u64,
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        let (record, mut meta) = match self.peer(namespace, "collecting tombstones", batch)? {
            Ok(peer) => peer,
            Err(rejection) => return Ok(CommandResult::Rejected(rejection)),
        };
        let waiting = |why: String| {
            Ok(CommandResult::TombstonesCollected {
                collected: 0,
                waiting: Some(why),
            })
        };
        if !meta.counts_by_position {
            return waiting(
                "this copy was configured by a build that counted each key's writes one by one; its tombstones are kept".into(),
            );
        }
        let mut now = peers;
        now.insert(meta.region.clone(), Some(meta.frontier(record.change_seq)));
        let stable = match tombstone::round(meta.checkpoint.as_ref(), &now) {
            Round::Unheard { copy } => {
                return waiting(format!(
                    "the copy in {copy} has not said how far it has merged"
                ));
            }
            Round::Behind {
                copy,
                region,
                merged,
                needed,
            } => {
                return waiting(format!(
                    "the copy in {copy} has merged {region}'s writes through {merged}, the checkpoint needs {needed}"
                ));
            }
            Round::Start => None,
            Round::Stable { stable } => Some(stable),
        };
        let next_checkpoint: Frontiers = now
            .into_iter()
            .map(|(region, said)| (region, said.unwrap_or_default()))
            .collect();
        let Some(stable) = stable else {
            meta.checkpoint = Some(next_checkpoint);
            self.store_meta(namespace, &meta, batch)?;
            return Ok(CommandResult::TombstonesCollected {
                collected: 0,
                waiting: None,
            });
        };
        // A round is a local event: the clock reads the time, so a delete
        // stamped ahead of it is collected once time has passed it.
        let mut clock = Clock::new(meta.clock, meta.max_clock_offset_ms);
        clock.tick(physical_ms);
        meta.clock = clock.last();
        let mut prefix = keys::namespace_prefix(namespace);
        prefix.push(b't');
        let limit = limit.min(MAX_TOMBSTONES_PER_ROUND) as usize;
        let entries =
            batch.first_keys_with_prefix(&self.active, &prefix, limit.saturating_add(1))?;
        let truncated = entries.len() > limit;
        let mut effects = Effects::default();
        let mut collected = 0u64;
        for entry in entries.into_iter().take(limit) {
            let Some(key) = entry.get(prefix.len().saturating_add(8)..) else {
                return Err(invalid(
                    "tombstone index",
                    "an entry shorter than its number",
                ));
            };
            let previous = self.pending_get(batch, namespace, key)?;
            let state = match &previous {
                Some((_, raw)) => decode_state(raw)?,
                None => KeyState::default(),
            };
            let Some(part) = state.register.as_ref().filter(|_| state.is_tombstone()) else {
                // Not a tombstone any more (cannot happen: every change
                // of the key updates the index); the entry is stale.
                self.unindex_tombstone(namespace, key, &mut meta, batch)?;
                continue;
            };
            let stamp = state.newest_stamp().unwrap_or_default();
            if tombstone::collectible(&part.state.seen.0, stamp, meta.clock, &stable).is_err() {
                continue;
            }
            let seen = part.state.seen.clone();
            let key = key.to_vec();
            batch.remove(&self.data, keys::data_key(namespace, &key));
            effects.key_delta -= 1;
            effects.entry_changed(&key, previous.as_ref(), None);
            self.unindex_tombstone(namespace, &key, &mut meta, batch)?;
            meta.floor.join(&seen);
            collected = collected.saturating_add(1);
        }
        meta.tombstones_collected = meta.tombstones_collected.saturating_add(collected);
        // With tombstones left unread, the next round looks again against
        // the same checkpoint (still passed); otherwise a new one starts.
        if !truncated {
            meta.checkpoint = Some(next_checkpoint);
        }
        self.store_meta(namespace, &meta, batch)?;
        // Collection is not a write: nothing is logged or shipped; every
        // copy collects on its own.
        self.record_effects(namespace, record, effects, batch)?;
        Ok(CommandResult::TombstonesCollected {
            collected,
            waiting: None,
        })
    }

    fn record_conflict(
        &self,
        namespace: &str,
        key: &[u8],
        conflict: Conflict,
        physical_ms: u64,
        meta: &mut ActiveMeta,
        batch: &mut ApplyBatch,
    ) -> io::Result<()> {
        let record = ConflictRecord {
            key: key.to_vec(),
            conflict,
            resolved_at_ms: physical_ms,
            resolved_in: meta.region.clone(),
        };
        let number = meta.next_conflict;
        meta.next_conflict = number.saturating_add(1);
        batch.insert(
            &self.active,
            conflict_key(namespace, number),
            encode(CONFLICT_FORMAT, &record)?,
        );
        // The retention bound: the oldest record goes.
        if meta.conflict_retention > 0 && number >= meta.conflict_retention {
            let oldest = number - meta.conflict_retention;
            batch.remove(&self.active, conflict_key(namespace, oldest));
            meta.dropped_conflicts = meta.dropped_conflicts.saturating_add(1);
        }
        Ok(())
    }

    /// [`crate::command::Command::MergeChanges`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn merge_changes(
        &self,
        namespace: &str,
        epoch: u64,
        origin: &str,
        changes: Vec<ChangeRecord>,
        physical_ms: u64,
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        let (record, mut meta) = match self.merge_target(namespace, epoch, origin, batch)? {
            Ok(peer) => peer,
            Err(rejection) => return Ok(CommandResult::Rejected(rejection)),
        };
        let mut position = meta.merged.get(origin).copied().unwrap_or(0);
        let mut effects = Effects::default();
        for change in changes {
            if change.seq <= position {
                continue;
            }
            if Some(change.seq) != position.checked_add(1) {
                break;
            }
            for write in &change.writes {
                let Some(raw) = &write.value else { continue };
                let incoming = decode_state(raw)?;
                self.merge_key(
                    namespace,
                    &write.key,
                    &incoming,
                    physical_ms,
                    &mut meta,
                    batch,
                    &mut effects,
                )?;
            }
            position = change.seq;
        }
        meta.merged.insert(origin.to_string(), position);
        self.store_meta(namespace, &meta, batch)?;
        // Merged writes are not this region's: nothing is logged.
        self.record_effects(namespace, record, effects, batch)?;
        Ok(CommandResult::Replicated {
            applied_seq: position,
        })
    }

    /// [`crate::command::Command::MergeCopy`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn merge_copy(
        &self,
        namespace: &str,
        epoch: u64,
        origin: &str,
        entries: Vec<VersionedEntry>,
        through_seq: Option<u64>,
        physical_ms: u64,
        batch: &mut ApplyBatch,
    ) -> io::Result<CommandResult> {
        let (record, mut meta) = match self.merge_target(namespace, epoch, origin, batch)? {
            Ok(peer) => peer,
            Err(rejection) => return Ok(CommandResult::Rejected(rejection)),
        };
        let mut effects = Effects::default();
        for entry in entries {
            let incoming = decode_state(&entry.value)?;
            self.merge_key(
                namespace,
                &entry.key,
                &incoming,
                physical_ms,
                &mut meta,
                batch,
                &mut effects,
            )?;
        }
        let position = meta.merged.get(origin).copied().unwrap_or(0);
        let position = through_seq.map_or(position, |through| position.max(through));
        meta.merged.insert(origin.to_string(), position);
        self.store_meta(namespace, &meta, batch)?;
        self.record_effects(namespace, record, effects, batch)?;
        Ok(CommandResult::Replicated {
            applied_seq: position,
        })
    }

    fn merge_target(
        &self,
        namespace: &str,
        epoch: u64,
        origin: &str,
        batch: &ApplyBatch,
    ) -> io::Result<Result<(NamespaceRecord, ActiveMeta), Rejection>> {
        let (record, meta) = match self.peer(namespace, "merging another region's writes", batch)? {
            Ok(peer) => peer,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if epoch != record.epoch {
            return Ok(Err(Rejection::StaleEpoch {
                name: namespace.to_string(),
                current: record.epoch,
                requested: epoch,
            }));
        }
        if origin == meta.region {
            return Ok(Err(Rejection::RefusedActiveActive {
                name: namespace.to_string(),
                operation: "merging writes".into(),
                why: format!("they claim to come from {origin}, this copy's own region"),
            }));
        }
        Ok(Ok((record, meta)))
    }
}

/// How an operation is named in refusals.
fn operation_name(op: &Op) -> &'static str {
    match op {
        Op::Put(Some(_)) => "put",
        Op::Put(None) => "delete",
        Op::Increment(_) => "increment",
        Op::SetAdd(_) => "set add",
        Op::SetRemove(_) => "set remove",
    }
}
