//! A control-plane member's request logic: proposing commands, read barriers and
//! leader discovery, independent of the wire.

use crate::command::{ControlCommand, ControlResult, Requester};
use crate::config::ControlConfig;
use crate::error::ControlError;
use crate::model::Region;
use crate::state::ControlState;
use crate::state_machine::ControlStateMachine;
use meridian_raft::metrics::StorageMetrics;
use meridian_raft::read_barrier::ReadBarrier;
use meridian_raft::{RaftNode, Request, StorageEngine};
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One member of the control plane.
pub struct ControlNode {
    /// Configuration.
    pub config: ControlConfig,
    /// The Raft member.
    pub raft: RaftNode,
    /// The state machine (for subscriptions).
    pub machine: Arc<ControlStateMachine>,
    /// How shards and peers are dialed (TLS, WAN rewrites).
    pub dialer: meridian_net::Dialer,
    /// Every lease grant this member sent while leading, and which shards
    /// are being drained (`None` while it does not lead).
    pub leases: std::sync::Mutex<Option<crate::lease::LeaseLedger>>,
    /// Each shard's namespace positions from its last successful probe.
    pub positions:
        std::sync::Mutex<std::collections::HashMap<String, std::collections::HashMap<String, u64>>>,
    /// Calls refused by authorization, waiting to be written to the audit
    /// log by the leader (bounded: see [`RefusalQueue`]).
    pub refusals: std::sync::Mutex<RefusalQueue>,
    /// How long the last proposals took to commit, in ms (newest last;
    /// at most [`COMMIT_SAMPLES`]): what a move keeps in reserve for its
    /// route switch.
    commit_ms: std::sync::Mutex<std::collections::VecDeque<u64>>,
    /// What this member counts as it happens, for `/metrics`.
    pub stats: crate::metrics::ControlStats,
    state: Arc<RwLock<ControlState>>,
    reads: ReadBarrier,
}

/// Commit latencies kept for [`ControlNode::recent_commit_ms`].
pub const COMMIT_SAMPLES: usize = 32;

/// Refused calls waiting for the audit log. Bounded, so a flood of refused
/// calls costs memory and log space proportional to the bound, not to the
/// flood: what does not fit is counted and recorded as a count.
#[derive(Debug, Default)]
pub struct RefusalQueue {
    calls: Vec<crate::command::RefusedCall>,
    dropped: u64,
}

/// Refused calls kept between two flushes at most.
pub const REFUSALS_QUEUED: usize = 256;
/// How often the leader writes refused calls to the audit log.
const REFUSAL_FLUSH: Duration = Duration::from_millis(500);

impl RefusalQueue {
    /// Queues one refused call (or counts it when the queue is full).
    pub fn push(&mut self, call: crate::command::RefusedCall) {
        if self.calls.len() < REFUSALS_QUEUED {
            self.calls.push(call);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Counts refusals a reporter could not keep.
    pub fn count_dropped(&mut self, dropped: u64) {
        self.dropped = self.dropped.saturating_add(dropped);
    }

    fn take(&mut self) -> (Vec<crate::command::RefusedCall>, u64) {
        (
            std::mem::take(&mut self.calls),
            std::mem::take(&mut self.dropped),
        )
    }
}

/// Milliseconds since the Unix epoch, for audit records.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ControlNode {
    /// Opens storage, starts Raft, and initializes a brand-new control plane.
    pub async fn start(
        config: ControlConfig,
        dialer: meridian_net::Dialer,
    ) -> Result<Arc<Self>, ControlError> {
        let engine = StorageEngine::open_configured(
            &config.node.data_dir,
            Arc::new(StorageMetrics::default()),
            config.node.key_file(),
            config.storage,
        )?;
        let machine = Arc::new(ControlStateMachine::open(&engine)?);
        let options = config.raft.node_options(
            config.node.id,
            "control",
            dialer.clone(),
            meridian_net::peers::Peers::ControlPlane,
        );
        let raft = RaftNode::start(&options, engine, machine.clone())
            .await
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        // A new data key after every 2^28 values sealed (encryption at rest).
        raft.spawn_key_rotation();
        if !config.cluster.initial_members.is_empty() {
            raft.initialize_if_new(config.cluster.members())
                .await
                .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        }
        let reads = ReadBarrier::new(raft.raft.clone(), ReadPolicy::ReadIndex);
        Ok(Arc::new(Self {
            state: machine.state(),
            config,
            raft,
            machine,
            dialer,
            leases: Default::default(),
            positions: Default::default(),
            refusals: Default::default(),
            commit_ms: Default::default(),
            stats: Default::default(),
            reads,
        }))
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.raft.node_id
    }

    /// The current leader's address, if known.
    pub fn leader_address(&self) -> Option<String> {
        self.raft.leader().1
    }

    /// Replicates `command` and returns its result; a refusal becomes an error.
    pub async fn propose(&self, command: ControlCommand) -> Result<ControlResult, ControlError> {
        if !self.raft.raft.is_leader() {
            return Err(ControlError::NotLeader {
                leader_address: self.leader_address(),
            });
        }
        let encoded = postcard::to_stdvec(&command).map_err(std::io::Error::other)?;
        let started = std::time::Instant::now();
        let response = self
            .raft
            .raft
            .client_write(Request(encoded))
            .await
            .map_err(|err| match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                    ControlError::NotLeader {
                        leader_address: forward.leader_node.map(|n| n.addr),
                    }
                }
                other => ControlError::Unavailable(other.to_string()),
            })?;
        {
            let mut samples = self.commit_ms.lock().unwrap_or_else(|e| e.into_inner());
            if samples.len() == COMMIT_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        let result: ControlResult = postcard::from_bytes(&response.data.0)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        match result {
            ControlResult::Rejected { rejection, .. } => Err(rejection.into()),
            other => Ok(other),
        }
    }

