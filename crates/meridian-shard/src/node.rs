//! A shard node's request logic, independent of the wire: proposing commands,
//! read barriers, leader discovery and status.

use crate::command::{Command, CommandResult};
use crate::config::{NodeConfig, ReadPolicy};
use crate::disk::DiskGuard;
use crate::error::ShardError;
use crate::metrics::ShardMetrics;
use crate::state_machine::KvStateMachine;
use meridian_proto::v1::{Consistency, ReadOptions, ResponseHeader};
use meridian_raft::read_barrier::ReadBarrier;
use meridian_raft::{RaftNode, Request, StorageEngine};
use openraft::ReadPolicy as RaftReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::{RaftMetrics, ServerState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One member of a shard, ready to serve requests.
pub struct ShardNode {
    /// The node's configuration.
    pub config: NodeConfig,
    /// The Raft member.
    pub raft: RaftNode,
    /// The key-value state machine (read directly after a read barrier).
    pub machine: Arc<KvStateMachine>,
    /// Metrics.
    pub metrics: Arc<ShardMetrics>,
    /// Who may call the data and admin APIs.
    pub access: crate::access::AccessGate,
    /// How this node dials others (TLS, WAN rewrites).
    pub dialer: meridian_net::Dialer,
    /// What the replicator has shipped to each standby (on the leader).
    pub replication: meridian_replication::progress::ReplicationProgress,
    /// The cap on bytes shipped to standbys.
    pub bandwidth: meridian_replication::bandwidth::BandwidthCap,
    /// The cap on record bytes restores load (`[dr] restore_max_bytes_per_second`).
    pub restore_cap: meridian_replication::bandwidth::BandwidthCap,
    /// The cap on record bytes backups read (`[dr] backup_max_bytes_per_second`).
    pub backup_cap: meridian_replication::bandwidth::BandwidthCap,
    /// Keeps replicated batches applying in sequence order (on a standby).
    pub apply_lanes: meridian_replication::applier::ApplyLanes,
    /// This node's clock offset as the control plane last measured it, and
    /// the bound then in force (see [`crate::active`]).
    pub clock: std::sync::Mutex<Option<(meridian_replication::hlc::Offset, u64)>>,
    /// On an active-active peer's leader, per (namespace, origin region):
    /// what the origin last said its log reaches, what this peer merged,
    /// and when it last held everything (see [`crate::active`]).
    pub peer_heard:
        std::sync::Mutex<std::collections::HashMap<(String, String), crate::active::PeerHeard>>,
    disk: DiskGuard,
    ready: AtomicBool,
    /// Set once the control plane has accepted this node's registration (always
    /// true for a standalone shard).
    registered: AtomicBool,
    /// The write lease for replicated namespaces, granted by the control
    /// plane's probes (see [`crate::lease`]). The control plane promotes a
    /// standby only after every lease it granted has surely run out.
    lease: std::sync::Mutex<crate::lease::LeaseState>,
    /// The namespaces the lease covers (those the last grant taken lists as
    /// primary here), with each one's sync rule (see [`meridian_replication::sync_rule`]).
    covered: std::sync::Mutex<std::collections::HashMap<String, SyncPolicy>>,
    /// On a standby's leader: when each namespace was last known to hold
    /// everything its primary had logged (bounded reads at the standby).
    standby_current_at: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// One restore at a time per target namespace (a restore asked again
    /// waits for the one it replaces to stop).
    pub restores: crate::restore::RestoreLocks,
    /// Coalesced read barrier for strong reads (configured policy).
    strong_reads: ReadBarrier,
    /// Coalesced lease check for bounded and session reads.
    lease_reads: ReadBarrier,
}

/// A sync namespace's acknowledgement rule, as the control plane's last
/// lease probe gave it.
#[derive(Debug, Clone, Default)]
pub struct SyncPolicy {
    /// Standby confirmations a write needs (0: not known yet).
    pub confirmations: usize,
    /// The shard this copy took over from in its last promotion, if any.
    pub former_primary: Option<String>,
}

/// How a read was admitted by [`ShardNode::read_gate`]: as the namespace's
/// primary (fenced, and confirmed after the read in sync mode) or from a
/// standby copy (eventual or bounded, served as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAdmission {
    /// Served by the primary (or an unreplicated namespace's leader).
    Primary,
    /// Served by a standby copy.
    Standby,
    /// Served by a peer of an active-active namespace.
    Peer,
}

