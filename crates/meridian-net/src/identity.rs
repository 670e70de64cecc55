//! Who a process or person is: a SPIFFE-style URI in its certificate's
//! subject alternative names (exactly one), e.g.
//! `spiffe://meridian/node/us-east/us-east-1`,
//! `spiffe://meridian/gateway/eu-west/gw-1`, `spiffe://meridian/control/control-1`,
//! `spiffe://meridian/user/alice`.
//!
//! Servers (nodes, gateways, control-plane members) get certificates valid
//! for server and client use; users get client-only certificates, so a user
//! certificate cannot pose as a server. A node's region is part of its
//! identity: it comes from the certificate the CA issued, not from what the
//! node declares.

use crate::NetError;

/// The trust domain of every identity.
pub const TRUST_DOMAIN: &str = "meridian";

/// An identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Identity {
    /// A shard node of `region`.
    Node {
        /// Its region.
        region: String,
        /// Its name.
        name: String,
    },
    /// A gateway of `region`.
    Gateway {
        /// Its region.
        region: String,
        /// Its name.
        name: String,
    },
    /// A control-plane member.
    Control {
        /// Its name.
        name: String,
    },
    /// A person or tool.
    User {
        /// The user's name.
        name: String,
    },
}

fn check_part(part: &str, whole: &str) -> Result<(), NetError> {
    let ok = !part.is_empty()
        && part.len() <= 64
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(NetError::Identity {
            identity: whole.to_string(),
            reason: format!(
                "{part:?}: each part is 1 to 64 characters from a-z, A-Z, 0-9, '-', '_' and '.' (not starting with '.')"
            ),
        })
    }
}

impl Identity {
    /// Parses `spiffe://meridian/KIND/...` or the short form `KIND/...`
    /// (`node/REGION/NAME`, `gateway/REGION/NAME`, `control/NAME`, `user/NAME`).
    pub fn parse(text: &str) -> Result<Self, NetError> {
        let path = match text.strip_prefix("spiffe://") {
            Some(rest) => match rest.split_once('/') {
                Some((domain, path)) if domain == TRUST_DOMAIN => path,
                _ => {
                    return Err(NetError::Identity {
                        identity: text.to_string(),
                        reason: format!("the trust domain must be {TRUST_DOMAIN:?}"),
                    });
                }
            },
            None => text,
        };
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[1.min(parts.len())..] {
            check_part(part, text)?;
        }
        let owned = |s: &str| s.to_string();
        match parts.as_slice() {
            ["node", region, name] => Ok(Identity::Node {
                region: owned(region),
                name: owned(name),
            }),
            ["gateway", region, name] => Ok(Identity::Gateway {
                region: owned(region),
                name: owned(name),
            }),
            ["control", name] => Ok(Identity::Control { name: owned(name) }),
            ["user", name] => Ok(Identity::User { name: owned(name) }),
            _ => Err(NetError::Identity {
                identity: text.to_string(),
                reason: "expected node/REGION/NAME, gateway/REGION/NAME, control/NAME or user/NAME"
                    .into(),
            }),
        }
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        let path = match self {
            Identity::Node { region, name } => format!("node/{region}/{name}"),
            Identity::Gateway { region, name } => format!("gateway/{region}/{name}"),
            Identity::Control { name } => format!("control/{name}"),
            Identity::User { name } => format!("user/{name}"),
        };
        format!("spiffe://{TRUST_DOMAIN}/{path}")
    }

    /// The name part (used for file names).
    pub fn name(&self) -> &str {
        match self {
            Identity::Node { name, .. }
            | Identity::Gateway { name, .. }
            | Identity::Control { name }
            | Identity::User { name } => name,
        }
    }

    /// Whether it runs a server (its certificate is valid for serving).
    pub fn is_server(&self) -> bool {
        !matches!(self, Identity::User { .. })
    }

    /// The region a node or gateway belongs to.
    pub fn region(&self) -> Option<&str> {
        match self {
            Identity::Node { region, .. } | Identity::Gateway { region, .. } => Some(region),
            _ => None,
        }
    }

    /// The identity in a DER certificate: its one `spiffe://` URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Self, NetError> {
        use x509_parser::extensions::GeneralName;
        let unreadable = |reason: String| NetError::Identity {
            identity: "(certificate)".into(),
            reason,
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| unreadable(format!("not a readable certificate: {e}")))?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| unreadable(format!("unreadable subject alternative names: {e}")))?;
        let uris: Vec<&str> = names
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [uri] => Identity::parse(uri),
            [] => Err(unreadable(
                "the certificate carries no spiffe:// identity (issue it with `meridian certs init --identity ...`)".into(),
            )),
            _ => Err(unreadable(format!(
                "the certificate carries {} spiffe:// identities; exactly one is allowed",
                uris.len()
            ))),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let node = Identity::Node {
            region: "us-east".into(),
            name: "us-east-1".into(),
        };
        let cases: Vec<(&str, Option<Identity>)> = vec![
            (
                "spiffe://meridian/node/us-east/us-east-1",
                Some(node.clone()),
            ),
            ("node/us-east/us-east-1", Some(node.clone())),
            (
                "spiffe://meridian/user/alice",
                Some(Identity::User {
                    name: "alice".into(),
                }),
            ),
            (
                "control/control-1",
                Some(Identity::Control {
                    name: "control-1".into(),
                }),
            ),
            (
                "gateway/eu-west/gw-1",
                Some(Identity::Gateway {
                    region: "eu-west".into(),
                    name: "gw-1".into(),
                }),
            ),
            ("spiffe://other/user/alice", None),
            ("user/", None),
            ("user/al ice", None),
            ("user/../x", None),
            ("user/..", None),
            ("node/us-east", None),
            ("admin/alice", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Identity::parse(text).ok(), expected, "{text:?}");
        }
        assert_eq!(node.uri(), "spiffe://meridian/node/us-east/us-east-1");
        assert_eq!(Identity::parse(&node.uri()).unwrap(), node);
        assert!(node.is_server());
        assert!(!Identity::User { name: "a".into() }.is_server());
    }
}
