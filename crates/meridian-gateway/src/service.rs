//! The gateway's `meridian.v1.Kv`: look up the namespace's route, forward the call
//! to that shard.

use crate::breaker::Breaker;
use crate::config::GatewayLimits;
use crate::rate_limit::RateLimiter;
use crate::replicas::ReplicaLatency;
use crate::routes::SharedRoutes;
use meridian_access::{Caller, Permission, Target};
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
    dialer: meridian_net::Dialer,
    limiter: Mutex<RateLimiter>,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// The control plane, asked on a routing-table miss.
    control: Client,
    /// Namespaces the control plane recently confirmed do not exist, so repeated
    /// calls for them are answered here instead of by the control-plane leader.
    misses: Mutex<HashMap<String, Instant>>,
    /// Measured round trips to shard members (eventual reads go to the nearest).
    replicas: Arc<ReplicaLatency>,
    /// One client per replica address, for reads sent to one member.
    replica_clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Calls refused here, reported to the control plane's audit log.
    refusals: Arc<meridian_client::refusals::RefusalReporter>,
    /// This gateway's region: active-active calls go to its own peer.
    region: String,
}

/// Members an eventual read tries, nearest first, before the primary's path.
const NEAREST_TRIES: usize = 3;

/// How long a confirmed miss is answered locally.
const MISS_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered misses (random names must not grow memory).
const MAX_MISSES: usize = 10_000;

/// How far from the primary a read may be served: `None` for the primary's
/// leader only; `Some(false)` any replica; `Some(true)` a shard leader within
/// a staleness bound.
fn nearest_kind(read: Option<&pb::ReadOptions>) -> Option<bool> {
    match read.map(|r| r.consistency()) {
        Some(pb::Consistency::Eventual) => Some(false),
        Some(pb::Consistency::Bounded) => Some(true),
        _ => None,
    }
}

/// Attaches `reason` (which carries `retry-after-ms`) to `status`.
fn with_reason(mut status: Status, reason: meridian_client::Reason) -> Status {
    reason.attach(&mut status);
    status
}

