//! The simulated world: who exists, the network between them, simulated time
//! and the event loop that drives everything from one seeded generator.
//!
//! Time is a number of milliseconds; `Instant`s handed to the real decision
//! code are one base instant plus that number, so they are the same in every
//! run. Wall clocks are a fixed epoch plus the time plus each process's clock
//! offset (within the stated `max_clock_offset_ms`).

use crate::rng::Rng;
use crate::scenario::Scenario;
use meridian_check::{Input, Operation, Output};
use meridian_control::lease::Ticket;
use meridian_shard::command::{ChangeRecord, NamespaceRole, VersionedEntry};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Region names; each hosts one shard (a 3-replica Raft group) and a gateway.
pub const REGIONS: [&str; 4] = ["us-east", "eu-west", "ap-south", "sa-east"];
/// The region outside the replicated namespace's jurisdictions.
pub const OUTSIDE: usize = 3;
/// The replicated namespace (jurisdictions of regions 0..=2).
pub const NS: &str = "ns";
/// A namespace that must stay in [`OUTSIDE`].
pub const OTHER: &str = "other";
/// Keys the clients use (few, so operations on them interleave).
pub const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// The real defaults (control `[failover]`, shard `[limits]`).
pub mod config {
    /// Between probe rounds.
    pub const PROBE_INTERVAL_MS: u64 = 1_000;
    /// A probe without an answer after this long failed (`probe_timeout * 2`).
    pub const PROBE_WAIT_MS: u64 = 1_600;
    /// Consecutive failed probes that fail a primary over.
    pub const FAILED_PROBES: u32 = 3;
    /// The write lease.
    pub const LEASE_MS: u64 = 3_500;
    /// The clock assumption.
    pub const MAX_CLOCK_OFFSET_MS: u64 = 250;
    /// How long a sync write waits for confirmations.
    pub const SYNC_TIMEOUT_MS: u64 = 5_000;
    /// How long a sync strong read waits for confirmations.
    pub const SYNC_READ_WAIT_MS: u64 = 1_000;
    /// How long a client waits for any answer.
    pub const CLIENT_TIMEOUT_MS: u64 = 6_000;
    /// A replication call without an answer after this long failed.
    pub const SHIP_TIMEOUT_MS: u64 = 2_000;
    /// A caught-up standby hears from its primary at least this often.
    pub const HEARTBEAT_MS: u64 = 500;
    /// Between a shard's background steps (shipping, follower applies).
    pub const SHARD_TICK_MS: u64 = 50;
}

/// A process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proc {
    /// The control plane's leader.
    Control,
    /// A region's shard (its Raft leader).
    Shard(usize),
    /// A region's gateway.
    Gateway(usize),
    /// A client, attached to its region's gateway.
    Client(usize),
}

/// Where a process runs; links between sites fail, links inside one do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Site {
    /// The control plane's site.
    Control,
    /// A region.
    Region(usize),
}

/// What the control plane wants a shard to be for [`NS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub role: NamespaceRole,
    pub epoch: u64,
    pub fork_seq: u64,
    pub sync: bool,
    pub confirmations: usize,
    pub former_primary: Option<usize>,
    pub takeovers: Vec<meridian_shard::fork::Takeover>,
}

/// A shard's position in [`NS`], as a probe answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub role: NamespaceRole,
    pub epoch: u64,
    pub change_seq: u64,
    pub resync_needed: bool,
    pub promoted_from_epoch: u64,
    pub promoted_seq: u64,
}

/// A standby's answer to a shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipResult {
    /// Applied through `seq`; `resync_needed`: it diverged and needs a full copy.
    Applied { seq: u64, resync_needed: bool },
    /// Not a standby of that epoch.
    Refused,
}

