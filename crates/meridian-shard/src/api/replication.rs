//! The `meridian.v1.Replication` service of a shard node: the peer API the
//! shipping shard's nodes call. Who may call is checked here; what a
//! request does is `meridian_replication::applier`'s.

use super::finish;
use crate::limits::validate_namespace_name;
use crate::node::ShardNode;
use meridian_proto::v1 as pb;
use meridian_proto::v1::replication_server::Replication;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Serves replication requests on one shard node.
pub struct ReplicationService {
    node: Arc<ShardNode>,
}

impl ReplicationService {
    /// A service over `node`.
    pub fn new(node: Arc<ShardNode>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let started = Instant::now();
        // Changes come from another shard's node, never from a client...
        meridian_net::peers::check(
            &request,
            &meridian_net::peers::Peers::Nodes,
            "Replication.Replicate",
        )?;
        // ...and only from a node of the region the routing table names as
        // the namespace's primary: not from any node that holds a certificate.
        if let Some(Ok(caller @ meridian_net::Identity::Node { .. })) =
            meridian_net::peers::caller(&request)
        {
            let namespace = &request.get_ref().namespace;
            let region = caller.region().unwrap_or_default();
            // Active-active: a node ships only the writes of its own region.
            let origin = &request.get_ref().origin_region;
            if !origin.is_empty() && origin != region {
                return Err(Status::permission_denied(format!(
                    "a node of region {region} may not ship writes of region {origin} of namespace {namespace:?}: each region ships only its own"
                )));
            }
            match self.node.access.shipper(namespace, region) {
                Ok(None) => {}
                Ok(Some(primary)) if primary.region != region => {
                    return Err(Status::permission_denied(format!(
                        "a node of region {region} may not replicate namespace {namespace:?}: its primary is in region {} (and it has no peer in {region})",
                        primary.region
                    )));
                }
                // Of the primary's region: it must also be a member of the
                // primary's shard.
                Ok(Some(primary)) => {
                    if let Err(why) = self.node.access.admit_member_of(&caller, &primary).await {
                        return Err(Status::permission_denied(format!(
                            "{} may not replicate namespace {namespace:?}: only members of its primary shard {} may ({why})",
                            caller.uri(),
                            primary.shard
                        )));
                    }
                }
                // Retryable: the push arrives within moments.
                Err(why) => return Err(Status::unavailable(why)),
            }
        }
        let request = request.into_inner();
        let result = match validate_namespace_name(&request.namespace) {
            Ok(()) => meridian_replication::applier::receive(&*self.node, request).await,
            Err(invalid) => Err(invalid.into()),
        };
        finish(&self.node.metrics, "Replicate", None, started, result)
    }
}
