//! Where every standby stands, as the primary's leader knows it: what
//! `ReplicationStatus`, the lag metrics, the RPO gate and sync writes read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// What the primary's leader knows about one standby of one namespace.
#[derive(Debug, Clone, Default)]
pub struct StandbyProgress {
    /// The standby's region.
    pub region: String,
    /// Last sequence number it confirmed (None before its first answer).
    pub acked: Option<u64>,
    /// The primary's last logged sequence number when last looked at.
    pub head: u64,
    /// Since when the oldest change it has not confirmed has been waiting.
    pub waiting_since: Option<Instant>,
    /// Compressed bytes sent to it.
    pub bytes_sent: u64,
    /// When it last answered.
    pub last_answer: Option<Instant>,
    /// Whether it is being rebuilt with a full copy (it cannot confirm writes).
    pub rebuilding: bool,
    /// An active-active peer's frontier from its last answer that carried
    /// one (see [`crate::tombstone`]).
    pub frontier: Option<crate::tombstone::Frontier>,
}

impl StandbyProgress {
    /// Changes logged but not confirmed.
    pub fn lag_entries(&self) -> u64 {
        self.head.saturating_sub(self.acked.unwrap_or(0))
    }

    /// How long the oldest unconfirmed change has waited.
    pub fn lag_seconds(&self) -> f64 {
        self.waiting_since
            .map_or(0.0, |since| since.elapsed().as_secs_f64())
    }
}

/// Progress of every (namespace, standby shard) pair this node ships.
#[derive(Debug)]
pub struct ReplicationProgress {
    pairs: Mutex<HashMap<(String, String), StandbyProgress>>,
    /// Uncompressed bytes of the changes shipped.
    pub raw_bytes_sent: AtomicU64,
    /// Bumped whenever a standby confirms more; sync writes wait on it.
    acks: tokio::sync::watch::Sender<u64>,
}

impl Default for ReplicationProgress {
    fn default() -> Self {
        Self {
            pairs: Mutex::default(),
            raw_bytes_sent: AtomicU64::new(0),
            acks: tokio::sync::watch::channel(0).0,
        }
    }
}

impl ReplicationProgress {
    /// A copy of every pair's progress.
    pub fn snapshot(&self) -> HashMap<(String, String), StandbyProgress> {
        self.pairs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn update(
        &self,
        namespace: &str,
        shard: &str,
        change: impl FnOnce(&mut StandbyProgress),
    ) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        let pair = pairs
            .entry((namespace.to_string(), shard.to_string()))
            .or_default();
        let before = pair.acked;
        change(pair);
        if pair.acked != before {
            self.acks.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The frontier each peer of `namespace` last reported, by region.
    pub fn frontiers(
        &self,
        namespace: &str,
    ) -> std::collections::BTreeMap<String, crate::tombstone::Frontier> {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, p)| p.frontier.clone().map(|f| (p.region.clone(), f)))
            .collect()
    }

    /// The furthest any standby of `namespace` has confirmed.
    pub fn best_acked(&self, namespace: &str) -> u64 {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|(_, p)| p.acked)
            .max()
            .unwrap_or(0)
    }

    /// The standby of `namespace` furthest behind `head`: its shard, region,
    /// changes behind, and the age of its oldest unconfirmed change.
    pub fn worst_lag(&self, namespace: &str, head: u64) -> Option<(String, String, u64, f64)> {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, shard), p)| {
                (
                    shard.clone(),
                    p.region.clone(),
                    head.saturating_sub(p.acked.unwrap_or(0)),
                    p.lag_seconds(),
                )
            })
            .max_by(|a, b| a.2.cmp(&b.2).then(a.3.total_cmp(&b.3)))
    }

    /// Waits until the next confirmation from any standby, or `timeout`.
    pub async fn wait_any_ack(&self, timeout: Duration) {
        let mut acks = self.acks.subscribe();
        acks.borrow_and_update();
        let _ = tokio::time::timeout(timeout, acks.changed()).await;
    }

    /// What the sync rule needs to know of every standby of `namespace`.
    pub fn views(&self, namespace: &str) -> Vec<crate::sync_rule::StandbyView> {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, shard), p)| crate::sync_rule::StandbyView {
                shard: shard.clone(),
                confirmed: p.acked,
                last_answer: p.last_answer,
                rebuilding: p.rebuilding,
            })
            .collect()
    }

    /// Waits until `needed` standbys of `namespace` confirmed `seq` (the
    /// sync rule), or `timeout`.
    pub async fn wait_confirmed(
        &self,
        namespace: &str,
        seq: u64,
        needed: usize,
        timeout: Duration,
    ) -> bool {
        self.wait_held(namespace, seq, needed, None, timeout).await
    }

    /// As [`Self::wait_confirmed`], counting standby `holds.0` as having
    /// confirmed everything up to `holds.1` (a former primary that is rebuilt
    /// before it may be promoted).
    pub async fn wait_held(
        &self,
        namespace: &str,
        seq: u64,
        needed: usize,
        holds: Option<(String, u64)>,
        timeout: Duration,
    ) -> bool {
        let mut acks = self.acks.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            acks.borrow_and_update();
            let mut views = self.views(namespace);
            if let Some((shard, through)) = &holds {
                match views.iter_mut().find(|v| &v.shard == shard) {
                    Some(view) => {
                        view.confirmed = Some(view.confirmed.unwrap_or(0).max(*through));
                        view.rebuilding = false;
                    }
                    None => views.push(crate::sync_rule::StandbyView {
                        shard: shard.clone(),
                        confirmed: Some(*through),
                        last_answer: None,
                        rebuilding: false,
                    }),
                }
            }
            if crate::sync_rule::acknowledged(needed, &views, seq) {
                return true;
            }
            match tokio::time::timeout_at(deadline, acks.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    pub(crate) fn forget(&self, namespace: &str, shard: &str) {
        self.pairs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), shard.to_string()));
    }
}