/// A command queued for the Raft log; its outcome arrives when it applies.
pub struct Pending(
    openraft::type_config::alias::OneshotReceiverOf<
        meridian_raft::TypeConfig,
        openraft::raft::ClientWriteResult<meridian_raft::TypeConfig>,
    >,
);

/// How long a sync namespace's strong read waits for standby confirmations
/// before it is refused (retryable, reason `no-quorum`).
const SYNC_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a write over the RPO gate waits for the standby before refusal.
const RPO_THROTTLE: std::time::Duration = std::time::Duration::from_millis(500);

impl ShardNode {
    /// Opens storage, starts Raft and, for a brand-new member of the initial
    /// membership, initializes the shard.
    pub async fn start(
        config: NodeConfig,
        dialer: meridian_net::Dialer,
    ) -> Result<Arc<Self>, ShardError> {
        let metrics = Arc::new(ShardMetrics::new(
            &config.node.region,
            &config.node.shard,
            config.node.id,
        ));
        let engine = StorageEngine::open_configured(
            &config.node.data_dir,
            metrics.storage.clone(),
            config.node.key_file(),
            config.storage,
        )?;
        let machine = Arc::new(KvStateMachine::open(&engine)?);
        let mut options = config.raft.node_options(
            config.node.id,
            &config.node.shard,
            dialer.clone(),
            // A shard's Raft: only the nodes of its region...
            meridian_net::peers::Peers::NodesOf(config.node.region.clone()),
        );
        // ...and, with a control plane to say who was registered for the
        // shard, only its members. (A standalone shard has no list but its
        // own membership, which a lagging node may not have caught up on.)
        options.members_only = !config.control.endpoints.is_empty();
        let raft = RaftNode::start(&options, engine, machine.clone())
            .await
            .map_err(|e| ShardError::Raft(e.to_string()))?;
        // A new data key after every 2^28 values sealed (encryption at rest).
        raft.spawn_key_rotation();
        if !config.cluster.initial_members.is_empty() {
            let members = config.cluster.members();
            let initialized = raft
                .initialize_if_new(members)
                .await
                .map_err(|e| ShardError::Raft(e.to_string()))?;
            if initialized {
                tracing::info!(shard = %config.node.shard, "initialized a new shard membership");
            }
        }
        let disk = DiskGuard::new(&config.node.data_dir, config.limits.min_free_disk_bytes);
        let strong_policy = match config.raft.read_policy {
            ReadPolicy::ReadIndex => RaftReadPolicy::ReadIndex,
            ReadPolicy::LeaseRead => RaftReadPolicy::LeaseRead,
        };
        let strong_reads = ReadBarrier::new(raft.raft.clone(), strong_policy);
        let lease_reads = ReadBarrier::new(raft.raft.clone(), RaftReadPolicy::LeaseRead);
        let registered = AtomicBool::new(config.control.endpoints.is_empty());
        let restore_cap = meridian_replication::bandwidth::BandwidthCap::new(
            config.dr.restore_max_bytes_per_second,
        );
        let backup_cap = meridian_replication::bandwidth::BandwidthCap::new(
            config.dr.backup_max_bytes_per_second,
        );
        let bandwidth = meridian_replication::bandwidth::BandwidthCap::new(
            config.replication.max_bytes_per_second,
        );
        Ok(Arc::new(Self {
            access: crate::access::AccessGate::new(config.control.endpoints.is_empty()),
            dialer,
            registered,
            lease: Default::default(),
            covered: Default::default(),
            standby_current_at: Default::default(),
            restores: Default::default(),
            strong_reads,
            lease_reads,
            config,
            raft,
            machine,
            metrics,
            replication: Default::default(),
            bandwidth,
            restore_cap,
            backup_cap,
            apply_lanes: Default::default(),
            clock: Default::default(),
            peer_heard: Default::default(),
            disk,
            ready: AtomicBool::new(false),
        }))
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.raft.node_id
    }

    /// The latest Raft metrics.
    pub fn raft_metrics(&self) -> RaftMetrics<meridian_raft::TypeConfig> {
        self.raft.raft.metrics().borrow_watched().clone()
    }

    /// The current leader and its address, as this node knows them.
    pub fn leader(&self) -> (Option<u64>, Option<String>) {
        self.raft.leader()
    }

