//! The primary's side: one shipping worker per (namespace, standby) pair on
//! the primary shard's leader, started and stopped as the routing table
//! changes.
//!
//! Each worker acts only while this node leads its shard and the namespace
//! is a primary here; it wakes on every logged change, asks the standby
//! where it is (an empty batch: its answer is the durable cursor), then
//! pipelines batches from there. A standby whose position the log no longer
//! reaches, or that says it diverged, gets a full copy from one
//! point-in-time view. What every standby has is trimmed from the log.

use crate::change::VersionedEntry;
use crate::cursor::Cursor;
use crate::pacing;
use crate::replica::{NamespaceState, Role, Source};
use crate::wire::{self, MAX_BATCH_CHANGES, MAX_PAYLOAD_BYTES, RESYNC_CHUNK};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use meridian_client::routes::SharedRoutes;
use meridian_client::{Client, ClientOptions, pb};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A caught-up standby hears from its primary at least this often.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How soon to read the log again when it could not be read or did not yet
/// hold what its head says.
const READ_AGAIN: Duration = Duration::from_millis(1);
/// Trim the log once standbys are this many changes past the last trim.
const TRIM_EVERY: u64 = 1_024;

/// A standby a namespace ships to: its shard, region and member addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    region: String,
    shard: String,
    members: Vec<String>,
    /// Active-active: the region whose own writes go to this peer (this
    /// shard's); empty for a standby of an active-passive namespace.
    origin: String,
    /// The role the namespace must have here while it ships (its mode's).
    role: Role,
}

