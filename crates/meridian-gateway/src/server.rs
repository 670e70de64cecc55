//! Running a gateway: gRPC (`Kv`, health, reflection) and HTTP (`/health/*`,
//! `/metrics`) until shutdown, with the route subscription in the background.

use crate::config::GatewayConfig;
use crate::replicas::ReplicaLatency;
use crate::routes::{self, SharedRoutes};
use crate::service::GatewayService;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use meridian_net::serve;
use meridian_proto::v1::kv_server::KvServer;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Gateway metrics.
pub struct GatewayMetrics {
    registry: Registry,
    /// Routing-table version this gateway has applied.
    pub routing_version: Gauge,
    /// When the last routing update was applied (Unix seconds, to the
    /// millisecond): how stale the table may be, and, next to the change's
    /// commit time, how long the push took.
    pub routing_applied: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Calls forwarded successfully.
    pub forwarded: Counter,
    /// Calls that failed (any reason).
    pub failed: Counter,
    /// Calls refused by the rate limit.
    pub rate_limited: Counter,
    /// Eventual reads served by the nearest replica rather than the leader path.
    pub replica_reads: Counter,
    /// Calls refused by authorization (no identity, no grant, revoked).
    pub refused: Counter,
    /// When this gateway's TLS certificate expires (Unix seconds; no
    /// series without TLS).
    certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Its TLS files, read at scrape time for the expiry.
    tls: Option<meridian_net::TlsFiles>,
}

/// Labels of the certificate-expiry series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

impl GatewayMetrics {
    fn new(config: &GatewayConfig) -> Self {
        let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = vec![
            ("region".into(), config.gateway.region.clone().into()),
            ("gateway".into(), config.gateway.name.clone().into()),
        ];
        let mut metrics = Self {
            registry: Registry::default(),
            routing_version: Gauge::default(),
            routing_applied: Gauge::default(),
            forwarded: Counter::default(),
            failed: Counter::default(),
            rate_limited: Counter::default(),
            replica_reads: Counter::default(),
            refused: Counter::default(),
            certificate_expiry: Family::default(),
            tls: config.network.tls.clone(),
        };
        let mut root = Registry::default();
        let registry = root.sub_registry_with_labels(labels.into_iter());
        registry.register(
            "meridian_gateway_routing_version",
            "Routing-table version this gateway has applied",
            metrics.routing_version.clone(),
        );
        registry.register(
            "meridian_gateway_routing_applied_timestamp_seconds",
            "When the last routing update was applied (Unix time, to the millisecond)",
            metrics.routing_applied.clone(),
        );
        registry.register(
            "meridian_gateway_forwarded",
            "Calls forwarded to shards",
            metrics.forwarded.clone(),
        );
        registry.register(
            "meridian_gateway_failed",
            "Calls that failed",
            metrics.failed.clone(),
        );
        registry.register(
            "meridian_gateway_refused",
            "Calls refused by authorization: no identity, no grant on the namespace, or a revoked identity",
            metrics.refused.clone(),
        );
        registry.register(
            "meridian_gateway_replica_reads",
            "Eventual reads served by the nearest healthy replica",
            metrics.replica_reads.clone(),
        );
        registry.register(
            "meridian_tls_certificate_expiry_timestamp_seconds",
            "When this process's TLS certificate stops being valid (Unix time)",
            metrics.certificate_expiry.clone(),
        );
        metrics.registry = root;
        metrics
    }

    /// The metrics in Prometheus text format, with the certificate's
    /// expiry read now (a rotated certificate shows at once).
    fn encode(&self) -> String {
        self.certificate_expiry.clear();
        if let Some(expiry) = self
            .tls
            .as_ref()
            .and_then(|tls| tls.certificate_expiry_unix())
        {
            self.certificate_expiry
                .get_or_create(&CertificateLabels { certificate: "tls" })
                .set(expiry);
        }
        meridian_net::metrics_text::encode(&self.registry)
    }
}

#[derive(Clone)]
struct HttpState {
    routes: SharedRoutes,
    metrics: Arc<GatewayMetrics>,
}

