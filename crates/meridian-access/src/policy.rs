//! The access policy and the changes made to it. Pure and deterministic: the
//! control plane applies the same changes in the same order on every replica
//! (times come from the request, never from the clock here).

use crate::AccessError;
use meridian_net::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Format byte in front of an encoded policy (stored and pushed).
pub const POLICY_FORMAT: u8 = 1;
/// Custom roles at most.
pub const MAX_ROLES: usize = 256;
/// Grants at most.
pub const MAX_GRANTS: usize = 100_000;
/// Live (unexpired) tokens at most.
pub const MAX_TOKENS: usize = 10_000;
/// Revoked identities at most.
pub const MAX_REVOKED: usize = 100_000;

/// What a role allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read a namespace's data (`Get`, `Scan`).
    Read,
    /// Change a namespace's data (`Put`, `Delete`, `Txn`).
    Write,
    /// See the cluster's state: namespaces, regions, shards, failovers,
    /// replication lag, lost-write records, the audit log.
    View,
    /// Change the cluster: namespaces, regions, failovers, access.
    Admin,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::View,
        Permission::Admin,
    ];

    /// Its name (`read`, `write`, `view`, `admin`).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::View => "view",
            Permission::Admin => "admin",
        }
    }

    /// The verb used in refusals ("may not write namespace orders").
    pub fn verb(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::View => "view",
            Permission::Admin => "administer",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        Permission::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| {
                AccessError::Invalid(format!(
                    "unknown permission {text:?}; permissions: read, write, view, admin"
                ))
            })
    }
}

/// The roles every cluster has; they cannot be redefined or deleted.
pub fn built_in_role(name: &str) -> Option<&'static [Permission]> {
    use Permission::*;
    match name {
        "admin" => Some(&[Read, Write, View, Admin]),
        "writer" => Some(&[Read, Write, View]),
        "reader" => Some(&[Read, View]),
        "viewer" => Some(&[View]),
        _ => None,
    }
}

/// Names of the built-in roles.
pub const BUILT_IN_ROLES: [&str; 4] = ["admin", "writer", "reader", "viewer"];

/// Which namespaces a grant covers. Cluster-wide actions (regions, access,
/// listing everything) need a grant over [`Scope::All`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every namespace and the cluster itself.
    All,
    /// One namespace.
    Namespace(String),
    /// Namespaces whose name starts with this.
    Prefix(String),
}

impl Scope {
    /// Parses the CLI form: absent or `*` = all, `PREFIX*` = a prefix,
    /// anything else = one namespace.
    pub fn parse(text: Option<&str>) -> Result<Self, AccessError> {
        match text {
            None | Some("") | Some("*") => Ok(Scope::All),
            Some(text) => match text.strip_suffix('*') {
                Some(prefix) if prefix.contains('*') => Err(AccessError::Invalid(format!(
                    "scope {text:?}: only one trailing `*` is allowed"
                ))),
                Some(prefix) => Ok(Scope::Prefix(prefix.to_string())),
                None if text.contains('*') => Err(AccessError::Invalid(format!(
                    "scope {text:?}: `*` may only end a prefix"
                ))),
                None => Ok(Scope::Namespace(text.to_string())),
            },
        }
    }

    /// The CLI form back (`*`, `PREFIX*`, or the name).
    pub fn spec(&self) -> String {
        match self {
            Scope::All => "*".into(),
            Scope::Namespace(name) => name.clone(),
            Scope::Prefix(prefix) => format!("{prefix}*"),
        }
    }

    /// Whether it covers `target`.
    pub fn covers(&self, target: &crate::Target<'_>) -> bool {
        match (self, target) {
            (Scope::All, _) => true,
            (Scope::Namespace(name), crate::Target::Namespace(ns)) => name == ns,
            (Scope::Prefix(prefix), crate::Target::Namespace(ns)) => ns.starts_with(prefix),
            (_, crate::Target::Cluster) => false,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all namespaces"),
            Scope::Namespace(name) => write!(f, "namespace {name}"),
            Scope::Prefix(prefix) => write!(f, "namespaces starting with {prefix:?}"),
        }
    }
}

