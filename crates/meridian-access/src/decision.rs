//! The decision every server applies to every call: may this caller do this
//! to this target? Pure (the policy, the caller and the time are arguments),
//! table-tested; servers only carry it out.
//!
//! Meridian's own processes are decided by kind, without grants: control-plane
//! members may do everything (they are the authority the policy comes from),
//! gateways may read, write and view (they act for callers they have already
//! checked), nodes may read and view (rebuilding a copy reads another one).
//! Everybody else needs a grant. A revoked identity is refused everything.

use crate::policy::{AccessPolicy, Grant, Permission, Scope};
use crate::token::Presented;
use meridian_net::Identity;

/// What a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The cluster as a whole (regions, access, listings).
    Cluster,
    /// One namespace.
    Namespace(&'a str),
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cluster => f.write_str("the cluster"),
            Target::Namespace(name) => write!(f, "namespace {name}"),
        }
    }
}

/// Who called, as the transport established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Plain text: nobody is authenticated, nothing is refused.
    Plain,
    /// TLS, but no usable identity (why).
    Unidentified(String),
    /// The identity in the certificate the handshake verified.
    Certificate(Identity),
    /// An API token (`Authorization: Bearer`).
    Token(Presented),
}

impl Caller {
    /// How the audit log names it.
    pub fn name(&self) -> String {
        match self {
            Caller::Plain => "unauthenticated".into(),
            Caller::Unidentified(_) => "unidentified".into(),
            Caller::Certificate(identity) => identity.uri(),
            Caller::Token(token) => format!("token:{}", token.id),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No usable identity, or a token that is unknown, wrong or expired
    /// (UNAUTHENTICATED / HTTP 401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks a permission (PERMISSION_DENIED / HTTP 403).
    #[error("{who} may not {action}: {lacks}")]
    Denied {
        /// The caller.
        who: String,
        /// What it tried.
        action: String,
        /// What it lacks.
        lacks: String,
    },
    /// This server has not received the access policy yet (UNAVAILABLE,
    /// retryable: it arrives with the first routing push).
    #[error(
        "{who}: this server has not received the access policy from the control plane yet; retry shortly"
    )]
    NoPolicy {
        /// The caller.
        who: String,
    },
}

fn by_kind(identity: &Identity, need: Permission) -> bool {
    use Permission::*;
    match identity {
        Identity::Control { .. } => true,
        Identity::Gateway { .. } => matches!(need, Read | Write | View),
        Identity::Node { .. } => matches!(need, Read | View),
        Identity::User { .. } => false,
    }
}

/// Whether `role` (built-in or custom) allows `need`, without allocating.
fn role_allows(policy: &AccessPolicy, role: &str, need: Permission) -> bool {
    match crate::policy::built_in_role(role) {
        Some(permissions) => permissions.contains(&need),
        None => policy.roles.get(role).is_some_and(|p| p.contains(&need)),
    }
}

/// The grants of `uri`, found through the ordered set (grants sort by
/// identity first).
fn grants_of<'a>(policy: &'a AccessPolicy, uri: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
    let first = Grant {
        identity: uri.to_string(),
        role: String::new(),
        scope: Scope::All,
    };
    policy
        .grants
        .range(first..)
        .take_while(move |g| g.identity == uri)
}

fn lacks(need: Permission, target: Target<'_>, has: Vec<String>) -> String {
    let on = match target {
        Target::Cluster => "over all namespaces".to_string(),
        Target::Namespace(_) => "on it".to_string(),
    };
    let has = if has.is_empty() {
        "no grants".to_string()
    } else {
        has.join(", ")
    };
    format!(
        "it needs a role with the {} permission {on}; it has {has}",
        need.name()
    )
}