/// Errors starting a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Listeners or TLS could not be set up.
    #[error(transparent)]
    Net(#[from] meridian_net::NetError),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// Serves until `shutdown` resolves.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let transport = config.network.transport()?;
    let grpc_listener = serve::bind(config.network.grpc_listen).await?;
    let http_listener = serve::bind(config.network.http_listen).await?;
    let metrics = Arc::new(GatewayMetrics::new(&config));
    let table: SharedRoutes = Arc::default();
    // Every background loop is a named worker of this registry (listed by
    // `meridian workers`, stopped and awaited together at shutdown).
    let workers = meridian_net::workers::Workers::new();
    {
        let metrics = metrics.clone();
        workers.spawn(
            "routes-follower",
            routes::follow(
                config.control.endpoints.clone(),
                transport.dialer.clone(),
                config.gateway.name.clone(),
                table.clone(),
                move |version| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    metrics.routing_version.set(version as i64);
                    metrics.routing_applied.set(now as f64 / 1e3);
                },
            ),
        );
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection, reflection_v1alpha) = meridian_net::reflection::services(
        &[
            meridian_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
        &[
            "meridian.v1.Kv",
            "meridian.v1.Workers",
            "grpc.health.v1.Health",
        ],
    )
    .map_err(GatewayError::Reflection)?;
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    // Rotation: new certificate files are taken in without a restart.
    transport.reload_certificates(&workers);
    let health_table = table.clone();
    workers.spawn(
        "health-reporter",
        serve::report_health(
            health_reporter,
            "meridian.v1.Kv",
            move || {
                health_table
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .synced
            },
            stop.clone(),
        ),
    );
    tracing::info!(
        name = %config.gateway.name,
        grpc = %config.network.grpc_listen,
        tls = transport.tls.is_some(),
        "gateway started"
    );
    let replicas = Arc::new(ReplicaLatency::default());
    workers.spawn(
        "replica-prober",
        crate::replicas::probe(
            replicas.clone(),
            table.clone(),
            transport.dialer.clone(),
            Duration::from_millis(config.limits.probe_interval_ms),
        ),
    );
    let control_client = meridian_client::Client::with_options(
        config.control.endpoints.clone(),
        meridian_client::ClientOptions {
            attempt_timeout: Duration::from_secs(2),
            retry_budget: Duration::from_millis(config.limits.forward_budget_ms),
            dialer: transport.dialer.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| GatewayError::Config(format!("control.endpoints: {e}")))?;
    // Refused calls go to the control plane's audit log.
    let refusals = meridian_client::refusals::RefusalReporter::new();
    refusals
        .clone()
        .start(
            config.control.endpoints.clone(),
            transport.dialer.clone(),
            &workers,
        )
        .map_err(|e| GatewayError::Config(format!("control.endpoints: {e}")))?;
    let workers_service = {
        let table = table.clone();
        meridian_proto::workers::WorkersService::new(
            config.gateway.name.clone(),
            workers.clone(),
            Arc::new(move |request| {
                // The access policy of the routing push, as for data calls.
                let policy = table
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .access
                    .clone();
                meridian_access::decide(
                    policy.as_deref(),
                    &meridian_access::caller::of_grpc(request),
                    meridian_access::Permission::View,
                    meridian_access::Target::Cluster,
                    meridian_access::now_unix_ms(),
                )
                .map_err(|refusal| meridian_access::caller::status(&refusal))
            }),
        )
        .server()
    };
    let mut grpc_stop = stop.clone();
    let grpc = serve::grpc_server()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(KvServer::new(
            GatewayService::new(
                table.clone(),
                metrics.clone(),
                config.limits.clone(),
                transport.dialer.clone(),
                control_client,
                replicas.clone(),
                refusals,
            )
            .with_region(config.gateway.region.clone()),
        ))
        .add_service(workers_service)
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
            get(|State(state): State<HttpState>| async move {
                if state
                    .routes
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .synced
                {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no routing table yet\n",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(state): State<HttpState>| async move {
                (
                    [("content-type", meridian_net::metrics_text::CONTENT_TYPE)],
                    state.metrics.encode(),
                )
            }),
        )
        .with_state(HttpState {
            routes: table.clone(),
            metrics: metrics.clone(),
        });
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
    // New calls are refused from here; calls in flight get until the drain
    // deadline while the background workers stop.
    let _ = stop_sender.send(true);
    tokio::join!(
        serve::drain([grpc_task, http_task], serve::DRAIN_DEADLINE),
        workers.shutdown(serve::DRAIN_DEADLINE),
    );
    Ok(())
}
