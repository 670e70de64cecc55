//! Machine-readable reasons for refusals, carried in gRPC metadata.
//!
//! Clients, gateways and the control plane act on refusals: follow a leader,
//! try another member, refresh a route, back off. They decide from a
//! [`Reason`] attached to the status in one place ([`Reason::attach`]) and read
//! back in one place ([`Reason::of`]), never from the human message, which may
//! change wording at any time.
//!
//! On the wire a reason is the metadata entry `meridian-reason` (a stable
//! kebab-case name) plus one metadata entry per field (`meridian-leader-id`,
//! `meridian-leader-address`, `meridian-namespace`, `meridian-epoch`,
//! `meridian-primary`, `retry-after-ms`). The names are part of the API.

use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata key naming the reason.
pub const REASON_KEY: &str = "meridian-reason";
/// Metadata key carrying the leader's node id on a redirect.
pub const LEADER_ID_KEY: &str = "meridian-leader-id";
/// Metadata key carrying the leader's gRPC address on a redirect.
pub const LEADER_ADDRESS_KEY: &str = "meridian-leader-address";
/// Metadata key naming the namespace a refusal is about.
pub const NAMESPACE_KEY: &str = "meridian-namespace";
/// Metadata key carrying the namespace's epoch as the refusing node knows it.
pub const EPOCH_KEY: &str = "meridian-epoch";
/// Metadata key naming where the current primary is (a region or shard), when known.
pub const PRIMARY_KEY: &str = "meridian-primary";
/// Metadata key carrying how long to wait before retrying, in milliseconds.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";

