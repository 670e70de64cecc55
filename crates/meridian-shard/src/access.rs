//! Who may call a shard node's data and admin APIs: `meridian_access::decide`
//! over the access policy that arrives with the routing push (no round trip
//! to the control plane per call). Peer APIs (Raft, Replicate, Lease,
//! ConfigureNamespace) are checked by kind in `meridian_net::peers`.
//!
//! A standalone shard (no `[control]`) has no policy to follow: any
//! certificate from the cluster CA may call it, as before roles existed.
//! With a control plane, users wait (UNAVAILABLE, retryable) until the first
//! push brings the policy; Meridian's own processes are decided by kind.

use meridian_access::{Caller, Permission, Target};
use meridian_client::routes::SharedRoutes;
use std::sync::OnceLock;
use tonic::{Request, Status};

/// The access decision of one node.
#[derive(Debug)]
pub struct AccessGate {
    standalone: bool,
    routes: OnceLock<SharedRoutes>,
    /// How members' identities are learnt (set with the routes).
    dialer: OnceLock<meridian_net::Dialer>,
    /// Who the members of each primary shard are, by identity.
    shard_members: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<meridian_raft::member_gate::MemberGate>>,
    >,
    /// Calls refused here, reported to the control plane's audit log.
    refusals: std::sync::Arc<meridian_client::refusals::RefusalReporter>,
}

impl AccessGate {
    /// A gate for a node with (`standalone == false`) or without a control plane.
    pub fn new(standalone: bool) -> Self {
        Self {
            standalone,
            routes: OnceLock::new(),
            dialer: OnceLock::new(),
            shard_members: Default::default(),
            refusals: meridian_client::refusals::RefusalReporter::new(),
        }
    }

    /// Decides from now on with the policy in `routes` (the node's routing
    /// subscription), learning peers' identities through `dialer`.
    pub fn follow(&self, routes: SharedRoutes, dialer: meridian_net::Dialer) {
        let _ = self.routes.set(routes);
        let _ = self.dialer.set(dialer);
    }

