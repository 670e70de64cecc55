//! Who may register a shard member (pure, table-tested). Everything else
//! the control plane serves is decided by `meridian_access::decide` over the
//! replicated access policy.

use meridian_access::Caller;
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

/// Whether `caller` may register a member of a shard in `region`: only a
/// node registers itself, and only in the region its certificate names (a
/// node cannot claim a region its certificate does not carry).
pub fn may_register(caller: &Caller, region: &str) -> Result<(), Denied> {
    let action = format!("register a shard member in region {region}");
    match caller {
        Caller::Plain => Ok(()),
        Caller::Unidentified(why) => Err(Denied {
            identity: caller.name(),
            action,
            lacks: why.clone(),
        }),
        Caller::Certificate(Identity::Node { region: own, .. }) if own == region => Ok(()),
        Caller::Certificate(identity @ Identity::Node { region: own, .. }) => Err(Denied {
            identity: identity.uri(),
            action,
            lacks: format!("its certificate places it in region {own}"),
        }),
        Caller::Certificate(_) | Caller::Token(_) => Err(Denied {
            identity: caller.name(),
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
        let id = |s: &str| Caller::Certificate(Identity::parse(s).unwrap());
        let node = id("node/us-east/us-east-1");
        let user = id("user/client");
        let gateway = id("gateway/us-east/gw-1");
        let unidentified = Caller::Unidentified("no identity".into());
        let token = Caller::Token(
            meridian_access::token::parse(&meridian_access::token::mint().token).unwrap(),
        );
        // (case, caller, region, allowed)
        let cases: Vec<(&str, &Caller, &str, bool)> = vec![
            (
                "plain text: nothing to check",
                &Caller::Plain,
                "eu-west",
                true,
            ),
            ("a node in its own region", &node, "us-east", true),
            ("a node claiming another region", &node, "eu-west", false),
            ("a user", &user, "us-east", false),
            ("a gateway", &gateway, "us-east", false),
            ("an API token", &token, "us-east", false),
            (
                "a certificate without identity",
                &unidentified,
                "us-east",
                false,
            ),
        ];
        for (case, caller, region, allowed) in cases {
            assert_eq!(may_register(caller, region).is_ok(), allowed, "{case}");
        }
        let denied = may_register(&node, "eu-west").unwrap_err();
        assert_eq!(
            denied.to_string(),
            "spiffe://meridian/node/us-east/us-east-1 may not register a shard member in region eu-west: its certificate places it in region us-east"
        );
    }
}
