//! The gateway's `meridian.v1.Kv`: look up the namespace's route, forward the call
//! to that shard.

use crate::routes::SharedRoutes;
use meridian_client::{Client, ClientError, ClientOptions};
use meridian_proto::v1 as pb;
use meridian_proto::v1::kv_server::Kv;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// A client per shard, rebuilt when the shard's members change.
type ShardClients = HashMap<String, (Vec<String>, Arc<Client>)>;

/// Routes `Kv` calls by namespace.
pub struct GatewayService {
    routes: SharedRoutes,
    clients: Mutex<ShardClients>,
    counters: Arc<crate::server::GatewayMetrics>,
}

impl GatewayService {
    /// A service routing with `routes`.
    pub fn new(routes: SharedRoutes, counters: Arc<crate::server::GatewayMetrics>) -> Self {
        Self {
            routes,
            clients: Mutex::new(HashMap::new()),
            counters,
        }
    }

    /// The client for the shard owning `namespace`, or NOT_FOUND.
    fn client_for(&self, namespace: &str) -> Result<Arc<Client>, Status> {
        let route = {
            let table = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if !table.synced {
                return Err(Status::unavailable(
                    "this gateway has not received the routing table yet; retry shortly",
                ));
            }
            match table.routes.get(namespace) {
                Some(route) => route.clone(),
                None => {
                    return Err(Status::not_found(format!(
                        "namespace {namespace:?} not found (routing table version {})",
                        table.version
                    )));
                }
            }
        };
        let members: Vec<String> = route.members.iter().map(|m| m.address.clone()).collect();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = clients.get(&route.shard)
            && *known == members
        {
            return Ok(client.clone());
        }
        let client = Arc::new(
            Client::with_options(members.clone(), ClientOptions::default()).map_err(|e| {
                Status::unavailable(format!(
                    "shard {} has no reachable members: {e}",
                    route.shard
                ))
            })?,
        );
        clients.insert(route.shard.clone(), (members, client.clone()));
        Ok(client)
    }

    fn count<T>(&self, result: Result<T, ClientError>) -> Result<Response<T>, Status> {
        match result {
            Ok(response) => {
                self.counters.forwarded.inc();
                Ok(Response::new(response))
            }
            Err(error) => {
                self.counters.failed.inc();
                Err(error.into())
            }
        }
    }
}

#[tonic::async_trait]
impl Kv for GatewayService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let client = self.client_for(&request.namespace)?;
        self.count(client.get_request(request).await)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let client = self.client_for(&request.namespace)?;
        self.count(
            client
                .put(&request.namespace, &request.key, &request.value)
                .await,
        )
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        let client = self.client_for(&request.namespace)?;
        self.count(client.delete(&request.namespace, &request.key).await)
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let request = request.into_inner();
        let client = self.client_for(&request.namespace)?;
        self.count(client.scan(request).await)
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        let client = self.client_for(&request.namespace)?;
        self.count(client.txn(request).await)
    }
}
