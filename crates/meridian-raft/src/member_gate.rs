//! A Raft group's transport answers only the group's own members.
//!
//! The region check in `meridian_net::peers` keeps other regions' nodes out;
//! this gate also keeps out a node of the same region that belongs to another
//! shard (or to none). Who the members are is learnt from where they serve:
//! each member address (from the group's Raft membership and, for a shard
//! following a control plane, from the members registered for it there) is
//! dialed once and the identity in the certificate its TLS handshake presents
//! is remembered. A caller whose certificate identity is one of those is a
//! member.
//!
//! The decision is pure ([`decide`], table-tested); [`MemberGate`] carries it
//! out, learning identities only when a caller is not yet known, at most once
//! per [`RELEARN_EVERY`] so a stranger's calls cannot make it dial in a loop.

use meridian_net::Identity;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The shortest time between two rounds of learning members' identities.
pub const RELEARN_EVERY: Duration = Duration::from_secs(1);

/// What to do with a call from a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The caller is a member: let it in.
    Admit,
    /// The caller is none of the known members: refuse.
    Refuse,
    /// Some member's identity may be unknown or stale: learn them, then
    /// decide again with `may_learn == false`.
    Learn,
}

/// Whether `caller` (a certificate identity URI) is a member, given the
/// identity learnt for each member address (`None`: not learnt yet).
///
/// A group that knows no member addresses at all is a node not yet part of
/// any membership (a learner about to be added): it admits the caller, whom
/// the region check has already vetted, because only a member can add it.
pub fn decide(caller: &str, members: &[Option<&str>], may_learn: bool) -> Admission {
    if members.is_empty() {
        return Admission::Admit;
    }
    if members.iter().flatten().any(|identity| *identity == caller) {
        return Admission::Admit;
    }
    // A caller not among the learnt identities may be a member whose
    // identity is not learnt yet, or one whose certificate changed name.
    if may_learn {
        Admission::Learn
    } else {
        Admission::Refuse
    }
}

/// Addresses of members the group's Raft membership may not list yet (for a
/// shard: those registered for it on the control plane).
pub type MoreMembers = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The running gate of one Raft member.
pub struct MemberGate {
    dialer: meridian_net::Dialer,
    group: String,
    more: OnceLock<MoreMembers>,
    learnt: tokio::sync::Mutex<Learnt>,
}

#[derive(Default)]
struct Learnt {
    /// Identity URI served at each member address.
    identities: HashMap<String, String>,
    /// When the last round of learning started.
    at: Option<Instant>,
}

impl Learnt {
    fn known<'a>(&'a self, addresses: &BTreeSet<String>) -> Vec<Option<&'a str>> {
        addresses
            .iter()
            .map(|a| self.identities.get(a).map(String::as_str))
            .collect()
    }
}

impl std::fmt::Debug for MemberGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberGate")
            .field("group", &self.group)
            .finish()
    }
}

impl MemberGate {
    /// A gate for `group` that dials members through `dialer`.
    pub fn new(dialer: meridian_net::Dialer, group: &str) -> Self {
        Self {
            dialer,
            group: group.to_string(),
            more: OnceLock::new(),
            learnt: Default::default(),
        }
    }

    /// Also counts as members the addresses `more` returns (set once).
    pub fn also_members(&self, more: MoreMembers) {
        let _ = self.more.set(more);
    }

    /// Admits `caller` if it is a member whose addresses are
    /// `membership` (plus [`MemberGate::also_members`]); else the refusal.
    pub async fn admit(&self, caller: &Identity, membership: Vec<String>) -> Result<(), String> {
        let mut addresses: BTreeSet<String> = membership.into_iter().collect();
        if let Some(more) = self.more.get() {
            addresses.extend(more());
        }
        let caller_uri = caller.uri();
        let learn = {
            let mut learnt = self.learnt.lock().await;
            let may_learn = learnt.at.is_none_or(|at| at.elapsed() >= RELEARN_EVERY);
            match decide(&caller_uri, &learnt.known(&addresses), may_learn) {
                Admission::Admit => return Ok(()),
                Admission::Refuse => false,
                Admission::Learn => {
                    learnt.at = Some(Instant::now());
                    true
                }
            }
        };
        if learn {
            // Dialed without holding the lock: members' calls go on being
            // decided from what is known while a round is under way.
            let found = futures::future::join_all(addresses.iter().map(|address| {
                let dialer = self.dialer.clone();
                async move { (address.clone(), dialer.server_identity(address).await) }
            }))
            .await;
            let mut learnt = self.learnt.lock().await;
            for (address, identity) in found {
                match identity {
                    Ok(Some(identity)) => {
                        learnt.identities.insert(address, identity.uri());
                    }
                    // Plain text or unreachable: keep what was learnt before.
                    Ok(None) => {}
                    Err(err) => tracing::debug!(%address, %err, "member identity not learnt"),
                }
            }
            if decide(&caller_uri, &learnt.known(&addresses), false) == Admission::Admit {
                return Ok(());
            }
        }
        let learnt = self.learnt.lock().await;
        Err(format!(
            "{caller_uri} is not a member of Raft group {}: its members serve as {}",
            self.group,
            learnt
                .identities
                .iter()
                .filter(|(address, _)| addresses.contains(*address))
                .map(|(_, identity)| identity.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_decisions() {
        let a = "spiffe://meridian/node/us-east/us-east-1";
        let b = "spiffe://meridian/node/us-east/us-east-2";
        let stranger = "spiffe://meridian/node/us-east/intruder";
        // (case, caller, identities by member address, may learn, decision)
        type Case<'a> = (&'a str, &'a str, Vec<Option<&'a str>>, bool, Admission);
        let cases: Vec<Case> = vec![
            (
                "no membership yet",
                stranger,
                vec![],
                false,
                Admission::Admit,
            ),
            (
                "a known member",
                a,
                vec![Some(a), Some(b)],
                false,
                Admission::Admit,
            ),
            (
                "a member among unknowns",
                b,
                vec![None, Some(b)],
                false,
                Admission::Admit,
            ),
            (
                "a stranger, may learn",
                stranger,
                vec![Some(a), Some(b)],
                true,
                Admission::Learn,
            ),
            (
                "a stranger after learning",
                stranger,
                vec![Some(a), Some(b)],
                false,
                Admission::Refuse,
            ),
            (
                "identities unknown, may learn",
                a,
                vec![None, None],
                true,
                Admission::Learn,
            ),
            (
                "identities unknown, may not learn",
                a,
                vec![None, None],
                false,
                Admission::Refuse,
            ),
        ];
        for (case, caller, members, may_learn, expected) in cases {
            assert_eq!(decide(caller, &members, may_learn), expected, "{case}");
        }
    }
}