/// A message on the wire.
#[derive(Debug, Clone)]
pub enum Msg {
    Probe {
        id: u64,
        ticket: Ticket,
        sent_unix_ms: u64,
        desired: Option<Desired>,
    },
    ProbeAnswer {
        id: u64,
        position: Option<Position>,
    },
    Routes {
        epoch: u64,
        primary: usize,
        standbys: Vec<usize>,
    },
    Ship {
        id: u64,
        epoch: u64,
        changes: Vec<ChangeRecord>,
    },
    FullCopy {
        id: u64,
        epoch: u64,
        entries: Vec<VersionedEntry>,
        through_seq: u64,
    },
    ShipAnswer {
        id: u64,
        result: ShipResult,
    },
    Write {
        op: u64,
        key: String,
        value: String,
    },
    Read {
        op: u64,
        key: String,
    },
    Answer {
        op: u64,
        output: Output,
    },
}

/// Something that happens at a moment.
#[derive(Debug, Clone)]
pub enum Event {
    Deliver {
        to: Proc,
        msg: Msg,
    },
    ControlRound(u64),
    ProbeTimeout {
        id: u64,
    },
    ShardTick(usize),
    CommitWrite {
        region: usize,
        incarnation: u64,
        op: u64,
    },
    ReadReady {
        region: usize,
        incarnation: u64,
        op: u64,
    },
    WaitDeadline {
        region: usize,
        incarnation: u64,
        op: u64,
    },
    ClientNext(usize),
    ClientTimeout {
        client: usize,
        op: u64,
    },
    Fault,
    Restart(Proc),
    HealAll,
}

/// One link's condition.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// Cut: messages are held (released late on heal) or dropped.
    pub cut: bool,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Extra one-way delay.
    pub extra_ms: u64,
    /// Messages held while cut.
    pub held: Vec<(Proc, Msg)>,
}

/// A write that took effect on a primary (the real state machine returned
/// `Put`).
#[derive(Debug, Clone)]
pub struct Applied {
    pub region: usize,
    pub epoch: u64,
    pub seq: u64,
    pub at_ms: u64,
}

/// A failover the control plane carried out.
#[derive(Debug, Clone)]
pub struct Move {
    pub epoch: u64,
    pub from: usize,
    pub to: usize,
    pub promoted_seq: u64,
    /// Where the new primary took over (source epoch, position), once it
    /// reported it (`ConfirmTakeover`).
    pub takeover: Option<(u64, u64)>,
}

/// The simulated world.
pub struct World {
    pub scenario: Scenario,
    pub rng: Rng,
    pub now: u64,
    pub base: Instant,
    queue: BTreeMap<(u64, u64), Event>,
    next_seq: u64,
    next_id: u64,
    pub links: BTreeMap<(Site, Site), Link>,
    pub control: crate::control::Control,
    pub shards: Vec<crate::shard::Shard>,
    pub gateways: Vec<crate::clients::Gateway>,
    pub clients: Vec<crate::clients::Client>,
    /// Every completed client operation.
    pub history: Vec<Operation>,
    /// Every write that took effect on a primary, by operation.
    pub applied: BTreeMap<u64, Applied>,
    /// Writes acknowledged to their client.
    pub acked: BTreeMap<u64, u64>,
    /// Failovers, in order.
    pub moves: Vec<Move>,
    /// Notable events, for a person replaying a seed.
    pub trace: Vec<String>,
    /// Whether to keep every delivery in the trace too.
    pub verbose: bool,
    /// Run the fork rule from before takeovers were reported (to show the
    /// checks catch it).
    pub legacy_fork: bool,
    /// Which shard sent each shipment.
    pub ship_senders: BTreeMap<u64, usize>,
    /// Which gateway each operation came through.
    pub op_gateway: BTreeMap<u64, usize>,
    /// Epoch -> the epoch and position its primary really held when it took
    /// over (the truth the checks use; the control plane may know less).
    pub took_over_at: BTreeMap<u64, (u64, u64)>,
}

/// Unix milliseconds at simulated time 0.
const UNIX_BASE_MS: u64 = 1_800_000_000_000;

