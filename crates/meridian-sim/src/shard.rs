//! A region's shard as the simulation runs it: three replicas, each a real
//! `KvStateMachine` on its own storage, applying one committed log in batches
//! split at random (so replicas batch differently); a leader that admits
//! writes and reads with the real lease (`meridian_shard::lease`) and sync
//! rule (`meridian_replication::sync_rule`); and a shipper per standby, as
//! `meridian_replication::shipper` does it.
//!
//! Raft inside a shard is not simulated (openraft has its own tests): a
//! commit takes a few milliseconds, and a crash commits each proposal in
//! flight or not, at random.

use crate::world::{
    Desired, Event, Msg, NS, OTHER, Position, Proc, REGIONS, ShipResult, World, config,
};
use meridian_check::Output;
use meridian_raft::metrics::StorageMetrics;
use meridian_raft::{Application, ApplyBatch, StorageEngine};
use meridian_replication::sync_rule::{StandbyView, acknowledged, may_propose};
use meridian_shard::command::{Command, CommandResult, NamespaceRole};
use meridian_shard::lease::{Grant, LeaseDecision, LeaseState};
use meridian_shard::state_machine::{KvStateMachine, NamespaceRecord};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// One replica's storage and state machine.
pub struct Replica {
    pub engine: StorageEngine,
    pub machine: KvStateMachine,
    /// Log entries applied.
    pub applied: usize,
}

/// The lease's coverage: the sync rule the grant carried.
#[derive(Debug, Clone)]
pub struct Covered {
    pub confirmations: usize,
    pub former_primary: Option<usize>,
}

/// The leader's view of one standby (as `meridian_replication::shipper`'s `Pair`).
#[derive(Debug, Clone, Default)]
pub struct Pair {
    pub acked: Option<u64>,
    pub last_answer: Option<u64>,
    pub sent: u64,
    pub in_flight: Option<(u64, u64)>,
    pub rebuilding: bool,
    pub retry_at: u64,
    pub last_sent_at: u64,
}

/// A write admitted and waiting for its commit.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub from: Proc,
    pub key: String,
    pub value: String,
}

/// A write or read waiting for standby confirmations.
#[derive(Debug, Clone)]
pub struct Wait {
    pub from: Proc,
    pub seq: u64,
    /// For reads: the value read, returned once confirmed.
    pub read_value: Option<Option<String>>,
}

/// A region's shard.
pub struct Shard {
    pub up: bool,
    pub incarnation: u64,
    pub raft_term: u64,
    pub clock_offset_ms: i64,
    pub replicas: Vec<Replica>,
    pub leader: usize,
    pub log: Vec<Vec<u8>>,
    pub lease: LeaseState,
    pub covered: Option<Covered>,
    pub routes: Option<(u64, usize, Vec<usize>)>,
    pub pairs: BTreeMap<usize, Pair>,
    pub proposals: BTreeMap<u64, Proposal>,
    pub reads: BTreeMap<u64, (Proc, String)>,
    pub waits: BTreeMap<u64, Wait>,
}

