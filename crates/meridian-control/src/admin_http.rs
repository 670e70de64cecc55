//! The control plane's JSON admin API over HTTP, described by the OpenAPI
//! document it serves at `/openapi.json`. Every route calls the same logic as the
//! gRPC service, so the two cannot disagree.

use crate::service::ControlService;
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use meridian_access::{Caller, Permission, Target};
use meridian_proto::v1 as pb;
use meridian_proto::v1::control_server::Control;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The web console: one read-only page that draws the JSON routes below
/// (served from the binary; no separate build step).
pub const CONSOLE: &str = include_str!("console.html");

/// Routes of the admin API, to merge into the member's HTTP router.
pub fn router(service: Arc<ControlService>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/regions", get(regions))
        .route("/v1/shards", get(shards))
        .route("/v1/namespaces", get(namespaces).post(create_namespace))
        .route("/v1/namespaces/{name}", delete(delete_namespace))
        .route("/v1/routes", get(routes))
        .route("/v1/audit", get(audit))
        .route("/v1/failovers", get(failovers))
        .route("/v1/jobs", get(jobs))
        .route("/v1/members", get(members))
        .route("/v1/replication", get(replication))
        .route("/console", get(console))
        .with_state(service)
}

/// The caller of an HTTP request: the identity in the client certificate of
/// its connection, or its bearer token. Handlers hand it to the gRPC service
/// as a request extension, which a remote caller cannot set.
struct HttpCaller(Caller);

impl<S: Send + Sync> FromRequestParts<S> for HttpCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let caller = match parts
            .extensions
            .get::<ConnectInfo<meridian_net::accept::Peer>>()
        {
            Some(ConnectInfo(peer)) => meridian_access::caller::of_http(peer, &parts.headers),
            None => Caller::Unidentified("the connection's peer is unknown".into()),
        };
        Ok(HttpCaller(caller))
    }
}

/// A gRPC request made on behalf of `caller`.
fn on_behalf<T>(caller: Caller, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(caller);
    request
}

/// A read of the replicated state, answered on any member: the leader
/// answers itself; a follower first decides with its own copy of the access
/// policy that the caller may view the cluster, then asks the leader (as
/// itself, a control-plane member) so the answer is the leader's, current
/// one. The console opened on any member works this way.
async fn read<Req, Resp, LocalFut, RemoteFut>(
    service: &ControlService,
    caller: Caller,
    api: &str,
    request: Req,
    local: impl FnOnce(tonic::Request<Req>) -> LocalFut,
    remote: impl FnOnce(pb::control_client::ControlClient<tonic::transport::Channel>, Req) -> RemoteFut,
) -> Result<Resp, tonic::Status>
where
    Req: Clone,
    LocalFut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    RemoteFut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let status = match local(on_behalf(caller.clone(), request.clone())).await {
        Ok(response) => return Ok(response.into_inner()),
        Err(status) => status,
    };
    let Some(leader) = status
        .metadata()
        .get(meridian_proto::reason::LEADER_ADDRESS_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
    else {
        return Err(status);
    };
    service.authorize_here(
        &on_behalf(caller, ()),
        api,
        Permission::View,
        Target::Cluster,
    )?;
    let dialer = &service.node().dialer;
    let endpoint = dialer.endpoint(&leader).map_err(|e| {
        tonic::Status::unavailable(format!("cannot reach the leader at {leader}: {e}"))
    })?;
    let client = pb::control_client::ControlClient::new(dialer.lazy(&endpoint));
    match tokio::time::timeout(std::time::Duration::from_secs(5), remote(client, request)).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::unavailable(format!(
            "the leader at {leader} did not answer within 5 s"
        ))),
    }
}

/// A gRPC status as an HTTP error with a JSON body.
fn error(status: tonic::Status) -> Response {
    use tonic::Code;
    let http = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let leader = status
        .metadata()
        .get("meridian-leader-address")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        http,
        Json(json!({ "error": status.message(), "code": format!("{:?}", status.code()), "leader_grpc_address": leader })),
    )
        .into_response()
}

fn member(m: &pb::Member) -> Value {
    json!({ "node_id": m.node_id, "address": m.address })
}