/// A role granted to an identity over a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The identity's URI (`spiffe://meridian/user/alice`).
    pub identity: String,
    /// The role.
    pub role: String,
    /// Where it applies.
    pub scope: Scope,
}

impl Grant {
    /// A grant with the identity normalized to its URI (`user/alice` and
    /// `spiffe://meridian/user/alice` name the same identity).
    pub fn new(identity: &str, role: &str, scope: Scope) -> Result<Self, AccessError> {
        Ok(Self {
            identity: normalize_identity(identity)?,
            role: role.to_string(),
            scope,
        })
    }
}

/// An identity's URI, from either form.
pub fn normalize_identity(identity: &str) -> Result<String, AccessError> {
    Identity::parse(identity)
        .map(|id| id.uri())
        .map_err(|e| AccessError::Invalid(e.to_string()))
}

/// An API token: a role over a scope until it expires or is revoked. Only
/// the SHA-256 of its secret is kept (see [`crate::token`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id (in the token and in listings).
    pub id: String,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
    /// The role it carries.
    pub role: String,
    /// Where.
    pub scope: Scope,
    /// Who created it.
    pub created_by: String,
    /// When (Unix ms).
    pub created_at_ms: u64,
    /// When it stops working (Unix ms).
    pub expires_at_ms: u64,
}

/// A revoked identity: refused everywhere, whatever it was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it.
    pub by: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// Everything that decides who may do what, besides the built-in rules for
/// Meridian's own processes (see [`crate::decision`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Increases with every change; receivers keep the newest.
    pub version: u64,
    /// Custom roles (the built-in ones are not stored).
    pub roles: BTreeMap<String, BTreeSet<Permission>>,
    /// Grants.
    pub grants: BTreeSet<Grant>,
    /// Tokens by id.
    pub tokens: BTreeMap<String, ApiToken>,
    /// Revoked identities by URI.
    pub revoked: BTreeMap<String, Revocation>,
    /// Whether the configured first grants were applied (only ever once, so
    /// revoking one of them sticks across restarts).
    pub bootstrapped: bool,
}

/// A change an administrator (or the control plane's bootstrap) makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessChange {
    /// Creates or redefines a custom role.
    PutRole {
        /// Name.
        name: String,
        /// What it allows.
        permissions: BTreeSet<Permission>,
    },
    /// Deletes a custom role nobody holds.
    DeleteRole {
        /// Name.
        name: String,
    },
    /// Grants a role (idempotent).
    Grant(Grant),
    /// Takes a grant back.
    Revoke(Grant),
    /// Adds a token.
    CreateToken(ApiToken),
    /// Deletes a token.
    RevokeToken {
        /// Its id.
        id: String,
    },
    /// Refuses an identity everywhere (a deny-list entry).
    RevokeIdentity {
        /// The identity.
        identity: String,
    },
    /// Takes an identity off the deny-list.
    RestoreIdentity {
        /// The identity.
        identity: String,
    },
    /// The configured first grants; applied once per cluster.
    Bootstrap {
        /// The grants.
        grants: Vec<Grant>,
    },
}

impl AccessChange {
    /// What the change is about, for the audit log's `target` field.
    pub fn target(&self) -> String {
        match self {
            AccessChange::PutRole { name, .. } | AccessChange::DeleteRole { name } => {
                format!("role {name}")
            }
            AccessChange::Grant(g) | AccessChange::Revoke(g) => format!("identity {}", g.identity),
            AccessChange::CreateToken(t) => format!("token {}", t.id),
            AccessChange::RevokeToken { id } => format!("token {id}"),
            AccessChange::RevokeIdentity { identity }
            | AccessChange::RestoreIdentity { identity } => format!("identity {identity}"),
            AccessChange::Bootstrap { .. } => "access policy".to_string(),
        }
    }

