//! Running a shard node: gRPC (data, admin, Raft transport, health, reflection)
//! and HTTP (health and metrics) until shutdown.

use crate::api::admin::AdminService;
use crate::api::kv::KvService;
use crate::api::replication::ReplicationService;
use crate::config::NodeConfig;
use crate::error::ShardError;
use crate::node::ShardNode;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use meridian_net::serve;
use meridian_proto::v1::admin_server::AdminServer;
use meridian_proto::v1::kv_server::KvServer;
use meridian_proto::v1::replication_server::ReplicationServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Largest gRPC message a node accepts: a maximal value plus envelope.
fn max_message_bytes(config: &NodeConfig) -> usize {
    config.limits.max_value_bytes + config.limits.max_key_bytes + 64 * 1024
}

/// Starts the node and serves until `shutdown` resolves, then stops Raft cleanly.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ShardError> {
    if config.clock.offset_ms != 0 {
        tracing::warn!(
            offset_ms = config.clock.offset_ms,
            "[clock] offset_ms shifts this node's wall clock (fault injection)"
        );
        crate::lease::inject_clock_offset(config.clock.offset_ms);
    }
    let transport = config.network.transport()?;
    let grpc_listener = serve::bind(config.network.grpc_listen).await?;
    let http_listener = serve::bind(config.network.http_listen).await?;
    let node = ShardNode::start(config.clone(), transport.dialer.clone()).await?;
    tracing::info!(
        node = node.id(),
        shard = %config.node.shard,
        region = %config.node.region,
        grpc = %config.network.grpc_listen,
        http = %config.network.http_listen,
        tls = transport.tls.is_some(),
        "shard node started"
    );
    if transport.tls.is_none() {
        tracing::warn!(
            "no [network.tls]: callers are not authenticated, so roles, grants and revocations are not enforced"
        );
    }

    // Every background loop is a named worker of this registry (listed by
    // `meridian workers`, stopped and awaited together at shutdown).
    let workers = node.raft.workers.clone();
    if !config.control.endpoints.is_empty() {
        workers.spawn(
            "registration",
            register(config.clone(), node.clone(), transport.dialer.clone()),
        );
        // Follow the routing table (where each namespace's standbys are) and
        // ship active-passive namespaces to them.
        let table: meridian_client::routes::SharedRoutes = Arc::default();
        node.access.follow(table.clone(), transport.dialer.clone());
        if let Some(gate) = &node.raft.member_gate {
            // Members registered for this shard count even before this
            // node's Raft membership lists them (a leader added while this
            // node lagged behind).
            let (routes, shard) = (table.clone(), config.node.shard.clone());
            gate.also_members(Arc::new(move || {
                routes
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .shards
                    .get(&shard)
                    .cloned()
                    .unwrap_or_default()
            }));
        }
        let routes_changed = Arc::new(tokio::sync::Notify::new());
        let notify = routes_changed.clone();
        workers.spawn(
            "routes-follower",
            meridian_client::routes::follow(
                config.control.endpoints.clone(),
                transport.dialer.clone(),
                format!("{}-{}", config.node.shard, config.node.id),
                table.clone(),
                move |_| notify.notify_one(),
            ),
        );
        // Deleted keys of active-active namespaces, dropped once every
        // peer has merged past them.
        workers.spawn(
            "tombstone-collector",
            crate::tombstones::run(node.clone(), table.clone()),
        );
        workers.spawn(
            "replicator",
            meridian_replication::shipper::run(
                node.clone(),
                table,
                routes_changed,
                transport.dialer.clone(),
            ),
        );
        // Refused calls go to the control plane's audit log.
        if let Err(err) = node.access.refusals().start(
            config.control.endpoints.clone(),
            transport.dialer.clone(),
            &workers,
        ) {
            tracing::error!(error = %err, "cannot report refused calls");
        }
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection, reflection_v1alpha) = meridian_net::reflection::services(
        &[
            meridian_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
        &[
            "meridian.v1.Kv",
            "meridian.v1.Admin",
            "meridian.v1.Replication",
            "meridian.v1.RaftTransport",
            "meridian.v1.Workers",
            "grpc.health.v1.Health",
        ],
    )
    .map_err(ShardError::Raft)?;

    let max_message = max_message_bytes(&config);
    let kv = KvServer::new(KvService::new(node.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin = AdminServer::new(AdminService::new(node.clone()))
        .max_decoding_message_size(max_message.max(8 << 20))
        .max_encoding_message_size(max_message.max(8 << 20));
    // A batch (or a full copy's chunk) holds up to 4 MiB of keys and
    // values, and a single change as large as a client's request.
    let replication = ReplicationServer::new(ReplicationService::new(node.clone()))
        .max_decoding_message_size(max_message.max(8 << 20))
        .max_encoding_message_size(max_message.max(8 << 20));
    let workers_service = {
        let node = node.clone();
        meridian_proto::workers::WorkersService::new(
            format!("{}-{}", config.node.shard, config.node.id),
            workers.clone(),
            Arc::new(move |request| {
                node.access
                    .check(
                        request,
                        meridian_access::Permission::View,
                        meridian_access::Target::Cluster,
                    )
                    .map(|_| ())
            }),
        )
        .server()
    };

    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    // Rotation: new certificate files are taken in without a restart.
    transport.reload_certificates(&workers);
    workers.spawn("raft-watcher", node.clone().watch_raft());
    workers.spawn("time-marks", crate::time_marks::run(node.clone()));
    let health_node = node.clone();
    workers.spawn(
        "health-reporter",
        serve::report_health(
            health_reporter,
            "meridian.v1.Kv",
            move || health_node.is_ready(),
            stop.clone(),
        ),
    );

    let mut grpc_stop = stop.clone();
    let grpc = serve::grpc_server()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(kv)
        .add_service(admin)
        .add_service(replication)
        .add_service(workers_service)
        .add_service(node.raft.transport_service())
        .serve_with_incoming_shutdown(
            serve::incoming(
                grpc_listener,
                &transport,
                meridian_net::credentials::ClientCertificates::Required,
            )?,
            async move {
                let _ = grpc_stop.wait_for(|stopped| *stopped).await;
            },
        );

    let app = Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node.clone());
    let mut http_stop = stop.clone();
    let tls = transport.http_tls(meridian_net::credentials::ClientCertificates::Required)?;
    let http = async move {
        meridian_net::https::serve(http_listener, app, tls, async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        })
        .await
    };

    let grpc_task = serve::spawn_serving("gRPC", grpc);
    let http_task = serve::spawn_serving("HTTP", http);
    shutdown.await;
    tracing::info!("shutting down");
    let started = std::time::Instant::now();
    // New calls are refused from here; calls in flight get until the drain
    // deadline, background workers stop, and Raft stops, all at once.
    let _ = stop_sender.send(true);
    node.raft.shut_down([grpc_task, http_task]).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shut down"
    );
    Ok(())
}

/// Announces this node to the control plane, retrying until it is accepted (the
/// control plane may still be starting, or not yet know the region).
async fn register(config: NodeConfig, node: Arc<ShardNode>, dialer: meridian_net::Dialer) {
    let request = meridian_proto::v1::RegisterMemberRequest {
        shard: config.node.shard.clone(),
        region: config.node.region.clone(),
        node_id: config.node.id,
        address: config.network.advertised(),
    };
    let mut attempt = 0u32;
    loop {
        match meridian_client::Client::with_dialer(config.control.endpoints.clone(), dialer.clone())
        {
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
        [("content-type", meridian_net::metrics_text::CONTENT_TYPE)],
        {
            node.metrics
                .set_replication_lag(&node.replication.snapshot());
            node.refresh_scrape_metrics();
            node.metrics.encode()
        },
    )
}
