//! Who may do what on the control plane (pure, table-tested). Grows with
//! issue 11's roles and grants; today it decides who may register a shard
//! member.

use meridian_net::Identity;

/// A refusal: the caller's identity and what it lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{identity} may not {action}: {lacks}")]
pub struct Denied {
    /// The caller's identity.
    pub identity: String,
    /// What it tried.
    pub action: String,
    /// Why not.
    pub lacks: String,
}

/// The caller as mutual TLS authenticated it (`meridian_net::peers::caller`):
/// `None` in plain text (nothing can be refused by identity), else the
/// identity in its certificate or why it has none.
pub type Caller<'a> = Option<&'a Result<Identity, String>>;

/// Whether `caller` may register a member of a shard in `region`: only a
/// node registers itself, and only in the region its certificate names (a
/// node cannot claim a region its certificate does not carry).
pub fn may_register(caller: Caller<'_>, region: &str) -> Result<(), Denied> {
    let action = format!("register a shard member in region {region}");
    match caller {
        None => Ok(()),
        Some(Err(why)) => Err(Denied {
            identity: "(unidentified certificate)".into(),
            action,
            lacks: why.clone(),
        }),
        Some(Ok(Identity::Node { region: own, .. })) if own == region => Ok(()),
        Some(Ok(identity @ Identity::Node { region: own, .. })) => Err(Denied {
            identity: identity.uri(),
            action,
            lacks: format!("its certificate places it in region {own}"),
        }),
        Some(Ok(identity)) => Err(Denied {
            identity: identity.uri(),
            action,
            lacks: "only a node registers itself, with a node certificate".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_table() {
        let id = |s: &str| Ok(Identity::parse(s).unwrap());
        let node = id("node/us-east/us-east-1");
        let user = id("user/client");
        let gateway = id("gateway/us-east/gw-1");
        let unidentified: Result<Identity, String> = Err("no identity".into());
        // (case, caller, region, allowed)
        let cases: Vec<(&str, Caller<'_>, &str, bool)> = vec![
            ("plain text: nothing to check", None, "eu-west", true),
            ("a node in its own region", Some(&node), "us-east", true),
            (
                "a node claiming another region",
                Some(&node),
                "eu-west",
                false,
            ),
            ("a user", Some(&user), "us-east", false),
            ("a gateway", Some(&gateway), "us-east", false),
            (
                "a certificate without identity",
                Some(&unidentified),
                "us-east",
                false,
            ),
        ];
        for (case, caller, region, allowed) in cases {
            assert_eq!(may_register(caller, region).is_ok(), allowed, "{case}");
        }
        let denied = may_register(Some(&node), "eu-west").unwrap_err();
        assert_eq!(
            denied.to_string(),
            "spiffe://meridian/node/us-east/us-east-1 may not register a shard member in region eu-west: its certificate places it in region us-east"
        );
    }
}