    /// The change in words, for the audit log.
    pub fn describe(&self) -> String {
        match self {
            AccessChange::PutRole { name, permissions } => format!(
                "put role {name} ({})",
                permissions
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            AccessChange::DeleteRole { name } => format!("delete role {name}"),
            AccessChange::Grant(g) => format!("grant {} to {} on {}", g.role, g.identity, g.scope),
            AccessChange::Revoke(g) => {
                format!("revoke {} from {} on {}", g.role, g.identity, g.scope)
            }
            AccessChange::CreateToken(t) => format!(
                "create token {} ({} on {}, expires at {} ms)",
                t.id, t.role, t.scope, t.expires_at_ms
            ),
            AccessChange::RevokeToken { id } => format!("revoke token {id}"),
            AccessChange::RevokeIdentity { identity } => format!("revoke identity {identity}"),
            AccessChange::RestoreIdentity { identity } => format!("restore identity {identity}"),
            AccessChange::Bootstrap { grants } => format!(
                "bootstrap access ({})",
                grants
                    .iter()
                    .map(|g| format!("{} to {} on {}", g.role, g.identity, g.scope))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

fn check_role_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!(
            "role name {name:?}: 1-64 characters from a-z, 0-9, '-', '_'"
        )))
    }
}

impl AccessPolicy {
    /// The permissions of a role, built-in or custom.
    pub fn role(&self, name: &str) -> Option<BTreeSet<Permission>> {
        built_in_role(name)
            .map(|p| p.iter().copied().collect())
            .or_else(|| self.roles.get(name).cloned())
    }

    /// Every role name, built-in first.
    pub fn role_names(&self) -> Vec<String> {
        BUILT_IN_ROLES
            .iter()
            .map(|s| s.to_string())
            .chain(self.roles.keys().cloned())
            .collect()
    }

    fn require_role(&self, name: &str) -> Result<(), AccessError> {
        match self.role(name) {
            Some(_) => Ok(()),
            None => Err(AccessError::UnknownRole {
                name: name.to_string(),
                known: self.role_names().join(", "),
            }),
        }
    }

    /// The grants of one identity (URI).
    pub fn grants_of<'a>(&'a self, identity: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        // Grants are ordered by identity first: start at the identity's
        // smallest possible grant instead of walking every grant.
        let first = Grant {
            identity: identity.to_string(),
            role: String::new(),
            scope: Scope::All,
        };
        self.grants
            .range(first..)
            .take_while(move |g| g.identity == identity)
    }

    /// [`AccessPolicy::apply_by`] without an actor (tests, tools).
    pub fn apply(&mut self, change: &AccessChange, now_ms: u64) -> Result<(), AccessError> {
        self.apply_by(change, "", now_ms)
    }

