//! Which identities a peer API accepts: a shard's Raft only from nodes of its
//! region, a control plane's Raft only from control members, write leases only
//! from the control plane, replication only from nodes. The decision is pure
//! ([`admit`], table-tested); [`check`] applies it to a gRPC call.
//!
//! In plain text nobody is authenticated, so nothing can be refused by
//! identity: a cluster without `[network.tls]` has no access control.

use crate::Identity;

/// Who may call a peer API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// Control-plane members.
    ControlPlane,
    /// Shard nodes of any region.
    Nodes,
    /// Shard nodes of this region (the members of a shard's own Raft group).
    NodesOf(String),
    /// Shard nodes and gateways (reporting what they refused).
    NodesAndGateways,
}

impl std::fmt::Display for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peers::ControlPlane => f.write_str("control-plane members"),
            Peers::Nodes => f.write_str("shard nodes"),
            Peers::NodesOf(region) => write!(f, "shard nodes of region {region}"),
            Peers::NodesAndGateways => f.write_str("shard nodes and gateways"),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's certificate carries no usable identity (UNAUTHENTICATED).
    #[error("the caller's certificate has no usable identity ({0})")]
    Unidentified(String),
    /// The caller is not one of the peers the API is for (PERMISSION_DENIED).
    #[error("{identity} may not call {api}: only {allowed} may")]
    NotAllowed {
        /// The caller.
        identity: String,
        /// The API.
        api: String,
        /// Who may.
        allowed: String,
    },
}

/// The caller as mutual TLS authenticated it: `None` in plain text, else the
/// identity in the certificate the handshake verified, or why there is none.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<Result<Identity, String>> {
    // Plain text only when the connection really is: a TLS connection whose
    // client sent no certificate has no identity, which is not "plain text".
    let tls = request
        .extensions()
        .get::<crate::accept::Peer>()?
        .tls
        .as_ref()?;
    Some(match &**tls {
        crate::accept::ClientCertificate::Identified(identity) => Ok(identity.clone()),
        crate::accept::ClientCertificate::Unusable(why) => Err(why.clone()),
        crate::accept::ClientCertificate::Absent => Err("no client certificate".to_string()),
    })
}

/// Whether `caller` may call `api`, which is for `peers`.
pub fn admit(
    caller: Option<&Result<Identity, String>>,
    peers: &Peers,
    api: &str,
) -> Result<(), Refusal> {
    let identity = match caller {
        None => return Ok(()),
        Some(Err(why)) => return Err(Refusal::Unidentified(why.clone())),
        Some(Ok(identity)) => identity,
    };
    let allowed = match (peers, identity) {
        (Peers::ControlPlane, Identity::Control { .. }) => true,
        (Peers::Nodes, Identity::Node { .. }) => true,
        (Peers::NodesOf(own), Identity::Node { region, .. }) => region == own,
        (Peers::NodesAndGateways, Identity::Node { .. } | Identity::Gateway { .. }) => true,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::NotAllowed {
            identity: identity.uri(),
            api: api.to_string(),
            allowed: peers.to_string(),
        })
    }
}

/// [`admit`] for a gRPC call: UNAUTHENTICATED or PERMISSION_DENIED naming the
/// identity and who may call `api`.
pub fn check<T>(
    request: &tonic::Request<T>,
    peers: &Peers,
    api: &str,
) -> Result<(), tonic::Status> {
    let caller = caller(request);
    admit(caller.as_ref(), peers, api).map_err(|refusal| match refusal {
        Refusal::Unidentified(_) => tonic::Status::unauthenticated(refusal.to_string()),
        Refusal::NotAllowed { .. } => tonic::Status::permission_denied(refusal.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_table() {
        let id = |s: &str| Ok(Identity::parse(s).unwrap());
        let node = id("node/us-east/us-east-1");
        let far_node = id("node/eu-west/eu-west-1");
        let control = id("control/control-1");
        let user = id("user/client");
        let gateway = id("gateway/us-east/gw-1");
        let unidentified: Result<Identity, String> = Err("no identity".into());
        let here = Peers::NodesOf("us-east".into());
        /// (case, caller, peers, admitted)
        type Case<'a> = (
            &'a str,
            Option<&'a Result<Identity, String>>,
            &'a Peers,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("plain text", None, &Peers::ControlPlane, true),
            (
                "control to a control API",
                Some(&control),
                &Peers::ControlPlane,
                true,
            ),
            (
                "a node to a control API",
                Some(&node),
                &Peers::ControlPlane,
                false,
            ),
            (
                "a user to a control API",
                Some(&user),
                &Peers::ControlPlane,
                false,
            ),
            ("a node replicating", Some(&far_node), &Peers::Nodes, true),
            (
                "a gateway replicating",
                Some(&gateway),
                &Peers::Nodes,
                false,
            ),
            ("a user replicating", Some(&user), &Peers::Nodes, false),
            ("a node of the shard's region", Some(&node), &here, true),
            ("a node of another region", Some(&far_node), &here, false),
            ("control into a shard's Raft", Some(&control), &here, false),
            ("no identity", Some(&unidentified), &Peers::Nodes, false),
            (
                "a gateway reporting",
                Some(&gateway),
                &Peers::NodesAndGateways,
                true,
            ),
            (
                "a node reporting",
                Some(&node),
                &Peers::NodesAndGateways,
                true,
            ),
            (
                "a user reporting",
                Some(&user),
                &Peers::NodesAndGateways,
                false,
            ),
        ];
        for (case, caller, peers, admitted) in cases {
            assert_eq!(admit(caller, peers, "Api").is_ok(), admitted, "{case}");
        }
        assert_eq!(
            admit(Some(&user), &Peers::ControlPlane, "Admin.Lease")
                .unwrap_err()
                .to_string(),
            "spiffe://meridian/user/client may not call Admin.Lease: only control-plane members may"
        );
    }
}
