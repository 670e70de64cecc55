//! Active-active namespaces at the request level: becoming a peer, typed
//! writes, session tokens, and which reads a peer serves.
//!
//! A peer takes writes in its own region without a lease (nothing is fenced:
//! every region writes), stamps them with the namespace's hybrid logical
//! clock inside the Raft command, and answers with a session token: its
//! position in its own log and how far it has merged every other region's.
//! A session read carrying a token is served only once this copy covers it;
//! strong reads are refused (no copy can promise them while others write).

use crate::command::{ActiveOutcome, Command, CommandResult, NamespaceRole, Rejection};
use crate::error::ShardError;
use crate::limits::LimitError;
use crate::node::ShardNode;
use meridian_proto::v1::{Consistency, ReadOptions};
use meridian_replication::crdt::{KeyState, Op};
use meridian_replication::hlc::Offset;
use meridian_replication::session::{PRIMARY_HISTORY, SessionToken};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What an active-active peer's leader last heard from one origin region.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerHeard {
    /// The origin's log position it last reported.
    pub origin_head: u64,
    /// How far this peer holds the origin's writes.
    pub merged: u64,
    /// When this peer last held everything the origin had reported.
    pub current_at: Option<Instant>,
}

/// How long a session read waits for this copy to catch up with its token
/// before refusing (reason `session-behind`).
pub const SESSION_WAIT: Duration = Duration::from_secs(1);
/// How often the wait looks again.
const SESSION_POLL: Duration = Duration::from_millis(5);

impl ShardNode {
    /// Whether `namespace` is an active-active peer here.
    pub fn is_peer(&self, namespace: &str) -> bool {
        self.machine
            .namespace(namespace)
            .is_some_and(|r| r.role == NamespaceRole::Peer)
    }

    /// Makes this shard's copy of `namespace` a peer (from the control plane).
    pub async fn configure_peer(
        &self,
        namespace: &str,
        epoch: u64,
        max_clock_offset_ms: u64,
    ) -> Result<(), ShardError> {
        match self
            .propose(Command::ConfigurePeer {
                namespace: namespace.to_string(),
                epoch,
                region: self.config.node.region.clone(),
                conflict_retention: self.config.replication.conflict_retention,
                max_clock_offset_ms,
            })
            .await?
        {
            CommandResult::Configured => Ok(()),
            other => Err(crate::api::kv::unexpected(other)),
        }
    }

    /// Notes the clock offset the control plane measured, with the bound.
    pub fn note_clock(&self, offset: Offset, max_offset_ms: u64) {
        let was = self
            .clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((offset, max_offset_ms));
        let skewed = offset.beyond(max_offset_ms);
        if skewed && was.is_none_or(|(o, m)| !o.beyond(m)) {
            tracing::error!(%offset, max_clock_offset_ms = max_offset_ms, "this node's clock is too far from the control plane's: active-active writes are refused until it is back within the bound");
        } else if !skewed && was.is_some_and(|(o, m)| o.beyond(m)) {
            tracing::info!(%offset, "this node's clock is back within the bound");
        }
        self.metrics
            .clock_offset_seconds
            .set(offset.ms as f64 / 1_000.0);
        self.metrics.clock_skewed.set(i64::from(skewed));
    }

