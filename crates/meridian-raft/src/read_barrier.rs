//! Sharing one leadership confirmation among concurrent linearizable reads.
//!
//! A read-index round (a heartbeat to a quorum, then waiting for the local apply)
//! proves that everything committed before the round started is visible. Every
//! read that arrived before a round started may use that round, so reads arriving
//! while a round is in flight queue for the next one, and each round serves all of
//! them at once: under load, one round per batch instead of one per read.

use crate::types::MeridianRaft;
use openraft::ReadPolicy;
use openraft::errors::{LinearizableReadError, RaftError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Why a barrier round failed, in a form every waiter of the round can share.
#[derive(Debug, Clone)]
pub enum BarrierFailure {
    /// This node is not the leader (leader id and address when known).
    NotLeader(Option<u64>, Option<String>),
    /// No quorum confirmed leadership in time.
    NoQuorum(String),
    /// Raft stopped.
    Stopped(String),
}

type Waiter = oneshot::Sender<Result<(), BarrierFailure>>;

#[derive(Default)]
struct Rounds {
    in_flight: bool,
    next: Vec<Waiter>,
}

/// Coalesces linearizable read barriers of one policy.
pub struct ReadBarrier {
    raft: MeridianRaft,
    policy: ReadPolicy,
    rounds: Arc<Mutex<Rounds>>,
}

impl ReadBarrier {
    /// A coalescer confirming reads on `raft` with `policy`.
    pub fn new(raft: MeridianRaft, policy: ReadPolicy) -> Self {
        Self {
            raft,
            policy,
            rounds: Arc::new(Mutex::new(Rounds::default())),
        }
    }

    /// Returns once a round that started after this call has confirmed leadership
    /// and the local state machine has applied everything it saw committed.
    pub async fn wait(&self) -> Result<(), BarrierFailure> {
        let (sender, receiver) = oneshot::channel();
        let start_driver = {
            let mut rounds = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
            rounds.next.push(sender);
            !std::mem::replace(&mut rounds.in_flight, true)
        };
        if start_driver {
            // The driver outlives any one caller, so a cancelled read cannot strand
            // the others.
            tokio::spawn(drive(
                self.raft.clone(),
                self.policy.clone(),
                self.rounds.clone(),
            ));
        }
        receiver.await.unwrap_or_else(|_| {
            Err(BarrierFailure::Stopped(
                "read barrier driver stopped".into(),
            ))
        })
    }
}

/// Runs rounds while reads are waiting.
async fn drive(raft: MeridianRaft, policy: ReadPolicy, rounds: Arc<Mutex<Rounds>>) {
    loop {
        let waiters = {
            let mut rounds = rounds.lock().unwrap_or_else(|e| e.into_inner());
            if rounds.next.is_empty() {
                rounds.in_flight = false;
                return;
            }
            std::mem::take(&mut rounds.next)
        };
        let outcome = raft
            .ensure_linearizable(policy.clone())
            .await
            .map(|_| ())
            .map_err(|err| match err {
                RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)) => {
                    BarrierFailure::NotLeader(
                        forward.leader_id,
                        forward.leader_node.map(|node| node.addr),
                    )
                }
                RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)) => {
                    BarrierFailure::NoQuorum(q.to_string())
                }
                RaftError::Fatal(fatal) => BarrierFailure::Stopped(fatal.to_string()),
            });
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}