    /// The caller, if it may `need` on `target`; else UNAUTHENTICATED,
    /// PERMISSION_DENIED (naming who and what it lacks) or UNAVAILABLE.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        need: Permission,
        target: Target<'_>,
    ) -> Result<Caller, Status> {
        let caller = meridian_access::caller::of_grpc(request);
        if self.standalone {
            return match caller {
                Caller::Unidentified(why) => Err(Status::unauthenticated(why)),
                known => Ok(known),
            };
        }
        let policy = self.routes.get().and_then(|routes| {
            routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .access
                .clone()
        });
        match meridian_access::decide(
            policy.as_deref(),
            &caller,
            need,
            target,
            meridian_access::now_unix_ms(),
        ) {
            Ok(()) => Ok(caller),
            Err(refusal) => {
                tracing::info!(caller = %caller.name(), %target, %refusal, "call refused");
                let api = api_name::<T>();
                self.refusals
                    .refused(caller.name(), &api, target.to_string(), refusal.to_string());
                Err(meridian_access::caller::status(&refusal))
            }
        }
    }

    /// The region of `namespace`'s primary as the routing push says: `Ok(None)`
    /// on a standalone shard (nothing to check against), `Err` while the
    /// table does not know the namespace yet.
    pub fn primary_region(&self, namespace: &str) -> Result<Option<String>, String> {
        Ok(self.primary(namespace)?.map(|p| p.region))
    }

    /// Where `namespace`'s primary is as the routing push says (`Ok(None)` on
    /// a standalone shard), with the member addresses of its shard.
    pub fn primary(&self, namespace: &str) -> Result<Option<Primary>, String> {
        if self.standalone {
            return Ok(None);
        }
        let Some(routes) = self.routes.get() else {
            return Err("this node has not received the routing table yet".into());
        };
        let table = routes.read().unwrap_or_else(|e| e.into_inner());
        match table.routes.get(namespace) {
            Some(route) => Ok(Some(Primary {
                region: route.region.clone(),
                shard: route.shard.clone(),
                members: table.shards.get(&route.shard).cloned().unwrap_or_default(),
            })),
            None => Err(format!(
                "this node's routing table (version {}) has no route for namespace {namespace:?} yet",
                table.version
            )),
        }
    }

    /// The copy of `namespace` whose nodes may ship it to this shard, as the
    /// routing push says, for a caller of `region`: the primary's shard
    /// (active-passive), or the peer in `region` (active-active; `Err` with
    /// the reason when the namespace has no peer there).
    pub fn shipper(&self, namespace: &str, region: &str) -> Result<Option<Primary>, String> {
        if self.standalone {
            return Ok(None);
        }
        let Some(routes) = self.routes.get() else {
            return Err("this node has not received the routing table yet".into());
        };
        let table = routes.read().unwrap_or_else(|e| e.into_inner());
        let Some(route) = table.routes.get(namespace) else {
            return Err(format!(
                "this node's routing table (version {}) has no route for namespace {namespace:?} yet",
                table.version
            ));
        };
        let (region, shard) = if route.active_active {
            let copies = std::iter::once((&route.region, &route.shard))
                .chain(route.standbys.iter().map(|s| (&s.region, &s.shard)));
            match copies.into_iter().find(|(r, _)| r.as_str() == region) {
                Some((region, shard)) => (region.clone(), shard.clone()),
                None => {
                    return Ok(Some(Primary {
                        region: route.region.clone(),
                        shard: route.shard.clone(),
                        members: Vec::new(),
                    }));
                }
            }
        } else {
            (route.region.clone(), route.shard.clone())
        };
        Ok(Some(Primary {
            region,
            members: table.shards.get(&shard).cloned().unwrap_or_default(),
            shard,
        }))
    }

    /// The regions of an active-active namespace's peers other than
    /// `own`, as the routing push says (empty for other namespaces).
    pub fn peer_regions(&self, namespace: &str, own: &str) -> Vec<String> {
        let Some(routes) = self.routes.get() else {
            return Vec::new();
        };
        let table = routes.read().unwrap_or_else(|e| e.into_inner());
        match table.routes.get(namespace) {
            Some(route) if route.active_active => std::iter::once(route.region.clone())
                .chain(route.standbys.iter().map(|s| s.region.clone()))
                .filter(|region| region != own)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Admits `caller` if it is a member of `primary`'s shard: the identity
    /// one of its member addresses serves (learnt as a shard's Raft learns its
    /// own members; see `meridian_raft::member_gate`).
    pub async fn admit_member_of(
        &self,
        caller: &meridian_net::Identity,
        primary: &Primary,
    ) -> Result<(), String> {
        let Some(dialer) = self.dialer.get() else {
            return Ok(());
        };
        let gate = self
            .shard_members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(primary.shard.clone())
            .or_insert_with(|| {
                std::sync::Arc::new(meridian_raft::member_gate::MemberGate::new(
                    dialer.clone(),
                    &primary.shard,
                ))
            })
            .clone();
        gate.admit(caller, primary.members.clone()).await
    }

    /// The queue of refused calls, for the task that reports them.
    pub fn refusals(&self) -> std::sync::Arc<meridian_client::refusals::RefusalReporter> {
        self.refusals.clone()
    }

    /// Whether this node follows a control plane's policy.
    pub fn is_standalone(&self) -> bool {
        self.standalone
    }
}

/// A namespace's primary as the routing push says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Its region.
    pub region: String,
    /// Its shard.
    pub shard: String,
    /// The shard's member addresses.
    pub members: Vec<String>,
}

/// The API a request message belongs to, for the audit log: `GetRequest`
/// is `Get`, `AddNodeRequest` is `AddNode` (message names are unique across
/// the shard's services).
fn api_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let short = full.rsplit("::").next().unwrap_or(full);
    format!("shard {}", short.strip_suffix("Request").unwrap_or(short))
}