    /// Refuses while the last measurement put this node's clock surely
    /// beyond the bound: its stamps would order writes wrongly everywhere.
    fn check_clock(&self, namespace: &str) -> Result<(), ShardError> {
        match *self.clock.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((offset, max_offset_ms)) if offset.beyond(max_offset_ms) => {
                Err(ShardError::ClockSkew {
                    namespace: namespace.to_string(),
                    offset: offset.to_string(),
                    max_offset_ms,
                })
            }
            _ => Ok(()),
        }
    }

    /// Applies a typed write to an active-active key.
    pub async fn active_write(
        &self,
        namespace: &str,
        key: Vec<u8>,
        op: Op,
    ) -> Result<ActiveOutcome, ShardError> {
        self.check_clock(namespace)?;
        match self
            .propose(Command::ActiveWrite {
                namespace: namespace.to_string(),
                key,
                op,
                physical_ms: crate::lease::now_unix_ms(),
            })
            .await?
        {
            CommandResult::ActiveWritten(outcome) => Ok(outcome),
            other => Err(crate::api::kv::unexpected(other)),
        }
    }

    /// A key's state on this copy (`None`: never written).
    pub fn key_state(&self, namespace: &str, key: &[u8]) -> Result<Option<KeyState>, ShardError> {
        Ok(self.machine.active_state(namespace, key)?)
    }

    /// What this copy holds of each history of `namespace`: a peer's own
    /// log and its merge positions; otherwise the primary's log.
    pub fn positions(&self, namespace: &str) -> BTreeMap<String, u64> {
        let Some(record) = self.machine.namespace(namespace) else {
            return BTreeMap::new();
        };
        if record.role != NamespaceRole::Peer {
            return BTreeMap::from([(PRIMARY_HISTORY.to_string(), record.change_seq)]);
        }
        let meta = self.machine.active_meta(namespace).ok().flatten();
        let mut positions = meta.as_ref().map(|m| m.merged.clone()).unwrap_or_default();
        if let Some(meta) = meta {
            positions.insert(meta.region, record.change_seq);
        }
        positions
    }

    /// The session token of an answer from this copy, now.
    pub fn session_token(&self, namespace: &str) -> Vec<u8> {
        SessionToken(self.positions(namespace)).encode()
    }

    /// Waits (at most [`SESSION_WAIT`]) until this copy covers the session
    /// token in `options`; refuses with `session-behind` otherwise.
    pub async fn wait_for_session(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
    ) -> Result<(), ShardError> {
        let raw = options.map_or(&[][..], |o| o.session_token.as_slice());
        let token = SessionToken::decode(raw)
            .map_err(|e| LimitError::Malformed(format!("read.session_token: {e}")))?;
        let deadline = Instant::now() + SESSION_WAIT;
        loop {
            let missing = token.missing(&self.positions(namespace));
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let missing = missing
                    .iter()
                    .map(|(history, needed, held)| {
                        let history = if history.is_empty() {
                            "the primary's log"
                        } else {
                            history.as_str()
                        };
                        format!("{history}: holds {held} of {needed}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ShardError::SessionBehind {
                    namespace: namespace.to_string(),
                    missing,
                });
            }
            tokio::time::sleep(SESSION_POLL).await;
        }
    }

    /// A bounded read on a peer: served by its leader only while, for every
    /// other region of the set, it held all that region's writes within the
    /// bound in time (and, if given, is at most that many changes behind
    /// what the region last reported).
    fn peer_bounded_gate(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
    ) -> Result<(), ShardError> {
        if !self.raft.raft.is_leader() {
            return Err(self.not_leader());
        }
        let bound_ms = options.map_or(0, |o| o.max_staleness_ms);
        let bound_entries = options.map_or(0, |o| o.max_staleness_entries);
        let heard = self.peer_heard.lock().unwrap_or_else(|e| e.into_inner());
        for origin in self
            .access
            .peer_regions(namespace, &self.config.node.region)
        {
            let seen = heard
                .get(&(namespace.to_string(), origin.clone()))
                .copied()
                .unwrap_or_default();
            let staleness_ms = seen
                .current_at
                .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
            let behind = seen.origin_head.saturating_sub(seen.merged);
            let in_time = staleness_ms.is_some_and(|ms| ms <= bound_ms);
            let in_entries = bound_entries == 0 || behind <= bound_entries;
            if !in_time || !in_entries {
                return Err(ShardError::PeerTooStale {
                    namespace: namespace.to_string(),
                    origin,
                    staleness_ms,
                    behind,
                    bound_ms,
                    bound_entries,
                });
            }
        }
        Ok(())
    }

    /// The read rule of a peer copy: eventual and session reads (the latter
    /// once the token is covered) are served by any member; bounded reads
    /// by the leader within the bound; strong reads are refused, naming
    /// what to use.
    pub async fn peer_read_gate(
        &self,
        namespace: &str,
        options: Option<&ReadOptions>,
    ) -> Result<(), ShardError> {
        match options.map(|o| o.consistency()).unwrap_or_default() {
            Consistency::Eventual | Consistency::Unspecified => Ok(()),
            Consistency::Session => self.wait_for_session(namespace, options).await,
            Consistency::Strong => Err(ShardError::Rejected(Rejection::RefusedActiveActive {
                name: namespace.to_string(),
                operation: "a strong read".into(),
                why: "every region takes writes, so no copy can promise to reflect all of them; read with session consistency (read-your-writes with the token of your last call) or eventual".into(),
            })),
            Consistency::Bounded => self.peer_bounded_gate(namespace, options),
        }
    }
}