/// Whether `caller` may `need` on `target` at `now_ms`, under `policy` (None:
/// this server has not received one yet).
pub fn decide(
    policy: Option<&AccessPolicy>,
    caller: &Caller,
    need: Permission,
    target: Target<'_>,
    now_ms: u64,
) -> Result<(), Refusal> {
    let action = || format!("{} {target}", need.verb());
    // A policy whose first grants are not made yet is no policy: the first
    // administrator would otherwise be refused (for good) instead of asked to
    // retry (UNAVAILABLE) in the moment after a new cluster starts.
    let policy = policy.filter(|p| p.bootstrapped);
    match caller {
        Caller::Plain => Ok(()),
        Caller::Unidentified(why) => Err(Refusal::Unauthenticated(why.clone())),
        Caller::Certificate(identity) => {
            let uri = identity.uri();
            if let Some(revoked) = policy.and_then(|p| p.revoked.get(&uri)) {
                return Err(Refusal::Denied {
                    who: uri,
                    action: action(),
                    lacks: format!(
                        "the identity was revoked by {} at {} ms",
                        revoked.by, revoked.at_ms
                    ),
                });
            }
            if by_kind(identity, need) {
                return Ok(());
            }
            let Some(policy) = policy else {
                return Err(Refusal::NoPolicy { who: uri });
            };
            let mut has = Vec::new();
            for grant in grants_of(policy, &uri) {
                if grant.scope.covers(&target) && role_allows(policy, &grant.role, need) {
                    return Ok(());
                }
                has.push(format!("{} on {}", grant.role, grant.scope));
            }
            Err(Refusal::Denied {
                who: uri,
                action: action(),
                lacks: lacks(need, target, has),
            })
        }
        Caller::Token(presented) => {
            let who = format!("token {}", presented.id);
            let Some(policy) = policy else {
                return Err(Refusal::NoPolicy { who });
            };
            let token = policy
                .tokens
                .get(&presented.id)
                .filter(|t| presented.matches(&t.secret_sha256))
                .ok_or_else(|| {
                    Refusal::Unauthenticated(format!(
                        "unknown or revoked API token {}",
                        presented.id
                    ))
                })?;
            if token.expires_at_ms <= now_ms {
                return Err(Refusal::Unauthenticated(format!(
                    "API token {} expired at {} ms",
                    token.id, token.expires_at_ms
                )));
            }
            if token.scope.covers(&target) && role_allows(policy, &token.role, need) {
                Ok(())
            } else {
                Err(Refusal::Denied {
                    who,
                    action: action(),
                    lacks: lacks(
                        need,
                        target,
                        vec![format!("{} on {}", token.role, token.scope)],
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AccessChange, ApiToken};
    use crate::token;

    fn id(text: &str) -> Caller {
        Caller::Certificate(Identity::parse(text).unwrap())
    }

    #[test]
    fn decision_table() {
        use Permission::*;
        let mut policy = AccessPolicy::default();
        policy
            .apply(&AccessChange::Bootstrap { grants: vec![] }, 0)
            .unwrap();
        let minted = token::mint();
        let expired = token::mint();
        let now = 1_000_000;
        let changes = [
            AccessChange::Grant(Grant::new("user/admin", "admin", Scope::All).unwrap()),
            AccessChange::Grant(Grant::new("user/reader", "reader", Scope::All).unwrap()),
            AccessChange::Grant(
                Grant::new("user/alice", "writer", Scope::Namespace("orders".into())).unwrap(),
            ),
            AccessChange::Grant(
                Grant::new("user/team", "writer", Scope::Prefix("team-a/".into())).unwrap(),
            ),
            AccessChange::PutRole {
                name: "auditor".into(),
                permissions: [View].into(),
            },
            AccessChange::Grant(Grant::new("user/auditor", "auditor", Scope::All).unwrap()),
            AccessChange::Grant(Grant::new("user/mallory", "admin", Scope::All).unwrap()),
            AccessChange::RevokeIdentity {
                identity: "user/mallory".into(),
            },
            AccessChange::RevokeIdentity {
                identity: "gateway/us-east/gw-9".into(),
            },
            AccessChange::CreateToken(ApiToken {
                id: minted.id.clone(),
                secret_sha256: minted.secret_sha256,
                role: "writer".into(),
                scope: Scope::Namespace("orders".into()),
                created_by: "spiffe://meridian/user/admin".into(),
                created_at_ms: now - 10,
                expires_at_ms: now + 1_000,
            }),
            AccessChange::CreateToken(ApiToken {
                id: expired.id.clone(),
                secret_sha256: expired.secret_sha256,
                role: "admin".into(),
                scope: Scope::All,
                created_by: "spiffe://meridian/user/admin".into(),
                created_at_ms: now - 10,
                expires_at_ms: now - 1,
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            // The expired token is added before it expires.
            policy.apply(change, now - 100 + i as u64).unwrap();
        }
        let good_token = Caller::Token(token::parse(&minted.token).unwrap());
        let old_token = Caller::Token(token::parse(&expired.token).unwrap());
        let forged = {
            let other = token::mint();
            let forged = format!("{}{}_{}", token::PREFIX, minted.id, &other.token[22..]);
            Caller::Token(token::parse(&forged).unwrap())
        };
        let orders = Target::Namespace("orders");
        let other = Target::Namespace("payments");
        let team = Target::Namespace("team-a/x");
        let cluster = Target::Cluster;
        // (case, caller, permission, target, allowed)
        let cases: Vec<(&str, Caller, Permission, Target, bool)> = vec![
            ("plain text", Caller::Plain, Admin, cluster, true),
            (
                "no identity",
                Caller::Unidentified("no cert".into()),
                Read,
                orders,
                false,
            ),
            ("admin administers", id("user/admin"), Admin, cluster, true),
            (
                "admin writes anywhere",
                id("user/admin"),
                Write,
                other,
                true,
            ),
            ("reader reads", id("user/reader"), Read, orders, true),
            (
                "reader views the cluster",
                id("user/reader"),
                View,
                cluster,
                true,
            ),
            (
                "reader cannot write",
                id("user/reader"),
                Write,
                orders,
                false,
            ),
            (
                "reader cannot administer",
                id("user/reader"),
                Admin,
                cluster,
                false,
            ),
            (
                "scoped writer writes its namespace",
                id("user/alice"),
                Write,
                orders,
                true,
            ),
            (
                "scoped writer, another namespace",
                id("user/alice"),
                Write,
                other,
                false,
            ),
            (
                "scoped writer cannot list the cluster",
                id("user/alice"),
                View,
                cluster,
                false,
            ),
            ("prefix writer inside", id("user/team"), Write, team, true),
            (
                "prefix writer outside",
                id("user/team"),
                Write,
                orders,
                false,
            ),
            ("custom role", id("user/auditor"), View, cluster, true),
            (
                "custom role lacks read",
                id("user/auditor"),
                Read,
                orders,
                false,
            ),
            ("no grants at all", id("user/nobody"), Read, orders, false),
            ("revoked admin", id("user/mallory"), Read, orders, false),
            (
                "control plane",
                id("control/control-1"),
                Admin,
                cluster,
                true,
            ),
            (
                "gateway writes",
                id("gateway/us-east/gw-1"),
                Write,
                orders,
                true,
            ),
            (
                "gateway cannot administer",
                id("gateway/us-east/gw-1"),
                Admin,
                cluster,
                false,
            ),
            (
                "revoked gateway",
                id("gateway/us-east/gw-9"),
                Read,
                orders,
                false,
            ),
            ("node reads", id("node/us-east/n1"), Read, orders, true),
            (
                "node cannot write",
                id("node/us-east/n1"),
                Write,
                orders,
                false,
            ),
            ("token in scope", good_token.clone(), Write, orders, true),
            (
                "token out of scope",
                good_token.clone(),
                Write,
                other,
                false,
            ),
            (
                "token beyond its role",
                good_token.clone(),
                Admin,
                cluster,
                false,
            ),
            ("expired token", old_token, Read, orders, false),
            ("forged secret", forged, Read, orders, false),
        ];
        for (case, caller, need, target, allowed) in cases {
            let decided = decide(Some(&policy), &caller, need, target, now);
            assert_eq!(decided.is_ok(), allowed, "{case}: {decided:?}");
        }
        // Messages name the identity and what it lacks.
        assert_eq!(
            decide(Some(&policy), &id("user/reader"), Write, orders, now)
                .unwrap_err()
                .to_string(),
            "spiffe://meridian/user/reader may not write namespace orders: it needs a role with the write permission on it; it has reader on all namespaces"
        );
        assert_eq!(
            decide(Some(&policy), &id("user/alice"), Admin, cluster, now)
                .unwrap_err()
                .to_string(),
            "spiffe://meridian/user/alice may not administer the cluster: it needs a role with the admin permission over all namespaces; it has writer on namespace orders"
        );
        // Before the first push: Meridian's processes by kind, users wait.
        assert!(decide(None, &id("gateway/us-east/gw-1"), Write, orders, now).is_ok());
        assert!(
            matches!(
                decide(
                    Some(&AccessPolicy::default()),
                    &id("user/admin"),
                    Read,
                    orders,
                    now
                ),
                Err(Refusal::NoPolicy { .. })
            ),
            "a policy before its first grants is no policy yet"
        );
        assert!(matches!(
            decide(None, &id("user/admin"), Read, orders, now),
            Err(Refusal::NoPolicy { .. })
        ));
        assert!(matches!(
            decide(
                Some(&policy),
                &Caller::Unidentified("x".into()),
                Read,
                orders,
                now
            ),
            Err(Refusal::Unauthenticated(_))
        ));
    }
}
