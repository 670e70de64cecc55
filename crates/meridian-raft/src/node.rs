//! Wiring storage, state machine and network into a running Raft instance.

use crate::engine::StorageEngine;
use crate::error::RaftNodeError;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::state_machine::{Application, StateMachineStore};
use crate::transport::TransportService;
use crate::types::MeridianRaft;
use meridian_proto::v1::raft_transport_server::RaftTransportServer;
use openraft::errors::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Tunables of a Raft node.
#[derive(Debug, Clone)]
pub struct RaftNodeOptions {
    /// This node's id; never reused within a group.
    pub node_id: u64,
    /// Name of the group (shard or control plane), for logs.
    pub group: String,
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Entries after which a new snapshot is taken (each member spaces it
    /// by up to 40 % more, see [`crate::snapshot_spacing`]).
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub keep_entries_after_snapshot: u64,
    /// Deadline for sending a whole snapshot to a follower.
    pub install_snapshot_timeout_ms: u64,
    /// Unanswered log-append requests per follower stream (0: no cap).
    pub append_window: usize,
    /// How peers are dialed (TLS, WAN rewrites).
    pub dialer: meridian_net::Dialer,
    /// Who may call this member's Raft transport (by certificate identity).
    pub peers: meridian_net::peers::Peers,
    /// Whether the transport also refuses callers that are not members of
    /// the group (see [`crate::member_gate`]), beyond `peers`.
    pub members_only: bool,
}

/// A running Raft member: the openraft instance plus handles to its storage.
#[derive(Clone)]
pub struct RaftNode {
    /// The openraft instance.
    pub raft: MeridianRaft,
    /// The node's storage engine.
    pub engine: StorageEngine,
    /// The state-machine adapter (for reading the application directly).
    pub state_machine: StateMachineStore,
    /// This node's id.
    pub node_id: u64,
    /// Who may call its Raft transport.
    pub peers: meridian_net::peers::Peers,
    /// Keeps non-members out of its Raft transport, when members only.
    pub member_gate: Option<Arc<crate::member_gate::MemberGate>>,
    /// The progress of re-encryption passes ([`RaftNode::rekey`]).
    pub reseal: Arc<crate::reseal::ResealProgress>,
    /// The process's named background workers (this member's own, and those
    /// the shard or control plane around it starts).
    pub workers: meridian_net::workers::Workers,
}

impl RaftNode {
    /// Opens the log and state machine in `engine` and starts Raft. A node with
    /// existing state recovers it: the log is replayed into the state machine up to
    /// the last known commit, and the node rejoins its group.
    pub async fn start(
        options: &RaftNodeOptions,
        engine: StorageEngine,
        app: Arc<dyn Application>,
    ) -> Result<Self, RaftNodeError> {
        let config = Config {
            cluster_name: options.group.clone(),
            heartbeat_interval: options.heartbeat_interval_ms,
            election_timeout_min: options.election_timeout_min_ms,
            election_timeout_max: options.election_timeout_max_ms,
            install_snapshot_timeout: options.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(crate::snapshot_spacing::interval(
                options.snapshot_after_entries,
                &options.group,
                options.node_id,
            )),
            max_in_snapshot_log_to_keep: options.keep_entries_after_snapshot,
            purge_batch_size: 256,
            max_payload_entries: 1024,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()?;
        let log_store = LogStore::open(&engine)
            .map_err(|e| RaftNodeError::storage("opening the raft log", e))?;
        let state_machine = StateMachineStore::open(&engine, app)
            .map_err(|e| RaftNodeError::storage("opening the state machine", e))?;
        let raft = MeridianRaft::new(
            options.node_id,
            Arc::new(config),
            NetworkFactory {
                dialer: options.dialer.clone(),
                append_window: options.append_window,
            },
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| RaftNodeError::Fatal(e.to_string()))?;
        Ok(Self {
            raft,
            engine,
            state_machine,
            node_id: options.node_id,
            peers: options.peers.clone(),
            reseal: Default::default(),
            workers: meridian_net::workers::Workers::new(),
            member_gate: options.members_only.then(|| {
                Arc::new(crate::member_gate::MemberGate::new(
                    options.dialer.clone(),
                    &options.group,
                ))
            }),
        })
    }

    /// Makes `members` the first membership if this node has never been part of a
    /// group. Every initial member may call this with the same list; a node that
    /// already has state ignores it.
    pub async fn initialize_if_new(
        &self,
        members: BTreeMap<u64, String>,
    ) -> Result<bool, RaftNodeError> {
        let nodes: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, address)| (id, BasicNode::new(address)))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(err) => Err(RaftNodeError::Fatal(err.to_string())),
        }
    }

    /// The current leader's id and advertised address, as this node knows them.
    pub fn leader(&self) -> (Option<u64>, Option<String>) {
        use openraft::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader;
        let address = leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| node.addr.clone())
        });
        (leader, address)
    }

    /// Rotates this node's data key and starts re-sealing every stored
    /// value under it in the background (see [`crate::reseal`]); when the
    /// pass ends, a snapshot is triggered so the Raft log purge takes the
    /// entries still under older keys. Returns the new pass's status, or
    /// the running one's if a pass is already under way (nothing new is
    /// started). Refused when encryption at rest is off.
    pub fn rekey(&self) -> Result<crate::reseal::ResealStatus, RaftNodeError> {
        if !self.engine.sealer().is_on() {
            return Err(RaftNodeError::Refused(
                "encryption at rest is off on this node (no node.encryption_key_file): there is no data key to rotate".into(),
            ));
        }
        if self.reseal.status().running {
            return Ok(self.reseal.status());
        }
        let key_id = self
            .engine
            .rotate_data_key()
            .map_err(|e| RaftNodeError::storage("rotating the data key", e))?;
        if !self.reseal.begin(key_id, crate::reseal::now_unix_ms()) {
            return Ok(self.reseal.status());
        }
        let (engine, progress, raft) =
            (self.engine.clone(), self.reseal.clone(), self.raft.clone());
        let keyspaces = self.state_machine.application().keyspaces();
        let log = self
            .engine
            .keyspace("raft_log", fjall::KeyspaceCreateOptions::default)
            .map_err(|e| RaftNodeError::storage("opening the raft log", e))?;
        self.workers.spawn("re-encryption", async move {
            let pass = tokio::task::spawn_blocking({
                let progress = progress.clone();
                move || {
                    crate::reseal::run(
                        &engine,
                        &keyspaces,
                        &log,
                        &progress,
                        crate::reseal::now_unix_ms,
                    )
                }
            });
            if let Err(err) = pass.await {
                tracing::error!(%err, "the re-encryption pass stopped");
            }
            // The log entries still under older keys leave with the purge
            // that follows a snapshot.
            if let Err(err) = raft.trigger().snapshot().await {
                tracing::warn!(%err, "no snapshot after re-encryption");
            }
            tracing::info!(status = ?progress.status(), "re-encryption pass ended");
        });
        Ok(self.reseal.status())
    }

    /// Shuts the member's process down once its listeners stopped
    /// accepting: at once, the `serving` tasks get
    /// [`meridian_net::serve::DRAIN_DEADLINE`] for calls in flight, every
    /// worker is stopped and awaited, and Raft stops; then the journal is
    /// synced.
    pub async fn shut_down(
        &self,
        serving: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
    ) -> std::io::Result<()> {
        use meridian_net::serve::{DRAIN_DEADLINE, drain};
        let raft = async {
            if let Err(err) = self.raft.shutdown().await {
                tracing::warn!(error = %err, "raft did not shut down cleanly");
            }
        };
        tokio::join!(
            drain(serving, DRAIN_DEADLINE),
            self.workers.shutdown(DRAIN_DEADLINE),
            raft,
        );
        // Whatever is still only in the journal's buffers becomes durable now.
        self.engine.sync_now()
    }

    /// Rotates the data key when the current one has sealed
    /// [`crate::at_rest::ROTATE_AFTER_SEALS`] values (checked every 10 s
    /// until the node's Raft stops).
    pub fn spawn_key_rotation(&self) {
        let engine = self.engine.clone();
        let raft = self.raft.clone();
        self.workers.spawn("key-rotation", async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                if raft.is_initialized().await.is_err() {
                    return;
                }
                if engine.sealer().rotation_due() {
                    match engine.rotate_data_key() {
                        Ok(id) => {
                            tracing::info!(key = %format!("{id:016x}"), "rotated the data key (seal count)")
                        }
                        Err(err) => tracing::error!(%err, "cannot rotate the data key"),
                    }
                }
            }
        });
    }

    /// The gRPC service peers use to reach this node's Raft.
    pub fn transport_service(&self) -> RaftTransportServer<TransportService> {
        TransportService::new(
            self.raft.clone(),
            self.engine.dir().join("snapshots"),
            self.peers.clone(),
            self.member_gate.clone(),
        )
        .into_server()
    }
}
