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
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use meridian_client::routes::SharedRoutes;
use meridian_client::{Client, ClientOptions, pb};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Changes per batch at most.
const MAX_BATCH_CHANGES: usize = 1_024;
/// Batches on the wire to one standby at once: enough to cover a WAN round
/// trip at thousands of writes a second, few enough that a stalled standby does
/// not pile up work.
const MAX_IN_FLIGHT: usize = 8;
/// Largest decompressed batch a standby accepts (guards against a batch that
/// would expand without bound).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// zstd level: fast, still a good ratio on key-value batches.
const ZSTD_LEVEL: i32 = 3;
/// A caught-up standby hears from its primary at least this often.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Key-values per chunk of a full copy.
const RESYNC_CHUNK: usize = 2_048;
/// Bytes of keys and values per replication request (a batch of changes or
/// a chunk of a full copy), well under the 8 MiB a node accepts per
/// request; a single change larger than this still goes alone (it fit in
/// the client's request that made it).
const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// Splits `items` into consecutive runs of at most `max_items` items and
/// `max_bytes` bytes (by `size`), each holding at least one item; an empty
/// input gives one empty run (a full copy of an empty namespace still
/// sends its single, empty chunk).
fn runs_within<T>(
    items: &[T],
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        if i > start && (i - start >= max_items || bytes.saturating_add(item_bytes) > max_bytes) {
            runs.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(item_bytes);
    }
    if start < items.len() || runs.is_empty() {
        runs.push(&items[start..]);
    }
    runs
}

/// Bytes a change carries (keys, values and a little per write).
fn change_bytes(change: &ChangeRecord) -> usize {
    change
        .writes
        .iter()
        .map(|w| w.key.len() + w.value.as_ref().map_or(0, Vec::len) + 24)
        .sum()
}
/// Trim the log once standbys are this many changes past the last trim.
const TRIM_EVERY: u64 = 1_024;

/// Compresses a batch for the wire (format [`crate::formats::BATCH_FORMAT`]);
/// returns the payload and the raw size.
pub fn encode_batch(changes: &[ChangeRecord]) -> std::io::Result<(Vec<u8>, usize)> {
    let raw = postcard::to_stdvec(changes).map_err(std::io::Error::other)?;
    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL)?;
    Ok((compressed, raw.len()))
}

