//! The control plane's leader as the simulation runs it: probe rounds with
//! lease grants counted by the real `LeaseLedger`, health per shard, and
//! failover through the real `promotion::choose_target` — the same steps as
//! `meridian_control::failover`, with the network simulated.

use crate::scenario::Scenario;
use crate::world::{
    Desired, Event, Move, Msg, NS, OUTSIDE, Position, Proc, REGIONS, World, config,
};
use meridian_control::lease::{LeaseLedger, Ticket};
use meridian_control::promotion::{Candidate, choose_target, sync_confirmations};
use meridian_shard::command::NamespaceRole;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Where the replicated namespace lives (the control plane's replicated
/// state: it survives a crash of the leader).
#[derive(Debug, Clone)]
pub struct Placement {
    pub primary: usize,
    pub epoch: u64,
    pub standbys: Vec<usize>,
    pub sync: bool,
}

/// What the leader knows about one shard from its probes.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub failures: u32,
    pub last_ok: Option<u64>,
    pub position: Option<Position>,
    /// When the probe that reported `position` was sent.
    pub positions_at: Option<u64>,
}

/// One probe round in progress.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub started: u64,
    /// Probe id -> (shard, ticket, sent at).
    pub outstanding: BTreeMap<u64, (usize, Ticket, u64)>,
}

/// The control plane.
pub struct Control {
    pub up: bool,
    pub term: u64,
    pub ledger: LeaseLedger,
    pub placement: Placement,
    pub health: BTreeMap<usize, Health>,
    pub round: Option<Round>,
    /// Probes sent outside a round (promotion): id -> (shard, ticket).
    pub extra: BTreeMap<u64, (usize, Ticket)>,
}

impl Control {
    /// The control plane at the start: the namespace placed on region 0.
    pub fn new(scenario: &Scenario, base: Instant) -> Self {
        Self {
            up: true,
            term: 1,
            ledger: LeaseLedger::new(1, base, Duration::from_millis(config::LEASE_MS)),
            placement: Placement {
                primary: 0,
                epoch: 1,
                standbys: scenario.standbys.clone(),
                sync: scenario.sync,
            },
            health: BTreeMap::new(),
            round: None,
            extra: BTreeMap::new(),
        }
    }
}

impl World {
    /// What shard `shard` should be for the namespace (as `desired_by_shard`).
    pub fn desired(&self, shard: usize) -> Option<Desired> {
        let p = &self.control.placement;
        let takeovers: Vec<meridian_shard::fork::Takeover> = self
            .moves
            .iter()
            .filter_map(|m| {
                m.takeover
                    .map(|(source_epoch, seq)| meridian_shard::fork::Takeover {
                        epoch: m.epoch,
                        source_epoch,
                        seq,
                    })
            })
            .collect();
        if shard == p.primary {
            let former_primary = self
                .moves
                .last()
                .filter(|m| m.to == p.primary)
                .map(|m| m.from);
            return Some(Desired {
                role: NamespaceRole::Primary,
                epoch: p.epoch,
                fork_seq: 0,
                sync: p.sync,
                confirmations: if p.sync {
                    sync_confirmations(p.standbys.len())
                } else {
                    0
                },
                former_primary,
                takeovers,
            });
        }
        if p.standbys.contains(&shard) {
            return Some(Desired {
                role: NamespaceRole::Standby,
                epoch: p.epoch,
                fork_seq: crate::fork::fork_seq(&self.moves, shard),
                sync: p.sync,
                confirmations: 0,
                former_primary: None,
                takeovers,
            });
        }
        None
    }

    fn send_routes(&mut self) {
        let p = self.control.placement.clone();
        for r in 0..REGIONS.len() {
            for to in [Proc::Gateway(r), Proc::Shard(r)] {
                self.send(
                    Proc::Control,
                    to,
                    Msg::Routes {
                        epoch: p.epoch,
                        primary: p.primary,
                        standbys: p.standbys.clone(),
                    },
                );
            }
        }
    }

    fn probe(&mut self, shard: usize, ticket: Ticket) -> u64 {
        let id = self.id();
        let desired = self.desired(shard);
        let sent_unix_ms = self.unix_ms(0);
        self.send(
            Proc::Control,
            Proc::Shard(shard),
            Msg::Probe {
                id,
                ticket,
                sent_unix_ms,
                desired,
            },
        );
        id
    }

    /// A probe round: every shard gets a probe (with a grant unless its last
    /// probe failed).
    pub fn control_round(&mut self, term: u64) {
        if !self.control.up || term != self.control.term || self.control.round.is_some() {
            return;
        }
        let now = self.instant(self.now);
        self.control.ledger.prune(now);
        let mut round = Round {
            started: self.now,
            ..Default::default()
        };
        for (shard, name) in REGIONS.iter().enumerate() {
            let failing = self
                .control
                .health
                .get(&shard)
                .is_some_and(|h| h.failures > 0);
            let ticket = if failing {
                Ticket::NO_GRANT
            } else {
                self.control
                    .ledger
                    .issue(name, Duration::from_millis(config::LEASE_MS), now)
            };
            let id = self.probe(shard, ticket);
            round.outstanding.insert(id, (shard, ticket, self.now));
            self.at(config::PROBE_WAIT_MS, Event::ProbeTimeout { id });
        }
        self.control.round = Some(round);
        self.send_routes();
    }