impl Shard {
    /// Three replicas with storage under `dir`.
    pub fn open(dir: &Path, clock_offset_ms: i64) -> io::Result<Self> {
        let replicas = (0..3)
            .map(|i| {
                let path = dir.join(format!("replica-{i}"));
                std::fs::create_dir_all(&path)?;
                let engine = StorageEngine::open(&path, Arc::new(StorageMetrics::default()))?;
                let machine = KvStateMachine::open(&engine)?;
                Ok(Replica {
                    engine,
                    machine,
                    applied: 0,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            up: true,
            incarnation: 0,
            raft_term: 1,
            clock_offset_ms,
            replicas,
            leader: 0,
            log: Vec::new(),
            lease: LeaseState::default(),
            covered: None,
            routes: None,
            pairs: BTreeMap::new(),
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            waits: BTreeMap::new(),
        })
    }

    /// The leader's state machine.
    pub fn machine(&self) -> &KvStateMachine {
        &self.replicas[self.leader].machine
    }

    /// The namespace's record on the leader.
    pub fn record(&self) -> Option<NamespaceRecord> {
        self.machine().namespace(NS)
    }

    /// Applies log entries `[replica.applied, through)` to `replica` as one
    /// batch; returns the last entry's result.
    pub fn apply_to(&mut self, replica: usize, through: usize) -> io::Result<Option<Vec<u8>>> {
        let Replica {
            engine,
            machine,
            applied,
        } = &mut self.replicas[replica];
        let mut batch = ApplyBatch::new(engine);
        let mut last = None;
        while *applied < through {
            let index = *applied as u64 + 1;
            last = Some(machine.apply(index, &self.log[*applied], &mut batch)?);
            *applied += 1;
        }
        batch.commit()?;
        Ok(last)
    }

    /// Commits `command` through the shard's log; the leader applies it now.
    pub fn commit(&mut self, command: &Command) -> io::Result<CommandResult> {
        self.log
            .push(meridian_shard::formats::encode_command(command)?);
        let raw = self
            .apply_to(self.leader, self.log.len())?
            .unwrap_or_default();
        postcard::from_bytes(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Whether the lease covers the namespace now (`check_namespace_lease`):
    /// only a replicated primary needs it.
    pub fn lease_ok(&self, now: std::time::Instant) -> bool {
        match self.record() {
            Some(r) if r.epoch > 0 && r.role == NamespaceRole::Primary => {
                self.lease.holds(now, self.raft_term) && self.covered.is_some()
            }
            _ => true,
        }
    }
}

impl World {
    /// Creates the namespaces: [`NS`] on its primary and standbys, [`OTHER`]
    /// (region-locked) outside its jurisdictions.
    pub fn shard_bootstrap(&mut self, r: usize) -> io::Result<()> {
        let placement = self.control.placement.clone();
        let shard = &mut self.shards[r];
        if r == crate::world::OUTSIDE {
            shard.commit(&Command::CreateNamespace {
                name: OTHER.into(),
                max_namespaces: 10,
            })?;
            for i in 0..3 {
                shard.commit(&Command::Put {
                    namespace: OTHER.into(),
                    key: format!("o{i}").into_bytes(),
                    value: format!("other-v{i}").into_bytes(),
                })?;
            }
            return Ok(());
        }
        let role = if r == placement.primary {
            NamespaceRole::Primary
        } else if placement.standbys.contains(&r) {
            NamespaceRole::Standby
        } else {
            return Ok(());
        };
        shard.commit(&Command::CreateNamespace {
            name: NS.into(),
            max_namespaces: 10,
        })?;
        shard.commit(&Command::ConfigureNamespace {
            namespace: NS.into(),
            role,
            epoch: 1,
            log_changes: true,
            fork_seq: None,
            sync: placement.sync,
            max_lag_entries: 0,
            max_lag_ms: 0,
        })?;
        Ok(())
    }

    fn views(&self, r: usize) -> Vec<StandbyView> {
        self.shards[r]
            .pairs
            .iter()
            .map(|(&t, p)| StandbyView {
                shard: REGIONS[t].to_string(),
                confirmed: p.acked,
                last_answer: p.last_answer.map(|at| self.instant(at)),
                rebuilding: p.rebuilding,
            })
            .collect()
    }

    fn answer(&mut self, r: usize, to: Proc, op: u64, output: Output) {
        if output == Output::Done {
            self.acked.insert(op, self.now);
        }
        self.send(Proc::Shard(r), to, Msg::Answer { op, output });
    }

    /// A message for shard `r`.
    pub fn shard_receive(&mut self, r: usize, msg: Msg) -> io::Result<()> {
        match msg {
            Msg::Probe {
                id,
                ticket,
                sent_unix_ms,
                desired,
            } => self.shard_probe(r, id, ticket, sent_unix_ms, desired)?,
            Msg::Routes {
                epoch,
                primary,
                standbys,
            } => {
                let shard = &mut self.shards[r];
                if shard.routes.as_ref().is_none_or(|(e, _, _)| *e <= epoch) {
                    shard.routes = Some((epoch, primary, standbys));
                }
            }
            Msg::Ship { id, epoch, changes } => {
                let result = self.shards[r].commit(&Command::ApplyChanges {
                    namespace: NS.into(),
                    epoch,
                    changes,
                })?;
                self.ship_answer(r, id, result);
            }
            Msg::FullCopy {
                id,
                epoch,
                entries,
                through_seq,
            } => {
                let shard = &mut self.shards[r];
                shard.commit(&Command::ResyncBegin {
                    namespace: NS.into(),
                    epoch,
                })?;
                shard.commit(&Command::ResyncEntries {
                    namespace: NS.into(),
                    epoch,
                    entries,
                })?;
                let result = shard.commit(&Command::ResyncEnd {
                    namespace: NS.into(),
                    epoch,
                    through_seq,
                })?;
                self.ship_answer(r, id, result);
            }
            Msg::ShipAnswer { id, result } => self.shipped(r, id, result)?,
            Msg::Write { op, key, value } => self.shard_write(r, op, key, value),
            Msg::Read { op, key } => {
                let from = Proc::Gateway(self.route_back(op));
                match self.shards[r].record() {
                    Some(record) if record.role == NamespaceRole::Primary => {
                        self.shards[r].reads.insert(op, (from, key));
                        let incarnation = self.shards[r].incarnation;
                        let delay = self.rng.range(1, 4);
                        self.at(
                            delay,
                            Event::ReadReady {
                                region: r,
                                incarnation,
                                op,
                            },
                        );
                    }
                    _ => self.answer(r, from, op, Output::Refused),
                }
            }
            Msg::ProbeAnswer { .. } | Msg::Answer { .. } => {}
        }
        Ok(())
    }

    fn ship_answer(&mut self, r: usize, id: u64, result: CommandResult) {
        let result = match result {
            CommandResult::Replicated { applied_seq } => ShipResult::Applied {
                seq: applied_seq,
                resync_needed: self.shards[r].record().is_some_and(|c| c.resync_needed),
            },
            _ => ShipResult::Refused,
        };
        // The answer goes back to whoever the primary is (the sender).
        let Some(primary) = self.ship_origin(id) else {
            return;
        };
        self.send(
            Proc::Shard(r),
            Proc::Shard(primary),
            Msg::ShipAnswer { id, result },
        );
    }

    /// Which shard sent shipment `id` (ids are unique across the world).
    fn ship_origin(&self, id: u64) -> Option<usize> {
        self.ship_senders.get(&id).copied()
    }

    /// The gateway an operation came through (operations carry their
    /// client; gateways are per region).
    fn route_back(&self, op: u64) -> usize {
        self.op_gateway.get(&op).copied().unwrap_or(0)
    }

    fn shard_probe(
        &mut self,
        r: usize,
        id: u64,
        ticket: meridian_control::lease::Ticket,
        sent_unix_ms: u64,
        desired: Option<Desired>,
    ) -> io::Result<()> {
        if let (Some(d), Some(record)) = (&desired, self.shards[r].record()) {
            let current = (record.role, record.epoch, record.sync);
            let wanted = (d.role, d.epoch, d.sync);
            // As the shard's `lease_inner`: with takeovers, a standby-to-be
            // sets aside what lies beyond its fork point, or waits.
            // The simulated control plane reports takeovers unless asked to
            // run the old rule.
            let legacy = self.legacy_fork;
            let mut proceed = current != wanted && d.epoch >= record.epoch;
            if proceed && !legacy && d.role == NamespaceRole::Standby {
                match meridian_shard::fork::fork_point(&d.takeovers, record.epoch, d.epoch) {
                    Ok(Some(fork)) if record.change_seq > fork => {
                        self.note(format!(
                            "{} sets aside changes after {fork} (epoch {} -> {})",
                            REGIONS[r], record.epoch, d.epoch
                        ));
                        self.shards[r].commit(&Command::SetAsideAfter {
                            namespace: NS.into(),
                            fork_seq: fork,
                        })?;
                    }
                    Ok(_) => {}
                    Err(_) => proceed = false,
                }
            }
            if proceed {
                self.note(format!(
                    "{} becomes {:?} at epoch {} (fork {})",
                    REGIONS[r], d.role, d.epoch, d.fork_seq
                ));
                self.shards[r].commit(&Command::ConfigureNamespace {
                    namespace: NS.into(),
                    role: d.role,
                    epoch: d.epoch,
                    log_changes: true,
                    fork_seq: (legacy && d.role == NamespaceRole::Standby).then_some(d.fork_seq),
                    sync: d.sync,
                    max_lag_entries: 0,
                    max_lag_ms: 0,
                })?;
                if let Some(now) = self.shards[r].record()
                    && now.role == NamespaceRole::Primary
                    && record.role == NamespaceRole::Standby
                {
                    self.took_over_at
                        .insert(now.epoch, (now.promoted_from_epoch, now.promoted_seq));
                }
            }
        }
        let covered = desired
            .as_ref()
            .filter(|d| d.role == NamespaceRole::Primary)
            .map(|d| Covered {
                confirmations: d.confirmations,
                former_primary: d.former_primary,
            });
        let now = self.instant(self.now);
        let unix = self.unix_ms(self.shards[r].clock_offset_ms);
        let shard = &mut self.shards[r];
        let decision = shard.lease.apply(
            &Grant {
                lease_ms: ticket.lease_ms,
                sent_unix_ms,
                max_clock_offset_ms: config::MAX_CLOCK_OFFSET_MS,
                order: ticket.order,
            },
            now,
            unix,
            shard.raft_term,
        );
        match decision {
            LeaseDecision::Hold(_) => shard.covered = covered,
            LeaseDecision::Revoke => shard.covered = None,
            _ => {}
        }
        let position = shard.record().filter(|c| c.epoch > 0).map(|c| Position {
            role: c.role,
            epoch: c.epoch,
            change_seq: c.change_seq,
            resync_needed: c.resync_needed,
            promoted_from_epoch: c.promoted_from_epoch,
            promoted_seq: c.promoted_seq,
        });
        self.send(
            Proc::Shard(r),
            Proc::Control,
            Msg::ProbeAnswer { id, position },
        );
        Ok(())
    }

    fn shard_write(&mut self, r: usize, op: u64, key: String, value: String) {
        let from = Proc::Gateway(self.route_back(op));
        let now = self.instant(self.now);
        let shard = &self.shards[r];
        let Some(record) = shard.record() else {
            return self.answer(r, from, op, Output::Refused);
        };
        // check_not_standby, check_lease, check_sync_quorum — in that order.
        if record.role == NamespaceRole::Standby || !shard.lease_ok(now) {
            return self.answer(r, from, op, Output::Refused);
        }
        if record.sync && record.epoch > 0 {
            let needed = shard.covered.as_ref().map_or(0, |c| c.confirmations);
            if may_propose(needed, &self.views(r), now).is_err() {
                return self.answer(r, from, op, Output::Refused);
            }
        }
        let incarnation = shard.incarnation;
        self.shards[r]
            .proposals
            .insert(op, Proposal { from, key, value });
        let delay = self.rng.range(2, 8);
        self.at(
            delay,
            Event::CommitWrite {
                region: r,
                incarnation,
                op,
            },
        );
    }

    /// Commits an admitted write (at a crash, [`Self::shard_crash`] decides).
    pub fn shard_commit_write(&mut self, r: usize, incarnation: u64, op: u64) -> io::Result<()> {
        if self.shards[r].incarnation != incarnation {
            return Ok(());
        }
        let Some(proposal) = self.shards[r].proposals.remove(&op) else {
            return Ok(());
        };
        let result = self.commit_write(r, op, &proposal)?;
        let now = self.instant(self.now);
        let shard = &self.shards[r];
        match result {
            CommandResult::Put(_) => {}
            _ => {
                self.answer(r, proposal.from, op, Output::Refused);
                return Ok(());
            }
        }
        // The lease may have run out while the write committed.
        if !shard.lease_ok(now) {
            self.answer(r, proposal.from, op, Output::Unknown);
            return Ok(());
        }
        let record = shard.record();
        match record {
            Some(record) if record.sync && record.role == NamespaceRole::Primary => {
                self.shards[r].waits.insert(
                    op,
                    crate::shard::Wait {
                        from: proposal.from,
                        seq: record.change_seq,
                        read_value: None,
                    },
                );
                self.at(
                    config::SYNC_TIMEOUT_MS,
                    Event::WaitDeadline {
                        region: r,
                        incarnation,
                        op,
                    },
                );
                self.check_waits(r);
            }
            _ => self.answer(r, proposal.from, op, Output::Done),
        }
        Ok(())
    }

    /// Applies a proposal through the log, recording it if it took effect.
    fn commit_write(
        &mut self,
        r: usize,
        op: u64,
        proposal: &Proposal,
    ) -> io::Result<CommandResult> {
        let shard = &mut self.shards[r];
        let result = shard.commit(&Command::Put {
            namespace: NS.into(),
            key: proposal.key.clone().into_bytes(),
            value: proposal.value.clone().into_bytes(),
        })?;
        if let CommandResult::Put(_) = result {
            let record = shard.record();
            self.applied.insert(
                op,
                crate::world::Applied {
                    region: r,
                    epoch: record.as_ref().map_or(0, |c| c.epoch),
                    seq: record.as_ref().map_or(0, |c| c.change_seq),
                    at_ms: self.now,
                },
            );
        }
        Ok(result)
    }

    /// A read after its read index: the fence, then (sync) the wait.
    pub fn shard_read_ready(&mut self, r: usize, incarnation: u64, op: u64) -> io::Result<()> {
        if self.shards[r].incarnation != incarnation {
            return Ok(());
        }
        let Some((from, key)) = self.shards[r].reads.remove(&op) else {
            return Ok(());
        };
        let now = self.instant(self.now);
        // Still the primary (`check_still_primary`) and holding the lease.
        let primary = self.shards[r]
            .record()
            .is_some_and(|c| c.role == NamespaceRole::Primary);
        if !primary || !self.shards[r].lease_ok(now) {
            self.answer(r, from, op, Output::Refused);
            return Ok(());
        }
        // Read first, then (sync) wait until the standbys hold everything
        // the state read may contain: the position after the read bounds the
        // writes the value can come from (`ShardNode::confirm_read`).
        let value = self.shards[r]
            .machine()
            .get(NS, key.as_bytes())?
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
        match self.shards[r].record() {
            Some(record) if record.sync && record.epoch > 0 => {
                self.shards[r].waits.insert(
                    op,
                    Wait {
                        from,
                        seq: record.change_seq,
                        read_value: Some(value),
                    },
                );
                self.at(
                    config::SYNC_READ_WAIT_MS,
                    Event::WaitDeadline {
                        region: r,
                        incarnation,
                        op,
                    },
                );
                self.check_waits(r);
            }
            _ => self.answer(r, from, op, Output::Value(value)),
        }
        Ok(())
    }

    /// Answers every wait whose confirmations arrived.
    fn check_waits(&mut self, r: usize) {
        let now = self.instant(self.now);
        let shard = &self.shards[r];
        let (needed, former) = shard
            .covered
            .as_ref()
            .map_or((0, None), |c| (c.confirmations, c.former_primary));
        let promoted_seq = shard.record().map_or(0, |c| c.promoted_seq);
        let plain = self.views(r);
        // Reads count the former primary as holding what this copy had when
        // it took over (`wait_held`).
        let mut held = plain.clone();
        if let Some(former) = former {
            match held.iter_mut().find(|v| v.shard == REGIONS[former]) {
                Some(view) => {
                    view.confirmed = Some(view.confirmed.unwrap_or(0).max(promoted_seq));
                    view.rebuilding = false;
                }
                None => held.push(StandbyView {
                    shard: REGIONS[former].to_string(),
                    confirmed: Some(promoted_seq),
                    last_answer: None,
                    rebuilding: false,
                }),
            }
        }
        let done: Vec<(u64, Wait)> = shard
            .waits
            .iter()
            .filter(|(_, w)| {
                let views = if w.read_value.is_some() {
                    &held
                } else {
                    &plain
                };
                acknowledged(needed, views, w.seq)
            })
            .map(|(op, w)| (*op, w.clone()))
            .collect();
        let lease_ok = shard.lease_ok(now)
            && shard
                .record()
                .is_some_and(|c| c.role == NamespaceRole::Primary);
        for (op, wait) in done {
            self.shards[r].waits.remove(&op);
            match wait.read_value {
                // As `ShardNode::committed`: the lease must still hold when
                // the confirmations are in.
                None if !lease_ok => self.answer(r, wait.from, op, Output::Unknown),
                None => self.answer(r, wait.from, op, Output::Done),
                Some(_) if !lease_ok => self.answer(r, wait.from, op, Output::Refused),
                Some(value) => self.answer(r, wait.from, op, Output::Value(value)),
            }
        }
    }

    /// A wait ran out: a write's outcome is unknown; a read is refused.
    pub fn shard_wait_deadline(&mut self, r: usize, incarnation: u64, op: u64) {
        if self.shards[r].incarnation != incarnation {
            return;
        }
        if let Some(wait) = self.shards[r].waits.remove(&op) {
            let output = match wait.read_value {
                None => Output::Unknown,
                Some(_) => Output::Refused,
            };
            self.answer(r, wait.from, op, output);
        }
    }

    /// Background work: followers apply in random batches; the primary's
    /// leader ships to its standbys.
    pub fn shard_tick(&mut self, r: usize) -> io::Result<()> {
        if !self.shards[r].up {
            return Ok(());
        }
        for replica in 0..3 {
            let shard = &self.shards[r];
            let pending = shard.log.len() - shard.replicas[replica].applied;
            if replica != shard.leader && pending > 0 && self.rng.chance(0.5) {
                let count = self.rng.range(1, pending as u64) as usize;
                let through = self.shards[r].replicas[replica].applied + count;
                self.shards[r].apply_to(replica, through)?;
            }
        }
        self.ship(r)
    }

    fn ship(&mut self, r: usize) -> io::Result<()> {
        let Some(record) = self.shards[r].record() else {
            return Ok(());
        };
        let targets: Vec<usize> = match &self.shards[r].routes {
            Some((_, primary, standbys))
                if *primary == r && record.role == NamespaceRole::Primary && record.epoch > 0 =>
            {
                standbys.clone()
            }
            _ => Vec::new(),
        };
        let shard = &mut self.shards[r];
        shard.pairs.retain(|t, _| targets.contains(t));
        for t in targets {
            let now = self.now;
            let pair = self.shards[r].pairs.entry(t).or_default();
            if let Some((_, deadline)) = pair.in_flight {
                if now < deadline {
                    continue;
                }
                // No answer in time: forget what is on the wire.
                pair.in_flight = None;
                pair.acked = None;
                pair.retry_at = now + 200;
            }
            if now < pair.retry_at {
                continue;
            }
            let sent = pair.sent;
            let changes = if pair.acked.is_none() {
                Vec::new()
            } else if sent < record.change_seq {
                let changes = self.shards[r].machine().changes_after(NS, sent, 64)?;
                if changes.first().map(|c| c.seq) != Some(sent + 1) {
                    continue;
                }
                changes
            } else if now >= pair.last_sent_at + config::HEARTBEAT_MS {
                Vec::new()
            } else {
                continue;
            };
            let pair = self.shards[r].pairs.entry(t).or_default();
            if let Some(last) = changes.last() {
                pair.sent = last.seq;
            }
            pair.last_sent_at = now;
            let epoch = record.epoch;
            self.dispatch(r, t, |id| Msg::Ship { id, epoch, changes });
        }
        Ok(())
    }

    /// Puts one shipment (a batch or a full copy) from `r` to standby `t` on
    /// the wire, as the pair's one call in flight.
    fn dispatch(&mut self, r: usize, t: usize, msg: impl FnOnce(u64) -> Msg) {
        let id = self.id();
        let deadline = self.now + config::SHIP_TIMEOUT_MS;
        self.shards[r].pairs.entry(t).or_default().in_flight = Some((id, deadline));
        self.ship_senders.insert(id, r);
        self.send(Proc::Shard(r), Proc::Shard(t), msg(id));
    }

    /// A standby's answer to a shipment.
    fn shipped(&mut self, r: usize, id: u64, result: ShipResult) -> io::Result<()> {
        let Some((&t, _)) = self.shards[r]
            .pairs
            .iter()
            .find(|(_, p)| p.in_flight.is_some_and(|(i, _)| i == id))
        else {
            return Ok(());
        };
        let now = self.now;
        let pair = self.shards[r].pairs.entry(t).or_default();
        pair.in_flight = None;
        match result {
            ShipResult::Applied {
                resync_needed: true,
                ..
            } => {
                pair.last_answer = Some(now);
                pair.rebuilding = true;
                let Some(record) = self.shards[r].record() else {
                    return Ok(());
                };
                let (through_seq, entries) = self.shards[r].machine().copy_at_seq(NS)?;
                self.dispatch(r, t, |id| Msg::FullCopy {
                    id,
                    epoch: record.epoch,
                    entries,
                    through_seq,
                });
            }
            ShipResult::Applied { seq, .. } => {
                pair.last_answer = Some(now);
                pair.rebuilding = false;
                let confirmed = seq.max(pair.acked.unwrap_or(0));
                if pair.acked.is_none() || confirmed > pair.sent {
                    pair.sent = confirmed;
                }
                pair.acked = Some(confirmed);
                self.check_waits(r);
            }
            ShipResult::Refused => {
                pair.acked = None;
                pair.retry_at = now + 200;
            }
        }
        Ok(())
    }

    /// The shard crashed: whatever it had in flight committed or not, at
    /// random; its lease, shipping state and waiting calls are gone.
    pub fn shard_crash(&mut self, r: usize) -> io::Result<()> {
        let proposals = std::mem::take(&mut self.shards[r].proposals);
        for (op, proposal) in proposals {
            if self.rng.chance(0.5) {
                self.commit_write(r, op, &proposal)?;
            }
        }
        let shard = &mut self.shards[r];
        shard.up = false;
        shard.incarnation += 1;
        shard.raft_term += 1;
        shard.lease = LeaseState::default();
        shard.covered = None;
        shard.pairs.clear();
        shard.reads.clear();
        shard.waits.clear();
        self.note(format!("{} shard crashed", REGIONS[r]));
        Ok(())
    }

    /// The shard restarts with a leader chosen at random, which first
    /// applies everything committed (in random batches).
    pub fn shard_restart(&mut self, r: usize) -> io::Result<()> {
        let leader = self.rng.index(3);
        let shard = &mut self.shards[r];
        shard.up = true;
        shard.leader = leader;
        while self.shards[r].replicas[leader].applied < self.shards[r].log.len() {
            let pending = self.shards[r].log.len() - self.shards[r].replicas[leader].applied;
            let count = self.rng.range(1, pending as u64) as usize;
            let through = self.shards[r].replicas[leader].applied + count;
            self.shards[r].apply_to(leader, through)?;
        }
        self.note(format!(
            "{} shard restarted (leader replica {leader})",
            REGIONS[r]
        ));
        Ok(())
    }
}