    /// Applies a change `actor` made at `now_ms` (the request's time; the
    /// actor is kept in revocation entries). Expired tokens are dropped on
    /// every change, so the table stays bounded.
    pub fn apply_by(
        &mut self,
        change: &AccessChange,
        actor: &str,
        now_ms: u64,
    ) -> Result<(), AccessError> {
        self.tokens.retain(|_, t| t.expires_at_ms > now_ms);
        match change {
            AccessChange::PutRole { name, permissions } => {
                check_role_name(name)?;
                if built_in_role(name).is_some() {
                    return Err(AccessError::BuiltIn(name.clone()));
                }
                if permissions.is_empty() {
                    return Err(AccessError::Invalid(format!(
                        "role {name:?} needs at least one permission (read, write, view, admin)"
                    )));
                }
                if !self.roles.contains_key(name) && self.roles.len() >= MAX_ROLES {
                    return Err(AccessError::Limit {
                        what: "roles".into(),
                        limit: MAX_ROLES,
                    });
                }
                self.roles.insert(name.clone(), permissions.clone());
            }
            AccessChange::DeleteRole { name } => {
                if built_in_role(name).is_some() {
                    return Err(AccessError::BuiltIn(name.clone()));
                }
                self.require_role(name)?;
                let mut users: Vec<String> = self
                    .grants
                    .iter()
                    .filter(|g| &g.role == name)
                    .map(|g| g.identity.clone())
                    .collect();
                users.extend(
                    self.tokens
                        .values()
                        .filter(|t| &t.role == name)
                        .map(|t| format!("token {}", t.id)),
                );
                if !users.is_empty() {
                    return Err(AccessError::RoleInUse {
                        role: name.clone(),
                        users: users.join(", "),
                    });
                }
                self.roles.remove(name);
            }
            AccessChange::Grant(grant) => {
                self.require_role(&grant.role)?;
                normalize_identity(&grant.identity)?;
                if !self.grants.contains(grant) && self.grants.len() >= MAX_GRANTS {
                    return Err(AccessError::Limit {
                        what: "grants".into(),
                        limit: MAX_GRANTS,
                    });
                }
                self.grants.insert(grant.clone());
            }
            AccessChange::Revoke(grant) => {
                if !self.grants.remove(grant) {
                    let has: Vec<String> = self
                        .grants_of(&grant.identity)
                        .map(|g| format!("{} on {}", g.role, g.scope))
                        .collect();
                    return Err(AccessError::NotGranted {
                        identity: grant.identity.clone(),
                        role: grant.role.clone(),
                        scope: grant.scope.to_string(),
                        has: if has.is_empty() {
                            "none".into()
                        } else {
                            has.join(", ")
                        },
                    });
                }
            }
            AccessChange::CreateToken(token) => {
                self.require_role(&token.role)?;
                if token.expires_at_ms <= now_ms {
                    return Err(AccessError::Invalid(format!(
                        "token {} would already be expired",
                        token.id
                    )));
                }
                if self.tokens.contains_key(&token.id) {
                    return Err(AccessError::Invalid(format!(
                        "a token with id {} exists",
                        token.id
                    )));
                }
                if self.tokens.len() >= MAX_TOKENS {
                    return Err(AccessError::Limit {
                        what: "live tokens".into(),
                        limit: MAX_TOKENS,
                    });
                }
                self.tokens.insert(token.id.clone(), token.clone());
            }
            AccessChange::RevokeToken { id } => {
                if self.tokens.remove(id).is_none() {
                    return Err(AccessError::UnknownToken(id.clone()));
                }
            }
            AccessChange::RevokeIdentity { identity } => {
                let parsed =
                    Identity::parse(identity).map_err(|e| AccessError::Invalid(e.to_string()))?;
                if matches!(parsed, Identity::Control { .. }) {
                    return Err(AccessError::Invalid(format!(
                        "{} is a control-plane member: remove it from the control plane's membership instead of revoking it",
                        parsed.uri()
                    )));
                }
                if !self.revoked.contains_key(&parsed.uri()) && self.revoked.len() >= MAX_REVOKED {
                    return Err(AccessError::Limit {
                        what: "revoked identities".into(),
                        limit: MAX_REVOKED,
                    });
                }
                self.revoked.entry(parsed.uri()).or_insert(Revocation {
                    by: actor.to_string(),
                    at_ms: now_ms,
                });
            }
            AccessChange::RestoreIdentity { identity } => {
                let uri = normalize_identity(identity)?;
                if self.revoked.remove(&uri).is_none() {
                    return Err(AccessError::Invalid(format!("{uri} is not revoked")));
                }
            }
            AccessChange::Bootstrap { grants } => {
                if self.bootstrapped {
                    return Ok(());
                }
                for grant in grants {
                    self.require_role(&grant.role)?;
                    normalize_identity(&grant.identity)?;
                }
                self.grants.extend(grants.iter().cloned());
                self.bootstrapped = true;
            }
        }
        self.version += 1;
        Ok(())
    }

