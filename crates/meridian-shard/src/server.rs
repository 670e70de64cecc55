//! Running a shard node: gRPC (data, admin, Raft transport, health, reflection)
//! and HTTP (health and metrics) until shutdown.

use crate::api::admin::AdminService;
use crate::api::kv::KvService;
use crate::config::NodeConfig;
use crate::error::ShardError;
use crate::node::ShardNode;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use meridian_proto::v1::admin_server::AdminServer;
use meridian_proto::v1::kv_server::KvServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Largest gRPC message a node accepts: a maximal value plus envelope.
fn max_message_bytes(config: &NodeConfig) -> usize {
    config.limits.max_value_bytes + config.limits.max_key_bytes + 64 * 1024
}

/// Starts the node and serves until `shutdown` resolves, then stops Raft cleanly.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ShardError> {
    let grpc_listener = bind(config.network.grpc_listen).await?;
    let http_listener = bind(config.network.http_listen).await?;
    let node = ShardNode::start(config.clone()).await?;
    tracing::info!(
        node = node.id(),
        shard = %config.node.shard,
        region = %config.node.region,
        grpc = %config.network.grpc_listen,
        http = %config.network.http_listen,
        "shard node started"
    );

    let registration = (!config.control.endpoints.is_empty())
        .then(|| tokio::spawn(register(config.clone(), node.clone())));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(meridian_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ShardError::Raft(format!("reflection service: {e}")))?;

    let max_message = max_message_bytes(&config);
    let kv = KvServer::new(KvService::new(node.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin = AdminServer::new(AdminService::new(node.clone()))
        .max_decoding_message_size(max_message.max(8 << 20))
        .max_encoding_message_size(max_message.max(8 << 20));

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(node.clone().watch_raft());
    let health_task = tokio::spawn(report_health(node.clone(), health_reporter, stop.clone()));

    let mut grpc_stop = stop.clone();
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(kv)
        .add_service(admin)
        .add_service(node.raft.transport_service())
        .serve_with_incoming_shutdown(incoming(grpc_listener), async move {
            let _ = grpc_stop.wait_for(|stopped| *stopped).await;
        });

    let app = Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node.clone());
    let mut http_stop = stop.clone();
    let http = axum::serve(http_listener, app).with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|stopped| *stopped).await;
    });

    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(async move { http.await });
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_sender.send(true);
    if let Err(err) = node.raft.raft.shutdown().await {
        tracing::warn!(error = %err, "raft did not shut down cleanly");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    watcher.abort();
    health_task.abort();
    if let Some(registration) = registration {
        registration.abort();
    }
    // Whatever is still only in the journal's buffers becomes durable now.
    node.raft.engine.sync_now()?;
    Ok(())
}

/// Announces this node to the control plane, retrying until it is accepted (the
/// control plane may still be starting, or not yet know the region).
async fn register(config: NodeConfig, node: Arc<ShardNode>) {
    let request = meridian_proto::v1::RegisterMemberRequest {
        shard: config.node.shard.clone(),
        region: config.node.region.clone(),
        node_id: config.node.id,
        address: config.network.advertised(),
    };
    let mut attempt = 0u32;
    loop {
        match meridian_client::Client::new(config.control.endpoints.clone()) {
            Ok(client) => match client.register_member(request.clone()).await {
                Ok(()) => {
                    tracing::info!(shard = %request.shard, "registered with the control plane");
                    node.mark_registered();
                    return;
                }
                Err(err) => {
                    attempt += 1;
                    if attempt % 10 == 1 {
                        tracing::warn!(error = %err, "control plane registration failed; retrying");
                    }
                }
            },
            Err(err) => {
                tracing::error!(error = %err, "control.endpoints is unusable; not registering");
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn bind(address: std::net::SocketAddr) -> Result<TcpListener, ShardError> {
    TcpListener::bind(address).await.map_err(|e| {
        ShardError::Storage(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address}: {e}"),
        ))
    })
}

/// Accepted gRPC connections with Nagle's algorithm off: small responses must not
/// wait for the peer's delayed ACK (that costs ~40 ms per request/response pair).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Keeps the gRPC health service in line with readiness.
async fn report_health(
    node: Arc<ShardNode>,
    reporter: tonic_health::server::HealthReporter,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let ready = node.is_ready();
        if last != Some(ready) {
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status("meridian.v1.Kv", status).await;
            last = Some(ready);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

async fn ready(State(node): State<Arc<ShardNode>>) -> impl IntoResponse {
    if node.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no known leader, not a member, or still catching up\n",
        )
    }
}

async fn metrics(State(node): State<Arc<ShardNode>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        node.metrics.encode(),
    )
}