impl World {
    /// A world for `scenario`; storage under `dir`.
    pub fn new(scenario: Scenario, dir: &std::path::Path) -> std::io::Result<Self> {
        let mut rng = Rng::new(scenario.seed);
        let shards = (0..REGIONS.len())
            .map(|r| crate::shard::Shard::open(&dir.join(REGIONS[r]), scenario.clock_offset_ms[r]))
            .collect::<std::io::Result<Vec<_>>>()?;
        let clients = (0..REGIONS.len() * scenario.clients_per_region)
            .map(|i| crate::clients::Client::new(i % REGIONS.len()))
            .collect();
        let base = Instant::now();
        let control = crate::control::Control::new(&scenario, base);
        let _ = rng.next_u64();
        Ok(Self {
            scenario,
            rng,
            now: 0,
            base,
            queue: BTreeMap::new(),
            next_seq: 0,
            next_id: 1,
            links: BTreeMap::new(),
            control,
            shards,
            gateways: (0..REGIONS.len()).map(|_| Default::default()).collect(),
            clients,
            history: Vec::new(),
            applied: BTreeMap::new(),
            acked: BTreeMap::new(),
            moves: Vec::new(),
            trace: Vec::new(),
            verbose: false,
            legacy_fork: false,
            ship_senders: BTreeMap::new(),
            op_gateway: BTreeMap::new(),
            took_over_at: BTreeMap::new(),
        })
    }