    /// The stored and pushed form: [`POLICY_FORMAT`], then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![POLICY_FORMAT];
        // Serializing plain data into a Vec cannot fail.
        bytes.extend(postcard::to_stdvec(self).unwrap_or_default());
        bytes
    }

    /// Reads [`AccessPolicy::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, AccessError> {
        match bytes.split_first() {
            Some((&POLICY_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| AccessError::Format(e.to_string()))
            }
            Some((format, _)) => Err(AccessError::Format(format!(
                "unknown format {format} (this build reads {POLICY_FORMAT})"
            ))),
            None => Err(AccessError::Format("empty".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(identity: &str, role: &str, scope: Scope) -> Grant {
        Grant::new(identity, role, scope).unwrap()
    }

    #[test]
    fn scopes_parse_and_cover() {
        use crate::Target;
        let cases = [
            (None, Target::Cluster, true),
            (Some("*"), Target::Namespace("a"), true),
            (Some("orders"), Target::Namespace("orders"), true),
            (Some("orders"), Target::Namespace("orders-2"), false),
            (Some("orders"), Target::Cluster, false),
            (Some("team-a/*"), Target::Namespace("team-a/x"), true),
            (Some("team-a/*"), Target::Namespace("team-b/x"), false),
            (Some("team-a/*"), Target::Cluster, false),
        ];
        for (spec, target, covered) in cases {
            let scope = Scope::parse(spec).unwrap();
            assert_eq!(scope.covers(&target), covered, "{spec:?} {target:?}");
            assert_eq!(Scope::parse(Some(&scope.spec())).unwrap(), scope);
        }
        assert!(Scope::parse(Some("a*b")).is_err());
        assert!(Scope::parse(Some("a**")).is_err());
    }

    #[test]
    fn changes_table() {
        let reader = grant("user/reader", "reader", Scope::All);
        let custom = AccessChange::PutRole {
            name: "auditor".into(),
            permissions: [Permission::View].into(),
        };
        // (case, changes before, change, error expected: a fragment of it)
        let cases: Vec<(&str, Vec<AccessChange>, AccessChange, Option<&str>)> = vec![
            (
                "grant a built-in role",
                vec![],
                AccessChange::Grant(reader.clone()),
                None,
            ),
            (
                "grant an unknown role",
                vec![],
                AccessChange::Grant(grant("user/a", "nope", Scope::All)),
                Some("unknown role \"nope\""),
            ),
            (
                "grant twice is idempotent",
                vec![AccessChange::Grant(reader.clone())],
                AccessChange::Grant(reader.clone()),
                None,
            ),
            (
                "revoke what was never granted",
                vec![],
                AccessChange::Revoke(reader.clone()),
                Some("has no grant of reader"),
            ),
            (
                "redefine a built-in role",
                vec![],
                AccessChange::PutRole {
                    name: "admin".into(),
                    permissions: [Permission::Read].into(),
                },
                Some("built in"),
            ),
            (
                "a role without permissions",
                vec![],
                AccessChange::PutRole {
                    name: "empty".into(),
                    permissions: BTreeSet::new(),
                },
                Some("at least one permission"),
            ),
            (
                "a role name with capitals",
                vec![],
                AccessChange::PutRole {
                    name: "Auditor".into(),
                    permissions: [Permission::View].into(),
                },
                Some("role name"),
            ),
            (
                "delete a role in use",
                vec![
                    custom.clone(),
                    AccessChange::Grant(grant("user/a", "auditor", Scope::All)),
                ],
                AccessChange::DeleteRole {
                    name: "auditor".into(),
                },
                Some("still in use by spiffe://meridian/user/a"),
            ),
            (
                "delete an unused role",
                vec![custom.clone()],
                AccessChange::DeleteRole {
                    name: "auditor".into(),
                },
                None,
            ),
            (
                "revoke a control member",
                vec![],
                AccessChange::RevokeIdentity {
                    identity: "control/control-1".into(),
                },
                Some("control-plane member"),
            ),
            (
                "restore an identity never revoked",
                vec![],
                AccessChange::RestoreIdentity {
                    identity: "user/a".into(),
                },
                Some("is not revoked"),
            ),
            (
                "revoke an unknown token",
                vec![],
                AccessChange::RevokeToken { id: "ab".into() },
                Some("no token with id"),
            ),
        ];
        for (case, before, change, expected) in cases {
            let mut policy = AccessPolicy::default();
            for c in &before {
                policy.apply(c, 1).unwrap();
            }
            let version = policy.version;
            let result = policy.apply(&change, 1);
            match expected {
                None => {
                    assert!(result.is_ok(), "{case}: {result:?}");
                    assert_eq!(policy.version, version + 1, "{case}");
                }
                Some(fragment) => {
                    let err = result.expect_err(case).to_string();
                    assert!(err.contains(fragment), "{case}: {err}");
                    assert_eq!(policy.version, version, "{case}: a refusal changes nothing");
                }
            }
        }
    }

    #[test]
    fn bootstrap_happens_once_and_expired_tokens_go() {
        let mut policy = AccessPolicy::default();
        let admin = grant("user/admin", "admin", Scope::All);
        let bootstrap = AccessChange::Bootstrap {
            grants: vec![admin.clone()],
        };
        policy.apply(&bootstrap, 1).unwrap();
        policy
            .apply(&AccessChange::Revoke(admin.clone()), 2)
            .unwrap();
        policy.apply(&bootstrap, 3).unwrap();
        assert!(
            policy.grants.is_empty(),
            "a revoked first grant stays revoked"
        );

        let token = ApiToken {
            id: "t1".into(),
            secret_sha256: [0; 32],
            role: "reader".into(),
            scope: Scope::All,
            created_by: "x".into(),
            created_at_ms: 10,
            expires_at_ms: 100,
        };
        policy
            .apply(&AccessChange::CreateToken(token.clone()), 10)
            .unwrap();
        assert!(policy.tokens.contains_key("t1"));
        policy
            .apply(&AccessChange::Grant(admin.clone()), 100)
            .unwrap();
        assert!(policy.tokens.is_empty(), "expired by the next change");
        let err = policy
            .apply(&AccessChange::CreateToken(token), 200)
            .unwrap_err();
        assert!(err.to_string().contains("already be expired"), "{err}");
    }

    #[test]
    fn revocations_record_who_and_when() {
        let mut policy = AccessPolicy::default();
        policy
            .apply_by(
                &AccessChange::RevokeIdentity {
                    identity: "user/mallory".into(),
                },
                "spiffe://meridian/user/admin",
                42,
            )
            .unwrap();
        assert_eq!(
            policy.revoked["spiffe://meridian/user/mallory"],
            Revocation {
                by: "spiffe://meridian/user/admin".into(),
                at_ms: 42
            }
        );
    }

    /// The golden sample pins the stored and pushed format.
    #[test]
    fn encoded_policy_matches_its_golden_sample() {
        let mut policy = AccessPolicy::default();
        let changes = [
            AccessChange::Bootstrap {
                grants: vec![grant("user/admin", "admin", Scope::All)],
            },
            AccessChange::PutRole {
                name: "auditor".into(),
                permissions: [Permission::View, Permission::Read].into(),
            },
            AccessChange::Grant(grant(
                "user/alice",
                "writer",
                Scope::Prefix("team-a/".into()),
            )),
            AccessChange::Grant(grant("user/bob", "auditor", Scope::Namespace("x".into()))),
            AccessChange::CreateToken(ApiToken {
                id: "0123456789abcdef".into(),
                secret_sha256: [7; 32],
                role: "reader".into(),
                scope: Scope::All,
                created_by: "spiffe://meridian/user/admin".into(),
                created_at_ms: 1_000,
                expires_at_ms: 86_401_000,
            }),
            AccessChange::RevokeIdentity {
                identity: "user/mallory".into(),
            },
        ];
        for change in &changes {
            policy
                .apply_by(change, "spiffe://meridian/user/admin", 1_000)
                .unwrap();
        }
        let bytes = policy.encode();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/formats/access-policy-v1");
        if std::env::var_os("MERIDIAN_BLESS_FORMATS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("golden sample {}: {e}", path.display()));
        assert_eq!(
            bytes, golden,
            "the policy format changed: bump POLICY_FORMAT"
        );
        assert_eq!(AccessPolicy::decode(&golden).unwrap(), policy);
        assert!(AccessPolicy::decode(&[9, 0]).is_err());
    }
}