fn placement(p: &pb::Placement) -> Value {
    let mode = match pb::NamespaceMode::try_from(p.mode) {
        Ok(pb::NamespaceMode::RegionLocked) => "region-locked",
        Ok(pb::NamespaceMode::ActivePassive) => "active-passive",
        Ok(pb::NamespaceMode::ActiveActive) => "active-active",
        Err(_) => "unknown",
    };
    json!({
        "name": p.name,
        "home_region": p.home_region,
        "mode": mode,
        "sync": p.sync,
        "standby_regions": p.standby_regions,
        "allowed_jurisdictions": p.allowed_jurisdictions,
        "shard": p.shard,
        "epoch": p.epoch,
    })
}

/// Query of `GET /v1/failovers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoversQuery {
    #[serde(default)]
    namespace: Option<String>,
}

async fn failovers(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
    Query(query): Query<FailoversQuery>,
) -> Response {
    let request = pb::ListFailoversRequest {
        namespace: query.namespace.unwrap_or_default(),
    };
    let answer = read(
        &service,
        caller,
        "GET /v1/failovers",
        request,
        |r| service.list_failovers(r),
        |mut c, r| async move { c.list_failovers(r).await },
    )
    .await;
    match answer {
        Ok(response) => Json(json!({
            "failovers": response.failovers.iter().map(|f| json!({
                "id": f.id,
                "namespace": f.namespace,
                "from_region": f.from_region,
                "from_shard": f.from_shard,
                "to_region": f.to_region,
                "to_shard": f.to_shard,
                "epoch": f.epoch,
                "cause": f.cause,
                "detected_at_ms": f.detected_at_ms,
                "promoted_at_ms": f.promoted_at_ms,
                "primary_seq": f.primary_seq,
                "promoted_seq": f.promoted_seq,
                // The loss window: writes the old primary may have
                // acknowledged after `reported_at_ms` and until
                // `writes_until_ms` (equal for a drained move: none).
                "loss_window": { "reported_at_ms": f.reported_at_ms, "writes_until_ms": f.writes_until_ms },
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(status) => error(status),
    }
}

async fn jobs(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    let answer = read(
        &service,
        caller,
        "GET /v1/jobs",
        pb::ListJobsRequest {},
        |r| service.list_jobs(r),
        |mut c, r| async move { c.list_jobs(r).await },
    )
    .await;
    match answer {
        Ok(response) => Json(json!({
            "jobs": response.jobs.iter().map(|j| json!({
                "id": j.id,
                "kind": j.kind,
                "state": match pb::JobState::try_from(j.state) {
                    Ok(pb::JobState::Running) => "running",
                    Ok(pb::JobState::Succeeded) => "succeeded",
                    Ok(pb::JobState::Failed) => "failed",
                    Ok(pb::JobState::Cancelled) => "cancelled",
                    Err(_) => "unknown",
                },
                "namespace": j.namespace,
                "step": j.step,
                "done_units": j.done_units,
                "total_units": j.total_units,
                "units": j.units,
                "message": j.message,
                "created_unix_ms": j.created_unix_ms,
                "updated_unix_ms": j.updated_unix_ms,
                "attempts": j.attempts,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(status) => error(status),
    }
}

/// Authorizes a read of the cluster's state on this member (any member
/// answers the live views: they ask the shards themselves).
fn may_view(service: &ControlService, caller: Caller, api: &str) -> Result<(), tonic::Status> {
    service
        .authorize_here(
            &on_behalf(caller, ()),
            api,
            Permission::View,
            Target::Cluster,
        )
        .map(|_| ())
}

async fn members(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    if let Err(refused) = may_view(&service, caller, "GET /v1/members") {
        return error(refused);
    }
    Json(crate::cluster_view::members(service.node()).await).into_response()
}

async fn replication(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    if let Err(refused) = may_view(&service, caller, "GET /v1/replication") {
        return error(refused);
    }
    Json(crate::cluster_view::replication(service.node()).await).into_response()
}

/// The console page. Its data comes from the routes above, each authorized
/// on its own; the page itself is asked for `view` too, so a caller that may
/// not see the cluster is told so at once.
async fn console(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    if let Err(refused) = may_view(&service, caller, "GET /console") {
        return error(refused);
    }
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            // Only its own script and same-origin calls: the page loads
            // nothing from elsewhere.
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
            ),
            ("cache-control", "no-store"),
        ],
        CONSOLE,
    )
        .into_response()
}

async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], OPENAPI)
}

async fn regions(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    let answer = read(
        &service,
        caller,
        "GET /v1/regions",
        pb::ListRegionsRequest {},
        |r| service.list_regions(r),
        |mut c, r| async move { c.list_regions(r).await },
    )
    .await;
    match answer {
        Ok(response) => Json(json!({
            "regions": response.regions.iter().map(|r| json!({
                "name": r.name, "jurisdictions": r.jurisdictions, "latitude": r.latitude, "longitude": r.longitude,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(status) => error(status),
    }
}

async fn shards(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    let answer = read(
        &service,
        caller,
        "GET /v1/shards",
        pb::ListShardsRequest {},
        |r| service.list_shards(r),
        |mut c, r| async move { c.list_shards(r).await },
    )
    .await;
    match answer {
        Ok(response) => Json(json!({
            "shards": response.shards.iter().map(|s| json!({
                "id": s.id, "region": s.region, "members": s.members.iter().map(member).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(status) => error(status),
    }
}

async fn namespaces(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    let answer = read(
        &service,
        caller,
        "GET /v1/namespaces",
        pb::ListPlacementsRequest {},
        |r| service.list_placements(r),
        |mut c, r| async move { c.list_placements(r).await },
    )
    .await;
    match answer {
        Ok(response) => Json(json!({
            "routing_version": response.routing_version,
            "namespaces": response.placements.iter().map(placement).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(status) => error(status),
    }
}

/// Body of `POST /v1/namespaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateNamespace {
    name: String,
    home_region: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    sync: bool,
    #[serde(default)]
    standby_regions: Vec<String>,
    #[serde(default)]
    allowed_jurisdictions: Vec<String>,
}

async fn create_namespace(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
    Json(body): Json<CreateNamespace>,
) -> Response {
    let mode = match body.mode.as_deref().unwrap_or("region-locked") {
        "region-locked" => pb::NamespaceMode::RegionLocked,
        "active-passive" => pb::NamespaceMode::ActivePassive,
        "active-active" => pb::NamespaceMode::ActiveActive,
        other => {
            return error(tonic::Status::invalid_argument(format!(
                "unknown mode {other:?}: use region-locked, active-passive or active-active"
            )));
        }
    };
    let request = on_behalf(
        caller,
        pb::PlaceNamespaceRequest {
            placement: Some(pb::Placement {
                name: body.name,
                home_region: body.home_region,
                mode: mode as i32,
                sync: body.sync,
                standby_regions: body.standby_regions,
                allowed_jurisdictions: body.allowed_jurisdictions,
                ..Default::default()
            }),
        },
    );
    match service.place_namespace(request).await {
        Ok(response) => {
            let response = response.into_inner();
            (
                StatusCode::CREATED,
                Json(json!({
                    "routing_version": response.routing_version,
                    "namespace": response.placement.as_ref().map(placement),
                })),
            )
                .into_response()
        }
        Err(status) => error(status),
    }
}

async fn delete_namespace(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
    Path(name): Path<String>,
) -> Response {
    let request = on_behalf(caller, pb::RemoveNamespaceRequest { name });
    match service.remove_namespace(request).await {
        Ok(response) => Json(json!({ "routing_version": response.into_inner().routing_version }))
            .into_response(),
        Err(status) => error(status),
    }
}

async fn routes(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
) -> Response {
    let request = on_behalf(caller, ());
    if let Err(status) = service.authorize(
        &request,
        "GET /v1/routes",
        Permission::View,
        Target::Cluster,
    ) {
        return error(status);
    }
    if let Err(status) = service.barrier().await {
        return error(status);
    }
    let (version, table) = service.routes();
    Json(json!({
        "version": version,
        "routes": table.values().map(|r| json!({
            "namespace": r.namespace, "shard": r.shard, "region": r.region, "epoch": r.epoch,
            "members": r.members.iter().map(member).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: u32,
}

async fn audit(
    State(service): State<Arc<ControlService>>,
    HttpCaller(caller): HttpCaller,
    Query(query): Query<AuditQuery>,
) -> Response {
    let request = on_behalf(
        caller,
        pb::AuditLogRequest {
            after: query.after,
            limit: query.limit,
        },
    );
    match service.audit_log(request).await {
        Ok(response) => {
            let response = response.into_inner();
            Json(json!({
                "records": response.records.iter().map(|r| json!({
                    "sequence": r.sequence, "at_unix_ms": r.at_unix_ms, "actor": r.actor, "action": r.action, "outcome": r.outcome,
                    "prev_hash": hex::encode(&r.prev_hash), "hash": hex::encode(&r.hash),
                })).collect::<Vec<_>>(),
                "anchor": hex::encode(&response.anchor),
                "last_sequence": response.last_sequence,
            }))
        }
        .into_response(),
        Err(status) => error(status),
    }
}
