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
use std::time::Duration;

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
            "grpc.health.v1.Health",
        ],
    )
    .map_err(ControlError::Unavailable)?;
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    // Rotation: new certificate files are taken in without a restart.
    let _reloader = transport.reload_certificates(stop.clone());
    let seeder = tokio::spawn(node.clone().seed_regions());
    let refusals = tokio::spawn(node.clone().record_refusals());
    let prober = tokio::spawn(crate::failover::run(node.clone()));
    let deleter = tokio::spawn(crate::deletion::run(node.clone()));
    let jobs = tokio::spawn(crate::jobs::run(node.clone()));
    let control_backups = tokio::spawn(crate::control_backup::run_schedule(node.clone()));
    let health_node = node.clone();
    let health_task = tokio::spawn(serve::report_health(
        health_reporter,
        "meridian.v1.Control",
        move || is_ready(&health_node),
        stop.clone(),
    ));

    let service = Arc::new(ControlService::new(node.clone()));
    let mut grpc_stop = stop.clone();
    let grpc = serve::grpc_server()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(ControlServer::from_arc(service.clone()))
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
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(http);
    shutdown.await;
    let _ = stop_sender.send(true);
    if let Err(err) = node.raft.raft.shutdown().await {
        tracing::warn!(error = %err, "raft did not shut down cleanly");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    seeder.abort();
    refusals.abort();
    prober.abort();
    deleter.abort();
    jobs.abort();
    control_backups.abort();
    health_task.abort();
    node.raft.engine.sync_now()?;
    Ok(())
}