/// Why a call was refused, in a form a program can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This member is not its shard's Raft leader; nothing was done. Re-send
    /// to the leader when known.
    NotLeader {
        /// The leader's node id, if known.
        leader_id: Option<u64>,
        /// The leader's gRPC address, if known.
        leader_address: Option<String>,
    },
    /// The leader could not reach a quorum in time; nothing was done.
    NoQuorum,
    /// The shard's write lease from the control plane has lapsed, so another
    /// region may already have been promoted: nothing was done.
    NoLease {
        /// The namespace.
        namespace: String,
        /// Its epoch on the refusing shard.
        epoch: u64,
    },
    /// The namespace is a standby (or a fenced former primary) on this
    /// shard; the call belongs to the primary. Nothing was done.
    NotPrimary {
        /// The namespace.
        namespace: String,
        /// Its epoch on the refusing shard.
        epoch: u64,
        /// Where the current primary is, when the refusing node knows.
        primary: Option<String>,
    },
    /// A request carried an older epoch than the namespace has; nothing was done.
    StaleEpoch {
        /// The namespace.
        namespace: String,
        /// The namespace's current epoch.
        epoch: u64,
    },
    /// The RPO gate: a standby is further behind than `max_lag`; nothing was done.
    RpoExceeded {
        /// The namespace.
        namespace: String,
    },
    /// A sync namespace has too few standbys able to confirm writes, so a
    /// write could not be acknowledged: refused before anything was applied.
    NoSyncQuorum {
        /// The namespace.
        namespace: String,
    },
    /// The write was proposed and its fate is unknown (leadership changed, or
    /// the lease ran out while it committed). Read before retrying.
    OutcomeUnknown,
    /// A rate limit; retry after the given delay.
    RateLimited {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// A gateway's circuit breaker for the shard is open; retry after the delay.
    BreakerOpen {
        /// How long to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// The node's disk is nearly full; nothing was written.
    DiskFull,
    /// This shard holds no copy of the namespace (a migration moved it away
    /// and erased this copy, or it never was here); nothing was done. The
    /// caller's route is out of date.
    NamespaceNotHere {
        /// The namespace.
        namespace: String,
    },
    /// A session read reached a copy that does not yet hold everything the
    /// session's token saw (it waited briefly); nothing was read. Another
    /// copy (the one that took the session's writes) can serve it, or this
    /// one shortly.
    SessionBehind {
        /// The namespace.
        namespace: String,
    },
    /// An active-active key holds another type than the call is for (its
    /// type is fixed by its first write); nothing was done.
    WrongKeyType {
        /// The namespace.
        namespace: String,
    },
    /// The serving node's clock is too far from the control plane's to
    /// stamp active-active writes; nothing was done. Another region's peer
    /// can take the write.
    ClockSkew {
        /// The namespace.
        namespace: String,
    },
}

impl Reason {
    /// The stable wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::NotLeader { .. } => "not-leader",
            Reason::NoQuorum => "no-quorum",
            Reason::NoLease { .. } => "no-lease",
            Reason::NotPrimary { .. } => "not-primary",
            Reason::StaleEpoch { .. } => "stale-epoch",
            Reason::RpoExceeded { .. } => "rpo-exceeded",
            Reason::NoSyncQuorum { .. } => "no-sync-quorum",
            Reason::OutcomeUnknown => "outcome-unknown",
            Reason::RateLimited { .. } => "rate-limited",
            Reason::BreakerOpen { .. } => "breaker-open",
            Reason::DiskFull => "disk-full",
            Reason::NamespaceNotHere { .. } => "namespace-not-here",
            Reason::SessionBehind { .. } => "session-behind",
            Reason::WrongKeyType { .. } => "wrong-key-type",
            Reason::ClockSkew { .. } => "clock-skew",
        }
    }

    /// Whether the refusal happened before anything was proposed, so the same
    /// call may be sent again (elsewhere or later) without risk of applying
    /// it twice.
    pub fn nothing_done(&self) -> bool {
        !matches!(self, Reason::OutcomeUnknown)
    }

    /// Whether the same shard may serve the call shortly: another member (a
    /// new leader), or this one once it has a quorum or a lease again. The
    /// refusal is about this member or this moment, not the namespace's
    /// placement. (A sync namespace short of standbys is not: a lost region
    /// does not come back within a retry budget, and the caller must hear
    /// the refusal, not a timeout.)
    pub fn retry_in_shard(&self) -> bool {
        matches!(
            self,
            Reason::NotLeader { .. } | Reason::NoQuorum | Reason::NoLease { .. }
        )
    }

    /// Whether the caller's route for the namespace may be out of date (the
    /// namespace moved, or this copy may have been replaced).
    pub fn route_may_be_stale(&self) -> bool {
        matches!(
            self,
            Reason::NotPrimary { .. }
                | Reason::StaleEpoch { .. }
                | Reason::NoLease { .. }
                | Reason::NamespaceNotHere { .. }
        )
    }

    /// Writes this reason into `status`'s metadata.
    pub fn attach(&self, status: &mut Status) {
        let metadata = status.metadata_mut();
        insert(metadata, REASON_KEY, self.name());
        match self {
            Reason::NotLeader {
                leader_id,
                leader_address,
            } => {
                if let Some(id) = leader_id {
                    metadata.insert(LEADER_ID_KEY, MetadataValue::from(*id));
                }
                if let Some(address) = leader_address {
                    insert(metadata, LEADER_ADDRESS_KEY, address);
                }
            }
            Reason::NoLease { namespace, epoch } | Reason::StaleEpoch { namespace, epoch } => {
                insert(metadata, NAMESPACE_KEY, namespace);
                metadata.insert(EPOCH_KEY, MetadataValue::from(*epoch));
            }
            Reason::NotPrimary {
                namespace,
                epoch,
                primary,
            } => {
                insert(metadata, NAMESPACE_KEY, namespace);
                metadata.insert(EPOCH_KEY, MetadataValue::from(*epoch));
                if let Some(primary) = primary {
                    insert(metadata, PRIMARY_KEY, primary);
                }
            }
            Reason::RpoExceeded { namespace }
            | Reason::NoSyncQuorum { namespace }
            | Reason::NamespaceNotHere { namespace }
            | Reason::SessionBehind { namespace }
            | Reason::WrongKeyType { namespace }
            | Reason::ClockSkew { namespace } => {
                insert(metadata, NAMESPACE_KEY, namespace);
            }
            Reason::RateLimited { retry_after_ms } | Reason::BreakerOpen { retry_after_ms } => {
                metadata.insert(RETRY_AFTER_KEY, MetadataValue::from(*retry_after_ms));
            }
            Reason::NoQuorum | Reason::OutcomeUnknown | Reason::DiskFull => {}
        }
    }

    /// A status with `code`, `message` and this reason.
    pub fn status(&self, code: tonic::Code, message: impl Into<String>) -> Status {
        let mut status = Status::new(code, message);
        self.attach(&mut status);
        status
    }

    /// The reason carried by `status`, if any (unknown names read as `None`,
    /// so an older client keeps working against a newer server).
    pub fn of(status: &Status) -> Option<Reason> {
        Self::from_metadata(status.metadata())
    }

    /// The reason carried by a metadata map, if any.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Reason> {
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let number = |key: &str| text(key).and_then(|v| v.parse::<u64>().ok());
        let namespace = || text(NAMESPACE_KEY).unwrap_or_default();
        let Some(name) = text(REASON_KEY) else {
            // Servers from before reasons existed sent only the redirect
            // metadata (still a typed field, not message text).
            return text(LEADER_ADDRESS_KEY).map(|address| Reason::NotLeader {
                leader_id: number(LEADER_ID_KEY),
                leader_address: Some(address),
            });
        };
        Some(match name.as_str() {
            "not-leader" => Reason::NotLeader {
                leader_id: number(LEADER_ID_KEY),
                leader_address: text(LEADER_ADDRESS_KEY),
            },
            "no-quorum" => Reason::NoQuorum,
            "no-lease" => Reason::NoLease {
                namespace: namespace(),
                epoch: number(EPOCH_KEY).unwrap_or(0),
            },
            "not-primary" => Reason::NotPrimary {
                namespace: namespace(),
                epoch: number(EPOCH_KEY).unwrap_or(0),
                primary: text(PRIMARY_KEY),
            },
            "stale-epoch" => Reason::StaleEpoch {
                namespace: namespace(),
                epoch: number(EPOCH_KEY).unwrap_or(0),
            },
            "rpo-exceeded" => Reason::RpoExceeded {
                namespace: namespace(),
            },
            "no-sync-quorum" => Reason::NoSyncQuorum {
                namespace: namespace(),
            },
            "outcome-unknown" => Reason::OutcomeUnknown,
            "rate-limited" => Reason::RateLimited {
                retry_after_ms: number(RETRY_AFTER_KEY).unwrap_or(0),
            },
            "breaker-open" => Reason::BreakerOpen {
                retry_after_ms: number(RETRY_AFTER_KEY).unwrap_or(0),
            },
            "disk-full" => Reason::DiskFull,
            "namespace-not-here" => Reason::NamespaceNotHere {
                namespace: namespace(),
            },
            "session-behind" => Reason::SessionBehind {
                namespace: namespace(),
            },
            "wrong-key-type" => Reason::WrongKeyType {
                namespace: namespace(),
            },
            "clock-skew" => Reason::ClockSkew {
                namespace: namespace(),
            },
            _ => return None,
        })
    }
}