/// Decodes a batch of `format` from the wire, refusing one that expands past
/// [`MAX_BATCH_BYTES`].
pub fn decode_batch(payload: &[u8], format: u32) -> std::io::Result<Vec<ChangeRecord>> {
    let raw = zstd::bulk::decompress(payload, MAX_BATCH_BYTES)?;
    crate::formats::decode_batch_body(&raw, format)
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
    /// When it last answered.
    pub last_answer: Option<Instant>,
    /// Whether it is being rebuilt with a full copy (it cannot confirm writes).
    pub rebuilding: bool,
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

    /// What the sync rule needs to know of every standby of `namespace`.
    pub fn views(&self, namespace: &str) -> Vec<crate::sync_rule::StandbyView> {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, shard), p)| crate::sync_rule::StandbyView {
                shard: shard.clone(),
                confirmed: p.acked,
                last_answer: p.last_answer,
                rebuilding: p.rebuilding,
            })
            .collect()
    }

    /// Waits until `needed` standbys of `namespace` confirmed `seq` (the
    /// sync rule), or `timeout`.
    pub async fn wait_confirmed(
        &self,
        namespace: &str,
        seq: u64,
        needed: usize,
        timeout: Duration,
    ) -> bool {
        self.wait_held(namespace, seq, needed, None, timeout).await
    }

    /// As [`Self::wait_confirmed`], counting standby `holds.0` as having
    /// confirmed everything up to `holds.1` (a former primary that is rebuilt
    /// before it may be promoted).
    pub async fn wait_held(
        &self,
        namespace: &str,
        seq: u64,
        needed: usize,
        holds: Option<(String, u64)>,
        timeout: Duration,
    ) -> bool {
        let mut acks = self.acks.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            acks.borrow_and_update();
            let mut views = self.views(namespace);
            if let Some((shard, through)) = &holds {
                match views.iter_mut().find(|v| &v.shard == shard) {
                    Some(view) => {
                        view.confirmed = Some(view.confirmed.unwrap_or(0).max(*through));
                        view.rebuilding = false;
                    }
                    None => views.push(crate::sync_rule::StandbyView {
                        shard: shard.clone(),
                        confirmed: Some(*through),
                        last_answer: None,
                        rebuilding: false,
                    }),
                }
            }
            if crate::sync_rule::acknowledged(needed, &views, seq) {
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

/// Keeps one shipping worker (`shipper:NAMESPACE->SHARD`) per (namespace,
/// standby) of the namespaces this shard is primary for, following the
/// routing table: looks again as soon as `routes_changed` fires (a new
/// namespace starts shipping at once), and every half second for role
/// changes. Runs until the process's workers stop.
pub async fn run(
    node: Arc<ShardNode>,
    routes: SharedRoutes,
    routes_changed: Arc<tokio::sync::Notify>,
    dialer: meridian_net::Dialer,
) {
    let mut tasks: HashMap<(String, String), (Target, meridian_net::workers::WorkerStop)> =
        HashMap::new();
    let mut reported = Refused::new();
    loop {
        let (wanted, refused) = wanted_pairs(&node, &routes);
        for (pair, refusal) in &refused {
            if reported.get(pair) != Some(refusal) {
                tracing::error!(namespace = %pair.0, standby = %pair.1, %refusal, "not shipping");
            }
        }
        reported = refused;
        tasks.retain(|key, (target, task)| {
            let keep = wanted.get(key) == Some(target) && task.is_running();
            if !keep {
                task.stop();
                node.replication.forget(&key.0, &key.1);
            }
            keep
        });
        for (key, target) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let task = node.raft.workers.spawn_stoppable(
                format!("shipper:{}->{}", key.0, key.1),
                ship(node.clone(), key.0.clone(), target.clone(), dialer.clone()),
            );
            tasks.insert(key, (target, task));
        }
        meridian_net::workers::note(format!("{} standbys to ship to", tasks.len()));
        let _ = tokio::time::timeout(Duration::from_millis(500), routes_changed.notified()).await;
    }
}

/// The (namespace, standby shard) pairs this shard should ship now: routes
/// whose primary is this shard and whose namespace is a primary here.
///
/// Standbys the residency rule forbids (by the jurisdictions the routing
/// table carries) are left out and returned with the reason: a wrong table
/// never makes this shard ship a namespace out of its jurisdictions.
fn wanted_pairs(node: &ShardNode, routes: &SharedRoutes) -> (Wanted, Refused) {
    let shard = &node.config.node.shard;
    let table = routes.read().unwrap_or_else(|e| e.into_inner());
    let mut wanted = HashMap::new();
    let mut refused = HashMap::new();
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
            if let Err(refusal) = standby_allowed(route, standby) {
                refused.insert((route.namespace.clone(), standby.shard.clone()), refusal);
                continue;
            }
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
    (wanted, refused)
}

/// Pairs to ship, by (namespace, standby shard).
type Wanted = HashMap<(String, String), Target>;
/// Pairs refused by the residency rule, with the reason.
type Refused = HashMap<(String, String), String>;

/// Whether `standby` may hold `route`'s namespace, by the jurisdictions the
/// routing table carries for both.
fn standby_allowed(route: &pb::Route, standby: &pb::StandbyRoute) -> Result<(), String> {
    let allowed: std::collections::BTreeSet<String> = route.jurisdictions.iter().cloned().collect();
    if meridian_access::residency::may_hold(&allowed, &standby.jurisdictions) {
        Ok(())
    } else {
        Err(format!(
            "residency: namespace {:?} may only be held in jurisdictions [{}]; standby shard {} in region {} is in [{}], so no change is shipped to it",
            route.namespace,
            route.jurisdictions.join(", "),
            standby.shard,
            standby.region,
            standby.jurisdictions.join(", ")
        ))
    }
}

/// A batch on its way to a standby: the last sequence number it carries and
/// the standby's answer.
type Shipment = futures::future::BoxFuture<'static, (u64, Result<pb::ReplicateResponse, String>)>;

/// Ships `namespace` to one standby for as long as the task lives.
///
/// Batches are pipelined: up to [`MAX_IN_FLIGHT`] are on the wire at once, so a
/// change waits for a free slot rather than for the previous batch's round
/// trip, and the lag stays near one WAN trip plus the standby's commit. While
/// the pipe is full, new changes gather into the next (larger) batch.
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
            // Changes (and full copies) reach only nodes whose certificate
            // places them in the standby's region, whatever addresses the
            // table lists or a leader hint points to.
            dialer: dialer.only_to(meridian_net::peers::Peers::NodesOf(target.region.clone())),
            ..ClientOptions::default()
        },
    ) {
        Ok(client) => Arc::new(client),
        Err(err) => {
            tracing::error!(%namespace, standby = %target.shard, error = %err, "cannot ship");
            return;
        }
    };
    node.replication.update(&namespace, &target.shard, |p| {
        p.region = target.region.clone();
    });
    let mut pair = Pair {
        node,
        client,
        namespace,
        target,
        clock: ChangeClock::default(),
        in_flight: FuturesOrdered::new(),
        acked: None,
        sent: 0,
        trimmed: 0,
        trimming: None,
        failures: 0,
        last_answer: Instant::now(),
    };
    let mut changed = pair.node.machine.subscribe_changes();
    loop {
        changed.borrow_and_update();
        if !pair.node.raft.raft.is_leader() {
            pair.reset();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let Some(record) = pair.node.machine.namespace(&pair.namespace) else {
            return;
        };
        if record.role != NamespaceRole::Primary {
            // Fenced or demoted: the route will stop this task shortly.
            pair.reset();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let head = record.change_seq;
        pair.clock.observe(head);
        let Some(position) = pair.acked else {
            // Where is the standby? Its answer is the durable cursor.
            pair.reset();
            let result = send(&pair.client, &pair.namespace, record.epoch, head).await;
            let result = settle(
                (
                    &pair.node,
                    &pair.client,
                    &pair.namespace,
                    &pair.target.shard,
                ),
                record.epoch,
                result,
            )
            .await;
            if pair.answered(result, head).await && head <= pair.acked.unwrap_or(0) {
                // A heartbeat answered and nothing is waiting: sleep until
                // the next change or the next heartbeat.
                let quiet = tokio::time::timeout(HEARTBEAT, changed.changed()).await;
                if quiet.is_err() {
                    pair.acked = None;
                }
            }
            continue;
        };
        let read_again_soon = pair.fill(&record, head, position).await;
        if pair.acked.is_none() {
            continue;
        }
        // Wait for an answer, a new change, or (caught up) the heartbeat.
        let quiet = if read_again_soon {
            Duration::from_millis(1)
        } else if !pair.in_flight.is_empty() {
            // An answer (or the call's own timeout) wakes the loop; a timer
            // that had already run out would only spin it.
            HEARTBEAT
        } else {
            HEARTBEAT.saturating_sub(pair.last_answer.elapsed())
        };
        tokio::select! {
            Some((last, result)) = pair.in_flight.next(), if !pair.in_flight.is_empty() => {
                let result = settle((&pair.node, &pair.client, &pair.namespace, &pair.target.shard), record.epoch, result).await;
                let head = pair.node.machine.namespace(&pair.namespace).map_or(head, |r| r.change_seq);
                if pair.answered(result, head).await && pair.acked.is_some_and(|a| a < last) {
                    // The standby stopped short (a gap or a rebuild): what
                    // follows on the wire will not apply either.
                    pair.in_flight = FuturesOrdered::new();
                    pair.sent = pair.acked.unwrap_or(0);
                }
            }
            _ = changed.changed() => {}
            _ = tokio::time::sleep(quiet) => {
                if pair.in_flight.is_empty() && pair.sent >= head && !read_again_soon {
                    // Quiet: ask again, a heartbeat that keeps the standby's
                    // freshness known for bounded reads.
                    pair.acked = None;
                }
            }
        }
    }
}

/// One (namespace, standby) pair's shipping state on the primary's leader.
struct Pair {
    node: Arc<ShardNode>,
    client: Arc<Client>,
    namespace: String,
    target: Target,
    clock: ChangeClock,
    in_flight: FuturesOrdered<Shipment>,
    /// Last position the standby confirmed; None until it says (then ask).
    acked: Option<u64>,
    /// Last sequence number put on the wire (meaningful while `acked` is set).
    sent: u64,
    /// Where the change log was last trimmed to (or is being trimmed to).
    trimmed: u64,
    /// The trim under way, if any.
    trimming: Option<tokio::task::JoinHandle<()>>,
    failures: u32,
    last_answer: Instant,
}

impl Pair {
    /// Forgets what is on the wire; the next round asks the standby first.
    fn reset(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.acked = None;
    }

    /// Puts batches on the wire until the pipe is full or nothing is left.
    /// Returns true when the log should be read again in a moment.
    async fn fill(
        &mut self,
        record: &crate::state_machine::NamespaceRecord,
        head: u64,
        position: u64,
    ) -> bool {
        while self.in_flight.len() < MAX_IN_FLIGHT && self.sent < head {
            let changes = match self.node.machine.changes_after(
                &self.namespace,
                self.sent,
                MAX_BATCH_CHANGES,
            ) {
                Ok(mut changes) => {
                    let keep =
                        runs_within(&changes, MAX_BATCH_CHANGES, MAX_PAYLOAD_BYTES, change_bytes)
                            .first()
                            .map_or(0, |run| run.len());
                    changes.truncate(keep);
                    changes
                }
                Err(err) => {
                    tracing::error!(namespace = %self.namespace, error = %err, "cannot read the change log");
                    return true;
                }
            };
            if changes.first().map(|c| c.seq) == Some(self.sent + 1) {
                let last = changes.last().map_or(self.sent, |c| c.seq);
                let (payload, raw) = match encode_batch(&changes) {
                    Ok(encoded) => encoded,
                    Err(err) => {
                        tracing::error!(namespace = %self.namespace, error = %err, "cannot encode a batch");
                        return true;
                    }
                };
                self.node.bandwidth.take(payload.len()).await;
                self.in_flight.push_back(shipment(
                    self,
                    record.epoch,
                    (payload, raw, changes.len()),
                    (last, head),
                ));
                self.sent = last;
            } else if changes.is_empty() && self.sent >= record.trimmed_through {
                // Applied in memory, its batch not yet committed to the
                // engine: read again in a moment.
                return true;
            } else if self.in_flight.is_empty() {
                // The log no longer reaches back to the standby's position
                // (trimmed before it joined): a full copy.
                tracing::warn!(
                    namespace = %self.namespace,
                    standby = %self.target.shard,
                    position,
                    trimmed_through = record.trimmed_through,
                    "standby is behind the change log; sending a full copy"
                );
                let copied =
                    full_copy(&self.node, &self.client, &self.namespace, record.epoch).await;
                self.answered(copied, head).await;
                return false;
            } else {
                // Let what is on the wire land first.
                return false;
            }
        }
        false
    }

    /// Takes in a standby's answer (its position, or why not). Returns whether
    /// it answered.
    async fn answered(&mut self, result: Result<u64, String>, head: u64) -> bool {
        match result {
            Ok(confirmed) => {
                self.failures = 0;
                self.last_answer = Instant::now();
                let at = self.last_answer;
                self.node
                    .replication
                    .update(&self.namespace, &self.target.shard, |p| {
                        p.last_answer = Some(at);
                    });
                let confirmed = confirmed.max(self.acked.unwrap_or(0));
                // After a first answer or a full copy, ship from where the
                // standby is.
                if self.acked.is_none() || confirmed > self.sent {
                    self.sent = confirmed;
                }
                self.acked = Some(confirmed);
                self.clock.observe(head);
                self.clock.confirmed(confirmed);
                self.publish(head);
                meridian_net::workers::note(format!("standby holds {confirmed} of {head}"));
                // Trim in the background: a local Raft round must not hold up
                // the shipping. One trim at a time; what a failed one left is
                // covered by the next.
                let idle = self.trimming.as_ref().is_none_or(|t| t.is_finished());
                if idle && confirmed >= self.trimmed + TRIM_EVERY {
                    self.trimmed = confirmed;
                    let (node, namespace) = (self.node.clone(), self.namespace.clone());
                    self.trimming = Some(tokio::spawn(async move {
                        trim(&node, &namespace, confirmed).await;
                    }));
                }
                true
            }
            Err(err) => {
                self.failures += 1;
                self.reset();
                self.clock.observe(head);
                self.publish(head);
                meridian_net::workers::note(format!(
                    "{} failed attempts, last: {err}",
                    self.failures
                ));
                if self.failures % 10 == 1 {
                    tracing::warn!(namespace = %self.namespace, standby = %self.target.shard, error = %err, "shipping failed; retrying");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                false
            }
        }
    }

    /// Records the pair's progress for `ReplicationStatus`, the metrics and
    /// sync writes.
    fn publish(&self, head: u64) {
        let acked = self.acked;
        let waiting_since = self.clock.oldest_unconfirmed();
        self.node
            .replication
            .update(&self.namespace, &self.target.shard, |p| {
                if let Some(acked) = acked {
                    p.acked = Some(acked.max(p.acked.unwrap_or(0)));
                }
                p.head = head.max(p.acked.unwrap_or(0));
                p.waiting_since = waiting_since;
            });
    }
}

/// One batch on its way, counted in the byte totals once the standby took it.
fn shipment(
    pair: &Pair,
    epoch: u64,
    (payload, raw, count): (Vec<u8>, usize, usize),
    (last, head): (u64, u64),
) -> Shipment {
    let (node, client) = (pair.node.clone(), pair.client.clone());
    let (namespace, shard) = (pair.namespace.clone(), pair.target.shard.clone());
    Box::pin(async move {
        let bytes = payload.len() as u64;
        let result = send_payload(&client, &namespace, epoch, count, payload, None, head).await;
        if result.is_ok() {
            node.replication
                .raw_bytes_sent
                .fetch_add(raw as u64, Ordering::Relaxed);
            node.replication.update(&namespace, &shard, |p| {
                p.bytes_sent += bytes;
            });
            node.metrics.replication_bytes.inc_by(bytes);
        }
        (last, result)
    })
}

/// Turns a standby's answer into its position, rebuilding it first if it said
/// it has diverged (a demoted primary).
async fn settle(
    (node, client, namespace, shard): (&ShardNode, &Client, &str, &str),
    epoch: u64,
    result: Result<pb::ReplicateResponse, String>,
) -> Result<u64, String> {
    match result {
        Ok(response) if response.resync_needed => {
            node.replication
                .update(namespace, shard, |p| p.rebuilding = true);
            let result = full_copy(node, client, namespace, epoch).await;
            node.replication
                .update(namespace, shard, |p| p.rebuilding = result.is_err());
            result
        }
        Ok(response) => Ok(response.applied_seq),
        Err(err) => Err(err),
    }
}

/// When this node first saw each stretch of a namespace's change log, so that
/// lag in seconds is the age of the oldest change a standby has not confirmed
/// (not the time since the shipper last looked).
#[derive(Debug, Default)]
struct ChangeClock {
    /// (last sequence number of a stretch, when the stretch was first seen),
    /// oldest first, only stretches not yet confirmed.
    seen: std::collections::VecDeque<(u64, Instant)>,
}

/// Stretches remembered at most; past it the newest stretch grows instead
/// (its time stays the older one, so lag is never understated).
const CLOCK_STRETCHES: usize = 65_536;

impl ChangeClock {
    fn observe(&mut self, head: u64) {
        let full = self.seen.len() >= CLOCK_STRETCHES;
        match self.seen.back_mut() {
            Some((last, _)) if *last >= head => {}
            Some((last, _)) if full => *last = head,
            _ => self.seen.push_back((head, Instant::now())),
        }
    }

    fn confirmed(&mut self, position: u64) {
        while self.seen.front().is_some_and(|(last, _)| *last <= position) {
            self.seen.pop_front();
        }
    }

    fn oldest_unconfirmed(&self) -> Option<Instant> {
        self.seen.front().map(|(_, at)| *at)
    }
}

/// Serializes replicated batches per namespace on a standby, in the order they
/// arrive, so pipelined batches reach the Raft log in sequence order; a batch
/// that overtook its predecessor on the way waits for it briefly. A lane holds
/// the last sequence number submitted to Raft through it, so the next batch
/// need not wait for the previous one to commit.
#[derive(Debug, Default)]
pub struct ApplyLanes {
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
}

/// How long a batch waits for the batch before it before applying what it can.
const OVERTAKE_WAIT: Duration = Duration::from_secs(1);

impl ApplyLanes {
    /// Holds `namespace`'s lane once the changes before `first` are applied
    /// (`applied()`) or submitted through the lane, or once [`OVERTAKE_WAIT`]
    /// has passed. Set the guard to the batch's last sequence number once it
    /// is submitted.
    pub async fn enter(
        &self,
        namespace: &str,
        first: u64,
        applied: impl Fn() -> u64,
    ) -> tokio::sync::OwnedMutexGuard<u64> {
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(namespace.to_string())
            .or_default()
            .clone();
        let deadline = Instant::now() + OVERTAKE_WAIT;
        loop {
            let guard = lane.clone().lock_owned().await;
            let through = applied().max(*guard);
            if through.saturating_add(1) >= first || Instant::now() >= deadline {
                return guard;
            }
            drop(guard);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
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
            payload_format: crate::formats::BATCH_FORMAT,
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
    // Read from one point-in-time view on a blocking thread and handed over
    // a few chunks at a time, so a copy never holds the namespace in memory.
    let (chunks_tx, mut chunks_rx) =
        tokio::sync::mpsc::channel::<(u64, Vec<crate::command::VersionedEntry>)>(2);
    let (machine, name) = (node.machine.clone(), namespace.to_string());
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        let mut stopped = false;
        let seq = machine.visit_namespace_at_seq(&name, |seq, key, version, value| {
            let size = key.len() + value.len() + 16;
            if !chunk.is_empty()
                && (chunk.len() >= RESYNC_CHUNK || bytes.saturating_add(size) > MAX_PAYLOAD_BYTES)
            {
                if chunks_tx
                    .blocking_send((seq, std::mem::take(&mut chunk)))
                    .is_err()
                {
                    stopped = true;
                    return false;
                }
                bytes = 0;
            }
            bytes = bytes.saturating_add(size);
            chunk.push(crate::command::VersionedEntry {
                key,
                value,
                version,
            });
            true
        });
        seq.map(|seq| (seq, chunk, stopped))
    });
    let mut position = 0;
    let mut sent = 0usize;
    let mut keys = 0usize;
    let send =
        |chunk: Vec<crate::command::VersionedEntry>, first: bool, last: bool, through_seq| {
            let payload = if chunk.is_empty() {
                Ok(Vec::new())
            } else {
                encode_entries(&chunk).map_err(|e| e.to_string())
            };
            async move {
                let payload = payload?;
                // A full copy counts against the link's cap like any batch.
                node.bandwidth.take(payload.len()).await;
                send_payload(
                    client,
                    namespace,
                    epoch,
                    chunk.len(),
                    payload,
                    Some(pb::ResyncChunk {
                        first,
                        last,
                        through_seq,
                    }),
                    through_seq,
                )
                .await
            }
        };
    while let Some((through_seq, chunk)) = chunks_rx.recv().await {
        if sent == 0 {
            tracing::info!(%namespace, through_seq, "rebuilding a diverged standby");
        }
        keys += chunk.len();
        position = send(chunk, sent == 0, false, through_seq)
            .await?
            .applied_seq;
        sent += 1;
    }
    let (through_seq, last, stopped) = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if stopped {
        return Err("the full copy was interrupted".into());
    }
    keys += last.len();
    if sent == 0 {
        tracing::info!(%namespace, through_seq, "rebuilding a diverged standby");
    }
    position = send(last, sent == 0, true, through_seq)
        .await?
        .applied_seq
        .max(position);
    tracing::info!(%namespace, through_seq, keys, chunks = sent + 1, "full copy sent");
    Ok(position)
}

/// Drops log entries every standby has (at most through `position`).
async fn trim(node: &ShardNode, namespace: &str, position: u64) -> Option<()> {
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
    .ok()
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ReplicatedWrite;

    #[test]
    fn standbys_are_rechecked_against_the_routes_jurisdictions() {
        let route = |allowed: &[&str]| pb::Route {
            namespace: "orders".into(),
            jurisdictions: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let standby = |region: &str, jurisdictions: &[&str]| pb::StandbyRoute {
            region: region.into(),
            shard: format!("{region}-a"),
            jurisdictions: jurisdictions.iter().map(|s| s.to_string()).collect(),
        };
        assert!(standby_allowed(&route(&["EU"]), &standby("eu-central", &["EU"])).is_ok());
        let refused = standby_allowed(&route(&["EU"]), &standby("us-east", &["US"])).unwrap_err();
        assert!(
            refused.contains("jurisdictions [EU]") && refused.contains("region us-east is in [US]"),
            "{refused}"
        );
        // A table without jurisdictions (an older control plane) ships nothing.
        assert!(standby_allowed(&route(&[]), &standby("eu-central", &["EU"])).is_err());
        assert!(standby_allowed(&route(&["EU"]), &standby("eu-central", &[])).is_err());
    }

    #[test]
    fn requests_stay_within_their_item_and_byte_bounds() {
        let sizes = |runs: Vec<&[usize]>| runs.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let id = |n: &usize| *n;
        // By count.
        assert_eq!(
            sizes(runs_within(&[1, 1, 1, 1, 1], 2, 100, id)),
            [vec![1, 1], vec![1, 1], vec![1]]
        );
        // By bytes: 2,048 values of 4 KiB made one 8.4 MB request before.
        assert_eq!(
            sizes(runs_within(&[3, 3, 3, 3], 10, 7, id)),
            [vec![3, 3], vec![3, 3]]
        );
        // One item above the bound still goes, alone.
        assert_eq!(
            sizes(runs_within(&[2, 50, 2], 10, 7, id)),
            [vec![2], vec![50], vec![2]]
        );
        // Nothing: one empty run.
        assert_eq!(sizes(runs_within(&[], 10, 7, id)), [Vec::<usize>::new()]);
        let big: Vec<usize> = vec![4096 + 16; 2_048];
        for run in runs_within(&big, RESYNC_CHUNK, MAX_PAYLOAD_BYTES, id) {
            assert!(run.iter().sum::<usize>() <= MAX_PAYLOAD_BYTES);
        }
    }

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
    fn lag_is_the_age_of_the_oldest_unconfirmed_change() {
        let mut clock = ChangeClock::default();
        assert_eq!(clock.oldest_unconfirmed(), None);
        clock.observe(5);
        let first = clock.oldest_unconfirmed().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.observe(9);
        clock.observe(9);
        assert_eq!(
            clock.seen.len(),
            2,
            "a head seen again is not a new stretch"
        );
        clock.confirmed(3);
        assert_eq!(
            clock.oldest_unconfirmed(),
            Some(first),
            "change 4 is still waiting"
        );
        clock.confirmed(5);
        let second = clock.oldest_unconfirmed().unwrap();
        assert!(second > first, "changes 6..=9 were seen later");
        clock.confirmed(9);
        assert_eq!(clock.oldest_unconfirmed(), None);
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
                    previous_version: Some(seq * 3 - 1),
                }],
            })
            .collect();
        let (payload, raw) = encode_batch(&changes).unwrap();
        assert!(payload.len() * 5 < raw, "{} vs {raw}", payload.len());
        assert_eq!(
            decode_batch(&payload, crate::formats::BATCH_FORMAT).unwrap(),
            changes
        );
        assert!(decode_batch(b"not zstd", crate::formats::BATCH_FORMAT).is_err());
    }
}