    /// The error for a request that needs the leader, naming it when known.
    pub fn not_leader(&self) -> ShardError {
        let (leader_id, leader_address) = self.leader();
        ShardError::NotLeader {
            leader_id,
            leader_address,
        }
    }

    /// Header describing where an answer came from.
    pub fn header(&self) -> ResponseHeader {
        let metrics = self.raft.raft.metrics();
        let metrics = metrics.borrow_watched();
        ResponseHeader {
            node_id: self.id(),
            term: metrics.current_term,
            applied_index: metrics.last_applied.map_or(0, |id| id.index()),
        }
    }

    /// This node's current Raft term.
    fn current_term(&self) -> u64 {
        self.raft.raft.metrics().borrow_watched().current_term
    }

    /// Takes (or revokes, or refuses) a lease grant from the control plane,
    /// bound to the current Raft term, covering the namespaces in `covered`;
    /// returns what was decided.
    pub fn apply_grant(
        &self,
        covered: std::collections::HashMap<String, SyncPolicy>,
        grant: &crate::lease::Grant,
    ) -> crate::lease::LeaseDecision {
        let term = self.current_term();
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let decision = lease.apply(
            grant,
            std::time::Instant::now(),
            crate::lease::now_unix_ms(),
            term,
        );
        match &decision {
            crate::lease::LeaseDecision::Hold(_) => {
                *self.covered.lock().unwrap_or_else(|e| e.into_inner()) = covered;
            }
            crate::lease::LeaseDecision::Revoke => {
                self.covered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            _ => {}
        }
        drop(lease);
        if let crate::lease::LeaseDecision::Refuse(refusal) = &decision {
            tracing::warn!(%refusal, "lease grant refused");
        }
        decision
    }

    /// Whether this node holds a current write lease as its shard's leader.
    pub fn has_lease(&self) -> bool {
        let term = self.current_term();
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holds(std::time::Instant::now(), term)
    }

    /// Sets the gauges that are read at scrape time rather than kept up
    /// as things happen: voters and their reachability, disk space, each
    /// primary's lag budget and lease, the certificate's expiry.
    pub fn refresh_scrape_metrics(&self) {
        let metrics = &self.metrics;
        let raft = self.raft.raft.metrics().borrow_watched().clone();
        let voters: Vec<u64> = raft.membership_config.membership().voter_ids().collect();
        metrics.voters.set(voters.len() as i64);
        let leading = raft.state == ServerState::Leader;
        let reachable = match (&raft.heartbeat, leading) {
            (Some(heartbeats), true) => {
                voters_reachable(&voters, self.id(), REACHABLE_WITHIN, |id| {
                    heartbeats
                        .get(&id)
                        .and_then(|acked| acked.as_ref())
                        .map(|acked| openraft::Instant::elapsed(&**acked))
                })
            }
            _ => 0,
        };
        metrics.voters_reachable.set(reachable as i64);
        self.raft.engine.refresh_metrics();
        if let Some(rss) = meridian_net::metrics_text::resident_memory_bytes() {
            metrics
                .resident_memory_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        if let Some((free, capacity)) = crate::disk::space(&self.config.node.data_dir) {
            metrics
                .disk_free_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX));
            metrics
                .disk_capacity_bytes
                .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        }
        metrics.lag_budget_seconds.clear();
        metrics.lag_budget_entries.clear();
        metrics.primary_lease_valid.clear();
        metrics.time_mark_seq.clear();
        metrics.active_conflicts.clear();
        metrics.active_future_stamps.clear();
        metrics.active_tombstones.clear();
        metrics.active_tombstones_collected.clear();
        let lease = leading && self.has_lease();
        let covered = self
            .covered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, record) in self.machine.namespaces() {
            if record.role == crate::command::NamespaceRole::Peer
                && let Ok(Some(meta)) = self.machine.active_meta(&name)
            {
                let labels = crate::metrics::NamespaceLabels { namespace: name };
                metrics
                    .active_conflicts
                    .get_or_create(&labels)
                    .set(i64::try_from(meta.next_conflict).unwrap_or(i64::MAX));
                metrics
                    .active_future_stamps
                    .get_or_create(&labels)
                    .set(i64::try_from(meta.future_stamps).unwrap_or(i64::MAX));
                metrics
                    .active_tombstones
                    .get_or_create(&labels)
                    .set(i64::try_from(meta.tombstones).unwrap_or(i64::MAX));
                metrics
                    .active_tombstones_collected
                    .get_or_create(&labels)
                    .set(i64::try_from(meta.tombstones_collected).unwrap_or(i64::MAX));
                continue;
            }
            if record.role != crate::command::NamespaceRole::Primary {
                continue;
            }
            if let Ok(Some((seq, _))) = self.machine.latest_time_mark(&name) {
                metrics
                    .time_mark_seq
                    .get_or_create(&crate::metrics::NamespaceLabels {
                        namespace: name.clone(),
                    })
                    .set(i64::try_from(seq).unwrap_or(i64::MAX));
            }
            let labels = crate::metrics::NamespaceLabels { namespace: name };
            if record.max_lag_entries > 0 || record.max_lag_ms > 0 {
                // Present from the start (at 0), so a rate over it is
                // defined before the first refusal.
                let _ = metrics.rpo_refusals.get_or_create(&labels);
            }
            if record.log_changes {
                metrics
                    .lag_budget_seconds
                    .get_or_create(&labels)
                    .set(record.max_lag_ms as f64 / 1e3);
                metrics
                    .lag_budget_entries
                    .get_or_create(&labels)
                    .set(i64::try_from(record.max_lag_entries).unwrap_or(i64::MAX));
            }
            if leading && record.epoch > 0 {
                let valid = lease && covered.contains_key(&labels.namespace);
                metrics
                    .primary_lease_valid
                    .get_or_create(&labels)
                    .set(i64::from(valid));
            }
        }
        metrics.certificate_expiry.clear();
        if let Some(expiry) = self
            .config
            .network
            .tls
            .as_ref()
            .and_then(|tls| tls.certificate_expiry_unix())
        {
            metrics
                .certificate_expiry
                .get_or_create(&crate::metrics::CertificateLabels { certificate: "tls" })
                .set(expiry);
        }
    }

    fn sync_policy(&self, namespace: &str) -> SyncPolicy {
        self.covered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    fn confirmations_needed(&self, namespace: &str) -> usize {
        self.sync_policy(namespace).confirmations
    }

    /// A sync namespace's write is proposed only while enough standbys can
    /// confirm it; otherwise it is refused before anything is applied.
    fn check_sync_quorum(&self, command: &Command) -> Result<(), ShardError> {
        let Some(namespace) = command.client_write_namespace() else {
            return Ok(());
        };
        self.check_still_primary(namespace)?;
        let Some(record) = self.machine.namespace(namespace) else {
            return Ok(());
        };
        if record.epoch == 0 {
            return Ok(());
        }
        if !record.sync {
            return self.check_namespace_lease(namespace);
        }
        meridian_replication::sync_rule::may_propose(
            self.confirmations_needed(namespace),
            &self.replication.views(namespace),
            std::time::Instant::now(),
        )
        .map_err(|refusal| ShardError::NoSyncQuorum {
            namespace: namespace.to_string(),
            needed: refusal.needed,
            able: refusal.able,
            detail: refusal.detail,
        })
    }

    /// A sync namespace's write is acknowledged only once as many standby
    /// regions as the sync rule needs have it durably (applied through each
    /// standby shard's Raft log).
    async fn wait_for_standby(&self, command: &Command) -> Result<(), ShardError> {
        let Some(namespace) = command.client_write_namespace() else {
            return Ok(());
        };
        let Some(record) = self.machine.namespace(namespace) else {
            return Ok(());
        };
        if !record.sync || record.role != crate::command::NamespaceRole::Primary {
            return Ok(());
        }
        let timeout = std::time::Duration::from_millis(self.config.limits.sync_timeout_ms);
        if self
            .replication
            .wait_confirmed(
                namespace,
                record.change_seq,
                self.confirmations_needed(namespace),
                timeout,
            )
            .await
        {
            Ok(())
        } else {
            Err(ShardError::NotReplicated {
                namespace: namespace.to_string(),
                waited_ms: self.config.limits.sync_timeout_ms,
            })
        }
    }

    /// The RPO gate: while a standby is further behind than the namespace's
    /// `max_lag`, a write waits briefly for it to catch up (throttling), then is
    /// refused with the lag named.
    async fn check_rpo(&self, command: &Command) -> Result<(), ShardError> {
        let Some(namespace) = command.client_write_namespace() else {
            return Ok(());
        };
        let over = || {
            let record = self.machine.namespace(namespace)?;
            if record.role != crate::command::NamespaceRole::Primary
                || (record.max_lag_entries == 0 && record.max_lag_ms == 0)
            {
                return None;
            }
            let (shard, region, entries, seconds) =
                self.replication.worst_lag(namespace, record.change_seq)?;
            let too_many = record.max_lag_entries > 0 && entries >= record.max_lag_entries;
            let too_old = record.max_lag_ms > 0 && seconds * 1e3 >= record.max_lag_ms as f64;
            (too_many || too_old).then(|| ShardError::LagExceeded {
                namespace: namespace.to_string(),
                standby: format!("{shard} ({region})"),
                entries,
                seconds,
                limit: match (record.max_lag_entries, record.max_lag_ms) {
                    (0, ms) => format!("{ms} ms"),
                    (entries, 0) => format!("{entries} changes"),
                    (entries, ms) => format!("{entries} changes or {ms} ms"),
                },
            })
        };
        let deadline = std::time::Instant::now() + RPO_THROTTLE;
        loop {
            let Some(refusal) = over() else {
                return Ok(());
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                self.metrics
                    .rpo_refusals
                    .get_or_create(&crate::metrics::NamespaceLabels {
                        namespace: namespace.to_string(),
                    })
                    .inc();
                return Err(refusal);
            }
            self.replication.wait_any_ack(left).await;
        }
    }

    /// A client write to a standby copy is refused before proposing. (The
    /// state machine refuses it too, but only by the role at apply time: a
    /// write admitted while the copy was a standby could otherwise apply
    /// just after a promotion, without the lease and sync checks a primary's
    /// writes pass — applied, never confirmed, outcome unknown.)
    fn check_not_standby(&self, command: &Command) -> Result<(), ShardError> {
        let Some(namespace) = command.client_write_namespace() else {
            return Ok(());
        };
        match self.machine.namespace(namespace) {
            Some(record) if record.role == crate::command::NamespaceRole::Standby => Err(
                ShardError::Rejected(crate::command::Rejection::NotPrimary {
                    name: namespace.to_string(),
                    epoch: record.epoch,
                }),
            ),
            _ => Ok(()),
        }
    }

    /// A client write to a replicated namespace needs the lease: without it
    /// this shard may already have been failed over.
    fn check_lease(&self, command: &Command) -> Result<(), ShardError> {
        match command.client_write_namespace() {
            Some(namespace) => self.check_namespace_lease(namespace),
            None => Ok(()),
        }
    }

    /// On a replicated namespace's primary, anything that must not happen on
    /// a replaced primary (acknowledging a write, a strong, session or bounded
    /// read) needs the current lease.
    fn check_namespace_lease(&self, namespace: &str) -> Result<(), ShardError> {
        let replicated = self
            .machine
            .namespace(namespace)
            .filter(|r| r.epoch > 0 && r.role == crate::command::NamespaceRole::Primary);
        let covered = || {
            self.covered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(namespace)
        };
        match replicated {
            Some(record) if !self.has_lease() || !covered() => Err(ShardError::NoLease {
                namespace: namespace.to_string(),
                epoch: record.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Replicates `command` to a quorum (each member fsyncs before acknowledging),
    /// applies it, and returns its result. A state-machine rejection becomes an
    /// error.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, ShardError> {
        let pending = self.submit(&command).await?;
        self.committed(&command, pending).await
    }

    /// Hands `command` to Raft and returns as soon as it is queued for the log,
    /// without waiting for the commit: commands submitted one after another
    /// from one task reach the log in that order. Finish with
    /// [`Self::committed`].
    pub async fn submit(&self, command: &Command) -> Result<Pending, ShardError> {
        if !self.raft.raft.is_leader() {
            return Err(self.not_leader());
        }
        self.check_not_standby(command)?;
        self.check_lease(command)?;
        self.check_sync_quorum(command)?;
        self.check_rpo(command).await?;
        if let Err((free_bytes, min_free_bytes)) = self.disk.check() {
            return Err(ShardError::DiskFull {
                free_bytes,
                min_free_bytes,
            });
        }
        let encoded = crate::formats::encode_command(command)?;
        let (responder, receiver) = openraft::impls::ProgressResponder::complete_only();
        self.raft
            .raft
            .write(Request(encoded))
            .responder(responder)
            .await
            .map_err(|fatal| ShardError::Raft(fatal.to_string()))?;
        Ok(Pending(receiver))
    }

    /// Waits for a [`Self::submit`]ted command to commit and apply, then for
    /// what its acknowledgement needs (a current lease; a standby's copy in
    /// sync mode), and returns its result.
    pub async fn committed(
        &self,
        command: &Command,
        pending: Pending,
    ) -> Result<CommandResult, ShardError> {
        let response = pending
            .0
            .await
            .map_err(|_| ShardError::OutcomeUnknown)?
            .map_err(|err| match err {
                // The command was handed to Raft: a leader that stepped down
                // may have appended it, and its successor may commit it. A
                // redirect here would let the caller apply it twice.
                ClientWriteError::ForwardToLeader(_) | ClientWriteError::LogEntryDiscarded(_) => {
                    ShardError::OutcomeUnknown
                }
                other => ShardError::Raft(other.to_string()),
            })?;
        let result: CommandResult = postcard::from_bytes(&response.data.0)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // The lease may have run out while the write was committing; then a
        // standby may already have been promoted, and this write must not be
        // acknowledged as if it were safe (it is kept as a lost write if so).
        if self.check_lease(command).is_err() {
            return Err(ShardError::OutcomeUnknown);
        }
        if !matches!(result, CommandResult::Rejected(_)) {
            self.wait_for_standby(command).await?;
            // The confirmations may have come after the lease ran out. The
            // control plane promotes a standby on positions reported after
            // the lease's end, which need not include a confirmation sent
            // later: acknowledging then could lose the write in a failover.
            // (Found by the simulation, seed 136.)
            if self.check_lease(command).is_err() {
                return Err(ShardError::OutcomeUnknown);
            }
        }
        match result {
            CommandResult::Rejected(rejection) => Err(ShardError::Rejected(rejection)),
            other => Ok(other),
        }
    }

    /// Waits until a read at `options` may be served from this node's state
    /// machine. Strong reads confirm leadership (read-index or lease, per
    /// configuration) and wait for the local apply to catch up; eventual reads are
    /// served by any replica as it is; bounded and session reads are served by the
    /// leader with a lease check (a follower cannot bound its own staleness yet, so
    /// it redirects them).
    pub async fn read_barrier(&self, options: Option<&ReadOptions>) -> Result<(), ShardError> {
        let consistency = options
            .map(|o| o.consistency())
            .unwrap_or(Consistency::Unspecified);
        let barrier = match consistency {
            Consistency::Eventual => return Ok(()),
            Consistency::Bounded | Consistency::Session => &self.lease_reads,
            Consistency::Strong | Consistency::Unspecified => &self.strong_reads,
        };
        if !self.raft.raft.is_leader() {
            return Err(self.not_leader());
        }
        barrier.wait().await.map_err(ShardError::from)
    }

    /// The fence on a replicated namespace's primary, after the read barrier:
    /// strong, session and bounded reads need the lease (checked after the
    /// barrier, so no other copy was promoted before the read's data was
    /// current). Sync namespaces also need [`Self::confirm_read`] after the
    /// read.
    async fn fence_read(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
    ) -> Result<(), ShardError> {
        if options.is_some_and(|o| o.consistency() == Consistency::Eventual) {
            return Ok(());
        }
        self.check_still_primary(namespace)?;
        self.check_namespace_lease(namespace)
    }

    /// A read admitted while this copy was the primary must not be served
    /// from it once it has been demoted in between (the lease check alone
    /// passes on a standby: it applies to primaries). Found by the
    /// simulation, seed 3505.
    fn check_still_primary(&self, namespace: &str) -> Result<(), ShardError> {
        match self.machine.namespace(namespace) {
            Some(record)
                if record.epoch > 0 && record.role == crate::command::NamespaceRole::Standby =>
            {
                Err(ShardError::Rejected(
                    crate::command::Rejection::NotPrimary {
                        name: namespace.to_string(),
                        epoch: record.epoch,
                    },
                ))
            }
            _ => Ok(()),
        }
    }

    /// After a read that passed [`Self::read_gate`] on a sync namespace's
    /// primary: waits until the standbys hold every change the state read
    /// may contain, then checks the lease again — otherwise a read could
    /// return a write that a failover then loses, and a later read would go
    /// back in time. The position is taken *after* the read, so it bounds
    /// every write the value can come from (taking it before would let a
    /// write applied in between be returned unconfirmed; the simulation
    /// found that, seed 376). Waits briefly, then refuses with a typed,
    /// retryable reason.
    pub async fn confirm_read(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
        admitted: ReadAdmission,
    ) -> Result<(), ShardError> {
        if admitted != ReadAdmission::Primary
            || options.is_some_and(|o| o.consistency() == Consistency::Eventual)
        {
            return Ok(());
        }
        self.check_still_primary(namespace)?;
        let Some(record) = self.machine.namespace(namespace) else {
            return Ok(());
        };
        if record.epoch == 0 {
            return Ok(());
        }
        if !record.sync {
            return self.check_namespace_lease(namespace);
        }
        let timeout = std::time::Duration::from_millis(self.config.limits.sync_timeout_ms)
            .min(SYNC_READ_WAIT);
        let policy = self.sync_policy(namespace);
        // The former primary holds (once rebuilt, before it may be promoted)
        // everything this copy had when it took over.
        let holds = policy
            .former_primary
            .map(|shard| (shard, record.promoted_seq));
        if !self
            .replication
            .wait_held(
                namespace,
                record.change_seq,
                policy.confirmations,
                holds,
                timeout,
            )
            .await
        {
            return Err(ShardError::NotConfirmed {
                namespace: namespace.to_string(),
                waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
        // The lease must still hold once the standbys have caught up.
        self.check_namespace_lease(namespace)
    }

    /// Records that this standby copy of `namespace` held everything its
    /// primary had logged, as of now.
    pub fn note_standby_current(&self, namespace: &str) {
        self.standby_current_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string(), std::time::Instant::now());
    }

    /// The read rule of one namespace: on its primary, as [`Self::read_barrier`];
    /// on a standby copy, eventual reads are served as they are, bounded reads
    /// only by the standby's leader while it was current within the bound, and
    /// strong or session reads are refused (they belong to the primary).
    pub async fn read_gate(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
    ) -> Result<ReadAdmission, ShardError> {
        let record = self.machine.namespace(namespace);
        if record
            .as_ref()
            .is_some_and(|r| r.role == crate::command::NamespaceRole::Peer)
        {
            self.peer_read_gate(namespace, options).await?;
            return Ok(ReadAdmission::Peer);
        }
        let standby = record.filter(|r| r.role == crate::command::NamespaceRole::Standby);
        // A session read on a standby: served once this copy holds what
        // the session's token saw (the primary's log position).
        if let Some(record) = &standby
            && options.is_some_and(|o| o.consistency() == Consistency::Session)
        {
            if record.resync_needed {
                return Err(ShardError::Rebuilding {
                    namespace: namespace.to_string(),
                    epoch: record.epoch,
                });
            }
            self.wait_for_session(namespace, options).await?;
            return Ok(ReadAdmission::Standby);
        }
        let Some(record) = standby else {
            self.read_barrier(options).await?;
            self.fence_read(namespace, options).await?;
            return Ok(ReadAdmission::Primary);
        };
        self.standby_read_gate(namespace, options, record)
            .map(|()| ReadAdmission::Standby)
    }

    /// The read rule on a standby copy (see [`Self::read_gate`]).
    fn standby_read_gate(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
        record: crate::state_machine::NamespaceRecord,
    ) -> Result<(), ShardError> {
        match options.map(|o| o.consistency()).unwrap_or_default() {
            // A copy waiting to be rebuilt holds its set-aside writes and
            // possibly partial data: it serves nothing until rebuilt.
            Consistency::Eventual if record.resync_needed => Err(ShardError::Rebuilding {
                namespace: namespace.to_string(),
                epoch: record.epoch,
            }),
            Consistency::Eventual => Ok(()),
            Consistency::Bounded => {
                if !self.raft.raft.is_leader() {
                    return Err(self.not_leader());
                }
                let bound_ms = options.map_or(0, |o| o.max_staleness_ms);
                let staleness_ms = self
                    .standby_current_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(namespace)
                    .map(|at| at.elapsed().as_millis() as u64);
                match staleness_ms {
                    Some(ms) if ms <= bound_ms && !record.resync_needed => Ok(()),
                    _ => Err(ShardError::TooStale {
                        namespace: namespace.to_string(),
                        staleness_ms,
                        bound_ms,
                    }),
                }
            }
            _ => Err(ShardError::Rejected(
                crate::command::Rejection::NotPrimary {
                    name: namespace.to_string(),
                    epoch: record.epoch,
                },
            )),
        }
    }

    /// Whether the node is a member with a known leader, has applied what it
    /// knows to be committed (within a small margin, so readiness does not flap
    /// under load), and — when it belongs to a control plane — is registered.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.registered.load(Ordering::Relaxed)
    }

    /// Records that the control plane knows this node.
    pub fn mark_registered(&self) {
        self.registered.store(true, Ordering::Relaxed);
    }

    /// Follows Raft metrics: updates gauges and readiness. Runs until Raft stops.
    pub async fn watch_raft(self: Arc<Self>) {
        let mut watch = self.raft.raft.metrics();
        loop {
            {
                let metrics = watch.borrow_watched();
                self.metrics
                    .is_leader
                    .set(i64::from(metrics.state == ServerState::Leader));
                self.metrics.term.set(metrics.current_term as i64);
                self.metrics
                    .last_log_index
                    .set(metrics.last_log_index.unwrap_or(0) as i64);
                let applied = metrics.last_applied.map_or(0, |id| id.index());
                self.metrics.applied_index.set(applied as i64);
                self.metrics
                    .snapshot_index
                    .set(metrics.snapshot.map_or(0, |id| id.index()) as i64);
                let committed = metrics.local_committed.map_or(0, |id| id.index());
                let member = metrics
                    .membership_config
                    .membership()
                    .get_node(&self.id())
                    .is_some();
                let ready = member
                    && metrics.current_leader.is_some()
                    && metrics.running_state.is_ok()
                    && applied + READY_APPLY_MARGIN >= committed;
                self.ready.store(ready, Ordering::Relaxed);
            }
            self.metrics
                .namespaces
                .set(self.machine.namespace_count() as i64);
            if watch.changed().await.is_err() {
                self.ready.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Entries a node may trail its known commit index by and still call itself ready.
const READY_APPLY_MARGIN: u64 = 1_000;

/// A voter counts as reachable when it acknowledged a heartbeat within this
/// long (several heartbeats; shorter than a minute-long alert window).
const REACHABLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How many of `voters` the leader `me` hears from: itself, and every other
/// voter whose last acknowledged heartbeat was at most `within` ago
/// (`acked_ago` gives that age; `None`: never acknowledged).
fn voters_reachable(
    voters: &[u64],
    me: u64,
    within: std::time::Duration,
    acked_ago: impl Fn(u64) -> Option<std::time::Duration>,
) -> usize {
    voters
        .iter()
        .filter(|&&id| id == me || acked_ago(id).is_some_and(|ago| ago <= within))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachable_voters_table() {
        use std::time::Duration;
        let within = Duration::from_secs(5);
        let ages = |table: &'static [(u64, Option<u64>)]| {
            move |id: u64| {
                table
                    .iter()
                    .find(|(n, _)| *n == id)
                    .and_then(|(_, ms)| ms.map(Duration::from_millis))
            }
        };
        // (voters, me, ages of acks in ms, expected)
        type Case = (&'static [u64], u64, &'static [(u64, Option<u64>)], usize);
        let cases: &[Case] = &[
            (&[1, 2, 3], 1, &[(2, Some(100)), (3, Some(200))], 3),
            (&[1, 2, 3], 1, &[(2, Some(100)), (3, Some(9_000))], 2),
            (&[1, 2, 3], 1, &[(2, None), (3, None)], 1),
            // Exactly at the bound still counts; the leader needs no ack.
            (&[1, 2, 3], 2, &[(1, Some(5_000)), (3, Some(5_001))], 2),
            // A learner's ack (4) is not a voter's.
            (&[1, 2, 3], 1, &[(4, Some(1)), (2, Some(1))], 2),
            (&[7], 7, &[], 1),
        ];
        for (voters, me, table, expected) in cases {
            assert_eq!(
                voters_reachable(voters, *me, within, ages(table)),
                *expected,
                "{voters:?} {me} {table:?}"
            );
        }
    }
}