    /// A probe's answer.
    pub fn control_receive(&mut self, msg: Msg) {
        let Msg::ProbeAnswer { id, position } = msg else {
            return;
        };
        // As `confirm_takeovers`: the first report of where a failover's new
        // primary took over is recorded.
        if let Some(p) = position
            && p.role == NamespaceRole::Primary
            && p.promoted_from_epoch > 0
            && let Some(m) = self
                .moves
                .iter_mut()
                .rev()
                .find(|m| m.epoch == p.epoch && m.takeover.is_none())
        {
            m.takeover = Some((p.promoted_from_epoch, p.promoted_seq));
        }
        if let Some((shard, ticket)) = self.control.extra.remove(&id) {
            if ticket.is_revocation() {
                self.control.ledger.revoked(REGIONS[shard], ticket);
            }
            return;
        }
        let Some(round) = self.control.round.as_mut() else {
            return;
        };
        let Some((shard, ticket, sent)) = round.outstanding.remove(&id) else {
            return;
        };
        if ticket.is_revocation() {
            self.control.ledger.revoked(REGIONS[shard], ticket);
        }
        let health = self.control.health.entry(shard).or_default();
        health.failures = 0;
        health.last_ok = Some(self.now);
        health.positions_at = Some(sent);
        health.position = position;
        self.control_round_done_if_complete();
    }

    /// A probe that got no answer in time.
    pub fn control_probe_timeout(&mut self, id: u64) {
        let Some(round) = self.control.round.as_mut() else {
            return;
        };
        let Some((shard, _, _)) = round.outstanding.remove(&id) else {
            return;
        };
        self.control.health.entry(shard).or_default().failures += 1;
        self.control_round_done_if_complete();
    }

    fn control_round_done_if_complete(&mut self) {
        let Some(round) = &self.control.round else {
            return;
        };
        if !round.outstanding.is_empty() {
            return;
        }
        let started = round.started;
        self.control.round = None;
        self.fail_over_failed();
        let next = (started + config::PROBE_INTERVAL_MS).saturating_sub(self.now);
        self.at(next, Event::ControlRound(self.control.term));
    }

    /// As `failover::fail_over_failed` for the one replicated namespace.
    fn fail_over_failed(&mut self) {
        let shard = self.control.placement.primary;
        let failed = self
            .control
            .health
            .get(&shard)
            .is_some_and(|h| h.failures >= config::FAILED_PROBES);
        if !failed {
            return;
        }
        if !self.candidates(None).iter().any(|c| c.eligible) {
            return;
        }
        let now = self.instant(self.now);
        self.control.ledger.start_drain(REGIONS[shard]);
        if self
            .control
            .ledger
            .may_hold_until(REGIONS[shard], now)
            .is_some()
        {
            return;
        }
        let lease_end = self.control.ledger.lease_end(REGIONS[shard]);
        let candidates = self.candidates(lease_end);
        let (target, promoted_seq) = match choose_target(&candidates, self.control.placement.sync) {
            Ok(choice) => choice,
            Err(why) => {
                self.note(format!("no promotion yet: {why:?} {candidates:?}"));
                return;
            }
        };
        let Some(to) = REGIONS.iter().position(|r| *r == target) else {
            return;
        };
        debug_assert!(
            to != OUTSIDE,
            "residency: {target} is outside {NS}'s jurisdictions"
        );
        let p = &mut self.control.placement;
        p.epoch += 1;
        p.standbys.retain(|s| *s != to);
        p.standbys.push(shard);
        p.primary = to;
        let epoch = p.epoch;
        self.moves.push(Move {
            epoch,
            from: shard,
            to,
            promoted_seq,
            takeover: None,
        });
        self.note(format!(
            "FAILOVER {} -> {} epoch {epoch} promoted_seq {promoted_seq}",
            REGIONS[shard], REGIONS[to]
        ));
        // Promote at once: a grant to the new primary.
        let ticket =
            self.control
                .ledger
                .issue(REGIONS[to], Duration::from_millis(config::LEASE_MS), now);
        let id = self.probe(to, ticket);
        self.control.extra.insert(id, (to, ticket));
        self.send_routes();
        self.control.ledger.end_drain(REGIONS[shard]);
    }

    /// Every standby as the promotion rule sees it (as `failover::candidates`).
    fn candidates(&self, lease_end: Option<Instant>) -> Vec<Candidate> {
        self.control
            .placement
            .standbys
            .iter()
            .map(|&standby| {
                let h = self.control.health.get(&standby);
                let position = h.and_then(|h| h.position);
                let healthy = h.is_some_and(|h| h.failures == 0 && h.last_ok.is_some());
                let eligible = healthy
                    && position
                        .is_some_and(|p| p.role == NamespaceRole::Standby && !p.resync_needed);
                let reported_after_lease = h
                    .and_then(|h| h.positions_at)
                    .is_some_and(|at| lease_end.is_none_or(|end| self.instant(at) > end));
                Candidate {
                    shard: REGIONS[standby].to_string(),
                    position: position.map_or(0, |p| p.change_seq),
                    eligible,
                    reported_after_lease,
                }
            })
            .collect()
    }

    /// The control plane's leader crashed: a new one takes over after a while
    /// with an empty ledger (counting a whole lease for every shard).
    pub fn control_crash(&mut self) {
        self.control.up = false;
        self.control.round = None;
        self.control.extra.clear();
        self.note("control plane leader crashed");
    }

    /// A new control-plane leader.
    pub fn control_restart(&mut self) {
        self.control.up = true;
        self.control.term += 1;
        let now = self.instant(self.now);
        self.control.ledger = LeaseLedger::new(
            self.control.term,
            now,
            Duration::from_millis(config::LEASE_MS),
        );
        self.control.health.clear();
        self.note(format!(
            "new control plane leader, term {}",
            self.control.term
        ));
        self.at(0, Event::ControlRound(self.control.term));
    }
}
