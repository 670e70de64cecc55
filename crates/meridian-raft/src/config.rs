//! Configuration sections shared by every Raft-based server (shard nodes and
//! control-plane members): where a member listens, its first membership, and
//! consensus tuning.

use meridian_net::{NetError, TlsFiles, Transport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Where the node listens and how peers reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// gRPC listen address (data, admin and Raft transport).
    pub grpc_listen: SocketAddr,
    /// gRPC address peers and clients use; defaults to `grpc_listen`.
    pub advertise: Option<String>,
    /// HTTP listen address for `/health/*` and `/metrics`.
    pub http_listen: SocketAddr,
    /// Mutual TLS for every gRPC and HTTP connection, in and out; plain text
    /// when absent.
    pub tls: Option<TlsFiles>,
    /// Addresses to dial instead of a peer's advertised one (`advertised =
    /// "actual"`); the lab routes cross-region traffic through its WAN emulator
    /// this way.
    pub dial_via: BTreeMap<String, String>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            advertise: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
            tls: None,
            dial_via: BTreeMap::new(),
        }
    }
}

impl NetworkSection {
    /// The gRPC address other processes should dial.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }

    /// Loads the TLS files and builds the dialer.
    pub fn transport(&self) -> Result<Transport, NetError> {
        Transport::load(self.tls.as_ref(), &self.dial_via)
    }
}

/// One member of the initial shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    /// Raft node id.
    pub id: u64,
    /// Its advertised gRPC address.
    pub address: String,
}

/// Shard membership at first start.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Voters of a brand-new shard. Every listed node initializes the same
    /// membership when its log is empty; a node not listed waits to be added
    /// with `AddNode`. Ignored once the node has state.
    pub initial_members: Vec<InitialMember>,
}

/// How linearizable reads are confirmed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// Confirm leadership with a quorum round per batch of reads (safe under any
    /// clock behaviour).
    ReadIndex,
    /// Trust the leader lease while it is valid (no network round; relies on
    /// bounded clock drift, which the election timeout margin covers).
    LeaseRead,
}

/// Consensus timing, snapshots and reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one; each
    /// member of a group adds 0 to 40 % so the members do not all build at
    /// the same entry (see [`crate::snapshot_spacing`]).
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers
    /// catch up from the log instead of a full snapshot.
    pub keep_entries_after_snapshot: u64,
    /// How linearizable reads are confirmed.
    pub read_policy: ReadPolicy,
    /// Time limit for one Raft RPC to a peer.
    pub rpc_timeout_ms: u64,
    /// Log-append requests a leader keeps unanswered per follower; entries
    /// arriving while the window is full go out together in the next request
    /// (see `append_window`). 0 lifts the cap.
    pub append_window: usize,
}

impl Default for RaftSection {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 20_000,
            keep_entries_after_snapshot: 2_000,
            read_policy: ReadPolicy::ReadIndex,
            rpc_timeout_ms: 2_000,
            append_window: crate::append_window::DEFAULT_WINDOW,
        }
    }
}

impl RaftSection {
    /// Checks the timing and snapshot settings; on error returns the offending
    /// key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.heartbeat_interval_ms == 0 {
            return Err(("raft.heartbeat_interval_ms", "must be positive".into()));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms * 2 {
            return Err((
                "raft.election_timeout_min_ms",
                "must exceed twice raft.heartbeat_interval_ms".into(),
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err((
                "raft.election_timeout_max_ms",
                "must exceed raft.election_timeout_min_ms".into(),
            ));
        }
        if self.snapshot_after_entries == 0 {
            return Err(("raft.snapshot_after_entries", "must be positive".into()));
        }
        Ok(())
    }

    /// The options a [`crate::RaftNode`] starts with.
    pub fn node_options(
        &self,
        node_id: u64,
        group: &str,
        dialer: meridian_net::Dialer,
        peers: meridian_net::peers::Peers,
    ) -> crate::RaftNodeOptions {
        crate::RaftNodeOptions {
            node_id,
            group: group.to_string(),
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_after_entries: self.snapshot_after_entries,
            keep_entries_after_snapshot: self.keep_entries_after_snapshot,
            install_snapshot_timeout_ms: self.rpc_timeout_ms.max(30_000),
            append_window: self.append_window,
            dialer,
            peers,
            members_only: false,
        }
    }
}

impl ClusterSection {
    /// Checks that ids are positive and unique and include `node_id` (unless the
    /// list is empty: a node that will be added later).
    pub fn validate(&self, node_id: u64) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for member in &self.initial_members {
            if member.id == 0 || !ids.insert(member.id) {
                return Err("ids must be positive and unique".into());
            }
        }
        if !self.initial_members.is_empty() && !ids.contains(&node_id) {
            return Err(
                "must include this node's id, or be empty for a node that will be added later"
                    .into(),
            );
        }
        Ok(())
    }

