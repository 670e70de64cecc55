//! Running a control-plane member: gRPC (Control, Raft transport, health,
//! reflection) and HTTP (`/health/*`) until shutdown.

use crate::config::ControlConfig;
use crate::error::ControlError;
use crate::node::ControlNode;
use crate::service::ControlService;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use meridian_net::serve;
use meridian_proto::v1::control_server::ControlServer;
use openraft::async_runtime::WatchReceiver;
use std::future::Future;
use std::sync::Arc;

/// Ready once a leader is known and every configured region is registered (a
/// placement request before that would be refused for an unknown region).
/// The control plane's metrics (Prometheus text format), read from the
/// replicated state at scrape time, labelled with this member's region.
fn is_ready(node: &ControlNode) -> bool {
    let metrics = node.raft.raft.metrics().borrow_watched().clone();
    let regions_known = node.with_state(|state| {
        node.config
            .regions
            .iter()
            .all(|seed| state.regions.contains_key(&seed.name))
    });
    metrics.current_leader.is_some() && metrics.running_state.is_ok() && regions_known
}

/// Starts the member and serves until `shutdown` resolves.
pub async fn run(
    config: ControlConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let transport = config.network.transport()?;
    let grpc_address = config.network.grpc_listen;
    let http_address = config.network.http_listen;
    let grpc_listener = serve::bind(grpc_address).await?;
    let http_listener = serve::bind(http_address).await?;
    let node = ControlNode::start(config, transport.dialer.clone()).await?;
    tracing::info!(
        node = node.id(),
        grpc = %grpc_address,
        http = %http_address,
        tls = transport.tls.is_some(),
        "control-plane member started"
    );
    if transport.tls.is_none() {
        tracing::warn!(
            "no [network.tls]: callers are not authenticated, so roles, grants and revocations are not enforced"
        );
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection, reflection_v1alpha) = meridian_net::reflection::services(
        &[
            meridian_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
        &[
            "meridian.v1.Control",
            "meridian.v1.RaftTransport",
            "meridian.v1.Workers",
            "grpc.health.v1.Health",
        ],
    )
    .map_err(ControlError::Unavailable)?;
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    // Every background loop is a named worker of this registry (listed by
    // `meridian workers`, stopped and awaited together at shutdown).
    let workers = node.raft.workers.clone();
    // Rotation: new certificate files are taken in without a restart.
    transport.reload_certificates(&workers);
    workers.spawn("region-seeder", node.clone().seed_regions());
    workers.spawn("refusal-recorder", node.clone().record_refusals());
    workers.spawn("prober", crate::failover::run(node.clone()));
    workers.spawn("deleter", crate::deletion::run(node.clone()));
    workers.spawn("job-runner", crate::jobs::run(node.clone()));
    workers.spawn(
        "control-backup-schedule",
        crate::control_backup::run_schedule(node.clone()),
    );
    let health_node = node.clone();
    workers.spawn(
        "health-reporter",
        serve::report_health(
            health_reporter,
            "meridian.v1.Control",
            move || is_ready(&health_node),
            stop.clone(),
        ),
    );

    let service = Arc::new(ControlService::new(node.clone()));
    let workers_service = {
        let service = service.clone();
        meridian_proto::workers::WorkersService::new(
            format!("control-{}", node.id()),
            workers.clone(),
            Arc::new(move |request| {
                service
                    .authorize_here(
                        request,
                        "Workers.ListWorkers",
                        meridian_access::Permission::View,
                        meridian_access::Target::Cluster,
                    )
                    .map(|_| ())
            }),
        )
        .server()
    };
    let mut grpc_stop = stop.clone();
    let grpc = serve::grpc_server()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(ControlServer::from_arc(service.clone()))
        .add_service(workers_service)
        .add_service(node.raft.transport_service())
        .serve_with_incoming_shutdown(
            serve::incoming(
                grpc_listener,
                &transport,
                meridian_net::credentials::ClientCertificates::Optional,
            )?,
            async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            },
        );
    let app = Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route(
            "/health/ready",
            get(|State(node): State<Arc<ControlNode>>| async move {
                if is_ready(&node) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no known leader\n",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(node): State<Arc<ControlNode>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        meridian_net::metrics_text::CONTENT_TYPE,
                    )],
                    crate::metrics::render(&node),
                )
            }),
        )
        .with_state(node.clone())
        .merge(crate::admin_http::router(service.clone()));
    let mut http_stop = stop.clone();
    let tls = transport.http_tls(meridian_net::credentials::ClientCertificates::Optional)?;
    let http = async move {
        meridian_net::https::serve(http_listener, app, tls, async move {
            let _ = http_stop.wait_for(|s| *s).await;
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