fn retry_after_ms(after: Duration) -> u64 {
    u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl GatewayService {
    /// A service routing with `routes` under `limits`.
    pub fn new(
        routes: SharedRoutes,
        counters: Arc<crate::server::GatewayMetrics>,
        limits: GatewayLimits,
        dialer: meridian_net::Dialer,
        control: Client,
        replicas: Arc<ReplicaLatency>,
        refusals: Arc<meridian_client::refusals::RefusalReporter>,
    ) -> Self {
        Self {
            refusals,
            replicas,
            replica_clients: Mutex::new(HashMap::new()),
            control,
            misses: Mutex::new(HashMap::new()),
            dialer,
            routes,
            clients: Mutex::new(HashMap::new()),
            counters,
            limiter: Mutex::new(RateLimiter::new(limits.requests_per_second, limits.burst)),
            breakers: Mutex::new(HashMap::new()),
            limits,
            region: String::new(),
        }
    }

    /// The gateway's region (active-active namespaces are served by the
    /// peer there while it is healthy).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// The shard that serves `route`'s calls from this gateway: the
    /// primary's; for an active-active namespace, the peer in this region
    /// while any of its members answers probes (or none was probed yet),
    /// else the nearest healthy peer.
    fn serving_shard(&self, route: &pb::Route, shards: &HashMap<String, Vec<String>>) -> String {
        if !route.active_active {
            return route.shard.clone();
        }
        let copies: Vec<(&str, &str)> =
            std::iter::once((route.region.as_str(), route.shard.as_str()))
                .chain(
                    route
                        .standbys
                        .iter()
                        .map(|s| (s.region.as_str(), s.shard.as_str())),
                )
                .collect();
        let members = |shard: &str| shards.get(shard).map(Vec::as_slice).unwrap_or_default();
        let local = copies.iter().find(|(region, _)| *region == self.region);
        // The common case: this region's peer answers (no allocation).
        if let Some((_, shard)) = local
            && self.replicas.any_healthy_or_unknown(members(shard))
        {
            return shard.to_string();
        }
        let all: Vec<String> = copies
            .iter()
            .flat_map(|(_, shard)| members(shard).iter().cloned())
            .collect();
        if let Some(nearest) = self.replicas.nearest(&all)
            && let Some((_, shard)) = copies
                .iter()
                .find(|(_, shard)| members(shard).iter().any(|m| m == nearest))
        {
            return shard.to_string();
        }
        local.map_or(route.shard.clone(), |(_, shard)| shard.to_string())
    }

    /// How the gateway's shard clients dial and retry: its dialer and
    /// connection count, with the given attempt timeout and retry budget.
    fn client_options(&self, attempt_timeout: Duration, retry_budget: Duration) -> ClientOptions {
        ClientOptions {
            attempt_timeout,
            retry_budget,
            dialer: self.dialer.clone(),
            connections_per_member: self.limits.connections_per_member,
            ..ClientOptions::default()
        }
    }

    /// Decides whether the caller may `need` on `namespace` (the access
    /// policy from the routing push; no round trip), then applies its rate
    /// limit. Callers are told apart by their authenticated identity (or
    /// token), never by something they state; in plain text, where nobody is
    /// authenticated, by their address.
    fn admit<T>(
        &self,
        request: &Request<T>,
        api: &str,
        namespace: &str,
        needs: &[Permission],
    ) -> Result<(), Status> {
        let caller = meridian_access::caller::of_grpc(request);
        let policy = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .access
            .clone();
        let now = meridian_access::now_unix_ms();
        let decided = needs.iter().try_for_each(|need| {
            meridian_access::decide(
                policy.as_deref(),
                &caller,
                *need,
                Target::Namespace(namespace),
                now,
            )
        });
        if let Err(refusal) = decided {
            self.counters.refused.inc();
            tracing::info!(caller = %caller.name(), namespace, %refusal, "call refused");
            self.refusals.refused(
                caller.name(),
                api,
                format!("namespace {namespace}"),
                refusal.to_string(),
            );
            return Err(meridian_access::caller::status(&refusal));
        }
        let client = match caller {
            Caller::Plain => request
                .extensions()
                .get::<meridian_net::accept::Peer>()
                .map(|p| p.address.ip().to_string())
                .unwrap_or_else(|| "unknown".into()),
            known => known.name(),
        };
        let outcome = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acquire(&client, Instant::now());
        outcome.map_err(|after| {
            self.counters.rate_limited.inc();
            with_reason(
                Status::resource_exhausted(format!(
                    "rate limit: {client} exceeded limits.requests_per_second = {} (burst {}); retry after {} ms",
                    self.limits.requests_per_second,
                    self.limits.burst,
                    after.as_millis().max(1)
                )),
                meridian_client::Reason::RateLimited {
                    retry_after_ms: retry_after_ms(after),
                },
            )
        })
    }

    /// Forwards one call for `namespace` through its shard's breaker.
    async fn forward<T, F, Fut>(&self, namespace: &str, call: F) -> Result<Response<T>, Status>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let first = self.forward_once(namespace, &call).await;
        // Active-active: a peer that cannot take the call (its clock is
        // skewed, it has not caught up with the session, or it cannot be
        // reached) leaves it to the other peers, nearest first.
        // (Never a write whose outcome is unknown: it may have been applied.)
        if let Err(status) = &first
            && meridian_client::Reason::of(status).is_none_or(|reason| reason.nothing_done())
            && (status.code() == tonic::Code::Unavailable
                || matches!(
                    meridian_client::Reason::of(status),
                    Some(
                        meridian_client::Reason::ClockSkew { .. }
                            | meridian_client::Reason::SessionBehind { .. }
                    )
                ))
            && let Some(answer) = self.forward_to_other_peers(namespace, &call).await
        {
            return answer;
        }
        match &first {
            // The shard says it is no longer (or may no longer be) the
            // namespace's primary: a failover moved it and this gateway's
            // push has not arrived yet. Ask the control plane for the current
            // route and retry once there.
            Err(status)
                if meridian_client::Reason::of(status)
                    .is_some_and(|reason| reason.route_may_be_stale()) =>
            {
                if let Ok(response) = self.control.get_route(namespace).await
                    && let Some(route) = response.route
                {
                    self.routes
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .learn(route, response.version);
                    return self.forward_once(namespace, &call).await;
                }
                first
            }
            _ => first,
        }
    }

    /// For an active-active namespace: the call sent to each peer other than
    /// the one this gateway serves it from, nearest first, until one
    /// answers; `None` for other namespaces or when none could.
    async fn forward_to_other_peers<T, F, Fut>(
        &self,
        namespace: &str,
        call: &F,
    ) -> Option<Result<Response<T>, Status>>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut others: Vec<(f64, String, Vec<String>)> = {
            let table = self.routes.read().unwrap_or_else(|e| e.into_inner());
            let route = table.routes.get(namespace)?;
            if !route.active_active {
                return None;
            }
            let tried = self.serving_shard(route, &table.shards);
            std::iter::once(&route.shard)
                .chain(route.standbys.iter().map(|s| &s.shard))
                .filter(|shard| **shard != tried)
                .filter_map(|shard| {
                    let members = table.shards.get(shard)?.clone();
                    let nearest = members
                        .iter()
                        .filter_map(|m| self.replicas.rtt_ms(m))
                        .fold(f64::INFINITY, f64::min);
                    Some((nearest, shard.clone(), members))
                })
                .collect()
        };
        others.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut last = None;
        for (_, shard, members) in others {
            let Some(client) = self.shard_client(&shard, members) else {
                continue;
            };
            match call(client).await {
                Ok(response) => {
                    self.counters.forwarded.inc();
                    return Some(Ok(Response::new(response)));
                }
                Err(err) => last = Some(err),
            }
        }
        last.map(|err| self.count(Err(err)))
    }

    /// One forwarding attempt through the shard's breaker.
    async fn forward_once<T, F, Fut>(
        &self,
        namespace: &str,
        call: &F,
    ) -> Result<Response<T>, Status>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let (shard, client) = self.client_for(namespace).await?;
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
            return Err(with_reason(
                Status::unavailable(format!(
                    "circuit breaker open for shard {shard}: it failed {} calls in a row; retry after {} ms",
                    self.limits.breaker_failures,
                    after.as_millis().max(1)
                )),
                meridian_client::Reason::BreakerOpen {
                    retry_after_ms: retry_after_ms(after),
                },
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

    /// Serves an `eventual` or `bounded` read from the nearest healthy copy of
    /// `namespace`: any member of its primary shard or of a standby shard, by
    /// measured round trip. Eventual reads go to that member; bounded reads to
    /// the leader of its shard (a standby serves them only while it was current
    /// within the bound). `None` means "use the primary as usual": nothing
    /// measured yet, or the chosen copy could not or would not answer.
    async fn read_nearest<T, F, Fut>(
        &self,
        namespace: &str,
        bounded: bool,
        call: &F,
    ) -> Option<Result<Response<T>, Status>>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        // A member that went away since its last probe is marked unhealthy
        // and the next nearest is tried, a few at most.
        for _ in 0..NEAREST_TRIES {
            let (address, shard, members) = {
                let table = self.routes.read().unwrap_or_else(|e| e.into_inner());
                let route = table.routes.get(namespace)?;
                let copies: Vec<(&String, &Vec<String>)> = std::iter::once(&route.shard)
                    .chain(route.standbys.iter().map(|s| &s.shard))
                    .filter_map(|shard| table.shards.get(shard).map(|m| (shard, m)))
                    .collect();
                let all: Vec<String> = copies.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
                let address = self.replicas.nearest(&all)?.to_string();
                let (shard, members) = copies.into_iter().find(|(_, m)| m.contains(&address))?;
                (address, shard.clone(), members.clone())
            };
            let client = if bounded {
                self.shard_client(&shard, members)?
            } else {
                self.replica_client(&address)?
            };
            match call(client).await {
                Ok(response) => {
                    self.counters.replica_reads.inc();
                    return Some(self.count(Ok(response)));
                }
                // A bounded read went to the shard's leader, whichever
                // member that is: no other member to try.
                Err(ClientError::Unavailable(_)) if bounded => return None,
                Err(ClientError::Unavailable(_)) => self.replicas.record(&address, None),
                // A standby that is too stale (or a copy mid-move) declines:
                // the primary answers instead.
                Err(ClientError::FailedPrecondition(_)) => return None,
                // NOT_FOUND, INVALID_ARGUMENT...: the copy answered.
                Err(other) => return Some(self.count(Err(other))),
            }
        }
        None
    }

    /// A read: from the nearest copy when its consistency allows, else (or
    /// when that copy declines) through the primary.
    async fn read<T, F, Fut>(
        &self,
        namespace: &str,
        read: Option<&pb::ReadOptions>,
        call: F,
    ) -> Result<Response<T>, Status>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        if let Some(bounded) = nearest_kind(read)
            && let Some(answer) = self.read_nearest(namespace, bounded, &call).await
        {
            return answer;
        }
        self.forward(namespace, call).await
    }

    /// A leader-following client for `shard` (cached while its members stay).
    fn shard_client(&self, shard: &str, members: Vec<String>) -> Option<Arc<Client>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = clients.get(shard)
            && *known == members
        {
            return Some(client.clone());
        }
        let options = self.client_options(
            Duration::from_millis(self.limits.forward_budget_ms.clamp(500, 1_000)),
            Duration::from_millis(self.limits.forward_budget_ms.min(1_000)),
        );
        let client = Arc::new(Client::with_options(members.clone(), options).ok()?);
        clients.insert(shard.to_string(), (members, client.clone()));
        Some(client)
    }

    fn replica_client(&self, address: &str) -> Option<Arc<Client>> {
        let mut clients = self
            .replica_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Some(client.clone());
        }
        let options = self.client_options(Duration::from_secs(1), Duration::from_secs(1));
        let client = Arc::new(Client::with_options([address.to_string()], options).ok()?);
        clients.insert(address.to_string(), client.clone());
        Some(client)
    }

    /// The shard owning `namespace` and its client, or NOT_FOUND. The pushed
    /// table is the fast path; a miss asks the control plane, because the push
    /// reaches each gateway a moment after a change commits and a client that
    /// just created a namespace must find it.
    async fn client_for(&self, namespace: &str) -> Result<(String, Arc<Client>), Status> {
        if let Some(found) = self.cached_client(namespace)? {
            return Ok(found);
        }
        self.look_up(namespace).await?;
        self.cached_client(namespace)?
            .ok_or_else(|| self.not_found(namespace))
    }

    fn not_found(&self, namespace: &str) -> Status {
        let version = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version;
        Status::not_found(format!(
            "namespace {namespace:?} not found (routing table version {version})"
        ))
    }

    /// Asks the control plane for `namespace`'s route and adds it to the table.
    async fn look_up(&self, namespace: &str) -> Result<(), Status> {
        let now = Instant::now();
        {
            let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
            if misses
                .get(namespace)
                .is_some_and(|at| now.duration_since(*at) < MISS_TTL)
            {
                return Err(self.not_found(namespace));
            }
        }
        let response = self.control.get_route(namespace).await.map_err(|e| {
            Status::unavailable(format!(
                "namespace {namespace:?} is not in this gateway's routing table and the control plane could not be asked: {e}"
            ))
        })?;
        match response.route {
            // A table already past the answer's version and still without the
            // namespace has seen it removed since; `learn` keeps it out.
            Some(route) => self
                .routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .learn(route, response.version),
            None => {
                let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
                if misses.len() >= MAX_MISSES {
                    misses.retain(|_, at| now.duration_since(*at) < MISS_TTL);
                    if misses.len() >= MAX_MISSES {
                        misses.clear();
                    }
                }
                misses.insert(namespace.to_string(), now);
            }
        }
        Ok(())
    }

    /// The shard and client for `namespace` from the pushed table, if there.
    fn cached_client(&self, namespace: &str) -> Result<Option<(String, Arc<Client>)>, Status> {
        let table = self.routes.read().unwrap_or_else(|e| e.into_inner());
        if !table.synced {
            return Err(Status::unavailable(
                "this gateway has not received the routing table yet; retry shortly",
            ));
        }
        let Some(route) = table.routes.get(namespace) else {
            return Ok(None);
        };
        let shard = self.serving_shard(route, &table.shards);
        let members = table
            .shards
            .get(&shard)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // The common case allocates nothing: the cached client still matches the
        // shard's members.
        if let Some((known, client)) = clients.get(&shard)
            && known.as_slice() == members
        {
            return Ok(Some((shard, client.clone())));
        }
        let members = members.to_vec();
        let options = self.client_options(
            Duration::from_millis(self.limits.forward_budget_ms.clamp(500, 5_000)),
            Duration::from_millis(self.limits.forward_budget_ms),
        );
        let client = Arc::new(Client::with_options(members.clone(), options).map_err(|e| {
            Status::unavailable(format!("shard {shard} has no reachable members: {e}"))
        })?);
        clients.insert(shard.clone(), (members, client.clone()));
        Ok(Some((shard, client)))
    }

    async fn set_update(
        &self,
        request: Request<pb::SetUpdateRequest>,
        add: bool,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        let api = if add { "Kv.SetAdd" } else { "Kv.SetRemove" };
        self.admit(
            &request,
            api,
            &request.get_ref().namespace,
            &[Permission::Write],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| {
            let request = request.clone();
            async move { client.set_update(request, add).await }
        })
        .await
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
        self.admit(
            &request,
            "Kv.Get",
            &request.get_ref().namespace,
            &[Permission::Read],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        let read = request.read.clone();
        self.read(&namespace, read.as_ref(), |client| {
            let request = request.clone();
            async move { client.get_request(request).await }
        })
        .await
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.admit(
            &request,
            "Kv.Put",
            &request.get_ref().namespace,
            &[Permission::Write],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| {
            let request = request.clone();
            async move {
                client
                    .put(&request.namespace, &request.key, &request.value)
                    .await
            }
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.admit(
            &request,
            "Kv.Delete",
            &request.get_ref().namespace,
            &[Permission::Write],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| {
            let request = request.clone();
            async move { client.delete(&request.namespace, &request.key).await }
        })
        .await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.admit(
            &request,
            "Kv.Scan",
            &request.get_ref().namespace,
            &[Permission::Read],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        let read = request.read.clone();
        self.read(&namespace, read.as_ref(), |client| {
            let request = request.clone();
            async move { client.scan(request).await }
        })
        .await
    }

    async fn increment(
        &self,
        request: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        self.admit(
            &request,
            "Kv.Increment",
            &request.get_ref().namespace,
            &[Permission::Write],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| {
            let request = request.clone();
            async move {
                client
                    .increment(&request.namespace, &request.key, request.delta)
                    .await
            }
        })
        .await
    }

    async fn get_counter(
        &self,
        request: Request<pb::GetCounterRequest>,
    ) -> Result<Response<pb::GetCounterResponse>, Status> {
        self.admit(
            &request,
            "Kv.GetCounter",
            &request.get_ref().namespace,
            &[Permission::Read],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        let read = request.read.clone();
        self.read(&namespace, read.as_ref(), |client| {
            let request = request.clone();
            async move { client.get_counter(request).await }
        })
        .await
    }

    async fn set_add(
        &self,
        request: Request<pb::SetUpdateRequest>,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        self.set_update(request, true).await
    }

    async fn set_remove(
        &self,
        request: Request<pb::SetUpdateRequest>,
    ) -> Result<Response<pb::SetUpdateResponse>, Status> {
        self.set_update(request, false).await
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        self.admit(
            &request,
            "Kv.SetMembers",
            &request.get_ref().namespace,
            &[Permission::Read],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        let read = request.read.clone();
        self.read(&namespace, read.as_ref(), |client| {
            let request = request.clone();
            async move { client.set_members(request).await }
        })
        .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        // A transaction reads (its comparisons) and writes.
        self.admit(
            &request,
            "Kv.Txn",
            &request.get_ref().namespace,
            &[Permission::Read, Permission::Write],
        )?;
        let request = request.into_inner();
        let namespace = request.namespace.clone();
        self.forward(&namespace, |client| {
            let request = request.clone();
            async move { client.txn(request).await }
        })
        .await
    }
}
