//! The gateway's `meridian.v1.Kv`: look up the namespace's route, forward the call
//! to that shard.

use crate::breaker::Breaker;
use crate::config::GatewayLimits;
use crate::rate_limit::RateLimiter;
use crate::routes::SharedRoutes;
use meridian_client::{Client, ClientError, ClientOptions};
use meridian_proto::v1 as pb;
use meridian_proto::v1::kv_server::Kv;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// A client per shard, rebuilt when the shard's members change.
type ShardClients = HashMap<String, (Vec<String>, Arc<Client>)>;

/// Routes `Kv` calls by namespace.
pub struct GatewayService {
    routes: SharedRoutes,
    clients: Mutex<ShardClients>,
    counters: Arc<crate::server::GatewayMetrics>,
    limits: GatewayLimits,
    limiter: Mutex<RateLimiter>,
    breakers: Mutex<HashMap<String, Breaker>>,
}

/// Metadata key naming the client for rate limiting.
const CLIENT_HEADER: &str = "meridian-client";

fn with_retry_after(mut status: Status, after: Duration) -> Status {
    if let Ok(value) = after.as_millis().max(1).to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

impl GatewayService {
    /// A service routing with `routes` under `limits`.
    pub fn new(
        routes: SharedRoutes,
        counters: Arc<crate::server::GatewayMetrics>,
        limits: GatewayLimits,
    ) -> Self {
        Self {
            routes,
            clients: Mutex::new(HashMap::new()),
            counters,
            limiter: Mutex::new(RateLimiter::new(limits.requests_per_second, limits.burst)),
            breakers: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// Applies the caller's rate limit.
    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let client = request
            .metadata()
            .get(CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.remote_addr().map(|a| a.ip().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let outcome = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acquire(&client, Instant::now());
        outcome.map_err(|after| {
            self.counters.rate_limited.inc();
            with_retry_after(
                Status::resource_exhausted(format!(
                    "rate limit: client {client:?} exceeded limits.requests_per_second = {} (burst {}); retry after {} ms",
                    self.limits.requests_per_second,
                    self.limits.burst,
                    after.as_millis().max(1)
                )),
                after,
            )
        })
    }

    /// Forwards one call for `namespace` through its shard's breaker.
    async fn forward<T, F, Fut>(&self, namespace: &str, call: F) -> Result<Response<T>, Status>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let (shard, client) = self.client_for(namespace)?;
        let allowed = self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(shard.clone())
            .or_insert_with(|| {
                Breaker::new(
                    self.limits.breaker_failures,
                    Duration::from_millis(self.limits.breaker_open_ms),
                )
            })
            .allow(Instant::now());
        if let Err(after) = allowed {
            self.counters.failed.inc();
            return Err(with_retry_after(
                Status::unavailable(format!(
                    "circuit breaker open for shard {shard}: it failed {} calls in a row; retry after {} ms",
                    self.limits.breaker_failures,
                    after.as_millis().max(1)
                )),
                after,
            ));
        }
        let result = call(client).await;
        // Only failures to reach or hear from the shard count against it; a
        // refusal (not found, invalid, ...) is a healthy answer.
        let shard_failed = matches!(
            result,
            Err(ClientError::Unavailable(_)) | Err(ClientError::OutcomeUnknown(_))
        );
        if let Some(breaker) = self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&shard)
        {
            breaker.record(!shard_failed, Instant::now());
        }
        self.count(result)
    }

    /// The shard owning `namespace` and its client, or NOT_FOUND.
    fn client_for(&self, namespace: &str) -> Result<(String, Arc<Client>), Status> {
        let table = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if !table.synced {
            return Err(Status::unavailable(
                "this gateway has not received the routing table yet; retry shortly",
            ));
        }
        let Some(route) = table.routes.get(namespace) else {
            return Err(Status::not_found(format!(
                "namespace {namespace:?} not found (routing table version {})",
                table.version
            )));
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // The common case allocates nothing: the cached client still matches the
        // shard's members.
        if let Some((known, client)) = clients.get(&route.shard)
            && known.iter().eq(route.members.iter().map(|m| &m.address))
        {
            return Ok((route.shard.clone(), client.clone()));
        }
        let members: Vec<String> = route.members.iter().map(|m| m.address.clone()).collect();
        let options = ClientOptions {
            retry_budget: Duration::from_millis(self.limits.forward_budget_ms),
            attempt_timeout: Duration::from_millis(self.limits.forward_budget_ms.clamp(500, 5_000)),
            ..ClientOptions::default()
        };
        let client = Arc::new(Client::with_options(members.clone(), options).map_err(|e| {
            Status::unavailable(format!(
                "shard {} has no reachable members: {e}",
                route.shard
            ))
        })?);
        clients.insert(route.shard.clone(), (members, client.clone()));
        Ok((route.shard.clone(), client))
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
        self.admit(&request)?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| async move {
            client.get_request(request).await
        })
        .await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| async move {
            client
                .put(&request.namespace, &request.key, &request.value)
                .await
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| async move {
            client.delete(&request.namespace, &request.key).await
        })
        .await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(
            &namespace,
            |client| async move { client.scan(request).await },
        )
        .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(
            &namespace,
            |client| async move { client.txn(request).await },
        )
        .await
    }
}