    /// The initial members as `id -> address`.
    pub fn members(&self) -> std::collections::BTreeMap<u64, String> {
        self.initial_members
            .iter()
            .map(|m| (m.id, m.address.clone()))
            .collect()
    }
}

/// Mebibyte, for the storage defaults.
const MIB: u64 = 1024 * 1024;

/// The storage engine's memory and journal (`[storage]`), sized by default
/// for a small node. Larger values buy fewer flushes and compactions (and
/// more cached reads) with memory and disk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Block cache for reads of flushed data, in bytes (at least 1 MiB).
    pub cache_bytes: u64,
    /// Budget for the unflushed writes of every keyspace together (the
    /// memtables), in bytes (at least 1 MiB): past it, the memtables are
    /// sealed and flushed to disk.
    pub memtable_bytes: u64,
    /// Cap on the journal on disk, in bytes (at least 64 MiB, the engine's
    /// floor, and at least twice `memtable_bytes`): past it, the memtables
    /// holding the oldest journal file are flushed so the file can go.
    pub journal_bytes: u64,
    /// The engine's background threads (flushes and compactions; 1 to 16).
    /// One by default: with two or more, the engine's first thread hands
    /// compactions back to the queue to stay free for flushes, and while
    /// another thread compacts it keeps taking them back — a busy loop that
    /// cost about 7 % of a 2-core machine's CPU under 5,000 writes/s. More
    /// threads pay off only where compaction, not CPU, is the bottleneck.
    pub background_threads: usize,
}

/// Most background threads `[storage] background_threads` allows.
pub const MAX_BACKGROUND_THREADS: usize = 16;

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            cache_bytes: 16 * MIB,
            memtable_bytes: 16 * MIB,
            journal_bytes: 64 * MIB,
            background_threads: 1,
        }
    }
}

impl StorageSection {
    /// Checks the floors; the error names the setting and its rule.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.cache_bytes < MIB {
            return Err((
                "storage.cache_bytes",
                "must be at least 1 MiB (1048576)".into(),
            ));
        }
        if self.memtable_bytes < MIB {
            return Err((
                "storage.memtable_bytes",
                "must be at least 1 MiB (1048576)".into(),
            ));
        }
        if self.journal_bytes < 64 * MIB {
            return Err((
                "storage.journal_bytes",
                "must be at least 64 MiB (67108864), the storage engine's floor".into(),
            ));
        }
        if !(1..=MAX_BACKGROUND_THREADS).contains(&self.background_threads) {
            return Err((
                "storage.background_threads",
                format!("must be from 1 to {MAX_BACKGROUND_THREADS}"),
            ));
        }
        if self.journal_bytes < self.memtable_bytes.saturating_mul(2) {
            return Err((
                "storage.journal_bytes",
                format!(
                    "must be at least twice storage.memtable_bytes ({} bytes), or the journal fills before the memtables flush",
                    self.memtable_bytes.saturating_mul(2)
                ),
            ));
        }
        Ok(())
    }

    /// The largest memtable of one keyspace: the budget, capped at the
    /// engine's usual 64 MiB.
    pub fn keyspace_memtable_bytes(&self) -> u64 {
        self.memtable_bytes.min(64 * MIB)
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    #[test]
    fn storage_floors_name_the_setting() {
        assert_eq!(StorageSection::default().validate(), Ok(()));
        let cases: [(StorageSection, Option<&str>); 7] = [
            (
                StorageSection {
                    cache_bytes: MIB - 1,
                    ..Default::default()
                },
                Some("storage.cache_bytes"),
            ),
            (
                StorageSection {
                    memtable_bytes: 0,
                    ..Default::default()
                },
                Some("storage.memtable_bytes"),
            ),
            (
                StorageSection {
                    journal_bytes: 63 * MIB,
                    ..Default::default()
                },
                Some("storage.journal_bytes"),
            ),
            (
                StorageSection {
                    memtable_bytes: 40 * MIB,
                    journal_bytes: 64 * MIB,
                    ..Default::default()
                },
                Some("storage.journal_bytes"),
            ),
            (
                StorageSection {
                    background_threads: 0,
                    ..Default::default()
                },
                Some("storage.background_threads"),
            ),
            (
                StorageSection {
                    background_threads: MAX_BACKGROUND_THREADS + 1,
                    ..Default::default()
                },
                Some("storage.background_threads"),
            ),
            (
                StorageSection {
                    cache_bytes: 256 * MIB,
                    memtable_bytes: 128 * MIB,
                    journal_bytes: 512 * MIB,
                    background_threads: 4,
                },
                None,
            ),
        ];
        for (section, refused) in cases {
            assert_eq!(
                section.validate().err().map(|(key, _)| key),
                refused,
                "{section:?}"
            );
        }
        assert_eq!(
            StorageSection {
                memtable_bytes: 128 * MIB,
                ..Default::default()
            }
            .keyspace_memtable_bytes(),
            64 * MIB
        );
    }
}
