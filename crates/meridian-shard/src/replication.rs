//! Cross-region replication of active-passive namespaces: the primary shard's
//! leader ships each namespace's logged changes to every standby shard.
//!
//! The change log lives in the state machine (every replica has it, so a new
//! leader carries on where the old one stopped). The cursor is durable on the
//! *standby*: it applies changes through Raft and answers with the last sequence
//! number it applied, so after any restart or link loss the primary asks first
//! ("empty batch") and resumes from there. Batches are postcard, zstd-compressed,
//! in sequence order; the standby skips what it has and stops at a gap, so a
//! batch may be resent safely.
//!
//! One task per (namespace, standby) pair, started and stopped as the routing
//! table changes. Each task acts only while this node leads its shard, wakes on
//! every applied entry, and keeps the pair's progress for `ReplicationStatus` and
//! the lag metrics.

use crate::command::{ChangeRecord, NamespaceRole};
use crate::node::ShardNode;
use meridian_client::routes::SharedRoutes;
use meridian_client::{Client, ClientOptions, pb};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Changes per batch at most.
const MAX_BATCH_CHANGES: usize = 1_024;
/// Largest decompressed batch a standby accepts (guards against a batch that
/// would expand without bound).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// zstd level: fast, still a good ratio on key-value batches.
const ZSTD_LEVEL: i32 = 3;
/// A caught-up standby hears from its primary at least this often.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Key-values per chunk of a full copy.
const RESYNC_CHUNK: usize = 2_048;
/// Trim the log once standbys are this many changes past the last trim.
const TRIM_EVERY: u64 = 1_024;

/// Compresses a batch for the wire; returns the payload and the raw size.
pub fn encode_batch(changes: &[ChangeRecord]) -> std::io::Result<(Vec<u8>, usize)> {
    let raw = postcard::to_stdvec(changes).map_err(std::io::Error::other)?;
    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    Ok((compressed, raw.len()))
}

