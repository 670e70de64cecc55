//! The faults a run suffers, drawn from its seed: cut links (which hold some
//! bytes and release them late on heal), isolated regions, lossy and slow
//! links, shard crashes and control-plane leader crashes. At
//! `faults_until_ms` every link heals and every process runs again, so the
//! end state can be checked.

use crate::world::{Event, Proc, REGIONS, Site, World};
use std::io;

impl World {
    fn random_site(&mut self) -> Site {
        let i = self.rng.index(REGIONS.len() + 1);
        if i == REGIONS.len() {
            Site::Control
        } else {
            Site::Region(i)
        }
    }

    fn random_link(&mut self) -> (Site, Site) {
        loop {
            let (a, b) = (self.random_site(), self.random_site());
            if a != b {
                return (a.min(b), a.max(b));
            }
        }
    }

    fn isolate(&mut self, site: Site) {
        let others: Vec<Site> = std::iter::once(Site::Control)
            .chain((0..REGIONS.len()).map(Site::Region))
            .filter(|s| *s != site)
            .collect();
        for other in others {
            self.links
                .entry((site.min(other), site.max(other)))
                .or_default()
                .cut = true;
        }
        self.note(format!("isolate {site:?}"));
    }

    /// One fault, then the next one is scheduled.
    pub fn fault(&mut self) {
        if self.now >= self.scenario.faults_until_ms {
            return;
        }
        let roll = self.rng.range(0, 99);
        match roll {
            0..=19 => {
                let link = self.random_link();
                self.links.entry(link).or_default().cut = true;
                self.note(format!("cut {link:?}"));
            }
            20..=31 => {
                // The primary's region is the interesting one to lose.
                let primary = self.control.placement.primary;
                self.isolate(Site::Region(primary));
            }
            32..=37 => {
                let site = self.random_site();
                self.isolate(site);
            }
            38..=57 => {
                let cut: Vec<(Site, Site)> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.cut)
                    .map(|(k, _)| *k)
                    .collect();
                if !cut.is_empty() {
                    let link = cut[self.rng.index(cut.len())];
                    self.heal(link);
                    self.note(format!("heal {link:?}"));
                }
            }
            58..=65 => {
                let keys: Vec<(Site, Site)> = self.links.keys().copied().collect();
                for link in keys {
                    self.heal(link);
                }
                self.note("heal every link");
            }
            66..=73 => {
                let link = self.random_link();
                let loss = self.rng.range(0, 30) as f64 / 100.0;
                self.links.entry(link).or_default().loss = loss;
                self.note(format!("loss {loss} on {link:?}"));
            }
            74..=81 => {
                let link = self.random_link();
                let extra = self.rng.range(0, 1_500);
                self.links.entry(link).or_default().extra_ms = extra;
                self.note(format!("extra delay {extra} ms on {link:?}"));
            }
            82..=93 => {
                let r = self.rng.index(REGIONS.len());
                if self.shards[r].up {
                    if let Err(err) = self.shard_crash(r) {
                        self.note(format!("crash failed: {err}"));
                    }
                    let down = self.rng.range(500, 6_000);
                    self.at(down, Event::Restart(Proc::Shard(r)));
                }
            }
            _ => {
                if self.control.up {
                    self.control_crash();
                    let down = self.rng.range(500, 4_000);
                    self.at(down, Event::Restart(Proc::Control));
                }
            }
        }
        let next = self.rng.range(500, 3_000);
        self.at(next, Event::Fault);
    }

    /// A crashed process comes back.
    pub fn restart(&mut self, proc: Proc) -> io::Result<()> {
        match proc {
            Proc::Control if !self.control.up => self.control_restart(),
            Proc::Shard(r) if !self.shards[r].up => self.shard_restart(r)?,
            _ => {}
        }
        Ok(())
    }

    /// The end of the faults: every link heals, every process runs.
    pub fn heal_all(&mut self) -> io::Result<()> {
        let keys: Vec<(Site, Site)> = self.links.keys().copied().collect();
        for link in keys {
            self.heal(link);
            if let Some(l) = self.links.get_mut(&link) {
                l.loss = 0.0;
                l.extra_ms = 0;
            }
        }
        self.restart(Proc::Control)?;
        for r in 0..REGIONS.len() {
            self.restart(Proc::Shard(r))?;
        }
        self.note("faults end: every link healed, every process running");
        Ok(())
    }
}