/// Keeps one shipping worker (`shipper:NAMESPACE->SHARD`) per (namespace,
/// standby) of the namespaces this shard is primary for, following the
/// routing table: looks again as soon as `routes_changed` fires (a new
/// namespace starts shipping at once), and every half second for role
/// changes. Runs until the process's workers stop.
pub async fn run<S: Source>(
    node: Arc<S>,
    routes: SharedRoutes,
    routes_changed: Arc<tokio::sync::Notify>,
    dialer: meridian_net::Dialer,
) {
    let mut tasks: HashMap<(String, String), (Target, meridian_net::workers::WorkerStop)> =
        HashMap::new();
    let mut reported = Refused::new();
    loop {
        let (wanted, refused) = wanted_pairs(&*node, &routes);
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
                node.progress().forget(&key.0, &key.1);
            }
            keep
        });
        for (key, target) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let task = node.workers().spawn_stoppable(
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
fn wanted_pairs<S: Source>(node: &S, routes: &SharedRoutes) -> (Wanted, Refused) {
    let shard = node.shard();
    let table = routes.read().unwrap_or_else(|e| e.into_inner());
    let mut wanted = HashMap::new();
    let mut refused = HashMap::new();
    for route in table.routes.values() {
        // The mode says who ships what to whom (see `mode`).
        let mode = crate::mode::of(route);
        let Some((receivers, origin)) = mode.receivers(route, shard, node.region()) else {
            continue;
        };
        let Some(record) = node.namespace(&route.namespace) else {
            continue;
        };
        let role = mode.shipping_role();
        if record.role != role || !record.log_changes {
            continue;
        }
        for standby in &receivers {
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
                    origin: origin.clone(),
                    role,
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
/// Batches are pipelined: up to [`pacing::MAX_IN_FLIGHT`] are on the wire at
/// once, paced by [`pacing::next`], so a change waits a few milliseconds for
/// company rather than for the previous batch's round trip, and the lag stays
/// near one WAN trip plus the standby's commit. While the pipe is full, new
/// changes gather into the next (larger) batch.
async fn ship<S: Source>(
    node: Arc<S>,
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
    node.progress().update(&namespace, &target.shard, |p| {
        p.region = target.region.clone();
    });
    let mut pair = Pair {
        node,
        client,
        namespace,
        target,
        in_flight: FuturesOrdered::new(),
        cursor: Cursor::default(),
        trimmed: 0,
        trimming: None,
        failures: 0,
        last_answer: Instant::now(),
        last_send: Instant::now(),
        plain_ok: false,
    };
    let mut changed = pair.node.subscribe_changes();
    loop {
        changed.borrow_and_update();
        if !pair.node.is_leader() {
            pair.reset();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let Some(record) = pair.node.namespace(&pair.namespace) else {
            return;
        };
        if record.role != pair.target.role {
            // Fenced or demoted: the route will stop this task shortly.
            pair.reset();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let head = record.change_seq;
        pair.cursor.observe(head);
        let Some(position) = pair.cursor.position() else {
            // Where is the standby? Its answer is the durable cursor.
            pair.reset();
            let link = pair.link(record.epoch);
            let result = send(&link, head).await;
            pair.note_answer(&result);
            let result = settle(&pair.node, &link, &pair.target.shard, result).await;
            if pair.answered(result, head).await && head <= pair.cursor.position().unwrap_or(0) {
                // A heartbeat answered and nothing is waiting: sleep until
                // the next change or the next heartbeat.
                let quiet = tokio::time::timeout(HEARTBEAT, changed.changed()).await;
                if quiet.is_err() {
                    pair.cursor.reset();
                }
            }
            continue;
        };
        let look_again = pair.fill(&record, head, position).await;
        if pair.cursor.position().is_none() {
            continue;
        }
        // Wait for an answer, a new change, or (caught up) the heartbeat.
        let quiet = if let Some(after) = look_again {
            after
        } else if !pair.in_flight.is_empty() {
            // An answer (or the call's own timeout) wakes the loop; a timer
            // that had already run out would only spin it.
            HEARTBEAT
        } else {
            HEARTBEAT.saturating_sub(pair.last_answer.elapsed())
        };
        tokio::select! {
            Some((last, result)) = pair.in_flight.next(), if !pair.in_flight.is_empty() => {
                pair.note_answer(&result);
                let result = settle(&pair.node, &pair.link(record.epoch), &pair.target.shard, result).await;
                let head = pair.node.namespace(&pair.namespace).map_or(head, |r| r.change_seq);
                if pair.answered(result, head).await && pair.cursor.position().is_some_and(|a| a < last) {
                    // The standby stopped short (a gap or a rebuild): what
                    // follows on the wire will not apply either.
                    pair.in_flight = FuturesOrdered::new();
                    pair.cursor.resend_from_confirmed();
                }
            }
            _ = changed.changed() => {}
            _ = tokio::time::sleep(quiet) => {
                if pair.in_flight.is_empty() && pair.cursor.sent() >= head && look_again.is_none() {
                    // Quiet: ask again, a heartbeat that keeps the standby's
                    // freshness known for bounded reads.
                    pair.cursor.reset();
                }
            }
        }
    }
}

/// One (namespace, standby) pair's shipping state on the primary's leader.
struct Pair<S> {
    node: Arc<S>,
    client: Arc<Client>,
    namespace: String,
    target: Target,
    in_flight: FuturesOrdered<Shipment>,
    /// Where the standby stands and what is on the wire.
    cursor: Cursor,
    /// Where the change log was last trimmed to (or is being trimmed to).
    trimmed: u64,
    /// The trim under way, if any.
    trimming: Option<tokio::task::JoinHandle<()>>,
    failures: u32,
    last_answer: Instant,
    /// When the last batch went on the wire (for [`pacing`]).
    last_send: Instant,
    /// The receiver said it reads [`wire::PLAIN_BATCH_FORMAT`].
    plain_ok: bool,
}

impl<S: Source> Pair<S> {
    /// How requests reach this pair's receiver at `epoch`.
    fn link(&self, epoch: u64) -> Link {
        Link {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            epoch,
            origin: self.target.origin.clone(),
        }
    }

    /// Takes in which batch formats the receiver reads, from every answer,
    /// and an active-active peer's frontier (for tombstone collection).
    fn note_answer(&mut self, result: &Result<pb::ReplicateResponse, String>) {
        self.plain_ok = wire::sends_plain(result.as_ref().ok().map(|r| r.max_payload_format));
        if let Ok(answer) = result
            && !answer.frontier.is_empty()
        {
            let frontier: crate::tombstone::Frontier = answer
                .frontier
                .iter()
                .map(|(region, seq)| (region.clone(), *seq))
                .collect();
            self.node
                .progress()
                .update(&self.namespace, &self.target.shard, |p| {
                    p.frontier = Some(frontier);
                });
        }
    }

    /// Forgets what is on the wire; the next round asks the standby first.
    fn reset(&mut self) {
        self.in_flight = FuturesOrdered::new();
        self.cursor.reset();
    }

    /// Puts batches on the wire as [`pacing`] says, until the pipe is full or
    /// nothing is left. Returns when to read the log again, if before the
    /// next change or answer.
    async fn fill(
        &mut self,
        record: &NamespaceState,
        head: u64,
        position: u64,
    ) -> Option<Duration> {
        loop {
            match pacing::next(
                self.in_flight.len(),
                head.saturating_sub(self.cursor.sent()),
                self.last_send.elapsed(),
            ) {
                pacing::Next::Idle | pacing::Next::PipeFull => return None,
                pacing::Next::GatherFor(after) => return Some(after),
                pacing::Next::SendNow => {}
            }
            let changes = match self.node.changes_after(
                &self.namespace,
                self.cursor.sent(),
                MAX_BATCH_CHANGES,
            ) {
                Ok(mut changes) => {
                    let keep = wire::runs_within(
                        &changes,
                        MAX_BATCH_CHANGES,
                        MAX_PAYLOAD_BYTES,
                        wire::change_bytes,
                    )
                    .first()
                    .map_or(0, |run| run.len());
                    changes.truncate(keep);
                    changes
                }
                Err(err) => {
                    tracing::error!(namespace = %self.namespace, error = %err, "cannot read the change log");
                    return Some(READ_AGAIN);
                }
            };
            let sent = self.cursor.sent();
            if changes.first().map(|c| c.seq) == sent.checked_add(1) {
                let last = changes.last().map_or(sent, |c| c.seq);
                let batch = match wire::encode_batch(&changes, self.plain_ok) {
                    Ok(encoded) => encoded,
                    Err(err) => {
                        tracing::error!(namespace = %self.namespace, error = %err, "cannot encode a batch");
                        return Some(READ_AGAIN);
                    }
                };
                self.node.bandwidth().take(batch.payload.len()).await;
                self.in_flight.push_back(shipment(
                    self,
                    record.epoch,
                    (batch, changes.len()),
                    (last, head),
                ));
                self.cursor.sent_through(last);
                self.last_send = Instant::now();
            } else if changes.is_empty() && sent >= record.trimmed_through {
                // Applied in memory, its batch not yet committed to the
                // engine: read again in a moment.
                return Some(READ_AGAIN);
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
                let copied = full_copy(&self.node, &self.link(record.epoch)).await;
                self.answered(copied, head).await;
                return None;
            } else {
                // Let what is on the wire land first.
                return None;
            }
        }
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
                    .progress()
                    .update(&self.namespace, &self.target.shard, |p| {
                        p.last_answer = Some(at);
                    });
                let confirmed = self.cursor.confirmed(confirmed, head);
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
                        trim(&*node, &namespace, confirmed).await;
                    }));
                }
                true
            }
            Err(err) => {
                self.failures += 1;
                self.reset();
                self.cursor.observe(head);
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
        let acked = self.cursor.position();
        let waiting_since = self.cursor.waiting_since();
        self.node
            .progress()
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
fn shipment<S: Source>(
    pair: &Pair<S>,
    epoch: u64,
    (batch, count): (wire::EncodedBatch, usize),
    (last, head): (u64, u64),
) -> Shipment {
    let node = pair.node.clone();
    let link = pair.link(epoch);
    let (namespace, shard) = (pair.namespace.clone(), pair.target.shard.clone());
    let raw = batch.raw_len;
    Box::pin(async move {
        let bytes = batch.payload.len() as u64;
        let result = send_payload(&link, (count, batch.format), batch.payload, None, head).await;
        if result.is_ok() {
            node.progress()
                .raw_bytes_sent
                .fetch_add(raw as u64, Ordering::Relaxed);
            node.progress().update(&namespace, &shard, |p| {
                p.bytes_sent += bytes;
            });
            node.shipped(bytes);
        }
        (last, result)
    })
}

/// Turns a standby's answer into its position, rebuilding it first if it said
/// it has diverged (a demoted primary).
async fn settle<S: Source>(
    node: &Arc<S>,
    link: &Link,
    shard: &str,
    result: Result<pb::ReplicateResponse, String>,
) -> Result<u64, String> {
    match result {
        Ok(response) if response.resync_needed => {
            node.progress()
                .update(&link.namespace, shard, |p| p.rebuilding = true);
            let result = full_copy(node, link).await;
            node.progress()
                .update(&link.namespace, shard, |p| p.rebuilding = result.is_err());
            result
        }
        Ok(response) => Ok(response.applied_seq),
        Err(err) => Err(err),
    }
}

/// An empty batch: asks the standby's position and tells it the primary's head
/// (a heartbeat that keeps its freshness known for bounded reads).
async fn send(link: &Link, head: u64) -> Result<pb::ReplicateResponse, String> {
    // Compressed (format 2) whatever its size: the first contact, before the
    // receiver said which formats it reads.
    let batch = wire::encode_batch(&[], false).map_err(|e| e.to_string())?;
    send_payload(link, (0, batch.format), batch.payload, None, head).await
}

/// Where a pair's requests go: the receiver's client, the namespace, the
/// sender's epoch and (active-active) whose writes they carry.
#[derive(Clone)]
struct Link {
    client: Arc<Client>,
    namespace: String,
    epoch: u64,
    origin: String,
}

async fn send_payload(
    link: &Link,
    (count, payload_format): (usize, u32),
    payload: Vec<u8>,
    resync: Option<pb::ResyncChunk>,
    primary_seq: u64,
) -> Result<pb::ReplicateResponse, String> {
    link.client
        .replicate(pb::ReplicateRequest {
            namespace: link.namespace.clone(),
            epoch: link.epoch,
            count: count as u32,
            payload,
            resync,
            primary_seq,
            payload_format,
            origin_region: link.origin.clone(),
        })
        .await
        .map_err(|e| e.to_string())
}

/// Rebuilds a diverged standby with a full copy of the namespace as of one
/// sequence number; returns that number (the standby's new position).
async fn full_copy<S: Source>(node: &Arc<S>, link: &Link) -> Result<u64, String> {
    let namespace = link.namespace.as_str();
    // Read from one point-in-time view on a blocking thread and handed over
    // a few chunks at a time, so a copy never holds the namespace in memory.
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<(u64, Vec<VersionedEntry>)>(2);
    let (source, name) = (node.clone(), namespace.to_string());
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        let mut stopped = false;
        let seq = source.visit_copy(&name, &mut |seq, key, version, value| {
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
            chunk.push(VersionedEntry {
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
    let send = |chunk: Vec<VersionedEntry>, first: bool, last: bool, through_seq| {
        let payload = if chunk.is_empty() {
            Ok(Vec::new())
        } else {
            wire::encode_entries(&chunk).map_err(|e| e.to_string())
        };
        async move {
            let payload = payload?;
            // A full copy counts against the link's cap like any batch.
            node.bandwidth().take(payload.len()).await;
            send_payload(
                link,
                // A full copy's chunk is always compressed (its own format).
                (chunk.len(), wire::BATCH_FORMAT),
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
async fn trim<S: Source>(node: &S, namespace: &str, position: u64) -> Option<()> {
    // Only what every standby of the namespace has confirmed may go.
    let through = node
        .progress()
        .snapshot()
        .iter()
        .filter(|((ns, _), _)| ns == namespace)
        .map(|(_, p)| p.acked.unwrap_or(0))
        .min()?
        .min(position);
    if let Err(err) = node.trim(namespace, through).await {
        // The next confirmation tries again.
        tracing::debug!(%namespace, through, error = %err, "cannot trim the change log");
        return None;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
