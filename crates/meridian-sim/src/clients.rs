//! Clients and gateways. Each client calls its region's gateway, one call at
//! a time (a unique value per write, strong reads), and records what it saw
//! for the linearizability check; a gateway forwards to the primary its
//! routing table names.

use crate::world::{Event, KEYS, Msg, NS, Proc, World, config};
use meridian_check::{Input, Output};
use std::collections::BTreeMap;

/// A gateway's routing state.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// (epoch, primary region) of [`NS`].
    pub route: Option<(u64, usize)>,
    /// Operation -> the client it came from.
    pub forwarded: BTreeMap<u64, usize>,
}

/// A call in progress.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: u64,
    pub key: String,
    pub input: Input,
    pub called_ms: u64,
}

/// A client.
#[derive(Debug, Clone)]
pub struct Client {
    pub region: usize,
    pub call: Option<Call>,
}

impl Client {
    /// A client in `region`.
    pub fn new(region: usize) -> Self {
        Self { region, call: None }
    }
}

impl World {
    /// Client `c` starts its next call.
    pub fn client_next(&mut self, c: usize) {
        if self.now >= self.scenario.clients_until_ms || self.clients[c].call.is_some() {
            return;
        }
        let op = self.id();
        let key = KEYS[self.rng.index(KEYS.len())].to_string();
        let (input, msg) = if self.rng.chance(0.6) {
            let value = format!("{NS}-v{op}");
            (
                Input::Put(value.clone()),
                Msg::Write {
                    op,
                    key: key.clone(),
                    value,
                },
            )
        } else {
            (
                Input::Get,
                Msg::Read {
                    op,
                    key: key.clone(),
                },
            )
        };
        self.clients[c].call = Some(Call {
            op,
            key,
            input,
            called_ms: self.now,
        });
        let region = self.clients[c].region;
        self.send(Proc::Client(c), Proc::Gateway(region), msg);
        self.at(
            config::CLIENT_TIMEOUT_MS,
            Event::ClientTimeout { client: c, op },
        );
    }

    /// An answer for client `c`.
    pub fn client_receive(&mut self, c: usize, msg: Msg) {
        let Msg::Answer { op, output } = msg else {
            return;
        };
        self.finish(c, op, output);
    }

    /// Client `c`'s call `op` got no answer in time.
    pub fn client_timeout(&mut self, c: usize, op: u64) {
        self.finish(c, op, Output::Unknown);
    }

    fn finish(&mut self, c: usize, op: u64, output: Output) {
        let Some(call) = self.clients[c].call.take_if(|call| call.op == op) else {
            return;
        };
        self.record(c, &call.key, call.input, call.called_ms, output);
        let think = self.rng.range(10, 150);
        self.at(think, Event::ClientNext(c));
    }

    /// A message for gateway `g`.
    pub fn gateway_receive(&mut self, g: usize, msg: Msg) {
        match msg {
            Msg::Routes { epoch, primary, .. } => {
                let gateway = &mut self.gateways[g];
                if gateway.route.is_none_or(|(e, _)| e <= epoch) {
                    gateway.route = Some((epoch, primary));
                }
            }
            Msg::Write { op, .. } | Msg::Read { op, .. } => {
                let client = self
                    .clients
                    .iter()
                    .position(|c| c.call.as_ref().is_some_and(|call| call.op == op));
                let Some(client) = client else { return };
                match self.gateways[g].route {
                    Some((_, primary)) => {
                        self.gateways[g].forwarded.insert(op, client);
                        self.op_gateway.insert(op, g);
                        self.send(Proc::Gateway(g), Proc::Shard(primary), msg);
                    }
                    None => self.send(
                        Proc::Gateway(g),
                        Proc::Client(client),
                        Msg::Answer {
                            op,
                            output: Output::Refused,
                        },
                    ),
                }
            }
            Msg::Answer { op, output } => {
                if let Some(client) = self.gateways[g].forwarded.remove(&op) {
                    self.send(
                        Proc::Gateway(g),
                        Proc::Client(client),
                        Msg::Answer { op, output },
                    );
                }
            }
            _ => {}
        }
    }
}