    /// The instant at simulated time `ms`.
    pub fn instant(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// A process's wall clock now.
    pub fn unix_ms(&self, offset_ms: i64) -> u64 {
        (UNIX_BASE_MS + self.now).saturating_add_signed(offset_ms)
    }

    /// A fresh id for a request.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Schedules `event` `after_ms` from now.
    pub fn at(&mut self, after_ms: u64, event: Event) {
        self.next_seq += 1;
        self.queue
            .insert((self.now + after_ms, self.next_seq), event);
    }

    /// Notes something for the trace.
    pub fn note(&mut self, what: impl Into<String>) {
        let line = format!("{:>6} ms  {}", self.now, what.into());
        self.trace.push(line);
    }

    fn site(proc: Proc, clients: &[crate::clients::Client]) -> Site {
        match proc {
            Proc::Control => Site::Control,
            Proc::Shard(r) | Proc::Gateway(r) => Site::Region(r),
            Proc::Client(c) => Site::Region(clients[c].region),
        }
    }

    fn base_delay_ms(a: Site, b: Site) -> u64 {
        match (a.min(b), a.max(b)) {
            (Site::Control, Site::Region(r)) => 20 + 10 * r as u64,
            (Site::Region(x), Site::Region(y)) => match (x, y) {
                (0, 1) => 40,
                (0, 2) => 100,
                (1, 2) => 80,
                _ => 70,
            },
            _ => 1,
        }
    }

    /// Whether `proc` is running.
    pub fn is_up(&self, proc: Proc) -> bool {
        match proc {
            Proc::Control => self.control.up,
            Proc::Shard(r) => self.shards[r].up,
            Proc::Gateway(_) | Proc::Client(_) => true,
        }
    }

    /// Sends `msg` from `from` to `to` through the simulated network.
    pub fn send(&mut self, from: Proc, to: Proc, msg: Msg) {
        if !self.is_up(from) {
            return;
        }
        let (a, b) = (
            Self::site(from, &self.clients),
            Self::site(to, &self.clients),
        );
        if self.verbose {
            self.note(format!("send {from:?} -> {to:?}: {msg:?}"));
        }
        if a == b {
            let delay = self.rng.range(1, 2);
            self.at(delay, Event::Deliver { to, msg });
            return;
        }
        let key = (a.min(b), a.max(b));
        let link = self.links.entry(key).or_default();
        let (cut, loss, extra) = (link.cut, link.loss, link.extra_ms);
        if cut {
            // A cut link holds some bytes (released when it heals, like a
            // WAN emulator's queue or TCP retransmission) and loses others.
            if self.rng.chance(0.5) {
                self.links.entry(key).or_default().held.push((to, msg));
            }
            return;
        }
        if self.rng.chance(loss) {
            return;
        }
        let base = Self::base_delay_ms(a, b);
        let delay = base + extra + self.rng.range(0, base / 2);
        self.at(delay, Event::Deliver { to, msg });
    }

    /// Heals the link between `a` and `b`, releasing what it held late.
    pub fn heal(&mut self, key: (Site, Site)) {
        let held = match self.links.get_mut(&key) {
            Some(link) => {
                link.cut = false;
                std::mem::take(&mut link.held)
            }
            None => return,
        };
        for (to, msg) in held {
            let delay = Self::base_delay_ms(key.0, key.1) + self.rng.range(0, 2_000);
            self.at(delay, Event::Deliver { to, msg });
        }
    }

    /// Records a completed client operation.
    pub fn record(
        &mut self,
        client: usize,
        key: &str,
        input: Input,
        called_ms: u64,
        output: Output,
    ) {
        let returned_ns = match output {
            Output::Unknown => u64::MAX,
            _ => self.now * 1_000_000,
        };
        self.history.push(Operation {
            client: client as u64,
            key: key.to_string(),
            input,
            output,
            called_ns: called_ms * 1_000_000,
            returned_ns,
        });
    }

    /// Runs the world to `scenario.end_ms`.
    pub fn run(&mut self) -> std::io::Result<()> {
        self.start()?;
        while let Some(((time, _), event)) = self.queue.pop_first() {
            if time > self.scenario.end_ms {
                break;
            }
            self.now = time;
            self.handle(event)?;
        }
        self.now = self.scenario.end_ms;
        Ok(())
    }

    fn start(&mut self) -> std::io::Result<()> {
        for r in 0..REGIONS.len() {
            self.shard_bootstrap(r)?;
            let jitter = self.rng.range(0, config::SHARD_TICK_MS);
            self.at(jitter, Event::ShardTick(r));
        }
        self.at(0, Event::ControlRound(1));
        for c in 0..self.clients.len() {
            let start = self.rng.range(500, 1_500);
            self.at(start, Event::ClientNext(c));
        }
        let first = self.rng.range(1_000, 3_000);
        self.at(first, Event::Fault);
        let heal = self.scenario.faults_until_ms;
        self.at(heal, Event::HealAll);
        Ok(())
    }

    fn handle(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::Deliver { to, msg } => {
                if !self.is_up(to) {
                    return Ok(());
                }
                match to {
                    Proc::Control => self.control_receive(msg),
                    Proc::Shard(r) => self.shard_receive(r, msg)?,
                    Proc::Gateway(g) => self.gateway_receive(g, msg),
                    Proc::Client(c) => self.client_receive(c, msg),
                }
            }
            Event::ControlRound(term) => self.control_round(term),
            Event::ProbeTimeout { id } => self.control_probe_timeout(id),
            Event::ShardTick(r) => {
                self.shard_tick(r)?;
                self.at(config::SHARD_TICK_MS, Event::ShardTick(r));
            }
            Event::CommitWrite {
                region,
                incarnation,
                op,
            } => self.shard_commit_write(region, incarnation, op)?,
            Event::ReadReady {
                region,
                incarnation,
                op,
            } => self.shard_read_ready(region, incarnation, op)?,
            Event::WaitDeadline {
                region,
                incarnation,
                op,
            } => self.shard_wait_deadline(region, incarnation, op),
            Event::ClientNext(c) => self.client_next(c),
            Event::ClientTimeout { client, op } => self.client_timeout(client, op),
            Event::Fault => self.fault(),
            Event::Restart(proc) => self.restart(proc)?,
            Event::HealAll => self.heal_all()?,
        }
        Ok(())
    }
}