/// Decodes a batch from the wire, refusing one that expands past
/// [`MAX_BATCH_BYTES`].
pub fn decode_batch(payload: &[u8]) -> std::io::Result<Vec<ChangeRecord>> {
    let raw = zstd::bulk::decompress(payload, MAX_BATCH_BYTES)?;
    postcard::from_bytes(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Compresses key-values for a full copy.
pub fn encode_entries(entries: &[crate::command::VersionedEntry]) -> std::io::Result<Vec<u8>> {
    let raw = postcard::to_stdvec(entries).map_err(std::io::Error::other)?;
    zstd::bulk::compress(&raw, ZSTD_LEVEL)
}

/// Decodes key-values of a full copy (bounded like [`decode_batch`]).
pub fn decode_entries(payload: &[u8]) -> std::io::Result<Vec<crate::command::VersionedEntry>> {
    let raw = zstd::bulk::decompress(payload, MAX_BATCH_BYTES)?;
    postcard::from_bytes(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// What the primary's leader knows about one standby of one namespace.
#[derive(Debug, Clone, Default)]
pub struct StandbyProgress {
    /// The standby's region.
    pub region: String,
    /// Last sequence number it confirmed (None before its first answer).
    pub acked: Option<u64>,
    /// The primary's last logged sequence number when last looked at.
    pub head: u64,
    /// Since when the oldest change it has not confirmed has been waiting.
    pub waiting_since: Option<Instant>,
    /// Compressed bytes sent to it.
    pub bytes_sent: u64,
}

impl StandbyProgress {
    /// Changes logged but not confirmed.
    pub fn lag_entries(&self) -> u64 {
        self.head.saturating_sub(self.acked.unwrap_or(0))
    }

    /// How long the oldest unconfirmed change has waited.
    pub fn lag_seconds(&self) -> f64 {
        self.waiting_since
            .map_or(0.0, |since| since.elapsed().as_secs_f64())
    }
}

/// A token bucket on the bytes a node ships (the configured bandwidth cap).
#[derive(Debug)]
pub struct BandwidthCap {
    bytes_per_second: u64,
    /// Tokens available and when they were last topped up.
    state: Mutex<(f64, Instant)>,
}

impl BandwidthCap {
    /// A cap of `bytes_per_second` (0: none).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second,
            state: Mutex::new((bytes_per_second as f64, Instant::now())),
        }
    }

    /// How long to wait before `bytes` may be sent (taking them now).
    fn reserve(&self, bytes: usize) -> Duration {
        if self.bytes_per_second == 0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_second as f64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refilled = (state.0 + now.duration_since(state.1).as_secs_f64() * rate).min(rate);
        // Tokens may go negative: a batch larger than the bucket still goes,
        // and later batches wait for the debt to be paid.
        *state = (refilled - bytes as f64, now);
        if state.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.0 / rate)
        }
    }

    /// Waits until `bytes` may be sent.
    pub async fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Progress of every (namespace, standby shard) pair this node ships.
#[derive(Debug)]
pub struct ReplicationProgress {
    pairs: Mutex<HashMap<(String, String), StandbyProgress>>,
    /// Uncompressed bytes of the changes shipped.
    pub raw_bytes_sent: AtomicU64,
    /// Bumped whenever a standby confirms more; sync writes wait on it.
    acks: tokio::sync::watch::Sender<u64>,
}

impl Default for ReplicationProgress {
    fn default() -> Self {
        Self {
            pairs: Mutex::default(),
            raw_bytes_sent: AtomicU64::new(0),
            acks: tokio::sync::watch::channel(0).0,
        }
    }
}

impl ReplicationProgress {
    /// A copy of every pair's progress.
    pub fn snapshot(&self) -> HashMap<(String, String), StandbyProgress> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, namespace: &str, shard: &str, change: impl FnOnce(&mut StandbyProgress)) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let pair = pairs
            .entry((namespace.to_string(), shard.to_string()))
            .or_default();
        let before = pair.acked;
        change(pair);
        if pair.acked != before {
            self.acks.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The furthest any standby of `namespace` has confirmed.
    pub fn best_acked(&self, namespace: &str) -> u64 {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, p)| p.acked)
            .max()
            .unwrap_or(0)
    }

    /// The standby of `namespace` furthest behind `head`: its shard, region,
    /// changes behind, and the age of its oldest unconfirmed change.
    pub fn worst_lag(&self, namespace: &str, head: u64) -> Option<(String, String, u64, f64)> {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, shard), p)| {
                (
                    shard.clone(),
                    p.region.clone(),
                    head.saturating_sub(p.acked.unwrap_or(0)),
                    p.lag_seconds(),
                )
            })
            .max_by(|a, b| a.2.cmp(&b.2).then(a.3.total_cmp(&b.3)))
    }

    /// Waits until the next confirmation from any standby, or `timeout`.
    pub async fn wait_any_ack(&self, timeout: Duration) {
        let mut acks = self.acks.subscribe();
        acks.borrow_and_update();
        let _ = tokio::time::timeout(timeout, acks.changed()).await;
    }

    /// Waits until some standby of `namespace` confirmed `seq`, or `timeout`.
    pub async fn wait_acked(&self, namespace: &str, seq: u64, timeout: Duration) -> bool {
        let mut acks = self.acks.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            acks.borrow_and_update();
            if self.best_acked(namespace) >= seq {
                return true;
            }
            match tokio::time::timeout_at(deadline, acks.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    fn forget(&self, namespace: &str, shard: &str) {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), shard.to_string()));
    }
}

/// A standby a namespace ships to: its shard, region and member addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    region: String,
    shard: String,
    members: Vec<String>,
}