    /// How long recent proposals took to commit, in ms (oldest first).
    pub fn recent_commit_ms(&self) -> Vec<u64> {
        self.commit_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Waits until reads of the local state are linearizable.
    pub async fn read_barrier(&self) -> Result<(), ControlError> {
        self.require_leader()?;
        self.reads.wait().await.map_err(ControlError::from)
    }

    /// `NotLeader` (naming the leader, if known) unless this member leads.
    pub fn require_leader(&self) -> Result<(), ControlError> {
        if self.raft.raft.is_leader() {
            Ok(())
        } else {
            Err(ControlError::NotLeader {
                leader_address: self.leader_address(),
            })
        }
    }

    /// Runs `read` on the current state.
    pub fn with_state<T>(&self, read: impl FnOnce(&ControlState) -> T) -> T {
        read(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn own_requester(&self) -> Requester {
        Requester {
            actor: format!("control-{}", self.id()),
            at_unix_ms: now_unix_ms(),
        }
    }

    /// While this member leads, writes refused calls to the audit log
    /// (refusals seen while following are dropped with the queue: only the
    /// leader serves the calls that are authorized). Runs until Raft stops.
    pub async fn record_refusals(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REFUSAL_FLUSH).await;
            let (refusals, dropped) = self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if (!refusals.is_empty() || dropped > 0) && self.raft.raft.is_leader() {
                let command = ControlCommand::RecordRefusals {
                    refusals,
                    dropped,
                    requester: self.own_requester(),
                };
                if let Err(err) = self.propose(command).await {
                    tracing::warn!(error = %err, "could not record refused calls");
                }
            }
            if self
                .raft
                .raft
                .metrics()
                .borrow_watched()
                .running_state
                .is_err()
            {
                return;
            }
        }
    }

    /// While this member leads, makes sure every configured region is registered
    /// as configured and the configured first grants were made once. Runs
    /// until Raft stops.
    pub async fn seed_regions(self: Arc<Self>) {
        loop {
            if self.raft.raft.is_leader() && !self.with_state(|s| s.access.bootstrapped) {
                match self.config.auth.bootstrap_grants() {
                    Ok(grants) => {
                        let command = ControlCommand::Access {
                            change: meridian_access::AccessChange::Bootstrap { grants },
                            requester: self.own_requester(),
                        };
                        if let Err(err) = self.propose(command).await {
                            tracing::warn!(error = %err, "could not make the first grants");
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "bad [auth] configuration"),
                }
            }
            if self.raft.raft.is_leader() {
                for seed in &self.config.regions {
                    let region = Region {
                        name: seed.name.clone(),
                        jurisdictions: seed.jurisdictions.iter().cloned().collect(),
                        latitude: seed.latitude,
                        longitude: seed.longitude,
                    };
                    let current = self.with_state(|s| s.regions.get(&seed.name).cloned());
                    // Configuration adds regions; it never changes one that
                    // exists (its jurisdictions decide where data may live):
                    // that is `PutRegion` by an admin, audited and checked.
                    if let Some(current) = &current
                        && current != &region
                    {
                        tracing::warn!(
                            region = %seed.name,
                            configured = ?region.jurisdictions,
                            registered = ?current.jurisdictions,
                            "the configured region differs from the registered one; the registered one stays (change it with PutRegion as an admin)"
                        );
                    }
                    if current.is_none() {
                        let command = ControlCommand::PutRegion {
                            region,
                            requester: self.own_requester(),
                        };
                        if let Err(err) = self.propose(command).await {
                            tracing::warn!(region = %seed.name, error = %err, "could not register region");
                        }
                    }
                }
            }
            if self
                .raft
                .raft
                .metrics()
                .borrow_watched()
                .running_state
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