/// Inserts an ASCII metadata value; a value that cannot be carried (not
/// visible ASCII) is left out rather than failing the whole answer.
fn insert(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(value) = value.parse() {
        metadata.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn every_reason() -> Vec<Reason> {
        vec![
            Reason::NotLeader {
                leader_id: Some(3),
                leader_address: Some("127.0.0.1:7401".into()),
            },
            Reason::NotLeader {
                leader_id: None,
                leader_address: None,
            },
            Reason::NoQuorum,
            Reason::NoLease {
                namespace: "orders".into(),
                epoch: 4,
            },
            Reason::NotPrimary {
                namespace: "orders".into(),
                epoch: 2,
                primary: Some("eu-west".into()),
            },
            Reason::NotPrimary {
                namespace: "orders".into(),
                epoch: 2,
                primary: None,
            },
            Reason::StaleEpoch {
                namespace: "orders".into(),
                epoch: 7,
            },
            Reason::RpoExceeded {
                namespace: "orders".into(),
            },
            Reason::NoSyncQuorum {
                namespace: "orders".into(),
            },
            Reason::OutcomeUnknown,
            Reason::RateLimited { retry_after_ms: 40 },
            Reason::BreakerOpen {
                retry_after_ms: 900,
            },
            Reason::DiskFull,
            Reason::NamespaceNotHere {
                namespace: "orders".into(),
            },
            Reason::SessionBehind {
                namespace: "orders".into(),
            },
            Reason::WrongKeyType {
                namespace: "orders".into(),
            },
            Reason::ClockSkew {
                namespace: "orders".into(),
            },
        ]
    }

    #[test]
    fn every_reason_survives_the_wire() {
        for reason in every_reason() {
            let status = reason.status(Code::Unavailable, "whatever the message says");
            assert_eq!(Reason::of(&status), Some(reason.clone()), "{reason:?}");
        }
    }

    #[test]
    fn classification_table() {
        // (reason name, nothing done, retry in the shard, route may be stale)
        let table = [
            ("not-leader", true, true, false),
            ("no-quorum", true, true, false),
            ("no-lease", true, true, true),
            ("not-primary", true, false, true),
            ("stale-epoch", true, false, true),
            ("rpo-exceeded", true, false, false),
            ("no-sync-quorum", true, false, false),
            ("outcome-unknown", false, false, false),
            ("rate-limited", true, false, false),
            ("breaker-open", true, false, false),
            ("disk-full", true, false, false),
            ("namespace-not-here", true, false, true),
            ("session-behind", true, false, false),
            ("wrong-key-type", true, false, false),
            ("clock-skew", true, false, false),
        ];
        for reason in every_reason() {
            let row = table
                .iter()
                .find(|row| row.0 == reason.name())
                .unwrap_or_else(|| panic!("{} missing from the table", reason.name()));
            assert_eq!(
                (
                    reason.nothing_done(),
                    reason.retry_in_shard(),
                    reason.route_may_be_stale()
                ),
                (row.1, row.2, row.3),
                "{}",
                reason.name()
            );
        }
    }

    #[test]
    fn a_bare_redirect_from_an_older_server_is_still_a_redirect() {
        let mut status = Status::unavailable("whatever");
        status
            .metadata_mut()
            .insert(LEADER_ADDRESS_KEY, "127.0.0.1:7401".parse().unwrap());
        assert_eq!(
            Reason::of(&status),
            Some(Reason::NotLeader {
                leader_id: None,
                leader_address: Some("127.0.0.1:7401".into())
            })
        );
    }

    #[test]
    fn the_message_never_decides() {
        // A message that reads like a redirect, without the metadata, is no reason.
        let status = Status::unavailable("not the leader; the leader is node 2 at 127.0.0.1:1");
        assert_eq!(Reason::of(&status), None);
        // An unknown reason name (a newer server) is no reason either.
        let mut status = Status::unavailable("x");
        status
            .metadata_mut()
            .insert(REASON_KEY, "from-the-future".parse().unwrap());
        assert_eq!(Reason::of(&status), None);
    }
}
