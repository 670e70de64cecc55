//! Which routes changed at which routing version, so a route watcher sends only
//! what changed since the version its subscriber has (instead of diffing the
//! whole table on every change, which costs O(namespaces) per change).
//!
//! The log is in memory and bounded: it starts empty at the version the state
//! was loaded at, and forgets its oldest entries past [`CAPACITY`]. A subscriber
//! whose version it no longer covers gets the full table, which is always
//! correct, only larger.

use std::collections::VecDeque;

/// Entries kept; one namespace or shard change each.
pub const CAPACITY: usize = 65_536;

/// A routing-relevant thing that changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKey {
    /// A namespace's route (created, moved, epoch bumped or removed).
    Namespace(String),
    /// A shard's members.
    Shard(String),
    /// The access policy (roles, grants, tokens, revoked identities).
    Access,
}

/// The recent changes, oldest first.
#[derive(Debug, Default)]
pub struct RouteLog {
    /// Every change after this version is in `entries`.
    covered_from: u64,
    entries: VecDeque<(u64, RouteKey)>,
}

impl RouteLog {
    /// An empty log for a state at `version`.
    pub fn starting_at(version: u64) -> Self {
        Self {
            covered_from: version,
            entries: VecDeque::new(),
        }
    }

    /// Records that `key` changed in the command that produced `version`.
    pub fn record(&mut self, version: u64, key: RouteKey) {
        self.entries.push_back((version, key));
        while self.entries.len() > CAPACITY {
            if let Some((dropped, _)) = self.entries.pop_front() {
                // Versions up to the dropped one are no longer fully covered.
                self.covered_from = self.covered_from.max(dropped);
            }
        }
    }

    /// The keys changed after `version`, without duplicates, or `None` if the
    /// log no longer reaches back that far.
    pub fn since(&self, version: u64) -> Option<Vec<RouteKey>> {
        if version < self.covered_from {
            return None;
        }
        let mut keys: Vec<RouteKey> = self
            .entries
            .iter()
            .filter(|(v, _)| *v > version)
            .map(|(_, key)| key.clone())
            .collect();
        keys.sort();
        keys.dedup();
        Some(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_versions_after_its_start_until_entries_are_dropped() {
        let mut log = RouteLog::starting_at(10);
        assert_eq!(log.since(9), None);
        assert_eq!(log.since(10), Some(vec![]));
        log.record(11, RouteKey::Namespace("a".into()));
        log.record(12, RouteKey::Namespace("a".into()));
        log.record(12, RouteKey::Shard("s".into()));
        assert_eq!(
            log.since(10),
            Some(vec![
                RouteKey::Namespace("a".into()),
                RouteKey::Shard("s".into())
            ])
        );
        assert_eq!(log.since(12), Some(vec![]));
        for i in 0..CAPACITY as u64 {
            log.record(13 + i, RouteKey::Namespace(format!("n{i}")));
        }
        assert_eq!(log.since(11), None, "the oldest entries are gone");
        assert!(log.since(13).is_some());
    }
}