/// Keeps one shipping task per (namespace, standby) of the namespaces this
/// shard is primary for, following the routing table. Runs until aborted.
pub async fn run(node: Arc<ShardNode>, routes: SharedRoutes, dialer: meridian_net::Dialer) {
    let mut tasks: HashMap<(String, String), (Target, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        let wanted = wanted_pairs(&node, &routes);
        tasks.retain(|key, (target, task)| {
            let keep = wanted.get(key) == Some(target) && !task.is_finished();
            if !keep {
                task.abort();
                node.replication.forget(&key.0, &key.1);
            }
            keep
        });
        for (key, target) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(ship(
                node.clone(),
                key.0.clone(),
                target.clone(),
                dialer.clone(),
            ));
            tasks.insert(key, (target, task));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The (namespace, standby shard) pairs this shard should ship now: routes
/// whose primary is this shard and whose namespace is a primary here.
fn wanted_pairs(node: &ShardNode, routes: &SharedRoutes) -> HashMap<(String, String), Target> {
    let shard = &node.config.node.shard;
    let table = routes.read().unwrap_or_else(|e| e.into_inner());
    let mut wanted = HashMap::new();
    for route in table.routes.values() {
        if &route.shard != shard || route.standbys.is_empty() {
            continue;
        }
        let Some(record) = node.machine.namespace(&route.namespace) else {
            continue;
        };
        if record.role != NamespaceRole::Primary || !record.log_changes {
            continue;
        }
        for standby in &route.standbys {
            let members = table
                .shards
                .get(&standby.shard)
                .cloned()
                .unwrap_or_default();
            if members.is_empty() {
                continue;
            }
            wanted.insert(
                (route.namespace.clone(), standby.shard.clone()),
                Target {
                    region: standby.region.clone(),
                    shard: standby.shard.clone(),
                    members,
                },
            );
        }
    }
    wanted
}

/// Ships `namespace` to one standby for as long as the task lives.
async fn ship(
    node: Arc<ShardNode>,
    namespace: String,
    target: Target,
    dialer: meridian_net::Dialer,
) {
    let client = match Client::with_options(
        target.members.clone(),
        ClientOptions {
            attempt_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(5),
            dialer,
            ..ClientOptions::default()
        },
    ) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%namespace, standby = %target.shard, error = %err, "cannot ship");
            return;
        }
    };
    node.replication.update(&namespace, &target.shard, |p| {
        p.region = target.region.clone();
    });
    let mut changed = node.machine.subscribe_changes();
    let mut acked: Option<u64> = None;
    let mut trimmed = 0u64;
    let mut failures = 0u32;
    loop {
        if !node.raft.raft.is_leader() {
            acked = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let Some(record) = node.machine.namespace(&namespace) else {
            return;
        };
        if record.role != NamespaceRole::Primary {
            // Fenced or demoted: the route will stop this task shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let head = record.change_seq;
        let result = match acked {
            // Where is the standby? Its answer is the durable cursor.
            None => send(&client, &namespace, record.epoch, head).await,
            Some(position) if position < head => {
                match node
                    .machine
                    .changes_after(&namespace, position, MAX_BATCH_CHANGES)
                {
                    Ok(changes) if changes.first().map(|c| c.seq) == Some(position + 1) => {
                        send_counted(
                            &node,
                            &client,
                            &namespace,
                            record.epoch,
                            &target,
                            &changes,
                            head,
                        )
                        .await
                    }
                    Ok(changes) if changes.is_empty() && position >= record.trimmed_through => {
                        // Applied in memory, its batch not yet committed to the
                        // engine: read again in a moment.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    Ok(_) => {
                        // The log no longer reaches back to the standby's
                        // position (trimmed before it joined): a full copy.
                        tracing::warn!(
                            %namespace,
                            standby = %target.shard,
                            position,
                            trimmed_through = record.trimmed_through,
                            "standby is behind the change log; sending a full copy"
                        );
                        full_copy(&node, &client, &namespace, record.epoch)
                            .await
                            .map(|applied_seq| pb::ReplicateResponse {
                                applied_seq,
                                resync_needed: false,
                            })
                    }
                    Err(err) => Err(err.to_string()),
                }
            }
            Some(position) => Ok(pb::ReplicateResponse {
                applied_seq: position,
                resync_needed: false,
            }),
        };
        // A diverged standby (a demoted primary) is rebuilt with a full copy.
        let result = match result {
            Ok(response) if response.resync_needed => {
                full_copy(&node, &client, &namespace, record.epoch).await
            }
            Ok(response) => Ok(response.applied_seq),
            Err(err) => Err(err),
        };
        match result {
            Ok(position) => {
                failures = 0;
                acked = Some(position);
                node.replication.update(&namespace, &target.shard, |p| {
                    p.acked = Some(position);
                    p.head = head.max(position);
                    if position >= head {
                        p.waiting_since = None;
                    } else if p.waiting_since.is_none() {
                        p.waiting_since = Some(Instant::now());
                    }
                });
                if position >= trimmed + TRIM_EVERY {
                    trimmed = trim(&node, &namespace, position).await.unwrap_or(trimmed);
                }
                if position < head {
                    continue;
                }
            }
            Err(err) => {
                failures += 1;
                acked = None;
                node.replication.update(&namespace, &target.shard, |p| {
                    p.head = head;
                    if p.waiting_since.is_none() && head > p.acked.unwrap_or(0) {
                        p.waiting_since = Some(Instant::now());
                    }
                });
                if failures % 10 == 1 {
                    tracing::warn!(%namespace, standby = %target.shard, error = %err, "shipping failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        // Caught up: wait for the next logged change; after a quiet spell, ask
        // again (a heartbeat that keeps the standby's freshness known).
        if tokio::time::timeout(HEARTBEAT, changed.changed())
            .await
            .is_err()
        {
            acked = None;
        }
        changed.borrow_and_update();
        node.replication.update(&namespace, &target.shard, |p| {
            p.head = node
                .machine
                .namespace(&namespace)
                .map_or(p.head, |r| r.change_seq);
            if p.head > p.acked.unwrap_or(0) && p.waiting_since.is_none() {
                p.waiting_since = Some(Instant::now());
            }
        });
    }
}

async fn send_counted(
    node: &ShardNode,
    client: &Client,
    namespace: &str,
    epoch: u64,
    target: &Target,
    changes: &[ChangeRecord],
    head: u64,
) -> Result<pb::ReplicateResponse, String> {
    let (payload, raw) = encode_batch(changes).map_err(|e| e.to_string())?;
    let bytes = payload.len() as u64;
    node.bandwidth.take(payload.len()).await;
    let result = send_payload(client, namespace, epoch, changes.len(), payload, None, head).await;
    if result.is_ok() {
        node.replication
            .raw_bytes_sent
            .fetch_add(raw as u64, Ordering::Relaxed);
        node.replication.update(namespace, &target.shard, |p| {
            p.bytes_sent += bytes;
        });
        node.metrics.replication_bytes.inc_by(bytes);
    }
    result
}

/// An empty batch: asks the standby's position and tells it the primary's head
/// (a heartbeat that keeps its freshness known for bounded reads).
async fn send(
    client: &Client,
    namespace: &str,
    epoch: u64,
    head: u64,
) -> Result<pb::ReplicateResponse, String> {
    let (payload, _) = encode_batch(&[]).map_err(|e| e.to_string())?;
    send_payload(client, namespace, epoch, 0, payload, None, head).await
}

async fn send_payload(
    client: &Client,
    namespace: &str,
    epoch: u64,
    count: usize,
    payload: Vec<u8>,
    resync: Option<pb::ResyncChunk>,
    primary_seq: u64,
) -> Result<pb::ReplicateResponse, String> {
    client
        .replicate(pb::ReplicateRequest {
            namespace: namespace.to_string(),
            epoch,
            count: count as u32,
            payload,
            resync,
            primary_seq,
        })
        .await
        .map_err(|e| e.to_string())
}

/// Rebuilds a diverged standby with a full copy of the namespace as of one
/// sequence number; returns that number (the standby's new position).
async fn full_copy(
    node: &ShardNode,
    client: &Client,
    namespace: &str,
    epoch: u64,
) -> Result<u64, String> {
    let (through_seq, entries) = node
        .machine
        .copy_at_seq(namespace)
        .map_err(|e| e.to_string())?;
    tracing::info!(%namespace, through_seq, keys = entries.len(), "rebuilding a diverged standby");
    let chunks: Vec<&[crate::command::VersionedEntry]> = if entries.is_empty() {
        vec![&[]]
    } else {
        entries.chunks(RESYNC_CHUNK).collect()
    };
    let last = chunks.len() - 1;
    let mut position = 0;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let payload = if chunk.is_empty() {
            Vec::new()
        } else {
            encode_entries(chunk).map_err(|e| e.to_string())?
        };
        let response = send_payload(
            client,
            namespace,
            epoch,
            chunk.len(),
            payload,
            Some(pb::ResyncChunk {
                first: i == 0,
                last: i == last,
                through_seq,
            }),
            through_seq,
        )
        .await?;
        position = response.applied_seq;
    }
    Ok(position)
}

/// Drops log entries every standby has; returns the new trim point.
async fn trim(node: &ShardNode, namespace: &str, position: u64) -> Option<u64> {
    // Only what every standby of the namespace has confirmed may go.
    let through = node
        .replication
        .snapshot()
        .iter()
        .filter(|((ns, _), _)| ns == namespace)
        .map(|(_, p)| p.acked.unwrap_or(0))
        .min()?
        .min(position);
    node.propose(crate::command::Command::TrimChanges {
        namespace: namespace.to_string(),
        through,
    })
    .await
    .ok()?;
    Some(through)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ReplicatedWrite;

    #[test]
    fn the_bandwidth_cap_spaces_batches() {
        let cap = BandwidthCap::new(1_000);
        assert_eq!(
            cap.reserve(600),
            Duration::ZERO,
            "a burst of a second's worth"
        );
        let wait = cap.reserve(900);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let none = BandwidthCap::new(0);
        assert_eq!(none.reserve(usize::MAX), Duration::ZERO);
    }

    #[test]
    fn batches_round_trip_and_compress() {
        let changes: Vec<ChangeRecord> = (1..=200)
            .map(|seq| ChangeRecord {
                seq,
                writes: vec![ReplicatedWrite {
                    key: format!("user/{seq:08}").into_bytes(),
                    value: Some(vec![b'x'; 256]),
                    version: seq * 3,
                }],
            })
            .collect();
        let (payload, raw) = encode_batch(&changes).unwrap();
        assert!(payload.len() * 5 < raw, "{} vs {raw}", payload.len());
        assert_eq!(decode_batch(&payload).unwrap(), changes);
        assert!(decode_batch(b"not zstd").is_err());
    }
}
